"""`morphserve watch`: a model's versions (or the models created and deleted) as they happen."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from morphserve.cli.common import client, print_json, print_text
from morphserve.cli.describe import op_summary


def _now() -> str:
    return time.strftime("%H:%M:%S")


def _job_line(d: dict[str, Any]) -> str:
    """`job 1796608391-1cbc5fe7 progress: step 120/400, loss 0.5312`, `... succeeded: staged version 3`."""
    loss = d.get("loss")
    what = f"step {d.get('step', 0):,}/{d.get('steps', 0):,}" + ("" if loss is None else f", loss {loss:.4g}")
    if d.get("event") == "succeeded":
        what = f"staged version {d.get('version')} ({what})"
    return f"job {d.get('job')} {d.get('event')}: {what}"


def watch(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="model name (none: follow models created and deleted)", show_default=False)
    ] = None,
    since: Annotated[int | None, typer.Option(help="first replay the versions after this one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
) -> None:
    """Follow a model's versions as they are committed, promoted and rolled out, and its fit jobs, live (Ctrl-C
    stops)."""
    with client(ctx) as c:
        try:
            for e in c.events(model, since=since):
                if as_json:
                    print_json({"event": e.kind, "id": e.id, **e.data}, indent=False)
                elif e.kind == "version":
                    d = e.data
                    when = time.strftime("%H:%M:%S", time.localtime(d["created_at"]))
                    what = "; ".join(op_summary(o) for o in d["ops"]) or "created"
                    parent = f" (from {d['parent']})" if d["parent"] is not None else ""
                    staged = " [staged: not current]" if d.get("staged") else ""
                    print_text(f"{when} {d['model']} version {d['version']}{parent}: {what}{staged}")
                elif e.kind in ("model_created", "model_deleted"):
                    extra = f" at version {e.version}" if e.version is not None else ""
                    print_text(f"{e.model}: {e.kind.removeprefix('model_')}{extra}")
                elif e.kind == "promoted":
                    print_text(f"{_now()} {e.model} version {e.version} promoted: it is current")
                elif e.kind == "rollout":
                    d = e.data
                    why = f": {d['reason']}" if d.get("reason") else ""
                    print_text(
                        f"{_now()} {e.model} rollout {d['rollout']} of version {d['candidate']} {d['event']}{why}"
                    )
                elif e.kind == "job":
                    print_text(f"{_now()} {e.model} {_job_line(e.data)}")
                elif e.kind == "reset":
                    print_text("(reset: the stream could not resume where it left off; reload what you derived)")
                else:  # an event kind of a newer server: shown as it came
                    print_text(f"({e.kind}: {e.data})")
        except KeyboardInterrupt:
            return


def register(app: typer.Typer) -> None:
    app.command()(watch)
