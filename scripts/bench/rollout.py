"""What a rollout costs the traffic it watches (issue 25), measured against the same server without one.

    python scripts/bench/rollout.py                 # mlp and resnet, 3 repetitions, 10 s runs (~6 min on 2 cores)
    python scripts/bench/rollout.py --quick         # 1 repetition, 4 s runs, a 2,000-sample evaluation

Per model, one `morphserve serve` (one torch thread, batching 32 / 2 ms) and wrk at c=16 on /v1 (one sample per
request). The candidate is a staged copy of version 1 (`rollback` with `stage: true`): it computes the same, so any
difference is the rollout's machinery, not the candidate's arithmetic. Conditions alternate within each repetition:
no rollout, shadow 100 %, canary 10 % (then no rollout again in the next repetition). On resnet, a labelled dataset
(`--eval-rows`, default 10,000 samples of 3x32x32) is evaluated on both versions by a rollout's evaluation gate while
wrk runs, against a run without it; the evaluation's duration is reported.

Targets: shadow 100 % p99 <= 1.15x no rollout; canary 10 % throughput >= 0.95x; serving p99 during the evaluation
<= 1.3x. Medians over repetitions; results to --out (JSON and a markdown table).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h

AUTH = {"Authorization": f"Bearer {h.TOKEN}", "Content-Type": "application/json"}
SHAPES = {"mlp": (1, 784), "resnet": (1, 3, 32, 32)}


def _call(server: h.Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, _, out = h.request(server.url, method, path, data, headers or AUTH, timeout=600)
    if status >= 300:
        raise h.BenchError(f"{method} {path}: HTTP {status}: {out[:300]!r}")
    return json.loads(out) if out else None


def _rollout(server: h.Server, model: str, spec: dict[str, Any] | None) -> None:
    """End any rollout, then start `spec` (None: leave none running)."""
    status, _, _ = h.request(server.url, "GET", f"/v1/models/{model}/rollout")
    if status == 200 and _call(server, "GET", f"/v1/models/{model}/rollout")["state"] in ("running", "evaluating"):
        _call(server, "POST", f"/v1/models/{model}/rollout/abort")
    if spec is not None:
        _call(server, "PUT", f"/v1/models/{model}/rollout", spec)


def _dataset(rows: int, shape: tuple[int, ...]) -> bytes:
    from safetensors.numpy import save

    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, *shape[1:])).astype(np.float32)
    return save({"input": x, "labels": rng.integers(0, 10, rows).astype(np.int64)})


def measure(model: str, args: argparse.Namespace, wrk: str, log_dir: Path) -> dict[str, Any]:
    extra = ("--admin-token", h.TOKEN, "--max-body-mb", "512", "--max-dataset-mb", "512")
    server = h.Server(h.ServerConfig("morphserve", model, extra_args=extra), log_dir).start()
    try:
        payload = h.write_payloads(h.sample_input(SHAPES[model]), log_dir / model)["v1_json"]
        path = f"/v1/models/{model}/infer"
        candidate = _call(server, "POST", f"/v1/models/{model}/rollback", {"version": 1, "stage": True})["version"]
        conditions: dict[str, dict[str, Any] | None] = {
            "none": None,
            "shadow_100": {"candidate": candidate, "shadow": 1.0},
            "canary_10": {"candidate": candidate, "canary": 0.1},
        }
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in conditions}
        for rep in range(args.reps):
            order = list(conditions) if rep % 2 == 0 else list(reversed(conditions))
            for name in order:
                _rollout(server, model, conditions[name])
                h.settle(server.url, path, payload)
                r = h.run_wrk(wrk, server.url + path, payload, 16, args.duration)
                if conditions[name] is not None:
                    view = _call(server, "GET", f"/v1/models/{model}/rollout")
                    r["shadow"] = view["evidence"]["shadow"]
                    r["candidate_requests"] = view["evidence"]["roles"]["candidate"]["requests"]
                    r["current_requests"] = view["evidence"]["roles"]["current"]["requests"]
                runs[name].append(r)
                print(f"  {model:7s} rep {rep} {name:11s} {r['rps']:8.1f} req/s p99 {r['p99_ms']:7.2f} ms", flush=True)
        _rollout(server, model, None)
        result: dict[str, Any] = {"model": model, "candidate": candidate, "runs": runs}
        if model == "resnet":
            result["evaluation"] = evaluation(server, model, candidate, payload, path, args, wrk)
        return result
    finally:
        server.stop()


def evaluation(
    server: h.Server, model: str, candidate: int, payload: h.Payload, path: str, args: argparse.Namespace, wrk: str
) -> dict[str, Any]:
    body = _dataset(args.eval_rows, SHAPES[model])
    _call(
        server, "PUT", f"/v1/models/{model}/datasets/eval", body, {**AUTH, "Content-Type": "application/octet-stream"}
    )
    out: dict[str, list[Any]] = {"without": [], "with": [], "seconds": []}
    for rep in range(args.reps):
        h.settle(server.url, path, payload)
        out["without"].append(h.run_wrk(wrk, server.url + path, payload, 16, args.duration))
        _rollout(server, model, None)
        h.settle(server.url, path, payload)
        t0 = time.perf_counter()
        _rollout(server, model, {"candidate": candidate, "eval_dataset": "eval"})
        box: dict[str, Any] = {}

        def load(box: dict[str, Any] = box) -> None:
            box.update(h.run_wrk(wrk, server.url + path, payload, 16, args.duration))

        loader = threading.Thread(target=load)
        loader.start()
        done_at = None
        while loader.is_alive() or done_at is None:
            state = _call(server, "GET", f"/v1/models/{model}/rollout")["state"]
            if state != "evaluating" and done_at is None:
                done_at = time.perf_counter() - t0
            if not loader.is_alive() and done_at is None and time.perf_counter() - t0 > 600:
                break
            time.sleep(0.05)
        loader.join()
        out["with"].append(box)
        out["seconds"].append(done_at)
        print(
            f"  {model:7s} rep {rep} eval {args.eval_rows} rows in {done_at:.1f} s; serving p99 "
            f"{box['p99_ms']:.2f} ms vs {out['without'][-1]['p99_ms']:.2f} ms without",
            flush=True,
        )
        _rollout(server, model, None)
    return out


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    buf = io.StringIO()
    w = buf.write
    w(
        f"`python scripts/bench/rollout.py{' --quick' if args.quick else ''}` ({args.reps} repetition(s), "
        f"{args.duration} s runs, c=16, /v1 one sample; medians)\n\n"
    )
    w("| model | condition | req/s | p50 ms | p99 ms | p99 / none | req/s / none | shadow runs | dropped |\n")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    for res in results:
        base_p99, base_rps = _med(res["runs"]["none"], "p99_ms"), _med(res["runs"]["none"], "rps")
        for name, runs in res["runs"].items():
            p99, rps = _med(runs, "p99_ms"), _med(runs, "rps")
            shadow = [r.get("shadow") for r in runs if r.get("shadow")]
            ran = sum(s["runs"] for s in shadow) if shadow else 0
            dropped = sum(s["dropped"] for s in shadow) if shadow else 0
            share = f"{dropped} ({dropped / max(ran + dropped, 1):.0%})" if name == "shadow_100" else "-"
            w(
                f"| {res['model']} | {name} | {rps:,.0f} | {_med(runs, 'p50_ms'):.2f} | {p99:.2f} | "
                f"{p99 / base_p99:.2f}x | {rps / base_rps:.2f}x | {ran if name == 'shadow_100' else '-'} | {share} |\n"
            )
        if "evaluation" in res:
            ev = res["evaluation"]
            p99_with = statistics.median(r["p99_ms"] for r in ev["with"])
            p99_without = statistics.median(r["p99_ms"] for r in ev["without"])
            secs = [s for s in ev["seconds"] if s is not None]
            w(
                f"\nEvaluation of {args.eval_rows:,} samples on {res['model']} (both versions) while serving c=16: "
                f"finished in {statistics.median(secs):.1f} s (median); serving p99 {p99_with:.2f} ms vs "
                f"{p99_without:.2f} ms without: **{p99_with / p99_without:.2f}x**.\n"
            )
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--duration", type=int)
    parser.add_argument("--eval-rows", type=int)
    parser.add_argument("--models", default="mlp,resnet")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    args.duration = args.duration or (4 if args.quick else 10)
    args.eval_rows = args.eval_rows or (2000 if args.quick else 10_000)
    wrk = h.ensure_wrk()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average at the start: {h.loadavg()}", flush=True)
    results = [measure(m, args, wrk, out) for m in args.models.split(",")]
    (out / "rollout.json").write_text(json.dumps({"machine": h.machine(), "results": results}, indent=1))
    text = report(results, args) + f"\nLoad average at the end: {h.loadavg()}\n"
    (out / "ROLLOUT.md").write_text(text)
    print(text)
    print(f"wrote {out}/rollout.json and ROLLOUT.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
