"""The README's 60-second tour runs as written against a real server (only its address is substituted)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, ServerProcess


def readme_block(name: str = "tour") -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    return block.split("```bash", 1)[1].rsplit("```", 1)[0]


def test_readmereadme_block(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server("--state-dir", str(tmp_path / "state"))
    script = readme_block().replace("localhost:8000", server.url.removeprefix("http://"))
    script = script.replace(".venv/bin/morphserve", str(ROOT / ".venv" / "bin" / "morphserve"))
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "MORPHSERVE_URL": server.url},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    infers = [json.loads(line) for line in out.splitlines() if line.startswith('{"model":"digits","model_version"')]
    assert [r["model_version"] for r in infers][:4] == [1, 2, 3, 4]  # then the CLI's --random infer
    logits = [r["outputs"][0] for r in infers]
    assert max(range(10), key=lambda i: logits[0][i]) == 0  # it really is a "0"
    assert max(abs(a - b) for a, b in zip(logits[0], logits[1], strict=True)) < 1e-5  # identity insert
    assert logits[2] != logits[1]  # new head answers differently
    assert logits[3] == logits[1]  # rollback restores it exactly
    assert (tmp_path / "digits.svg").read_text().lstrip().startswith("<?xml")
    assert '"nodes": [' in out and '"version": 2' in out
    assert "extra" in out  # the CLI diff and graph show the inserted node
    assert "200 text/html; charset=utf-8" in out  # the web page the tour points at
