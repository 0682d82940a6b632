"""The `morphserve` CLI against a real server subprocess.

Commands run in-process with typer's CliRunner (fast; stdout and stderr kept apart), plus one check through
`python -m morphserve` itself for the real entry point, environment variables and exit status. Tests that edit use
their own copy of `digits` so they do not depend on each other.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from morphserve.cli import cli
from morphserve.client import Client, NotFound
from morphserve.settings import Settings
from tests.conftest import ROOT, TOKEN, ServerProcess, free_port, serve_module
from tests.forkserver import run_cli

LINEAR_128 = '{"type": "Linear", "in_features": 128, "out_features": 128}'
X = [[(i % 17) / 17 for i in range(64)]]
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits")


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c


@pytest.fixture
def fresh(api: Client) -> Iterator[str]:
    name = f"cli_digits_{next(_names)}"
    api.add_model(name, zoo="digits")
    yield name
    with contextlib.suppress(NotFound):
        api.delete_model(name)


class Run:
    """Invoke the CLI against the module's server: `run("graph", "digits")` -> click Result."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, token: str | None = TOKEN, ok: bool = True):  # type: ignore[no-untyped-def]
        env = {"MORPHSERVE_URL": self.url, "MORPHSERVE_TOKEN": token or "", "COLUMNS": "200"}  # no table wrapping
        result = self.runner.invoke(cli, list(args), input=input, env=env)
        if ok:
            assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture(scope="module")
def run(server: ServerProcess) -> Run:
    return Run(server.url)


