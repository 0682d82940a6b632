"""`morphserve rollout ...`, `dataset ...`, `edit ... --stage` and `edit promote` against a real server (issue 25).

Commands run in-process with typer's CliRunner (as in test_cli.py), traffic goes through the Python client, and
the outcomes are read back through the API: what the CLI says must be what the server did.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from morphserve.client import Client, NotFound
from tests.conftest import ROOT, TOKEN, ServerProcess, serve_module
from tests.digits import digits
from tests.e2e.test_cli import Run, one_error_line
from tests.e2e.test_watch import _lines, _watch

HEAD = '{"type": "Linear", "in_features": 64, "out_features": 10}'
IDENTITY_128 = '{"type": "Linear", "in_features": 128, "out_features": 128}'
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits")


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def run(server: ServerProcess) -> Run:
    return Run(server.url)


@pytest.fixture
def fresh(api: Client) -> Iterator[str]:
    name = f"cli_roll_{next(_names)}"
    api.add_model(name, zoo="digits")
    yield name
    with contextlib.suppress(NotFound):
        api.delete_model(name)


def stage_identity(run: Run, model: str) -> str:
    """An identity insert, staged, through the CLI; its one-line summary."""
    return run(
        "edit", "insert", model, "--after", "relu1", "--layer", IDENTITY_128, "--init", "identity", "--stage"
    ).stdout


# -- staged versions ------------------------------------------------------------------------------------------------
def test_stage_on_the_edit_commands_and_edit_promote(run: Run, api: Client, fresh: str, tmp_path: Path) -> None:
    out = stage_identity(run, fresh)
    assert f"{fresh}: version 2 staged (added linear_1" in out and "version 1 stays current" in out, out
    out = run("edit", "replace", fresh, "fc3", "--layer", HEAD, "--seed", "7", "--stage").stdout
    assert "version 3 staged (changed fc3, from version 1)" in out, out
    assert "version 4 staged" in run("edit", "remove", fresh, "relu2", "--stage").stdout
    weights = tmp_path / "head.safetensors"
    save_file({"weight": np.zeros((10, 64), np.float32), "bias": np.ones(10, np.float32)}, weights)
    assert "version 5 staged" in run("edit", "weights", fresh, "fc3", str(weights), "--stage").stdout
    assert "version 6 staged" in run("edit", "rollback", fresh, "1", "--stage").stdout
    ops = '[{"op": "remove", "node": "relu1"}]'
    assert json.loads(run("edit", "apply", fresh, ops, "--stage", "--json").stdout)["staged"] is True
    assert api.model(fresh)["version"] == 1 and api.model(fresh)["latest"] == 7
    versions = run("versions", fresh).stdout
    assert "staged" in versions and "1 *" in versions

    out = run("edit", "promote", fresh, "5").stdout
    assert f"{fresh}: version 1 -> 5 (changed fc3)" in out, out
    assert api.model(fresh)["version"] == 5
    assert api.infer(fresh, digits(1)[0]).output.tolist() == [[1.0] * 10]
    one_error_line(run("edit", "promote", fresh, "99", ok=False), "99")


# -- rollouts -------------------------------------------------------------------------------------------------------
def test_a_shadowed_broken_head_is_aborted_and_status_shows_the_evidence(run: Run, api: Client, fresh: str) -> None:
    run("edit", "replace", fresh, "fc3", "--layer", HEAD, "--seed", "7", "--stage")
    out = run(
        "rollout", "start", fresh, "latest", "--shadow", "1", "--min-requests", "60", "--min-agreement", "0.99"
    ).stdout
    assert f"{fresh}: rollout " in out and "of version 2 (baseline 1): running" in out, out
    assert "shadow 100%, canary 0%" in out and "min_requests 60, min_agreement 0.99" in out, out
    live = run("rollout", "status", fresh).stdout
    assert "gates (now)" in live and "min_requests" in live and "evidence" in live, live

    x, _ = digits(200)
    for i in range(200):
        assert api.infer(fresh, x[i : i + 1]).version == 1  # every answer from the current version
        if i >= 60 and i % 10 == 0 and not api.rollout(fresh).running:
            break
    done = run("rollout", "status", fresh, "--wait", "10").stdout
    assert "of version 2 (baseline 1): aborted - agreement" in done and "under min_agreement 0.99" in done, done
    for shown in ("evidence", "candidate", "current", "comparison", "(argmax)", "shadow runs:"):
        assert shown in done, (shown, done)
    raw = json.loads(run("rollout", "status", fresh, "--json").stdout)
    assert raw["state"] == "aborted" and raw["evidence"]["requests"] >= 60
    assert raw["evidence"]["outputs"][0]["agreement"] < 0.99
    assert api.model(fresh)["version"] == 1


def test_canary_abort_and_promote_by_hand(run: Run, api: Client, fresh: str) -> None:
    stage_identity(run, fresh)
    gates = ["--gates", '{"min_requests": 100000, "max_error_rate": 0.1}', "--max-error-rate", "0.5"]  # flag wins
    out = run("rollout", "start", fresh, "2", "--canary", "1", *gates).stdout
    assert "canary 100%" in out and "min_requests 100,000, max_error_rate 0.5" in out, out
    x, _ = digits(3)
    assert api.infer(fresh, x).version == 2  # the canary answers
    status = run("rollout", "status", fresh).stdout
    assert "gates (now)" in status and "max_error_rate" in status, status
    one_error_line(run("rollout", "start", fresh, "2", "--shadow", "0.5", ok=False), "end it first")
    one_error_line(run("edit", "promote", fresh, "2", ok=False), "rollout/promote")
    out = run("rollout", "abort", fresh).stdout
    assert "aborted - aborted by hand" in out and "version 2 takes no more traffic" in out, out
    assert api.infer(fresh, x).version == 1
    one_error_line(run("rollout", "promote", fresh, ok=False), "no rollout running")

    run("rollout", "start", fresh, "2", "--canary", "0.5", "--sticky-header", "X-User-Id")
    out = run("rollout", "promote", fresh).stdout
    assert "promoted as version 2 - promoted by hand" in out, out
    assert api.model(fresh)["version"] == 2 and api.infer(fresh, x).version == 2
    assert json.loads(run("rollout", "status", fresh, "--json").stdout)["promoted_as"] == 2


def test_rollout_errors_are_one_red_line(run: Run, api: Client, fresh: str) -> None:
    one_error_line(run("rollout", "status", fresh, ok=False), "has no rollout")
    stage_identity(run, fresh)
    one_error_line(run("rollout", "start", fresh, "2", "--shadow", "1.5", ok=False), "shadow")
    one_error_line(run("rollout", "start", fresh, "99", "--canary", "0.5", ok=False), "no version 99")
    one_error_line(run("rollout", "start", fresh, "1", "--canary", "0.5", ok=False), "current version")
    one_error_line(run("rollout", "start", fresh, "two", ok=False), "CANDIDATE must be a version number or 'latest'")
    one_error_line(run("rollout", "start", fresh, "2", "--gates", "[1]", ok=False), "--gates must be a JSON object")
    one_error_line(run("rollout", "start", fresh, "2", "--gates", "{bad", ok=False), "--gates is not valid JSON")
    one_error_line(run("rollout", "start", fresh, "2", "--shadow", "1", "--agreement", "cosine", ok=False), "agreement")
    one_error_line(run("rollout", "start", fresh, "2", "--canary", "1", "--eval-dataset", "no", ok=False), "dataset")
    one_error_line(run("rollout", "start", fresh, "2", "--canary", "1", token=None, ok=False), "Authorization")
    one_error_line(run("rollout", "status", fresh, ok=False), "has no rollout")  # nothing was started

    run("rollout", "start", fresh, "2", "--canary", "0.1", "--min-requests", "100000")
    still = run("rollout", "status", fresh, "--wait", "0.3", ok=False)
    one_error_line(still, "is still running after 0.3 s")
    assert ": running" in still.stdout  # the status is shown before the error
    run("rollout", "abort", fresh)


# -- datasets -------------------------------------------------------------------------------------------------------
def test_dataset_put_ls_rm_and_an_evaluated_rollout(run: Run, api: Client, fresh: str, tmp_path: Path) -> None:
    assert f"{fresh}: no datasets" in run("dataset", "ls", fresh).stdout
    x, y = digits(300, offset=1000)
    path = tmp_path / "heldout.safetensors"
    save_file({"input": x, "labels": y}, path)
    out = run("dataset", "put", fresh, "heldout", str(path)).stdout
    assert f"{fresh}: dataset heldout stored (300 rows, labels (10 classes), input FP32 [300, 64]" in out, out
    listing = run("dataset", "ls", fresh).stdout
    assert "heldout" in listing and "300" in listing and "labels (10 classes)" in listing, listing
    assert [d["name"] for d in json.loads(run("dataset", "ls", fresh, "--json").stdout)] == ["heldout"]

    stage_identity(run, fresh)
    # a canary (with no traffic here) keeps it running after the evaluation, for the traffic gates: promoted by hand
    gated = ["--eval-dataset", "heldout", "--max-eval-regression", "0", "--canary", "0.1"]
    run("rollout", "start", fresh, "latest", *gated)
    deadline = time.monotonic() + 60
    while api.rollout(fresh).state == "evaluating":  # the evaluation runs in the server's background lane
        assert time.monotonic() < deadline, "the evaluation did not finish"
        time.sleep(0.02)
    status = run("rollout", "status", fresh).stdout
    assert ": running" in status and "evaluation of candidate (version 2): accuracy" in status, status
    assert "max_eval_regression" in status and "yes" in status
    run("rollout", "promote", fresh)
    versions = run("versions", fresh).stdout
    assert "evaluations" in versions and "heldout: accuracy" in versions, versions

    bad = tmp_path / "bad.safetensors"
    save_file({"input": x[:, :63], "labels": y}, bad)
    one_error_line(run("dataset", "put", fresh, "bad", str(bad), ok=False), "'input'")
    assert f"{fresh}: dataset heldout removed" in run("dataset", "rm", fresh, "heldout").stdout
    assert f"{fresh}: no datasets" in run("dataset", "ls", fresh).stdout
    one_error_line(run("dataset", "rm", fresh, "heldout", ok=False), "no dataset 'heldout'")


def test_rollout_and_dataset_commands_never_import_torch(server: ServerProcess, api: Client, tmp_path: Path) -> None:
    """Like every client command, these run where torch is not installed: a real interpreter's import log of each
    (a dataset upload and a status table included) names no torch module."""
    x, y = digits(20)
    path = tmp_path / "few.safetensors"
    save_file({"input": x, "labels": y}, path)
    name = f"cli_roll_{next(_names)}"
    api.add_model(name, zoo="digits")
    api.insert(name, json.loads(IDENTITY_128), after="relu1", init="identity", stage=True)
    env = {"MORPHSERVE_URL": server.url, "MORPHSERVE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    if "PYTHONPATH" in os.environ:  # a checkout whose source must win over an installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    try:
        for args in (
            ["dataset", "put", name, "few", str(path)],
            ["dataset", "ls", name],
            ["rollout", "start", name, "latest", "--canary", "1", "--min-requests", "1000"],
            ["rollout", "status", name],
            ["rollout", "abort", name],
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


def test_watch_shows_staged_versions_rollouts_and_promotions(server: ServerProcess, api: Client, fresh: str) -> None:
    proc = _watch(server, fresh, "--since", "0")
    try:
        lines = _lines(proc)
        assert lines.get(timeout=60).endswith(f"{fresh} version 1: created\n")  # subscribed: the replay came
        api.insert(fresh, json.loads(IDENTITY_128), after="relu1", name="wider", init="identity", stage=True)
        line = lines.get(timeout=60)
        assert f"{fresh} version 2 (from 1): insert Linear as wider after relu1 [staged: not current]" in line, line
        started = api.start_rollout(fresh, 2, canary=1.0)
        assert f"{fresh} rollout {started.id} of version 2 started" in lines.get(timeout=60)
        api.promote_rollout(fresh)
        assert f"{fresh} version 2 promoted: it is current" in lines.get(timeout=60)
        line = lines.get(timeout=60)
        assert f"{fresh} rollout {started.id} of version 2 promoted: promoted by hand" in line, line
    finally:
        proc.kill()
        proc.wait(30)
