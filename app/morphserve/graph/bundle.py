"""Models as files: a spec (JSON) plus weights (safetensors), the one format for zoo, export and import.

Weights are keyed `<node>.<tensor>` as in a PyTorch state dict (`<node>.value` for a parameter node). Loading
never unpickles anything: the spec is JSON and the tensors are safetensors.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
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


@dataclass(frozen=True)
class BundleLimits:
    """What reading a bundle may cost, whoever sent it: every member is read through a counter that stops at its
    budget, so a zip bomb or a padded member is refused after reading at most that budget, whatever its headers
    claim.

    - spec.json: at most `max_spec_bytes` once decompressed, nested at most `max_spec_depth` deep (the deepest
      real spec is a few levels; a deeper one would only reach recursion limits further on);
    - weights.safetensors: at most the bytes its spec's tensors need (the caller sizes the spec first, against the
      memory budget, and says how much: `read_bundle(..., weights_limit=)`), plus a header;
    - at most `max_members` members, no two with one name, none encrypted, each of the two read compressed with
      one of `methods`. Deflate expands at most ~1,032:1 and zipfile hands it out in bounded reads, so the byte
      budgets hold; bzip2 and LZMA are refused because one read of theirs can expand without bound (a 2 KB bzip2
      member decompresses to gigabytes in one call), and no per-member ratio can be right for deflate, where a
      layer of zeros legitimately compresses 1,000:1.
    """

    max_spec_bytes: int = 16 << 20
    max_spec_depth: int = 64
    max_members: int = 64
    methods: tuple[int, ...] = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


#: Room for a safetensors header beyond the tensors' bytes: its JSON (about a hundred bytes per tensor) and metadata.
HEADER_ALLOWANCE = 1 << 20
_METHOD_NAMES = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2"}
_METHOD_NAMES[zipfile.ZIP_LZMA] = "lzma"
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (a scalar is 0, `[]` is 1), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        else:
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def parse_spec_json(data: bytes, what: str, limits: BundleLimits = BundleLimits()) -> dict[str, Any]:
    """A spec document's bytes as a JSON object, within the depth limit; SpecError naming `what` otherwise."""
    try:
        spec = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        opened = _STRING.sub(b"", data[: e.pos + 1]) if e.pos < 1 << 22 else data[: e.pos + 1]
        depth = sum(map(opened.count, (b"[", b"{"))) - sum(map(opened.count, (b"]", b"}")))
        reason = f"it is nested more than {limits.max_spec_depth} levels deep" if depth > 1000 else e.msg
        raise SpecError(f"{what} is not JSON: {reason} (at character {e.pos})") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{what} must hold a JSON object")
    depth = json_depth(spec)
    if depth > limits.max_spec_depth:
        raise SpecError(
            f"{what} is nested {depth} levels deep; a spec may nest at most {limits.max_spec_depth}",
            limit=limits.max_spec_depth,
        )
    return spec


