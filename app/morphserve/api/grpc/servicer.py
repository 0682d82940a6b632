"""The gRPC `inference.GRPCInferenceService`: the v2 protocol and Triton's extensions over the same serving facade as
HTTP (`Registry.infer` for inference, api/triton.py for the extensions' documents), mapped to messages.

Auth follows the HTTP rules (api/deps.py): reads are open; the methods that change the server (repository load and
unload, shared memory registration) need `authorization: Bearer <token>` in the call's metadata when the server has a
token. A server without a token listens on loopback only (main.resolve_admin_token), as over HTTP; the Host check that
HTTP adds there stops DNS-rebinding web pages, which cannot speak gRPC, so gRPC has nothing to add.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from morphserve import __version__
from morphserve.api import triton
from morphserve.api.errors import grpc_status_of
from morphserve.graph import NotFoundError
from morphserve.serving.registry import Registry

from . import codec
from . import inference_pb2 as pb
from .inference_pb2_grpc import GRPCInferenceServiceServicer

log = logging.getLogger("morphserve.grpc")

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


class GrpcAbort(Exception):
    """A refusal of the gRPC layer itself (auth, a malformed field), with its status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _mapped(fn: Handler[R]) -> Handler[R]:
    """Domain errors become status codes by the one table (api/errors.py); anything else is a logged INTERNAL."""

    @wraps(fn)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await fn(self, request, context)
        except GrpcAbort as e:
            await context.abort(e.code, e.message)
        except Exception as e:  # every error answers with a status; the unexpected ones are logged
            found = grpc_status_of(e)
            if found is None:
                log.exception("unhandled error in %s", fn.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            else:
                await context.abort(getattr(grpc.StatusCode, found[0]), found[1])
        raise AssertionError("context.abort returns only by raising")  # pragma: no cover

    return call


def _version(text: str) -> int | None:
    if text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise GrpcAbort(grpc.StatusCode.INVALID_ARGUMENT, f"model version must be a positive integer, got {text!r}")
    return int(text)


def _min_version(value: Any) -> int | None:
    """The request parameter `min_version` (int64, uint64 or a decimal string): read-your-writes across replicas."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GrpcAbort(grpc.StatusCode.INVALID_ARGUMENT, f"parameter min_version must be an integer >= 1: {value!r}")
    return value


M = TypeVar("M")


def _parsed(doc: dict[str, Any], message: M) -> M:
    """A message filled from Triton's JSON document of it (the HTTP answer), so both protocols say the same."""
    json_format.ParseDict(doc, message)
    return message


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, registry: Registry, admin_token: str | None) -> None:
        self.registry = registry
        self.token = admin_token

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        if self.token is None:
            return
        given = dict(context.invocation_metadata() or ()).get("authorization")
        if not given:
            needs = "this method needs metadata 'authorization: Bearer <token>'"
            raise GrpcAbort(grpc.StatusCode.UNAUTHENTICATED, needs)
        scheme, _, value = str(given).partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            raise GrpcAbort(grpc.StatusCode.PERMISSION_DENIED, "the bearer token is not valid for this server")

    # -- health and metadata ----------------------------------------------------------------------------------------
    @_mapped
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_mapped
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.registry.readiness().ready)

    @_mapped
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        """Ready when the model (the version, if named) can answer now; false for one it does not know, as Triton."""
        version = _version(request.version)
        try:
            await self.registry.version(request.name, version)
        except NotFoundError:
            return pb.ModelReadyResponse(ready=False)
        ready = version is None or version in self.registry.resident(request.name)
        return pb.ModelReadyResponse(ready=ready)

    @_mapped
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="morphserve", version=__version__, extensions=triton.extensions(self.registry)
        )

    @_mapped
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        v = await self.registry.version(request.name, _version(request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=[str(r) for r in self.registry.resident(request.name)],
            platform=triton.PLATFORM,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in v.inputs],
            outputs=[tensor(name=o.name, datatype=o.datatype or "FP32", shape=o.shape or ()) for o in v.outputs],
        )

    # -- inference --------------------------------------------------------------------------------------------------
    @_mapped
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        registry = self.registry
        version = _version(request.model_version)
        decoded = codec.decode(request, registry.shm.read)
        min_version = _min_version(decoded.parameters.get("min_version"))
        sticky = None
        if version is None and registry.rollouts.active(request.model_name) is not None:  # metadata only then
            metadata = context.invocation_metadata() or ()
            sticky = registry.sticky(request.model_name, {k: v for k, v in metadata if isinstance(v, str)})
        result = await registry.infer(
            request.model_name, decoded.inputs, version, min_version=min_version, sticky=sticky
        )
        return codec.encode(
            model=request.model_name,
            version=result.version,
            request_id=request.id,
            names=result.names,
            arrays=result.outputs,
            requested=decoded.outputs,
            shm=registry.shm.write,
        )

    # -- model configuration and statistics ---------------------------------------------------------------------------
    @_mapped
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        doc = await triton.config_of(self.registry, request.name, _version(request.version))
        return pb.ModelConfigResponse(config=_parsed(doc, pb.ModelConfig()))

    @_mapped
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        doc = await triton.statistics(self.registry, request.name or None, _version(request.version))
        return _parsed(doc, pb.ModelStatisticsResponse())

    # -- the model repository ---------------------------------------------------------------------------------------
    @_mapped
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return _parsed({"models": triton.repository_index(self.registry, request.ready)}, pb.RepositoryIndexResponse())

    @staticmethod
    def _repository_params(request: Any) -> dict[str, Any]:
        out = {}
        for key, p in request.parameters.items():
            kind = p.WhichOneof("parameter_choice")
            out[key] = None if kind is None else getattr(p, kind)
        return out

    @_mapped
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self._admin(context)
        await triton.load(self.registry, request.model_name, self._repository_params(request))
        return pb.RepositoryModelLoadResponse()

    @_mapped
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self._admin(context)
        await triton.unload(self.registry, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- shared memory ----------------------------------------------------------------------------------------------
    @_mapped
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        regions = self.registry.shm.system.status(request.name or None)
        return _parsed({"regions": {r["name"]: r for r in regions}}, pb.SystemSharedMemoryStatusResponse())

    @_mapped
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._admin(context)
        self.registry.shm.system.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_mapped
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._admin(context)
        self.registry.shm.system.unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_mapped
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Any
    ) -> pb.CudaSharedMemoryStatusResponse:
        regions = self.registry.shm.cuda.status(request.name or None)
        return _parsed({"regions": {r["name"]: r for r in regions}}, pb.CudaSharedMemoryStatusResponse())

    @_mapped
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Any
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self._admin(context)
        self.registry.shm.cuda.register(request.name, request.raw_handle, request.device_id, request.byte_size)
        return pb.CudaSharedMemoryRegisterResponse()

    @_mapped
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Any
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self._admin(context)
        self.registry.shm.cuda.unregister(request.name or None)
        return pb.CudaSharedMemoryUnregisterResponse()
