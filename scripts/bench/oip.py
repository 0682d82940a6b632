"""morphserve against the Open Inference Protocol servers (issue 26): Triton (through PyTriton), Seldon MLServer and
KServe's ModelServer, over OIP JSON, gRPC and shared memory; and compiled graphs against eager ones.

    python scripts/bench/oip.py                 # full: 3 repetitions -> docs/bench/oip/{results.json,OIP_RESULTS.md}
    python scripts/bench/oip.py --quick         # 1 repetition, short runs, into a temp dir (or --out DIR)
    python scripts/bench/oip.py --parts http,grpc --servers morphserve,triton

Parts (one server up at a time; each repetition starts fresh servers in a rotated order; medians reported):
  http     mlp, one sample, OIP v2 JSON over HTTP (`POST /v2/models/mlp/infer`), c = 1, 16, 64: morphserve, Triton,
           MLServer, KServe (wrk, as scripts/bench/run.py drives its peers).
  grpc     mlp, one sample, gRPC ModelInfer with raw tensor contents, c = 1, 16, 64: morphserve and Triton (h2load with
           a fixed gRPC frame); and morphserve's OIP JSON over HTTP at c = 64 on the same server, for the ratio.
  shm      mlp, 64 samples a request, c = 64: morphserve's OIP JSON, gRPC raw, and system shared memory (the request
           names registered regions: over HTTP with wrk and over gRPC with h2load), against the in-process forward
           at batch 64 (the limit).
  compile  resnet and convnet in process, batch 8 and 32: eager against the inductor-compiled graph (compile time
           too); resnet over HTTP (OIP binary, one image) at c = 16 with --compile off and default; and mlp at
           c = 16 while a compile runs (an edit starts one) against the same server with none running: p99, failed
           requests, edit-to-live and edit-to-compiled.

Every server is checked before it is measured: its answer to the benchmark request equals the in-process forward.
Peers run from their own venvs (.venv-peers/, scripts/bench/peer_envs.py, set up on first use: minutes). Load comes
from wrk (HTTP) and h2load (gRPC, Debian's nghttp2-client: installed with apt-get when missing and running as root).
Numbers on a shared machine are noisy: the full run is for a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, limit, peer_envs

import harness as h
import numpy as np

MODES = {
    "full": {"reps": 3, "duration": 5, "warmup": 1, "compile_window": 10, "limit_s": 1.5, "timing_iters": 30},
    "quick": {"reps": 1, "duration": 2, "warmup": 1, "compile_window": 4, "limit_s": 0.5, "timing_iters": 8},
}
OIP_PEERS = ("triton", "mlserver", "kserve")
PEER_ENV = {"triton": "pytriton", "mlserver": "mlserver", "kserve": "kserve"}
CONCURRENCY = [1, 16, 64]
SHM_ROWS = 64
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


# ---------------------------------------------------------------------------------------------- servers
class OipServer(h.Server):
    """A morphserve or OIP-peer server with a gRPC port beside its HTTP one."""

    def __init__(self, cfg: h.ServerConfig, log_dir: Path) -> None:
        super().__init__(cfg, log_dir)
        self.grpc_port = h.free_port()

    def _argv(self) -> list[str]:
        c = self.cfg
        if c.kind == "morphserve":
            argv = super()._argv()
            return [*argv, "--grpc-port", str(self.grpc_port)]
        from peer_envs import PEER_ENVS

        argv = [
            str(PEER_ENVS[PEER_ENV[c.kind]].python),
            str(h.PEERS / f"{PEER_ENV[c.kind]}_server.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            "--model",
            c.model,
        ]
        if c.kind != "kserve":  # KServe's ModelServer has no batcher
            argv += ["--max-batch-size", str(c.max_batch_size), "--batch-delay-ms", str(c.max_batch_delay_ms)]
        return argv

    def ready(self) -> bool:
        return h.request(self.url, "GET", f"/v2/models/{self.cfg.model}/ready", timeout=2)[0] == 200


def ensure_h2load() -> str:
    found = shutil.which("h2load")
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("h2load not found: installing nghttp2-client with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "nghttp2-client"], env=env, capture_output=True, timeout=600)
        found = shutil.which("h2load")
        if found:
            return found
    raise h.BenchError("h2load is not installed: apt-get install -y nghttp2-client")


# ---------------------------------------------------------------------------------------------- gRPC load
def grpc_frame(model: str, x: np.ndarray, shm: tuple[str, str, int] | None = None) -> bytes:
    """A length-prefixed gRPC message of ModelInferRequest (raw contents, or shared memory references)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model)
    t = req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    if shm is None:
        req.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    else:
        in_region, out_region, out_bytes = shm
        t.parameters["shared_memory_region"].string_param = in_region
        t.parameters["shared_memory_byte_size"].int64_param = x.nbytes
        o = req.outputs.add(name="output")
        o.parameters["shared_memory_region"].string_param = out_region
        o.parameters["shared_memory_byte_size"].int64_param = out_bytes
    msg = req.SerializeToString()
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def grpc_infer(port: int, model: str, x: np.ndarray) -> np.ndarray:
    """One ModelInfer through tritonclient.grpc (the check before a gRPC run)."""
    import tritonclient.grpc as tgrpc

    c = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        inp = tgrpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return np.asarray(c.infer(model, [inp]).as_numpy("output"))
    finally:
        c.close()


