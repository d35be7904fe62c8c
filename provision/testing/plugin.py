"""The pytest plugin: per-test private database copies from a warm pool; a thin adapter over the library.

Inert until one of its fixtures is used, or `provision_env` is set. Fixtures:

- ``provision_session`` (session): the test server is up and every configured database has a
  template built from its current SQL (rebuilt only when the SQL changes).
- ``provision_db``: a private copy of the first configured database (``chatbi`` by default),
  with ``.name``, ``.url`` (``postgresql://user:password@host:port/name``, for SQLAlchemy 2,
  psycopg 3 and asyncpg as it is), ``.params`` (host, port, user, password, dbname) and an
  open psycopg2 connection ``.conn``; ``.connection("psycopg")`` opens a psycopg 3 one.
- ``provision_db_factory``: ``provision_db_factory("chatbi_demo")`` does the same for any
  configured database.
- ``provision_tx`` / ``provision_tx_factory``: transactional isolation for large or read-mostly
  data: one copy per database and xdist worker, each test's work rolled back at teardown; the
  connection's commit() and rollback() work on savepoints (see provision.testing.transactions),
  with psycopg2 (``.conn``) or psycopg 3 (``.connection("psycopg")``).

Options (or ini keys): ``--provision-config`` / ``provision_config``, ``--provision-keep`` and
``--provision-keep=failed`` / ``provision_keep`` (drop, failed or all), ``--provision-no-recycle`` /
``provision_recycle`` (true by default: copies a test left unchanged, or whose rows can be put
back, are reused; false drops every used copy), ``provision_pool_size``, ``provision_env`` and
``provision_env_database`` (environment variables pointed at a session-wide copy before any
conftest or test module is imported), ``--provision-down`` (remove the test server at the end).
The terminal summary ends with one line saying what became of the copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

if TYPE_CHECKING:
    from ..config import Config
    from ..endpoint import Endpoint
    from ..postgres.dbops import Connection
    from ..results import TemplateSet
    from .pool import DatabasePool, SessionLock, Tally

KeepMode = Literal["drop", "failed", "all"]
# Drivers ProvisionedDatabase.connection() opens itself; any other reaches the copy through .url.
DRIVERS = ("psycopg2", "psycopg")

_SESSION = pytest.StashKey["ProvisionSession"]()
_ENV_SAVED = pytest.StashKey[dict[str, str | None]]()
# Copies kept for debugging, as (name, URL with the password masked): this process's, then
# (under xdist, in the controller) every worker's.
_KEPT = pytest.StashKey[list[tuple[str, str]]]()
# What became of the copies, by configured database: this process's, then (under xdist, in the
# controller) every worker's, which arrive as plain dicts in workeroutput under this key.
_TALLIES = pytest.StashKey[dict[str, "Tally"]]()
_DOWN = pytest.StashKey[str]()
_WORKER_KEY = "provision_tallies"
_WORKER_KEPT = "provision_kept"
# On a test item: the copies its provision_db fixtures hold, and whether its setup or call failed.
_HELD = pytest.StashKey[list["ProvisionedDatabase"]]()
_FAILED = pytest.StashKey[bool]()
# On a Django test item (provision_django_copies): its copy, and the database name Django had before.
_DJANGO = pytest.StashKey[tuple["ProvisionedDatabase", str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("provision", "provision: per-test PostgreSQL databases")
    group.addoption("--provision-config", metavar="FILE", help="provision YAML config for the test databases.")
    group.addoption(
        "--provision-keep",
        action="store_const",
        const="all",
        dest="provision_keep",
        default=None,
        help="Keep every per-test database for debugging.",
    )
    # An option of its own, not a value of --provision-keep: an optional value would swallow the
    # path in `pytest --provision-keep tests/`.
    group.addoption(
        "--provision-keep=failed",
        action="store_const",
        const="failed",
        dest="provision_keep",
        help="Keep the databases of failed tests (their URL is in the test's report); drop the rest.",
    )
    group.addoption(
        "--provision-no-recycle",
        action="store_false",
        dest="provision_recycle",
        default=None,
        help="Drop every used copy instead of reusing those a test left unchanged or whose rows can be put back.",
    )
    group.addoption(
        "--provision-down",
        action="store_true",
        default=False,
        help="Remove the test server's container at the end of the run (it is otherwise reused by the next run).",
    )
    parser.addini("provision_config", "provision YAML config for the test databases.", default="")
    parser.addini(
        "provision_keep",
        "Which per-test databases to keep for debugging: drop (none), failed, or all (true/false also work).",
        default="drop",
    )
    parser.addini("provision_pool_size", "Ready copies kept per database.", default="4")
    parser.addini(
        "provision_recycle",
        "Reuse copies a test left unchanged or whose rows can be put back (true/false).",
        type="bool",
        default=True,
    )
    parser.addini(
        "provision_env",
        "NAME=value pairs set before any test module is imported, pointing at a session-wide copy; "
        "placeholders {host} {port} {user} {password} {database} {url}.",
        type="args",
        default=[],
    )
    parser.addini(
        "provision_django_copies",
        "pytest-django: each test marked django_db gets its own copy, Django's default connection pointed at it.",
        type="bool",
        default=False,
    )
    parser.addini(
        "provision_env_database",
        "The configured database provision_env's copy is made of (default: the first).",
        default="",
    )


class ProvisionedDatabase:
    """A private copy of a configured database: for one test (provision_db), or for one xdist
    worker's transactional tests (provision_tx)."""

    def __init__(
        self, name: str, endpoint: Endpoint, opener: Callable[[str], Any], conn: Connection | None = None
    ) -> None:
        self.name = name
        self._endpoint = endpoint
        self._opener = opener
        self._conns: dict[str, Any] = {} if conn is None else {"psycopg2": conn}

    def __repr__(self) -> str:  # no password: reprs end up in tracebacks and logs
        return f"ProvisionedDatabase(name={self.name!r}, url={self.masked_url!r})"

    @property
    def url(self) -> str:
        """``postgresql://user:password@host:port/name``: SQLAlchemy 2 (psycopg2 by default, or
        ``postgresql+psycopg://`` for psycopg 3), psycopg 3 and asyncpg take it as it is."""
        return self._endpoint.dsn(self.name, show_password=True)

    @property
    def masked_url(self) -> str:
        return self._endpoint.dsn(self.name)

    @property
    def dsn(self) -> str:
        """The same as url (the name earlier releases used)."""
        return self.url

    @property
    def params(self) -> dict[str, Any]:
        """Keyword arguments for psycopg2.connect() and psycopg.connect() (asyncpg calls dbname `database`)."""
        ep = self._endpoint
        return {"host": ep.host, "port": ep.port, "user": ep.user, "password": ep.password, "dbname": self.name}

    @property
    def conn(self) -> Connection:
        """The psycopg2 connection: opened in advance for provision_db, on first use for provision_tx."""
        return cast("Connection", self.connection("psycopg2"))

    def connection(self, driver: str = "psycopg2") -> Any:
        """This copy's connection through `driver` ("psycopg2" or "psycopg"), opened on first use and
        closed by the fixture. Under provision_tx it is the worker's transactional connection."""
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {', '.join(DRIVERS)}, got {driver!r}; others can use .url")
        if driver not in self._conns:
            self._conns[driver] = self._opener(driver)
        return self._conns[driver]

    def _opened(self) -> dict[str, Any]:
        return dict(self._conns)

    def _close_others(self) -> tuple[int, ...]:
        """Close the connections opened through drivers other than psycopg2; their server processes."""
        pids = []
        for driver, conn in list(self._conns.items()):
            if driver == "psycopg2":
                continue
            with contextlib.suppress(Exception):  # a connection the test broke is as good as closed
                if not conn.closed:
                    pids.append(int(conn.info.backend_pid))
                conn.close()
            del self._conns[driver]
        return tuple(pids)


