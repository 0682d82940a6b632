"""The README's "Serve your own model" runs as written against a real server: each `morphserve` command in a fresh
interpreter, as a user types it (only the paths are substituted)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import ROOT, ServerProcess
from tests.e2e.test_readme_tour import readme_block


def test_readme_own_model(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """ "Serve your own model" as written: import the example on the client, upload, infer, edit, roll back."""
    server = start_server("--state-dir", str(tmp_path / "state"))
    script = readme_block("own").replace(".venv/bin/morphserve", str(ROOT / ".venv" / "bin" / "morphserve"))
    script = script.replace("examples/my_model.py", str(ROOT / "examples" / "my_model.py"))
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "MORPHSERVE_URL": server.url},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert (tmp_path / "tinycnn.zip").stat().st_size > 10_000  # spec + 3,834 float32 weights
    infers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"model":"tinycnn"')]
    assert [r["model_version"] for r in infers] == [1, 2, 3, 4]
    out = [r["outputs"][0] for r in infers]
    assert max(abs(a - b) for a, b in zip(out[0], out[1], strict=True)) < 1e-5  # the identity insert
    assert out[2] != out[1]  # the fresh head answers differently
    assert out[3] == out[1]  # the rollback restores version 2 exactly
    # and the server really holds the uploaded model, with the inserted node, at version 4
    graph = httpx.get(f"{server.url}/v1/models/tinycnn/graph", timeout=30).json()
    assert graph["version"] == 4 and "mix" in {n["id"] for n in graph["nodes"]}
