"""A warm pool of private database copies cloned from a template, with connections opened in advance."""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections.abc import Sequence

import psycopg2

from . import dbops, recycling
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

    acquire() takes a ready copy (milliseconds when the pool is warm); release() hands it back.
    A used copy is never handed out again as it is. The server's WAL tells what the test
    changed in it (recycling.py): nothing, and it is renamed and reused; only rows of the
    template's tables and its sequences, and those are put back first; anything else (DDL, a
    temporary table, ...), and it is dropped in the background and a new one cloned.
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
        self._returned: queue.Queue[tuple[str, int | None]] = queue.Queue()
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
        self._admin: Connection | None = None
        # Recycling needs pg_walinspect (decided in start()) and a template without unlogged
        # relations (decided on the first copy: None until then).
        self._wal_readable = False
        self._template_logged: bool | None = None
        self._baselines: dict[str, recycling.Baseline] = {}
        # Kept copies for the fillers: unchanged ones, and ones with relations to put back first.
        self._reclaimed: list[tuple[str, tuple[tuple[int, int], ...]]] = []
        self._pristine: recycling.Pristine | None = None  # the template's rows, read from the first copy
        self.reused = 0  # copies handed out again as they came back
        self.restored = 0  # copies handed out again after their changed tables were put back

    def start(self) -> DatabasePool:
        self._admin = dbops.connect(self.endpoint, application_name="provision pool")
        self._wal_readable = recycling.available(self._admin)
        for thread in self._threads:
            thread.start()
        return self

    def _next_job(self) -> tuple[str, bool, tuple[tuple[int, int], ...]] | None:
        """The next copy to make ready: (name, True, relations to put back) for a kept one, else
        (a new name, False, ()). A kept copy is taken at once, even with the pool full: it is
        made already, and putting it back now keeps the fillers from cloning while it waits."""
        with self._lock:
            while not self._stopped and not self._reclaimed and self._ready.qsize() + self._pending >= self.size:
                self._lock.wait(0.5)
            if self._stopped:
                return None
            self._pending += 1
            if self._reclaimed:
                name, touched = self._reclaimed.pop()
                return name, True, touched
            return self._new_name(), False, ()

    def _new_name(self) -> str:
        with self._lock:
            self._serial += 1
            return pool_name(self.database, self.token, self._serial)

    def _fill(self) -> None:
        try:
            with dbops.connection(self.endpoint, application_name="provision pool") as admin:
                while (job := self._next_job()) is not None:
                    name, reclaimed, touched = job
                    try:
                        if touched:
                            if (conn := self._put_back(admin, name, touched)) is None:
                                continue
                            self._ready.put((name, conn))
                            continue
                        if not reclaimed:
                            with dbops.server_errors(f"cloning {self.template} for a test"):
                                dbops.copy_database(admin, name, self.template, strategy=STRATEGY)
                                if self._wal_readable and self._template_logged is not False:
                                    self._baselines[name] = recycling.baseline(admin, name)
                        conn = dbops.connect(self.endpoint, name, application_name=TEST_APP)
                        conn.autocommit = False
                        if self._wal_readable and self._template_logged is None:
                            self._check_template(conn)
                    finally:
                        with self._lock:
                            self._pending -= 1
                    self._ready.put((name, conn))
        except BaseException as exc:  # noqa: BLE001 - surfaced to the next acquire()
            self._error = exc
            self._ready.put((_STOP, None))

    def _check_template(self, conn: Connection) -> None:
        """Writes to unlogged tables leave no WAL, so a template that has one rules recycling out.
        Otherwise the first copy, still as cloned, shows what the template's tables hold."""
        with dbops.server_errors(f"looking at a copy of {self.template}"):
            unlogged = recycling.has_unlogged_relations(conn)
            conn.rollback()
        if not unlogged:
            self._pristine = recycling.capture(conn)
        self._template_logged = not unlogged

    def _put_back(self, admin: Connection, name: str, touched: tuple[tuple[int, int], ...]) -> Connection | None:
        """Reset what the last test changed in a kept copy, over the connection the next test
        then uses. If that cannot be done (DDL, say), the copy goes to the drain to be dropped."""
        pristine = self._pristine
        conn = None
        try:
            conn = dbops.connect(self.endpoint, name, application_name=TEST_APP)
            if pristine is not None and recycling.reset(conn, pristine, touched):
                self._baselines[name] = recycling.baseline(admin, name)
                with self._lock:
                    self.restored += 1
                return conn
        except (ProvisionError, psycopg2.Error):
            pass
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._returned.put((name, None))
        return None

    def _drain(self) -> None:
        admin = self._admin
        assert admin is not None, "start() opens it"
        with contextlib.suppress(ProvisionError), contextlib.closing(admin):
            while (item := self._returned.get())[0] != _STOP:
                name, backend_pid = item
                since = self._baselines.pop(name, None)
                if since is not None and self._template_logged and not self._stopped:
                    verdict = recycling.reclaim(admin, name, self._new_name(), since, backend_pid)
                    name = verdict.name
                    pristine = self._pristine
                    resettable = (
                        bool(verdict.touched) and pristine is not None and pristine.could_reset(verdict.touched)
                    )
                    if verdict.baseline is not None or resettable:
                        with self._lock:
                            if verdict.baseline is not None:
                                self._baselines[name] = verdict.baseline
                                self.reused += 1
                            self._reclaimed.append((name, verdict.touched))
                            self._lock.notify_all()
                        continue
                with contextlib.suppress(ProvisionError):
                    dbops.drop_database(admin, name)
            # Reclaimed copies no filler took (the fillers have stopped, so the list is final).
            for name, _ in self._reclaimed:
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
        backend_pid = None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                backend_pid = conn.info.backend_pid if not conn.closed else None
                conn.close()
        with self._lock:
            self._outstanding.discard(name)
        if keep:
            self._baselines.pop(name, None)
        else:
            self._returned.put((name, backend_pid))

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
            self._returned.put((name, None))
        self._returned.put((_STOP, None))
        self._threads[-1].join(timeout=60)
        return kept