def _psycopg_connect(params: dict[str, Any], factory: Any = None, **kwargs: Any) -> Any:
    import psycopg

    cls = factory or psycopg.Connection
    return cls.connect(**params, application_name="pytest", connect_timeout=5, **kwargs)


@dataclass
class ProvisionSession:
    """The session's server, templates and pools."""

    config: Config
    templates: TemplateSet
    keep: KeepMode
    pool_size: int
    session_lock: SessionLock
    recycle: bool = True
    pools: dict[str, DatabasePool] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # copy name -> configured database
    session_copy: str | None = None

    @property
    def endpoint(self) -> Endpoint:
        return self.templates.endpoint

    def pool(self, database: str) -> DatabasePool:
        from .pool import DatabasePool

        if database not in self.pools:
            self._template(database)
            self.pools[database] = DatabasePool(
                self.endpoint,
                database,
                self.templates.templates[database],
                self.session_lock.token,
                size=self.pool_size,
                recycle=self.recycle,
            ).start()
        return self.pools[database]

    def _template(self, database: str) -> str:
        if database not in self.templates.templates:
            self.config.database(database)  # raises a clear error for unknown names
        return self.templates.templates[database]

    def acquire(self, database: str) -> ProvisionedDatabase:
        name, conn = self.pool(database).acquire()
        self.owners[name] = database
        params = {**_params(self.endpoint), "dbname": name}

        def open_plain(driver: str) -> Any:
            return _psycopg_connect(params)  # psycopg2's was opened in advance

        return ProvisionedDatabase(name, self.endpoint, open_plain, conn)

    def acquire_transactional(self, database: str) -> ProvisionedDatabase:
        """A copy for a worker's transactional tests: each driver's connection never really commits."""
        from ..postgres import dbops
        from .pool import TEST_APP
        from .transactions import TransactionalConnection

        name, plain = self.pool(database).acquire()
        plain.close()
        self.owners[name] = database
        ep = self.endpoint
        params = {**_params(ep), "dbname": name}

        def open_transactional(driver: str) -> Any:
            conn: Any
            if driver == "psycopg2":
                conn = dbops.connect(ep, name, application_name=TEST_APP, connection_factory=TransactionalConnection)
            else:
                from .psycopg_tx import TransactionalConnection as PsycopgTransactional

                # Server-side prepared statements outlive the rollbacks; planned before a test's
                # rolled-back DDL they could fail the next test ("cached plan must not change").
                conn = _psycopg_connect(params, PsycopgTransactional, prepare_threshold=None)
            conn.isolate()
            return conn

        return ProvisionedDatabase(name, ep, open_transactional)

    def release(self, db: ProvisionedDatabase, failed: bool = False) -> None:
        """Give a copy back: dropped or recycled, or kept (provision_keep = all, or failed and the test failed)."""
        keep = self.keep == "all" or (self.keep == "failed" and failed)
        pids = db._close_others()
        # The pool closes the psycopg2 connection and judges the copy in the background.
        self.pools[self.owners.pop(db.name)].release(db.name, db._opened().get("psycopg2"), keep=keep, closed_pids=pids)
        if keep:
            self.kept.append(db.name)

    def make_session_copy(self, database: str) -> str:
        """One copy of `database` for the whole session (provision_env points at it)."""
        from ..postgres import dbops
        from .pool import session_copy_name

        template = self._template(database)
        name = session_copy_name(database, self.session_lock.token)
        with dbops.connection(self.endpoint, application_name="provision pool") as admin:
            with dbops.server_errors(f"cloning {template} for the test session"):
                dbops.copy_database(admin, name, template)
        self.session_copy = name
        return name

    def close(self) -> dict[str, Tally]:
        """Close every pool and drop the session copy; what became of each database's copies."""
        from ..errors import ProvisionError
        from ..postgres import dbops
        from .pool import drop_copy

        for pool in self.pools.values():
            self.kept += pool.close(keep=self.keep == "all")
        if self.session_copy is not None:
            if self.keep == "all":
                self.kept.append(self.session_copy)
            else:
                # WITH (FORCE): the app's engine may still hold connections to it.
                with contextlib.suppress(ProvisionError), dbops.connection(self.endpoint) as admin:
                    drop_copy(admin, self.endpoint, self.session_copy)
        self.session_lock.close()
        return {database: pool.tally() for database, pool in self.pools.items()}


