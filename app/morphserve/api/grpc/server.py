"""The gRPC server's life: started in the application's lifespan on its event loop (grpc.aio), stopped with it."""

from __future__ import annotations

import logging

import grpc

from morphserve.serving.registry import Registry
from morphserve.settings import Settings, worker_index

from .inference_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from .servicer import InferenceServicer

log = logging.getLogger("morphserve.grpc")


class GrpcStartError(RuntimeError):
    """The gRPC port could not be bound."""


async def start(registry: Registry, settings: Settings, admin_token: str | None) -> tuple[grpc.aio.Server, int]:
    """Serve `inference.GRPCInferenceService` on --host:--grpc-port; the server and the port it bound (0 picks one).

    With `--workers N` every worker binds the port with SO_REUSEPORT and the kernel spreads connections over them, as
    the supervisor's shared socket does for HTTP; a lone server binds it exclusively, so a port in use is an error.
    """
    assert settings.grpc_port is not None
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
        # a worker of `serve --workers N` runs with workers = 1 and its index set (supervisor.py)
        ("grpc.so_reuseport", 1 if worker_index() is not None or settings.workers > 1 else 0),
    ]
    server = grpc.aio.server(options=options)
    # protoc's service module has no annotations (it is generated; pyproject.toml leaves it unchecked)
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(registry, admin_token), server)  # type: ignore[no-untyped-call]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    except RuntimeError as e:  # grpc raises for a port it cannot bind
        raise GrpcStartError(f"cannot listen for gRPC on {host}:{settings.grpc_port}: {e}") from None
    if port == 0:
        raise GrpcStartError(f"cannot listen for gRPC on {host}:{settings.grpc_port}")
    await server.start()
    log.info("gRPC (inference.GRPCInferenceService) listening on %s:%d", host, port)
    return server, port


async def stop(server: grpc.aio.Server, grace_s: float = 5.0) -> None:
    """Refuse new calls, let those in flight finish for up to `grace_s`, then end."""
    await server.stop(grace_s)
