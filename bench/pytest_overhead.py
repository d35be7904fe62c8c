"""What a per-test database costs as pytest sees it: N trivial tests with a fixture against the same N without.

Run: `.venv/bin/python bench/pytest_overhead.py [--tests 300] [--rounds 5]`; with `--demo-scale 50`
the database is chatbi_demo at that scale (about 245 MB) instead of chatbi, to compare copies
and transactions on large data (use fewer tests: a copy of it takes most of a second).

Each round runs, in an alternating order, six pytest processes over the same N trivial tests:
- `bare`: no fixture;
- `provision_db`: a private copy of chatbi from provision's warm pool, with an open connection
  (the test only reads, so the copy is proved unchanged and reused);
- `provision_db-write`: the same, but each test creates a table, so every copy is dropped and a
  new one cloned;
- `provision_db-insert`: the same, but each test inserts a user (app_users, which eight tables
  reference) and commits, so every copy has those tables put back before it is reused;
- `provision_tx`: one copy per worker, each test inside a transaction rolled back at teardown;
- `template-per-test`: pytest-postgresql's way, by hand: CREATE DATABASE ... TEMPLATE, connect, DROP.

A conftest records the span from the end of the first test's setup to the end of the last test's
own teardown: the session's start (interpreter, plugin, server and template check, the pool's
first fill) happens once, in the first setup, and its end (the pool dropping what it holds) once,
after the last test's teardown; both are reported on their own. The per-test cost of a
fixture is (its span - the bare span) / (N - 1), and the report gives its median over the rounds.
Everything runs against the plugin's own test server (tmpfs, fsync off), the same for all six.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTAINER = "provision-bench-pytest"

CONFTEST = """
import json, os, time
import pytest

_span = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    started = time.perf_counter()
    yield
    if "first" not in _span:
        # The first setup also starts the session's fixtures (server, templates, pool): timed apart.
        _span["first"] = time.perf_counter()
        _span["session_start"] = _span["first"] - started


@pytest.fixture(autouse=True)
def _span_end():
    # Set up before, so torn down after, the test's own fixtures; the session's come later.
    yield
    _span["last"] = time.perf_counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if nextitem is None:
        # The last teardown also ends the session's fixtures (the pool drops its copies): timed apart.
        _span["session_end"] = time.perf_counter() - _span["last"]


def pytest_unconfigure(config):
    if "first" in _span and "last" in _span:
        with open(os.environ["SPAN_FILE"], "w") as fh:
            json.dump(
                {
                    "seconds": _span["last"] - _span["first"],
                    "session_start": _span["session_start"],
                    "session_end": _span.get("session_end", 0.0),
                },
                fh,
            )
"""

BASELINE_FIXTURE = '''
import os, secrets
import psycopg2
import pytest


def _admin():
    conn = psycopg2.connect(os.environ["BENCH_ADMIN_DSN"])
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def admin():
    conn = _admin()
    yield conn
    conn.close()


@pytest.fixture
def template_copy(admin):
    """pytest-postgresql's shape: clone the template, connect, and drop it again, all per test."""
    name = "bench_copy_" + secrets.token_hex(4)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{os.environ["BENCH_TEMPLATE"]}"')
    conn = psycopg2.connect(os.environ["BENCH_ADMIN_DSN"].rsplit("/", 1)[0] + "/" + name)
    yield conn
    conn.close()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{name}"')
