"""Triton's extensions as plain documents in Triton's own JSON shape: model configuration, statistics and the model
repository. The HTTP routes (routes/extensions.py) answer them as they are; the gRPC servicer parses the same documents
into its messages (json_format), so both protocols say the same thing from one place.
"""

from __future__ import annotations

from typing import Any

from morphserve.graph import ZOO, ModelVersion, NotFoundError, SpecError
from morphserve.serving.compile import MODES
from morphserve.serving.errors import BadInputError
from morphserve.serving.registry import Registry
from morphserve.serving.sources import NAME, BundleSource, ModelSource, ZooSource, bundles_in

#: What `GET /v2` and gRPC's ServerMetadata list (Triton's extension names).
EXTENSIONS = [
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "model_repository",
    "system_shared_memory",
    "parameters",
]
PLATFORM = "pytorch_torchfx"


def extensions(registry: Registry) -> list[str]:
    return EXTENSIONS + (["cuda_shared_memory"] if registry.shm.cuda.enabled else [])


def _data_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def model_config(registry: Registry, v: ModelVersion) -> dict[str, Any]:
    """Triton's model configuration of a version: batched when every input's first dimension is free (then `dims`
    leave it out and `max_batch_size` is the server's), the dynamic batcher's delay, one instance on the device."""
    settings = registry.settings
    inputs = list(v.inputs)
    outputs = [(o.name, o.datatype or "FP32", tuple(o.shape or (-1,))) for o in v.outputs]
    batched = all(t.shape and t.shape[0] == -1 for t in inputs) and all(s and s[0] == -1 for _, _, s in outputs)
    cut = 1 if batched else 0
    device = registry.device
    kind = "KIND_GPU" if device.type == "cuda" else "KIND_CPU"
    return {
        "name": v.model,
        "platform": PLATFORM,
        "backend": "pytorch",
        "runtime": "",
        "version_policy": {"all": {}},
        "max_batch_size": settings.max_batch_size if batched else 0,
        "input": [
            {"name": t.name, "data_type": _data_type(t.datatype), "format": "FORMAT_NONE", "dims": list(t.shape[cut:])}
            for t in inputs
        ],
        "output": [{"name": n, "data_type": _data_type(d), "dims": list(s[cut:])} for n, d, s in outputs],
        "instance_group": [
            {
                "name": v.model,
                "kind": kind,
                "count": 1,
                "gpus": [device.index or 0] if device.type == "cuda" else [],
            }
        ],
        "dynamic_batching": {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": int(settings.max_batch_delay_ms * 1000),
            "preserve_ordering": False,
        },
        "parameters": {
            "version": {"string_value": str(v.version)},
            "compute_datatype": {"string_value": v.spec.compute_datatype or "FP32"},
            "compile": {"string_value": registry.compiler.mode_of(v.model)},
        },
    }


async def config_of(registry: Registry, model: str, version: int | None) -> dict[str, Any]:
    return model_config(registry, await registry.version(model, version))


def _zero() -> dict[str, Any]:
    return {"count": 0, "ns": 0}


def _empty_stats(model: str, version: int) -> dict[str, Any]:
    names = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")
    return {
        "name": model,
        "version": str(version),
        "last_inference": 0,
        "inference_count": 0,
        "execution_count": 0,
        "inference_stats": {n: _zero() for n in names},
        "batch_stats": [],
        "memory_usage": [],
    }


async def statistics(registry: Registry, model: str | None, version: int | None) -> dict[str, Any]:
    """`{"model_stats": [...]}`: per model (every model when `model` is None) and version: the version asked for, or
    every version with statistics and the current one."""
    if version is not None and model is None:
        raise BadInputError("a version of statistics needs a model name")
    out = []
    for name in [model] if model is not None else registry.names():
        try:
            served = registry.get(name)
            if version is not None:
                await registry.version(name, version)  # 404 for a version the model never had
                versions = [version]
            else:
                versions = sorted({*served.worker.stats.versions(), served.serving_version()})
        except NotFoundError:
            if model is not None:
                raise
            continue  # deleted while we listed
        for v in versions:
            view = served.worker.stats.view(v)
            out.append(_empty_stats(name, v) if view is None else {"name": name, "version": str(v), **view})
    return {"model_stats": out}