def run_h2load(h2load: str, port: int, body: Path, connections: int, duration_s: int) -> dict[str, Any]:
    """A closed loop of `connections` HTTP/2 connections, one gRPC call in flight each, for `duration_s`; latencies
    from h2load's per-request log. h2load counts HTTP statuses only (a failed gRPC call is a 200 with grpc-status in
    its trailers): the callers compare the server's own failure counts before and after."""
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as f:
        log = Path(f.name)
    cmd = [
        h2load,
        "-c",
        str(connections),
        "-m",
        "1",
        "-t",
        "1",
        "-D",
        str(duration_s),
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--log-file",
        str(log),
        f"http://127.0.0.1:{port}{GRPC_PATH}",
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 120)
        if r.returncode != 0:
            raise h.BenchError(f"h2load failed (exit {r.returncode}): {r.stdout[-1500:]}{r.stderr[-1500:]}")
        rows = [ln.split("\t") for ln in log.read_text().splitlines() if ln.strip()]
    finally:
        log.unlink(missing_ok=True)
    lat = sorted(int(row[2]) / 1e3 for row in rows)  # ms
    ok = sum(1 for row in rows if row[1] == "200")
    return {
        "connections": connections,
        "duration_s": duration_s,
        "requests": len(rows),
        "rps": round(len(rows) / duration_s, 1),
        "p50_ms": h.percentile(lat, 50),
        "p99_ms": h.percentile(lat, 99),
        "non_2xx": len(rows) - ok,
    }


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, every thread of the process


def wait_idle(pid: int, below: float = 0.15, window_s: float = 0.5, max_s: float = 30.0) -> float:
    """Wait until the server's process uses less than `below` of a core over a window (a server is ready before
    its start-up work is done: morphserve primes shape propagation in a thread, Triton loads its Python stub), at most
    `max_s`; the seconds waited."""
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    with contextlib.suppress(OSError, IndexError, ValueError):
        last = _cpu_ticks(pid)
        while time.monotonic() - t0 < max_s:
            time.sleep(window_s)
            now = _cpu_ticks(pid)
            if (now - last) / hz / window_s < below:
                break
            last = now
    return round(time.monotonic() - t0, 1)


