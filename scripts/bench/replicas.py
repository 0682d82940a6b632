"""Issue 13: replicas following one PostgreSQL journal. Lag from an edit's commit to every replica serving it, edit
latency on PostgreSQL vs SQLite, inference p99 with and without an edit per second, and (`--workers`) `serve
--workers 2` vs 1.

Run: `.venv/bin/python scripts/bench/replicas.py [--edits 20] [--duration 10] [--model digits] [--workers]`.
It starts a throwaway PostgreSQL cluster (tests/pg.py: Debian's postgresql, as the tests do) unless `--journal URL`
names a database, then three `morphserve serve --journal ...` processes on loopback, each with its own state dir.

- Lag: each edit goes to a random replica with `if_version`, so its number v is known; the moment it is sent, one
  client per replica sends an inference with `?min_version=v`, which answers as soon as v is live there. The lag of
  v is the last of those three answers minus the journal row's `committed_at` (taken inside the committing
  transaction, on this machine's clock): an upper bound, as it includes one inference and its HTTP round trip.
  Measured idle, and under load (wrk, c=64 spread over the three replicas).
- p99: wrk c=64 over the replicas for `--duration` s without edits, then as long with one edit per second.
- Edit latency: sequential edits (client-side, edit sent to answer), one server on PostgreSQL, one on SQLite.
- `--workers`: wrk c=64 on /v1 mlp against `serve --workers 1` and `--workers 2` (SQLite), requests/s.

Writes docs/bench/replicas.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.harness import ensure_wrk, machine, run_wrk, sample_input, write_payloads  # noqa: E402
from tests.conftest import AUTH, TOKEN, ServerProcess  # noqa: E402
from tests.pg import PgCluster  # noqa: E402

SHAPES = {"digits": [1, 64], "mlp": [1, 784], "resnet": [1, 3, 32, 32]}
HEAD = {"digits": ("fc3", 64), "mlp": ("fc3", 512), "resnet": ("fc", 32)}


def tag_ops(model: str, tag: float) -> list[dict[str, Any]]:
    """Zero weights and bias `tag` on the output layer: a small edit whose output is known."""
    node, width = HEAD[model]
    weight = {"shape": [10, width], "data": [0.0] * 10 * width}
    return [
        {"op": "set_weights", "node": node, "tensors": {"weight": weight, "bias": {"shape": [10], "data": [tag] * 10}}}
    ]


@contextmanager
def servers(tmp: Path, n: int, *args: str) -> Iterator[list[ServerProcess]]:
    common = ["--admin-token", TOKEN, "--min-version-wait-ms", "10000"]
    tmp.mkdir(parents=True, exist_ok=True)
    procs = [
        ServerProcess([*args, *common, "--state-dir", str(tmp / f"state-{i}")], log=tmp / f"server-{i}.log")
        for i in range(n)
    ]
    try:
        yield [p.wait_ready(120) for p in procs]
    finally:
        for p in procs:
            p.stop()


def committed_at(cluster_url: str, model: str, version: int) -> float:
    import psycopg

    with psycopg.connect(cluster_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT committed_at FROM versions WHERE model = %s AND version = %s", (model, version)
        ).fetchone()
    assert row is not None, (model, version)
    return float(row[0])


def lags(urls: list[str], journal: str, model: str, edits: int, rng: random.Random) -> list[float]:
    """Seconds from each edit's commit to the last of the replicas serving it."""
    x = sample_input(SHAPES[model]).tolist()
    out = []
    with httpx.Client(timeout=60) as c:
        for k in range(edits):
            cur = c.get(f"{urls[0]}/v1/models/{model}").json()["version"]
            while any(c.get(f"{u}/v1/models/{model}").json()["version"] != cur for u in urls):
                time.sleep(0.01)
            v, live = cur + 1, [0.0] * len(urls)

            def wait(i: int, v: int = v, live: list[float] = live) -> None:
                with httpx.Client(timeout=60) as w:
                    r = w.post(f"{urls[i]}/v1/models/{model}/infer", params={"min_version": v}, json={"inputs": x})
                    assert r.status_code == 200 and r.json()["model_version"] >= v, r.text
                    live[i] = time.time()

            waiters = [threading.Thread(target=wait, args=(i,)) for i in range(len(urls))]
            for t in waiters:
                t.start()
            r = c.post(
                f"{rng.choice(urls)}/v1/models/{model}/edits",
                headers=AUTH,
                json={"if_version": cur, "ops": tag_ops(model, float(k))},
            )
            assert r.status_code == 200, r.text
            for t in waiters:
                t.join(60)
            out.append(max(live) - committed_at(journal, model, v))
            time.sleep(rng.uniform(0.05, 0.3))
    return out