def _params(ep: Endpoint) -> dict[str, Any]:
    return {"host": ep.host, "port": ep.port, "user": ep.user, "password": ep.password}


def _cli_option(config: pytest.Config, dest: str) -> Any:
    """A command-line option, also before pytest has parsed the whole command line (early hooks)."""
    value = getattr(config.option, dest, None)
    if value is None:
        value = getattr(getattr(config, "known_args_namespace", None), dest, None)
    return value


def _keep_mode(config: pytest.Config) -> KeepMode:
    value = _cli_option(config, "provision_keep")
    if value is None:
        value = config.getini("provision_keep")
    text = str(value).strip().lower()
    if text in ("all", "true", "yes", "on", "1"):
        return "all"
    if text in ("drop", "false", "no", "off", "0", ""):
        return "drop"
    if text == "failed":
        return "failed"
    raise pytest.UsageError(f"provision_keep must be drop, failed or all, got {value!r}")


def _recycle(config: pytest.Config) -> bool:
    value = _cli_option(config, "provision_recycle")
    return bool(value if value is not None else config.getini("provision_recycle"))


def _test_config(config: pytest.Config) -> Config:
    from ..config import load_config
    from . import templates as templates_lib

    path = _cli_option(config, "provision_config")
    base = config.invocation_params.dir
    if not path:
        path = config.getini("provision_config") or None
        base = config.rootpath  # ini paths are relative to the project
    if path and not os.path.isabs(path):
        path = str(base / path)
    return templates_lib.config_for_tests(load_config(path))


