"""`morphserve serve` misconfigured (app/morphserve/cli/serve.py): an unknown model, a bad or missing device, a bad
number, a port in use. Each is one clear `error:` line on stderr and exit status 1, before any model is loaded or
journalled.

Real `python -m morphserve serve` processes, because the contract is about what a person sees from the shell (logging
set-up, uvicorn's bind, the exit status), which an in-process runner would not show.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

CASES = {
    "unknown model": (["--model", "nope"], ["cannot serve", "'nope' is neither a zoo model"]),
    "bad device": (["--device", "bogus"], ["--device", "'bogus'"]),
    "missing device": (["--device", "cuda:99"], ["cannot serve", "cuda:99"]),
    "bad number": (["--max-queue", "0"], ["--max-queue", "greater than or equal to 1"]),
}
PORT_IN_USE = "port in use"


@dataclass
class Outcome:
    process: subprocess.CompletedProcess[str]
    state: Path
    port: int


def _serve(args: list[str], state: Path, port: int) -> Outcome:
    argv = [sys.executable, "-m", "morphserve", "serve", *args, "--port", str(port), "--state-dir", str(state)]
    process = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return Outcome(process, state, port)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case's process, run at once (each is seconds of importing torch, and they are independent): the file
    takes about as long as one of them."""
    with socket.create_server(("127.0.0.1", 0)) as taken, ThreadPoolExecutor(len(CASES) + 1) as pool:
        futures = {
            name: pool.submit(_serve, args, tmp_path_factory.mktemp("state") / "state", free_port())
            for name, (args, _) in CASES.items()
        }
        futures[PORT_IN_USE] = pool.submit(
            _serve, [], tmp_path_factory.mktemp("state") / "state", taken.getsockname()[1]
        )
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_serve_misconfigured_is_one_line_and_exit_1(outcomes: dict[str, Outcome], case: str) -> None:
    r, words = outcomes[case].process, CASES[case][1]
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_serve_on_a_port_in_use_is_one_line_and_exit_1(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[PORT_IN_USE]
    r, port = outcome.process, outcome.port
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use", r.stderr
    assert not outcome.state.exists(), "it failed before loading (and journaling) any model"
