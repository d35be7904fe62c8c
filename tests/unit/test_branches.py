"""The branch feature without a server (issue 24): reading git's own files, names, and the hook's shell path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provision.builds import branches
from provision.errors import NoGitBranch
from provision.gitrepo import checkout, hooks_dir, local_branches, merged_branches
from tests.conftest import git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    top = tmp_path / "app"
    top.mkdir()
    git(top, "init", "-q", "-b", "main")
    (top / "a.txt").write_text("a\n")
    git(top, "add", "-A")
    git(top, "commit", "-qm", "a")
    return top


def test_the_branch_is_read_from_head_also_below_the_top_and_with_slashes(repo: Path) -> None:
    (repo / "sub").mkdir()
    assert checkout(repo / "sub").branch == "main"
    git(repo, "switch", "-qc", "feature/add-col")
    found = checkout(repo)
    assert (found.branch, found.top, found.git_dir) == ("feature/add-col", repo, repo / ".git")


def test_a_linked_worktree_follows_its_gitdir_link(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", "-b", "other", str(tmp_path / "wt"))
    found = checkout(tmp_path / "wt")
    assert found.branch == "other" and found.git_dir == repo / ".git" / "worktrees" / "wt"
    assert checkout(repo).branch == "main"  # each worktree has its own HEAD


def test_detached_head_and_no_repository_say_so_with_exit_13(repo: Path, tmp_path: Path) -> None:
    git(repo, "switch", "-q", "--detach")
    with pytest.raises(NoGitBranch, match="detached HEAD") as detached:
        checkout(repo)
    assert detached.value.exit_code == 13 and detached.value.hint
    (tmp_path / "plain").mkdir()
    with pytest.raises(NoGitBranch, match="not in a git repository") as outside:
        checkout(tmp_path / "plain")
    assert "nothing was changed" in outside.value.hint


def test_branches_deleted_and_merged(repo: Path) -> None:
    git(repo, "branch", "done")
    git(repo, "switch", "-qc", "ahead")
    (repo / "b.txt").write_text("b\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "b")
    git(repo, "switch", "-q", "main")
    assert local_branches(repo) == {"main", "done", "ahead"}
    assert merged_branches(repo) == {"main", "done"}
    assert hooks_dir(repo) == repo / ".git" / "hooks"


def test_copy_names_are_unique_per_branch_and_fit_postgres() -> None:
    names = {branches.slug(b) for b in ("a/b", "a-b", "A-B", "feature/" + "x" * 200)}
    assert len(names) == 4 and all(len(n) <= 24 for n in names)
    long_db = "d" * 63
    assert len(branches.branch_db(long_db, "feature/" + "x" * 200).encode()) <= 63
    assert branches.branch_db("chatbi", "main").startswith("chatbi__br_main-")


def test_the_hook_starts_python_only_when_the_branch_differs_from_the_noted_one(repo: Path, tmp_path: Path) -> None:
    """The hook's no-op path ends in the shell: `python` here is a script that only counts its runs."""
    ran = tmp_path / "ran"
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {ran}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    hook = repo / ".git" / "hooks" / "post-checkout"
    state = repo / ".git" / "provision-branch-test"
    hook.write_text(branches.hook_script([str(fake), "-m", "provision"], "/cfg/provision.yaml", repo.resolve(), state))
    hook.chmod(0o755)
    git(repo, "branch", "other")
    git(repo, "worktree", "add", "-q", "-b", "elsewhere", str(tmp_path / "wt"))  # a checkout in another worktree

    def runs() -> int:
        return len(ran.read_text().splitlines()) if ran.exists() else 0

    git(repo, "checkout", "-q", "other")  # no note yet: Python runs
    assert runs() == 1 and "-m provision -c /cfg/provision.yaml branch --quiet" in ran.read_text()
    state.write_text("other\n")
    git(repo, "checkout", "-q", "other")  # the noted branch: nothing starts
    git(repo, "checkout", "-q", "--", "a.txt")  # a file checkout ($3 = 0)
    git(repo, "checkout", "-q", "--detach")  # detached HEAD
    git(tmp_path / "wt", "checkout", "-q", "-b", "yet-another")  # another worktree: not the config's
    assert runs() == 1
    git(repo, "checkout", "-q", "main")  # another branch than the noted one
    assert runs() == 2
    assert os.access(hook, os.X_OK)
