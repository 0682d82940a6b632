"""Benchmark plumbing: server subprocesses, request bodies, the wrk load generator, edits under load, statistics.

Everything here drives servers from the outside, over HTTP on 127.0.0.1, the way a client would. `run.py` composes
these pieces into the workloads of issue 6 and writes the results; nothing here knows about reports or plots.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
PEERS = BENCH / "peers"
LUA = BENCH / "wrk" / "post.lua"
PY = sys.executable
TOKEN = "bench-token"
WRK_MISSING = 3  # exit code of run.py when wrk is missing and cannot be installed
DEP_MISSING = 4  # exit code of run.py when a Python dependency (litserve, matplotlib) is missing


class BenchError(RuntimeError):
    """A benchmark step failed in a way that makes its numbers meaningless (server died, bad responses...)."""


# ---------------------------------------------------------------------------------------------- environment
def torch_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every server and in-process measurement: same torch thread count for all of them.

    PyTorch sizes its intra-op pool from OMP_NUM_THREADS (MKL_NUM_THREADS for MKL kernels); the inter-op pool is
    unused by a plain forward. OPENBLAS_* variables of this machine are left as they are (torch does not use them).
    """
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    # app/ first: the package's source root, so that servers run this checkout's morphserve (not an installed one).
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "app"), str(ROOT), *(p for p in [env.get("PYTHONPATH")] if p)])
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    """Path of `wrk`; installs Debian's package when missing and running as root. Raises BenchError otherwise."""
    found = shutil.which("wrk")
    if found:
        return found
    how = "apt-get install -y wrk   (Debian/Ubuntu package 'wrk'; as a non-root user: sudo apt-get install -y wrk)"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "install", "-y", "-q", "wrk"],
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "wrk"],
        ):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if cmd[1] == "install" and r.returncode == 0:
                break
        found = shutil.which("wrk")
        if found:
            return found
        raise BenchError(f"wrk is not installed and `apt-get install -y wrk` failed: {r.stderr.strip()[-500:]}")
    raise BenchError(f"wrk is not installed (and this is not root, so it cannot be installed here). Install it: {how}")


