#!/usr/bin/env python
"""Soak test (issue 7, item 7; not in CI): mixed traffic and live edits against a real server for N minutes.

Starts `python -m morphserve serve` itself (free loopback port, temporary state dir, --resident-versions 4), then runs
for `--minutes` (default 10):

- `--concurrency` clients (default 8) in a loop, cycling through OIP JSON, OIP binary (morphserve.client) and /v1,
  with 1-4 rows per request; every response must be a 200 with finite (rows, 10) outputs, served by a version at
  least as new as the newest edit acknowledged before the request was sent;
- one editor committing an edit every `--edit-every` seconds (default 3): identity inserts (Identity, square
  Linear), removes of what it inserted, set_weights on fc3's bias, and every tenth edit a rollback.

It samples the server's resident memory (VmRSS from /proc) every few seconds and reports, per minute: requests,
errors, p50/p99/max latency, edits, the version reached and the RSS. Memory must not grow with the number of
versions beyond the resident limit: the RSS once more versions exist than stay resident (the baseline) is compared
with the RSS at the end. Writes JSON (default docs/bench/soak.json), prints a markdown table, and exits 1 on any
error, a failed edit, or memory growth over the allowance.

    .venv/bin/python scripts/soak.py                # 10 minutes
    .venv/bin/python scripts/soak.py --minutes 1    # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from morphserve.client import AsyncClient, MorphserveError  # noqa: E402

MODEL = "digits"
KINDS = ("oip_json", "oip_binary", "v1")
X = np.random.default_rng(7).random((4, 64), dtype=np.float32)


# -- the server ------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux /proc; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Server:
    def __init__(self, state_dir: Path, token: str, resident: int, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir.parent / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            "morphserve",
            "serve",
            "--port",
            str(self.port),
            "--model",
            MODEL,
            "--state-dir",
            str(state_dir),
            "--admin-token",
            token,
            "--resident-versions",
            str(resident),
            "--log-level",
            "warning",
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"server not ready after {timeout} s:\n{self.logs()}")

    def logs(self, tail: int | None = 4000) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- the run ----------------------------------------------------------------------------------------------------------
@dataclass
class Stats:
    t0: float
    acked: int = 1
    # (seconds since start, latency s, kind, ok)
    requests: list[tuple[float, float, str, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (seconds since start, latency s, what, ok, version)
    edits: list[tuple[float, float, str, bool, int]] = field(default_factory=list)
    edit_errors: list[str] = field(default_factory=list)
    # (seconds since start, rss bytes, current version)
    rss: list[tuple[float, int, int]] = field(default_factory=list)


async def one_request(http: httpx.AsyncClient, binary: AsyncClient, stats: Stats, i: int) -> None:
    kind = KINDS[i % len(KINDS)]
    rows = 1 + i % 4
    x = X[:rows]
    floor = stats.acked
    t = time.monotonic()
    problem = None
    try:
        if kind == "oip_binary":
            res = await binary.infer(MODEL, x)
            version, out = res.version, res.output
        elif kind == "oip_json":
            body = {
                "inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]
            }
            r = await http.post(f"/v2/models/{MODEL}/infer", json=body)
            if r.status_code != 200:
                raise MorphserveError(r.status_code, r.text[:200])
            doc = r.json()
            version = int(doc["model_version"])
            out = np.asarray(doc["outputs"][0]["data"], dtype=np.float32).reshape(doc["outputs"][0]["shape"])
        else:
            r = await http.post(f"/v1/models/{MODEL}/infer", json={"inputs": x.tolist()})
            if r.status_code != 200:
                raise MorphserveError(r.status_code, r.text[:200])
            doc = r.json()
            version, out = doc["model_version"], np.asarray(doc["outputs"], dtype=np.float32)
        if out.shape != (rows, 10) or not np.isfinite(out).all():
            problem = f"{kind}: bad output {out.shape}"
        elif version < floor:
            problem = f"{kind}: sent after version {floor} was acknowledged, served by {version}"
    except MorphserveError as e:
        problem = f"{kind}: {e.status} {e.message[:200]}"
    except httpx.HTTPError as e:
        problem = f"{kind}: {type(e).__name__} {e}"
    now = time.monotonic()
    stats.requests.append((now - stats.t0, now - t, kind, problem is None))
    if problem:
        stats.errors.append(f"t={now - stats.t0:.1f}s {problem}")


async def client_loop(http: httpx.AsyncClient, binary: AsyncClient, stats: Stats, worker: int, end: float) -> None:
    i = worker
    while time.monotonic() < end:
        await one_request(http, binary, stats, i)
        i += 1


async def editor(http: httpx.AsyncClient, stats: Stats, every: float, end: float, seed: int) -> None:
    rng = random.Random(seed)
    k = 0
    inserted = 0
    while True:
        await asyncio.sleep(every)
        if time.monotonic() >= end:
            return
        k += 1
        t = time.monotonic()
        graph = (await http.get(f"/v1/models/{MODEL}/graph")).json()
        mine = [n["id"] for n in graph["nodes"] if n["id"].startswith("soak")]
        current = graph["version"]
        if k % 10 == 0 and current > 1:
            what = "rollback"
            r = await http.post(
                f"/v1/models/{MODEL}/rollback", json={"version": rng.randint(max(1, current - 3), current - 1)}
            )
        elif k % 3 == 0:
            what = "set_weights"
            bias = [round(rng.uniform(-0.5, 0.5), 4) for _ in range(10)]
            ops = [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": bias}}}]
            r = await http.post(f"/v1/models/{MODEL}/edits", json={"ops": ops, "if_version": current})
        elif len(mine) >= 3 or (mine and k % 3 == 2):
            what = "remove"
            r = await http.delete(f"/v1/models/{MODEL}/layers/{rng.choice(mine)}", headers={"If-Match": f'"{current}"'})
        else:
            what = "identity insert"
            inserted += 1
            layer = rng.choice([{"type": "Identity"}, {"type": "Linear", "in_features": 64, "out_features": 64}])
            anchor = rng.choice(["relu2", "fc2"]) if layer["type"] == "Linear" else rng.choice(["relu1", "fc1", "fc3"])
            r = await http.post(
                f"/v1/models/{MODEL}/layers",
                json={
                    "after": anchor,
                    "layer": layer,
                    "init": "identity",
                    "name": f"soak{inserted}",
                    "if_version": current,
                },
            )
        now = time.monotonic()
        ok = r.status_code == 200
        version = r.json().get("version", current) if ok else current
        stats.edits.append((now - stats.t0, now - t, what, ok, version))
        if ok:
            stats.acked = version
        else:
            stats.edit_errors.append(f"t={now - stats.t0:.1f}s {what}: {r.status_code} {r.text[:200]}")


async def sampler(pid: int, http: httpx.AsyncClient, stats: Stats, end: float, every: float = 5.0) -> None:
    while True:
        rss = rss_bytes(pid)
        if rss is not None:
            stats.rss.append((time.monotonic() - stats.t0, rss, stats.acked))
        if time.monotonic() >= end:
            return
        await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))


async def run(server: Server, token: str, args: argparse.Namespace) -> tuple[Stats, dict[str, Any]]:
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with (
        httpx.AsyncClient(
            base_url=server.url, timeout=60, limits=limits, headers={"Authorization": f"Bearer {token}"}
        ) as http,
        AsyncClient(server.url, token=token, timeout=60) as binary,
    ):
        for i in range(30):  # warm-up, not measured
            await one_request(http, binary, Stats(time.monotonic()), i)
        stats = Stats(time.monotonic())
        stats.rss.append((0.0, rss_bytes(server.proc.pid) or 0, 1))
        end = stats.t0 + args.minutes * 60
        await asyncio.gather(
            sampler(server.proc.pid, http, stats, end),
            editor(http, stats, args.edit_every, end, args.seed),
            *(client_loop(http, binary, stats, w, end) for w in range(args.concurrency)),
        )
        info = (await http.get(f"/v1/models/{MODEL}")).json()
    return stats, info


# -- the report -------------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def summarise(stats: Stats, info: dict[str, Any], args: argparse.Namespace, rss_ready: int | None) -> dict[str, Any]:
    minutes = max(1, int(np.ceil(args.minutes)))
    per_minute = []
    for m in range(minutes):
        lo, hi = m * 60, ((m + 1) * 60 if m < minutes - 1 else float("inf"))  # the last one takes the stragglers
        reqs = [r for r in stats.requests if lo <= r[0] < hi]
        lat = [r[1] * 1000 for r in reqs]
        eds = [e for e in stats.edits if lo <= e[0] < hi]
        rss = [s for s in stats.rss if s[0] < hi]
        per_minute.append(
            {
                "minute": m + 1,
                "requests": len(reqs),
                "errors": sum(1 for r in reqs if not r[3]),
                "p50_ms": round(pct(lat, 50), 2),
                "p99_ms": round(pct(lat, 99), 2),
                "max_ms": round(max(lat, default=0), 2),
                "edits": len(eds),
                "edit_errors": sum(1 for e in eds if not e[3]),
                "version": max((e[4] for e in stats.edits if e[0] < hi), default=1),
                "rss_mib": round(rss[-1][1] / 2**20, 1) if rss else None,
            }
        )
    resident_limit = args.resident_versions
    # Baseline: the first sample once more versions exist than stay resident (the resident set is full).
    full = [s for s in stats.rss if s[2] > resident_limit + 1]
    baseline = full[0] if full else (stats.rss[0] if stats.rss else None)
    last = stats.rss[-1] if stats.rss else None
    growth = (last[1] - baseline[1]) if (baseline and last) else None
    allowance = max(args.rss_allowance_mib * 2**20, 0.15 * baseline[1]) if baseline else None
    lat_all = [r[1] * 1000 for r in stats.requests]
    versions = max((e[4] for e in stats.edits), default=1)
    memory_ok = growth is not None and allowance is not None and growth <= allowance
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "edit_every_s": args.edit_every,
        "resident_versions": resident_limit,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "requests": len(stats.requests),
        "errors": len(stats.errors),
        "error_examples": stats.errors[:10],
        "requests_per_s": round(len(stats.requests) / (args.minutes * 60), 1),
        "p50_ms": round(pct(lat_all, 50), 2),
        "p99_ms": round(pct(lat_all, 99), 2),
        "max_ms": round(max(lat_all, default=0), 2),
        "by_kind": {k: sum(1 for r in stats.requests if r[2] == k) for k in KINDS},
        "edits": len(stats.edits),
        "edit_errors": len(stats.edit_errors),
        "edit_error_examples": stats.edit_errors[:10],
        "edits_by_kind": {
            w: sum(1 for e in stats.edits if e[2] == w)
            for w in ("identity insert", "remove", "set_weights", "rollback")
        },
        "edit_p50_ms": round(pct([e[1] * 1000 for e in stats.edits], 50), 2),
        "edit_p99_ms": round(pct([e[1] * 1000 for e in stats.edits], 99), 2),
        "versions_created": versions,
        "final_version": info.get("version"),
        "resident_at_end": info.get("resident_versions"),
        "rss_mib": {
            "ready": round(rss_ready / 2**20, 1) if rss_ready else None,
            "start": round(stats.rss[0][1] / 2**20, 1) if stats.rss else None,
            "baseline": round(baseline[1] / 2**20, 1) if baseline else None,
            "baseline_at_s": round(baseline[0], 1) if baseline else None,
            "baseline_versions": baseline[2] if baseline else None,
            "end": round(last[1] / 2**20, 1) if last else None,
            "max": round(max(s[1] for s in stats.rss) / 2**20, 1) if stats.rss else None,
            "growth_after_baseline": round(growth / 2**20, 1) if growth is not None else None,
            "allowance": round(allowance / 2**20, 1) if allowance is not None else None,
        },
        "memory_ok": memory_ok,
        "resident_ok": len(info.get("resident_versions", [])) <= resident_limit,
        "per_minute": per_minute,
        "rss_samples": [(round(t, 1), round(b / 2**20, 1), v) for t, b, v in stats.rss],
    }


def markdown(report: dict[str, Any]) -> str:
    rss = report["rss_mib"]
    lines = [
        f"Soak: {report['minutes']} min, {report['concurrency']} clients (OIP JSON, OIP binary, /v1), an edit every "
        f"{report['edit_every_s']} s, --resident-versions {report['resident_versions']} ({report['machine']})",
        "",
        "| minute | requests | errors | p50 ms | p99 ms | max ms | edits | edit errors | version | RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report["per_minute"]:
        cells = [
            m[k]
            for k in (
                "minute",
                "requests",
                "errors",
                "p50_ms",
                "p99_ms",
                "max_ms",
                "edits",
                "edit_errors",
                "version",
                "rss_mib",
            )
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        f"- requests: {report['requests']} ({report['requests_per_s']}/s; {report['by_kind']}), errors: "
        f"{report['errors']}; latency p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms, max {report['max_ms']} ms",
        f"- edits: {report['edits']} ({report['edits_by_kind']}), failed: {report['edit_errors']}; edit latency p50 "
        f"{report['edit_p50_ms']} ms, p99 {report['edit_p99_ms']} ms; versions: {report['versions_created']}, "
        f"resident at the end: {report['resident_at_end']}",
        f"- server RSS: {rss['ready']} MiB when ready, {rss['start']} MiB after warm-up, {rss['baseline']} MiB once "
        f"{rss['baseline_versions']} versions existed (t={rss['baseline_at_s']} s), {rss['end']} MiB at the end "
        f"(max {rss['max']}): growth {rss['growth_after_baseline']} MiB, allowance {rss['allowance']} MiB -> "
        f"{'OK' if report['memory_ok'] else 'GREW'}",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent inference clients (default 8)")
    p.add_argument("--edit-every", type=float, default=3.0, help="seconds between edits (default 3)")
    p.add_argument("--resident-versions", type=int, default=4, help="the server's --resident-versions (default 4)")
    p.add_argument(
        "--rss-allowance-mib",
        type=float,
        default=64.0,
        help="RSS growth allowed after the baseline: max(this, 15%% of the baseline) (default 64)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "soak.json", help="JSON report path")
    p.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument (repeatable)")
    args = p.parse_args()

    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="morphserve-soak-") as tmp:
        server = Server(Path(tmp) / "state", token, args.resident_versions, args.server_arg)
        try:
            t = time.monotonic()
            server.wait_ready()
            rss_ready = rss_bytes(server.proc.pid)
            print(
                f"server {server.url} ready in {time.monotonic() - t:.1f} s (pid {server.proc.pid}); "
                f"running {args.minutes} min...",
                flush=True,
            )
            stats, info = asyncio.run(run(server, token, args))
            alive = server.proc.poll() is None
        finally:
            server.stop()
            logs = server.logs(tail=None)
    report = summarise(stats, info, args, rss_ready)
    report["server_alive_at_end"] = alive
    report["server_log_errors"] = sum(1 for ln in logs.splitlines() if " ERROR " in ln or "Traceback" in ln)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nJSON: {args.out}")
    ok = (
        report["errors"] == 0
        and report["edit_errors"] == 0
        and report["memory_ok"]
        and report["resident_ok"]
        and alive
        and report["server_log_errors"] == 0
    )
    if not ok:
        print(
            "SOAK FAILED:",
            json.dumps(
                {
                    k: report[k]
                    for k in (
                        "errors",
                        "error_examples",
                        "edit_errors",
                        "edit_error_examples",
                        "memory_ok",
                        "resident_ok",
                        "server_log_errors",
                    )
                },
                indent=2,
            ),
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
