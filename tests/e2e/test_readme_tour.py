"""The README's 60-second tour and its "Roll out an edit safely" and "Train a layer live" sections run as written
against a real server (only its address is substituted)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import load_file

from tests.conftest import ROOT, ServerProcess


def readme_block(name: str = "tour") -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    return block.split("```bash", 1)[1].rsplit("```", 1)[0]


def run_readme_block(name: str, server: ServerProcess, cwd: Path, timeout: float = 120) -> str:
    """Run a marked bash block of the README against `server` (its address substituted, the CLI of this checkout)
    under `bash -e`; its stdout, after asserting that every command succeeded."""
    script = readme_block(name).replace("localhost:8000", server.url.removeprefix("http://"))
    script = script.replace(".venv/bin/morphserve", str(ROOT / ".venv" / "bin" / "morphserve"))
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "MORPHSERVE_URL": server.url},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_readme_tour(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server("--state-dir", str(tmp_path / "state"))
    out = run_readme_block("tour", server, tmp_path)
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


def test_readme_rollout_section(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """ "Roll out an edit safely" as written: the shadowed broken head is aborted by its gates while every answer
    comes from the current version; the canaried identity insert is promoted by its gates."""
    server = start_server("--state-dir", str(tmp_path / "state"))
    out = run_readme_block("rollout", server, tmp_path, timeout=180)
    counts = [(int(n), int(v)) for n, v in re.findall(r'^\s*(\d+) "model_version":(\d+)$', out, flags=re.MULTILINE)]
    # the first traffic: all 300 answered by version 1 (the broken head, version 2, only ran in the shadow)
    assert counts[0] == (300, 1), out
    # the second: version 1 and the canary (version 3) answered, version 3 alone once promoted
    assert {v for _, v in counts[1:]} == {1, 3} and sum(n for n, _ in counts[1:]) == 300, out
    assert dict((v, n) for n, v in counts[1:])[3] > 150, out  # promoted after about 100 of the 300
    assert "of version 2 (baseline 1): aborted - agreement" in out and "under min_agreement 0.99" in out, out
    assert "of version 3 (baseline 1): promoted as version 3 - every gate passed" in out, out
    with httpx.Client(base_url=server.url) as api:
        info = api.get("/v1/models/digits").json()
        assert (info["version"], info["latest"], info["rollout"]) == (3, 3, None)
        versions = api.get("/v1/models/digits/versions").json()["versions"]
        assert [v["staged"] for v in versions] == [False, True, True]


def test_readme_fit_section(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """ "Train a layer live" as written, from the repository root (the datasets are its files): a fresh head falls to
    about chance, fc3 trained alone on 1,000 digits makes a staged version that recovers on the 450 held out, and
    its evaluation gate promotes it."""
    server = start_server("--state-dir", str(tmp_path / "state"))
    out = run_readme_block("fit", server, ROOT, timeout=180)
    assert "dataset train stored (1,000 rows" in out and "dataset heldout stored (450 rows" in out, out
    assert ": job " in out and " succeeded: staged version 3 (from version 2)" in out, out
    scores = re.search(r"eval: +accuracy ([0-9.]+) -> ([0-9.]+) on heldout \(450 rows\)", out)
    assert scores is not None, out
    before, after = float(scores[1]), float(scores[2])
    assert before < 0.3 and after >= 0.95, out  # about chance, then recovered
    assert "of version 3 (baseline 2): promoted as version 3 - every evaluation gate passed" in out, out
    held = load_file(ROOT / "examples" / "digits" / "heldout.safetensors")
    with httpx.Client(base_url=server.url, timeout=30) as api:
        info = api.get("/v1/models/digits").json()
        assert (info["version"], info["latest"], info["rollout"]) == (3, 3, None)
        versions = api.get("/v1/models/digits/versions").json()["versions"]
        assert versions[2]["parent"] == 2 and versions[2]["staged"] and versions[2]["ops"][0]["op"] == "fit"
        r = api.post("/v1/models/digits/infer", json={"inputs": held["input"].tolist()})
        assert r.status_code == 200 and r.json()["model_version"] == 3
        served = float((np.asarray(r.json()["outputs"]).argmax(1) == held["labels"]).mean())
        assert round(served, 4) == after  # the current version is the trained one, as its record scored it


def test_the_readme_datasets_are_what_their_script_writes() -> None:
    """examples/digits/*.safetensors are scripts/digits_datasets.py's output, byte for byte (not edited by hand)."""
    spec = importlib.util.spec_from_file_location("digits_datasets", ROOT / "scripts" / "digits_datasets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.datasets()
    assert sorted(written) == ["heldout", "train"]
    for name, data in written.items():
        assert (ROOT / "examples" / "digits" / f"{name}.safetensors").read_bytes() == data, name
