"""Benchmark `provision fresh` against hand-typed baselines; it DESTROYS and recreates chatbi-postgres and its volume.

Run: `scripts/dev bench` (or `.venv/bin/python bench/run.py`); `--help` lists the options.

Every scenario times `provision` (a subprocess, wall clock of the whole process) and a
baseline (the docker CLI, as a person would type it) in the same process run, alternating
which goes first in each iteration, and reports the median and min-max of both and the
median of the paired ratios (provision / baseline, within one iteration). Before every timed
run of either kind, provision's detached housekeeping from the run before has finished, so
neither side pays for the other's leftover work; that deferred tidy-up is timed and reported
on its own (from provision's exit until the housekeeping process is gone and the lock is free).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg2
import psycopg2.extensions

from provision import api
from provision.builds.pipeline import plan_database
from provision.config import Config, load_config
from provision.errors import ProvisionError
from provision.names import spare_name, template_name
from provision.postgres import dbops

REPO = Path(__file__).resolve().parent.parent
CONTAINER = "chatbi-postgres"
VOLUME = "chatbi-pgdata"
IMAGE = "postgres:17"
USER = "chatbi"
PASSWORD = "chatbi"
HOST = "127.0.0.1"
PORT = 5432
BASELINE_CONTAINER = "provision-bench-baseline"
BASELINE_VOLUME = "provision-bench-baseline-pgdata"
BASELINE_LABEL = "provision.bench=baseline"
CHATBI_SQL = REPO / "sql" / "chatbi" / "init_app_tables.sql"
DEMO_SQL = REPO / "sql" / "chatbi_demo" / "demo_data.sql"
ALEMBIC_REVISION = "0001_initial_schema"
# The seed's last command inserts the version; the bootstrap file does not create the table
# (provision stamps it), so the same single psql call creates it first, as Alembic would.
ALEMBIC_SQL = (
    "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)); "
    f"INSERT INTO alembic_version (version_num) VALUES ('{ALEMBIC_REVISION}') ON CONFLICT DO NOTHING;"
)
STREAM_DB = "bench_stream"
STREAM_BASELINE_DB = "bench_stream_baseline"
SCENARIOS = ("help", "warm", "changed", "migrations", "check", "snapshot", "stream", "cold")
TARGETS = {
    # In-process, as every command now runs: no slower than with the forkserver off (0.16×).
    "warm": 0.16,
    "warm-sync": 0.25,
    "changed": 0.8,
    "mig-warm": 0.18,
    "mig-changed": 1.0,
    "mig-again": 0.4,
    "check": 1.0,
    "snap-save": 1.5,
    "snap-restore": 1.0,
    "cold": 1.0,
    "cold-chatbi": 1.0,
    "stream": 1.1,
    # Against `python -c "import click"`, the least any click program pays at start-up: no slower
    # than the in-process figures of the forkserver era (issue 20).
    "help": 1.33,
    "url": 2.7,
}
CHECK_SECONDS_TARGET = 3.0
RESTORE_SECONDS_TARGET = 0.3
SNAPSHOT_DEMO_SCALE = 50  # chatbi_demo of about 245 MB
ALEMBIC_EXAMPLE = REPO / "examples" / "chatbi-alembic"
HEAD = "0002_chat_sessions_pinned_at"
STREAM_RSS_TARGET_MIB = 64.0
HOUSEKEEPING_TIMEOUT = 300.0


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


# ---------------------------------------------------------------- results


@dataclass
class Row:
    """One measured comparison: provision against its baseline, paired by iteration."""

    key: str
    title: str
    provision_command: str
    baseline_command: str
    target: float
    provision: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    first: list[str] = field(default_factory=list)
    housekeeping: list[float] = field(default_factory=list)
    provision_rss_mib: list[float] = field(default_factory=list)
    baseline_rss_mib: list[float] = field(default_factory=list)
    rss_target_mib: float | None = None
    seconds_target: float | None = None  # an absolute bound on provision's median, besides the ratio
    disturbed: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, provision: float, baseline: float, first: str) -> None:
        self.provision.append(provision)
        self.baseline.append(baseline)
        self.ratios.append(provision / baseline)
        self.first.append(first)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool:
        in_time = self.seconds_target is None or statistics.median(self.provision) <= self.seconds_target
        return self.ratio <= self.target and self.rss_met is not False and in_time

    @property
    def rss_met(self) -> bool | None:
        """None when there is no RSS target; False also when the RSS could not be measured."""
        if self.rss_target_mib is None:
            return None
        return bool(self.provision_rss_mib) and max(self.provision_rss_mib) <= self.rss_target_mib


@dataclass(frozen=True)
class Timed:
    seconds: float
    max_rss_kib: int | None
    stderr: str

    @property
    def rss_mib(self) -> list[float]:
        return [] if self.max_rss_kib is None else [self.max_rss_kib / 1024]


# ---------------------------------------------------------------- formatting


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_range(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    if high < 1:
        return f"{low * 1000:.0f}–{high * 1000:.0f} ms"
    return f"{low:.2f}–{high:.2f} s"


def say(message: str) -> None:
    print(message, flush=True)


def progress(message: str) -> None:
    print(f"  · {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


class Bench:
    """Holds the environment every child process runs in, and the helpers that time them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # provision reads PROVISION_* and ./provision.yaml; the benchmark measures the defaults.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
        self.python = sys.executable
        provision = Path(sys.executable).parent / "provision"
        found = str(provision) if provision.exists() else shutil.which("provision")
        docker = shutil.which("docker")
        if found is None:
            raise BenchError("the `provision` command is not installed next to this interpreter; run scripts/dev setup")
        if docker is None:
            raise BenchError("the docker CLI is not on PATH; the baselines need it")
        self.provision = found
        self.docker = docker
        self.default_cfg = load_config(None, env=self.env, cwd=workdir)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Path | None = None,
        sql_errors: bool = False,
        rss: bool = False,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Timed:
        """Run argv to completion and return its wall clock and stderr; raise BenchError on failure.

        sql_errors: psql without ON_ERROR_STOP exits 0 after a failed statement, so `ERROR:` counts as failure.
        rss: also measure the process's peak RSS under GNU time (`/usr/bin/time -f %M`). Not with wait4 from
        here: a child forked from this process inherits its RSS high-water mark across exec.
        """
        timer = shutil.which("time", path="/usr/bin:/bin") if rss else None
        with (
            tempfile.TemporaryFile() as err,
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file,
            open(stdin or os.devnull, "rb") as feed,
        ):
            full = [timer, "-f", "%M", "-o", rss_file.name, *argv] if timer else list(argv)
            started = time.perf_counter()
            proc = subprocess.run(
                full,
                stdin=feed,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=cwd or self.workdir,
                env={**self.env, **(env or {})},
            )
            seconds = time.perf_counter() - started
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
            report = rss_file.read().strip().splitlines() if timer else []
        if proc.returncode != 0 or (sql_errors and "ERROR:" in text):
            shown = " ".join(argv)
            raise BenchError(f"`{shown}` failed (exit code {proc.returncode}):\n{text.strip()[-2000:]}")
        peak = int(report[-1]) if report and report[-1].isdigit() else None
        return Timed(seconds, peak, text)

    def provision_cmd(self, *args: str, config: Path | None = None) -> list[str]:
        return [self.provision, *(["-c", str(config)] if config else []), *args]

    def psql(self, container: str, database: str, command: str) -> list[str]:
        return [self.docker, "exec", container, "psql", "-U", USER, "-d", database, "-c", command]

    def hand_typed(self, container: str, bootstrap: Path) -> float:
        """The six commands from the project's migration guide, typed one after another."""
        steps: list[tuple[list[str], Path | None]] = [
            (self.psql(container, "postgres", "DROP DATABASE IF EXISTS chatbi;"), None),
            (self.psql(container, "postgres", "CREATE DATABASE chatbi;"), None),
            (self.psql(container, "postgres", "DROP DATABASE IF EXISTS chatbi_demo;"), None),
            (self.psql(container, "postgres", "CREATE DATABASE chatbi_demo;"), None),
            ([self.docker, "exec", "-i", container, "psql", "-U", USER, "-d", "chatbi"], bootstrap),
            (self.psql(container, "chatbi", ALEMBIC_SQL), None),
        ]
        started = time.perf_counter()
        for argv, stdin in steps:
            self.run(argv, stdin=stdin, sql_errors=True)
        return time.perf_counter() - started

    # ------------------------------------------------------------ housekeeping

    def settle(self, cfg: Config | None = None) -> float:
        """Wait until provision's detached housekeeping is done; returns how long that took.

        `api.wait_for_housekeeping` alone is not enough: `fresh` releases the lock before it
        spawns the housekeeping process, which takes the lock only after its own start-up, so
        right after `fresh` exits the lock is usually free although the work has not begun.
        So first wait for the housekeeping processes themselves (they exist by the time
        `fresh` exits), then for the lock.
        """
        started = time.perf_counter()
        deadline = started + HOUSEKEEPING_TIMEOUT
        while housekeeping_pids(self.workdir):
            if time.perf_counter() > deadline:
                raise BenchError(f"provision housekeeping still running after {HOUSEKEEPING_TIMEOUT:.0f} s")
            time.sleep(0.01)
        try:
            api.wait_for_housekeeping(cfg or self.default_cfg, timeout=HOUSEKEEPING_TIMEOUT)
        except ProvisionError:
            pass  # no server listening (cold scenario): nothing can hold its lock
        return time.perf_counter() - started

    def timed_provision(
        self, row: Row, argv: Sequence[str], cfg: Config | None = None, env: dict[str, str] | None = None
    ) -> float:
        """Run provision with nothing of provision's running, then time its deferred tidy-up."""
        self.settle(cfg)
        result = self.run(argv, rss=True, env=env)
        row.housekeeping.append(self.settle(cfg))
        row.provision_rss_mib.extend(result.rss_mib)
        if "waiting for" in result.stderr:
            row.disturbed += 1
        return result.seconds

    def restore(self) -> None:
        """Leave chatbi-postgres as `provision fresh --yes --sync-cleanup` makes it."""
        self.run(self.provision_cmd("fresh", "--yes", "-q", "--sync-cleanup"))


