"""Models as files: a spec (JSON) plus weights (safetensors), the one format for zoo, export and import.

Weights are keyed `<node>.<tensor>` as in a PyTorch state dict. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save
from torch import nn

from .errors import SpecError
from .spec import ModelSpec, parse_spec
from .version import ModelVersion, make_version


def build_modules(spec: ModelSpec, seed: int = 0) -> dict[str, nn.Module]:
    """Fresh modules for every layer node, initialised deterministically from `seed` in node order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {n.id: n.layer.build() for n in spec.nodes if n.layer is not None}


def load_weights(modules: Mapping[str, nn.Module], tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy `tensors` into `modules` (strict: every tensor present, no extras, same shapes and dtypes)."""
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
            m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})


def from_spec(
    spec: ModelSpec | dict[str, Any], tensors: Mapping[str, torch.Tensor] | None = None, *, name: str | None = None,
    seed: int = 0,
) -> ModelVersion:
    """Version 1 of a model from a spec and optional weights (else a seeded initialisation)."""
    spec = parse_spec(spec)
    if name is not None:
        spec = spec.model_copy(update={"name": name})
    modules = build_modules(spec, seed)
    if tensors is not None:
        load_weights(modules, tensors)
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
    import zipfile

    if path.is_dir():
        spec_path, weights_path = path / "spec.json", path / "weights.safetensors"
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            spec = json.loads(z.read("spec.json"))
            weights = st_load(z.read("weights.safetensors")) if "weights.safetensors" in z.namelist() else None
            return spec, weights
    else:
        spec_path, weights_path = path, path.with_suffix(".safetensors")
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"cannot read spec {spec_path}: {e}") from None
    return spec, (load_file(weights_path) if weights_path.exists() else None)


def load_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return st_load(data)