def wrk_version(wrk: str) -> str:
    r = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    return (r.stdout or r.stderr).splitlines()[0].strip() if (r.stdout or r.stderr) else "?"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> dict[str, Any]:
    """CPU model, cores and memory as /proc/cpuinfo, nproc and free report them."""
    info: dict[str, Any] = {}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")]
        info["cpu_model"] = models[0] if models else "?"
        flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
        info["cpu_flags_simd"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    except OSError:
        info["cpu_model"] = "?"
    for key, cmd in (("nproc", ["nproc"]), ("free", ["free", "-h"])):
        try:
            info[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info[key] = "?"
    info["os_cpu_count"] = os.cpu_count()
    info["platform"] = sys.platform
    with contextlib.suppress(AttributeError):
        info["kernel"] = os.uname().release
    return info


# ---------------------------------------------------------------------------------------------- servers
#: The peers, lightest first; TorchServe and Ray Serve run from their own venvs (peer_envs.py).
PEER_KINDS = ("naive", "litserve", "torchserve", "ray")
SERVER_KINDS = (*PEER_KINDS, "morphserve")
HEAVY_PEERS = ("torchserve", "ray")  # set up on first use; not in --smoke unless asked for
START_TIMEOUT_S = {"torchserve": 180.0, "ray": 240.0}  # a JVM plus Python workers; a whole Ray instance


@dataclass
class ServerConfig:
    kind: str  # naive | litserve | torchserve | ray | morphserve
    model: str  # served model name (the URL's {model})
    options: dict[str, Any] = field(default_factory=dict)  # zoo options (e.g. width for convnet)
    device: str = "cpu"
    threads: int = 1
    max_batch_size: int = 32
    max_batch_delay_ms: float = 2.0
    bundle: Path | None = None  # morphserve: serve this spec bundle (zoo model with options) instead of the zoo name
    dtype: str = "float32"  # compute dtype (morphserve via extra_args, the naive peer via --dtype)
    extra_args: tuple[str, ...] = ()  # morphserve: more `morphserve serve` flags (--workers N, --dtype ...)
    peer_workers: int = 1  # TorchServe: worker processes of the model
    name: str = ""  # the server variant's key in results (default: kind)

    @property
    def key(self) -> str:
        return self.name or self.kind


class Server:
    """One server subprocess on a free loopback port: started, polled until ready, stopped cleanly.

    Each server runs in its own session (process group), so that whatever it spawned (LitServe's workers,
    TorchServe's JVM and Python workers, Ray's daemons) can be found and, as a last resort, killed with it. The stop
    signal is SIGINT for all of them: uvicorn treats it like SIGTERM, LitServe only shuts its worker processes down
    on SIGINT (SIGTERM orphans them), and the TorchServe and Ray launchers shut their servers down on it.
    """

    def __init__(self, cfg: ServerConfig, log_dir: Path) -> None:
        self.cfg = cfg
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.management_port = free_port() if cfg.kind == "torchserve" else None
        self.log_path = log_dir / f"{cfg.key}-{cfg.model}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._state_dir: tempfile.TemporaryDirectory[str] | None = None
        self.start_s = 0.0
        self.stop_s = 0.0
        self.orphans_killed = 0
        self.info: dict[str, Any] = {}  # what the server reports about its own settings, once ready

    # argv and readiness per kind
    def _argv(self) -> list[str]:
        c = self.cfg
        opts = ["--options", json.dumps(c.options)] if c.options else []
        common = ["--host", "127.0.0.1", "--port", str(self.port), "--model", c.model, "--device", c.device, *opts]
        if c.kind == "naive":
            return [PY, str(PEERS / "naive_server.py"), *common, "--dtype", c.dtype]
        if c.kind == "litserve":
            return [
                PY,
                str(PEERS / "litserve_server.py"),
                *common,
                "--max-batch-size",
                str(c.max_batch_size),
                "--batch-timeout-ms",
                str(c.max_batch_delay_ms),
            ]
        if c.kind in HEAVY_PEERS:
            from peer_envs import PEER_ENVS

            argv = [
                str(PEER_ENVS[c.kind].python),
                str(PEERS / f"{c.kind}_server.py"),
                *common,
                "--max-batch-size",
                str(c.max_batch_size),
                "--batch-delay-ms",
                str(c.max_batch_delay_ms),
            ]
            if c.kind == "torchserve":
                argv += ["--workers", str(c.peer_workers), "--management-port", str(self.management_port)]
            return argv
        if c.kind == "morphserve":
            self._state_dir = tempfile.TemporaryDirectory(prefix="morphserve-bench-state-")
            source = f"{c.model}={c.bundle}" if c.bundle else c.model
            return [
                PY,
                "-m",
                "morphserve",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--model",
                source,
                "--device",
                c.device,
                "--max-batch-size",
                str(c.max_batch_size),
                "--max-batch-delay-ms",
                str(c.max_batch_delay_ms),
                "--admin-token",
                TOKEN,
                "--state-dir",
                self._state_dir.name,
                "--log-level",
                "warning",
                *c.extra_args,
            ]
        raise ValueError(f"unknown server kind {c.kind!r}")

    def ready(self) -> bool:
        """Whether the server can take the benchmark's requests now (raises OSError while nothing listens)."""
        kind, model = self.cfg.kind, self.cfg.model
        if kind == "torchserve":
            # GET /ping says Healthy even while the workers crash in a restart loop: ask the management API.
            status, _, body = request(f"http://127.0.0.1:{self.management_port}", "GET", f"/models/{model}", timeout=2)
            if status != 200:
                return False
            doc = json.loads(body)[0]
            workers = doc.get("workers", [])
            if not workers or any(w.get("status") != "READY" for w in workers) or len(workers) < doc["minWorkers"]:
                return False
            self.info = {
                k: doc.get(k)
                for k in ("modelVersion", "batchSize", "maxBatchDelay", "minWorkers", "maxWorkers", "responseTimeout")
            }
            self.info["workers_ready"] = len(workers)
            return True
        if kind == "ray":
            status, _, body = request(self.url, "GET", "/-/routes", timeout=2)
            return status == 200 and f"/v1/models/{model}/infer" in json.loads(body)
        path = f"/v2/models/{model}/ready" if kind == "morphserve" else "/health"
        return request(self.url, "GET", path, timeout=2)[0] == 200

    def start(self, timeout: float | None = None) -> Server:
        timeout = timeout or START_TIMEOUT_S.get(self.cfg.kind, 120.0)
        argv = self._argv()
        t0 = time.perf_counter()
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=torch_env(self.cfg.threads),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                flags = f" (started with {' '.join(self.cfg.extra_args)})" if self.cfg.extra_args else ""
                raise BenchError(
                    f"{self.cfg.key} server{flags} exited with code {self.proc.returncode} during "
                    f"start-up:\n{self.log_tail()}"
                )
            try:
                if self.ready():
                    self.start_s = time.perf_counter() - t0
                    return self
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"{self.cfg.kind} server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own process group
        t0 = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"warning: {self.cfg.kind} did not stop within {timeout:.0f} s of SIGINT; killing it",
                    file=sys.stderr,
                )
                proc.kill()
                proc.wait(10)
        # Whatever the server spawned must have gone with it; give stragglers a moment, then kill the group.
        for _ in range(50):
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            self.orphans_killed = 1
            print(
                f"warning: {self.cfg.kind} left processes behind after it stopped; killing its process group",
                file=sys.stderr,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc = None
        self.stop_s = time.perf_counter() - t0
        self._log.close()
        if self._state_dir is not None:
            self._state_dir.cleanup()
            self._state_dir = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------------------------------------- HTTP helpers
def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- request bodies
@dataclass(frozen=True)
class Payload:
    """One request body on disk (wrk reads it), with what wrk must send alongside it."""

    name: str  # v1_json | oip_json | oip_binary
    path: Path
    content_type: str
    header_length: int | None  # Inference-Header-Content-Length for binary OIP
    size: int


@dataclass(frozen=True)
class Target:
    """Where a workload sends its load: a server kind, its route, and the body encoding."""

    label: str  # e.g. morphserve_v1
    kind: str  # server kind
    route: str  # v1 | oip | predictions (TorchServe's own route, the /v1 body and answer)
    payload: str  # Payload.name
    server: str = ""  # the server variant (ServerConfig.key) that serves it; default: kind

    @property
    def server_key(self) -> str:
        return self.server or self.kind

    def path(self, model: str) -> str:
        if self.route == "predictions":
            return f"/predictions/{model}"
        return f"/v2/models/{model}/infer" if self.route == "oip" else f"/v1/models/{model}/infer"


TARGETS = {
    "naive": Target("naive", "naive", "v1", "v1_json"),
    "litserve": Target("litserve", "litserve", "v1", "v1_json"),
    "torchserve": Target("torchserve", "torchserve", "predictions", "v1_json"),
    "ray": Target("ray", "ray", "v1", "v1_json"),
    "morphserve_v1": Target("morphserve_v1", "morphserve", "v1", "v1_json"),
    "morphserve_oip_json": Target("morphserve_oip_json", "morphserve", "oip", "oip_json"),
    "morphserve_oip_binary": Target("morphserve_oip_binary", "morphserve", "oip", "oip_binary"),
}


def sample_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """One request's input: a float32 array of `shape` (batch first), N(0, 1) with a fixed seed."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def write_payloads(x: np.ndarray, directory: Path, input_name: str = "input") -> dict[str, Payload]:
    """The three encodings of the same input, as a client library would write them.

    JSON bodies use `json.dumps(array.tolist())`, i.e. the shortest repr of each float32 value widened to a
    double (~19 characters a number), which is what Python clients send by default.
    """
    directory.mkdir(parents=True, exist_ok=True)
    shape = list(x.shape)
    v1 = json.dumps({"inputs": x.tolist()}).encode()
    oip = json.dumps(
        {"inputs": [{"name": input_name, "datatype": "FP32", "shape": shape, "data": x.reshape(-1).tolist()}]}
    ).encode()
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": input_name, "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": len(raw)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    out = {}
    for name, body, ctype, hlen in (
        ("v1_json", v1, "application/json", None),
        ("oip_json", oip, "application/json", None),
        ("oip_binary", header + raw, "application/octet-stream", len(header)),
    ):
        path = directory / f"{name}.body"
        path.write_bytes(body)
        out[name] = Payload(name, path, ctype, hlen, len(body))
    return out


def payload_headers(p: Payload) -> dict[str, str]:
    h = {"Content-Type": p.content_type}
    if p.header_length is not None:
        h["Inference-Header-Content-Length"] = str(p.header_length)
    return h


def decode_output(target: Target, status: int, headers: dict[str, str], body: bytes) -> tuple[int, np.ndarray]:
    """(model version, first output as float32 array) from any of the three response encodings."""
    if status != 200:
        raise BenchError(f"{target.label}: HTTP {status}: {body[:300]!r}")
    if target.route in ("v1", "predictions"):
        doc = json.loads(body)
        out = doc["outputs"]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return int(doc["model_version"]), np.asarray(out, dtype=np.float32)
    hlen = headers.get("inference-header-content-length")
    doc = json.loads(body[: int(hlen)] if hlen else body)
    o = doc["outputs"][0]
    if "data" in o:
        arr = np.asarray(o["data"], dtype=np.float32)
    else:
        arr = np.frombuffer(body[int(hlen) :], dtype="<f4", count=math.prod(o["shape"])).astype(np.float32)
    # MLServer leaves model_version out and KServe's ModelServer sends null for a model without versions: 0.
    return int(doc.get("model_version") or 0), arr.reshape(o["shape"])


def check_target(server: Server, target: Target, payload: Payload, reference: np.ndarray) -> float:
    """Send the body once and check the answer equals the in-process forward on the CPU (same model, same weights;
    a looser tolerance on CUDA, where convolutions may run in TF32)."""
    status, headers, body = request(
        server.url, "POST", target.path(server.cfg.model), payload.path.read_bytes(), payload_headers(payload)
    )
    _, out = decode_output(target, status, headers, body)
    if out.shape != reference.shape:
        raise BenchError(f"{target.label}: output shape {out.shape}, expected {reference.shape}")
    err = float(np.max(np.abs(out - reference)))
    tol = 3e-2 if server.cfg.device.startswith("cuda") else 1e-3
    if server.cfg.dtype != "float32":  # half precision against the FP32 reference: ~3 significant digits (bf16: 2)
        tol = 1e-1 if server.cfg.dtype == "bfloat16" else 3e-2
    if err > tol * max(1.0, float(np.max(np.abs(reference)))):
        raise BenchError(f"{target.label}: output differs from the in-process forward by {err:g}: not the same model")
    return err


_DTYPE_ALIASES = {
    "float32": {"float32", "fp32", "torch.float32", "float"},
    "float16": {"float16", "fp16", "torch.float16", "half"},
    "bfloat16": {"bfloat16", "bf16", "torch.bfloat16"},
}


def _compute_dtypes(doc: Any, found: list[str]) -> list[str]:
    """Every value of a key that names a compute dtype (`compute_datatype`, as the server says) anywhere in `doc`."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if "compute" in k.lower() and ("dtype" in k.lower() or "datatype" in k.lower()) and isinstance(v, str):
                found.append(v)
            else:
                _compute_dtypes(v, found)
    elif isinstance(doc, list):
        for v in doc:
            _compute_dtypes(v, found)
    return found


def check_compute_dtype(server: Server) -> str:
    """The compute dtype morphserve reports for the served model; BenchError unless it is the requested one.

    Issue 14: the signature shows the wire and the compute dtype. Looked for in the model's /v1 and OIP metadata
    under any key naming a compute dtype, so that the benchmark never reports FP16 numbers of an FP32 model.
    """
    want, model = server.cfg.dtype, server.cfg.model
    seen: list[str] = []
    for path in (f"/v1/models/{model}", f"/v2/models/{model}"):
        with contextlib.suppress(OSError, ValueError):
            status, _, body = request(server.url, "GET", path, timeout=10)
            if status == 200:
                _compute_dtypes(json.loads(body), seen)
    if not seen:
        raise BenchError(
            f"morphserve started with --dtype {want}, but neither GET /v1/models/{model} nor "
            f"/v2/models/{model} shows a compute dtype: cannot confirm it serves {want}"
        )
    wrong = [d for d in seen if d.lower() not in _DTYPE_ALIASES[want]]
    if wrong:
        raise BenchError(f"morphserve was asked for --dtype {want} but reports compute dtype {wrong[0]!r}")
    return seen[0]


def settle(url: str, path: str, payload: Payload, max_s: float = 15.0) -> list[float]:
    """Wait until the server has worked off what an earlier load left queued: one request at a time until one takes
    at most 1.5x the fastest seen (at least 3). Without it, the c=1 run after a c=64 warm-up measures the backlog
    of a server that keeps computing requests whose clients are gone. Latencies (ms) of the requests sent."""
    body, headers = payload.path.read_bytes(), payload_headers(payload)
    lat: list[float] = []
    end = time.perf_counter() + max_s
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        request(url, "POST", path, body, headers, timeout=max_s)
        lat.append((time.perf_counter() - t0) * 1e3)
        if len(lat) >= 3 and lat[-1] <= 1.5 * min(lat):
            break
    return lat


# ---------------------------------------------------------------------------------------------- wrk
def run_wrk(
    wrk: str, url: str, payload: Payload, connections: int, duration_s: int, threads: int = 1
) -> dict[str, Any]:
    """One closed-loop wrk run: `connections` connections each sending the body back to back for `duration_s`.

    Returns requests/s, latency percentiles in ms (wrk's HdrHistogram-style stats, per request), the count of
    HTTP responses >= 400 (wrk's `errors.status`, the non-2xx count: no route here answers 1xx or 3xx), and
    socket errors (connect/read/write/timeout).
    """
    cmd = [
        wrk,
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(payload.path),
        payload.content_type,
        str(payload.header_length) if payload.header_length is not None else "-",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 120)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if r.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    secs = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    e = raw["errors"]
    return {
        "connections": connections,
        "duration_s": round(secs, 3),
        "requests": raw["requests"],
        "rps": round(raw["requests"] / secs, 1) if secs > 0 else 0.0,
        "p50_ms": lat["p50"] / 1e3,
        "p90_ms": lat["p90"] / 1e3,
        "p99_ms": lat["p99"] / 1e3,
        "p999_ms": lat["p999"] / 1e3,
        "mean_ms": round(lat["mean"] / 1e3, 3),
        "max_ms": lat["max"] / 1e3,
        "non_2xx": e["status"],
        "socket_errors": e["connect"] + e["read"] + e["write"] + e["timeout"],
        "errors": e,
        "mb_per_s": round(raw["bytes"] / secs / 1e6, 2) if secs > 0 else 0.0,
    }


# ---------------------------------------------------------------------------------------------- edits under load
class Probe(threading.Thread):
    """A client that infers back to back on one keep-alive connection and records (sent, received, status,
    model_version) for every response: latency over time, and when each new version first answers."""

    def __init__(self, url: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(name="bench-probe", daemon=True)
        self.url, self.path, self.body, self.headers = url, path, body, headers
        self.records: list[tuple[float, float, int, int]] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while not self._halt.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("POST", self.path, body=self.body, headers=self.headers)
                r = conn.getresponse()
                data = r.read()
                t1 = time.perf_counter()
                version = int(json.loads(data)["model_version"]) if r.status == 200 else -1
                self.records.append((t0, t1, r.status, version))
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                self.failures += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(35)


def identity_ops(n: int, after: str = "fc1", width: int = 512, name: str = "bench_id") -> list[dict[str, Any]]:
    """The n-th edit of the alternation: even n inserts an identity Linear(width, width) after `after`, odd n
    removes it."""
    if n % 2 == 0:
        return [
            {
                "op": "insert",
                "after": after,
                "name": name,
                "init": "identity",
                "layer": {"type": "Linear", "in_features": width, "out_features": width},
            }
        ]
    return [{"op": "remove", "node": name}]


class Editor(threading.Thread):
    """One edit per `period_s` (alternating identity insert and remove) from `start_s` until `end_s` after t0."""

    def __init__(self, url: str, model: str, t0: float, start_s: float, end_s: float, period_s: float = 1.0) -> None:
        super().__init__(name="bench-editor", daemon=True)
        self.url, self.model, self.t0 = url, model, t0
        self.start_s, self.end_s, self.period_s = start_s, end_s, period_s
        self.edits: list[dict[str, Any]] = []
        self.count = 0

    def edit(self, n: int) -> dict[str, Any]:
        body = json.dumps({"ops": identity_ops(n)}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        wall_send, t_send = time.time(), time.perf_counter()
        status, _, data = request(self.url, "POST", f"/v1/models/{self.model}/edits", body, headers, timeout=60)
        t_done = time.perf_counter()
        doc = json.loads(data) if data else {}
        return {
            "n": n,
            "op": "insert" if n % 2 == 0 else "remove",
            "t_send": t_send,
            "t_done": t_done,
            "status": status,
            "version": doc.get("version"),
            "timings_ms": doc.get("timings_ms"),
            "live_ms": round((doc["live_at"] - wall_send) * 1e3, 2) if doc.get("live_at") else None,
            "error": None if status == 200 else data[:300].decode(errors="replace"),
        }

    def run(self) -> None:
        k = 0
        while True:
            due = self.t0 + self.start_s + k * self.period_s
            if due - self.t0 > self.end_s:
                return
            time.sleep(max(0.0, due - time.perf_counter()))
            self.edits.append(self.edit(self.count))
            self.count += 1
            k += 1

    def restore(self) -> None:
        """After the run: if the last edit inserted the layer, remove it so the model is back to its start."""
        if self.count % 2 == 1:
            self.edit(self.count)
            self.count += 1


def edit_to_live(edits: list[dict[str, Any]]) -> list[float | None]:
    """Per edit: ms from sending it to the instant the server swapped the new version in (its `live_at`; the
    server and this client share the host's clock). The next batch runs the new version."""
    return [e.get("live_ms") if e["status"] == 200 else None for e in edits]


def edit_to_seen(edits: list[dict[str, Any]], records: list[tuple[float, float, int, int]]) -> list[float | None]:
    """Per edit: ms from sending it to the first probe response (received after the send) by its new version:
    edit-to-live plus up to two probe round trips (the probe's request in flight at the swap may have been batched
    before it), so an upper bound as coarse as the load's latency."""
    out: list[float | None] = []
    for e in edits:
        v = e.get("version")
        if e["status"] != 200 or v is None:
            out.append(None)
            continue
        first = next((t1 for _, t1, status, ver in records if t1 >= e["t_send"] and status == 200 and ver >= v), None)
        out.append(round((first - e["t_send"]) * 1e3, 2) if first is not None else None)
    return out


# ---------------------------------------------------------------------------------------------- statistics
def median(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def percentile(xs: Sequence[float], q: float) -> float | None:
    s = sorted(x for x in xs if x is not None)
    if not s:
        return None
    return float(s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))])


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


@contextmanager
def timed(label: str, log: list[str] | None = None) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    msg = f"{label}: {time.perf_counter() - t0:.1f} s"
    print(msg, file=sys.stderr)
    if log is not None:
        log.append(msg)
