"""What every command shares: the server target, the client, one red error line, output and input.

A leaf: it imports no command module (the commands import it, and root.py imports the commands), so the CLI's
modules form no circle. It imports neither torch nor the server; rich and the client are imported when used.
Every error a command reports goes through `fail`: one red `error: <message>` line on stderr and exit code 1,
never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from morphserve.client import Client

#: Where the CLI's admin token comes from, named in every refusal for a missing or wrong token.
TOKEN_FLAG = "--token"
TOKEN_ENV = "MORPHSERVE_TOKEN"


@dataclass(frozen=True)
class Target:
    """Where the client commands go; set once by the root callback from --url/--token or the environment.
    `token_from` is where the token came from (the flag or the variable), None when no token was given."""

    url: str | None = None
    token: str | None = None
    token_from: str | None = None


def console(stderr: bool = False) -> Console:
    """A rich console bound to the *current* sys.stdout/stderr (so test runners that swap them see the output)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def fail(message: str) -> NoReturn:
    """One red line on stderr and exit code 1: what a person at a terminal or a script checking `$?` needs."""
    from rich.text import Text

    line = " ".join(message.split())  # one line even if a message carries newlines
    console(stderr=True).print(Text(f"error: {line}", style="bold red"))
    raise typer.Exit(1)


def token_hint(target: Target) -> str:
    """What to say after a 401/403: which flag or variable supplies the token, and which one was used."""
    if not target.token:
        return f"no admin token was given: pass {TOKEN_FLAG} TOKEN or set {TOKEN_ENV}"
    sent = target.token_from or TOKEN_FLAG
    return f"sent the token from {sent}; give the server's admin token with {TOKEN_FLAG} or {TOKEN_ENV}"


@contextmanager
def client(ctx: typer.Context) -> Iterator[Client]:
    """A client for the server named by --url/--token; any refusal from it becomes `fail`."""
    from morphserve.client import Client, MorphserveError, Unauthorized

    target: Target = ctx.obj or Target()
    try:
        with Client(target.url, target.token or None) as c:
            yield c
    except Unauthorized as e:
        fail(f"{e.message} ({token_hint(target)})")
    except MorphserveError as e:
        fail(e.message)


def print_text(text: str) -> None:
    """Plain text on stdout, never re-wrapped or interpreted as rich markup (node ids, shapes use brackets)."""
    console().print(text, markup=False, soft_wrap=True)


def print_json(data: Any, indent: bool = True) -> None:
    """JSON on stdout for scripts; orjson writes numpy arrays directly and NaN/Inf as null (valid JSON)."""
    import orjson

    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    typer.echo(orjson.dumps(data, option=option).decode())


def read_json(source: str, what: str) -> Any:
    """JSON from a file path, `-` for stdin, or (for options such as --layer) the text itself."""
    try:
        if source == "-":
            text = sys.stdin.read()
        elif source.lstrip().startswith(("{", "[")):
            text = source
        else:
            text = Path(source).read_text()
        return json.loads(text)
    except OSError as e:
        fail(f"cannot read {what} {source!r}: {e.strerror or e}")
    except json.JSONDecodeError as e:
        fail(f"{what} is not valid JSON: {e}")


def write(path: Path, data: bytes | str) -> None:
    """Write a command's output file and say so; a path that cannot be written is `fail`."""
    try:
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}")
    size = len(data.encode() if isinstance(data, str) else data)
    print_text(f"wrote {path} ({size:,} bytes)")


# Options several commands share. Help texts are rich markup: a literal `[` is written `\[`.
JsonFlag = Annotated[bool, typer.Option("--json", help="print the server's JSON answer instead of a summary")]
IfVersion = Annotated[int | None, typer.Option(help="refuse (409) unless the model is at this version")]
AllowOutputChange = Annotated[bool, typer.Option(help="allow an edit that changes the outputs' shape or dtype")]
Stage = Annotated[
    bool,
    typer.Option(
        "--stage",
        help="commit the version without making it current (then: edit promote, or rollout start MODEL latest)",
    ),
]
