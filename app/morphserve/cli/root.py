"""The root `morphserve` command: the --url/--token options, and every command group registered on it.

`serve` runs the server; every other command talks to a running server through `morphserve.client.Client`. The
commands are deliberately thin: they parse arguments, call one client method and format the answer. All HTTP,
encoding and error typing lives in the client, so scripts using the client and people using the CLI see the same
behaviour. Each group is a module with a `register(app)`; this module imports them, none imports it, and what
they share lives in the leaves `common` and `describe` (the same shape as vLLM's `entrypoints/cli`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from morphserve.cli import bundles, dataset, durability, edit, fit, history, models, rollout, serve, watch
from morphserve.cli.common import TOKEN_ENV, TOKEN_FLAG, Target

cli = typer.Typer(help="morphserve: serve PyTorch models you can edit live.", no_args_is_help=True)


@cli.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="MORPHSERVE_URL",
            show_default=False,
            help="server address for client commands \\[default: http://127.0.0.1:8000]",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar=TOKEN_ENV, show_default=False, help="admin bearer token for edits")
    ] = None,
) -> None:
    """morphserve: serve PyTorch models you can edit live."""
    source = ctx.get_parameter_source("token")  # typer's own click: compare the name, not the enum member
    from_env = source is not None and source.name == "ENVIRONMENT"
    ctx.obj = Target(url, token, (TOKEN_ENV if from_env else TOKEN_FLAG) if token else None)


# The order of `morphserve --help`: the server, then reading, following, keeping, creating, editing models, rolling
# edits out, and training layers in the server.
for group in (serve, models, history, watch, durability, bundles, edit, rollout, dataset, fit):
    group.register(cli)


def main() -> None:
    cli()
