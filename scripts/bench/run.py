"""morphserve benchmarks against its peers and against the in-process limit (issues 6 and 14), in one command.

    python scripts/bench/run.py            # full: >= 3 repetitions per cell; docs/bench/{results.json,RESULTS.md,*.png}
    python scripts/bench/run.py --quick    # < 2 min, 1 repetition, short runs; writes to a temp dir unless --out
    python scripts/bench/run.py --smoke    # < 1 min, the least that exercises every server (the e2e test runs it)
    python scripts/bench/run.py --gpu      # morphserve vs naive vs the limit on CUDA (convnet width 1, resnet)

Workloads (servers alternate within each repetition, and each repetition starts fresh servers; medians reported):
  1. mlp (784-512-512-10), one sample per JSON request, concurrency 1/16/64: naive, LitServe, TorchServe, Ray Serve,
     morphserve /v1 and morphserve OIP JSON (and morphserve /v1 with --workers N at 16/64 when --workers is given).
  2. binary vs JSON: mlp at concurrency 64 (morphserve OIP binary, OIP JSON, /v1 JSON); convnet and resnet at
     3x32x32, one image per request, concurrency 32: the same three vs the naive and LitServe peers' JSON.
  3. edits under load: mlp at concurrency 64 while one edit per second (alternating identity insert and remove)
     runs, vs the same run without edits; p99, failed requests, and edit-to-live (median, p99) seen by a polling
     client.
  4. the limit: in-process forward throughput at batch sizes 1/16/32/64, no HTTP.
  5. edit cost vs graph size and durability cost: scripts/bench/edit_cost.py and durability.py (other issues'
     scripts), run as they are when present.

All servers get the same torch thread count (OMP_NUM_THREADS=--threads), the same model and the same weights
(morphserve.graph.load_zoo, checked: each server's answer to the benchmark body must equal the in-process forward).
Load comes from wrk (closed loop, keep-alive) with scripts/bench/wrk/post.lua; wrk is installed with apt-get when
missing and running as root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, limit, report

import harness as h

MODES: dict[str, dict[str, Any]] = {
    "full": {
        "reps": 3,
        "duration": 5,
        "warmup": 1,
        "concurrency": [1, 16, 64],
        "image_models": ["convnet", "resnet"],
        "image_concurrency": 32,
        "mlp_binary_concurrency": 64,
        "edit_duration": 30,
        "edit_concurrency": 64,
        "limit_seconds": 1.5,
        "edit_cost": True,
    },
    "quick": {
        "reps": 1,
        "duration": 2,
        "warmup": 1,
        "concurrency": [1, 16, 64],
        "image_models": ["convnet"],
        "image_concurrency": 32,
        "mlp_binary_concurrency": 64,
        "edit_duration": 5,
        "edit_concurrency": 64,
        "limit_seconds": 0.3,
        "edit_cost": True,
    },
    "smoke": {
        "reps": 1,
        "duration": 1,
        "warmup": 0,
        "concurrency": [16],
        "image_models": ["convnet"],
        "image_concurrency": 16,
        "mlp_binary_concurrency": 16,
        "edit_duration": 3,
        "edit_concurrency": 16,
        "limit_seconds": 0.2,
        "edit_cost": False,
    },
    "gpu": {
        "reps": 2,
        "duration": 3,
        "warmup": 1,
        "concurrency": [1, 16, 32, 64],
        "image_models": ["convnet", "resnet"],
        "image_concurrency": 64,
        "mlp_binary_concurrency": 0,
        "edit_duration": 10,
        "edit_concurrency": 64,
        "limit_seconds": 1.0,
        "edit_cost": False,
    },
}
LIMIT_BATCHES = [1, 16, 32, 64]
W1_TARGETS = ["naive", "litserve", "torchserve", "ray", "morphserve_v1", "morphserve_oip_json"]
W2_TARGETS = ["naive", "litserve", "morphserve_v1", "morphserve_oip_json", "morphserve_oip_binary"]
W2_MLP_TARGETS = ["morphserve_v1", "morphserve_oip_json", "morphserve_oip_binary"]  # the peers' mlp JSON is in W1
#: How `morphserve serve` is told the compute dtype (issue 14's `dtype` option).
DTYPE_FLAG = "--dtype"
BASELINE = h.ROOT / "docs" / "bench" / "baseline.json"  # W1 as measured before issue 14 (p99 "no worse than today")
GPU_TARGETS = ["naive", "morphserve_v1", "morphserve_oip_binary"]
GPU_MODELS = {"convnet": {"width": 1.0}, "resnet": {}}
#: Benchmarks owned by other issues, run as they are when present, with the flags of a short run for --quick.
EXTERNAL = {"edit_cost.py": ["--quick", "--reps", "3"], "durability.py": ["--reps", "3", "--rounds", "1"]}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 repetition, short runs (< 2 min)")
    mode.add_argument("--smoke", action="store_true", help="the least that exercises every server (< 1 min)")
    mode.add_argument("--gpu", action="store_true", help="CUDA: morphserve vs naive vs limit, convnet width 1 + resnet")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: docs/bench for full and --gpu runs, a new temp dir otherwise)",
    )
    ap.add_argument("--reps", type=int, help="repetitions per cell (mode default)")
    ap.add_argument("--duration", type=int, help="seconds per measured wrk run in workloads 1, 2 (mode default)")
    ap.add_argument("--edit-duration", type=int, help="seconds of each workload-3 run (mode default; issue: 30)")
    ap.add_argument("--workloads", default=None, help="comma list of 1,2,3,4,5 (default: all of the mode)")
    ap.add_argument(
        "--servers",
        default=None,
        help=f"comma list of {','.join(h.SERVER_KINDS)} (default: all; --smoke: all but "
        f"{' and '.join(h.HEAVY_PEERS)}, which need their own venvs)",
    )
    ap.add_argument(
        "--morphserve-args",
        default="",
        help="more flags for every `morphserve serve` of the run, e.g. '--workers 2' (shell-quoted)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="also measure morphserve /v1 started with `--workers N` in workload 1, at --workers-at",
    )
    ap.add_argument("--workers-at", default="16,64", help="concurrencies of the --workers variant (default 16,64)")
    ap.add_argument("--torchserve-workers", type=int, default=1, help="TorchServe worker processes (default 1)")
    ap.add_argument(
        "--skip-unavailable-peers",
        action="store_true",
        help="leave out (and report) a peer whose venv cannot be set up, instead of stopping",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        default=BASELINE,
        help="results.json whose W1 morphserve p99 the targets compare to (default docs/bench/baseline.json)",
    )
    ap.add_argument(
        "--device",
        default=None,
        help="torch device of the servers and the limit (default: cuda with --gpu, else cpu; "
        "--gpu --device cpu runs the GPU mode's steps on the CPU, to check them)",
    )
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="compute dtype of morphserve, the naive peer and the limit (--gpu; morphserve gets --dtype)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every server and the limit (default 1)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: leave the cores to servers)")
    ap.add_argument("--max-batch-size", type=int, default=None, help="morphserve and LitServe (default 32; gpu 64)")
    ap.add_argument("--max-batch-delay-ms", type=float, default=2.0, help="morphserve and LitServe batch delay")
    ap.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    args = ap.parse_args(argv)
    args.mode = "quick" if args.quick else "smoke" if args.smoke else "gpu" if args.gpu else "full"
    cfg = dict(MODES[args.mode])
    for key in ("reps", "duration", "edit_duration"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if cfg["reps"] < 1 or cfg["duration"] < 1:
        ap.error("--reps and --duration must be at least 1")
    args.cfg = cfg
    args.device = args.device or ("cuda" if args.gpu else "cpu")
    if args.max_batch_size is None:
        args.max_batch_size = 64 if args.gpu else 32
    default_wl = "1,3,4" if args.gpu else "1,2,3,4,5"
    args.workload_set = {w.strip() for w in (args.workloads or default_wl).split(",") if w.strip()}
    default_servers = [k for k in h.SERVER_KINDS if not (args.smoke and k in h.HEAVY_PEERS)]
    args.server_set = {s.strip() for s in (args.servers or ",".join(default_servers)).split(",") if s.strip()}
    if args.gpu:
        args.server_set -= {"litserve", *h.HEAVY_PEERS}
    unknown = args.server_set - set(h.SERVER_KINDS)
    if unknown:
        ap.error(f"unknown servers {sorted(unknown)}; choose from {', '.join(h.SERVER_KINDS)}")
    if args.workers is not None and args.workers < 1:
        ap.error("--workers must be at least 1")
    args.morphserve_extra = tuple(shlex.split(args.morphserve_args))
    if args.dtype != "float32":
        args.morphserve_extra += (DTYPE_FLAG, args.dtype)
    args.workers_at = [int(c) for c in args.workers_at.split(",") if c.strip()]
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, wrk: str, out: Path, work: Path) -> None:
        self.args, self.cfg, self.wrk, self.out, self.work = args, args.cfg, wrk, out, work
        self.runs: list[dict[str, Any]] = []
        self.limits: list[dict[str, Any]] = []
        self.edits: list[dict[str, Any]] = []
        self.series: dict[str, Any] = {}
        self.servers: list[dict[str, Any]] = []
        self.payload_sizes: dict[str, dict[str, int]] = {}
        self.log_dir = work / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._payloads: dict[str, tuple[dict[str, h.Payload], Any]] = {}
        self._stops: list[threading.Thread] = []
        # Server variants: key -> (kind, ServerConfig overrides). One per kind, plus morphserve with --workers N.
        extra = args.morphserve_extra
        self.variants: dict[str, tuple[str, dict[str, Any]]] = {k: (k, {}) for k in h.SERVER_KINDS}
        self.variants["morphserve"] = ("morphserve", {"extra_args": extra})
        self.variants["torchserve"] = ("torchserve", {"peer_workers": args.torchserve_workers})
        self.w1_targets = list(W1_TARGETS)
        self.target_concurrency: dict[str, list[int]] = {}
        if args.workers is not None:
            key = f"morphserve_w{args.workers}"
            self.variants[key] = ("morphserve", {"extra_args": (*extra, "--workers", str(args.workers)), "name": key})
            label = f"morphserve_v1_w{args.workers}"
            h.TARGETS[label] = h.Target(label, "morphserve", "v1", "v1_json", server=key)
            self.w1_targets.append(label)
            self.target_concurrency[label] = args.workers_at

    # -- helpers ------------------------------------------------------------------------------------------
    def options(self, model: str) -> dict[str, Any]:
        return dict(GPU_MODELS.get(model, {})) if self.args.gpu else {}

    def payloads(self, model: str) -> tuple[dict[str, h.Payload], Any]:
        """Bodies for one sample of `model`, and the in-process forward's output on it (the reference)."""
        if model not in self._payloads:
            import torch

            from morphserve.graph import load_zoo

            version = load_zoo(model, **self.options(model))
            shape = [1, *version.inputs[0].shape[1:]]
            x = h.sample_input(shape)
            ref = version.run(torch.from_numpy(x))[0].numpy()
            p = h.write_payloads(x, self.work / "bodies" / model, version.inputs[0].name)
            self._payloads[model] = (p, ref)
            self.payload_sizes[model] = {k: v.size for k, v in p.items()}
        return self._payloads[model]

    def bundle(self, model: str) -> Path | None:
        """morphserve's --model takes zoo names without options: a zoo model with options is served as a bundle."""
        opts = self.options(model)
        if not opts:
            return None
        from morphserve.graph import load_zoo, spec_json, weights_bytes

        d = self.work / "bundles" / model
        if not d.exists():
            d.mkdir(parents=True)
            v = load_zoo(model, **opts)
            (d / "spec.json").write_text(json.dumps(spec_json(v)))
            (d / "weights.safetensors").write_bytes(weights_bytes(v))
        return d

    def server(self, key: str, model: str) -> h.Server:
        kind, overrides = self.variants[key]
        cfg = h.ServerConfig(
            kind,
            model,
            options=self.options(model),
            device=self.args.device,
            threads=self.args.threads,
            max_batch_size=self.args.max_batch_size,
            max_batch_delay_ms=self.args.max_batch_delay_ms,
            dtype=self.args.dtype,
            bundle=self.bundle(model) if kind == "morphserve" else None,
            **overrides,
        )
        return h.Server(cfg, self.log_dir)

    def order(self, keys: list[str], rep: int) -> list[str]:
        """Server variants in a rotated order each repetition, so that no server always runs first or last."""
        keys = [k for k in keys if self.variants[k][0] in self.args.server_set]
        if not keys:
            return []
        r = rep % len(keys)
        return keys[r:] + keys[:r]

    @contextmanager
    def serving(self, key: str, model: str, workload: str, rep: int) -> Iterator[h.Server]:
        """A started server. It is stopped in the background while the next one starts (a Python server takes a
        second or two to exit), but the next one is measured only once the previous one has fully exited."""
        s = self.server(key, model)
        try:
            try:
                s.start()
            except h.BenchError as e:
                if s.cfg.kind == "morphserve" and s.cfg.dtype != "float32":
                    raise h.BenchError(
                        f"morphserve refused to serve {model} in {s.cfg.dtype} (`morphserve serve "
                        f"... {DTYPE_FLAG} {s.cfg.dtype}`): {e}"
                    ) from e
                raise
            if s.cfg.kind == "morphserve" and s.cfg.dtype != "float32":
                s.info["compute_dtype"] = h.check_compute_dtype(s)
            self.join_stops()
            yield s
        finally:
            t = threading.Thread(target=self._stop, args=(s, workload, rep), name=f"stop-{key}", daemon=True)
            t.start()
            self._stops.append(t)

    def _stop(self, s: h.Server, workload: str, rep: int) -> None:
        s.stop()
        self.servers.append(
            {
                "workload": workload,
                "kind": s.cfg.kind,
                "server": s.cfg.key,
                "model": s.cfg.model,
                "rep": rep,
                "start_s": round(s.start_s, 2),
                "stop_s": round(s.stop_s, 2),
                "orphans_killed": s.orphans_killed,
                "extra_args": list(s.cfg.extra_args),
                "reported": s.info,
            }
        )

    def join_stops(self) -> None:
        while self._stops:
            self._stops.pop().join(60)

    def load_runs(self, workload: str, model: str, targets: list[str], concurrencies: list[int]) -> None:
        """For each repetition, each server in turn: start it, check its answer, warm it up, run wrk per target
        and concurrency, stop it."""
        payloads, ref = self.payloads(model)
        keys = list(dict.fromkeys(h.TARGETS[t].server_key for t in targets))
        for rep in range(self.cfg["reps"]):
            for key in self.order(keys, rep):
                mine = [h.TARGETS[t] for t in targets if h.TARGETS[t].server_key == key]
                with self.serving(key, model, workload, rep) as s:
                    kind = s.cfg.kind
                    for i, t in enumerate(mine):
                        p = payloads[t.payload]
                        err = h.check_target(s, t, p, ref)
                        url = s.url + t.path(model)
                        cs = [c for c in concurrencies if c in self.target_concurrency.get(t.label, concurrencies)]
                        if self.cfg["warmup"] and i == 0:  # once per server: its threads and caches are warm
                            h.run_wrk(self.wrk, url, p, max(cs), self.cfg["warmup"], self.args.wrk_threads)
                            h.settle(s.url, t.path(model), p)
                        for c in cs:
                            r = h.run_wrk(self.wrk, url, p, c, self.cfg["duration"], self.args.wrk_threads)
                            r.update(
                                workload=workload,
                                model=model,
                                target=t.label,
                                kind=kind,
                                server=key,
                                route=t.route,
                                dtype=self.args.dtype,
                                payload=t.payload,
                                body_bytes=p.size,
                                rep=rep,
                                max_abs_err=err,
                            )
                            self.runs.append(r)
                            wl = f"w{workload}" if workload.isdigit() else workload
                            print(
                                f"  {wl} {model:8s} rep {rep} {t.label:22s} c={c:<3d} {r['rps']:9.1f} req/s "
                                f"p50 {r['p50_ms']:7.2f} ms p99 {r['p99_ms']:7.2f} ms non-2xx {r['non_2xx']}",
                                file=sys.stderr,
                            )

    # -- workloads ----------------------------------------------------------------------------------------
    def w1(self) -> None:
        self.load_runs("1", "mlp", self.w1_targets, self.cfg["concurrency"])

    def w2(self) -> None:
        if self.cfg["mlp_binary_concurrency"]:
            self.load_runs("2", "mlp", W2_MLP_TARGETS, [self.cfg["mlp_binary_concurrency"]])
        for model in self.cfg["image_models"]:
            self.load_runs("2", model, W2_TARGETS, [self.cfg["image_concurrency"]])

    def gpu(self) -> None:
        for model in self.cfg["image_models"]:
            self.load_runs("gpu", model, GPU_TARGETS, self.cfg["concurrency"])

    def w3(self) -> None:
        if "morphserve" not in self.args.server_set:
            return
        model, conc, dur = "mlp", self.cfg["edit_concurrency"], self.cfg["edit_duration"]
        payloads, ref = self.payloads(model)
        target = h.TARGETS["morphserve_v1"]
        p = payloads["v1_json"]
        for rep in range(self.cfg["reps"]):
            with self.serving("morphserve", model, "3", rep) as s:
                h.check_target(s, target, p, ref)
                url = s.url + target.path(model)
                if self.cfg["warmup"]:
                    h.run_wrk(self.wrk, url, p, conc, self.cfg["warmup"], self.args.wrk_threads)
                for with_edits in [False, True] if rep % 2 == 0 else [True, False]:
                    self.edits.append(self._edit_window(s, target, p, conc, dur, with_edits, rep))

    def _edit_window(
        self, s: h.Server, target: h.Target, p: h.Payload, conc: int, dur: int, with_edits: bool, rep: int
    ) -> dict[str, Any]:
        model = s.cfg.model
        probe = h.Probe(s.url, target.path(model), p.path.read_bytes(), h.payload_headers(p))
        t0 = time.perf_counter()
        probe.start()
        editor = h.Editor(s.url, model, t0, start_s=0.5, end_s=dur - 0.5) if with_edits else None
        if editor:
            editor.start()
        r = h.run_wrk(self.wrk, s.url + target.path(model), p, conc, dur, self.args.wrk_threads)
        if editor:
            editor.join(120)
        probe.stop()
        edits = editor.edits if editor else []
        if editor:
            editor.restore()
        recs = probe.records
        lat = [(t1 - t0s) * 1e3 for t0s, t1, _, _ in recs]
        live = h.edit_to_live(edits)
        seen = h.edit_to_seen(edits, recs)
        timings = [e["timings_ms"] for e in edits if e.get("timings_ms")]
        row: dict[str, Any] = {
            "workload": "3",
            "model": model,
            "target": target.label,
            "rep": rep,
            "with_edits": with_edits,
            **r,
            "probe": {
                "requests": len(recs),
                "non_2xx": sum(1 for *_, st, _v in recs if st != 200),
                "failures": probe.failures,
                "p50_ms": h.percentile(lat, 50),
                "p99_ms": h.percentile(lat, 99),
                "max_ms": max(lat) if lat else None,
            },
            "edits": {
                "count": len(edits),
                "failed": sum(1 for e in edits if e["status"] != 200),
                "errors": [e["error"] for e in edits if e["error"]][:5],
                "edit_to_live_ms": live,
                "edit_to_seen_ms": seen,
                "round_trip_ms": [round((e["t_done"] - e["t_send"]) * 1e3, 2) for e in edits],
                "server_timings_ms": {k: h.median([t[k] for t in timings]) for k in (timings[0] if timings else {})},
            },
        }
        label = "with" if with_edits else "without"
        print(
            f"  w3 mlp      rep {rep} edits={label:7s} c={conc:<3d} {r['rps']:9.1f} req/s p50 {r['p50_ms']:7.2f} ms "
            f"p99 {r['p99_ms']:7.2f} ms non-2xx {r['non_2xx']} edits {len(edits)} "
            f"edit-to-live median {h.median(live)} ms",
            file=sys.stderr,
        )
        if rep == 0:
            self.series[label] = {
                "probe": [[round(t1 - t0, 4), round((t1 - a) * 1e3, 3), v] for a, t1, _, v in recs],
                "edits": [
                    [round(e["t_send"] - t0, 4), e["op"], round((e["t_done"] - e["t_send"]) * 1e3, 2), e["version"]]
                    for e in edits
                ],
                "duration_s": dur,
            }
        return row

    def w4(self) -> None:
        """In this process (torch is loaded already) with the servers' thread count; nothing else runs meanwhile."""
        import limit

        self.join_stops()
        models = ["mlp", *self.cfg["image_models"]] if not self.args.gpu else list(self.cfg["image_models"])
        options = {m: self.options(m) for m in models if self.options(m)}
        for rep in range(self.cfg["reps"]):
            for doc in limit.limits(
                models,
                options,
                LIMIT_BATCHES,
                self.cfg["limit_seconds"],
                self.args.device,
                threads=self.args.threads,
                dtype=self.args.dtype,
            ):
                for row in doc["results"]:
                    self.limits.append(
                        {
                            "model": doc["model"],
                            "rep": rep,
                            "device": doc["device"],
                            "device_name": doc["device_name"],
                            "torch_threads": doc["torch_threads"],
                            **row,
                        }
                    )
                best = max(doc["results"], key=lambda x: x["rows_per_s"])
                print(
                    f"  w4 {doc['model']:8s} rep {rep} limit up to {best['rows_per_s']:.0f} rows/s "
                    f"(batch {best['batch_size']})",
                    file=sys.stderr,
                )

    def w5(self) -> dict[str, Any]:
        """Other engineers' in-process benchmarks, called as they are when present (never written here)."""
        self.join_stops()
        quick = self.args.mode != "full"
        return {name: self._external(name, flags if quick else []) for name, flags in EXTERNAL.items()}

    def _external(self, name: str, quick_flags: list[str]) -> dict[str, Any]:
        script = h.BENCH / name
        if not script.exists():
            return {"skipped": f"scripts/bench/{name} is not there"}
        out = self.out / "external" / f"{script.stem}.json"  # never the owners' own docs/bench/*.json
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [h.PY, str(script), "--out", str(out), *quick_flags]
        t0 = time.perf_counter()
        r = subprocess.run(
            cmd, env=h.torch_env(self.args.threads), capture_output=True, text=True, timeout=1800, cwd=h.ROOT
        )
        res: dict[str, Any] = {
            "command": "python "
            + " ".join(
                shlex.quote(str(Path(c).relative_to(h.ROOT)) if c.startswith(str(h.ROOT)) else c) for c in cmd[1:]
            ),
            "exit_code": r.returncode,
            "seconds": round(time.perf_counter() - t0, 1),
            "table": r.stdout.strip(),
        }
        if r.returncode != 0:
            res["error"] = r.stderr.strip()[-2000:]
            print(f"warning: {name} failed (exit {r.returncode}); its numbers are left out", file=sys.stderr)
        elif out.exists():
            with suppress(ValueError):
                res["results"] = json.loads(out.read_text())
        print(f"  w5 {name}: exit {r.returncode} in {res['seconds']} s", file=sys.stderr)
        return res