def failures(url: str, model: str) -> int | None:
    """The server's count of failed requests of the model (Triton's statistics extension; None where it does not
    answer it: PyTriton restricts Triton's statistics API to its own token)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        status, _, body = h.request(url, "GET", f"/v2/models/{model}/stats", timeout=10)
        if status == 200:
            return sum(int(s["inference_stats"]["fail"]["count"]) for s in json.loads(body)["model_stats"])
    return None


def failed(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


# ---------------------------------------------------------------------------------------------- the run
class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cfg = MODES["quick" if args.quick else "full"]
        self.reps = args.reps or self.cfg["reps"]
        self.duration = args.duration or self.cfg["duration"]
        self.out = args.out
        self.log_dir = self.out / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.wrk = h.ensure_wrk()
        self.h2load: str | None = None
        self.results: dict[str, Any] = {"runs": [], "servers": [], "errors": []}
        self.tmp = Path(tempfile.mkdtemp(prefix="oip-bench-"))

    def server(self, kind: str, model: str, *extra: str) -> OipServer:
        morph = ("--torch-threads", str(self.args.threads)) if kind == "morphserve" else ()
        cfg = h.ServerConfig(kind, model, threads=self.args.threads, extra_args=(*morph, *extra))
        return OipServer(cfg, self.log_dir)

    @contextlib.contextmanager
    def serving(self, kind: str, model: str, *extra: str) -> Iterator[OipServer]:
        s = self.server(kind, model, *extra)
        s.start()
        assert s.proc is not None
        quiet_after = wait_idle(s.proc.pid)
        try:
            yield s
        finally:
            s.stop()
            self.results["servers"].append(
                {"kind": kind, "model": model, "start_s": round(s.start_s, 1), "idle_after_s": quiet_after}
            )

    def record(self, part: str, label: str, rep: int, **fields: Any) -> None:
        row = {"part": part, "label": label, "rep": rep, **fields}
        self.results["runs"].append(row)
        shown = {k: v for k, v in fields.items() if k in ("c", "rps", "p50_ms", "p99_ms", "non_2xx", "failed")}
        print(f"  {part} {label} {shown}", file=sys.stderr)

    def payloads(self, rows: int) -> tuple[np.ndarray, dict[str, h.Payload]]:
        x = h.sample_input((rows, 784), seed=rows)
        return x, h.write_payloads(x, self.tmp / f"rows{rows}")

    def reference(self, model: str, x: np.ndarray) -> np.ndarray:
        import torch

        from morphserve.graph import load_zoo

        with torch.inference_mode():
            return load_zoo(model).graph_module(torch.from_numpy(x))[0].numpy()

    def check(self, s: OipServer, payload: h.Payload, want: np.ndarray) -> None:
        h.check_target(s, h.Target(s.cfg.kind, s.cfg.kind, "oip", payload.name), payload, want)

    def http_load(self, s: OipServer, payload: h.Payload, c: int) -> dict[str, Any]:
        path = f"/v2/models/{s.cfg.model}/infer"
        return h.run_wrk(self.wrk, s.url + path, payload, c, self.duration, self.args.wrk_threads)

    def warm(self, s: OipServer, payload: h.Payload, c: int) -> None:
        path = f"/v2/models/{s.cfg.model}/infer"
        h.run_wrk(self.wrk, s.url + path, payload, c, self.cfg["warmup"], self.args.wrk_threads)
        h.settle(s.url, path, payload)

    # -- part http ---------------------------------------------------------------------------------------------------
    def part_http(self) -> None:
        x, payloads = self.payloads(1)
        want = self.reference("mlp", x)
        kinds = [k for k in ("morphserve", *OIP_PEERS) if k in self.args.server_set]
        for rep in range(self.reps):
            for kind in kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]:
                try:
                    with self.serving(kind, "mlp") as s:
                        self.check(s, payloads["oip_json"], want)
                        self.warm(s, payloads["oip_json"], max(CONCURRENCY))
                        for c in CONCURRENCY:
                            h.settle(s.url, "/v2/models/mlp/infer", payloads["oip_json"])
                            self.record("http", kind, rep, c=c, **self.http_load(s, payloads["oip_json"], c))
                except h.BenchError as e:
                    self.error("http", kind, e)

    # -- part grpc ---------------------------------------------------------------------------------------------------
    def part_grpc(self) -> None:
        self.h2load = self.h2load or ensure_h2load()
        x, payloads = self.payloads(1)
        want = self.reference("mlp", x)
        body = self.tmp / "grpc1.body"
        body.write_bytes(grpc_frame("mlp", x))
        kinds = [k for k in ("morphserve", "triton") if k in self.args.server_set]
        for rep in range(self.reps):
            for kind in kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]:
                try:
                    with self.serving(kind, "mlp") as s:
                        np.testing.assert_allclose(grpc_infer(s.grpc_port, "mlp", x), want, rtol=1e-3, atol=1e-4)
                        self.warm(s, payloads["oip_json"], 16)
                        run_h2load(self.h2load, s.grpc_port, body, 64, self.cfg["warmup"])
                        for c in CONCURRENCY:
                            before = failures(s.url, "mlp")
                            r = run_h2load(self.h2load, s.grpc_port, body, c, self.duration)
                            self.record(
                                "grpc", f"{kind}_grpc", rep, c=c, failed=failed(before, failures(s.url, "mlp")), **r
                            )
                        if kind == "morphserve":
                            h.settle(s.url, "/v2/models/mlp/infer", payloads["oip_json"])
                            self.record(
                                "grpc", "morphserve_http_json", rep, c=64, **self.http_load(s, payloads["oip_json"], 64)
                            )
                except (h.BenchError, AssertionError) as e:
                    self.error("grpc", kind, e)

    # -- part shm ----------------------------------------------------------------------------------------------------
    def part_shm(self) -> None:
        self.h2load = self.h2load or ensure_h2load()
        x, payloads = self.payloads(SHM_ROWS)
        want = self.reference("mlp", x)
        out_bytes = SHM_ROWS * 10 * 4
        raw_body = self.tmp / "grpc64.body"
        raw_body.write_bytes(grpc_frame("mlp", x))
        shm_grpc = self.tmp / "grpc64shm.body"
        shm_grpc.write_bytes(grpc_frame("mlp", x, ("bench_in", "bench_out", out_bytes)))
        shm_http = self.tmp / "shm64.body"
        shm_http.write_text(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": list(x.shape),
                            "parameters": {"shared_memory_region": "bench_in", "shared_memory_byte_size": x.nbytes},
                        }
                    ],
                    "outputs": [
                        {
                            "name": "output",
                            "parameters": {"shared_memory_region": "bench_out", "shared_memory_byte_size": out_bytes},
                        }
                    ],
                }
            )
        )
        shm_payload = h.Payload("shm_json", shm_http, "application/json", None, shm_http.stat().st_size)
        segments = [
            shared_memory.SharedMemory(create=True, size=x.nbytes),
            shared_memory.SharedMemory(create=True, size=out_bytes),
        ]
        try:
            segments[0].buf[: x.nbytes] = np.ascontiguousarray(x, dtype="<f4").tobytes()
            for rep in range(self.reps):
                try:
                    with self.serving("morphserve", "mlp") as s:
                        auth = {"Authorization": f"Bearer {h.TOKEN}", "Content-Type": "application/json"}
                        for name, seg in (("bench_in", segments[0]), ("bench_out", segments[1])):
                            doc = {"key": "/" + seg.name.lstrip("/"), "offset": 0, "byte_size": seg.size}
                            status, _, text = h.request(
                                s.url,
                                "POST",
                                f"/v2/systemsharedmemory/region/{name}/register",
                                json.dumps(doc).encode(),
                                auth,
                            )
                            if status != 200:
                                raise h.BenchError(f"shared memory registration refused: {text[:300]!r}")
                        self.check(s, payloads["oip_json"], want)
                        status, _, text = h.request(
                            s.url,
                            "POST",
                            "/v2/models/mlp/infer",
                            shm_http.read_bytes(),
                            {"Content-Type": "application/json"},
                        )
                        got = np.frombuffer(bytes(segments[1].buf[:out_bytes]), dtype="<f4").reshape(SHM_ROWS, 10)
                        if status != 200:
                            raise h.BenchError(f"shared memory inference failed: {text[:300]!r}")
                        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
                        self.warm(s, payloads["oip_json"], 16)
                        c = 64
                        http = {"http_json": payloads["oip_json"], "http_binary": payloads["oip_binary"]}
                        http["http_shm"] = shm_payload
                        grpc_bodies = {"grpc_raw": raw_body, "grpc_shm": shm_grpc}
                        for label in ("http_json", "http_binary", "grpc_raw", "http_shm", "grpc_shm"):
                            h.settle(s.url, "/v2/models/mlp/infer", payloads["oip_binary"])
                            before = failures(s.url, "mlp")
                            if label in http:
                                r = self.http_load(s, http[label], c)
                            else:
                                r = run_h2load(self.h2load or "", s.grpc_port, grpc_bodies[label], c, self.duration)
                            r["rows_per_s"] = round(r["rps"] * SHM_ROWS, 1)
                            self.record("shm", label, rep, c=c, failed=failed(before, failures(s.url, "mlp")), **r)
                except (h.BenchError, AssertionError) as e:
                    self.error("shm", "morphserve", e)
            from limit import limits

            (lim,) = limits(["mlp"], {}, [SHM_ROWS], self.cfg["limit_s"], "cpu", self.args.threads)
            self.record("shm", "limit", 0, rows_per_s=lim["results"][0]["rows_per_s"], batch=SHM_ROWS)
        finally:
            for seg in segments:
                seg.close()
                with contextlib.suppress(FileNotFoundError):
                    seg.unlink()

    # -- part compile ------------------------------------------------------------------------------------------------
    def part_compile(self) -> None:
        self.compile_in_process()
        self.compile_http()
        self.compile_p99()

    def compile_in_process(self) -> None:
        """Eager against compiled, in a subprocess per model (a fresh inductor cache and the same torch threads)."""
        for model in ("resnet", "convnet"):
            code = COMPILE_TIMING.format(model=model, iters=self.cfg["timing_iters"], threads=self.args.threads)
            r = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=1800,
                cwd=h.ROOT,
                env={**h.torch_env(self.args.threads), "TORCHINDUCTOR_CACHE_DIR": str(self.tmp / "inductor")},
            )
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("COMPILE_JSON ")), None)
            if r.returncode != 0 or line is None:
                self.error("compile", model, h.BenchError(r.stderr[-1500:]))
                continue
            for row in json.loads(line.removeprefix("COMPILE_JSON ")):
                self.record("compile", f"{model}_in_process", 0, **row)

    def _compiled(self, s: OipServer, model: str, version: int, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = h.request(s.url, "GET", f"/v1/models/{model}", timeout=10)
            state = json.loads(body).get("compile") if status == 200 else None
            if state and state["version"] >= version and state["state"] in ("serving", "failed"):
                return dict(state)
            time.sleep(0.5)
        raise h.BenchError(f"{model} version {version} did not finish compiling within {timeout:.0f} s")

    def compile_http(self) -> None:
        x = h.sample_input((1, 3, 32, 32), seed=7)
        payloads = h.write_payloads(x, self.tmp / "resnet1")
        want = self.reference("resnet", x)
        for rep in range(self.reps):
            for mode in ("off", "default") if rep % 2 == 0 else ("default", "off"):
                try:
                    with self.serving(
                        "morphserve", "resnet", "--compile", mode, "--compile-cache-dir", str(self.tmp / "cc")
                    ) as s:
                        state = self._compiled(s, "resnet", 1) if mode != "off" else None
                        self.check(s, payloads["oip_binary"], want)
                        self.warm(s, payloads["oip_binary"], 16)
                        r = self.http_load(s, payloads["oip_binary"], 16)
                        self.record("compile", f"resnet_http_compile_{mode}", rep, c=16, compile=state, **r)
                except h.BenchError as e:
                    self.error("compile", f"resnet_http_{mode}", e)

    def compile_p99(self) -> None:
        """mlp at c = 16: a window with no compile, then an edit (which starts one) and a window while it runs."""
        x, payloads = self.payloads(1)
        window = self.cfg["compile_window"]
        for rep in range(self.reps):
            try:
                cache = self.tmp / f"cc-p99-{rep}"  # a cold cache: the compile after the edit is a real one
                with self.serving("morphserve", "mlp", "--compile", "default", "--compile-cache-dir", str(cache)) as s:
                    self._compiled(s, "mlp", 1)
                    self.warm(s, payloads["oip_json"], 16)
                    path = s.url + "/v2/models/mlp/infer"
                    quiet = h.run_wrk(self.wrk, path, payloads["oip_json"], 16, window, self.args.wrk_threads)
                    edit = h.Editor(s.url, "mlp", time.perf_counter(), 0, 0).edit(0)
                    if edit["status"] != 200:
                        raise h.BenchError(f"the edit failed: {edit['error']}")
                    during = h.run_wrk(self.wrk, path, payloads["oip_json"], 16, window, self.args.wrk_threads)
                    _, _, body = h.request(s.url, "GET", "/v1/models/mlp", timeout=10)
                    still = (json.loads(body).get("compile") or {}).get("state") in ("queued", "compiling")
                    state = self._compiled(s, "mlp", edit["version"])
                    self.record("compile", "mlp_p99_no_compile", rep, c=16, **quiet)
                    self.record(
                        "compile",
                        "mlp_p99_during_compile",
                        rep,
                        c=16,
                        compiling_at_end=still,
                        edit_to_live_ms=edit["live_ms"],
                        edit_total_ms=(edit["timings_ms"] or {}).get("total"),
                        compile=state,
                        **during,
                    )
            except h.BenchError as e:
                self.error("compile", "mlp_p99", e)

    def error(self, part: str, label: str, e: BaseException) -> None:
        print(f"error: {part} {label}: {e}", file=sys.stderr)
        self.results["errors"].append({"part": part, "label": label, "error": str(e)[-2000:]})


COMPILE_TIMING = """
import json, time, torch
torch.set_num_threads({threads})
from morphserve.graph import load_zoo
from morphserve.serving.compile import compile_version, batch_sizes, preload
preload()
v = load_zoo("{model}")
gm = v.graph_module
t0 = time.perf_counter()
compiled = compile_version(v, gm, "default", sizes=batch_sizes(32))
compile_s = time.perf_counter() - t0
rows = []
for b in (8, 32):
    # made outside inference mode, as the worker's batches are (compile.py: the guards tell them apart)
    x = torch.randn(b, *v.inputs[0].shape[1:], generator=torch.Generator().manual_seed(b))
    with torch.inference_mode():
        best = {{}}
        for _ in range(3):
            for name, f in (("eager", gm), ("compiled", compiled)):
                f(x)
                t = time.perf_counter()
                for _ in range({iters}):
                    f(x)
                ms = (time.perf_counter() - t) / {iters} * 1e3
                best[name] = min(best.get(name, ms), ms)
        rows.append({{"batch": b, "eager_ms": round(best["eager"], 3), "compiled_ms": round(best["compiled"], 3),
                     "speedup": round(best["eager"] / best["compiled"], 3), "compile_s": round(compile_s, 1),
                     "threads": torch.get_num_threads()}})
