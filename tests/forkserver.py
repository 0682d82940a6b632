"""A fork server for the tests' real servers: one process imports torch, FastAPI and the app once, then forks a fresh
`morphserve serve` for each server a test starts. A server is then ready in about a second instead of six (torch's
import alone takes 2.5 s on CI's 2 cores, and the crash-recovery test starts fifty servers).

Why this is still a real server: the child is a process of its own (its own pid, memory, files and signals; a SIGKILL is
a SIGKILL), running the same `morphserve.cli.main` as `python -m morphserve serve` with its own argv, environment,
working directory and log. What it shares with a fresh interpreter is only what the imports did, and the zygote runs no
torch op and starts no thread beyond the one OpenBLAS starts on import, which its fork handlers re-create in the child
(the zygote checks that, and refuses to serve otherwise), so nothing a fork could break exists yet. `ServerProcess`
(tests/conftest.py) still runs a real `python -m morphserve serve` for a server under a prefix command, for one given a
variable the zygote's imports read (`forks_for`: PYTHON*, TORCH*, OMP_*, ...), and for every server when
MORPHSERVE_TEST_FORKSERVER=0. A server in a tmpfs's mount namespace enters it with setns(2) in the child (as root; else
under nsenter). `run_cli` forks the tests' other `morphserve` commands the same way, with their own stdio.

Protocol: JSON lines. The client writes `{"argv", "env", "cwd", "log"}`; the zygote answers `{"spawned": pid}`, and
later `{"exited": pid, "returncode": rc}` (rc as Popen has it: -N for a signal) once it has reaped the child.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELLO_TIMEOUT_S = 120.0  # the zygote's imports take ~6 s on CI's 2 cores; this is for a hang, not a slow machine


# -- the zygote (`python -m tests.forkserver`) ----------------------------------------------------------------------
def _preload() -> None:
    """What `python -m morphserve serve` imports by the time it is ready; FakeTensorMode pulls in torch._dynamo
    (2.5 s)."""
    import uvicorn.lifespan.on
    import uvicorn.loops.auto
    import uvicorn.protocols.http.auto  # noqa: F401
    from torch._subclasses.fake_tensor import FakeTensorMode

    import morphserve.cli
    import morphserve.main
    import morphserve.serving.registry  # noqa: F401

    FakeTensorMode(allow_non_fake_inputs=True)


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _child(req: dict[str, Any], proto: int) -> None:
    """In the forked child: become `morphserve serve <argv>` and never return."""
    code = 1
    try:
        os.close(proto)
        if req.get("mount_ns"):
            _enter_namespace(req["mount_ns"], 0x00020000)  # CLONE_NEWNS
        if req.get("net_ns"):
            _enter_namespace(req["net_ns"], 0x40000000)  # CLONE_NEWNET: a network namespace (tests/e2e/netns.py)
        os.dup2(os.open(req.get("stdin") or os.devnull, os.O_RDONLY), 0)
        log = _open_out(req.get("log"))
        os.dup2(_open_out(req["stdout"]) if req.get("stdout") else log, 1)
        os.dup2(_open_out(req["stderr"]) if req.get("stderr") else log, 2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = ["morphserve", *req["argv"]]
        from morphserve.cli import main

        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever the server raised goes to its log, as an interpreter would
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # exiting anyway
                stream.flush()
        os._exit(code)


def _enter_namespace(path: str, kind: int) -> None:
    """What `nsenter --mount` (or `--net`) does, in the child: setns(2) needs a single-threaded process, which a
    fresh fork is (OpenBLAS stops its pool before a fork and starts it again on first use)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, kind) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _open_out(path: str | None) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else os.open(os.devnull, os.O_WRONLY)


def serve_forks() -> None:
    proto = os.dup(1)  # answers go here; fd 1 itself is never written, so a child inherits no buffered output
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    import numpy  # noqa: F401 - OpenBLAS starts its pool here; it re-creates it in a child (pthread_atfork)

    blas = _native_threads()
    _preload()
    threads = _native_threads()
    ok = threads == blas and threading.active_count() == 1
    _send(proto, {"ready": ok, "threads": threads, "blas_threads": blas})
    if not ok:
        return
    children: set[int] = set()
    buf = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:  # the tests are done: stop what is still running
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(req, proto)
                children.add(pid)
                _send(proto, {"spawned": pid})
        _reap(children, proto)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while children:
        pid, _ = os.waitpid(-1, 0)
        children.discard(pid)


