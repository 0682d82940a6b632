"""`morphserve rollout start|status|promote|abort`: roll a staged version out under shadow traffic, a canary and gates.

`start` builds the rollout's spec from flags (the gates from `--gates JSON`, each overridable by its own flag),
`status` reads it as tables (each side's requests, errors and latency, the comparison per output, each gate's
bound, value and verdict), `promote` and `abort` end it by hand. Every command is one client call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from morphserve.cli.common import JsonFlag, client, console, fail, print_json, print_text, read_json

if TYPE_CHECKING:
    from morphserve.client import Client, Rollout

rollout_cli = typer.Typer(
    help="Roll a staged version out: shadow it, canary it, let gates promote or abort it.", no_args_is_help=True
)

ModelArg = Annotated[str, typer.Argument(help="model name")]


def _fraction(f: float) -> str:
    return f"{f * 100:g}%"


def _num(v: Any) -> str:
    """Counts with separators, measures with 4 significant digits, `-` for what was not measured."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}"


def _spec_line(spec: dict[str, Any]) -> str:
    """`shadow 100%, canary 20% (sticky X-User-Id), eval on heldout`."""
    parts = [f"shadow {_fraction(spec.get('shadow', 0))}", f"canary {_fraction(spec.get('canary', 0))}"]
    if spec.get("sticky_header"):
        parts[-1] += f" (sticky {spec['sticky_header']})"
    if spec.get("eval_dataset"):
        parts.append(f"evaluated on {spec['eval_dataset']}")
    return ", ".join(parts)


def _gates_line(gates: dict[str, Any] | None) -> str:
    """`min_requests 100, min_agreement 0.99 (argmax)`, or that nothing decides but a person."""
    if not gates:
        return "none (promote or abort by hand)"
    shown = [f"{k} {_num(v)}" for k, v in gates.items() if v is not None and k != "agreement"]
    if gates.get("min_agreement") is not None:
        shown.append(f"agreement rule {gates.get('agreement', 'argmax')}")
    return ", ".join(shown)


def _headline(r: Rollout) -> str:
    """`digits: rollout 1764-ab12 of version 3 (baseline 1): promoted as version 3 - why`."""
    state: str = r.state
    if r.state == "promoted" and r.promoted_as is not None:
        state = f"promoted as version {r.promoted_as}"
    why = f" - {r.reason}" if r.reason else ""
    return f"{r.model}: rollout {r.id} of version {r.candidate} (baseline {r.baseline}): {state}{why}"


def _print_status(r: Rollout) -> None:
    from rich.table import Table

    out = console()
    print_text(_headline(r))
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))
    ended = f", ended {time.strftime('%H:%M:%S', time.localtime(r.ended_at))}" if r.ended_at else ""
    print_text(f"  traffic: {_spec_line(r.spec)}; started {started}{ended}")
    print_text(f"  gates:   {_gates_line(r.spec.get('gates'))}")
    evidence = r.evidence or {}
    if evidence:
        compute = evidence.get("shadow_compute") or {}
        roles = Table("role", "requests", "errors", "p50 ms", "p99 ms", "shadow compute p50/p99 ms", title="evidence")
        for name, s in r.roles.items():
            c = compute.get(name) or {}
            roles.add_row(
                name,
                _num(s.requests),
                _num(s.errors),
                _num(s.p50_ms),
                _num(s.p99_ms),
                f"{_num(c.get('p50_ms'))} / {_num(c.get('p99_ms'))}",
            )
        out.print(roles)
        shadow = evidence.get("shadow") or {}
        print_text(f"  shadow runs: {_num(shadow.get('runs', 0))} run, {_num(shadow.get('dropped', 0))} dropped")
        outputs = [o for o in evidence.get("outputs") or [] if o.get("rows")]
        if outputs:
            table = Table(
                "output", "rows", "agreement", "max abs p50/p99", "relative L2 p50/p99", "flips", title="comparison"
            )
            for i, o in enumerate(outputs):
                flips = o.get("flips") or {}
                changed = ", ".join(f"{f['from']}->{f['to']} x{f['count']}" for f in (flips.get("changed") or [])[:3])
                table.add_row(
                    str(i),
                    _num(o["rows"]),
                    f"{_num(o.get('agreement'))} ({o.get('rule')})",
                    f"{_num(o['max_abs']['p50'])} / {_num(o['max_abs']['p99'])}",
                    f"{_num(o['relative_l2']['p50'])} / {_num(o['relative_l2']['p99'])}",
                    changed or "-",
                )
            out.print(table)
    if r.gates:
        table = Table("gate", "bound", "value", "ok", title="gates (now)")
        for g in r.gates.values():
            name = f"{g.name} ({g.rule})" if g.rule else g.name
            table.add_row(name, _num(g.bound), _num(g.value), "-" if g.ok is None else ("yes" if g.ok else "NO"))
        out.print(table)
    evaluation = r.evaluation or evidence.get("evaluation")
    if evaluation:
        for role in ("current", "candidate"):
            e = evaluation.get(role)
            if e:
                score = f"accuracy {e['accuracy']:.4f}" if "accuracy" in e else f"mse {e['mse']:.4g}"
                print_text(
                    f"  evaluation of {role} (version {e['version']}): {score} on {e['dataset']} ({e['rows']:,} rows)"
                )


