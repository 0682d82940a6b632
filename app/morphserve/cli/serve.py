"""`morphserve serve`: its options are generated from `Settings`, so every setting is a flag and a MORPHSERVE_*
variable, with the same name, type, help and default, and none can be forgotten.

A misconfiguration (a bad value, an unknown model, a bad device, a port in use) is one clear line on stderr and exit
code 1, never a traceback.
"""

from __future__ import annotations

import inspect
import logging
import re
import types
import typing
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from morphserve.cli.common import fail
from morphserve.settings import Settings, worker_index

#: Flag spellings that differ from the field name (`--model` is repeatable; the field holds the list).
_FLAG = {"models": "--model"}
_BOOL_FLAGS = {"fresh": "--fresh", "fsync": "--fsync/--no-fsync"}
#: Other spellings of a flag, as other model servers' launch lines write it (KServe's Python servers take
#: `--http_port`, `--model_dir`, `--model_name`; Triton `--http-port`, `--model-repository`), so that a serving
#: runtime's arguments carry over (docs/DEPLOY.md, "KServe").
_ALIASES = {
    "port": ("--http-port", "--http_port"),
    "model_dir": ("--model-repository", "--model_dir"),
    "model_name": ("--model_name",),
}
#: What an unset optional setting means, for the help's `[default: ...]` (a description that says
#: `(default: ...)` itself needs no entry).
_UNSET_MEANS = {
    "dtype": "the model's own",
    "admin_token": "none (one is generated and logged unless the host is loopback)",
    "blob_dir": "in the state dir",
    "keep_versions": "all",
    "grpc_port": "off",
    "compile_cache_dir": "compile-cache in the state dir",
    "model_dir": "none",
    "model_name": "the bundle's file stem",
}
_DEFAULT_IN_DESCRIPTION = re.compile(r"\s*\(default: ([^()]*)\)")


def _inner(annotation: Any) -> Any:
    """`int | None` -> int, `Annotated[list[str], NoDecode]` -> list[str]."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return annotation


def _markup(text: str) -> str:
    """`text` as literal rich markup (typer renders help as markup): a `[` that would open a tag is escaped."""
    return re.sub(r"\[(?=[a-z#/@])", r"\\[", text)


def _help(name: str, field: FieldInfo) -> str:
    """The field's description, the variable that sets it and its default, e.g.
    `address to listen on [env var: MORPHSERVE_HOST] [default: 127.0.0.1]`.

    The option's own default stays None (so that an unset flag leaves the variable or Settings' default in
    force); the default shown is Settings'."""
    description = field.description or name.replace("_", " ")
    default: Any = field.get_default(call_default_factory=True)
    if default is None:
        said = _DEFAULT_IN_DESCRIPTION.search(description)
        if said:
            description = description[: said.start()] + description[said.end() :]
        shown = said.group(1) if said else _UNSET_MEANS.get(name, "none")
    elif isinstance(default, list):
        shown = ",".join(map(str, default)) or "none"
    elif isinstance(default, bool):
        shown = str(default).lower()
    else:
        shown = str(default)
    return _markup(f"{description} [env var: MORPHSERVE_{name.upper()}] [default: {shown}]")


def _parameters() -> list[inspect.Parameter]:
    params = []
    for name, field in Settings.model_fields.items():
        kind = _inner(field.annotation)
        flags = _BOOL_FLAGS.get(name, f"--{name.replace('_', '-')}") if kind is bool else None
        option = typer.Option(
            flags or _FLAG.get(name, f"--{name.replace('_', '-')}"),
            *_ALIASES.get(name, ()),
            help=_help(name, field),
            show_default=False,
        )
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
            )
        )
    return params


def _messages(e: ValidationError) -> str:
    def one(err: Any) -> str:
        where = ".".join(str(p) for p in err["loc"]).replace("_", "-")
        got = f" (got {err['input']!r})" if where and isinstance(err.get("input"), str | int | float) else ""
        return f"--{where}: {err['msg']}{got}" if where else str(err["msg"]).removeprefix("Value error, ")

    return "; ".join(one(err) for err in e.errors())


def serve(**given: Any) -> None:
    """Serve models over HTTP (OIP v2 + the /v1 graph and edit API)."""
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        fail(f"invalid configuration: {_messages(e)}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from morphserve.main import resolve_admin_token

    token = resolve_admin_token(settings)
    if settings.workers > 1:
        from morphserve import supervisor

        raise typer.Exit(supervisor.run(settings, token))
    _serve_one(settings, token)


def _serve_one(settings: Settings, token: str | None) -> None:
    """Bind first (a port in use costs nothing), then load the models (a bad source or device is one line), then
    serve on the bound socket."""
    import uvicorn

    from morphserve.graph.errors import GraphError
    from morphserve.main import create_app, uvicorn_config
    from morphserve.serving.metrics import Metrics
    from morphserve.serving.registry import Registry
    from morphserve.store import StoreError
    from morphserve.supervisor import bind, inherited_socket

    sock = inherited_socket()
    if sock is None:
        try:
            sock = bind(settings.host, settings.port)
        except OSError as e:
            fail(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}")
    # A gRPC port in use is one line too, before any model loads (not in a worker of --workers N: they share it).
    if settings.grpc_port and settings.workers == 1 and worker_index() is None:
        try:
            bind(settings.host, settings.grpc_port).close()
        except OSError as e:
            fail(f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}: {e.strerror or e}")
    try:
        registry = Registry(settings, Metrics())
        registry.load_from_settings()
    except (ValueError, GraphError, StoreError, OSError) as e:  # a bad device, model source, state dir
        fail(f"cannot serve: {getattr(e, 'message', None) or e}")
    app = create_app(settings, registry, admin_token=token)
    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])


serve.__signature__ = inspect.Signature(_parameters(), return_annotation=None)  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
