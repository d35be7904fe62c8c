"""A warm pool of private database copies cloned from a template, with connections opened in advance."""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg2

from ..endpoint import Endpoint
from ..errors import ProvisionError, ServerError
from ..names import derived_name, pool_name, pool_prefix
from ..postgres import dbops
from ..postgres.dbops import Connection
from . import recycling

_STOP = ""
# Pool copies are cloned file by file. Recycling requires it (recycling.COPY_STRATEGY says why;
# _clone() checks it), and on the test server (data in memory, fsync off) it is also the
# cheapest way: about 10 ms against 15 ms with WAL_LOG for ChatBI's template.
STRATEGY = "FILE_COPY"
TEST_APP = "pytest"
# Why a pool does not recycle when its session turned recycling off.
SWITCHED_OFF = "provision_recycle = false"


def new_session_token() -> int:
    return secrets.randbits(31)


def session_copy_name(database: str, token: int) -> str:
    """The one copy a session keeps for its whole length (provision_env points the app at it).
    Named like the pool's, so the next session drops it when this one is gone."""
    return derived_name(database, "pool", f"{token:08x}_session")


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


def drop_copy(admin: Connection, endpoint: Endpoint, name: str) -> None:
    """Drop a pool copy nobody owns any more. A test that ended with PREPARE TRANSACTION left a
    transaction that holds the copy (DROP DATABASE refuses it) and outlives every session: it
    is rolled back first, from inside the copy, the only place ROLLBACK PREPARED works."""
    with dbops.server_errors(f"dropping database {name}"):
        prepared = dbops.execute(admin, "SELECT gid FROM pg_prepared_xacts WHERE database = %s", [name])
        if prepared:
            with dbops.connection(endpoint, name, application_name="provision pool") as conn:
                for (gid,) in prepared:
                    # Gone meanwhile (its owner finished it) is as good as rolled back here.
                    with contextlib.suppress(psycopg2.errors.UndefinedObject):
                        dbops.execute(conn, "ROLLBACK PREPARED %s", [gid])
    dbops.drop_database(admin, name)


def remove_dead_copies(admin: Connection, databases: Sequence[str], endpoint: Endpoint) -> list[str]:
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
                    drop_copy(admin, endpoint, name)
                    dropped.append(name)
                finally:
                    dbops.release_session_lock(admin, token)
    return dropped


@dataclass(frozen=True)
class Tally:
    """What became of the copies tests gave back to one pool (or several, added up), and why
    recycling did less than it could: `off` (it did not run at all), `no_reset` (changed copies
    were dropped rather than put back)."""

    reused: int = 0
    reset: int = 0
    dropped: int = 0
    off: str | None = None
    no_reset: str | None = None

    @property
    def copies(self) -> int:
        return self.reused + self.reset + self.dropped

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.reused + other.reused,
            self.reset + other.reset,
            self.dropped + other.dropped,
            self.off or other.off,
            self.no_reset or other.no_reset,
        )


