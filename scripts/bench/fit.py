"""What training a layer in the server costs, and how long the loop a user wants takes (issue 29).

    python scripts/bench/fit.py            # 3 repetitions, 10 s load runs (~5 min on 2 cores)
    python scripts/bench/fit.py --quick    # 1 repetition, 4 s runs

1. The digits loop, end to end over HTTP: replace fc3 with a fresh head, upload 1,000 labelled training images, fit
   fc3 until the staged version scores >= 95 % on the held-out digits (400 steps of 64, AdamW, lr 0.02): seconds from
   the first request to the job's end. Target <= 30 s.
2. Serving while a job runs: wrk at c=16 on digits (/v1, one sample) without a job and while a long job trains fc3
   (alternating, same server); serving p99 with / without (target <= 1.5x), and the job's steps per second with and
   without traffic.
3. resnet: fitting the head (`fc`) on 2,000 samples of 3x32x32, steps per second without and with c=16 traffic,
   and the serving p99 ratio.
Medians over repetitions; JSON and a markdown table to --out.
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
from safetensors.numpy import save

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h

AUTH = {"Authorization": f"Bearer {h.TOKEN}", "Content-Type": "application/json"}
OCTET = {"Authorization": f"Bearer {h.TOKEN}", "Content-Type": "application/octet-stream"}


def _call(server: h.Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, _, out = h.request(server.url, method, path, data, headers or AUTH, timeout=600)
    if status >= 300:
        raise h.BenchError(f"{method} {path}: HTTP {status}: {out[:300]!r}")
    return json.loads(out) if out else None


def _wait_job(server: h.Server, model: str, job: str) -> dict[str, Any]:
    while True:
        record = _call(server, "GET", f"/v1/models/{model}/jobs/{job}")
        if record["state"] != "running":
            return dict(record)
        time.sleep(0.05)


def _steps_per_s(server: h.Server, model: str, spec: dict[str, Any], seconds: float) -> tuple[float, str]:
    """Start a long job, count its steps over `seconds`, cancel it."""
    job = _call(server, "POST", f"/v1/models/{model}/fit", spec)["id"]
    time.sleep(0.5)
    s0 = _call(server, "GET", f"/v1/models/{model}/jobs/{job}")["step"]
    t0 = time.perf_counter()
    time.sleep(seconds)
    s1 = _call(server, "GET", f"/v1/models/{model}/jobs/{job}")["step"]
    rate = (s1 - s0) / (time.perf_counter() - t0)
    _call(server, "DELETE", f"/v1/models/{model}/jobs/{job}")
    return rate, job


def digits_loop(wrk_dir: Path, device: str = "cpu") -> dict[str, Any]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    extra = ("--admin-token", h.TOKEN)
    server = h.Server(h.ServerConfig("morphserve", "digits", device=device, extra_args=extra), wrk_dir).start()
    try:
        t0 = time.perf_counter()
        head = {"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}
        _call(server, "POST", "/v1/models/digits/edits", {"ops": [head]})
        _call(server, "PUT", "/v1/models/digits/datasets/train", save({"input": x[:1000], "labels": y[:1000]}), OCTET)
        _call(server, "PUT", "/v1/models/digits/datasets/heldout", save({"input": x[1000:], "labels": y[1000:]}), OCTET)
        spec = {"train": ["fc3"], "dataset": "train", "steps": 400, "lr": 0.02, "batch_size": 64, "eval": "heldout"}
        job = _call(server, "POST", "/v1/models/digits/fit", spec)
        done = _wait_job(server, "digits", job["id"])
        seconds = time.perf_counter() - t0
        return {
            "seconds": round(seconds, 2),
            "job_seconds": done["seconds"],
            "accuracy_before": done["eval_before"]["accuracy"],
            "accuracy_after": done["eval_after"]["accuracy"],
            "state": done["state"],
        }
    finally:
        server.stop()


def with_traffic(
    model: str, spec: dict[str, Any], dataset: bytes, args: argparse.Namespace, wrk: str, out: Path
) -> dict[str, Any]:
    extra = ("--admin-token", h.TOKEN, "--max-body-mb", "256", "--max-dataset-mb", "256")
    server = h.Server(h.ServerConfig("morphserve", model, device=args.device, extra_args=extra), out).start()
    shape = (1, 64) if model == "digits" else (1, 3, 32, 32)
    payload = h.write_payloads(h.sample_input(shape), out / model)["v1_json"]
    path = f"/v1/models/{model}/infer"
    try:
        _call(server, "PUT", f"/v1/models/{model}/datasets/train", dataset, OCTET)
        rows: dict[str, list[Any]] = {"without": [], "with": [], "idle_steps_s": [], "busy_steps_s": []}
        for rep in range(args.reps):
            rate, _ = _steps_per_s(server, model, spec, args.duration / 2)
            rows["idle_steps_s"].append(rate)
            h.settle(server.url, path, payload)
            rows["without"].append(h.run_wrk(wrk, server.url + path, payload, 16, args.duration))
            job = _call(server, "POST", f"/v1/models/{model}/fit", spec)["id"]
            time.sleep(0.5)
            s0, t0 = _call(server, "GET", f"/v1/models/{model}/jobs/{job}")["step"], time.perf_counter()
            box: dict[str, Any] = {}

            def load(box: dict[str, Any] = box) -> None:
                box.update(h.run_wrk(wrk, server.url + path, payload, 16, args.duration))

            loader = threading.Thread(target=load)
            loader.start()
            loader.join()
            s1 = _call(server, "GET", f"/v1/models/{model}/jobs/{job}")["step"]
            rows["busy_steps_s"].append((s1 - s0) / (time.perf_counter() - t0))
            _call(server, "DELETE", f"/v1/models/{model}/jobs/{job}")
            rows["with"].append(box)
            print(
                f"  {model:7s} rep {rep}: p99 {box['p99_ms']:.2f} ms with a job vs {rows['without'][-1]['p99_ms']:.2f}"
                f" ms without; steps/s {rows['busy_steps_s'][-1]:.1f} under load vs {rate:.1f} idle",
                flush=True,
            )
        return rows
    finally:
        server.stop()


def report(loop: dict[str, Any], results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    buf = io.StringIO()
    w = buf.write
    w(
        f"`python scripts/bench/fit.py{' --quick' if args.quick else ''}"
        f"{'' if args.device == 'cpu' else ' --device ' + args.device}` ({args.reps} repetition(s), "
        f"{args.duration} s runs, c=16, /v1 one sample; medians)\n\n"
    )
    w(
        "- **The digits loop** (fresh head, 1,000 training images, fit fc3, 400 steps): "
        f"{loop['seconds']:.1f} s end to end (the job {loop['job_seconds']:.1f} s); held-out accuracy "
        f"{loop['accuracy_before']:.3f} -> {loop['accuracy_after']:.3f}.\n\n"
    )
    w(
        "| model | steps/s idle | steps/s under c=16 | serving req/s without / with | p99 without | p99 with "
        "| p99 ratio |\n"
    )
    w("|---|---:|---:|---:|---:|---:|---:|\n")
    for model, r in results.items():
        p99a = statistics.median(x["p99_ms"] for x in r["without"])
        p99b = statistics.median(x["p99_ms"] for x in r["with"])
        rpsa = statistics.median(x["rps"] for x in r["without"])
        rpsb = statistics.median(x["rps"] for x in r["with"])
        w(
            f"| {model} | {statistics.median(r['idle_steps_s']):.1f} | {statistics.median(r['busy_steps_s']):.1f} | "
            f"{rpsa:,.0f} / {rpsb:,.0f} | {p99a:.2f} ms | {p99b:.2f} ms | **{p99b / p99a:.2f}x** |\n"
        )
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--duration", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", default="cpu", help="the servers' --device (cuda on a GPU machine: gpu_check.sh)")
    args = parser.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    args.duration = args.duration or (4 if args.quick else 10)
    wrk = h.ensure_wrk()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-fit-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average at the start: {h.loadavg()}", flush=True)
    loop = digits_loop(out, args.device)
    print(f"  digits loop: {loop}", flush=True)
    rng = np.random.default_rng(0)
    digits_data = save({"input": rng.random((1000, 64), dtype=np.float32), "labels": rng.integers(0, 10, 1000)})
    resnet_data = save(
        {"input": rng.standard_normal((2000, 3, 32, 32)).astype(np.float32), "labels": rng.integers(0, 10, 2000)}
    )
    long = {"dataset": "train", "steps": 100_000 // 10, "lr": 1e-3}
    results = {
        "digits": with_traffic("digits", {**long, "train": ["fc3"]}, digits_data, args, wrk, out),
        "resnet": with_traffic("resnet", {**long, "train": ["fc"], "batch_size": 32}, resnet_data, args, wrk, out),
    }
    (out / "fit.json").write_text(json.dumps({"machine": h.machine(), "loop": loop, "results": results}, indent=1))
    text = report(loop, results, args) + f"\nLoad average at the end: {h.loadavg()}\n"
    (out / "FIT.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
