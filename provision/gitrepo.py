"""The git branch checked out where the config lives, read from git's own files (HEAD, `gitdir:` links)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import NoGitBranch


@dataclass(frozen=True)
class Checkout:
    """One git checkout: its work tree, its own git directory (per worktree) and the branch checked out."""

    top: Path
    git_dir: Path  # HEAD lives here; for a linked worktree, .git/worktrees/NAME
    branch: str


def _git_dir_of(top: Path) -> Path | None:
    """The git directory that `top/.git` stands for: the directory itself, or a worktree's `gitdir:` link."""
    dot_git = top / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            linked = Path(text[len("gitdir:") :].strip())
            return linked if linked.is_absolute() else (top / linked).resolve()
    return None


def checkout(start: Path) -> Checkout:
    """The checkout containing `start` and its current branch: NoGitBranch outside a repository or on a
    detached HEAD. Only files are read (no `git` process), so the hook's path pays nothing for it."""
    here = start.resolve()
    for top in (here, *here.parents):
        git_dir = _git_dir_of(top)
        if git_dir is None:
            continue
        try:
            head = (git_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
        except OSError as exc:
            raise NoGitBranch(f"cannot read {git_dir / 'HEAD'}: {exc}") from exc
        if not head.startswith("ref: refs/heads/"):
            raise NoGitBranch(
                f"{top} has a detached HEAD ({head[:12]}), not a branch, so there is no branch to follow",
                hint="check out a branch (`git switch NAME`); nothing was changed",
            )
        return Checkout(top, git_dir, head[len("ref: refs/heads/") :])
    raise NoGitBranch(f"{here} is not in a git repository, so there is no branch to follow")


def _git(top: Path, *args: str) -> list[str]:
    try:
        done = subprocess.run(["git", *args], cwd=top, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise NoGitBranch(f"cannot run git: {exc}", hint="install git, or put it on PATH") from exc
    if done.returncode != 0:
        raise NoGitBranch(f"git {' '.join(args)} failed in {top}: {done.stderr.strip()[-300:]}")
    return [line for line in done.stdout.splitlines() if line]


def local_branches(top: Path) -> set[str]:
    """Every local branch of the repository (all worktrees share them)."""
    return set(_git(top, "for-each-ref", "--format=%(refname:short)", "refs/heads/"))


def merged_branches(top: Path) -> set[str]:
    """The local branches merged into the branch checked out here (what `git branch --merged` lists)."""
    return set(_git(top, "for-each-ref", "--merged=HEAD", "--format=%(refname:short)", "refs/heads/"))


def hooks_dir(top: Path) -> Path:
    """Where git looks for hooks: core.hooksPath if set, else the common git directory's hooks/."""
    found = _git(top, "rev-parse", "--git-path", "hooks")
    path = Path(found[0])
    return path if path.is_absolute() else (top / path).resolve()
