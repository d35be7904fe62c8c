"""Benchmark: `git checkout` between two branches whose databases exist, through provision's post-checkout hook.

Two cases: the 8 MB ChatBI database (examples/chatbi-alembic; `feature` adds migration 0003) and
a ~257 MB chatbi_demo (`demo_scale: 50`). Each is a git repository in a temporary directory with
its own container (removed at the end). Every iteration times, in the same process and in
alternating order, `git checkout other` with the hook installed (the databases switch: renames)
and the same checkout with the hook moved aside (the baseline), and likewise a checkout that
stays on the branch (the hook's no-op path, which ends in the shell). Reports medians, min-max
and the median of the paired differences (hook - baseline, within one iteration); and, as the floor
of any Python command, `provision --version`.

Run: .venv/bin/python bench/branch_switch.py [--iterations 15] [--case chatbi|demo]
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
from collections.abc import Callable
from pathlib import Path

import yaml

from provision import api
from provision.config import Config, load_config
from provision.postgres import dbops

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "chatbi-alembic"
ADD_0003 = """revision = "0003_saved_queries_shared"
down_revision = "0002_chat_sessions_pinned_at"

from alembic import op
import sqlalchemy as sa


def upgrade() -> None:
    op.add_column("saved_queries", sa.Column("shared_at", sa.TIMESTAMP(timezone=True)))


def downgrade() -> None:
    op.drop_column("saved_queries", "shared_at")
"""


def git(top: Path, *args: str) -> float:
    """Run git in `top`; the wall-clock seconds of the whole command (the hook included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x.invalid", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")
    started = time.perf_counter()
    done = subprocess.run(["git", *args], cwd=top, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "Error" in done.stderr:
        sys.exit(f"git {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return seconds


def make_case(case: str, top: Path) -> Config:
    """A git repository with `main` and `other`, a config, and both branches' databases on the server."""
    top.mkdir()
    name = f"provision-bench-branch-{case}"
    data: dict[str, object] = {"container": name, "volume": name + "-data", "port": 0, "cleanup": "sync"}
    if case == "chatbi":
        shutil.copy(EXAMPLE / "alembic.ini", top / "alembic.ini")
        shutil.copytree(EXAMPLE / "migrations", top / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
        example = yaml.safe_load((EXAMPLE / "provision.yaml").read_text())
        data["databases"] = {"chatbi": example["databases"]["chatbi"]}
    else:
        data["demo_scale"] = 50
        data["databases"] = {"chatbi_demo": {"sql": "builtin:chatbi_demo/demo_data.sql", "demo": True}}
    (top / "provision.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (top / ".gitignore").write_text("__pycache__/\n")
    git(top, "init", "-q", "-b", "main")
    git(top, "add", "-A")
    git(top, "commit", "-qm", "base")
    git(top, "switch", "-qc", "other")
    if case == "chatbi":
        (top / "migrations" / "versions" / "0003_saved_queries_shared.py").write_text(ADD_0003)
    else:
        (top / "NOTES.md").write_text("other\n")
    git(top, "add", "-A")
    git(top, "commit", "-qm", "other")
    git(top, "switch", "-q", "main")
    cfg = load_config(top / "provision.yaml", env={})
    api.fresh(cfg, yes=True)
    api.branch_install_hook(cfg)
    git(top, "checkout", "-q", "other")  # builds other's databases (the first time is a build)
    git(top, "checkout", "-q", "main")
    api.wait_for_housekeeping(cfg)
    return cfg


def owner(cfg: Config) -> str:
    from provision.builds.branches import owner as owner_of

    with api.connect_admin(cfg) as admin:
        rows = dbops.list_databases(admin)
    return str(owner_of(rows[cfg.databases[0].name]))


def pair(first: Callable[[], float], second: Callable[[], float], flip: bool) -> tuple[float, float]:
    if flip:
        b = second()
        return first(), b
    a = first()
    return a, second()


def run_case(case: str, iterations: int) -> None:
    top = Path(tempfile.mkdtemp(prefix="bench-branch-")) / case
    cfg = make_case(case, top)
    hook = top / ".git" / "hooks" / "post-checkout"
    aside = hook.with_name("post-checkout.off")
    with api.connect_admin(cfg) as admin:
        size = dbops.database_size(admin, cfg.databases[0].name)
    switch: dict[str, list[float]] = {"hook": [], "baseline": []}
    floor: list[float] = []  # `provision --version`: the interpreter and the CLI's imports, no server
    noop: dict[str, list[float]] = {"hook": [], "baseline": []}

    def hooked(branch: str) -> float:
        return git(top, "checkout", "-q", branch)

    def baseline(branch: str) -> float:
        # Without the hook, to the other branch and back, so the databases still follow `main` afterwards.
        hook.rename(aside)
        try:
            seconds = git(top, "checkout", "-q", branch)
            git(top, "checkout", "-q", "main")
        finally:
            aside.rename(hook)
        return seconds

    try:
        for i in range(iterations):
            flip = i % 2 == 1
            # A real switch: main -> other through the hook, against the same checkout without it.
            h, b = pair(lambda: hooked("other"), lambda: baseline("other"), flip)
            assert owner(cfg) == "other", "the hook did not switch the databases"
            git(top, "checkout", "-q", "main")  # and back through the hook (a switch too, untimed here)
            assert owner(cfg) == "main"
            switch["hook"].append(h)
            switch["baseline"].append(b)
            # Nothing to do: a checkout that stays on main.
            h, b = pair(lambda: hooked("main"), lambda: baseline("main"), flip)
            noop["hook"].append(h)
            noop["baseline"].append(b)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "provision", "--version"], capture_output=True, check=True)
            floor.append(time.perf_counter() - started)
    finally:
        api.down(cfg, volumes=True)
        shutil.rmtree(top.parent, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{case}: {cfg.databases[0].name}, {size / 1e6:.0f} MB, {iterations} iterations, load average {load:.1f}")
    print(f"  `provision --version` (Python start and imports): median {statistics.median(floor):.3f}s")
    for label, timings in (("switch (renames)", switch), ("no-op checkout", noop)):
        for side in ("hook", "baseline"):
            values = timings[side]
            print(
                f"  {label:<17} {side:<8}: median {statistics.median(values):.3f}s "
                f"(min {min(values):.3f}, max {max(values):.3f})"
            )
        diffs = [h - b for h, b in zip(timings["hook"], timings["baseline"], strict=True)]
        print(f"  {label:<17} paired hook - baseline: median {statistics.median(diffs):+.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--case", choices=["chatbi", "demo"], action="append")
    args = parser.parse_args()
    for case in args.case or ["chatbi", "demo"]:
        run_case(case, args.iterations)


if __name__ == "__main__":
    main()
