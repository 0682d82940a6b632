"""Connections to the PostgreSQL database of a shared journal: the URL as messages show it (never its password),
the pools and dedicated connections, and what each PostgreSQL failure means as a store error.

Every connection gets libpq defaults that turn a dead database or network into an error within seconds instead of
a hang (`connect_timeout`, TCP keepalives, `tcp_user_timeout`) and an `application_name` that says what it is
for (`pg_stat_activity` shows it); a value the URL sets wins.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import psycopg
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from .pg_schema import migrate
from .records import (
    JournalError,
    JournalUnreachableError,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
)

#: The seconds since the epoch, by the database's clock, at the moment the statement runs (not the transaction's
#: start, which `now()` is): what `committed_at`, `last_seen` and `written_at` record.
NOW = "extract(epoch FROM clock_timestamp())::float8"

#: How long a call waits for a free pooled connection (the pool is saturated)...
POOL_TIMEOUT_S = 5.0
#: ...in slices of this, giving up after a slice in which an attempt to connect failed: while the database is
#: down, calls fail within about this long.
SLICE_S = 0.1
#: How long a pool retries one lost connection in the background (backoff 1, 2 s...) before it leaves the next
#: attempt to the next call: the pool's own backoff doubles without bound, which after a long outage would delay
#: the reconnect by about as long again.
RECONNECT_S = 1.0
#: While connecting fails, each new attempt first knocks on the database's TCP port for at most this long. Why: on a
#: partition (packets dropped) a libpq connect waits out connect_timeout (5 s) and TCP resends its SYN only after 1,
#: 3, 7 s, so a network that heals is found seconds late; a knock that fails fast makes every attempt a fresh SYN,
#: and a replica reconnects within one attempt of the network coming back (issue 27: within 1 s).
PROBE_S = 0.25

log = logging.getLogger("morphserve.store")
# The pool logs every failed attempt to connect; Database logs when the database goes away and comes back instead.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",  # ms: a write the peer never acknowledges fails instead of hanging
}


def is_postgres_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """`postgresql://user@host:port/db`: where a database is, for messages, without its password."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(an invalid URL)"
    user = f"{d['user']}@" if d.get("user") else ""
    port = f":{d['port']}" if d.get("port") else ""
    return f"postgresql://{user}{d.get('host') or 'localhost'}{port}/{d.get('dbname') or ''}"


