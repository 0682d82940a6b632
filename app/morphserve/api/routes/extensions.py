"""Triton's extensions over HTTP, as `tritonclient.http` calls them: model configuration, statistics, the model
repository (load and unload need the admin token) and shared memory (registration needs it too).

Their bodies are optional and read leniently (tritonclient posts `""` or `{}` without a content type), and their
answers are Triton's JSON documents (api/triton.py builds them for HTTP and gRPC alike). The repository's load and
unload and the shared memory routes are left out of the OpenAPI schema: they exist for Triton's clients, which do
not read it, and what they act on (a model repository, a POSIX shared memory object, a CUDA IPC handle) is outside
what a schema-driven client or fuzzer can make; docs/API.md documents them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from morphserve.api import triton
from morphserve.api.deps import AdminDep, RegistryDep
from morphserve.api.errors import ERROR_RESPONSES, ApiError
from morphserve.api.fastjson import JSONRoute
from morphserve.api.routes.oip import _version

router = APIRouter(prefix="/v2", tags=["Triton extensions"], responses=ERROR_RESPONSES, route_class=JSONRoute)


def _json(doc: Any) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return doc


# -- model configuration --------------------------------------------------------------------------------------------
@router.get("/models/{model}/config")
async def model_config(model: str, registry: RegistryDep) -> Response:
    """The model's configuration in Triton's shape (name, platform, max_batch_size, input, output, dynamic_batching)."""
    return _json(await triton.config_of(registry, model, None))


@router.get("/models/{model}/versions/{version}/config")
async def model_version_config(model: str, version: str, registry: RegistryDep) -> Response:
    return _json(await triton.config_of(registry, model, _version(version)))


# -- statistics -------------------------------------------------------------------------------------------------------
@router.get("/models/stats")
async def all_statistics(registry: RegistryDep) -> Response:
    """Inference statistics of every model and version, as Triton reports them."""
    return _json(await triton.statistics(registry, None, None))


@router.get("/models/{model}/stats")
async def model_statistics(model: str, registry: RegistryDep) -> Response:
    return _json(await triton.statistics(registry, model, None))


@router.get("/models/{model}/versions/{version}/stats")
async def model_version_statistics(model: str, version: str, registry: RegistryDep) -> Response:
    return _json(await triton.statistics(registry, model, _version(version)))


# -- the model repository ---------------------------------------------------------------------------------------------
@router.post("/repository/index")
async def repository_index(request: Request, registry: RegistryDep) -> Response:
    """Every model served, failed, or loadable (the bundles of --model-dir and the zoo); `{"ready": true}`: only the
    served ones."""
    ready = (await _body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise ApiError(400, "'ready' must be a boolean")
    return _json(triton.repository_index(registry, ready))


def _parameters(doc: dict[str, Any]) -> dict[str, Any]:
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "'parameters' must be an object")
    return params


@router.post("/repository/models/{model}/load", dependencies=[AdminDep], include_in_schema=False)
async def load_model(model: str, request: Request, registry: RegistryDep) -> Response:
    """Serve a model from the model repository (--model-dir) or the zoo (parameters `compile`, `dtype`); a served
    model stays."""
    await triton.load(registry, model, _parameters(await _body(request)))
    return _json({})


@router.post("/repository/models/{model}/unload", dependencies=[AdminDep], include_in_schema=False)
async def unload_model(model: str, request: Request, registry: RegistryDep) -> Response:
    """Stop serving the model and delete its versions from the journal (morphserve's delete)."""
    params = _parameters(await _body(request))
    if params.get("unload_dependents") not in (None, False, True):
        raise ApiError(400, "'unload_dependents' must be a boolean")
    await triton.unload(registry, model)
    return _json({})


# -- system shared memory ---------------------------------------------------------------------------------------------
@router.get("/systemsharedmemory/status", include_in_schema=False)
async def system_shm_status(registry: RegistryDep) -> Response:
    return _json(registry.shm.system.status())


@router.get("/systemsharedmemory/region/{name}/status", include_in_schema=False)
async def system_shm_region_status(name: str, registry: RegistryDep) -> Response:
    return _json(registry.shm.system.status(name))


def _int(doc: dict[str, Any], key: str, default: int | None = None) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{key}' must be an integer, got {value!r}")
    return value


@router.post("/systemsharedmemory/region/{name}/register", dependencies=[AdminDep], include_in_schema=False)
async def system_shm_register(name: str, request: Request, registry: RegistryDep) -> Response:
    """Register a window (`offset`, `byte_size`) of the POSIX shared memory object `key` as region `name`."""
    doc = await _body(request)
    key = doc.get("key")
    if not isinstance(key, str):
        raise ApiError(400, "'key' must be the shared memory object's name")
    registry.shm.system.register(name, key, _int(doc, "offset", 0), _int(doc, "byte_size"))
    return _json({})


@router.post("/systemsharedmemory/region/{name}/unregister", dependencies=[AdminDep], include_in_schema=False)
async def system_shm_unregister(name: str, registry: RegistryDep) -> Response:
    registry.shm.system.unregister(name)
    return _json({})


@router.post("/systemsharedmemory/unregister", dependencies=[AdminDep], include_in_schema=False)
async def system_shm_unregister_all(registry: RegistryDep) -> Response:
    registry.shm.system.unregister(None)
    return _json({})


# -- CUDA shared memory (a GPU server only) ---------------------------------------------------------------------------
@router.get("/cudasharedmemory/status", include_in_schema=False)
async def cuda_shm_status(registry: RegistryDep) -> Response:
    return _json(registry.shm.cuda.status())


@router.get("/cudasharedmemory/region/{name}/status", include_in_schema=False)
async def cuda_shm_region_status(name: str, registry: RegistryDep) -> Response:
    return _json(registry.shm.cuda.status(name))


@router.post("/cudasharedmemory/region/{name}/register", dependencies=[AdminDep], include_in_schema=False)
async def cuda_shm_register(name: str, request: Request, registry: RegistryDep) -> Response:
    """Register a CUDA IPC handle (`raw_handle: {"b64": ...}`) of `byte_size` bytes on `device_id` as region `name`."""
    doc = await _body(request)
    handle = doc.get("raw_handle")
    b64 = handle.get("b64") if isinstance(handle, dict) else None
    if not isinstance(b64, str):
        raise ApiError(400, "'raw_handle' must be {\"b64\": <the base64 of a cudaIpcMemHandle>}")
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise ApiError(400, "'raw_handle.b64' is not base64") from None
    registry.shm.cuda.register(name, raw, _int(doc, "device_id", 0), _int(doc, "byte_size"))
    return _json({})


@router.post("/cudasharedmemory/region/{name}/unregister", dependencies=[AdminDep], include_in_schema=False)
async def cuda_shm_unregister(name: str, registry: RegistryDep) -> Response:
    registry.shm.cuda.unregister(name)
    return _json({})


@router.post("/cudasharedmemory/unregister", dependencies=[AdminDep], include_in_schema=False)
async def cuda_shm_unregister_all(registry: RegistryDep) -> Response:
    registry.shm.cuda.unregister(None)
    return _json({})
