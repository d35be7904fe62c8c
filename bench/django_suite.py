"""The Django example's suite (examples/django) under provision against pytest-django's own --create-db and --reuse-db.

Run: `.venv/bin/python bench/django_suite.py [--rounds 5]`.

Each round runs, in turn, one pytest process per way, over the same 8 tests of a copy of the
example, against the same server (the plugin's own test container, tmpfs, fsync off), and times
the whole process (interpreter, Django set-up, database, tests):
- `provision, first run`: a migration file changed since the last run, so the template is rebuilt
  by `manage.py migrate` before the copy is taken;
- `provision, warm run`: nothing changed: copies of the cached template (one for the session,
  one per test: `provision_django_copies`);
- `--create-db`: pytest-django creates its test database and migrates it, every run;
- `--reuse-db, first run`: the same, the test database having been dropped first;
- `--reuse-db, warm run`: pytest-django keeps its test database and runs `migrate` over it (a no-op).
It prints the median and the range of each, in seconds. The container is removed at the end.

The example has 3 migrations; `--extra-migrations N` adds N more (a model, then one column each),
closer to a real project's history, where `migrate` on an empty database takes seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "django"
CONTAINER = "provision-bench-django"
DJANGO_DB = "benchshop"  # pytest-django's runs use test_benchshop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--extra-migrations", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="run every suite under pytest-xdist with N workers")
    args = parser.parse_args()

    from provision.config import load_config
    from provision.postgres import dbops
    from provision.targets import make_target
    from provision.testing.templates import config_for_tests, ensure_templates

    with tempfile.TemporaryDirectory(prefix="provision-bench-django-") as tmp:
        app = Path(tmp) / "app"
        shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
        config = yaml.safe_load((EXAMPLE / "provision.yaml").read_text())
        config.update(container=CONTAINER, port=0, image=os.environ.get("PROVISION_TEST_IMAGE", "postgres:17"))
        (app / "provision.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        add_migrations(app / "shop" / "migrations", args.extra_migrations)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "PYTEST_", "POSTGRES_"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

        xdist = ("-p", "xdist", "-n", str(args.workers)) if args.workers else ()

        def run(*extra: str, more_env: dict[str, str] | None = None) -> float:
            extra = (*extra, *xdist)
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini", *extra],
                capture_output=True,
                text=True,
                cwd=app,
                env={**env, **(more_env or {})},
                timeout=600,
            )
            took = time.perf_counter() - started
            if result.returncode != 0 or "8 passed" not in result.stdout:
                sys.exit(f"pytest {' '.join(extra)} failed:\n{result.stdout}\n{result.stderr}")
            return took

        run()  # the test server and the template, once, untimed
        # The same `python` as the runs resolve (part of the template's hash): nothing is rebuilt here.
        os.environ["PATH"] = env["PATH"]
        cfg = config_for_tests(load_config(app / "provision.yaml"))
        ep = ensure_templates(cfg).endpoint
        django_env = {
            "POSTGRES_HOST": ep.host,
            "POSTGRES_PORT": str(ep.port),
            "POSTGRES_USER": ep.user,
            "POSTGRES_PASSWORD": ep.password,
            "POSTGRES_DB": DJANGO_DB,
        }
        # provision's plugin inert: pytest-django makes the database, the tests stay on it.
        plain = ("-o", "provision_env=", "-o", "provision_django_copies=false")
        migration = app / "shop" / "migrations" / "0003_customer_vip.py"
        times: dict[str, list[float]] = {}

        def record(name: str, seconds: float) -> None:
            times.setdefault(name, []).append(seconds)

        def drop_django_db(workers: int) -> None:
            # pytest-django names each xdist worker's database test_<name>_gw<N>.
            names = [f"test_{DJANGO_DB}_gw{n}" for n in range(workers)] if workers else [f"test_{DJANGO_DB}"]
            with dbops.connection(ep) as admin:
                for name in names:
                    dbops.drop_database(admin, name)

        try:
            for round_no in range(args.rounds):
                with migration.open("a") as fh:  # a changed input: the next provision run rebuilds
                    fh.write(f"# bench round {round_no}\n")
                record("provision, first run", run())
                record("provision, warm run", run())
                record("--create-db", run(*plain, "--create-db", more_env=django_env))
                drop_django_db(args.workers)
                record("--reuse-db, first run", run(*plain, "--reuse-db", more_env=django_env))
                record("--reuse-db, warm run", run(*plain, "--reuse-db", more_env=django_env))
        finally:
            make_target(cfg).down(volumes=False)

    migrations = 3 + args.extra_migrations
    workers = f", {args.workers} xdist workers" if args.workers else ""
    print(f"Django example, 8 tests, {migrations} migrations{workers}, {args.rounds} rounds; whole pytest run, seconds")
    print(f"{'way':<24} {'median':>7}  range")
    for name, values in times.items():
        print(f"{name:<24} {statistics.median(values):>7.2f}  {min(values):.2f}-{max(values):.2f}")


def add_migrations(directory: Path, count: int) -> None:
    """`count` more migrations after 0003: one creating a model, then one adding a column each."""
    previous = "0003_customer_vip"
    for number in range(4, 4 + count):
        name = f"{number:04d}_bench"
        if number == 4:
            operation = 'migrations.CreateModel("Product", [("id", models.BigAutoField(primary_key=True))])'
        else:
            operation = f'migrations.AddField("product", "f{number}", models.IntegerField(null=True))'
        (directory / f"{name}.py").write_text(
            "from django.db import migrations, models\n\n\n"
            "class Migration(migrations.Migration):\n"
            f'    dependencies = [("shop", "{previous}")]\n'
            f"    operations = [{operation}]\n"
        )
        previous = name


if __name__ == "__main__":
    main()