class Database:
    """One database URL: how to connect to it, and how to word its failures."""

    def __init__(self, url: str) -> None:
        self.where = redact(url)
        try:
            params: dict[str, Any] = conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise JournalError(f"the journal URL {self.where} is not valid: {self.scrub(str(e))}") from None
        self._secret = str(params.get("password") or "")
        self._params = {**_DEFAULTS, **params}
        self._tcp = _tcp_address(self._params)
        #: Why the last attempt to connect failed, while it is the latest news (None once one succeeds).
        self.failure: str | None = None
        self._connection_class = self._recording_class()

    def _recording_class(self) -> type[psycopg.Connection[Any]]:
        """Connections of the pools, recording whether connecting works: the pool itself only says it timed out."""
        db = self

        class Recording(psycopg.Connection[Any]):
            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Self:
                try:
                    db.knock()
                    conn = super().connect(*args, **kwargs)
                except psycopg.Error as e:
                    db.failed(e)
                    raise
                db.connected()
                return conn

        return Recording

    def knock(self) -> None:
        """While the last attempt to connect failed, OperationalError at once unless the database's TCP port answers
        within PROBE_S (see PROBE_S); a reachable database is never knocked at, a socket or many hosts never."""
        if self.failure is None or self._tcp is None:
            return
        try:
            socket.create_connection(self._tcp, timeout=PROBE_S).close()
        except OSError as e:
            host, port = self._tcp
            raise psycopg.OperationalError(f"connection to {host}:{port} failed: {e.strerror or e}") from None

    def failed(self, e: psycopg.Error) -> None:
        first = self.failure is None
        self.failure = self.scrub(str(e))
        if first:
            log.warning("%s is unreachable: %s", self.where, self.failure)

    def connected(self) -> None:
        if self.failure is not None:
            self.failure = None
            log.warning("%s is reachable again", self.where)

    def conninfo(self, application_name: str) -> str:
        return make_conninfo(**{"application_name": application_name, **self._params})

    def connect(self, application_name: str, what: str) -> psycopg.Connection[Any]:
        """A dedicated autocommit connection (a change feed, a migration)."""
        try:
            self.knock()
            conn = psycopg.connect(self.conninfo(application_name), autocommit=True)
        except psycopg.Error as e:
            self.failed(e)
            raise self.translate(e, what) from None
        self.connected()
        return conn

    def migrate(self, what: str) -> None:
        """Create the schema, or check the one there (pg_schema)."""
        with self.connect("morphserve-migrate", what) as conn:
            try:
                migrate(conn, self.where)
            except psycopg.Error as e:
                raise self.translate(e, what) from None

    @contextmanager
    def borrow(self, pool: ConnectionPool, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; any PostgreSQL failure inside comes out as the store error it means."""
        try:
            conn = self._getconn(pool)
            try:
                with conn:  # the pool's connection(): rolls back on an error, keeps the connection open
                    yield conn
            finally:
                pool.putconn(conn)
        except psycopg.Error as e:
            raise self.translate(e, what) from None

    def _getconn(self, pool: ConnectionPool) -> psycopg.Connection[Any]:
        """Wait for a connection up to POOL_TIMEOUT_S, but not once connecting fails."""
        deadline = time.monotonic() + POOL_TIMEOUT_S
        while True:
            try:
                return pool.getconn(timeout=SLICE_S)
            except PoolTimeout:
                if self.failure is not None or time.monotonic() >= deadline:
                    raise

    def pool(
        self,
        application_name: str,
        what: str,
        *,
        max_size: int,
        min_size: int = 1,
        configure: Callable[[psycopg.Connection[Any]], None] | None = None,
        reset: Callable[[psycopg.Connection[Any]], None] | None = None,
    ) -> ConnectionPool:
        """A small pool of autocommit connections (writes use explicit transactions). Each connection is checked
        when handed out, so a database that restarted costs no failed call; a dead one is replaced in the
        background, which is how the store reconnects by itself once the database is back."""
        pool: ConnectionPool = ConnectionPool(
            self.conninfo(application_name),
            connection_class=self._connection_class,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True},
            configure=configure,
            reset=reset,
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_S,
            reconnect_timeout=RECONNECT_S,
            name=application_name,
            num_workers=1,
        )
        try:
            pool.open(wait=min_size > 0, timeout=POOL_TIMEOUT_S)
        except psycopg.Error as e:
            pool.close()
            raise self.translate(e, what) from None
        return pool

    def scrub(self, message: str) -> str:
        """The first line of a driver message, with the password (should one ever be quoted) masked."""
        first = message.strip().splitlines()[0] if message.strip() else "(no message)"
        secret = getattr(self, "_secret", "")  # unset while the URL itself is being parsed
        return first.replace(secret, "***") if secret else first

    def translate(self, e: psycopg.Error, what: str) -> StoreError:
        """The store error a PostgreSQL failure means, by its SQLSTATE (and, for failures below SQL, by the kind
        of psycopg error). `what` names the thing, e.g. "the journal postgresql://u@h:5432/db"."""
        state = e.sqlstate or ""
        msg = self.scrub(str(e))
        if isinstance(e, pgerr.IntegrityConstraintViolation):  # unique and foreign-key violations (23xxx)
            return VersionConflictError(f"{what}: {msg}")
        if state == "53100":  # disk_full
            return StorageFullError(f"the disk under {what} is full: {msg}")
        if state in ("25006", "42501"):  # read_only_sql_transaction, insufficient_privilege
            return StoreUnavailableError(f"{what} cannot be written: {msg}")
        if state in ("55P03", "40P01", "40001"):  # lock_not_available, deadlock_detected, serialization_failure
            return JournalUnreachableError(f"{what} is busy: {msg}")
        if isinstance(e, PoolTimeout) and self.failure:  # the pool waited in vain: say why it could not connect
            return JournalUnreachableError(f"{what} is unreachable: {self.failure}")
        if state.startswith(("08", "57P", "53")) or isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
            return JournalUnreachableError(f"{what} is unreachable: {msg}")
        return JournalError(f"{what} failed: {msg}")


def _tcp_address(params: dict[str, Any]) -> tuple[str, int] | None:
    """The one TCP address a URL connects to (hostaddr, else host), or None: a Unix socket, several hosts."""
    host = str(params.get("hostaddr") or params.get("host") or "")
    port = str(params.get("port") or "5432")
    if not host or host.startswith("/") or "," in host or "," in port or not port.isdigit():
        return None
    return host, int(port)