print("COMPILE_JSON " + json.dumps(rows))
"""


# ---------------------------------------------------------------------------------------------- report
def med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


def report(results: dict[str, Any]) -> str:
    runs = results["runs"]

    def cell(part: str, label: str, c: int | None, key: str = "rps") -> float | None:
        return med(
            [r for r in runs if r["part"] == part and r["label"] == label and (c is None or r.get("c") == c)], key
        )

    lines = [
        f"# OIP benchmarks (issue 26)\n\n{results['meta']['command']} on {results['meta']['date']}, load average "
        f"{results['meta']['loadavg']}; torch threads {results['meta']['threads']}.\n"
    ]
    lines += [
        "## mlp, one sample, OIP v2 JSON over HTTP (requests/s; p99 ms)\n",
        "| server | c=1 | c=16 | c=64 |",
        "|---|---:|---:|---:|",
    ]
    for kind in ("morphserve", *OIP_PEERS):
        vals = [f"{cell('http', kind, c)} ({cell('http', kind, c, 'p99_ms')})" for c in CONCURRENCY]
        lines.append(f"| {kind} | " + " | ".join(vals) + " |")
    best = {c: max((cell("http", k, c) or 0) for k in OIP_PEERS) for c in CONCURRENCY}
    ratios = [h.ratio(cell("http", "morphserve", c), best[c] or None) for c in CONCURRENCY]
    lines.append(
        f"\nmorphserve / best peer: {', '.join(f'c={c}: {r}' for c, r in zip(CONCURRENCY, ratios, strict=True))} "
        "(target >= 1.5 each)\n"
    )
    lines += [
        "## gRPC with raw contents, mlp, one sample (requests/s; p99 ms)\n",
        "| server | c=1 | c=16 | c=64 |",
        "|---|---:|---:|---:|",
    ]
    for label in ("morphserve_grpc", "triton_grpc"):
        vals = [f"{cell('grpc', label, c)} ({cell('grpc', label, c, 'p99_ms')})" for c in CONCURRENCY]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    json64 = cell("grpc", "morphserve_http_json", 64)
    lines.append(
        f"\nmorphserve OIP JSON over HTTP at c=64 (same servers): {json64}; gRPC / JSON: "
        f"{h.ratio(cell('grpc', 'morphserve_grpc', 64), json64)} (target >= 2); morphserve / Triton gRPC: "
        + ", ".join(
            f"c={c}: {h.ratio(cell('grpc', 'morphserve_grpc', c), cell('grpc', 'triton_grpc', c))}" for c in CONCURRENCY
        )
        + " (target > 1)\n"
    )
    lines += [
        f"## mlp, {SHM_ROWS} samples a request, c=64 (morphserve)\n",
        "| path | requests/s | rows/s | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for label in ("http_json", "http_binary", "grpc_raw", "http_shm", "grpc_shm"):
        rps, rows, p99 = (cell("shm", label, 64, key) for key in ("rps", "rows_per_s", "p99_ms"))
        lines.append(f"| {label} | {rps} | {rows} | {p99} |")
    limit = cell("shm", "limit", None, "rows_per_s")
    best_shm = max(cell("shm", "http_shm", 64) or 0, cell("shm", "grpc_shm", 64) or 0)
    lines.append(f"| in-process limit, batch {SHM_ROWS} | | {limit} | |")
    lines.append(
        f"\nshared memory / OIP JSON: {h.ratio(best_shm, cell('shm', 'http_json', 64))} (target >= 3); "
        f"limit / shared memory rows: {h.ratio(limit, best_shm * SHM_ROWS if best_shm else None)} (target <= 2)\n"
    )
    lines += [
        "## Compiled graphs\n",
        "| model | batch | eager ms | compiled ms | speedup | compile s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if r["label"].endswith("_in_process"):
            model = r["label"].removesuffix("_in_process")
            cols = [r[k] for k in ("batch", "eager_ms", "compiled_ms", "speedup", "compile_s")]
            lines.append(f"| {model} | " + " | ".join(map(str, cols)) + " |")
    off, on = cell("compile", "resnet_http_compile_off", 16), cell("compile", "resnet_http_compile_default", 16)
    lines.append(
        f"\nresnet over HTTP (OIP binary, one image) at c=16: eager {off} req/s, compiled {on} req/s "
        f"({h.ratio(on, off)}x)\n"
    )
    quiet, busy = (
        cell("compile", "mlp_p99_no_compile", 16, "p99_ms"),
        cell("compile", "mlp_p99_during_compile", 16, "p99_ms"),
    )
    during = [r for r in runs if r["label"] == "mlp_p99_during_compile"]
    lines.append(
        f"mlp at c=16, OIP JSON: p99 {quiet} ms with no compile, {busy} ms while one runs "
        f"({h.ratio(busy, quiet)}x, target <= 1.2); requests/s {cell('compile', 'mlp_p99_no_compile', 16)} vs "
        f"{cell('compile', 'mlp_p99_during_compile', 16)}; failed {sum(r['non_2xx'] for r in during)}; "
        f"edit-to-live {med(during, 'edit_to_live_ms')} ms; edit-to-compiled "
        f"{med([r['compile'] for r in during if r.get('compile')], 'edit_to_compiled_s')} s; the compile was still "
        f"running at the window's end in {sum(1 for r in during if r.get('compiling_at_end'))} of {len(during)} runs\n"
    )
    if results["errors"]:
        lines.append("## Errors\n")
        lines += [f"- {e['part']} {e['label']}: {e['error'][:500]}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--parts", default="http,grpc,shm,compile")
    ap.add_argument("--servers", default="morphserve,triton,mlserver,kserve")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--duration", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every server and in-process run")
    ap.add_argument("--wrk-threads", type=int, default=1)
    args = ap.parse_args(argv)
    args.out = args.out or (
        Path(tempfile.mkdtemp(prefix="oip-quick-")) if args.quick else h.ROOT / "docs" / "bench" / "oip"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    args.server_set = set(args.servers.split(","))
    from peer_envs import PEER_ENVS, PeerSetupError

    for kind in OIP_PEERS:
        if kind in args.server_set:
            try:
                PEER_ENVS[PEER_ENV[kind]].ensure()
            except PeerSetupError as e:
                print(f"error: {e}", file=sys.stderr)
                return h.DEP_MISSING
    run = Run(args)
    run.results["meta"] = {
        "command": "python scripts/bench/oip.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg": h.loadavg(),
        "threads": args.threads,
        "machine": h.machine(),
        "peers": {k: PEER_ENVS[PEER_ENV[k]].ready() for k in OIP_PEERS if k in args.server_set},
    }
    t0 = time.perf_counter()
    for part in args.parts.split(","):
        with h.timed(f"part {part}"):
            getattr(run, f"part_{part}")()
    run.results["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    run.results["meta"]["loadavg_end"] = h.loadavg()
    (args.out / "results.json").write_text(json.dumps(run.results, indent=1, default=str))
    (args.out / "OIP_RESULTS.md").write_text(report(run.results))
    print(f"wrote {args.out / 'OIP_RESULTS.md'}", file=sys.stderr)
    return 1 if run.results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
