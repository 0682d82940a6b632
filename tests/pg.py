"""A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` (initdb + pg_ctl), on a free loopback port.

One cluster per test session (a start costs about 2 s), one database per test (`create_database()`), so tests do
not see each other's rows. initdb refuses to run as root, so as root the cluster belongs to the `postgres` user
(`runuser -u postgres --`) in a temp dir it owns; as anyone else it runs as that user. Trust authentication on
127.0.0.1 and a socket in the temp dir only: nothing outside this machine can reach it.

The server runs inside a private mount namespace (tests/e2e/mounts.py) that also holds a small tmpfs, offered as
the tablespace `tiny`: moving a table there makes PostgreSQL fail with a real "disk full" (SQLSTATE 53100).
Without a namespace (unshare refused) the cluster still runs, and `tiny` is None.

Helpers for tests of replicas: `url(db)`, `restart()` (pg_ctl restart: "a database restart during load"),
`stop()`/`start()`, `terminate_listeners()` (pg_terminate_backend of every LISTENing backend: "a notification
lost on purpose") and `execute(sql)` as the superuser.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"

#: Settings of the test cluster: fsync off (a test's data need not survive a power cut; a clean or fast restart keeps
#: it all the same), enough connections for several replicas' pools, logs in the cluster dir.
_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{dir}'
fsync = off
full_page_writes = off
max_connections = 300
shared_buffers = 32MB
logging_collector = off
log_min_messages = warning
"""


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb): apt-get install postgresql, or run scripts/_env.sh dev as root"
        )
    return Path(versions[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self) -> None:
        self.bin = bin_dir()
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="morphserve-pg-"))  # right under /tmp, where the postgres user reaches
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self.tiny: str | None = None  # the small tablespace, when the namespace could be made
        self._ns = self._namespace()
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C.UTF-8",
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(_CONF.format(port=self.port, dir=self.dir))
        self.start()
        if self._ns is not None:
            tiny_dir = self._ns.dir / "tablespace"
            self._as_owner(["mkdir", str(tiny_dir)])
            self.execute(f"CREATE TABLESPACE tiny LOCATION '{tiny_dir}'")
            self.tiny = "tiny"

    # -- plumbing -----------------------------------------------------------------------------------------
    def _namespace(self) -> Any:
        """A private mount namespace with a 2 MiB tmpfs for the `tiny` tablespace, or None when unshare fails. Only
        as root: in a user namespace the server would run as (mapped) root, which PostgreSQL refuses."""
        from tests.e2e.mounts import PrivateTmpfs

        if not self.as_root:
            return None
        try:
            ns = PrivateTmpfs("2m")
        except (RuntimeError, OSError):
            return None
        subprocess.run([*ns.prefix, "chown", "postgres:postgres", str(ns.dir)], check=True)
        return ns

    def _as_owner(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        prefix = self._ns.prefix if self._ns is not None else []
        user = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run([*prefix, *user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return self._as_owner([str(self.bin / tool), *args])
        except subprocess.CalledProcessError as e:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {e.stdout} {e.stderr} {log}") from None

    # -- what tests use -----------------------------------------------------------------------------------
    def url(self, db: str = "postgres", *, user: str = SUPERUSER, password: str | None = None) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def execute(self, sql: str, db: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows, if any."""
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            cur = conn.execute(sql)  # type: ignore[call-overload]
            return cur.fetchall() if cur.description else []

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY file_copy')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log))

    def running(self) -> bool:
        return self._as_owner_status([str(self.bin / "pg_ctl"), "status", "-D", str(self.data)]) == 0

    def _as_owner_status(self, cmd: list[str]) -> int:
        try:
            self._as_owner(cmd)
        except subprocess.CalledProcessError as e:
            return e.returncode
        return 0

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))

    def restart(self) -> None:
        self._run("pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", str(self.data), "-l", str(self.log))

    def terminate_listeners(self) -> int:
        """Kill the connection of every backend that LISTENs (the journal's change feeds, which run nothing else and
        name themselves `morphserve-feed`): their notifications are lost. How many were terminated."""
        rows = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND (application_name = 'morphserve-feed' OR query ILIKE 'LISTEN %')"
        )
        return sum(1 for (ok,) in rows if ok)

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            if self._ns is not None:
                self._ns.close()  # the tmpfs goes with the namespace, once the server (inside it) has stopped
            shutil.rmtree(self.dir, ignore_errors=True)
