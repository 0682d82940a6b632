"""The `morphserve` command line (typer). `serve` runs the server; client commands come with the client."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from app.settings import Settings

cli = typer.Typer(help="morphserve: serve PyTorch models you can edit live.", no_args_is_help=True)


@cli.callback()
def _root() -> None:
    """morphserve: serve PyTorch models you can edit live."""


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [env MORPHSERVE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env MORPHSERVE_PORT]")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="zoo name or spec path, `name=path` to name it; repeatable [env MORPHSERVE_MODELS]")] = None,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|cuda:N [env MORPHSERVE_DEVICE]")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="rows per batch [env MORPHSERVE_MAX_BATCH_SIZE]")] = None,
    max_batch_delay_ms: Annotated[float | None, typer.Option(
        help="longest wait to fill a batch [env MORPHSERVE_MAX_BATCH_DELAY_MS]")] = None,
    admin_token: Annotated[str | None, typer.Option(help="bearer token for edits [env MORPHSERVE_ADMIN_TOKEN]")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="journal and weights [env MORPHSERVE_STATE_DIR]")] = None,
    max_body_mb: Annotated[float | None, typer.Option(help="request body limit [env MORPHSERVE_MAX_BODY_MB]")] = None,
    max_queue: Annotated[int | None, typer.Option(help="queued requests before 503 [env MORPHSERVE_MAX_QUEUE]")] = None,
    request_timeout_s: Annotated[float | None, typer.Option(
        help="inference timeout [env MORPHSERVE_REQUEST_TIMEOUT_S]")] = None,
    resident_versions: Annotated[int | None, typer.Option(
        help="versions kept on the device [env MORPHSERVE_RESIDENT_VERSIONS]")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug|info|warning [env MORPHSERVE_LOG_LEVEL]")] = None,
) -> None:
    """Serve models over HTTP (OIP v2 + the /v1 graph and edit API)."""
    import uvicorn

    from app.main import create_app

    given = {k: v for k, v in {
        "host": host, "port": port, "models": model, "device": device, "max_batch_size": max_batch_size,
        "max_batch_delay_ms": max_batch_delay_ms, "admin_token": admin_token, "state_dir": state_dir,
        "max_body_mb": max_body_mb, "max_queue": max_queue, "request_timeout_s": request_timeout_s,
        "resident_versions": resident_versions, "log_level": log_level,
    }.items() if v is not None}  # fmt: skip
    settings = Settings(**given)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False, timeout_graceful_shutdown=10)  # fmt: skip


def main() -> None:
    cli()
