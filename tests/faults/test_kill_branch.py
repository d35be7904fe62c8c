"""kill -9 during `provision branch` (issue 24): each database stays whole and belongs to exactly one branch,
and the next run converges.

One server for the module, a git repository with `main` (head 0002) and `feature` (0003). main's
chatbi holds the marker row, feature's does not, so the row tells whose data a database holds,
and its comment says which branch it claims: the two must agree, for the database in place and
for every copy put aside, after every kill.
"""

from __future__ import annotations

import json
import secrets
import signal
from typing import Any

import pytest

from tests.conftest import HEAD, git, make_repo

pytestmark = [pytest.mark.faults, pytest.mark.integration]

FEATURE_HEAD = "0003_saved_queries_shared"


@pytest.fixture(scope="module")
def server(shared_project: Any, faults: Any) -> Any:
    """main's databases in place (with the marker row), feature's put aside: both branches have copies."""
    project = make_repo(shared_project(cleanup="sync"))
    assert faults.run(project.path, "fresh", "--yes").returncode == 0
    faults.insert_marker(project, "chatbi")
    for branch in ("feature", "main"):
        assert _switch(faults, project, branch).returncode == 0
    return project


def _switch(faults: Any, project: Any, branch: str, **env: str) -> Any:
    git(project.dir, "switch", "-q", branch)
    return faults.run(project.path, "branch", "--yes", env=env or None)


LIKE_COPIES = "SELECT datname FROM pg_database WHERE datname = 'chatbi' OR datname LIKE 'chatbi\\_\\_br\\_%'"


def _owners(faults: Any, project: Any) -> dict[str, tuple[str, bool]]:
    """Every copy of chatbi (in place or put aside): the branch its comment claims, and whether it holds the marker."""
    found = {}
    for (name,) in faults.query(project, "postgres", LIKE_COPIES):
        (comment,) = faults.query(
            project,
            "postgres",
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [name],
        )[0]
        marked = faults.query(project, name, "SELECT count(*) FROM app_users WHERE username = 'fault-marker'")[0][0]
        found[name] = (json.loads(comment).get("branch"), bool(marked))
    return found


def _each_whole_and_owned_once(faults: Any, project: Any) -> str:
    """Which branch's data is in place, after checking every copy: whole, one branch each, agreeing with its data."""
    owners = _owners(faults, project)
    claimed = [branch for branch, _ in owners.values()]
    assert len(claimed) == len(set(claimed)), f"two copies claim one branch: {owners}"
    for name, (branch, marked) in owners.items():
        assert branch is not None, f"{name} records no branch"
        assert marked == (branch == "main"), f"{name} claims {branch} but holds {'main' if marked else 'other'}'s data"
        versions = faults.query(project, name, "SELECT version_num FROM alembic_version")
        assert versions == [(REVISIONS.get(branch, FEATURE_HEAD),)], f"{name} ({branch}) is at {versions}"
    live = owners["chatbi"][0]
    faults.classify(project, "chatbi", REVISIONS.get(live, FEATURE_HEAD))
    return str(live)


def _new_branch(project: Any, kind: str) -> str:
    """A branch with no databases yet: from feature (its template is cached: the switch clones it), or with a
    migration of its own (the switch builds a template first, running the migrations)."""
    name = f"{kind}-{secrets.token_hex(3)}"
    git(project.dir, "switch", "-qc", name, "feature")
    if kind == "new-sources":
        versions = project.dir / "migrations" / "versions"
        revision = "0004_" + name.replace("-", "_")  # its own sources: a content hash no cache holds
        (versions / f"{revision}.py").write_text(
            (versions / "0003_saved_queries_shared.py")
            .read_text()
            .replace('"0003_saved_queries_shared"', f'"{revision}"', 1)
            .replace('"0002_chat_sessions_pinned_at"', '"0003_saved_queries_shared"')
            .replace('"shared_at"', '"x"')
        )
        git(project.dir, "add", "-A")
        git(project.dir, "commit", "-qm", "0004")
        REVISIONS[name] = revision
    git(project.dir, "switch", "-q", "main")
    return name


REVISIONS = {"main": HEAD}


@pytest.mark.parametrize(
    ("kind", "checkpoint", "expected"),
    [
        ("rename", "branch-staged", "main"),  # feature's copy exists: the switch is renames alone
        ("rename", "branch-swapped", "to"),
        ("clone", "branch-staged", "main"),  # a new branch of feature's sources: a clone of the cached template
        ("clone", "branch-swapped", "to"),
        ("new-sources", "migrated", "main"),  # a new branch with a migration of its own: a template built first
        ("new-sources", "template-frozen", "main"),
        ("new-sources", "branch-swapped", "to"),
    ],
)
def test_kill_during_a_switch_then_the_next_run_converges(
    server: Any, faults: Any, tally: Any, kind: str, checkpoint: str, expected: str
) -> None:
    to = "feature" if kind == "rename" else _new_branch(server, kind)
    result = _switch(faults, server, to, PROVISION_KILL_AT=checkpoint)
    assert result.returncode == -signal.SIGKILL, f"never reached {checkpoint}:\n" + faults.describe(result)
    live = _each_whole_and_owned_once(faults, server)
    tally.kill(f"branch/{kind}", checkpoint, {"chatbi": "old" if live == "main" else "new"})
    assert live == (to if expected == "to" else expected), f"killed at {checkpoint}: {live}'s databases in place"

    # The next run on the same checkout converges: its databases in place, the others' kept, no leftovers.
    again = faults.run(server.path, "branch", "--yes")
    assert again.returncode == 0, faults.describe(again)
    assert _each_whole_and_owned_once(faults, server) == to
    assert faults.leftovers(server) == []
    back = _switch(faults, server, "main")
    assert back.returncode == 0, faults.describe(back)
    assert _each_whole_and_owned_once(faults, server) == "main", "main's marker row came back by the rename"