def _session(config: pytest.Config) -> ProvisionSession:
    """This process's provision session, started on first use; pytest_sessionfinish closes it."""
    found = config.stash.get(_SESSION, None)
    if found is not None:
        return found
    from . import templates as templates_lib
    from .pool import SessionLock

    cfg = _test_config(config)
    keep = _keep_mode(config)
    # A session that keeps everything also leaves the copies earlier sessions kept.
    templates = templates_lib.ensure_templates(cfg, remove_dead=keep != "all")
    session = ProvisionSession(
        cfg,
        templates,
        keep=keep,
        pool_size=int(config.getini("provision_pool_size")),
        session_lock=SessionLock(templates.endpoint),
        recycle=_recycle(config),
    )
    config.stash[_SESSION] = session
    return session


def pytest_configure(config: pytest.Config) -> None:
    _keep_mode(config)  # a typo in provision_keep stops the run before any test


def _env_pairs(config: pytest.Config) -> list[tuple[str, str]]:
    from ..config import COPY_PLACEHOLDERS, fill_placeholders

    pairs = []
    for item in config.getini("provision_env"):
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise pytest.UsageError(f"provision_env: {item!r} is not NAME=value")
        try:
            fill_placeholders(value, dict.fromkeys(COPY_PLACEHOLDERS, ""))
        except KeyError as exc:
            placeholders = " ".join("{" + p + "}" for p in COPY_PLACEHOLDERS)
            raise pytest.UsageError(
                f"provision_env: unknown placeholder {{{exc.args[0]}}} in {item!r} (placeholders: {placeholders})"
            ) from None
        pairs.append((name, value))
    return pairs


# First: pytest-django imports the app's settings in this same hook.
@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """provision_env: before any conftest or test module is imported (an app that builds its engine
    at import reads these), point the variables at a copy made for this session (each xdist worker
    has its own)."""
    pairs = _env_pairs(early_config)
    known = getattr(early_config, "known_args_namespace", None)
    if not pairs or getattr(known, "help", False) or getattr(known, "version", False):
        return
    from ..config import fill_placeholders
    from ..errors import ProvisionError

    try:
        session = _session(early_config)
        name = session.make_session_copy(_env_database(early_config, session))
    except ProvisionError as exc:
        raise pytest.UsageError(f"provision_env: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")) from exc
    ep = session.endpoint
    values = {
        "host": ep.host,
        "port": str(ep.port),
        "user": ep.user,
        "password": ep.password,
        "database": name,
        "url": ep.dsn(name, show_password=True),
    }
    saved = early_config.stash.setdefault(_ENV_SAVED, {})
    for var, template in pairs:
        saved.setdefault(var, os.environ.get(var))
        os.environ[var] = fill_placeholders(template, values)