def _reap(children: set[int], proto: int) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(proto, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _send(fd: int, msg: dict[str, Any]) -> None:
    os.write(fd, json.dumps(msg).encode() + b"\n")


# -- the client (in the pytest process) -----------------------------------------------------------------------------
class ForkedProcess:
    """The part of `subprocess.Popen` the tests use, for a child of the fork server."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def _exit(self, returncode: int) -> None:
        self.returncode = returncode
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"forked server {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    def __init__(self) -> None:
        self._stderr = tempfile.NamedTemporaryFile(prefix="morphserve-forkserver-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.ready = False
        self.started = False  # the zygote's hello has been read (it imports in the background until then)
        self.reason = ""
        self._children: dict[int, ForkedProcess] = {}
        self._spawned: list[int] = []
        self._cond = threading.Condition()
        self._lock = threading.Lock()

    def start(self) -> bool:
        """Wait for the zygote's imports; True when it serves forks."""
        if not self.started:
            self.started = True
            hello = self._hello(HELLO_TIMEOUT_S)
            self.ready = bool(hello.get("ready"))
            self.reason = "" if self.ready else f"fork server not usable: {hello} (see {self._stderr.name})"
            if self.ready:
                threading.Thread(target=self._read, name="forkserver-reader", daemon=True).start()
        return self.ready

    def _hello(self, timeout: float) -> dict[str, Any]:
        """The zygote's first line, or a not-ready answer if it does not come in time: a zygote that hangs while
        importing must cost the run a fallback to real interpreters, not the run itself."""
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            self.proc.kill()
            self.proc.wait()
            return {"ready": False, "error": f"no answer within {timeout:.0f} s"}
        return dict(json.loads(self.proc.stdout.readline() or b'{"ready": false}'))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._cond:
                if "spawned" in msg:
                    self._spawned.append(msg["spawned"])
                    self._children[msg["spawned"]] = ForkedProcess(msg["spawned"])
                    self._cond.notify_all()
                elif "exited" in msg and msg["exited"] in self._children:
                    self._children.pop(msg["exited"])._exit(msg["returncode"])
        with self._cond:  # the zygote is gone, and with it its children
            for child in self._children.values():
                child._exit(-signal.SIGKILL)
            self._children.clear()
            self.ready = False
            self._cond.notify_all()

    def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        log: Path | None,
        stdio: tuple[Path, Path, Path] | None = None,
        mount_ns: Path | None = None,
        net_ns: Path | None = None,
    ) -> ForkedProcess:
        """Fork `morphserve <argv>`; its stdout and stderr go to `log` or, with `stdio`, to (stdin, stdout, stderr);
        with `mount_ns` (a /proc/PID/ns/mnt), it runs in that mount namespace, with `net_ns` (/run/netns/NAME) in
        that network namespace."""
        assert self.proc.stdin is not None
        with self._lock:
            req: dict[str, Any] = {
                "argv": argv,
                "env": env,
                "cwd": str(cwd),
                "log": str(log) if log else None,
                "mount_ns": str(mount_ns) if mount_ns else None,
                "net_ns": str(net_ns) if net_ns else None,
            }
            if stdio is not None:
                req.update(zip(("stdin", "stdout", "stderr"), map(str, stdio), strict=True))
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
            with self._cond:
                if not self._cond.wait_for(lambda: self._spawned or not self.ready, timeout=30) or not self._spawned:
                    raise RuntimeError(f"the fork server did not fork (see {self._stderr.name})")
                return self._children[self._spawned.pop(0)]

    def close(self) -> None:
        if not self.started:  # never used: its imports are not worth waiting for
            self.proc.kill()
            self.proc.wait()
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def prestart_fork_server() -> None:
    """Start the zygote's imports now (at configure time), so they overlap the collection's instead of delaying the
    first server; a session that starts no server kills it unused at the end."""
    global _server
    if os.environ.get("MORPHSERVE_TEST_FORKSERVER", "1") != "0":
        with _server_lock:
            if _server is None:
                _server = ForkServer()


def fork_server() -> ForkServer | None:
    """The session's fork server, started on first use; None when disabled or unusable (then: real processes)."""
    global _server
    if os.environ.get("MORPHSERVE_TEST_FORKSERVER", "1") == "0":
        return None
    with _server_lock:
        if _server is None:
            _server = ForkServer()
        if not _server.started and not _server.start():
            print(f"\n{_server.reason}; servers start as real interpreters", file=sys.stderr)
        return _server if _server.ready else None


#: Variables read when a module the zygote preloads is imported: a process that sets one gets a real interpreter.
_IMPORT_TIME_ENV = ("PYTHON", "TORCH", "OMP_", "MKL_", "OPENBLAS_", "CUDA", "LD_")


def forks_for(env: dict[str, str]) -> ForkServer | None:
    """The fork server, for a process run with `env` (the whole environment), unless `env` changes a variable the
    zygote's imports have read already; None: run a real interpreter."""
    changed = {k for k, v in env.items() if os.environ.get(k) != v}
    return None if any(k.startswith(_IMPORT_TIME_ENV) for k in changed) else fork_server()


def run_cli(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    input: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`python -m morphserve <args>` as `subprocess.run(..., capture_output=True, text=True)` has it, forked from the
    zygote (torch and the app imported already) where it can be: a CLI test then waits for the command, not for
    torch's import. The child runs `morphserve.cli.main` with its own argv, environment, stdio and exit status."""
    full_env = {**os.environ, **(env or {})}
    forks = forks_for(full_env)
    if forks is None:
        return subprocess.run(
            [sys.executable, "-m", "morphserve", *args],
            cwd=ROOT,
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    with tempfile.TemporaryDirectory(prefix="morphserve-cli-") as tmp:
        stdio = (Path(tmp) / "stdin", Path(tmp) / "stdout", Path(tmp) / "stderr")
        stdio[0].write_text(input or "")
        child = forks.spawn(args, full_env, ROOT, None, stdio)
        try:
            rc = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise
        return subprocess.CompletedProcess(["morphserve", *args], rc, stdio[1].read_text(), stdio[2].read_text())


def close_fork_server() -> None:
    if _server is not None:
        _server.close()


if __name__ == "__main__":
    serve_forks()
