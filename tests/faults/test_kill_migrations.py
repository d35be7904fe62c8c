"""kill -9 while the app's migrations run inside `fresh`: the old database stays, the next run tidies up (issue 10).

The project is built the example's way (bootstrap SQL, stamp 0001, Alembic to head). Each case
inserts a marker into the database in place, adds a new migration (so the build is real, not a
cached clone), kills provision at a checkpoint of the migration step, and then expects the old
database with its marker, no migration process left running, and a clean next run at the new head.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.conftest import HEAD, use_alembic_example

pytestmark = [pytest.mark.faults, pytest.mark.integration]

NEXT = '''"""Add app_users.nickname_{n}."""
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"


def upgrade() -> None:
    op.add_column("app_users", sa.Column("nickname_{n}", sa.Text()))


def downgrade() -> None:
    op.drop_column("app_users", "nickname_{n}")
'''


class Chain:
    """Adds migrations one after another: each case gets a new head to build."""

    def __init__(self, project: Any) -> None:
        self.project = project
        self.head = HEAD
        self.n = 0

    def add(self) -> str:
        self.n += 1
        revision = f"{3 + self.n:04d}_nickname_{self.n}"
        text = NEXT.format(n=self.n, revision=revision, down=self.head)
        (self.project.dir / "migrations" / "versions" / f"{revision}.py").write_text(text)
        self.head = revision
        return revision


@pytest.fixture(scope="module")
def chain(shared_project: Any, faults: Any) -> Chain:
    project = use_alembic_example(shared_project())
    result = faults.run(project.path, "fresh", "--yes")
    assert result.returncode == 0, faults.describe(result)
    return Chain(project)


def allows_connections(faults: Any, project: Any, database: str) -> bool:
    rows = faults.query(project, "postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", [database])
    return bool(rows[0][0])


def unsealed_for_a_look(faults: Any, project: Any, database: str) -> Any:
    """Open the sealed database just long enough to classify it, then close it again as the kill left it."""

    class Look:
        def __enter__(self) -> None:
            faults.query(project, "postgres", f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')

        def __exit__(self, *exc: object) -> None:
            faults.query(project, "postgres", f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')

    return Look()


# Between these two, the live databases refuse new connections (seal.py).
SEALED = ("live-sealed", "migration-started")


@pytest.mark.parametrize("checkpoint", ["live-sealed", "migration-started", "migrated"])
def test_kill_during_the_migration_step_keeps_the_old_database(
    chain: Chain, faults: Any, tally: Any, poll: Any, checkpoint: str
) -> None:
    project = chain.project
    old_head = chain.head
    faults.insert_marker(project, "chatbi")
    marker = f"FAULTS_MIGRATION_{checkpoint.replace('-', '_').upper()}"
    new_head = chain.add()
    result = faults.run(project.path, "fresh", "--yes", env={"PROVISION_KILL_AT": checkpoint, marker: "1"})
    assert result.returncode == -signal.SIGKILL, f"the run never reached {checkpoint}:\n" + faults.describe(result)

    if checkpoint in SEALED:
        # The kill left the live databases closed to new connections: the next run must reopen them.
        assert not allows_connections(faults, project, "chatbi"), f"killed at {checkpoint}, chatbi was not sealed"
        status = faults.run(project.path, "status")
        assert status.returncode == 0 and "chatbi         closed to new connections" in status.stdout, status.stdout
        with unsealed_for_a_look(faults, project, "chatbi"):
            state = faults.classify(project, "chatbi", revision=old_head)
    else:
        assert allows_connections(faults, project, "chatbi")
        state = faults.classify(project, "chatbi", revision=old_head)
    tally.kill("solo/migrations", checkpoint, {"chatbi": state})
    assert state == "old", f"killed at {checkpoint}, the database in place changed"
    # The migration command dies with provision (parent-death signal): nothing keeps writing.
    assert poll(lambda: not faults.pids_with_env(f"{marker}=1"), 10), "a migration process outlived provision"

    again = faults.run(project.path, "fresh", "--yes")
    assert again.returncode == 0, "the run after the kill failed:\n" + faults.describe(again)
    assert allows_connections(faults, project, "chatbi"), "the next run left chatbi closed to connections"
    if checkpoint in SEALED:
        assert "reopened chatbi to new connections" in again.stdout + again.stderr, again.stdout
    assert faults.leftovers(project) == []
    assert faults.classify(project, "chatbi", revision=new_head) == "new"


SEED = """import os, psycopg2
conn = psycopg2.connect(os.environ["DATABASE_URL"])
with conn, conn.cursor() as cur:
    cur.execute("INSERT INTO datasources (name) VALUES (%s)", ["seeded-{n}"])
"""


@pytest.mark.parametrize("checkpoint", ["seed-started", "seeded"])
def test_kill_during_the_seed_step_keeps_the_old_database(
    chain: Chain, faults: Any, tally: Any, poll: Any, checkpoint: str
) -> None:
    import sys

    project = chain.project
    faults.insert_marker(project, "chatbi")
    chain.n += 1
    (project.dir / "seed.py").write_text(SEED.format(n=chain.n))  # a new seed: a real build
    spec = project.data["databases"]["chatbi"]
    spec["seed"] = {"command": [sys.executable, "seed.py"]}
    project.write()
    marker = f"FAULTS_SEED_{checkpoint.replace('-', '_').upper()}"
    result = faults.run(project.path, "fresh", "--yes", env={"PROVISION_KILL_AT": checkpoint, marker: "1"})
    assert result.returncode == -signal.SIGKILL, f"the run never reached {checkpoint}:\n" + faults.describe(result)
    sealed = checkpoint == "seed-started"
    assert allows_connections(faults, project, "chatbi") is not sealed
    if sealed:
        with unsealed_for_a_look(faults, project, "chatbi"):
            state = faults.classify(project, "chatbi", revision=chain.head)
    else:
        state = faults.classify(project, "chatbi", revision=chain.head)
    tally.kill("solo/seed", checkpoint, {"chatbi": state})
    assert state == "old", f"killed at {checkpoint}, the database in place changed"
    assert poll(lambda: not faults.pids_with_env(f"{marker}=1"), 10), "a seed process outlived provision"

    again = faults.run(project.path, "fresh", "--yes")
    assert again.returncode == 0, "the run after the kill failed:\n" + faults.describe(again)
    assert allows_connections(faults, project, "chatbi")
    assert faults.leftovers(project) == []
    assert faults.classify(project, "chatbi", revision=chain.head) == "new"
    rows = faults.query(project, "chatbi", "SELECT name FROM datasources")
    assert rows == [(f"seeded-{chain.n}",)]