@pytest.fixture(scope="session")
def provision_session(pytestconfig: pytest.Config) -> ProvisionSession:
    return _session(pytestconfig)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close this process's provision session (after every fixture's teardown), then, with
    --provision-down and outside xdist's workers, remove the test server."""
    config = session.config
    found = config.stash.get(_SESSION, None)
    if found is not None:
        del config.stash[_SESSION]
        tallies = found.close()
        ep = found.endpoint
        config.stash[_KEPT] = [(name, ep.dsn(name)) for name in sorted(set(found.kept))]
        _add_tallies(config, tallies)
        workeroutput = getattr(config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller writes the summary
            workeroutput[_WORKER_KEY] = {db: dataclasses.asdict(tally) for db, tally in tallies.items()}
            workeroutput[_WORKER_KEPT] = config.stash[_KEPT]
    if config.getoption("provision_down", False) and not hasattr(config, "workeroutput"):
        config.stash[_DOWN] = _down(config)


def _down(config: pytest.Config) -> str:
    from ..errors import ProvisionError
    from ..targets import make_target

    try:
        cfg = _test_config(config)
        target = make_target(cfg)
        if not target.throwaway:
            return "provision: --provision-down leaves a configured server alone"
        removed = target.down(volumes=False).container_removed
    except ProvisionError as exc:
        return f"provision: could not remove the test server: {exc.message}"
    return f"provision: test server {cfg.container} {'removed' if removed else 'was not running'}"


def pytest_unconfigure(config: pytest.Config) -> None:
    for var, value in config.stash.get(_ENV_SAVED, {}).items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def _add_tallies(config: pytest.Config, tallies: dict[str, Tally]) -> None:
    found = config.stash.setdefault(_TALLIES, {})
    for database, tally in tallies.items():
        found[database] = found[database] + tally if database in found else tally


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist's controller, as each worker ends: add up what its pools did and what it kept."""
    from .pool import Tally

    output = getattr(node, "workeroutput", {})
    sent = output.get(_WORKER_KEY, {})
    _add_tallies(node.config, {database: Tally(**fields) for database, fields in sent.items()})
    kept = node.config.stash.setdefault(_KEPT, [])
    kept += [(name, url) for name, url in output.get(_WORKER_KEPT, [])]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A test that fails in setup or call has its copies kept (provision_keep = failed), and its
    report says which and where (a "Captured provision" section, printed with the failure)."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        item.stash[_FAILED] = True
        session = item.config.stash.get(_SESSION, None)
        held = item.stash.get(_HELD, [])
        if session is not None and session.keep == "failed" and held:
            lines = [f"kept {db.name} for debugging: {db.masked_url}" for db in held]
            lines.append("(the password is the config's `password`; the next test session drops the copy)")
            report.sections.append((f"Captured provision {call.when}", "\n".join(lines)))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workeroutput"):
        return
    found: list[tuple[str, str]] = config.stash[_KEPT] if _KEPT in config.stash else []
    kept = sorted(set(found))
    if kept:
        terminalreporter.write_line(
            f"provision: kept {len(kept)} database(s) for debugging (the next session drops them unless "
            "provision_keep = all):"
        )
        for name, url in kept:
            terminalreporter.write_line(f"  {name}  {url}")
    tallies = config.stash.get(_TALLIES, {})
    if tallies:
        from .pool import summary

        terminalreporter.write_line(summary(tallies))
    if _DOWN in config.stash:
        terminalreporter.write_line(config.stash[_DOWN])


@pytest.fixture
def provision_db_factory(
    provision_session: ProvisionSession, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], ProvisionedDatabase]]:
    held = request.node.stash.setdefault(_HELD, [])
    taken: list[ProvisionedDatabase] = []

    def make(database: str) -> ProvisionedDatabase:
        db = provision_session.acquire(database)
        taken.append(db)
        held.append(db)
        return db

    yield make
    failed = request.node.stash.get(_FAILED, False)
    for db in taken:
        held.remove(db)
        provision_session.release(db, failed=failed)


@pytest.fixture
def provision_db(
    provision_db_factory: Callable[[str], ProvisionedDatabase], provision_session: ProvisionSession
) -> ProvisionedDatabase:
    return provision_db_factory(provision_session.config.databases[0].name)


def _env_database(config: pytest.Config, session: ProvisionSession) -> str:
    return str(config.getini("provision_env_database")) or session.config.databases[0].name


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """provision_django_copies: before pytest-django's fixtures open a transaction, point Django's
    default connection at a copy of this test's own."""
    if item.get_closest_marker("django_db") is None or not item.config.getini("provision_django_copies"):
        return
    from .django_copies import use_database

    session = _session(item.config)
    db = session.acquire(_env_database(item.config, session))
    item.stash[_DJANGO] = (db, use_database(db.name))
    item.stash.setdefault(_HELD, []).append(db)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """After every fixture's teardown (pytest-django's rollback or flush): Django back to the
    session's database, the copy back to the pool (or kept, for a failure)."""
    if _DJANGO not in item.stash:
        return
    from .django_copies import use_database

    db, previous = item.stash[_DJANGO]
    del item.stash[_DJANGO]
    use_database(previous)  # closes the test's connection, so the copy can be reused
    item.stash[_HELD].remove(db)
    item.config.stash[_SESSION].release(db, failed=item.stash.get(_FAILED, False))


class TransactionalCopies:
    """This session's copies for transactional tests: one per database, so one per xdist worker."""

    def __init__(self, session: ProvisionSession) -> None:
        self.session = session
        self.copies: dict[str, ProvisionedDatabase] = {}

    def get(self, database: str) -> ProvisionedDatabase:
        if database not in self.copies:
            self.copies[database] = self.session.acquire_transactional(database)
        return self.copies[database]

    def reset(self, database: str) -> None:
        db = self.copies[database]
        # Every driver's connection is unwound, even after one reports a real commit.
        clean = [conn.unwind() for conn in db._opened().values()]
        if not all(clean):
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
