"""A warm pool of private database copies cloned from a template, with connections opened in advance."""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections.abc import Sequence

import psycopg2

from . import dbops
from .dbops import Connection
from .endpoint import Endpoint
from .errors import ProvisionError, ServerError

_STOP = ""
# Pool copies are cloned file by file: on the test server (data in memory, fsync off) that is
# the cheapest way, about 10 ms against 15 ms with WAL_LOG for ChatBI's template (FIELD-NOTES).
STRATEGY = "FILE_COPY"
TEST_APP = "pytest"


def new_session_token() -> int:
    return secrets.randbits(31)


def pool_prefix(database: str) -> str:
    return dbops.derived_prefix(database, "pool")


def pool_name(database: str, token: int, serial: int) -> str:
    return dbops.derived_name(database, "pool", f"{token:08x}_{serial}")


def _token_of(name: str, database: str) -> int | None:
    rest = name[len(pool_prefix(database)) :]
    try:
        return int(rest.split("_", 1)[0], 16)
    except ValueError:
        return None


class SessionLock:
    """Marks a test session as alive for as long as its connection lives (a crash releases it)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.token = new_session_token()
        self.conn = dbops.connect(endpoint, application_name="provision test session")
        dbops.try_session_lock(self.conn, self.token)

    def close(self) -> None:
        self.conn.close()


def remove_dead_copies(admin: Connection, databases: Sequence[str]) -> list[str]:
    """Drop pool copies whose session is gone (crashed runs). A live session's copies are left alone."""
    dropped = []
    rows = dbops.list_databases(admin)
    for database in databases:
        for name in rows:
            if not name.startswith(pool_prefix(database)):
                continue
            token = _token_of(name, database)
            if token is None:
                continue
            if dbops.try_session_lock(admin, token):
                # Nobody holds it: the owner is dead. Keep the lock while dropping, then let go.
                try:
                    dbops.drop_database(admin, name)
                    dropped.append(name)
                finally:
                    dbops.release_session_lock(admin, token)
    return dropped


def alive(conn: Connection) -> bool:
    """One round trip: a connection opened in advance may have been cut (a server restart)."""
    if conn.closed:
        return False
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.autocommit = False
        return True
    except psycopg2.Error:
        return False


class DatabasePool:
    """Private copies of `template` for one database, `size` of them kept ready, each with an
    open connection (a test then waits for neither the clone nor the login).

    acquire() takes a ready copy (milliseconds when the pool is warm); release() queues it for
    closing and dropping in the background, so a used copy is never handed out again.
    """

    def __init__(
        self, endpoint: Endpoint, database: str, template: str, token: int, size: int = 4, fillers: int = 2
    ) -> None:
        self.endpoint = endpoint
        self.database = database
        self.template = template
        self.token = token
        self.size = size
        self._ready: queue.Queue[tuple[str, Connection | None]] = queue.Queue()
        self._to_drop: queue.Queue[str] = queue.Queue()
        self._serial = 0
        self._pending = 0
        self._lock = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._fill, name=f"provision-pool-fill-{database}-{i}", daemon=True)
            for i in range(max(1, fillers))
        ]
        self._threads.append(threading.Thread(target=self._drain, name=f"provision-pool-drop-{database}", daemon=True))
        self._outstanding: set[str] = set()

    def start(self) -> DatabasePool:
        for thread in self._threads:
            thread.start()
        return self

    def _next_name(self) -> str | None:
        with self._lock:
            while not self._stopped and self._ready.qsize() + self._pending >= self.size:
                self._lock.wait(0.5)
            if self._stopped:
                return None
            self._serial += 1
            self._pending += 1
            return pool_name(self.database, self.token, self._serial)

    def _fill(self) -> None:
        try:
            with dbops.connection(self.endpoint, application_name="provision pool") as admin:
                while (name := self._next_name()) is not None:
                    try:
                        with dbops.server_errors(f"cloning {self.template} for a test"):
                            dbops.copy_database(admin, name, self.template, strategy=STRATEGY)
                        conn = dbops.connect(self.endpoint, name, application_name=TEST_APP)
                        conn.autocommit = False
                    finally:
                        with self._lock:
                            self._pending -= 1
                    self._ready.put((name, conn))
        except BaseException as exc:  # noqa: BLE001 - surfaced to the next acquire()
            self._error = exc
            self._ready.put((_STOP, None))

    def _drain(self) -> None:
        with (
            contextlib.suppress(ProvisionError),
            dbops.connection(self.endpoint, application_name="provision pool") as admin,
        ):
            while (name := self._to_drop.get()) != _STOP:
                with contextlib.suppress(ProvisionError):
                    dbops.drop_database(admin, name)

    def acquire(self, timeout: float = 60.0) -> tuple[str, Connection]:
        """A ready copy and an open connection to it (in a transaction until the test commits)."""
        try:
            name, conn = self._ready.get(timeout=timeout)
        except queue.Empty:
            raise ServerError(f"no copy of {self.database} became ready within {timeout:g} s") from None
        if name == _STOP:
            self._ready.put((_STOP, None))
            error = self._error
            raise ServerError(f"the pool for {self.database} failed: {error}") from error
        with self._lock:
            self._outstanding.add(name)
            self._lock.notify_all()
        if conn is None or not alive(conn):
            # Cut since it was opened (the server restarted): open another, or say why not.
            conn = dbops.connect(self.endpoint, name, application_name=TEST_APP)
            conn.autocommit = False
        return name, conn

    def release(self, name: str, conn: Connection | None = None, keep: bool = False) -> None:
        # Closed now, not by the drain: a backlog of copies waiting to be dropped must not hold
        # connections open (max_connections). Closing only sends a message; it does not wait.
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        with self._lock:
            self._outstanding.discard(name)
        if not keep:
            self._to_drop.put(name)

    def close(self, keep: bool = False) -> list[str]:
        """Stop refilling; drop every copy this pool made (unless keep). Returns the kept names."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        for thread in self._threads[:-1]:
            thread.join(timeout=30)
        leftovers = []
        while True:
            try:
                name, conn = self._ready.get_nowait()
            except queue.Empty:
                break
            if name != _STOP:
                if conn is not None:
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
                leftovers.append(name)
        kept = sorted(self._outstanding) if keep else []
        for name in leftovers + ([] if keep else sorted(self._outstanding)):
            self._to_drop.put(name)
        self._to_drop.put(_STOP)
        self._threads[-1].join(timeout=60)
        return kept
