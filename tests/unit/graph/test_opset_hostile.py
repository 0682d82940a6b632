"""Every operator of the vocabulary, fed hostile arguments in a subprocess, neither crashes nor reads out of bounds
(issue 23).

A bundle is data chosen by whoever wrote it: sizes of 2**62, negative or out-of-range indices and dimensions,
infinities and NaN where numbers go, empty and non-contiguous tensors, strides and offsets of its choosing. Each
operator runs hypothesis examples of such arguments through the same parse-and-call path the server uses
(hostile_child.py); a clean Python error is a fine answer. A crash (a signal, an abort in a kernel) kills the child:
the parent names the operator and example it was running, records it, and starts a new child at the next operator.
Out-of-bounds reads are caught by canary-padded inputs and by checking where result views point.

The quick run tries a few examples per operator; the slow run (CI) many more.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.graph.hostile_child import NAMES

ROOT = Path(__file__).resolve().parents[3]


def _sweep(
    examples: int, tmp_path: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(crashes, out-of-bounds failures) over every operator."""
    crashes: list[str] = []
    failures: list[str] = []
    start = 0
    while start < len(NAMES):
        progress = tmp_path / f"progress-{start}.tsv"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "tests.unit.graph.hostile_child", str(start), str(examples), str(progress)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, **(env or {})},
            )
            out, code = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            out, code = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), -999
        failures += [line for line in out.splitlines() if line.startswith("FAIL ")]
        if "DONE" in out.splitlines():
            break
        lines = progress.read_text().splitlines() if progress.exists() else []
        last = lines[-1].split("\t") if lines else [str(start), NAMES[start], "?", "?"]
        what = "hung" if code == -999 else f"crashed (exit {code})"
        crashes.append(f"{last[1]} {what} on args {last[2]} and inputs {last[3]}")
        start = int(last[0]) + 1
    return crashes, failures


def _run(examples: int, tmp_path: Path, timeout: float) -> None:
    crashes, failures = _sweep(examples, tmp_path, timeout)
    assert not crashes, "\n".join(crashes)
    assert not failures, "\n".join(failures)


def test_every_operator_survives_hostile_arguments(tmp_path: Path) -> None:
    _run(6, tmp_path, timeout=240)


@pytest.mark.slow
def test_every_operator_survives_many_hostile_arguments(tmp_path: Path) -> None:
    _run(80, tmp_path, timeout=1200)


def test_a_crash_is_named_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """The parent's own check: a child killed by a signal is reported with its operator and example, and the
    operators after it are still tried."""
    victim = "aten.abs.default"
    crashes, failures = _sweep(2, tmp_path, timeout=240, env={"HOSTILE_CRASH_AT": victim})
    assert len(crashes) == 1 and crashes[0].startswith(f"{victim} crashed (exit -11) on args {{")
    assert not failures
