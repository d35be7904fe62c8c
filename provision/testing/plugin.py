"""The pytest plugin: per-test private database copies from a warm pool; a thin adapter over the library.

Inert until one of its fixtures is used. Fixtures:

- ``provision_session`` (session): the test server is up and every configured database has a
  template built from its current SQL (rebuilt only when the SQL changes).
- ``provision_db``: a private copy of the first configured database (``chatbi`` by default),
  with ``.name``, ``.dsn`` and an open psycopg2 connection ``.conn``.
- ``provision_db_factory``: ``provision_db_factory("chatbi_demo")`` does the same for any
  configured database.
- ``provision_tx`` / ``provision_tx_factory``: transactional isolation for large or read-mostly
  data: one copy per database and xdist worker, each test's work rolled back at teardown; the
  connection's commit() and rollback() work on savepoints (see provision.testing.transactions).

Options (or ini keys): ``--provision-config`` / ``provision_config``, ``--provision-keep`` /
``provision_keep``, ``--provision-no-recycle`` / ``provision_recycle`` (true by default: copies
a test left unchanged, or whose rows can be put back, are reused; false drops every used copy),
``provision_pool_size``. The terminal summary ends with one line saying what became of the copies.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    from ..config import Config
    from ..postgres.dbops import Connection
    from ..results import TemplateSet
    from .pool import DatabasePool, SessionLock, Tally
    from .transactions import TransactionalConnection


_KEPT = pytest.StashKey[list[str]]()
# What became of the copies, by configured database: this process's, then (under xdist, in the
# controller) every worker's, which arrive as plain dicts in workeroutput under this key.
_TALLIES = pytest.StashKey[dict[str, "Tally"]]()
_WORKER_KEY = "provision_tallies"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("provision", "provision: per-test PostgreSQL databases")
    group.addoption("--provision-config", metavar="FILE", help="provision YAML config for the test databases.")
    group.addoption(
        "--provision-keep", action="store_true", default=None, help="Keep the per-test databases for debugging."
    )
    group.addoption(
        "--provision-no-recycle",
        action="store_false",
        dest="provision_recycle",
        default=None,
        help="Drop every used copy instead of reusing those a test left unchanged or whose rows can be put back.",
    )
    parser.addini("provision_config", "provision YAML config for the test databases.", default="")
    parser.addini("provision_keep", "Keep the per-test databases (true/false).", type="bool", default=False)
    parser.addini("provision_pool_size", "Ready copies kept per database.", default="4")
    parser.addini(
        "provision_recycle",
        "Reuse copies a test left unchanged or whose rows can be put back (true/false).",
        type="bool",
        default=True,
    )


@dataclass
class ProvisionedDatabase:
    """A private copy of a configured database, for one test."""

    name: str
    dsn: str
    conn: Connection = field(repr=False)


@dataclass
class ProvisionSession:
    """The session's server, templates and pools."""

    config: Config
    templates: TemplateSet
    keep: bool
    pool_size: int
    session_lock: SessionLock
    recycle: bool = True
    pools: dict[str, DatabasePool] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # copy name -> configured database

    def pool(self, database: str) -> DatabasePool:
        from .pool import DatabasePool

        if database not in self.pools:
            if database not in self.templates.templates:
                self.config.database(database)  # raises a clear error for unknown names
            self.pools[database] = DatabasePool(
                self.templates.endpoint,
                database,
                self.templates.templates[database],
                self.session_lock.token,
                size=self.pool_size,
                recycle=self.recycle,
            ).start()
        return self.pools[database]

    def acquire(self, database: str) -> ProvisionedDatabase:
        name, conn = self.pool(database).acquire()
        self.owners[name] = database
        return ProvisionedDatabase(name, self.templates.endpoint.dsn(name, show_password=True), conn)

    def acquire_transactional(self, database: str) -> ProvisionedDatabase:
        """A copy for a worker's transactional tests, with a connection that never really commits."""
        from ..postgres import dbops
        from .transactions import TransactionalConnection

        name, plain = self.pool(database).acquire()
        plain.close()
        self.owners[name] = database
        ep = self.templates.endpoint
        conn = dbops.connect(ep, name, application_name="pytest", connection_factory=TransactionalConnection)
        return ProvisionedDatabase(name, ep.dsn(name, show_password=True), conn)

    def release(self, db: ProvisionedDatabase) -> None:
        # The pool closes the connection and drops the copy in the background.
        self.pools[self.owners.pop(db.name)].release(db.name, db.conn, keep=self.keep)
        if self.keep:
            self.kept.append(db.name)

    def close(self) -> dict[str, Tally]:
        """Close every pool; what became of each database's copies."""
        for pool in self.pools.values():
            self.kept += pool.close(keep=self.keep)
        self.session_lock.close()
        return {database: pool.tally() for database, pool in self.pools.items()}


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"provision_{name}")
    return value if value is not None else config.getini(f"provision_{name}")