_GATES_HELP = 'gates as JSON (a file, "-" or the text), e.g. \'{"min_requests": 500, "min_agreement": 0.99}\''


def _gate(text: str) -> Any:
    """A gate's own flag: it overrides the same field of --gates."""
    return typer.Option(help=text, show_default=False)


def _candidate(c: Client, model: str, candidate: str) -> int:
    """A version number, or `latest`: the newest version, staged ones included (what an edit with --stage made)."""
    if candidate == "latest":
        return int(c.model(model)["latest"])
    if not candidate.isdigit() or int(candidate) < 1:
        fail(f"CANDIDATE must be a version number or 'latest', not {candidate!r}")
    return int(candidate)


@rollout_cli.command("start")
def rollout_start(
    ctx: typer.Context,
    model: ModelArg,
    candidate: Annotated[
        str, typer.Argument(help="the version to roll out, or 'latest' (the newest, staged ones included)")
    ],
    shadow: Annotated[
        float, typer.Option(help="fraction (0-1) of unversioned requests also run on the candidate and compared")
    ] = 0.0,
    canary: Annotated[float, typer.Option(help="fraction (0-1) of unversioned requests the candidate answers")] = 0.0,
    sticky_header: Annotated[
        str | None, typer.Option(help="request header whose value keeps a client on one side, e.g. X-User-Id")
    ] = None,
    gates: Annotated[str | None, typer.Option(help=_GATES_HELP)] = None,
    min_requests: Annotated[int | None, _gate("evidence (candidate answers, shadow runs) before a verdict")] = None,
    max_error_rate: Annotated[float | None, _gate("abort above this error rate on the candidate")] = None,
    max_p99_ratio: Annotated[float | None, _gate("abort when the candidate's p99 is over this multiple")] = None,
    min_agreement: Annotated[float | None, _gate("abort when fewer shadowed answers agree (needs --shadow)")] = None,
    agreement: Annotated[str | None, _gate("agreement rule: argmax or allclose:TOL \\[default: argmax]")] = None,
    min_eval_accuracy: Annotated[float | None, _gate("abort when the accuracy on --eval-dataset is lower")] = None,
    max_eval_regression: Annotated[
        float | None, _gate("abort when the score on --eval-dataset is worse than the current's by more")
    ] = None,
    eval_dataset: Annotated[
        str | None, typer.Option(help="dataset to score the candidate on before any traffic reaches it")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a rollout of a (staged) version; gates, if any, promote or abort it on their own."""
    spec_gates: dict[str, Any] | None = None
    if gates is not None:
        loaded = read_json(gates, "--gates")
        if not isinstance(loaded, dict):
            fail('--gates must be a JSON object such as \'{"min_requests": 500, "min_agreement": 0.99}\'')
        spec_gates = loaded
    flags = {
        "min_requests": min_requests,
        "max_error_rate": max_error_rate,
        "max_p99_ratio": max_p99_ratio,
        "min_agreement": min_agreement,
        "agreement": agreement,
        "min_eval_accuracy": min_eval_accuracy,
        "max_eval_regression": max_eval_regression,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        spec_gates = {**(spec_gates or {}), **given}
    with client(ctx) as c:
        r = c.start_rollout(
            model,
            _candidate(c, model, candidate),
            shadow=shadow,
            canary=canary,
            sticky_header=sticky_header,
            gates=spec_gates,
            eval_dataset=eval_dataset,
        )
    if as_json:
        return print_json(r.raw)
    print_text(_headline(r))
    print_text(f"  traffic: {_spec_line(r.spec)}")
    print_text(f"  gates:   {_gates_line(r.spec.get('gates'))}")


@rollout_cli.command("status")
def rollout_status(
    ctx: typer.Context,
    model: ModelArg,
    wait: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="wait up to this many seconds for the rollout to end (exit 1 if it still runs)",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The running rollout with its evidence so far, or the last one that ended."""
    with client(ctx) as c:
        r = c.rollout(model) if wait is None else c.wait_rollout(model, timeout=wait)
    if as_json:
        print_json(r.raw)
    else:
        _print_status(r)
    if wait is not None and r.running:
        fail(f"rollout {r.id} of {model!r} is still {r.state} after {wait:g} s")


@rollout_cli.command("promote")
def rollout_promote(ctx: typer.Context, model: ModelArg, as_json: JsonFlag = False) -> None:
    """Promote the running rollout's candidate now, whatever its gates say."""
    with client(ctx) as c:
        r = c.promote_rollout(model)
    if as_json:
        return print_json(r.raw)
    print_text(_headline(r))


@rollout_cli.command("abort")
def rollout_abort(ctx: typer.Context, model: ModelArg, as_json: JsonFlag = False) -> None:
    """End the running rollout without promoting it: the candidate stops taking traffic."""
    with client(ctx) as c:
        r = c.abort_rollout(model)
    if as_json:
        return print_json(r.raw)
    print_text(_headline(r))
    print_text(f"  version {r.candidate} takes no more traffic; the current version stays")


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_cli, name="rollout")