def _repository(registry: Registry) -> dict[str, ModelSource]:
    """The model repository: the bundles of `--model-dir` (KServe's /mnt/models) by name, found by the rules the
    server's start uses (sources.bundles_in: `*.zip`, spec `*.json`, directories with a spec.json, or the one bundle
    the directory is, named `--model-name` or by its file stem). Read on each call: a bundle copied in later can be
    loaded without a restart, as in Triton's explicit model control mode."""
    root, name = registry.settings.model_dir, registry.settings.model_name
    if root is None:
        return {}
    try:
        found = bundles_in(root, name)
    except SpecError:  # gone, or holds no bundle (now): an empty repository
        return {}
    named = {
        asked if asked is not None else source.path.stem: source
        for asked, source in found
        if isinstance(source, BundleSource)
    }
    return {n: s for n, s in named.items() if NAME.match(n)}


def repository_index(registry: Registry, ready_only: bool) -> list[dict[str, Any]]:
    """Every model the server serves (READY, at its current version), could not load (UNAVAILABLE, with why), or
    could load: the bundles of the model repository (--model-dir) and the zoo's models (UNAVAILABLE, "unloaded")."""
    index: dict[str, dict[str, Any]] = {}
    for name in registry.names():
        try:
            version = registry.get(name).serving_version()
        except NotFoundError:
            continue
        index[name] = {"name": name, "version": str(version), "state": "READY", "reason": ""}
    if not ready_only:
        for name, why in registry.failed.items():
            index.setdefault(name, {"name": name, "version": "", "state": "UNAVAILABLE", "reason": why})
        for name in sorted(_repository(registry)):
            index.setdefault(name, {"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})
        for name in ZOO:
            index.setdefault(name, {"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded (zoo)"})
    return [index[n] for n in sorted(index)]


def load_source(registry: Registry, name: str) -> ModelSource:
    """Where `load` finds a model: a bundle of the model repository (--model-dir), else the zoo."""
    source = _repository(registry).get(name)
    if source is not None:
        return source
    if name in ZOO:
        return ZooSource(name)
    root = registry.settings.model_dir
    where = f"the model repository {root} (--model-dir) or " if root is not None else ""
    raise NotFoundError(f"no model {name!r} in {where}the zoo ({', '.join(ZOO)})", model=name)


def load_options(parameters: dict[str, Any]) -> tuple[str | None, str | None]:
    """The load request's parameters morphserve knows, `compile` and `dtype`; others are refused with why."""
    compile_mode = dtype = None
    for key, value in parameters.items():
        if key == "compile":
            if value not in MODES:
                raise BadInputError(f"parameter compile must be one of {', '.join(MODES)}, got {value!r}")
            compile_mode = value
        elif key == "dtype":
            if value not in ("FP32", "FP16", "BF16"):
                raise BadInputError(f"parameter dtype must be FP32, FP16 or BF16, got {value!r}")
            dtype = value
        elif key == "config" or key.startswith("file:"):
            raise BadInputError(
                f"load parameter {key!r} is not supported: a morphserve model is its bundle (spec and weights); put "
                "it in the model repository (--model-dir), or create it with POST /v1/models"
            )
        else:
            raise BadInputError(f"unknown load parameter {key!r} (morphserve knows compile and dtype)")
    return compile_mode, dtype


async def load(registry: Registry, name: str, parameters: dict[str, Any]) -> None:
    """Serve `name` from the repository or the zoo (Triton's load); a model already served stays as it is, as a
    Triton reload of an unchanged model does."""
    compile_mode, dtype = load_options(parameters)
    if name in registry.names():
        return
    await registry.create(name, load_source(registry, name), dtype, compile_mode)


async def unload(registry: Registry, name: str) -> None:
    """Triton's unload is morphserve's delete: the model stops serving and its versions leave the journal."""
    await registry.remove(name)