@pytest.fixture(scope="session")
def provision_session(pytestconfig: pytest.Config) -> Iterator[ProvisionSession]:
    from ..config import load_config
    from . import templates as templates_lib
    from .pool import SessionLock

    path = pytestconfig.getoption("--provision-config")
    base = pytestconfig.invocation_params.dir
    if not path:
        path = pytestconfig.getini("provision_config") or None
        base = pytestconfig.rootpath  # ini paths are relative to the project
    if path and not os.path.isabs(path):
        path = str(base / path)
    cfg = templates_lib.config_for_tests(load_config(path))
    templates = templates_lib.ensure_templates(cfg)
    session = ProvisionSession(
        cfg,
        templates,
        keep=bool(_option(pytestconfig, "keep")),
        pool_size=int(pytestconfig.getini("provision_pool_size")),
        session_lock=SessionLock(templates.endpoint),
        recycle=bool(_option(pytestconfig, "recycle")),
    )
    try:
        yield session
    finally:
        tallies = session.close()
        pytestconfig.stash[_KEPT] = sorted(set(session.kept))
        _add_tallies(pytestconfig, tallies)
        workeroutput = getattr(pytestconfig, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller writes the summary
            workeroutput[_WORKER_KEY] = {db: dataclasses.asdict(tally) for db, tally in tallies.items()}


def _add_tallies(config: pytest.Config, tallies: dict[str, Tally]) -> None:
    found = config.stash.setdefault(_TALLIES, {})
    for database, tally in tallies.items():
        found[database] = found[database] + tally if database in found else tally


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist's controller, as each worker ends: add up what its pools did."""
    from .pool import Tally

    sent = getattr(node, "workeroutput", {}).get(_WORKER_KEY, {})
    _add_tallies(node.config, {database: Tally(**fields) for database, fields in sent.items()})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(_KEPT, [])
    if kept:
        terminalreporter.write_line(f"provision: kept {len(kept)} database(s) for debugging: {', '.join(kept)}")
    tallies = config.stash.get(_TALLIES, {})
    if tallies and not hasattr(config, "workeroutput"):
        from .pool import summary

        terminalreporter.write_line(summary(tallies))


@pytest.fixture
def provision_db_factory(provision_session: ProvisionSession) -> Iterator[Callable[[str], ProvisionedDatabase]]:
    taken: list[ProvisionedDatabase] = []

    def make(database: str) -> ProvisionedDatabase:
        db = provision_session.acquire(database)
        taken.append(db)
        return db

    yield make
    for db in taken:
        provision_session.release(db)


@pytest.fixture
def provision_db(
    provision_db_factory: Callable[[str], ProvisionedDatabase], provision_session: ProvisionSession
) -> ProvisionedDatabase:
    return provision_db_factory(provision_session.config.databases[0].name)


class TransactionalCopies:
    """This session's copies for transactional tests: one per database, so one per xdist worker."""

    def __init__(self, session: ProvisionSession) -> None:
        self.session = session
        self.copies: dict[str, ProvisionedDatabase] = {}

    def get(self, database: str) -> ProvisionedDatabase:
        if database not in self.copies:
            db = self.session.acquire_transactional(database)
            cast("TransactionalConnection", db.conn).isolate()
            self.copies[database] = db
        return self.copies[database]

    def reset(self, database: str) -> None:
        db = self.copies[database]
        if not cast("TransactionalConnection", db.conn).unwind():
            # The test committed for real (COMMIT as SQL text): this copy is dirty; the next gets another.
            del self.copies[database]
            self.session.release(db)

    def close(self) -> None:
        for db in self.copies.values():
            self.session.release(db)


@pytest.fixture(scope="session")
def _provision_tx_copies(provision_session: ProvisionSession) -> Iterator[TransactionalCopies]:
    copies = TransactionalCopies(provision_session)
    yield copies
    copies.close()


@pytest.fixture
def provision_tx_factory(_provision_tx_copies: TransactionalCopies) -> Iterator[Callable[[str], ProvisionedDatabase]]:
    used: set[str] = set()

    def make(database: str) -> ProvisionedDatabase:
        used.add(database)
        return _provision_tx_copies.get(database)

    yield make
    for database in used:
        _provision_tx_copies.reset(database)


@pytest.fixture
def provision_tx(
    _provision_tx_copies: TransactionalCopies, provision_session: ProvisionSession
) -> Iterator[ProvisionedDatabase]:
    database = provision_session.config.databases[0].name
    yield _provision_tx_copies.get(database)
    _provision_tx_copies.reset(database)
