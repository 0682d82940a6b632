"""`morphserve fit`, `morphserve job ls|status|cancel` and `morphserve feedback`: train layers in the server.

`fit` starts a job (the layers to train, a dataset the server holds, the optimizer's settings) and, with `--wait`,
follows it with a progress bar on stderr until it ends, then prints its training record: the staged version it
committed, the loss from first to last step, the eval score before and after. `job` reads, follows and cancels jobs
(`latest` names the newest), `feedback` labels earlier requests by their request id into a dataset. Every command
is one client call (or a poll of one).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from morphserve.cli.common import JsonFlag, client, console, fail, print_json, print_text, read_json

if TYPE_CHECKING:
    from morphserve.client import Client, Job

job_cli = typer.Typer(help="Fit jobs: list them, follow one, cancel one.", no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(help="model name")]
JobArg = Annotated[str, typer.Argument(help="the job's id, or 'latest' (the model's newest job)")]
#: Seconds between two reads of a job being followed (its record changes at every step).
POLL_S = 0.25
#: Characters of the loss sparkline.
SPARK_WIDTH = 40
_BARS = "▁▂▃▄▅▆▇█"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def spark(values: list[float], width: int = SPARK_WIDTH, log: bool = False) -> str:
    """The curve in block characters, thinned evenly to `width` (the first and last points kept): its shape at a
    glance, the numbers are beside it. `log`: on a log scale (a loss falls by orders of magnitude), where every
    value is positive."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return ""
    if len(finite) > width:
        finite = [finite[round(i * (len(finite) - 1) / (width - 1))] for i in range(width)]
    if log and min(finite) > 0:
        finite = [math.log(v) for v in finite]
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int((v - lo) / span * len(_BARS)))] for v in finite)


