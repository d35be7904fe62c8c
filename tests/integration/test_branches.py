"""Dev databases that follow the git branch (issue 24), with a real git repository, real Alembic and a real server.

The project (examples/chatbi-alembic, chatbi only) is a git repository with two branches:
`main` at head 0002, and `feature`, whose migration 0003 adds saved_queries.shared_at. Rows
added by hand on each branch tell whose data is in place.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, databases, fresh, git, make_repo, query, run_cli

pytestmark = pytest.mark.integration

ADD_0004 = '''"""Add saved_queries.share_note."""
import sqlalchemy as sa
from alembic import op

revision = "0004_saved_queries_note"
down_revision = "0003_saved_queries_shared"


def upgrade() -> None:
    op.add_column("saved_queries", sa.Column("share_note", sa.Text))


def downgrade() -> None:
    op.drop_column("saved_queries", "share_note")
'''


def cli(project: Project, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(project.path), *args, cwd=project.dir, **kwargs)


def switch(project: Project, *args: str) -> dict[str, Any]:
    done = cli(project, "branch", "--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def actions(result: dict[str, Any]) -> dict[str, str]:
    return {m["database"]: m["action"] for m in result["databases"]}


def add_row(project: Project, who: str) -> None:
    query(project, "chatbi", "INSERT INTO app_users (email, username) VALUES (%s, %s)", [f"{who}@x.invalid", who])


def rows(project: Project) -> list[str]:
    return sorted(r[0] for r in query(project, "chatbi", "SELECT username FROM app_users WHERE username IS NOT NULL"))


def has_shared_at(project: Project) -> bool:
    found = query(
        project,
        "chatbi",
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'saved_queries' AND column_name = 'shared_at'",
    )
    return bool(found)


def branch_copies(project: Project) -> list[str]:
    return sorted(n for n in databases(project) if "__br_" in n)


@pytest.fixture
def repo(project: Project) -> Project:
    repo = make_repo(project)
    built = fresh(repo, "--yes")
    assert built.returncode == 0, built.stderr
    return repo


def test_hand_made_data_on_each_branch_survives_two_round_trips(repo: Project) -> None:
    add_row(repo, "on-main")
    git(repo.dir, "switch", "-q", "feature")
    # Without the hook, status notices that the databases in place are main's.
    status = cli(repo, "status")
    assert status.returncode == 0, status.stderr
    assert "the git branch changed to feature, but the databases in place belong to main" in status.stdout

    first = switch(repo)
    assert actions(first) == {"chatbi": "built"}, first  # feature's 0003 is in no cache yet
    assert first["databases"][0]["kept_as"] in branch_copies(repo)
    assert has_shared_at(repo) and rows(repo) == []
    add_row(repo, "on-feature")

    for _ in range(2):
        git(repo.dir, "switch", "-q", "main")
        back = switch(repo)
        assert actions(back) == {"chatbi": "renamed"}, back
        assert rows(repo) == ["on-main"] and not has_shared_at(repo)
        git(repo.dir, "switch", "-q", "feature")
        again = switch(repo)
        assert actions(again) == {"chatbi": "renamed"}, again
        assert rows(repo) == ["on-feature"] and has_shared_at(repo)
    # Nothing to do: the databases already follow the branch.
    assert actions(switch(repo)) == {"chatbi": "unchanged"}
    assert len(branch_copies(repo)) == 1  # main's, put aside; feature's is in place

    listed = json.loads(cli(repo, "branch", "list", "--json").stdout)
    by_name = {b["name"]: b for b in listed["branches"]}
    assert by_name["feature"]["in_place"] and by_name["feature"]["current"]
    assert not by_name["main"]["in_place"] and by_name["main"]["last_used"]
    assert by_name["main"]["size_bytes"] > 1_000_000


def test_a_new_migration_rebuilds_only_that_branch(repo: Project) -> None:
    add_row(repo, "on-main")
    git(repo.dir, "switch", "-q", "feature")
    switch(repo)
    add_row(repo, "on-feature")
    # feature gains 0004, committed while its databases are in place.
    (repo.dir / "migrations" / "versions" / "0004_saved_queries_note.py").write_text(ADD_0004)
    git(repo.dir, "add", "-A")
    git(repo.dir, "commit", "-qm", "0004")
    git(repo.dir, "switch", "-q", "main")
    assert actions(switch(repo)) == {"chatbi": "renamed"}  # main's sources did not change
    assert rows(repo) == ["on-main"]

    git(repo.dir, "switch", "-q", "feature")
    # feature's copy was built before 0004: rebuilding drops its data, so it is not done unasked.
    refused = cli(repo, "branch")
    assert refused.returncode == 9, refused.stdout + refused.stderr
    assert "built from sources that have changed" in refused.stderr
    assert rows(repo) == ["on-main"], "a refused switch changed nothing"

    rebuilt = switch(repo, "--yes")
    assert actions(rebuilt) == {"chatbi": "built"}, rebuilt
    assert rebuilt["databases"][0]["dropped"], "the stale copy is reported as dropped"
    versions = query(repo, "chatbi", "SELECT version_num FROM alembic_version")
    assert versions == [("0004_saved_queries_note",)] and rows(repo) == []
    # main was not rebuilt: its hand-made row comes back by a rename.
    git(repo.dir, "switch", "-q", "main")
    assert actions(switch(repo)) == {"chatbi": "renamed"}
    assert rows(repo) == ["on-main"]
    assert not any("__old_" in n or "__stage_" in n for n in databases(repo))


def test_prune_removes_deleted_and_merged_branches(repo: Project) -> None:
    for name in ("gone", "merged-in"):
        git(repo.dir, "switch", "-qc", name)
        switch(repo)
        add_row(repo, "on-" + name)
        git(repo.dir, "switch", "-q", "main")
        switch(repo)
    assert len(branch_copies(repo)) == 2
    git(repo.dir, "branch", "-D", "gone")
    listed = json.loads(cli(repo, "branch", "list", "--json").stdout)
    assert {b["name"]: b["in_git"] for b in listed["branches"]} == {"main": True, "gone": False, "merged-in": True}

    refused = cli(repo, "branch", "prune")  # no terminal, no --yes: their data is the only copy
    assert refused.returncode == 9, refused.stdout + refused.stderr
    assert len(branch_copies(repo)) == 2

    pruned = json.loads(cli(repo, "branch", "prune", "--yes", "--json").stdout)
    assert pruned["branches"] == ["gone"]
    assert len(branch_copies(repo)) == 1  # merged-in's is kept: it still exists in git
    merged = json.loads(cli(repo, "branch", "prune", "--merged", "--yes", "--json").stdout)
    assert merged["branches"] == ["merged-in"]
    assert branch_copies(repo) == [] and rows(repo) == []  # main's own database is never pruned


def test_the_hook_runs_on_git_checkout(repo: Project) -> None:
    installed = cli(repo, "branch", "install-hook")
    assert installed.returncode == 0, installed.stderr
    hook = Path(installed.stdout.split()[-1])
    assert hook == repo.dir / ".git" / "hooks" / "post-checkout" and os.access(hook, os.X_OK)
    add_row(repo, "on-main")

    checkout = git(repo.dir, "checkout", "-q", "feature")
    assert "Error" not in checkout.stderr, checkout.stderr
    assert has_shared_at(repo) and rows(repo) == []
    add_row(repo, "on-feature")
    git(repo.dir, "checkout", "-q", "main")
    assert rows(repo) == ["on-main"]

    # A checkout that stays on the branch ends in the shell: with the config gone, Python would fail loudly.
    moved = repo.path.with_name("moved.yaml")
    repo.path.rename(moved)
    try:
        same = git(repo.dir, "checkout", "main")
        assert "Error" not in same.stderr and "provision" not in same.stderr, same.stderr
        # Detached HEAD: the hook does nothing.
        detached = git(repo.dir, "checkout", "-q", "--detach")
        assert "Error" not in detached.stderr, detached.stderr
    finally:
        moved.rename(repo.path)
    by_hand = cli(repo, "branch")
    assert by_hand.returncode == 13 and "detached HEAD" in by_hand.stderr, by_hand.stderr
    git(repo.dir, "checkout", "-q", "main")
    git(repo.dir, "checkout", "-q", "feature")
    assert rows(repo) == ["on-feature"]


def test_fresh_notices_a_branch_change_and_records_the_branch(repo: Project) -> None:
    git(repo.dir, "switch", "-q", "feature")
    again = fresh(repo, "--yes")
    assert again.returncode == 0, again.stderr
    assert "the git branch changed to feature" in again.stdout and "this fresh replaces them" in again.stdout
    # The new build records feature: nothing to do now, and status is quiet about branches.
    assert actions(switch(repo)) == {"chatbi": "unchanged"}
    assert "branch " not in cli(repo, "status").stdout


def test_outside_git_the_feature_says_so_and_does_nothing(project: Project) -> None:
    done = cli(project, "branch")
    assert done.returncode == 13, done.stdout + done.stderr
    assert "not in a git repository" in done.stderr and "Hint:" in done.stderr


def test_branch_copies_count_toward_the_disk_cap(repo: Project) -> None:
    add_row(repo, "on-main")
    repo.write(snapshot_limit_mb=1)  # an uncommitted change: it stays across `git switch`
    git(repo.dir, "switch", "-q", "feature")
    refused = cli(repo, "branch")
    assert refused.returncode == 9, refused.stdout + refused.stderr
    assert "past snapshot_limit_mb" in refused.stderr and "Nothing was changed" in refused.stderr
    assert rows(repo) == ["on-main"] and branch_copies(repo) == []

    # Room for main's copy (about 9 MB), but not for a snapshot beside it: 2 x 9 MB + 9 MB > 20 MB,
    # where the snapshot alone (18 MB) would fit.
    repo.write(snapshot_limit_mb=20)
    assert actions(switch(repo)) == {"chatbi": "built"}
    saved = cli(repo, "snapshot", "save", "s1")
    assert saved.returncode == 9, saved.stdout + saved.stderr
    assert "branch copies included" in saved.stderr
