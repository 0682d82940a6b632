"""The benchmark harness still works end to end (issue 6): `scripts/bench/run.py --smoke` must start every server
(naive FastAPI, LitServe, morphserve), drive each with wrk, run the edits-under-load and in-process-limit workloads,
and write results.json, RESULTS.md and the plots. It asserts that numbers were produced, never their values: this
2-core machine is shared, so throughput is not something a test can hold.

Needs `wrk` (Debian package; the harness apt-get installs it when running as root), and the Python packages
`litserve` and `matplotlib` in the venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "scripts" / "bench" / "run.py"
WRK_MISSING, DEP_MISSING = 3, 4  # run.py's exit codes (scripts/bench/harness.py)

W1_TARGETS = ["naive", "litserve", "morphserve_v1", "morphserve_oip_json"]
W2_TARGETS = [*W1_TARGETS, "morphserve_oip_binary"]


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x == x  # not NaN


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(RUN), "--smoke", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=280, stdin=subprocess.DEVNULL)  # fmt: skip
    if proc.returncode == WRK_MISSING:
        pytest.fail("the benchmark harness needs wrk, which is not installed and could not be installed "
                    f"(apt-get install -y wrk, as root):\n{proc.stderr[-2000:]}")  # fmt: skip
    if proc.returncode == DEP_MISSING:
        pytest.fail(f"the benchmark harness is missing a Python package (pip install litserve matplotlib):\n"
                    f"{proc.stderr[-2000:]}")  # fmt: skip
    assert proc.returncode == 0, f"run.py --smoke failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
    return out, json.loads((out / "results.json").read_text())


def _rows(results: dict, workload: str, target: str) -> list[dict]:
    return [r for r in results["runs"] if r["workload"] == workload and r["target"] == target]


def _assert_measured(row: dict, what: str) -> None:
    assert row["requests"] > 0, f"{what}: wrk completed no request"
    for key in ("rps", "p50_ms", "p99_ms", "non_2xx", "socket_errors"):
        assert _number(row[key]), f"{what}: {key} is {row[key]!r}"
    assert row["rps"] > 0 and row["p99_ms"] > 0, f"{what}: {row}"


def test_every_server_measured_on_mlp_json(smoke: tuple[Path, dict]) -> None:
    _, results = smoke
    assert results["meta"]["status"] == "ok"
    for target in W1_TARGETS:
        rows = _rows(results, "1", target)
        assert rows, f"workload 1 has no run for {target}"
        for r in rows:
            _assert_measured(r, f"workload 1 {target} c={r['connections']}")
    kinds = {s["kind"] for s in results["servers"]}
    assert kinds == {"naive", "litserve", "morphserve"}
    assert all(s["orphans_killed"] == 0 for s in results["servers"]), results["servers"]


def test_images_binary_and_json_measured(smoke: tuple[Path, dict]) -> None:
    _, results = smoke
    for target in W2_TARGETS:
        rows = _rows(results, "2", target)
        assert rows, f"workload 2 has no run for {target}"
        for r in rows:
            _assert_measured(r, f"workload 2 {r['model']} {target}")
    ratios = next(iter(results["summary"]["w2"]["convnet"].values()))["ratios"]
    assert _number(ratios["rps oip_binary/oip_json"])


def test_edits_under_load_measured(smoke: tuple[Path, dict]) -> None:
    _, results = smoke
    runs = {e["with_edits"]: e for e in results["edits"]}
    assert set(runs) == {False, True}
    for e in runs.values():
        _assert_measured(e, f"workload 3 with_edits={e['with_edits']}")
        assert e["probe"]["requests"] > 0
    edits = runs[True]["edits"]
    assert edits["count"] >= 1
    assert any(_number(x) for x in edits["edit_to_live_ms"]), edits
    w3 = results["summary"]["w3"]
    assert _number(w3["p99_with/without"])


def test_limit_measured(smoke: tuple[Path, dict]) -> None:
    _, results = smoke
    limits = results["summary"]["limit_rows_per_s"]
    for model in ("mlp", "convnet"):
        assert set(limits[model]) == {"1", "16", "32", "64"}
        assert all(_number(v) and v > 0 for v in limits[model].values())
    r1 = results["summary"]["w1_ratios"]
    assert all(_number(v) for c in r1.values() for v in c.values()), r1


def test_report_and_plots_written(smoke: tuple[Path, dict]) -> None:
    out, _ = smoke
    md = (out / "RESULTS.md").read_text()
    for heading in ("Workload 1", "Workload 2", "Workload 3", "Workload 4", "Targets"):
        assert heading in md
    for png in ("throughput_vs_concurrency.png", "images_binary_vs_json.png", "latency_during_edits.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