def wrk_over(urls: list[str], model: str, tmp: Path, duration: int, connections: int = 64) -> dict[str, Any]:
    """wrk on every replica at once, `connections` split among them; requests/s summed, p99 the worst replica's."""
    wrk = ensure_wrk()
    payload = write_payloads(sample_input(SHAPES[model]), tmp / "payloads")["v1_json"]
    results: list[dict[str, Any]] = [{} for _ in urls]
    share = [connections // len(urls) + (i < connections % len(urls)) for i in range(len(urls))]

    def one(i: int) -> None:
        results[i] = run_wrk(wrk, f"{urls[i]}/v1/models/{model}/infer", payload, share[i], duration)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(urls))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(duration + 180)
    return {
        "rps": round(sum(r["rps"] for r in results), 1),
        "p99_ms": max(r["p99_ms"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in results),
    }


def edit_every_second(urls: list[str], model: str, stop: threading.Event, done: list[float]) -> None:
    rng = random.Random(5)
    with httpx.Client(timeout=60) as c:
        while not stop.wait(1.0):
            t0 = time.perf_counter()
            r = c.post(
                f"{rng.choice(urls)}/v1/models/{model}/edits",
                headers=AUTH,
                json={"ops": tag_ops(model, float(len(done)))},
            )
            if r.status_code == 200:
                done.append(time.perf_counter() - t0)


def edit_latency(urls: list[str], model: str, edits: int) -> list[float]:
    out = []
    with httpx.Client(timeout=60) as c:
        for k in range(edits + 2):
            t0 = time.perf_counter()
            r = c.post(f"{urls[0]}/v1/models/{model}/edits", headers=AUTH, json={"ops": tag_ops(model, float(k))})
            assert r.status_code == 200, r.text
            if k >= 2:  # warm-up excluded
                out.append(time.perf_counter() - t0)
    return out


def stats_ms(xs: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(xs) * 1000, 1), "max_ms": round(max(xs) * 1000, 1), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--journal", help="a PostgreSQL URL to use (default: a throwaway cluster)")
    ap.add_argument("--model", default="digits", choices=sorted(SHAPES))
    ap.add_argument("--edits", type=int, default=20, help="edits per lag measurement and per edit-latency run")
    ap.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    ap.add_argument("--workers", action="store_true", help="also: serve --workers 2 vs 1, /v1 mlp at c=64")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "replicas.json")
    args = ap.parse_args()
    rng = random.Random(13)
    cluster = None if args.journal else PgCluster()
    res: dict[str, Any] = {"machine": machine(), "model": args.model, "edits": args.edits, "duration_s": args.duration}
    try:
        journal = args.journal or cluster.url(cluster.create_database())  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            with servers(tmp / "replicas", 3, "--journal", journal, "--model", args.model) as rs:
                urls = [s.url for s in rs]
                res["lag_idle"] = stats_ms(lags(urls, journal, args.model, args.edits, rng))
                box: dict[str, Any] = {}
                loader = threading.Thread(target=lambda: box.update(wrk_over(urls, args.model, tmp, args.duration + 5)))
                loader.start()
                time.sleep(2)
                res["lag_load_c64"] = stats_ms(lags(urls, journal, args.model, max(5, args.edits // 2), rng))
                loader.join()
                res["load_during_lag"] = box
                res["p99_no_edits"] = wrk_over(urls, args.model, tmp, args.duration)
                stop, done = threading.Event(), []
                editor = threading.Thread(target=edit_every_second, args=(urls, args.model, stop, done))
                editor.start()
                res["p99_edit_per_s"] = wrk_over(urls, args.model, tmp, args.duration)
                stop.set()
                editor.join(60)
                res["p99_edit_per_s"]["edits"] = len(done)
                res["edit_latency_postgresql"] = stats_ms(edit_latency(urls, args.model, args.edits))
            with servers(tmp / "sqlite", 1, "--model", args.model) as (one,):
                res["edit_latency_sqlite"] = stats_ms(edit_latency([one.url], args.model, args.edits))
            if args.workers:
                for n in (1, 2):
                    with servers(tmp / f"workers-{n}", 1, "--model", "mlp", "--workers", str(n)) as (s,):
                        time.sleep(3)  # the second worker's warm-up
                        res[f"workers_{n}"] = wrk_over([s.url], "mlp", tmp, args.duration)
    finally:
        if cluster is not None:
            cluster.close()
    report(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


def report(r: dict[str, Any]) -> None:
    rows = ["| measure | value |", "|---|---|"]
    for key in ("lag_idle", "lag_load_c64"):
        rows.append(
            f"| lag commit → 3 replicas serving, {key.removeprefix('lag_')} | median {r[key]['median_ms']} ms, "
            f"max {r[key]['max_ms']} ms ({r[key]['n']} edits) |"
        )
    a, b = r["p99_no_edits"], r["p99_edit_per_s"]
    rows.append(
        f"| p99 c=64, no edits / an edit per second | {a['p99_ms']:.1f} ms / {b['p99_ms']:.1f} ms "
        f"(x{b['p99_ms'] / a['p99_ms']:.2f}; {a['rps']} / {b['rps']} req/s; {b['edits']} edits; errors "
        f"{a['errors']} / {b['errors']}) |"
    )
    pg, sq = r["edit_latency_postgresql"], r["edit_latency_sqlite"]
    rows.append(
        f"| edit latency PostgreSQL / SQLite (median) | {pg['median_ms']} ms / {sq['median_ms']} ms "
        f"(x{pg['median_ms'] / sq['median_ms']:.2f}) |"
    )
    if "workers_1" in r:
        w1, w2 = r["workers_1"]["rps"], r["workers_2"]["rps"]
        rows.append(f"| /v1 mlp c=64, --workers 1 / 2 | {w1} / {w2} req/s (x{w2 / w1:.2f}) |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
