"""`morphserve fit`, `job ls|status|cancel`, `feedback` and `infer --request-id` against a real server (issue 29).

Commands run in-process with typer's CliRunner (as in test_cli.py); what the CLI says is checked against what the
server did, read back through the Python client.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from morphserve.client import Client, NotFound
from tests.conftest import ROOT, TOKEN, ServerProcess, serve_module
from tests.digits import digits
from tests.e2e.test_cli import Run, one_error_line
from tests.e2e.test_watch import _lines, _watch

HEAD = '{"type": "Linear", "in_features": 64, "out_features": 10}'
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits", "--feedback-window", "500")


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def run(server: ServerProcess) -> Run:
    return Run(server.url)


@pytest.fixture
def fresh(api: Client) -> Iterator[str]:
    name = f"cli_fit_{next(_names)}"
    api.add_model(name, zoo="digits")
    yield name
    with contextlib.suppress(NotFound):
        api.delete_model(name)


def put_digits(api: Client, model: str) -> tuple[np.ndarray, np.ndarray]:
    """`train` (1,000 digits) and `heldout` (the other 797) on the model; the held-out arrays."""
    x, y = digits()
    api.put_dataset(model, "train", {"input": x[:1000], "labels": y[:1000]})
    api.put_dataset(model, "heldout", {"input": x[1000:], "labels": y[1000:]})
    return x[1000:], y[1000:]


def test_fit_wait_shows_the_record_of_the_staged_version(run: Run, api: Client, fresh: str) -> None:
    held_x, held_y = put_digits(api, fresh)
    run("edit", "replace", fresh, "fc3", "--layer", HEAD, "--seed", "7")
    args = ["--dataset", "train", "--eval", "heldout", "--steps", "400", "--lr", "0.02", "--batch-size", "64"]
    result = run("fit", fresh, "--train", "fc3", *args, "--wait")
    out = result.stdout
    assert result.stderr == ""  # no terminal: no progress bar, nothing for a script to mistake for an error
    job = api.jobs(fresh)[0]
    assert f"{fresh}: job {job.id} succeeded: staged version 3 (from version 2)" in out, out
    assert "trained: fc3 on train, 400 steps (adamw, lr 0.02, batch 64, seed 0); step 400 of 400 in" in out, out
    assert f"loss:    {job.loss_curve[0]:.4g} -> {job.loss_curve[-1]:.4g}" in out, out
    assert job.eval_before is not None and job.eval_after is not None
    before, after = job.eval_before["accuracy"], job.eval_after["accuracy"]
    assert f"eval:    accuracy {before:.4f} -> {after:.4f} on heldout (797 rows)" in out, out
    assert before < 0.3 and after >= 0.95
    assert f"morphserve edit promote {fresh} 3" in out
    # what it says is what the server did: a staged version that answers requests naming it
    assert (api.model(fresh)["version"], api.model(fresh)["latest"]) == (2, 3)
    answer = api.infer(fresh, held_x, version=3)
    assert answer.version == 3 and (answer.output.argmax(1) == held_y).mean() >= 0.95
    assert "fit fc3 on train (400 steps, seed 0)" in run("versions", fresh).stdout
    raw = json.loads(run("job", "status", fresh, "latest", "--json").stdout)
    assert raw["id"] == job.id and raw["version"] == 3 and raw["state"] == "succeeded"


def test_fit_without_wait_then_job_status_ls_and_cancel(run: Run, api: Client, fresh: str) -> None:
    x, y = digits()
    api.put_dataset(fresh, "few", {"input": x[:300], "labels": y[:300]})
    out = run("fit", fresh, "--train-prefix", "fc", "--dataset", "few", "--epochs", "1", "--optimizer", "sgd").stdout
    job = api.jobs(fresh)[0]
    assert f"{fresh}: job {job.id} started: " in out and "10 steps (1 epochs) (sgd, lr 0.001" in out, out
    assert f"follow it: morphserve job status {fresh} {job.id} --wait" in out, out
    assert sorted(job.train) == ["fc1", "fc2", "fc3"]
    done = run("job", "status", fresh, job.id, "--wait", "60").stdout
    assert f"job {job.id} succeeded: staged version 2 (from version 1)" in done, done

    run("fit", fresh, "--train", "fc2,fc3", "--dataset", "few", "--steps", "10000")
    long = api.jobs(fresh)[0]
    assert long.train == ["fc2", "fc3"] and long.running
    one_error_line(run("fit", fresh, "--train", "fc3", "--dataset", "few", "--steps", "5", ok=False), long.id)
    listing = run("job", "ls", fresh).stdout
    assert long.id in listing and job.id in listing and "running" in listing and "succeeded" in listing, listing
    assert [j["id"] for j in json.loads(run("job", "ls", fresh, "--json").stdout)] == [long.id, job.id]
    out = run("job", "cancel", fresh, "latest").stdout
    assert f"{fresh}: job {long.id} cancelled - cancelled by a client" in out, out
    assert api.job(fresh, long.id).state == "cancelled" and api.model(fresh)["latest"] == 2
    one_error_line(run("job", "status", fresh, long.id, "--wait", "5", ok=False), f"job {long.id} of")


def test_a_job_still_running_after_wait_is_one_red_line_and_runs_on(run: Run, api: Client, fresh: str) -> None:
    x, y = digits()
    api.put_dataset(fresh, "few", {"input": x[:300], "labels": y[:300]})
    still = run(
        "fit", fresh, "--train", "fc3", "--dataset", "few", "--steps", "10000", "--wait", "--timeout", "0.3", ok=False
    )
    assert still.exit_code == 1
    line = one_error_line(still, "is still running after 0.3 s")
    assert ": job " in still.stdout and " running: step " in still.stdout  # the record so far, then the error
    job = api.jobs(fresh)[0]
    assert job.id in line and job.running  # following stopped, not the job
    api.cancel_job(fresh, job.id)


def test_fit_and_job_errors_are_one_red_line(run: Run, api: Client, fresh: str) -> None:
    x, y = digits()
    api.put_dataset(fresh, "few", {"input": x[:50], "labels": y[:50]})
    one_error_line(run("job", "status", fresh, "latest", ok=False), "has no jobs")
    one_error_line(run("job", "ls", "nope", ok=False), "'nope'")
    fit = ["fit", fresh, "--dataset", "few"]
    one_error_line(run(*fit, "--steps", "5", ok=False), "--train NODE (repeatable) or --train-prefix PREFIX")
    one_error_line(run(*fit, "--train", "fc3", "--train-prefix", "fc", "--steps", "5", ok=False), "not both")
    one_error_line(run(*fit, "--train", "fc3", ok=False), "--steps N or --epochs F")
    one_error_line(run(*fit, "--train", "fc3", "--steps", "5", "--epochs", "1", ok=False), "--steps N or --epochs F")
    one_error_line(run(*fit, "--train", "nope", "--steps", "5", ok=False), "no layer 'nope'")
    one_error_line(run(*fit, "--train", "relu1", "--steps", "5", ok=False), "has no parameters")
    one_error_line(run(*fit, "--train-prefix", "zzz", "--steps", "5", ok=False), "'zzz'")
    one_error_line(run(*fit, "--train", "fc3", "--steps", "50000", ok=False), "--max-fit-steps")
    one_error_line(run(*fit, "--train", "fc3", "--steps", "5", "--loss", "mse", ok=False), "targets")
    one_error_line(run(*fit, "--train", "fc3", "--steps", "5", "--eval-every", "2", ok=False), "eval")
    one_error_line(run(*fit, "--train", "fc3", "--steps", "5", "--version", "9", ok=False), "9")
    one_error_line(run("fit", fresh, "--dataset", "nope", "--train", "fc3", "--steps", "5", ok=False), "no dataset")
    one_error_line(run(*fit, "--train", "fc3", "--steps", "5", token=None, ok=False), "Authorization")
    one_error_line(run("job", "status", fresh, "1-00000000", ok=False), "no job '1-00000000'")
    one_error_line(run("job", "cancel", fresh, "1-00000000", ok=False), "no job '1-00000000'")
    assert api.jobs(fresh) == [] and api.model(fresh)["latest"] == 1  # nothing was started


def test_feedback_labels_requests_by_the_ids_infer_printed(run: Run, api: Client, fresh: str, tmp_path: Path) -> None:
    x, y = digits()
    ids = []
    for i in range(3):
        doc = json.loads(run("infer", fresh, json.dumps(x[i : i + 1].tolist()), "--request-id", f"cli-{i}").stdout)
        assert doc["request_id"] == f"cli-{i}" and doc["model_version"] == 1
        ids.append(doc["request_id"])
    unnamed = json.loads(run("infer", fresh, "--random").stdout)["request_id"]
    assert unnamed and unnamed not in ids  # the server's own id
    answers = [api.infer(fresh, x[i : i + 1], request_id=f"api-{i}") for i in range(3, 40)]
    labels = {rid: int(y[i]) for i, rid in enumerate(ids)} | {
        a.request_id: int(y[i + 3]) for i, a in enumerate(answers)
    }
    labels["gone"] = 1
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    out = run("feedback", fresh, "fb", str(path)).stdout
    assert f"{fresh}: 40 labelled request(s) added to dataset fb (now 40 rows)" in out, out
    assert "1 request id(s) not in the server's feedback window, not added: gone" in out, out
    again = json.loads(run("feedback", fresh, "fb", "-", "--json", input=json.dumps({"cli-0": int(y[0])})).stdout)
    assert again == {"dataset": "fb", "rows": 41, "added": 1, "missing": []}
    assert [(d.name, d.rows) for d in api.datasets(fresh)] == [("fb", 41)]
    one_error_line(run("feedback", fresh, "fb", '{"gone": 1}', ok=False), "feedback window")
    one_error_line(run("feedback", fresh, "fb", "[1, 2]", ok=False), "LABELS must be a JSON object")
    one_error_line(run("feedback", fresh, "fb", '{"cli-1": 10}', ok=False), "labels")
    one_error_line(run("feedback", fresh, "fb", str(tmp_path / "none.json"), ok=False), "cannot read LABELS")
    out = run("fit", fresh, "--train", "fc3", "--dataset", "fb", "--steps", "20", "--wait").stdout
    assert "succeeded: staged version 2 (from version 1)" in out, out


def test_watch_shows_a_jobs_events_and_its_staged_version(server: ServerProcess, api: Client, fresh: str) -> None:
    x, y = digits()
    api.put_dataset(fresh, "few", {"input": x[:100], "labels": y[:100]})
    proc = _watch(server, fresh, "--since", "0")
    try:
        lines = _lines(proc)
        assert lines.get(timeout=60).endswith(f"{fresh} version 1: created\n")  # subscribed: the replay came
        job = api.fit(fresh, ["fc3"], "few", steps=5)
        shown = []
        while not shown or " succeeded: " not in shown[-1]:
            line = lines.get(timeout=60)
            if " progress: step " not in line:  # once a second: there only if the machine is slow
                shown.append(line)
        assert len(shown) == 3, shown
        assert f"{fresh} job {job.id} started: step 0/5" in shown[0], shown
        assert f"{fresh} version 2 (from 1): fit fc3 on few (5 steps, seed 0) [staged: not current]" in shown[1], shown
        assert f"{fresh} job {job.id} succeeded: staged version 2 (step 5/5, loss " in shown[2], shown
    finally:
        proc.kill()
        proc.wait(30)


def test_fit_job_and_feedback_commands_never_import_torch(server: ServerProcess, api: Client) -> None:
    """Like every client command, these run where torch is not installed: a real interpreter's import log of each
    (a waited fit, the job table and record, feedback) names no torch module."""
    x, y = digits()
    name = f"cli_fit_{next(_names)}"
    api.add_model(name, zoo="digits")
    api.put_dataset(name, "few", {"input": x[:50], "labels": y[:50]})
    api.infer(name, x[:1], request_id="imp-0")
    env = {"MORPHSERVE_URL": server.url, "MORPHSERVE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    if "PYTHONPATH" in os.environ:  # a checkout whose source must win over an installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    try:
        for args in (
            ["fit", name, "--train", "fc3", "--dataset", "few", "--steps", "5", "--wait"],
            ["job", "ls", name],
            ["job", "status", name, "latest"],
            ["feedback", name, "fb", '{"imp-0": 3}'],
        ):
            r = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "morphserve", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 0, (args, r.stderr[-2000:])
            imported = {
                line.rpartition("|")[2].strip() for line in r.stderr.splitlines() if line.startswith("import time:")
            }
            assert "morphserve.client" in imported, args
            assert not {m for m in imported if m == "torch" or m.startswith("torch.")}, args
    finally:
        api.delete_model(name)