def one_error_line(result, contains: str) -> str:  # type: ignore[no-untyped-def]
    """The CLI's failure contract: exit 1, exactly one `error: ...` line on stderr, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and contains in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


# -- models and inference ----------------------------------------------------------------------------------------
def test_models(run: Run) -> None:
    out = run("models").stdout
    assert "digits" in out and "17,226" in out and "input FP32" in out
    listing = json.loads(run("models", "--json").stdout)
    assert [m for m in listing if m["name"] == "digits"][0]["version"] >= 1


def test_infer_from_file_stdin_and_dict(run: Run, api: Client, tmp_path: Path) -> None:
    want = api.infer("digits", np.asarray(X, np.float32)).output
    f = tmp_path / "x.json"
    f.write_text(json.dumps(X))
    for result in (
        run("infer", "digits", str(f)),
        run("infer", "digits", "-", input=json.dumps(X)),
        run("infer", "digits", input=json.dumps({"input": X})),
    ):
        doc = json.loads(result.stdout)
        assert doc["model"] == "digits" and doc["model_version"] >= 1
        np.testing.assert_allclose(np.asarray(doc["outputs"]), want, rtol=1e-5, atol=1e-5)
    old = json.loads(run("infer", "digits", str(f), "--version", "1").stdout)
    assert old["model_version"] == 1


def test_infer_random(run: Run) -> None:
    doc = json.loads(run("infer", "digits", "--random").stdout)
    assert np.asarray(doc["outputs"]).shape == (1, 10)
    a = json.loads(run("infer", "digits", "--random", "--batch", "3", "--seed", "5").stdout)
    b = json.loads(run("infer", "digits", "--random", "--batch", "3", "--seed", "5").stdout)
    assert np.asarray(a["outputs"]).shape == (3, 10) and a["outputs"] == b["outputs"]


def test_infer_random_integer_inputs(run: Run, api: Client) -> None:
    name = f"emb_{next(_names)}"
    api.add_model(
        name,
        spec={
            "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [-1, 5]}],
            "outputs": [{"name": "vectors", "node": "emb"}],
            "nodes": [
                {
                    "id": "emb",
                    "layer": {"type": "Embedding", "num_embeddings": 3, "embedding_dim": 2},
                    "inputs": ["tokens"],
                }
            ],
        },
    )
    try:
        doc = json.loads(run("infer", name, "--random", "--batch", "2").stdout)
        assert np.asarray(doc["outputs"]).shape == (2, 5, 2)
    finally:
        api.delete_model(name)


def test_infer_errors(run: Run, tmp_path: Path) -> None:
    one_error_line(run("infer", "digits", input="[[1, 2]]", ok=False), "expected shape [-1, 64], got [1, 2]")
    one_error_line(run("infer", "nope", "--random", ok=False), "model 'nope' does not exist")
    one_error_line(run("infer", "digits", input="{not json", ok=False), "input is not valid JSON")
    one_error_line(run("infer", "digits", str(tmp_path / "missing.json"), ok=False), "cannot read input")
    one_error_line(run("infer", "digits", "x.json", "--random", ok=False), "not both")


# -- graphs and history --------------------------------------------------------------------------------------------
def test_graph_table_and_files(run: Run, tmp_path: Path) -> None:
    out = run("graph", "digits").stdout
    assert "digits v" in out and "17,226 params" in out
    for text in ("fc1", "relu2", "Linear(in_features=64", "FP32 [?, 10]", "8,320", "output"):
        assert text in out, text
    json_path, dot_path, svg_path, table_path = (tmp_path / n for n in ("g.json", "g.dot", "g.svg", "g.txt"))
    assert "wrote" in run("graph", "digits", "--format", "json", "-o", str(json_path)).stdout
    g = json.loads(json_path.read_text())
    assert g["model"] == "digits" and len(g["nodes"]) == 7
    run("graph", "digits", "--format", "dot", "-o", str(dot_path))
    assert dot_path.read_text().startswith("digraph")
    run("graph", "digits", "-f", "svg", "-o", str(svg_path), "--version", "1")
    assert b"<svg" in svg_path.read_bytes()
    run("graph", "digits", "-o", str(table_path))
    assert "Linear(in_features=64, out_features=128, bias=True)" in table_path.read_text()
    assert json.loads(run("graph", "digits", "--format", "json").stdout)["totals"]["nodes"] == 7
    assert run("graph", "digits", "--format", "dot").stdout.startswith("digraph")
    one_error_line(run("graph", "digits", "--version", "999", ok=False), "has no version 999")


@pytest.mark.parametrize("fmt", ["table", "json", "dot", "svg"])
def test_graph_into_a_missing_directory_is_one_line(run: Run, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "missing" / "dir" / f"x.{fmt}"
    line = one_error_line(run("graph", "digits", "-f", fmt, "-o", str(target), ok=False), f"cannot write {target}")
    assert "No such file or directory" in line and not target.parent.exists()


def test_edit_commands_versions_and_diff(run: Run, api: Client, fresh: str) -> None:
    x = np.asarray(X, np.float32)
    before = api.infer(fresh, x).output
    out = run(
        "edit", "insert", fresh, "--after", "fc1", "--layer", LINEAR_128, "--init", "identity", "--name", "extra"
    ).stdout
    assert f"{fresh}: version 1 -> 2 (added extra" in out
    np.testing.assert_allclose(api.infer(fresh, x).output, before, atol=1e-5)

    diff = run("diff", fresh, "1", "2").stdout
    assert "version 1 -> 2" in diff and "added:   extra" in diff and "changed: relu1 (inputs)" in diff
    assert json.loads(run("diff", fresh, "1", "--json").stdout)["added"] == ["extra"]

    versions = run("versions", fresh).stdout
    assert "insert Linear as extra after fc1" in versions and "2 *" in versions
    assert json.loads(run("versions", fresh, "--json").stdout)["current"] == 2

    out = run(
        "edit",
        "replace",
        fresh,
        "fc3",
        "--layer",
        '{"type": "Linear", "in_features": 64, "out_features": 10}',
        "--keep-weights",
    ).stdout
    assert "version 2 -> 3 (changed fc3)" in out
    np.testing.assert_allclose(api.infer(fresh, x).output, before, atol=1e-5)
    out = run(
        "edit",
        "replace",
        fresh,
        "fc3",
        "--layer",
        '{"type": "Linear", "in_features": 64, "out_features": 4}',
        "--allow-output-change",
        "--json",
    ).stdout
    assert json.loads(out)["diff"]["outputs_changed"] is True

    assert "version 4 -> 5 (removed extra" in run("edit", "remove", fresh, "extra", "--if-version", "4").stdout
    assert "version 5 -> 6" in run("edit", "rollback", fresh, "1").stdout
    np.testing.assert_allclose(api.infer(fresh, x).output, before, atol=1e-6)

    ops = '[{"op": "remove", "node": "relu2"}]'
    assert "dry run, nothing committed" in run("edit", "apply", fresh, ops, "--dry-run").stdout
    assert api.versions(fresh)["current"] == 6
    assert "version 6 -> 7 (removed relu2" in run("edit", "apply", fresh, "-", input=ops).stdout


def test_edit_errors(run: Run, fresh: str) -> None:
    line = one_error_line(
        run("edit", "insert", fresh, "--after", "nope", "--layer", LINEAR_128, ok=False), "node 'nope' does not exist"
    )
    assert line.startswith("error: op 0: insert Linear")
    bad_json = run("edit", "insert", fresh, "--after", "fc1", "--layer", "{bad", ok=False)
    one_error_line(bad_json, "--layer is not valid JSON")
    one_error_line(run("edit", "insert", fresh, "--layer", LINEAR_128, ok=False), "exactly one of --after")
    one_error_line(
        run(
            "edit",
            "replace",
            fresh,
            "fc3",
            "--layer",
            '{"type": "Linear", "in_features": 64, "out_features": 5}',
            ok=False,
        ),
        "set allow_output_change",
    )
    one_error_line(run("edit", "remove", fresh, "relu1", "--if-version", "9", ok=False), "is at version 1, not 9")
    line = one_error_line(run("edit", "rollback", fresh, "1", token=None, ok=False), "needs 'Authorization: Bearer")
    assert line.endswith("(no admin token was given: pass --token TOKEN or set MORPHSERVE_TOKEN)"), line
    line = one_error_line(run("edit", "rollback", fresh, "1", token="wrong", ok=False), "not valid for this server")
    assert (
        "sent the token from MORPHSERVE_TOKEN; give the server's admin token with --token or MORPHSERVE_TOKEN" in line
    )
    one_error_line(run("edit", "apply", fresh, '{"op": "remove"}', ok=False), "ops must be a JSON list")


def test_edit_weights_from_safetensors(run: Run, api: Client, fresh: str, tmp_path: Path) -> None:
    path = tmp_path / "head.safetensors"
    save_file({"weight": np.zeros((10, 64), np.float32), "bias": np.arange(10, dtype=np.float32) * 2}, path)
    out = run("edit", "weights", fresh, "fc3", str(path)).stdout
    assert f"{fresh}: version 1 -> 2 (changed fc3)" in out
    doc = json.loads(run("infer", fresh, "--random", "--batch", "2").stdout)
    assert doc["model_version"] == 2 and doc["outputs"] == [[2.0 * i for i in range(10)]] * 2

    bad = tmp_path / "bad.safetensors"
    save_file({"weight": np.zeros((10, 63), np.float32)}, bad)
    one_error_line(run("edit", "weights", fresh, "fc3", str(bad), ok=False), "has shape [10, 64], got [10, 63]")
    result = run("edit", "weights", fresh, "fc3", str(tmp_path / "missing.safetensors"), ok=False)
    assert result.exit_code == 2  # typer's own usage error for a file that does not exist
    assert api.versions(fresh)["current"] == 2


# -- global options, connection errors, the real entry point ---------------------------------------------------
def test_url_option_overrides_the_environment(run: Run, server: ServerProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = run.runner.invoke(cli, ["--url", server.url, "models", "--json"], env={"MORPHSERVE_URL": dead})
    assert result.exit_code == 0 and "digits" in result.stdout
    one_error_line(run.runner.invoke(cli, ["--url", dead, "models"]), f"cannot reach morphserve at {dead}")


def test_token_option(run: Run, server: ServerProcess, fresh: str) -> None:
    result = run.runner.invoke(
        cli, ["--url", server.url, "--token", TOKEN, "edit", "remove", fresh, "relu1"], env={"MORPHSERVE_TOKEN": ""}
    )
    assert result.exit_code == 0 and "version 1 -> 2" in result.stdout


def test_every_refusal_for_the_token_names_where_it_comes_from(
    run: Run, server: ServerProcess, api: Client, fresh: str, tmp_path: Path
) -> None:
    """401 (no token) and 403 (a wrong one), from every kind of admin command, as a real process and in-process:
    the line says that --token or MORPHSERVE_TOKEN supplies the token, and which of them was used."""
    bundle = tmp_path / "b.zip"
    run("export", fresh, "1", "-o", str(bundle))
    env = {"MORPHSERVE_URL": server.url, "MORPHSERVE_TOKEN": ""}
    for args in (["edit", "remove", fresh, "relu1"], ["pin", fresh, "1"], ["create", "nope", str(bundle)]):
        r = run_cli(args, env)
        assert r.returncode == 1 and r.stdout == "", (args, r.stdout, r.stderr)
        assert r.stderr.strip() == (
            "error: this route needs 'Authorization: Bearer <token>' "
            "(no admin token was given: pass --token TOKEN or set MORPHSERVE_TOKEN)"
        ), args
    by_flag = run.runner.invoke(cli, ["--url", server.url, "--token", "wrong", "gc", fresh, "--keep", "1"], env=env)
    line = one_error_line(by_flag, "the bearer token is not valid for this server")
    assert line.endswith(
        "(sent the token from --token; give the server's admin token with --token or MORPHSERVE_TOKEN)"
    )
    by_env = run("unpin", fresh, "1", token="wrong", ok=False)
    assert "(sent the token from MORPHSERVE_TOKEN; " in one_error_line(by_env, "not valid for this server")
    assert api.versions(fresh)["current"] == 1 and "nope" not in {m["name"] for m in api.models()}


def test_create_from_a_file_that_is_not_a_bundle_says_to_import_it(run: Run, api: Client, tmp_path: Path) -> None:
    """A torch.save checkpoint (a zip too, without spec.json) or any other file: refused before uploading, naming
    the file and `morphserve import`."""
    import torch

    checkpoint = tmp_path / "model.pt"
    torch.save({"fc.weight": torch.zeros(2, 3)}, checkpoint)
    assert zipfile.is_zipfile(checkpoint)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    for path in (checkpoint, text):
        r = run_cli(["create", "from_file", str(path)], {"MORPHSERVE_URL": run.url, "MORPHSERVE_TOKEN": TOKEN})
        assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path} is not a morphserve bundle"), r.stderr
        assert "capture it first with `morphserve import " in lines[0], lines[0]
    assert "from_file" not in {m["name"] for m in api.models()}


def test_serve_help_shows_each_flags_default() -> None:
    r = run_cli(["serve", "--help"], {"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert r.returncode == 0, r.stderr
    # a row starts with the flag, then its other spellings (`--port,--http-port,…`: KServe's and Triton's names)
    rows = {line.split()[1].split(",")[0]: line for line in r.stdout.splitlines() if line.startswith("│ --")}
    for name, field in Settings.model_fields.items():
        flag = "--model" if name == "models" else f"--{name.replace('_', '-')}"
        row = rows[flag]
        assert f"[env var: MORPHSERVE_{name.upper()}]" in row, row
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(default) or "none"
        elif isinstance(default, bool):
            default = str(default).lower()
        shown = "[default: " if default is None else f"[default: {default}]"
        assert shown in row, (flag, row)


def _pythonpath() -> dict[str, str]:
    """The test run's PYTHONPATH, if it has one (a checkout whose source must win over an installed one)."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def test_real_entry_point(server: ServerProcess) -> None:
    env = {"MORPHSERVE_URL": server.url, "PATH": "/usr/bin:/bin", **_pythonpath()}
    ok = subprocess.run(
        [sys.executable, "-m", "morphserve", "infer", "digits", "-"],
        input=json.dumps(X),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["model"] == "digits"
    bad = subprocess.run(
        [sys.executable, "-m", "morphserve", "graph", "no_such_model"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip() == "error: model 'no_such_model' does not exist"


def test_client_commands_never_import_torch(server: ServerProcess) -> None:
    """Client commands run where torch is not installed, and start fast: a real interpreter's import log of each
    (answers, tables and random inputs included) names no torch module."""
    env = {"MORPHSERVE_URL": server.url, "PATH": "/usr/bin:/bin", **_pythonpath()}
    for args in (["models"], ["infer", "digits", "--random"], ["graph", "digits"], ["versions", "digits"], ["--help"]):
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
        assert "morphserve.client" in imported or args == ["--help"], args
        assert not {m for m in imported if m == "torch" or m.startswith("torch.")}, args


# -- durability ----------------------------------------------------------------------------------------------------
def test_export_and_gc(run: Run, server: ServerProcess, api: Client, fresh: str, tmp_path: Path) -> None:
    for _ in range(2):
        api.insert(fresh, {"type": "Linear", "in_features": 128, "out_features": 128}, after="fc1", init="identity")
    out = tmp_path / "v2.zip"
    assert "wrote" in run("export", fresh, "2", "-o", str(out)).stdout
    with zipfile.ZipFile(io.BytesIO(out.read_bytes())) as z:
        assert "spec.json" in z.namelist()
    assert f"{fresh}: version 1 pinned" in run("pin", fresh, "1").stdout
    assert f"{fresh}: removed versions 2" in run("gc", fresh, "--keep", "1").stdout
    assert "unpinned" in run("unpin", fresh, "1").stdout
    assert json.loads(run("gc", fresh, "--keep", "1", "--json").stdout)["removed_versions"] == [1]
    one_error_line(run("export", fresh, "2", "-o", str(tmp_path / "gone.zip"), ok=False), "version 2")