def summary(tallies: Mapping[str, Tally]) -> str:
    """One line for the end of a test run: `tallies` by configured database."""
    total = sum(tallies.values(), Tally())
    line = f"provision: {total.copies} copies: {total.reused} reused, {total.reset} reset, {total.dropped} dropped"
    notes = []
    offs = {tally.off for tally in tallies.values()}
    if len(offs) == 1 and None not in offs:
        notes.append(f"recycling off: {next(iter(offs))}")
    else:
        notes += [f"recycling off for {db}: {tally.off}" for db, tally in sorted(tallies.items()) if tally.off]
    notes += [
        f"changed copies of {db} dropped, not reset: {tally.no_reset}"
        for db, tally in sorted(tallies.items())
        if tally.no_reset and not tally.off
    ]
    return line + (f" ({'; '.join(notes)})" if notes else "")


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
    A used copy is never handed out again as it is. Unless `recycle` is False, the server's WAL
    tells what the test changed in it (recycling.py): nothing, and it is renamed and reused;
    only rows of the template's tables and its sequences, and those are put back first;
    anything else (DDL, a temporary table, ...), and it is dropped in the background and a new
    one cloned. tally() says what became of the copies given back.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        database: str,
        template: str,
        token: int,
        size: int = 4,
        fillers: int = 2,
        recycle: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.database = database
        self.template = template
        self.token = token
        self.size = size
        self._ready: queue.Queue[tuple[str, Connection | None]] = queue.Queue()
        # Copies to drop or judge, with the test's server process, and whether a test used the
        # copy and its fate is still to be counted.
        self._returned: queue.Queue[tuple[str, tuple[int, ...], bool]] = queue.Queue()
        self._serial = 0
        self._pending = 0
        # Guards every field below that more than one thread touches (fillers, the drain, and
        # the test's thread in acquire() and release()).
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
        # Why recycling does not run for this pool (None: it does): switched off, no
        # pg_walinspect (decided in start()), or a template with unlogged relations (decided on
        # the first copy, while _template_checked is False).
        self._off: str | None = None if recycle else SWITCHED_OFF
        self._template_checked = False
        self._baselines: dict[str, recycling.Baseline] = {}
        # Kept copies for the fillers: unchanged ones, and ones with relations to put back first.
        self._reclaimed: list[tuple[str, tuple[tuple[int, int], ...]]] = []
        # The template's rows, read from the first copy; else why changed copies are dropped.
        self._pristine: recycling.Pristine | None = None
        self._no_reset: str | None = None
        self._counts = {"reuse": 0, "reset": 0, "drop": 0}
        self._unsettled = 0  # copies given back whose fate is not counted yet

    def start(self) -> DatabasePool:
        self._admin = dbops.connect(self.endpoint, application_name="provision pool")
        if self._off is None:
            self._off = recycling.unavailable(self._admin)
        for thread in self._threads:
            thread.start()
        return self

    def tally(self) -> Tally:
        with self._lock:
            counts = self._counts
            return Tally(counts["reuse"], counts["reset"], counts["drop"], self._off, self._no_reset)

    def _count(self, kind: recycling.Kind) -> None:
        with self._lock:
            self._counts[kind] += 1
            self._unsettled -= 1
            self._lock.notify_all()

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

    def _clone(self, admin: Connection, name: str) -> None:
        """Make a new copy; with recycling on, remember where its WAL starts."""
        with self._lock:
            recycle = self._off is None
        if recycle:
            recycling.check_copy_strategy(STRATEGY)
        with dbops.server_errors(f"cloning {self.template} for a test"):
            # The strategy is passed explicitly: dbops would otherwise choose by size.
            dbops.copy_database(admin, name, self.template, strategy=STRATEGY)
            if recycle:
                since = recycling.baseline(admin, name)
                with self._lock:
                    self._baselines[name] = since

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
                            self._clone(admin, name)
                        conn = dbops.connect(self.endpoint, name, application_name=TEST_APP)
                        conn.autocommit = False
                        with self._lock:
                            check = self._off is None and not self._template_checked
                        if check:
                            self._check_template(conn)
                    finally:
                        with self._lock:
                            self._pending -= 1
                    self._ready.put((name, conn))
        except BaseException as exc:  # noqa: BLE001 - surfaced to the next acquire()
            with self._lock:
                self._error = exc
                self._lock.notify_all()
            self._ready.put((_STOP, None))

    def _check_template(self, conn: Connection) -> None:
        """Writes to unlogged tables leave no WAL, so a template that has one rules recycling out.
        Otherwise the first copy, still as cloned, shows what the template's tables hold."""
        with dbops.server_errors(f"looking at a copy of {self.template}"):
            unlogged = recycling.has_unlogged_relations(conn)
            conn.rollback()
        captured = None if unlogged else recycling.capture(conn)
        with self._lock:
            if unlogged:
                self._off = "its template has an unlogged table (writes to it leave no WAL)"
            elif isinstance(captured, recycling.Pristine):
                self._pristine = captured
            else:
                self._no_reset = captured
            self._template_checked = True

    def _put_back(self, admin: Connection, name: str, touched: tuple[tuple[int, int], ...]) -> Connection | None:
        """Reset what the last test changed in a kept copy, over the connection the next test
        then uses. If that cannot be done (DDL, say), the copy goes to the drain to be dropped."""
        with self._lock:
            pristine = self._pristine
        conn = None
        try:
            conn = dbops.connect(self.endpoint, name, application_name=TEST_APP)
            if pristine is not None and recycling.reset(conn, pristine, touched):
                since = recycling.baseline(admin, name)
                with self._lock:
                    self._baselines[name] = since
                self._count("reset")
                return conn
        except (ProvisionError, psycopg2.Error):
            pass
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._count("drop")
        self._returned.put((name, (), False))
        return None

    def _judge(self, admin: Connection, name: str, backend_pids: tuple[int, ...]) -> recycling.Outcome:
        """What becomes of a copy a test gave back (see recycling.Outcome)."""
        with self._lock:
            since = self._baselines.pop(name, None)
            off, stopped = self._off, self._stopped
            pristine, no_reset = self._pristine, self._no_reset
        if off is not None:
            return recycling.Outcome.drop(name, f"recycling off: {off}")
        if since is None:
            return recycling.Outcome.drop(name, "no baseline was taken")
        if stopped:
            return recycling.Outcome.drop(name, "the session is ending")
        outcome = recycling.reclaim(admin, name, self._new_name(), since, backend_pids)
        if outcome.kind == "reset":
            if pristine is None:
                return recycling.Outcome.drop(outcome.name, no_reset or "the template's rows were not read")
            if not pristine.could_reset(outcome.touched):
                return recycling.Outcome.drop(outcome.name, "a catalog changed (DDL and the like)")
        return outcome

    def _drain(self) -> None:
        admin = self._admin
        assert admin is not None, "start() opens it"
        with contextlib.suppress(ProvisionError), contextlib.closing(admin):
            while (item := self._returned.get())[0] != _STOP:
                name, backend_pids, used = item
                outcome = self._judge(admin, name, backend_pids)
                if outcome.kind == "drop":
                    with contextlib.suppress(ProvisionError):
                        drop_copy(admin, self.endpoint, outcome.name)
                    if used:
                        self._count("drop")
                    continue
                with self._lock:
                    if outcome.baseline is not None:
                        self._baselines[outcome.name] = outcome.baseline
                    self._reclaimed.append((outcome.name, outcome.touched))
                    self._lock.notify_all()
                if outcome.kind == "reuse":
                    self._count("reuse")
            # Reclaimed copies no filler took (the fillers have stopped, so the list is final).
            with self._lock:
                unclaimed = [name for name, _ in self._reclaimed]
                self._reclaimed.clear()
            for name in unclaimed:
                with contextlib.suppress(ProvisionError):
                    drop_copy(admin, self.endpoint, name)

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

    def release(
        self, name: str, conn: Connection | None = None, keep: bool = False, closed_pids: Sequence[int] = ()
    ) -> None:
        """Take back a copy. `closed_pids`: the server processes of other connections the caller
        opened to it and has closed (they may still be exiting: not a session left on the copy)."""
        # Closed now, not by the drain: a backlog of copies waiting to be dropped must not hold
        # connections open (max_connections). Closing only sends a message; it does not wait.
        backend_pids = tuple(closed_pids)
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                if not conn.closed:
                    backend_pids += (conn.info.backend_pid,)
                conn.close()
        with self._lock:
            self._outstanding.discard(name)
            if keep:
                self._baselines.pop(name, None)
            else:
                self._unsettled += 1
        if not keep:
            self._returned.put((name, backend_pids, True))

    def close(self, keep: bool = False) -> list[str]:
        """Stop refilling; drop every copy this pool made (unless keep). Returns the kept names.

        Copies given back are judged, and put back, before the fillers stop (a few milliseconds
        each), so tally() counts each one's fate and not the moment the session ended."""
        deadline = time.monotonic() + 30
        with self._lock:
            while (
                self._unsettled > 0
                and self._error is None
                and self._threads[-1].is_alive()
                and time.monotonic() < deadline
            ):
                self._lock.wait(0.5)
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
        with self._lock:
            outstanding = sorted(self._outstanding)
            if not keep:
                self._unsettled += len(outstanding)
        kept = outstanding if keep else []
        for name in leftovers:
            self._returned.put((name, (), False))
        for name in [] if keep else outstanding:  # taken by a test that never gave it back
            self._returned.put((name, (), True))
        self._returned.put((_STOP, (), False))
        self._threads[-1].join(timeout=60)
        return kept