def _refuse_nonfinite(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Weights must be finite numbers, as a weight upload's must (edit_ops.SetWeightsOp)."""
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SpecError(f"{where}: tensor {k!r} contains NaN or infinity", tensor=k)


#: What `read_bundle` asks before it reads the weights: given the spec, the most bytes the weights may take (it may
#: refuse the spec itself, e.g. over the memory budget), or None for no limit (a file the operator named).
WeightsLimit = Callable[[dict[str, Any]], int | None]


def read_bundle(
    path: Path, *, limits: BundleLimits = BundleLimits(), weights_limit: WeightsLimit | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """A spec file (`x.json`, weights beside it as `x.safetensors` if present) or a directory / zip export.

    The spec is read first, within `limits`; then `weights_limit(spec)` says how many bytes the weights may take
    (and may refuse the spec), and the weights are read within that."""
    if path.is_dir():
        spec_path, weights_path = path / "spec.json", path / "weights.safetensors"
    elif zipfile.is_zipfile(path):
        return _read_zip(path, limits, weights_limit)
    else:
        spec_path, weights_path = path, path.with_suffix(".safetensors")
    try:
        size = spec_path.stat().st_size
        if size > limits.max_spec_bytes:
            raise SpecError(f"spec {spec_path} is {size:,} bytes, over the limit of {limits.max_spec_bytes:,}")
        spec = parse_spec_json(spec_path.read_bytes(), f"spec {spec_path}", limits)
    except OSError as e:
        raise SpecError(f"cannot read spec {spec_path}: {e}") from None
    if not weights_path.exists():
        return spec, None
    most = weights_limit(spec) if weights_limit is not None else None
    if most is not None and weights_path.stat().st_size > most + HEADER_ALLOWANCE:
        raise SpecError(
            f"{weights_path} is {weights_path.stat().st_size:,} bytes; its spec's tensors need {most:,}",
            limit_bytes=most + HEADER_ALLOWANCE,
        )
    tensors = load_file(weights_path)
    _refuse_nonfinite(tensors, str(weights_path))
    return spec, tensors


def _member(z: zipfile.ZipFile, name: str, limits: BundleLimits, bundle: str) -> zipfile.ZipInfo | None:
    info = next((i for i in z.infolist() if i.filename == name), None)
    if info is None:
        return None
    if info.flag_bits & 0x1:
        raise SpecError(f"bundle {bundle}: {name} is encrypted; send the bundle unencrypted")
    if info.compress_type not in limits.methods:
        method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        allowed = " or ".join(_METHOD_NAMES[m] for m in limits.methods)
        raise SpecError(f"bundle {bundle}: {name} is compressed with {method}; a bundle's members are {allowed}")
    return info


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, most: int, bundle: str, flag: str) -> bytes:
    """A member's bytes, read in pieces and refused once more than `most` came out, whatever its header says."""
    too_big = f"bundle {bundle}: {info.filename} holds more than {most:,} bytes ({flag})"
    if info.file_size > most:
        raise SpecError(too_big, limit_bytes=most)
    out = bytearray()
    with z.open(info) as f:
        while chunk := f.read(1 << 20):
            out += chunk
            if len(out) > most:
                raise SpecError(too_big, limit_bytes=most)
    return bytes(out)


def _read_zip(
    path: Path, limits: BundleLimits, weights_limit: WeightsLimit | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """A bundle zip; every way it can be malformed is a SpecError naming the member at fault."""
    bundle = path.name
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > limits.max_members:
                raise SpecError(f"bundle {bundle}: {len(infos)} members; a bundle holds at most {limits.max_members}")
            names = [i.filename for i in infos]
            twice = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
            if twice:
                raise SpecError(f"bundle {bundle}: more than one member named {', '.join(twice)}")
            info = _member(z, "spec.json", limits, bundle)
            if info is None:
                raise SpecError(f"bundle {bundle}: no spec.json in the zip (it has {sorted(names)[:10]})")
            data = _read_member(z, info, limits.max_spec_bytes, bundle, "the most a spec may hold")
            spec = parse_spec_json(data, f"bundle {bundle}: spec.json", limits)
            del data
            info = _member(z, "weights.safetensors", limits, bundle)
            if info is None:
                return spec, None
            most = weights_limit(spec) if weights_limit is not None else None
            data = _read_member(
                z,
                info,
                most + HEADER_ALLOWANCE if most is not None else 1 << 62,
                bundle,
                f"its spec's tensors need {most:,}" if most is not None else "",
            )
            try:
                weights = st_load(data)
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad headers
                raise SpecError(f"bundle {bundle}: weights.safetensors is not a safetensors file: {e}") from None
            del data
            _refuse_nonfinite(weights, f"bundle {bundle}: weights.safetensors")
            return spec, weights
    # what zipfile and zlib raise for damaged archives, headers that lie and data that does not decompress
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, ValueError, zlib.error) as e:
        raise SpecError(f"bundle {bundle}: not a readable zip: {str(e)[:200]}") from None


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