def load_baseline(path: Path | None) -> dict[str, Any] | None:
    """W1 morphserve /v1 p99 per concurrency of an earlier results.json (what "p99 no worse than today" compares
    to), with where it came from; None when there is no such file."""
    if path is None or not path.exists():
        return None
    doc = json.loads(path.read_text())
    w1 = (doc.get("summary") or {}).get("w1", {})
    return {
        "source": str(path.relative_to(h.ROOT)) if path.is_relative_to(h.ROOT) else str(path),
        "date": doc.get("meta", {}).get("date"),
        "command": doc.get("meta", {}).get("command"),
        "w1": {
            t: {c: {k: cell.get(k) for k in ("rps", "p50_ms", "p99_ms")} for c, cell in cs.items()}
            for t, cs in w1.items()
        },
    }


def setup_peers(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """Set up the venvs of the heavy peers in this run (first use: minutes). (versions, unavailable peer -> why).
    A peer that cannot be set up stops the run (exit 4), or with --skip-unavailable-peers is left out and reported."""
    from peer_envs import PEER_ENVS, PeerSetupError, java_version

    found: dict[str, str] = {}
    missing: dict[str, str] = {}
    for kind in [k for k in h.HEAVY_PEERS if k in args.server_set]:
        env = PEER_ENVS[kind]
        try:
            if kind == "torchserve":
                java = java_version()
                if java is None:
                    raise PeerSetupError(
                        "TorchServe needs Java 11+ and there is no `java` on the PATH "
                        "(apt-get install -y openjdk-17-jre-headless)"
                    )
                found["java"] = java
            for dist, v in env.ensure().items():
                found[dist if dist != "torch" else f"torch ({kind} venv)"] = v
            if env.setup_seconds() is not None:
                found[f"{kind} venv set-up s"] = str(env.setup_seconds())
        except PeerSetupError as e:
            missing[kind] = str(e)
    return found, missing


def versions(wrk: str) -> dict[str, str]:
    import numpy
    import torch

    v = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "wrk": h.wrk_version(wrk),
    }
    for mod in ("litserve", "fastapi", "uvicorn", "orjson", "uvloop", "httptools"):
        try:
            v[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            v[mod] = "not installed"
    return v


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    t_start = time.perf_counter()
    load_start = h.loadavg()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(
                f"error: --gpu needs a CUDA device, but torch {torch.__version__} reports none "
                "(torch.cuda.is_available() is False). Run it on a GPU machine with a CUDA build of torch.",
                file=sys.stderr,
            )
            return 2
    if "litserve" in args.server_set:
        try:
            import litserve  # noqa: F401
        except ImportError:
            print(
                "error: the LitServe peer needs `pip install litserve` (into this venv), or pass "
                "--servers naive,morphserve",
                file=sys.stderr,
            )
            return h.DEP_MISSING
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "error: the plots need `pip install matplotlib` (into this venv), or pass --no-plots", file=sys.stderr
            )
            return h.DEP_MISSING
    try:
        wrk = h.ensure_wrk()
    except h.BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return h.WRK_MISSING
    peer_versions, unavailable = setup_peers(args)
    for why in unavailable.values():
        print(f"error: {why}", file=sys.stderr)
    if unavailable and not args.skip_unavailable_peers:
        print(
            "(pass --skip-unavailable-peers to measure the other servers without them, or --servers to choose)",
            file=sys.stderr,
        )
        return h.DEP_MISSING
    args.server_set -= set(unavailable)
    baseline = load_baseline(args.baseline)

    if args.out is None:
        args.out = (
            (h.ROOT / "docs" / "bench")
            if args.mode in ("full", "gpu")
            else Path(tempfile.mkdtemp(prefix=f"morphserve-bench-{args.mode}-"))
        )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="morphserve-bench-work-"))
    command = "python scripts/bench/run.py" + (
        "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    )
    print(f"morphserve bench ({args.mode}): {command}; output -> {out}; logs -> {work / 'logs'}", file=sys.stderr)

    bench = Bench(args, wrk, out, work)
    phases: list[str] = []
    external: dict[str, Any] | None = None
    status = "ok"
    try:
        steps = [
            ("1", "workload 1 (mlp JSON, concurrency sweep)", bench.w1),
            ("2", "workload 2 (images: binary vs JSON)", bench.w2),
            ("3", "workload 3 (edits under load)", bench.w3),
            ("4", "workload 4 (the in-process limit)", bench.w4),
        ]
        if args.gpu:
            steps = [
                ("1", "gpu: convnet width 1 and resnet, concurrency sweep", bench.gpu),
                ("3", "gpu: edits under load (mlp on the device: edit-to-live, swap time)", bench.w3),
                ("4", "gpu: the in-process limit", bench.w4),
            ]
        for key, label, fn in steps:
            if key in args.workload_set:
                with h.timed(label, phases):
                    fn()
        if "5" in args.workload_set and args.cfg["edit_cost"]:
            with h.timed("workload 5 (edit cost and durability cost: edit_cost.py, durability.py)", phases):
                external = bench.w5()
    except h.BenchError as e:
        status = f"failed: {e}"
        print(f"error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        status = "interrupted"
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        bench.join_stops()

    import report

    results: dict[str, Any] = {
        "meta": {
            "mode": args.mode,
            "status": status,
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "wall_s": round(time.perf_counter() - t_start, 1),
            "machine": h.machine(),
            "versions": {**versions(wrk), **peer_versions},
            "device": args.device,
            "unavailable_peers": unavailable,
            "baseline": baseline,
            "dtype": args.dtype,
            "loadavg": {"start": load_start, "end": h.loadavg()},
            "settings": {
                **args.cfg,
                "threads": args.threads,
                "wrk_threads": args.wrk_threads,
                "max_batch_size": args.max_batch_size,
                "max_batch_delay_ms": args.max_batch_delay_ms,
                "morphserve_args": list(args.morphserve_extra),
                "workers": args.workers,
                "workers_at": args.workers_at if args.workers else None,
                "torchserve_workers": args.torchserve_workers,
                "servers": sorted(args.server_set),
                "workloads": sorted(args.workload_set),
                "limit_batches": LIMIT_BATCHES,
            },
            "payload_bytes": bench.payload_sizes,
            "phases": phases,
            "logs": str(work / "logs"),
        },
        "runs": bench.runs,
        "edits": bench.edits,
        "limits": bench.limits,
        "servers": bench.servers,
        "external": external,
        "series": bench.series,
    }
    results["summary"] = report.summarise(results)
    name = "gpu_results.json" if args.gpu else "results.json"
    (out / name).write_text(json.dumps(results, indent=1) + "\n")
    plots = [] if args.no_plots else report.plots(results, out)
    md = report.markdown(results, plots)
    (out / ("GPU_RESULTS.md" if args.gpu else "RESULTS.md")).write_text(md)
    print(md)
    print(
        f"\nwrote {out / name}, {out / ('GPU_RESULTS.md' if args.gpu else 'RESULTS.md')}"
        f"{', ' + ', '.join(p.name for p in plots) if plots else ''} in {time.perf_counter() - t_start:.0f} s",
        file=sys.stderr,
    )
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