def processes(matching: Callable[[str, bytes], bool]) -> set[int]:
    """Pids of this machine's processes for which matching(/proc entry, command line) holds."""
    pids = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "cmdline"), "rb") as fh:
                if matching(entry.path, fh.read()):
                    pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def housekeeping_pids(cwd: Path) -> set[int]:
    """Our processes running provision's `_housekeep` (the detached half of `fresh`, see housekeeping.spawn).

    Ours are told apart from other provisioners' on this machine by their working directory,
    which they inherit from the `provision` process this benchmark started.
    """
    return processes(
        lambda proc, cmdline: (
            cmdline.endswith(b"\x00_housekeep\x00")
            and b"from provision.cli import main" in cmdline
            and os.readlink(os.path.join(proc, "cwd")) == str(cwd)
        )
    )


def inspect_container(bench: Bench, name: str) -> dict[str, object] | None:
    proc = subprocess.run(
        [bench.docker, "container", "inspect", name], capture_output=True, text=True, env=bench.env, check=False
    )
    if proc.returncode != 0:
        if "No such" in proc.stderr or "no such" in proc.stderr:
            return None
        raise BenchError(f"cannot inspect container {name}: {proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    return data[0] if data and isinstance(data[0], dict) else None


def container_labels(info: dict[str, object]) -> dict[str, str]:
    config = info.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def remove_baseline(bench: Bench) -> None:
    """Remove the baseline container and its volume (both named by and labelled for this benchmark)."""
    if inspect_container(bench, BASELINE_CONTAINER) is not None:
        bench.run([bench.docker, "rm", "-f", "-v", BASELINE_CONTAINER])
    probe = subprocess.run(
        [bench.docker, "volume", "inspect", BASELINE_VOLUME], capture_output=True, env=bench.env, check=False
    )
    if probe.returncode == 0:
        bench.run([bench.docker, "volume", "rm", BASELINE_VOLUME])


def remove_provisioned(bench: Bench) -> None:
    bench.settle()
    bench.run(bench.provision_cmd("down", "--volumes", "--yes"))


@contextmanager
def admin() -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def drop_databases(bench: Bench, names: Callable[[list[str]], list[str]]) -> list[str]:
    """Drop the databases `names` picks from the server's list, under provision's lock."""
    bench.settle()
    ep = dbops.Endpoint(HOST, PORT, USER, PASSWORD)
    conn = dbops.connect(ep, application_name="provision bench")
    try:
        dbops.acquire_lock(conn, wait=True)
        chosen = names(sorted(dbops.list_databases(conn)))
        for name in chosen:
            dbops.drop_database(conn, name)
        dbops.release_lock(conn)
    finally:
        conn.close()
    return chosen


def checkpoint(bench: Bench) -> None:
    with admin() as conn, conn.cursor() as cur:
        cur.execute("CHECKPOINT")


def pairs(iterations: int) -> Iterator[tuple[int, bool]]:
    """(iteration, provision goes first): alternating, starting with provision."""
    for i in range(iterations):
        yield i, i % 2 == 0


# ---------------------------------------------------------------- scenarios


def scenario_help(bench: Bench, iterations: int) -> list[Row]:
    """Commands that need no server: they import neither psycopg2 nor the Docker SDK, so they
    should cost little more than starting click."""
    base = [bench.python, "-c", "import click"]
    rows = [
        (
            Row(
                "help",
                "`provision --help` vs starting click",
                "provision --help",
                "python -c 'import click'",
                TARGETS["help"],
            ),
            [bench.provision, "--help"],
        ),
        (
            Row(
                "url", "`provision url` vs starting click", "provision url", "python -c 'import click'", TARGETS["url"]
            ),
            [bench.provision, "url"],
        ),
    ]
    for row, prov in rows:
        bench.run(prov)
        bench.run(base)
        for i, prov_first in pairs(iterations):
            progress(f"{row.key} {i + 1}/{iterations}")
            if prov_first:
                p = bench.run(prov)
                b = bench.run(base)
            else:
                b = bench.run(base)
                p = bench.run(prov)
            row.add(p.seconds, b.seconds, "provision" if prov_first else "baseline")
    return [row for row, _ in rows]


def scenario_warm(bench: Bench, iterations: int) -> list[Row]:
    """Warm container, unchanged SQL: the spare copy is swapped in; with the tidy-up in the
    background (the default) and with --sync-cleanup."""
    background = Row(
        "warm",
        "warm fresh, SQL unchanged (cleanup: background)",
        "provision fresh --yes -q",
        "hand-typed six commands",
        TARGETS["warm"],
    )
    sync = Row(
        "warm-sync",
        "warm fresh, SQL unchanged, --sync-cleanup",
        "provision fresh --yes -q --sync-cleanup",
        "hand-typed six commands",
        TARGETS["warm-sync"],
    )
    progress("warm: warming up (one untimed run of each)")
    bench.restore()
    bench.hand_typed(CONTAINER, CHATBI_SQL)
    bench.settle()
    for row, extra in ((background, ()), (sync, ("--sync-cleanup",))):
        argv = bench.provision_cmd("fresh", "--yes", "-q", *extra)
        for i, prov_first in pairs(iterations):
            progress(f"{row.key} {i + 1}/{iterations}")
            if prov_first:
                p = bench.timed_provision(row, argv)
                bench.settle()
                b = bench.hand_typed(CONTAINER, CHATBI_SQL)
            else:
                bench.settle()
                b = bench.hand_typed(CONTAINER, CHATBI_SQL)
                p = bench.timed_provision(row, argv)
            row.add(p, b, "provision" if prov_first else "baseline")
    for row in (background, sync):
        row.notes.append("the hand-typed sequence leaves chatbi_demo empty (it never loads demo_data.sql)")
    sync.notes.append("with --sync-cleanup the old copy is dropped and the next spare cloned before exit")
    return [background, sync]


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def scenario_changed(bench: Bench, iterations: int) -> list[Row]:
    """Warm container, chatbi's SQL changed before every run (a unique comment line)."""
    row = Row(
        "changed",
        "warm fresh, SQL changed",
        "provision -c changed.yaml fresh --yes -q",
        "hand-typed six commands",
        TARGETS["changed"],
    )
    folder = bench.workdir / "changed"
    folder.mkdir()
    chatbi_sql = folder / "init_app_tables.sql"
    demo_sql = folder / "demo_data.sql"
    shutil.copyfile(CHATBI_SQL, chatbi_sql)
    shutil.copyfile(DEMO_SQL, demo_sql)
    tables = ", ".join(["datasources", "chat_sessions", "app_users", "mdl_projects", "sql_corrections"])
    config = write_config(
        folder / "changed.yaml",
        f"container: {CONTAINER}\n"
        "databases:\n"
        "  chatbi:\n"
        f"    sql: {chatbi_sql.name}\n"
        f"    alembic_revision: {ALEMBIC_REVISION}\n"
        f"    tables: [{tables}]\n"
        "  chatbi_demo:\n"
        f"    sql: {demo_sql.name}\n"
        "    demo: true\n"
        "    tables: [categories, products, customers, orders, order_items]\n",
    )
    cfg = load_config(config, env=bench.env, cwd=bench.workdir)
    argv = bench.provision_cmd("fresh", "--yes", "-q", config=config)
    token = uuid.uuid4().hex[:12]
    created: set[str] = set()
    with admin() as conn:
        server_version = int(conn.server_version)

    def change(n: int) -> None:
        with chatbi_sql.open("a", encoding="utf-8") as fh:
            fh.write(f"-- bench run {token} {n}\n")
        content_hash = plan_database(cfg, cfg.database("chatbi")).content_hash(server_version)
        created.update({template_name("chatbi", content_hash), spare_name("chatbi", content_hash)})

    try:
        progress("changed: warming up (one untimed run of each)")
        change(0)
        bench.run(argv)
        bench.settle(cfg)
        bench.hand_typed(CONTAINER, chatbi_sql)
        for i, prov_first in pairs(iterations):
            progress(f"changed {i + 1}/{iterations}")
            change(i + 1)
            if prov_first:
                p = bench.timed_provision(row, argv, cfg)
                bench.settle(cfg)
                b = bench.hand_typed(CONTAINER, chatbi_sql)
            else:
                bench.settle(cfg)
                b = bench.hand_typed(CONTAINER, chatbi_sql)
                p = bench.timed_provision(row, argv, cfg)
            row.add(p, b, "provision" if prov_first else "baseline")
    finally:
        drop_databases(bench, lambda names: [n for n in names if n in created])
    row.notes.append("only chatbi's SQL changes; chatbi_demo's hash is unchanged, so its spare copy is swapped in")
    row.notes.append("the background tidy-up builds the new template from the SQL again and clones the next spare")
    return [row]


def alembic_app(bench: Bench) -> tuple[Path, Path]:
    """A copy of examples/chatbi-alembic in the work directory, against this benchmark's container."""
    folder = bench.workdir / "alembic-app"
    if not folder.exists():
        shutil.copytree(ALEMBIC_EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__", "provision.yaml"))
        text = (ALEMBIC_EXAMPLE / "provision.yaml").read_text(encoding="utf-8")
        lines = [f"container: {CONTAINER}" if line.startswith("container:") else line for line in text.splitlines()]
        write_config(folder / "provision.yaml", "\n".join(lines) + "\n")
    return folder, folder / "provision.yaml"


def alembic_upgrade(bench: Bench, folder: Path, database: str, revision: str = "head") -> float:
    """The app's own step after the hand-typed sequence: `alembic upgrade head`, as its guide says."""
    alembic = str(Path(sys.executable).parent / "alembic")
    url = f"postgresql://{USER}:{PASSWORD}@{HOST}:{PORT}/{database}"
    argv = [alembic, "-c", "alembic.ini", "upgrade", revision]
    return bench.run(argv, env={"DATABASE_URL": url}, cwd=folder).seconds


MIGRATION_TEMPLATE = '''"""bench: add app_users.bench_{n}."""
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"


def upgrade() -> None:
    op.add_column("app_users", sa.Column("bench_{n}", sa.Text()))


def downgrade() -> None:
    op.drop_column("app_users", "bench_{n}")
'''


def scenario_migrations(bench: Bench, iterations: int) -> list[Row]:
    """ChatBI with its own Alembic migrations: bootstrap SQL, stamp 0001, migrations to head."""
    baseline = "hand-typed six commands + alembic upgrade head"
    warm = Row(
        "mig-warm",
        "warm fresh with the app's migrations, nothing changed",
        "provision -c alembic-app/provision.yaml fresh --yes -q",
        baseline,
        TARGETS["mig-warm"],
    )
    changed = Row(
        "mig-changed",
        "warm fresh with the app's migrations, a new migration added",
        "provision -c alembic-app/provision.yaml fresh --yes -q",
        baseline,
        TARGETS["mig-changed"],
    )
    again = Row(
        "mig-again",
        "fresh at once after a fresh that ran a new migration (tidy-up still running)",
        "provision -c alembic-app/provision.yaml fresh --yes -q  (twice, the second timed)",
        baseline,
        TARGETS["mig-again"],
    )
    folder, config = alembic_app(bench)
    cfg = load_config(config, env=bench.env, cwd=bench.workdir)
    argv = bench.provision_cmd("fresh", "--yes", "-q", config=config)
    versions = folder / "migrations" / "versions"
    head = [HEAD]

    def by_hand() -> float:
        return bench.hand_typed(CONTAINER, CHATBI_SQL) + alembic_upgrade(bench, folder, "chatbi")

    def add_migration() -> None:
        n = len(head)
        revision = f"{n + 2:04d}_bench_{n}"
        (versions / f"{revision}.py").write_text(MIGRATION_TEMPLATE.format(n=n, revision=revision, down=head[-1]))
        head.append(revision)

    progress("migrations: warming up (one untimed run of each)")
    bench.run(argv)
    bench.settle(cfg)
    by_hand()
    for row, change in ((warm, False), (changed, True)):
        for i, prov_first in pairs(iterations):
            progress(f"{row.key} {i + 1}/{iterations}")
            if change:
                add_migration()
            if prov_first:
                p = bench.timed_provision(row, argv, cfg)
                bench.settle(cfg)
                b = by_hand()
            else:
                bench.settle(cfg)
                b = by_hand()
                p = bench.timed_provision(row, argv, cfg)
            row.add(p, b, "provision" if prov_first else "baseline")
    for i, prov_first in pairs(iterations):
        progress(f"{again.key} {i + 1}/{iterations}")

        def back_to_back() -> float:
            add_migration()
            bench.settle(cfg)
            bench.run(argv)  # builds with the new migration; its tidy-up starts in the background
            return bench.run(argv, rss=True).seconds  # at once: nothing waited for

        if prov_first:
            p = back_to_back()
            bench.settle(cfg)
            b = by_hand()
        else:
            bench.settle(cfg)
            b = by_hand()
            p = back_to_back()
        again.add(p, b, "provision" if prov_first else "baseline")
    bench.settle(cfg)
    again.notes.append("the first fresh templates its build before the swap, so the second takes a copy of it")
    warm.notes.append("the migrations are unchanged, so the cached spare (already at head) is swapped in")
    changed.notes.append("provision builds privately: SQL, stamp 0001, then every migration to the new head")
    changed.notes.append("the baseline runs only the migrations its database lacks; both end at the same head")
    return [warm, changed, again]


def scenario_check(bench: Bench, iterations: int) -> list[Row]:
    """`provision check`: the bootstrap SQL against the migrations, in scratch copies, with the cache warm."""
    row = Row(
        "check",
        "check: bootstrap SQL stamped at 0001 vs migrations to 0001",
        "provision -c alembic-app/provision.yaml check",
        "by hand: two databases, psql + alembic, pg_dump --schema-only both, diff",
        TARGETS["check"],
        seconds_target=CHECK_SECONDS_TARGET,
    )
    folder, config = alembic_app(bench)
    cfg = load_config(config, env=bench.env, cwd=bench.workdir)
    argv = bench.provision_cmd("check", config=config)

    def dump(database: str) -> list[str]:
        out = subprocess.run(
            [bench.docker, "exec", CONTAINER, "pg_dump", "-U", USER, "--schema-only", "--no-owner", database],
            capture_output=True,
            text=True,
            env=bench.env,
            check=True,
        ).stdout
        return [line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]

    def by_hand() -> float:
        started = time.perf_counter()
        for name in ("check_sql", "check_alembic"):
            bench.run(bench.psql(CONTAINER, "postgres", f"DROP DATABASE IF EXISTS {name};"))
            bench.run(bench.psql(CONTAINER, "postgres", f"CREATE DATABASE {name};"))
        bench.run([bench.docker, "exec", "-i", CONTAINER, "psql", "-U", USER, "-d", "check_sql"], stdin=CHATBI_SQL)
        bench.run(bench.psql(CONTAINER, "check_sql", ALEMBIC_SQL), sql_errors=True)
        alembic_upgrade(bench, folder, "check_alembic", ALEMBIC_REVISION)
        if sorted(dump("check_sql")) != sorted(dump("check_alembic")):
            raise BenchError("the hand-made check found drift in the example")
        for name in ("check_sql", "check_alembic"):
            bench.run(bench.psql(CONTAINER, "postgres", f"DROP DATABASE {name};"))
        return time.perf_counter() - started

    progress("check: warming up (one untimed run of each)")
    bench.run(bench.provision_cmd("fresh", "--yes", "-q", "--sync-cleanup", config=config))
    bench.run(argv)
    by_hand()
    for i, prov_first in pairs(iterations):
        progress(f"check {i + 1}/{iterations}")
        if prov_first:
            p = bench.timed_provision(row, argv, cfg)
            b = by_hand()
        else:
            b = by_hand()
            p = bench.timed_provision(row, argv, cfg)
        row.add(p, b, "provision" if prov_first else "baseline")
    row.notes.append(f"target: provision's median ≤ {CHECK_SECONDS_TARGET:g} s on this machine")
    row.notes.append("the hand-made check compares sorted pg_dump lines: it cannot say which object differs")
    return [row]


def scenario_snapshot(bench: Bench, iterations: int, scale: int) -> list[Row]:
    """Snapshots of a large chatbi_demo: save against a plain template copy, restore against pg_restore."""
    demo = "chatbi_demo"
    save = Row(
        "snap-save",
        f"snapshot save of chatbi_demo at --demo-scale {scale}",
        "provision snapshot save big --db chatbi_demo --force -q",
        f'docker exec {CONTAINER} psql -c "CREATE DATABASE copy TEMPLATE chatbi_demo"',
        TARGETS["snap-save"],
    )
    restore = Row(
        "snap-restore",
        f"snapshot restore of chatbi_demo at --demo-scale {scale} (standby ready)",
        "provision snapshot restore big --db chatbi_demo --yes -q",
        "dropdb + createdb + docker exec -i pg_restore < chatbi_demo.dump",
        TARGETS["snap-restore"],
        seconds_target=RESTORE_SECONDS_TARGET,
    )
    dump = bench.workdir / "chatbi_demo.dump"
    progress(f"snapshot: building chatbi_demo at --demo-scale {scale} and a pg_dump -Fc of it")
    bench.run(bench.provision_cmd("fresh", "--yes", "-q", "--sync-cleanup", "--only", demo, "--demo-scale", str(scale)))
    with dump.open("wb") as out:
        subprocess.run(
            [bench.docker, "exec", CONTAINER, "pg_dump", "-U", USER, "-Fc", demo], stdout=out, env=bench.env, check=True
        )
    with admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(%s)", [demo])
        size = int(cur.fetchone()[0])
    for row in (save, restore):
        row.notes.append(f"chatbi_demo is {size / 1e6:.0f} MB; the dump file {dump.stat().st_size / 1e6:.0f} MB")

    def plain_copy() -> float:
        bench.run(bench.psql(CONTAINER, "postgres", "DROP DATABASE IF EXISTS bench_copy;"))
        checkpoint(bench)
        seconds = bench.run(bench.psql(CONTAINER, "postgres", f"CREATE DATABASE bench_copy TEMPLATE {demo};")).seconds
        bench.run(bench.psql(CONTAINER, "postgres", "DROP DATABASE bench_copy;"))
        return seconds

    def pg_restore() -> float:
        started = time.perf_counter()
        bench.run(bench.psql(CONTAINER, "postgres", f"DROP DATABASE IF EXISTS {demo} WITH (FORCE);"))
        bench.run(bench.psql(CONTAINER, "postgres", f"CREATE DATABASE {demo};"))
        bench.run([bench.docker, "exec", "-i", CONTAINER, "pg_restore", "-U", USER, "-d", demo], stdin=dump)
        return time.perf_counter() - started

    save_argv = bench.provision_cmd("snapshot", "save", "big", "--db", demo, "--force", "-q")
    restore_argv = bench.provision_cmd("snapshot", "restore", "big", "--db", demo, "--yes", "-q")
    try:
        bench.run(save_argv)
        bench.settle()
        for i, prov_first in pairs(iterations):
            progress(f"snapshot {i + 1}/{iterations}")
            bench.settle()
            checkpoint(bench)
            if prov_first:
                p = bench.timed_provision(save, save_argv)
                b = plain_copy()
            else:
                b = plain_copy()
                bench.settle()
                checkpoint(bench)
                p = bench.timed_provision(save, save_argv)
            save.add(p, b, "provision" if prov_first else "baseline")
            bench.settle()  # the standby of the new snapshot is ready
            if prov_first:
                p = bench.timed_provision(restore, restore_argv)
                b = pg_restore()
            else:
                b = pg_restore()
                bench.settle()
                p = bench.timed_provision(restore, restore_argv)
            restore.add(p, b, "provision" if prov_first else "baseline")
    finally:
        bench.settle()
        bench.run(bench.provision_cmd("snapshot", "rm", "big", "--db", demo))
        dump.unlink(missing_ok=True)
        bench.run(bench.provision_cmd("fresh", "--yes", "-q", "--sync-cleanup", "--only", demo))
    save.notes.append("a snapshot is a template copy; provision also ends the database's sessions and swaps it in")
    save.notes.append("the standby copy for the next restore is cloned afterwards, in the background (tidy-up)")
    restore.notes.append(f"target: provision's median ≤ {RESTORE_SECONDS_TARGET:g} s wall, whatever the size")
    return [save, restore]


def generate_stream_sql(path: Path, mib: int) -> int:
    """A pg_dump-style file: one table, one COPY block of about `mib` MiB of rows."""
    target = mib * 1024 * 1024
    note = "the quick brown fox jumps over the lazy dog; " * 2
    written = 0
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        header = (
            "-- generated by bench/run.py\n"
            "CREATE TABLE bench_rows (id bigint PRIMARY KEY, customer text NOT NULL, "
            "amount numeric(12,2) NOT NULL, created date NOT NULL, note text);\n"
            "COPY bench_rows (id, customer, amount, created, note) FROM stdin;\n"
        )
        fh.write(header)
        written += len(header)
        i = 0
        while written < target:
            batch = []
            for j in range(i, i + 10000):
                batch.append(
                    f"{j}\tcustomer_{j % 99991}\t{(j * 7919) % 1000000 / 100:.2f}\t"
                    f"2024-{j % 12 + 1:02d}-{j % 28 + 1:02d}\t{note[: 40 + j % 50]}\n"
                )
            chunk = "".join(batch)
            fh.write(chunk)
            written += len(chunk)
            i += 10000
        fh.write("\\.\n")
    return path.stat().st_size


def scenario_stream(bench: Bench, iterations: int, mib: int) -> list[Row]:
    row = Row(
        "stream",
        f"{mib} MB SQL file streamed into a fresh database",
        "provision -c stream.yaml fresh --yes -q --no-cache",
        "docker exec -i chatbi-postgres psql -U chatbi -d DB < file",
        TARGETS["stream"],
        rss_target_mib=STREAM_RSS_TARGET_MIB,
    )
    folder = bench.workdir / "stream"
    folder.mkdir()
    source = folder / "stream.sql"
    progress(f"stream: generating {mib} MiB of SQL")
    size = generate_stream_sql(source, mib)
    row.notes.append(f"source: {size / 1e6:.0f} MB, one CREATE TABLE and one COPY block of {size // 1_000_000} MB")
    config = write_config(
        folder / "stream.yaml",
        f"container: {CONTAINER}\ndatabases:\n  {STREAM_DB}:\n    sql: {source.name}\n    tables: [bench_rows]\n",
    )
    cfg = load_config(config, env=bench.env, cwd=bench.workdir)
    argv = bench.provision_cmd("fresh", "--yes", "-q", "--no-cache", config=config)
    baseline = [bench.docker, "exec", "-i", CONTAINER, "psql", "-U", USER, "-d", STREAM_BASELINE_DB]
    bench.restore()

    def run_baseline() -> float:
        bench.run(bench.psql(CONTAINER, "postgres", f"DROP DATABASE IF EXISTS {STREAM_BASELINE_DB};"))
        bench.run(bench.psql(CONTAINER, "postgres", f"CREATE DATABASE {STREAM_BASELINE_DB};"))
        bench.settle(cfg)
        checkpoint(bench)
        result = bench.run(baseline, stdin=source, sql_errors=True, rss=True)
        row.baseline_rss_mib.extend(result.rss_mib)
        bench.run(bench.psql(CONTAINER, "postgres", f"DROP DATABASE {STREAM_BASELINE_DB};"))
        return result.seconds

    def run_provision() -> float:
        bench.settle(cfg)
        checkpoint(bench)
        return bench.timed_provision(row, argv, cfg)

    try:
        for i, prov_first in pairs(iterations):
            progress(f"stream {i + 1}/{iterations}")
            if prov_first:
                p = run_provision()
                b = run_baseline()
            else:
                b = run_baseline()
                p = run_provision()
            row.add(p, b, "provision" if prov_first else "baseline")
    finally:
        prefix = f"{STREAM_DB}__"
        drop_databases(
            bench, lambda names: [n for n in names if n in (STREAM_DB, STREAM_BASELINE_DB) or n.startswith(prefix)]
        )
        source.unlink(missing_ok=True)
    row.notes.append("provision runs it in one transaction (--single-transaction); the baseline in autocommit")
    row.notes.append("a CHECKPOINT precedes every timed run, so neither side flushes the other's writes")
    return [row]


def wait_for_login(deadline: float) -> None:
    """The baseline's readiness check: a TCP login with the real password, every 50 ms."""
    while True:
        try:
            conn = psycopg2.connect(
                host=HOST, port=PORT, user=USER, password=PASSWORD, dbname="postgres", connect_timeout=2
            )
        except psycopg2.OperationalError as exc:
            if time.perf_counter() > deadline:
                raise BenchError(f"the baseline server never accepted a login: {exc}") from exc
            time.sleep(0.05)
            continue
        conn.close()
        return


def scenario_cold(bench: Bench, iterations: int) -> list[Row]:
    row = Row(
        "cold",
        "cold fresh (no container, no volume)",
        "provision fresh --yes -q",
        "docker run -d + 50 ms login poll + hand-typed six commands",
        TARGETS["cold"],
    )
    docker_run = [
        bench.docker,
        "run",
        "-d",
        "--name",
        BASELINE_CONTAINER,
        "--label",
        BASELINE_LABEL,
        "-e",
        f"POSTGRES_USER={USER}",
        "-e",
        f"POSTGRES_PASSWORD={PASSWORD}",
        "-p",
        f"{HOST}:{PORT}:5432",
        "-v",
        f"{BASELINE_VOLUME}:/var/lib/postgresql/data",
        IMAGE,
    ]
    argv = bench.provision_cmd("fresh", "--yes", "-q")
    # The same job as the baseline: the six commands leave chatbi_demo empty, so this row
    # leaves the demo data out too.
    row_chatbi = Row(
        "cold-chatbi",
        "cold fresh without the demo data (--skip-demo)",
        "provision fresh --yes -q --skip-demo",
        "docker run -d + 50 ms login poll + hand-typed six commands",
        TARGETS["cold"],
    )
    argv_chatbi = bench.provision_cmd("fresh", "--yes", "-q", "--skip-demo")

    def run_baseline() -> float:
        remove_provisioned(bench)
        remove_baseline(bench)
        started = time.perf_counter()
        bench.run(docker_run)
        wait_for_login(started + 120)
        bench.hand_typed(BASELINE_CONTAINER, CHATBI_SQL)
        seconds = time.perf_counter() - started
        remove_baseline(bench)
        return seconds

    def run_provision(which: Row, command: list[str]) -> float:
        remove_baseline(bench)
        remove_provisioned(bench)
        return bench.timed_provision(which, command)

    try:
        for i, prov_first in pairs(iterations):
            progress(f"cold {i + 1}/{iterations}")
            if prov_first:
                p = run_provision(row, argv)
                b = run_baseline()
                q = run_provision(row_chatbi, argv_chatbi)
            else:
                q = run_provision(row_chatbi, argv_chatbi)
                b = run_baseline()
                p = run_provision(row, argv)
            row.add(p, b, "provision" if prov_first else "baseline")
            row_chatbi.add(q, b, "baseline" if prov_first else "provision")
    finally:
        remove_baseline(bench)
    row.notes.append("provision also generates chatbi_demo's data; the baseline leaves chatbi_demo empty")
    row.notes.append("the background tidy-up then builds both templates from the SQL again and clones the spares")
    row_chatbi.notes.append("each provision run is paired with the baseline run of the same iteration (shared)")
    return [row, row_chatbi]


# ---------------------------------------------------------------- reporting


def print_row(row: Row) -> None:
    iterations = len(row.ratios)
    say(f"\n== {row.key}: {row.title} ({iterations} iterations, order alternating) ==")
    width = max(len(row.provision_command), len(row.baseline_command), 30)
    say(f"  {'':<{width}}  {'median':>9}  {'min–max':>17}")
    for command, values in ((row.provision_command, row.provision), (row.baseline_command, row.baseline)):
        say(f"  {command:<{width}}  {fmt_s(statistics.median(values)):>9}  {fmt_range(values):>17}")
    verdict = "met" if row.ratio <= row.target else "MISSED"
    say(
        f"  paired ratio provision/baseline: median {row.ratio:.2f}×  (min–max {min(row.ratios):.2f}–"
        f"{max(row.ratios):.2f}×)  target ≤ {row.target:g}×  {verdict}"
    )
    if row.seconds_target is not None:
        median = statistics.median(row.provision)
        in_time = "met" if median <= row.seconds_target else "MISSED"
        say(f"  provision median {fmt_s(median)}: target ≤ {row.seconds_target:g} s  {in_time}")
    if row.housekeeping and row.key not in ("help", "url"):
        say(
            f"  deferred tidy-up after provision exits: median {fmt_s(statistics.median(row.housekeeping))}  "
            f"(min–max {fmt_range(row.housekeeping)})"
        )
    if row.provision_rss_mib:
        line = f"  peak RSS of the provision process: max {max(row.provision_rss_mib):.1f} MiB"
        if row.rss_target_mib is not None:
            line += f"  target ≤ {row.rss_target_mib:g} MiB  {'met' if row.rss_met else 'MISSED'}"
        if row.baseline_rss_mib:
            line += f"  (docker CLI: max {max(row.baseline_rss_mib):.1f} MiB)"
        say(line)
    elif row.key not in ("help", "url"):
        say("  peak RSS not measured: GNU time is missing (apt-get install -y time)")
    if row.disturbed:
        say(f"  WARNING: {row.disturbed} provision run(s) had to wait for the provisioner lock")
    say("  ratios by iteration: " + "  ".join(f"{r:.2f}({f[0]})" for r, f in zip(row.ratios, row.first, strict=True)))
    for note in row.notes:
        say(f"  note: {note}")


def print_summary(rows: Sequence[Row], total: float) -> None:
    say("\n== summary (medians; ratio = median of paired provision/baseline ratios) ==")
    header = (
        f"  {'scenario':<11} {'provision':>10} {'baseline':>10} {'ratio':>7} {'target':>8}  {'tidy-up':>9}  verdict"
    )
    say(header)
    say("  " + "-" * (len(header) - 2))
    for row in rows:
        tidy = (
            fmt_s(statistics.median(row.housekeeping)) if row.housekeeping and row.key not in ("help", "url") else "-"
        )
        say(
            f"  {row.key:<11} {fmt_s(statistics.median(row.provision)):>10} "
            f"{fmt_s(statistics.median(row.baseline)):>10} {row.ratio:>6.2f}× {'≤ ' + format(row.target, 'g') + '×':>8}"
            f"  {tidy:>9}  {'met' if row.met else 'MISSED'}"
        )
        if row.rss_target_mib is not None:
            peak = f"{max(row.provision_rss_mib):.1f} MiB" if row.provision_rss_mib else "n/a"
            rss_target = f"≤ {row.rss_target_mib:g} MiB"
            say(
                f"  {row.key + ' RSS':<11} {peak:>10} {'':>10} {'':>7} {rss_target:>8}"
                f"  {'':>9}  {'met' if row.rss_met else 'MISSED'}"
            )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    say(f"\ntotal benchmark time: {total:.0f} s; load average now {load} (1, 5, 15 min)")


def environment(bench: Bench) -> dict[str, str]:
    server = subprocess.run(
        [bench.docker, "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"],
        capture_output=True,
        text=True,
        env=bench.env,
        check=False,
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "docker_engine": server,
        "image": IMAGE,
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=(
            "Benchmark `provision fresh` side by side with hand-typed baselines (see issue 5). "
            f"WARNING: this DESTROYS and recreates the {CONTAINER} container and its {VOLUME} volume "
            "(all data in it); it refuses to touch a container of that name that provision did not create. "
            "It ends by leaving the state `provision fresh --yes --sync-cleanup` makes."
        ),
    )
    parser.add_argument("--iterations", type=int, default=7, metavar="N", help="iterations of warm and changed (7)")
    parser.add_argument("--cold-iterations", type=int, default=5, metavar="N", help="iterations of cold (5)")
    parser.add_argument("--stream-iterations", type=int, default=3, metavar="N", help="iterations of stream (3)")
    parser.add_argument("--snapshot-iterations", type=int, default=5, metavar="N", help="iterations of snapshot (5)")
    parser.add_argument(
        "--snapshot-scale", type=int, default=SNAPSHOT_DEMO_SCALE, metavar="N", help="demo scale for snapshot (50)"
    )
    parser.add_argument("--help-iterations", type=int, default=20, metavar="N", help="iterations of help and url (20)")
    parser.add_argument("--stream-mib", type=int, default=200, metavar="MIB", help="size of the stream file (200)")
    parser.add_argument(
        "--only",
        metavar="SCENARIO[,SCENARIO]",
        help=f"run only these scenarios, of: {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results, with every sample, as JSON")
    args = parser.parse_args(argv)
    chosen = SCENARIOS if not args.only else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown or not chosen:
        parser.error(f"unknown scenario(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SCENARIOS)}")
    for name in (
        "iterations",
        "cold_iterations",
        "stream_iterations",
        "help_iterations",
        "stream_mib",
        "snapshot_iterations",
        "snapshot_scale",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.scenarios = [s for s in SCENARIOS if s in chosen]
    return args


def preflight(bench: Bench) -> None:
    """Refuse to destroy containers this benchmark (or provision) did not create."""
    info = inspect_container(bench, CONTAINER)
    if info is not None and container_labels(info).get("provision.managed") != "true":
        raise Refusal(
            f"a container named {CONTAINER} exists and was not created by provision "
            "(no label provision.managed=true); this benchmark would destroy it. Remove or rename it first."
        )
    info = inspect_container(bench, BASELINE_CONTAINER)
    if info is not None and container_labels(info).get("provision.bench") != "baseline":
        raise Refusal(f"a container named {BASELINE_CONTAINER} exists and was not created by this benchmark")


class Refusal(Exception):
    """The benchmark will not run here (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="provision-bench-"))
    rows: list[Row] = []
    code = 0
    try:
        bench = Bench(workdir)
        preflight(bench)
        env = environment(bench)
        say(f"provision benchmark: {', '.join(args.scenarios)}")
        say(
            f"python {env['python']} on {env['machine']} with {env['cpus']} CPUs, "
            f"docker engine {env['docker_engine']}, image {IMAGE}, load average {env['load_average_at_start']}"
        )
        runners: dict[str, Callable[[], list[Row]]] = {
            "help": lambda: scenario_help(bench, args.help_iterations),
            "warm": lambda: scenario_warm(bench, args.iterations),
            "changed": lambda: scenario_changed(bench, args.iterations),
            "migrations": lambda: scenario_migrations(bench, args.iterations),
            "check": lambda: scenario_check(bench, args.iterations),
            "snapshot": lambda: scenario_snapshot(bench, args.snapshot_iterations, args.snapshot_scale),
            "stream": lambda: scenario_stream(bench, args.stream_iterations, args.stream_mib),
            "cold": lambda: scenario_cold(bench, args.cold_iterations),
        }
        try:
            for name in args.scenarios:
                progress(f"scenario {name}")
                for row in runners[name]():
                    rows.append(row)
                    print_row(row)
        finally:
            if any(s != "help" for s in args.scenarios):
                progress("restoring chatbi-postgres: provision fresh --yes --sync-cleanup")
                bench.settle()
                bench.restore()
        total = time.perf_counter() - started
        print_summary(rows, total)
        if args.json:
            payload = {
                "environment": env,
                "total_seconds": total,
                "rows": [asdict(row) | {"ratio_median": row.ratio, "met": row.met} for row in rows],
            }
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
            say(f"results written to {args.json}")
    except Refusal as exc:
        print(f"bench: refusing to run: {exc}", file=sys.stderr)
        code = 2
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        code = 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
