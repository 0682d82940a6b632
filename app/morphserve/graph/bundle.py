"""Models as files: a spec (JSON) plus weights (safetensors), the one format for zoo, export and import.

Weights are keyed `<node>.<tensor>` as in a PyTorch state dict (`<node>.value` for a parameter node). Loading
never unpickles anything: the spec is JSON and the tensors are safetensors.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save
from torch import nn

from .errors import SpecError
from .precision import conform
from .spec import ModelSpec, parse_spec
from .version import ModelVersion, make_version


def build_modules(spec: ModelSpec, seed: int = 0) -> dict[str, nn.Module]:
    """Fresh modules for every layer and parameter node, initialised deterministically from `seed` in node order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {n.id: n.build_module() for n in spec.nodes if n.has_module}


def load_weights(
    modules: Mapping[str, nn.Module], tensors: Mapping[str, torch.Tensor], *, assign: bool = False
) -> None:
    """Copy `tensors` into `modules` (strict: every tensor present, no extras, same shapes and dtypes).

    With `assign`, the modules take the tensors themselves instead of copying them (for modules built on the meta
    device, which have no storage of their own)."""
    expected: dict[str, torch.Tensor] = {}
    for nid, m in modules.items():
        for k, v in m.state_dict().items():
            expected[f"{nid}.{k}"] = v
    missing = sorted(expected.keys() - tensors.keys())
    extra = sorted(tensors.keys() - expected.keys())
    if missing or extra:
        raise SpecError(f"weights do not match the spec: missing {missing[:10]}, unexpected {extra[:10]}")
    for k, ref in expected.items():
        t = tensors[k]
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise SpecError(f"weight {k!r} is {t.dtype} {list(t.shape)}, the spec needs {ref.dtype} {list(ref.shape)}")
    with torch.no_grad():
        for nid, m in modules.items():
            prefix = nid + "."
            m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, assign=assign)


def from_spec(
    spec: ModelSpec | dict[str, Any],
    tensors: Mapping[str, torch.Tensor] | None = None,
    *,
    name: str | None = None,
    seed: int = 0,
) -> ModelVersion:
    """Version 1 of a model from a spec and optional weights (else a seeded initialisation)."""
    spec = parse_spec(spec)
    if name is not None:
        spec = spec.model_copy(update={"name": name})
    if tensors is None:
        modules = {k: conform(m, spec.compute_datatype) for k, m in build_modules(spec, seed).items()}
    else:
        # Weights are given: build without storage and adopt the tensors, rather than random-initialising every
        # layer only to overwrite it (most of a large model's load time).
        with torch.device("meta"):
            modules = {k: conform(m, spec.compute_datatype) for k, m in build_modules(spec, seed).items()}
        load_weights(modules, {k: v.contiguous() for k, v in tensors.items()}, assign=True)
        for nid, m in modules.items():
            if any(t.is_meta for t in (*m.parameters(), *m.buffers())):  # a buffer the state dict does not hold
                raise SpecError(f"layer {nid!r} has tensors that the weights file cannot provide", node=nid)
    return make_version(spec.name, 1, None, spec, modules)


def spec_json(v: ModelVersion) -> dict[str, Any]:
    return v.spec.model_dump(mode="json", exclude_none=True)


def weights_bytes(v: ModelVersion) -> bytes:
    # Nodes may share a module (a traced model that calls a layer twice); safetensors refuses shared storage,
    # so every tensor after the first on one storage is written as its own copy.
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, t in v.state_dict().items():
        ptr = t.untyped_storage().data_ptr()
        tensors[k] = t.contiguous() if ptr not in seen else t.clone(memory_format=torch.contiguous_format)
        seen.add(ptr)
    return save(tensors, metadata={"model": v.model})


def read_bundle(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """A spec file (`x.json`, weights beside it as `x.safetensors` if present) or a directory / zip export."""
    if path.is_dir():
        spec_path, weights_path = path / "spec.json", path / "weights.safetensors"
    elif zipfile.is_zipfile(path):
        return _read_zip(path)
    else:
        spec_path, weights_path = path, path.with_suffix(".safetensors")
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"cannot read spec {spec_path}: {e}") from None
    return spec, (load_file(weights_path) if weights_path.exists() else None)


def _read_zip(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """A bundle zip; every way it can be malformed is a SpecError naming the member at fault."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "spec.json" not in names:
                raise SpecError(f"bundle {path.name}: no spec.json in the zip (it has {sorted(names)[:10]})")
            try:
                spec = json.loads(z.read("spec.json"))
            except ValueError as e:
                raise SpecError(f"bundle {path.name}: spec.json is not JSON: {e}") from None
            if not isinstance(spec, dict):
                raise SpecError(f"bundle {path.name}: spec.json must hold a JSON object")
            if "weights.safetensors" not in names:
                return spec, None
            try:
                weights = st_load(z.read("weights.safetensors"))
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad headers
                raise SpecError(f"bundle {path.name}: weights.safetensors is not a safetensors file: {e}") from None
            return spec, weights
    except (zipfile.BadZipFile, OSError) as e:
        raise SpecError(f"bundle {path.name}: not a readable zip: {e}") from None


def bundle_bytes(v: ModelVersion) -> bytes:
    """The zip `export` serves and `read_bundle` / `--model name=model.zip` load: spec.json + weights.safetensors."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("spec.json", json.dumps(spec_json(v), indent=2))
        z.writestr("weights.safetensors", weights_bytes(v))
    return buf.getvalue()


def write_bundle(v: ModelVersion, path: Path) -> None:
    """Write `bundle_bytes(v)` to `path` atomically (a temp file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(bundle_bytes(v))
    tmp.replace(path)