'''


def write_suite(folder: Path, tests: int, large: bool = False) -> dict[str, Path]:
    (folder / "conftest.py").write_text(CONFTEST + BASELINE_FIXTURE)
    bodies = {
        "bare": "def test_{i}():\n    pass\n",
        "provision_db": "def test_{i}(provision_db):\n    provision_db.conn.cursor().execute('SELECT 1')\n",
        "provision_db-write": (
            "def test_{i}(provision_db):\n    provision_db.conn.cursor().execute('CREATE TABLE t (a int)')\n"
        ),
        "provision_db-insert": (
            "def test_{i}(provision_db):\n"
            "    provision_db.conn.cursor().execute(\"INSERT INTO app_users (email) VALUES ('a@example.com')\")\n"
            "    provision_db.conn.commit()\n"
        ),
        "provision_tx": "def test_{i}(provision_tx):\n    provision_tx.conn.cursor().execute('SELECT 1')\n",
        "template-per-test": "def test_{i}(template_copy):\n    template_copy.cursor().execute('SELECT 1')\n",
    }
    if large:
        del bodies["provision_db-insert"]  # app_users is chatbi's
    files = {}
    for name, body in bodies.items():
        path = folder / f"test_{name.replace('-', '_')}.py"
        path.write_text("\n\n".join(body.format(i=i) for i in range(tests)))
        files[name] = path
    return files


def run(folder: Path, path: Path, config: Path, env: dict[str, str]) -> tuple[float, float, float]:
    span = folder / "span.json"
    span.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--provision-config", str(config), str(path)],
        cwd=folder, env={**env, "SPAN_FILE": str(span)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed for {path.name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads(span.read_text())
    return float(data["seconds"]), float(data["session_start"]), float(data["session_end"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the test server running afterwards")
    parser.add_argument("--demo-scale", type=int, help="use chatbi_demo at this scale instead of chatbi")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from provision import api
    from provision.config import load_config
    from provision.testing import templates as test_templates

    folder = Path(tempfile.mkdtemp(prefix="provision-pytest-bench-"))
    config = folder / "provision.yaml"
    if args.demo_scale:
        database = "chatbi_demo"
        config.write_text(
            f"container: {CONTAINER}\ndemo_scale: {args.demo_scale}\ndatabases:\n  chatbi_demo:\n"
            "    sql: builtin:chatbi_demo/demo_data.sql\n    demo: true\n"
        )
    else:
        database = "chatbi"
        config.write_text(
            f"container: {CONTAINER}\ndatabases:\n  chatbi:\n    sql: builtin:chatbi/init_app_tables.sql\n"
            "    alembic_revision: 0001_initial_schema\n"
        )
    cfg = test_templates.config_for_tests(load_config(config, env={}))
    templates = test_templates.ensure_templates(cfg)
    ep = templates.endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "PYTEST_"))}
    env["BENCH_ADMIN_DSN"] = ep.dsn("postgres", show_password=True)
    env["BENCH_TEMPLATE"] = templates.templates[database]
    import psycopg2

    with psycopg2.connect(env["BENCH_ADMIN_DSN"]) as probe, probe.cursor() as cur:
        cur.execute("SELECT pg_database_size(%s)", [env["BENCH_TEMPLATE"]])
        size_mb = cur.fetchone()[0] / 1e6
    probe.close()
    files = write_suite(folder, args.tests, large=bool(args.demo_scale))
    kinds = list(files)
    spans: dict[str, list[float]] = {k: [] for k in kinds}
    starts: dict[str, list[float]] = {k: [] for k in kinds}
    ends: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        for name in kinds:  # one untimed run each: the pool, the caches and the OS are warm
            run(folder, files[name], config, env)
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for name in order:
                seconds, start, end = run(folder, files[name], config, env)
                spans[name].append(seconds)
                starts[name].append(start)
                ends[name].append(end)
                print(f"  · round {r + 1}/{args.rounds} {name}: {spans[name][-1]:.2f}s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            api.down(cfg)
    n = args.tests - 1
    print(f"\n{args.tests} trivial tests on {database} ({size_mb:.0f} MB), {args.rounds} rounds, order alternating;")
    print("span: end of the first test's setup to the end of the last test's own teardown; session start:")
    print("the first setup (server, templates, pool); session end: the pool dropping what it holds")
    print(
        f"  {'fixture':<20} {'span':>8}  {'per test over bare':>18}  {'session start':>13}  {'session end':>11}"
        "  per round (ms/test)"
    )
    for name in kinds:
        per_test = [(spans[name][i] - spans["bare"][i]) / n * 1000 for i in range(args.rounds)]
        extra = "" if name == "bare" else f"{statistics.median(per_test):.2f} ms"
        rounds = "" if name == "bare" else "  ".join(f"{v:.2f}" for v in per_test)
        start = f"{statistics.median(starts[name]) * 1000:.0f} ms"
        end = f"{statistics.median(ends[name]) * 1000:.0f} ms"
        print(f"  {name:<20} {statistics.median(spans[name]):>6.2f} s  {extra:>18}  {start:>13}  {end:>11}  {rounds}")


if __name__ == "__main__":
    main()
