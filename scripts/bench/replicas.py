"""Issues 13 and 27: replicas following one PostgreSQL journal. Commit-to-serving lag on every replica, idle and
under load; edit latency on PostgreSQL vs SQLite; inference p99 with and without an edit per second; and
(`--workers`) `serve --workers 2` vs 1, with the CPU each side used.

Run: `.venv/bin/python scripts/bench/replicas.py [--edits 20] [--duration 10] [--model digits] [--replicas 3]
[--workers] [--only lag|workers]`.
It starts a throwaway PostgreSQL cluster (tests/pg.py: Debian's postgresql, as the tests do) unless `--journal URL`
names a database, then `--replicas` `morphserve serve --journal ...` processes on loopback, each with its own state dir.

- Lag (issue 27: what "commit-to-serving" is): each edit goes to a random replica with `if_version`, so its number v
  is known. The lag of v on a replica is the time v went live there (`live_at` of `GET /v1/models/{m}`: the moment
  its worker swapped v in, on the editing replica as on the followers) minus the journal row's `committed_at` (taken
  inside the committing transaction; one clock, this machine's). Reported over every (version, replica) pair, and
  for the editor and the followers apart. Two other figures are kept beside it, because they are what the issue's two
  numbers measured: `via_min_version` (issue 13's method: one `?min_version=v` inference per replica sent as the edit
  is, the last answer minus `committed_at`: it includes that inference queueing behind the load, so it is an upper
  bound), and `answer_to_seen` (the outside check's: from the edit's answer to a poll of the other replicas seeing v:
  it leaves out commit-to-answer, so it is a lower bound). Measured idle, and under load (wrk, c=64 spread over the
  replicas).
- p99: wrk c=64 over the replicas for `--duration` s without edits, then as long with one edit per second.
- Edit latency: sequential edits (client-side, edit sent to answer), one server on PostgreSQL, one on SQLite.
- `--workers`: wrk c=64 on /v1 mlp against `serve --workers 1` and `--workers 2` (SQLite), requests/s, and the CPU
  seconds the servers and wrk used per second of the run (2.0 = both cores busy).

Writes docs/bench/replicas.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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


def status(c: httpx.Client, url: str, model: str) -> dict[str, Any]:
    r = c.get(f"{url}/v1/models/{model}")
    r.raise_for_status()
    return dict(r.json())


def lags(urls: list[str], journal: str, model: str, edits: int, rng: random.Random) -> dict[str, list[float]]:
    """Per edit: commit to live on each replica (`live_at`), split editor / followers; and the two older figures
    (`via_min_version`, `answer_to_seen`), in seconds."""
    x = sample_input(SHAPES[model]).tolist()
    out: dict[str, list[float]] = {
        "all": [],
        "editor": [],
        "followers": [],
        "via_min_version": [],
        "answer_to_seen": [],
    }
    with httpx.Client(timeout=60) as c:
        for k in range(edits):
            cur = status(c, urls[0], model)["version"]
            while any(status(c, u, model)["version"] != cur for u in urls):
                time.sleep(0.01)
            v, answered = cur + 1, [0.0] * len(urls)
            seen: dict[int, float] = {}

            def wait(i: int, v: int = v, answered: list[float] = answered) -> None:
                with httpx.Client(timeout=60) as w:
                    r = w.post(f"{urls[i]}/v1/models/{model}/infer", params={"min_version": v}, json={"inputs": x})
                    assert r.status_code == 200 and r.json()["model_version"] >= v, r.text
                    answered[i] = time.time()

            waiters = [threading.Thread(target=wait, args=(i,)) for i in range(len(urls))]
            for t in waiters:
                t.start()
            editor = rng.randrange(len(urls))
            r = c.post(
                f"{urls[editor]}/v1/models/{model}/edits",
                headers=AUTH,
                json={"if_version": cur, "ops": tag_ops(model, float(k))},
            )
            assert r.status_code == 200, r.text
            answer = time.time()
            while len(seen) < len(urls) - 1:  # the outside check's poll of the other replicas
                for i, u in enumerate(urls):
                    if i != editor and i not in seen and status(c, u, model)["version"] >= v:
                        seen[i] = time.time()
                time.sleep(0.01)
            for t in waiters:
                t.join(60)
            committed = committed_at(journal, model, v)
            for i, u in enumerate(urls):
                st = status(c, u, model)
                assert st["version"] == v and st["live_at"] is not None, st
                lag = st["live_at"] - committed
                out["all"].append(lag)
                out["editor" if i == editor else "followers"].append(lag)
            out["via_min_version"].append(max(answered) - committed)
            out["answer_to_seen"].append(max(seen.values()) - answer)
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
    ordered = sorted(xs)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(xs) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(max(xs) * 1000, 1),
        "n": len(xs),
    }


def lag_stats(runs: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {key: stats_ms(xs) for key, xs in runs.items() if xs}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p, ppid = int(stat.parent.name), int(fields[1])
        children.setdefault(ppid, []).append(p)
        cpu[p] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += children.get(p, [])
    return total


def workers_run(s: ServerProcess, tmp: Path, duration: int) -> dict[str, Any]:
    """wrk c=64 on /v1 mlp, with the CPU seconds per second of the run that the server's processes and wrk used."""
    server0, wrk0, t0 = tree_cpu_s(s.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    res = wrk_over([s.url], "mlp", tmp, duration)
    wall = time.monotonic() - t0
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["server_cpu_per_s"] = round((tree_cpu_s(s.proc.pid) - server0) / wall, 2)
    res["wrk_cpu_per_s"] = round((wrk1.ru_utime + wrk1.ru_stime - wrk0.ru_utime - wrk0.ru_stime) / wall, 2)
    return res


def lags_under_load(
    urls: list[str], journal: str, model: str, edits: int, tmp: Path, rng: random.Random
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """`lags` while wrk keeps c=64 on the replicas: wrk runs in 10 s pieces until the edits are done (a piece
    started is run to its end), so every edit is measured under load."""
    measured: dict[str, list[float]] = {}
    loads: list[dict[str, Any]] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            loads.append(wrk_over(urls, model, tmp, 10))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(2)  # wrk's connections are open and the queues full
        measured = lags(urls, journal, model, edits, rng)
    finally:
        done.set()
        loader.join()
    return measured, loads


def replica_phase(args: argparse.Namespace, journal: str, tmp: Path, rng: random.Random) -> dict[str, Any]:
    """The lag idle and under load; unless `--only lag`, p99 with and without edits and the edit latency."""
    res: dict[str, Any] = {}
    with servers(tmp / "replicas", args.replicas, "--journal", journal, "--model", args.model) as rs:
        urls = [s.url for s in rs]
        res["lag_idle"] = lag_stats(lags(urls, journal, args.model, args.edits, rng))
        loaded, loads = lags_under_load(urls, journal, args.model, args.edits, tmp, rng)
        res["lag_load_c64"] = lag_stats(loaded)
        res["load_during_lag"] = loads
        if args.only == "lag":
            return res
        res["p99_no_edits"] = wrk_over(urls, args.model, tmp, args.duration)
        stop, done = threading.Event(), []
        editor = threading.Thread(target=edit_every_second, args=(urls, args.model, stop, done))
        editor.start()
        res["p99_edit_per_s"] = wrk_over(urls, args.model, tmp, args.duration)
        stop.set()
        editor.join(60)
        res["p99_edit_per_s"]["edits"] = len(done)
        res["edit_latency_postgresql"] = stats_ms(edit_latency(urls, args.model, args.edits))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--journal", help="a PostgreSQL URL to use (default: a throwaway cluster)")
    ap.add_argument("--model", default="digits", choices=sorted(SHAPES))
    ap.add_argument("--edits", type=int, default=20, help="edits per lag measurement and per edit-latency run")
    ap.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    ap.add_argument("--replicas", type=int, default=3, help="replicas following the journal")
    ap.add_argument("--workers", action="store_true", help="also: serve --workers 2 vs 1, /v1 mlp at c=64")
    ap.add_argument(
        "--only", choices=["lag", "workers"], help="measure only the lag (idle and under load) or only --workers"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "replicas.json")
    args = ap.parse_args()
    rng = random.Random(13)
    cluster = None if args.journal or args.only == "workers" else PgCluster()
    res: dict[str, Any] = {
        "machine": machine(),
        "model": args.model,
        "edits": args.edits,
        "duration_s": args.duration,
        "replicas": args.replicas,
    }
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            if args.only != "workers":
                journal = args.journal or cluster.url(cluster.create_database())  # type: ignore[union-attr]
                res.update(replica_phase(args, journal, tmp, rng))
            if args.only is None:
                with servers(tmp / "sqlite", 1, "--model", args.model) as (one,):
                    res["edit_latency_sqlite"] = stats_ms(edit_latency([one.url], args.model, args.edits))
            if args.workers or args.only == "workers":
                for n in (1, 2):
                    with servers(tmp / f"workers-{n}", 1, "--model", "mlp", "--workers", str(n)) as (s,):
                        time.sleep(3)  # the second worker's warm-up
                        res[f"workers_{n}"] = workers_run(s, tmp, args.duration)
    finally:
        if cluster is not None:
            cluster.close()
    report(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


def report(r: dict[str, Any]) -> None:
    rows = ["| measure | value |", "|---|---|"]
    for key in ("lag_idle", "lag_load_c64") if "lag_idle" in r else ():
        lag = r[key]
        rows.append(
            f"| lag commit → serving, {key.removeprefix('lag_')}, {r['replicas']} replicas ({r['model']}) | "
            + "; ".join(
                f"{name} median {lag[name]['median_ms']} ms, p99 {lag[name]['p99_ms']} ms (n={lag[name]['n']})"
                for name in ("all", "editor", "followers", "via_min_version", "answer_to_seen")
                if name in lag
            )
            + " |"
        )
    if "p99_no_edits" in r:
        a, b = r["p99_no_edits"], r["p99_edit_per_s"]
        rows.append(
            f"| p99 c=64, no edits / an edit per second | {a['p99_ms']:.1f} ms / {b['p99_ms']:.1f} ms "
            f"(x{b['p99_ms'] / a['p99_ms']:.2f}; {a['rps']} / {b['rps']} req/s; {b['edits']} edits; errors "
            f"{a['errors']} / {b['errors']}) |"
        )
    if "edit_latency_sqlite" in r:
        pg, sq = r["edit_latency_postgresql"], r["edit_latency_sqlite"]
        rows.append(
            f"| edit latency PostgreSQL / SQLite (median) | {pg['median_ms']} ms / {sq['median_ms']} ms "
            f"(x{pg['median_ms'] / sq['median_ms']:.2f}) |"
        )
    if "workers_1" in r:
        w1, w2 = r["workers_1"], r["workers_2"]
        rows.append(
            f"| /v1 mlp c=64, --workers 1 / 2 | {w1['rps']} / {w2['rps']} req/s (x{w2['rps'] / w1['rps']:.2f}); "
            f"CPU s per s: server {w1['server_cpu_per_s']} / {w2['server_cpu_per_s']}, wrk {w1['wrk_cpu_per_s']} / "
            f"{w2['wrk_cpu_per_s']} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