def _value(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"{s['accuracy']:.4f}" if "accuracy" in s else f"{s['mse']:.4g}"


def scores(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """`accuracy 0.1000 -> 0.9711` (or mse), `-` for a score not taken (yet)."""
    metric = "accuracy" if "accuracy" in (before or after or {}) else "mse"
    return f"{metric} {_value(before)} -> {_value(after)}"


def headline(j: Job) -> str:
    """`digits: job 1796608391-1cbc5fe7 succeeded: staged version 3 (from version 2)`, or its state and why."""
    if j.state == "succeeded":
        what = f"succeeded: staged version {j.version} (from version {j.base_version})"
    elif j.state == "running":
        what = f"running: step {j.step:,}/{j.steps:,} from version {j.base_version}"
    else:
        what = f"{j.state}" + (f" - {j.error}" if j.error else "")
    return f"{j.model}: job {j.id} {what}"


def _settings(j: Job) -> str:
    """`fc3 on train, 400 steps (adamw, lr 0.02, batch 64, seed 0)`."""
    s = j.spec
    length = f"{j.steps:,} steps" + (f" ({s['epochs']:g} epochs)" if s.get("epochs") else "")
    extra = f"{s.get('optimizer', 'adamw')}, lr {s.get('lr', 0):g}, batch {s.get('batch_size', '?')}, seed {j.seed}"
    if s.get("loss", "cross_entropy") != "cross_entropy":
        extra = f"{s['loss']}, {extra}"
    return f"{', '.join(j.train)} on {s.get('dataset', '?')}, {length} ({extra})"


def print_record(j: Job) -> None:
    """The job's training record as a person reads it: what trained, the loss, the eval scores, what next."""
    print_text(headline(j))
    took = f"{j.seconds:.2f} s" if j.seconds < 100 else f"{j.seconds:,.0f} s"
    print_text(f"  trained: {_settings(j)}; step {j.step:,} of {j.steps:,} in {took}")
    if j.loss_curve:
        first, last = j.loss_curve[0], j.loss_curve[-1]
        print_text(f"  loss:    {_num(first)} -> {_num(last)}  {spark(j.loss_curve, log=True)}")
    if j.eval_before or j.eval_after:
        where = j.eval_before or j.eval_after or {}
        curve = [float(p["accuracy"] if "accuracy" in p else p["mse"]) for p in j.eval_curve]
        during = f"  (every {j.spec.get('eval_every')} steps: {spark(curve)})" if len(curve) > 1 else ""
        print_text(
            f"  eval:    {scores(j.eval_before, j.eval_after)} on {where.get('dataset')} "
            f"({where.get('rows', 0):,} rows){during}"
        )
    if j.state == "succeeded" and j.version is not None:
        print_text(
            f"  version {j.version} is staged: `morphserve rollout start {j.model} {j.version} ...` rolls it out, "
            f"`morphserve edit promote {j.model} {j.version}` makes it current"
        )


def _job_id(c: Client, model: str, job: str) -> str:
    if job != "latest":
        return job
    found = c.jobs(model)
    if not found:
        fail(f"model {model!r} has no jobs")
    return found[0].id


def follow(c: Client, model: str, job_id: str, timeout: float) -> Job:
    """Read the job until it ends or `timeout` passes, with a progress bar on stderr when it is a terminal (the bar
    goes when the job ends; stdout keeps the record, and a script's stderr only ever gets the error line). Ctrl-C
    stops following, not the job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    j = c.job(model, job_id)
    deadline = time.monotonic() + timeout
    err = console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task(f"job {j.id}", total=j.steps, completed=j.step)
            while j.running and time.monotonic() < deadline:
                time.sleep(POLL_S)
                j = c.job(model, job_id)
                bar.update(task, completed=j.step, description=f"job {j.id} loss {_num(j.loss)}")
    except KeyboardInterrupt:
        fail(f"stopped following job {job_id}; it runs on (`morphserve job cancel {model} {job_id}` cancels it)")
    return j


def _ended(j: Job, waited: float | None) -> None:
    """Exit 1 with one red line for a job that did not succeed (or still runs after `waited` seconds)."""
    if j.running:
        fail(f"job {j.id} of {j.model!r} is still running after {waited:g} s (step {j.step:,}/{j.steps:,})")
    if j.state != "succeeded":
        fail(f"job {j.id} of {j.model!r} {j.state}" + (f": {j.error}" if j.error else ""))


def fit(
    ctx: typer.Context,
    model: ModelArg,
    dataset: Annotated[str, typer.Option(help="the dataset to train on (morphserve dataset put)", show_default=False)],
    train: Annotated[
        list[str] | None,
        typer.Option(help="a node id to train (repeat it, or comma-separate: fc3,fc2)", show_default=False),
    ] = None,
    train_prefix: Annotated[
        str | None, typer.Option(help="train every layer whose node id or module path starts with this")
    ] = None,
    loss: Annotated[
        Literal["cross_entropy", "mse", "bce"], typer.Option(help="cross_entropy needs labels, mse and bce targets")
    ] = "cross_entropy",
    optimizer: Annotated[Literal["adamw", "sgd"], typer.Option(help="the optimizer")] = "adamw",
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-3,
    steps: Annotated[int | None, typer.Option(help="optimizer steps (or --epochs)", show_default=False)] = None,
    epochs: Annotated[
        float | None, typer.Option(help="passes over the dataset (or --steps)", show_default=False)
    ] = None,
    batch_size: Annotated[int, typer.Option(help="rows per step")] = 32,
    eval: Annotated[
        str | None, typer.Option("--eval", help="a dataset to score before and after", show_default=False)
    ] = None,
    eval_every: Annotated[int | None, typer.Option(help="also score --eval every N steps", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="seed of the batch order and of anything random")] = 0,
    version: Annotated[
        int | None, typer.Option(help="the version to start from \\[default: the current one]", show_default=False)
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="weight decay")] = 0.0,
    momentum: Annotated[float, typer.Option(help="momentum (sgd)")] = 0.0,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the job with a progress bar until it ends, then show its record")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0, help="with --wait: the longest to follow it, in seconds")] = 600.0,
    as_json: JsonFlag = False,
) -> None:
    """Train chosen layers in the server on a dataset it holds; a staged version when it ends."""
    nodes = [n.strip() for t in train or [] for n in t.split(",") if n.strip()]
    if bool(nodes) == (train_prefix is not None):
        fail("give the layers to train: --train NODE (repeatable) or --train-prefix PREFIX, not both")
    if (steps is None) == (epochs is None):
        fail("give the job's length: --steps N or --epochs F, not both")
    with client(ctx) as c:
        j = c.fit(
            model,
            nodes or str(train_prefix),
            dataset,
            loss=loss,
            optimizer=optimizer,
            lr=lr,
            steps=steps,
            epochs=epochs,
            batch_size=batch_size,
            eval=eval,
            eval_every=eval_every,
            seed=seed,
            version=version,
            weight_decay=weight_decay,
            momentum=momentum,
        )
        if wait:
            j = follow(c, model, j.id, timeout)
    if as_json:
        print_json(j.raw)
    elif wait:
        print_record(j)
    else:
        print_text(
            f"{model}: job {j.id} started: {_settings(j)}, from version {j.base_version}\n"
            f"  follow it: morphserve job status {model} {j.id} --wait {timeout:g}"
        )
    if wait:
        _ended(j, timeout)


@job_cli.command("ls")
def job_ls(ctx: typer.Context, model: ModelArg, as_json: JsonFlag = False) -> None:
    """List a model's jobs, newest first."""
    from rich.table import Table

    with client(ctx) as c:
        found = c.jobs(model)
    if as_json:
        return print_json([j.raw for j in found])
    if not found:
        return print_text(f"{model}: no jobs")
    table = Table(title=f"{model} jobs")
    table.add_column("id", no_wrap=True)  # to copy whole into `job status` / `job cancel`
    for column in ("state", "train", "dataset", "step", "loss", "eval", "version", "started", "seconds"):
        table.add_column(column)
    for j in found:
        curve = j.loss_curve
        table.add_row(
            j.id,
            j.state,
            ", ".join(j.train),
            str(j.spec.get("dataset", "")),
            f"{j.step:,}/{j.steps:,}",
            f"{_num(curve[0])} -> {_num(curve[-1])}" if curve else "-",
            scores(j.eval_before, j.eval_after) if j.eval_before else "-",
            "" if j.version is None else f"{j.version} (from {j.base_version})",
            time.strftime("%m-%d %H:%M:%S", time.localtime(j.started_at)),
            f"{j.seconds:.1f}",
        )
    console().print(table)


@job_cli.command("status")
def job_status(
    ctx: typer.Context,
    model: ModelArg,
    job: JobArg,
    wait: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="follow it up to this many seconds until it ends (exit 1 if it still runs, or did not succeed)",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """A job's progress, or its training record once it ended."""
    with client(ctx) as c:
        job_id = _job_id(c, model, job)
        j = c.job(model, job_id) if wait is None else follow(c, model, job_id, wait)
    if as_json:
        print_json(j.raw)
    else:
        print_record(j)
    if wait is not None:
        _ended(j, wait)


@job_cli.command("cancel")
def job_cancel(ctx: typer.Context, model: ModelArg, job: JobArg, as_json: JsonFlag = False) -> None:
    """Cancel a running job: it stops before its next step and commits nothing."""
    with client(ctx) as c:
        j = c.cancel_job(model, _job_id(c, model, job))
    if as_json:
        return print_json(j.raw)
    print_text(headline(j))


def feedback(
    ctx: typer.Context,
    model: ModelArg,
    dataset: Annotated[str, typer.Argument(help="the dataset the labelled requests join (created if new)")],
    labels: Annotated[
        str,
        typer.Argument(
            help='JSON {"request id": label, ...} (a file, "-" for stdin, or the text); a label is a class index, '
            "or a list for a request of several rows"
        ),
    ],
    targets: Annotated[
        bool, typer.Option("--targets", help="the labels are targets (lists shaped like the output's rows)")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Label earlier requests by their request id (X-Request-Id) into a dataset (needs --feedback-window)."""
    given = read_json(labels, "LABELS")
    if not isinstance(given, dict) or not given:
        fail('LABELS must be a JSON object of labels by request id, e.g. \'{"req-1": 3, "req-2": 7}\'')
    with client(ctx) as c:
        r = c.feedback(model, dataset, given, kind="targets" if targets else "labels")
    if as_json:
        return print_json(asdict(r))
    print_text(f"{model}: {r.added:,} labelled request(s) added to dataset {r.dataset} (now {r.rows:,} rows)")
    if r.missing:
        shown = ", ".join(r.missing[:5]) + (f" and {len(r.missing) - 5:,} more" if len(r.missing) > 5 else "")
        print_text(f"  {len(r.missing):,} request id(s) not in the server's feedback window, not added: {shown}")


def register(app: typer.Typer) -> None:
    app.command()(fit)
    app.add_typer(job_cli, name="job")
    app.command()(feedback)
