"""Benchmark: what uploading your own model costs the server (issue 12).

(a) Memory: a real server (subprocess, digits only) takes ResNet-50's bundle (~100 MB, imported at 224x224) through
    `POST /v1/models?name=` (Client.create_from_bundle, streamed). Reported: the server's RSS before and after
    (`VmRSS`), its peak during the upload (`VmHWM`, reset before the upload through /proc/PID/clear_refs), and
    both as multiples of the bundle's size. Target: the peak grows by at most about 2x the bundle.
(b) Start-up: the same bundle served at start with `--model resnet50=bundle.zip`, from process start to
    /v2/health/ready (the journal is fresh each time, so the bundle is read, built and warmed). Target <= 5 s of
    that is the bundle load (also reported: the digits-only start as the baseline, same invocation).
(c) Restart: the uploaded model coming back from the journal after a restart (first run's state dir).

Usage: `python scripts/bench/upload_cost.py [--reps N] [--out PATH]`; prints JSON. Medians over reps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from morphserve.client import Client  # noqa: E402

TOKEN = "bench-token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Server:
    def __init__(self, state: Path, *models: str) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "morphserve",
            "serve",
            "--port",
            str(self.port),
            "--state-dir",
            str(state),
            "--admin-token",
            TOKEN,
            "--log-level",
            "warning",
        ]
        for m in models:
            args += ["--model", m]
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ready_s = self._wait_ready()

    def _wait_ready(self) -> float:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _bundle(tmp: Path) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from morphserve.capture import capture, write_bundle
    from tests.models import vision

    path = tmp / "resnet50.zip"
    write_bundle(capture(vision.resnet50(), ["input:FP32:-1,3,224,224"], name="resnet50"), path)
    return path


def upload_memory(bundle: Path, tmp: Path, reps: int) -> dict[str, Any]:
    size = bundle.stat().st_size
    rows = []
    state = tmp / "state-upload"
    for i in range(reps):
        server = Server(tmp / f"state-up{i}", "digits")
        try:
            before = _status(server.proc.pid)
            Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            t0 = time.perf_counter()
            Client(server.url, token=TOKEN, timeout=600).create_from_bundle("resnet50", bundle)
            upload_s = time.perf_counter() - t0
            after = _status(server.proc.pid)
            rows.append(
                {
                    "rss_before": before["VmRSS"],
                    "rss_after": after["VmRSS"],
                    "peak": after["VmHWM"],
                    "upload_s": upload_s,
                }
            )
        finally:
            server.stop()
        if i == 0:
            (tmp / f"state-up{i}").rename(state)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "bundle_mb": round(size / 2**20, 1),
        "rss_before_mb": round(med["rss_before"] / 2**20, 1),
        "rss_after_mb": round(med["rss_after"] / 2**20, 1),
        "peak_mb": round(med["peak"] / 2**20, 1),
        "peak_growth_x_bundle": round((med["peak"] - med["rss_before"]) / size, 2),
        "resident_growth_x_bundle": round((med["rss_after"] - med["rss_before"]) / size, 2),
        "upload_s": round(med["upload_s"], 2),
        "state": str(state),
    }


def start_up(bundle: Path, tmp: Path, reps: int, state: Path) -> dict[str, Any]:
    base, withb, restart = [], [], []
    for i in range(reps):  # interleaved, so drift hits all three
        s = Server(tmp / f"state-base{i}", "digits")
        base.append(s.ready_s)
        s.stop()
        s = Server(tmp / f"state-b{i}", "digits", f"resnet50={bundle}")
        withb.append(s.ready_s)
        s.stop()
        s = Server(state, "digits")  # resnet50 comes back from the journal
        ok = "resnet50" in {m["name"] for m in httpx.get(f"{s.url}/v1/models", timeout=30).json()["models"]}
        restart.append(s.ready_s)
        s.stop()
        assert ok, "the uploaded model did not come back after a restart"
    b, w, r = (statistics.median(x) for x in (base, withb, restart))
    return {
        "digits_only_ready_s": round(b, 2),
        "with_bundle_ready_s": round(w, 2),
        "bundle_load_s": round(w - b, 2),
        "restart_from_journal_ready_s": round(r, 2),
        "restart_extra_s": round(r - b, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        bundle = _bundle(tmp)
        import_s = time.perf_counter() - t0
        mem = upload_memory(bundle, tmp, args.reps)
        state = Path(mem.pop("state"))
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "import_s": round(import_s, 1),
            "upload": mem,
            "start": start_up(bundle, tmp, args.reps, state),
            "targets": {"peak_growth_x_bundle_max": 2.0, "bundle_load_s_max": 5.0},
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
