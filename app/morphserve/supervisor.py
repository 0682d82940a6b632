"""`morphserve serve --workers N`: N server processes behind one port, each a replica of the same journal.

The supervisor binds the listening socket once and starts N children that accept on it (the kernel hands each new
connection to one of them), so a many-core host uses its cores despite the GIL. Every child is a full server: its
own models, device worker and follower, so an edit through the shared port answers once the child that took it has
the version live, and `?min_version=` gives read-your-writes on the others. The children get the supervisor's
settings through the environment (one resolved admin token; `--fresh` applied once, here), their index in
MORPHSERVE_WORKER_INDEX (worker i takes `cuda:(i mod n)` on a host with n GPUs) and the socket's descriptor in
MORPHSERVE_WORKER_FD. A child that dies is started again; SIGTERM or SIGINT stops them all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from morphserve.settings import Settings

log = logging.getLogger("morphserve.supervisor")
WORKER_FD = "MORPHSERVE_WORKER_FD"
WORKER_INDEX = "MORPHSERVE_WORKER_INDEX"


def inherited_socket() -> socket.socket | None:
    """In a child: the listening socket the supervisor bound."""
    fd = os.environ.get(WORKER_FD)
    return socket.socket(fileno=int(fd)) if fd is not None and fd.isdigit() else None


def settings_env(settings: Settings, admin_token: str | None) -> dict[str, str]:
    """The settings as MORPHSERVE_* variables for a child (which then reads exactly what the supervisor read)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        key = f"MORPHSERVE_{name.upper()}"
        if isinstance(value, list):
            env[key] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        else:
            env[key] = str(value)
    env["MORPHSERVE_WORKERS"] = "1"
    env["MORPHSERVE_FRESH"] = "false"
    if admin_token is not None:
        env["MORPHSERVE_ADMIN_TOKEN"] = admin_token
    return env


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(settings: Settings, admin_token: str | None) -> int:
    """Start `settings.workers` children on one socket and keep them running until SIGTERM/SIGINT."""
    if settings.fresh:
        from morphserve.store import open_store

        open_store(settings).close()  # --fresh, once, before any child opens the state dir
    sock = bind(settings.host, settings.port)
    base = {**os.environ, **settings_env(settings, admin_token), WORKER_FD: str(sock.fileno())}
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(i: int) -> None:
        children[i] = subprocess.Popen(
            [sys.executable, "-m", "morphserve", "serve"],
            env={**base, WORKER_INDEX: str(i)},
            pass_fds=[sock.fileno()],
            cwd=Path.cwd(),
        )
        log.info("worker %d started (pid %d)", i, children[i].pid)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(settings.workers):
        start(i)
    log.warning("serving on http://%s:%d with %d workers", settings.host, settings.port, settings.workers)
    while not stopping:
        time.sleep(0.2)
        for i, child in list(children.items()):
            code = child.poll()
            if code is not None and not stopping:
                log.error("worker %d (pid %d) exited with %d; starting it again", i, child.pid, code)
                time.sleep(1.0)
                start(i)
    deadline = time.monotonic() + 15
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    sock.close()
    return 0
