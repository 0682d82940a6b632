"""What would the suggested server changes buy? Measure them before anyone edits app/: each is applied by
monkeypatching morphserve at start-up (in a wrapper process, not in the source), cumulatively, and the /v1 JSON route
of `mlp` is measured at concurrency 1 and 64, configurations alternating within each repetition.

    python scripts/bench/what_if.py [--reps 2] [--duration 4] [--route v1|oip_json]
    python scripts/bench/what_if.py --edits [--duration 20]   # edits under load: baseline vs all changes

Changes (each stands for a change proposed in the benchmark report; the patches only approximate them):
  freeze    gc.freeze() once the models are loaded: the ~330k objects of torch/FastAPI start-up leave the
            collector's sight, so a full (gen 2) collection stops costing ~150 ms of stopped world.
  async_dep `get_registry` as an `async def` dependency: FastAPI runs a sync dependency in its thread pool, so each
            request paid a thread hop (and waited for a pool token) just to read app.state.
  orjson    the request body parsed with orjson instead of the stdlib json (starlette's Request.json).
  reqid     a counter-based request id instead of uuid4() (an os.urandom syscall) per request.
  nodelay   --max-batch-delay-ms 0: no waiting to fill a batch (a stand-in for "don't wait when the worker is idle");
            batches still form from whatever queued while the previous batch ran.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

STEPS = ["baseline", "freeze", "async_dep", "orjson", "reqid", "nodelay"]

_WRAPPER = r'''
import os, sys
patches = set(filter(None, os.environ.get("WHATIF", "").split(",")))
if "async_dep" in patches:
    import app.api.deps as deps  # before any route module builds its dependants
    from fastapi import Request
    async def get_registry_async(request: Request):
        return request.app.state.registry
    object.__setattr__(deps.RegistryDep.__metadata__[0], "dependency", get_registry_async)  # frozen dataclass
    deps.get_registry = get_registry_async
if "orjson" in patches:
    import orjson, starlette.requests as sr
    async def _json(self):
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json
    sr.Request.json = _json
if "reqid" in patches:
    import itertools, types, app.api.middleware as mw
    _ids = itertools.count()
    _prefix = os.urandom(4).hex()
    class _Id:
        __slots__ = ("hex",)
        def __init__(self):
            self.hex = f"{_prefix}{next(_ids):08x}"
    mw.uuid = types.SimpleNamespace(uuid4=_Id)
if "freeze" in patches:
    import gc
    from app.serving.registry import Registry
    _load = Registry.load_from_settings
    def load_and_freeze(self):
        _load(self)
        gc.collect()
        gc.freeze()
    Registry.load_from_settings = load_and_freeze
sys.argv = ["morphserve", *sys.argv[1:]]
from app.cli import main
main()
'''


def _edit_window(wrk: str, url: str, target: h.Target, payload: h.Payload, duration: int) -> dict:
    probe = h.Probe(url, target.path("mlp"), payload.path.read_bytes(), h.payload_headers(payload))
    t0 = time.perf_counter()
    probe.start()
    editor = h.Editor(url, "mlp", t0, start_s=0.5, end_s=duration - 0.5)
    editor.start()
    r = h.run_wrk(wrk, url + target.path("mlp"), payload, 64, duration)
    editor.join(120)
    probe.stop()
    edits = editor.edits
    editor.restore()
    live = h.edit_to_live(edits, probe.records)
    r["live_median"] = h.median(live)
    r["rtt_median"] = h.median([(e["t_done"] - e["t_send"]) * 1e3 for e in edits])
    r["server_median"] = h.median([e["timings_ms"]["total"] for e in edits if e.get("timings_ms")])
    r["non_2xx"] += sum(1 for e in edits if e["status"] != 200)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--route", choices=["v1", "oip_json"], default="v1")
    ap.add_argument("--concurrency", default="1,64")
    ap.add_argument("--edits", action="store_true",
                    help="instead: concurrency 64 with one edit per second (as workload 3), baseline vs all changes")
    args = ap.parse_args()
    wrk = h.ensure_wrk()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"morphserve-whatif-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    wrapper = work / "wrapper.py"
    wrapper.write_text(_WRAPPER)
    x = h.sample_input([1, 784])
    target = h.TARGETS["morphserve_v1" if args.route == "v1" else "morphserve_oip_json"]
    payload = h.write_payloads(x, work / "bodies")[target.payload]
    conc = [int(c) for c in args.concurrency.split(",")]
    steps = ["baseline", "nodelay"] if args.edits else STEPS
    if args.edits:
        conc = [64]
    results: dict[tuple[str, int], list[dict]] = {}
    for rep in range(args.reps):
        order = steps if rep % 2 == 0 else steps[::-1]
        for i_step, step in enumerate(order):
            applied = STEPS[1 : STEPS.index(step) + 1]
            port = h.free_port()
            delay = "0" if "nodelay" in applied else "2"
            env = h.torch_env(1, {"WHATIF": ",".join(applied)})
            log = open(work / f"{step}-{rep}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen([h.PY, str(wrapper), "serve", "--port", str(port), "--model", "mlp",
                                     "--max-batch-size", "32", "--max-batch-delay-ms", delay, "--log-level",
                                     "warning", "--state-dir", str(work / f"state-{step}-{rep}"),
                                     "--admin-token", h.TOKEN],
                                    env=env, cwd=h.ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 90
                while True:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise h.BenchError(f"{step}: server did not start (see {log.name})")
                    try:
                        if h.request(url, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                            break
                    except OSError:
                        time.sleep(0.1)
                h.run_wrk(wrk, url + target.path("mlp"), payload, 16, 1)
                for c in conc:
                    if args.edits:
                        r = _edit_window(wrk, url, target, payload, args.duration)
                        results.setdefault((step, c), []).append(r)
                        print(f"rep {rep} {step:10s} edits: {r['rps']:8.1f} req/s p99 {r['p99_ms']:7.2f} ms "
                              f"edit-to-live median {r['live_median']} ms, edit round trip median "
                              f"{r['rtt_median']} ms, server {r['server_median']} ms", file=sys.stderr,
                              flush=True)  # fmt: skip
                        continue
                    r = h.run_wrk(wrk, url + target.path("mlp"), payload, c, args.duration)
                    results.setdefault((step, c), []).append(r)
                    print(f"rep {rep} {step:10s} c={c:<3d} {r['rps']:8.1f} req/s p50 {r['p50_ms']:7.2f} ms "
                          f"p99 {r['p99_ms']:7.2f} ms non-2xx {r['non_2xx']}", file=sys.stderr, flush=True)  # fmt: skip
            finally:
                proc.send_signal(2)
                proc.wait(30)
                log.close()
            del i_step
    if args.edits:
        print("\n| changes (edits under load, mlp c=64) | req/s | p99 ms | non-2xx | edit-to-live median ms | "
              "edit round trip median ms | server-side edit ms |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for step in steps:
            rows = results[(step, 64)]
            cols = [h.median([r[k] for r in rows]) for k in ("rps", "p99_ms", "live_median", "rtt_median",
                                                            "server_median")]  # fmt: skip
            label = "baseline" if step == "baseline" else "all of " + ", ".join(STEPS[1:])
            print(f"| {label} | {cols[0]:,.0f} | {cols[1]:.1f} | {sum(r['non_2xx'] for r in rows)} | {cols[2]:.1f} | "
                  f"{cols[3]:.1f} | {cols[4]:.1f} |")  # fmt: skip
        return 0
    print(f"\n| cumulative change ({args.route} route, mlp) | " +
          " | ".join(f"c={c} req/s | p50 ms | p99 ms" for c in conc) + " |")  # fmt: skip
    print("|---|" + "---:|" * (3 * len(conc)))
    base = {c: h.median([r["rps"] for r in results[("baseline", c)]]) for c in conc}
    for step in STEPS:
        cells = []
        for c in conc:
            rows = results[(step, c)]
            rps = h.median([r["rps"] for r in rows])
            cells += [f"{rps:,.0f} ({rps / base[c]:.2f}x)", f"{h.median([r['p50_ms'] for r in rows]):.2f}",
                      f"{h.median([r['p99_ms'] for r in rows]):.2f}"]  # fmt: skip
        print(f"| {'+ ' if step != 'baseline' else ''}{step} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
