"""A non-editable install into a new venv works from any directory, with the SQL inside the wheel (issue 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_wheel_install_runs_from_anywhere_with_its_sql(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("provision-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    plan = subprocess.run(
        [str(venv / "bin" / "provision"), "fresh", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    assert "chatbi/init_app_tables.sql" in plan.stdout or "init_app_tables.sql" in plan.stdout
    assert "demo_data.sql" in plan.stdout

    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from provision.config import builtin_sql_dir; print(builtin_sql_dir())"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=60,
    )
    assert str(venv) in located.stdout, "the SQL must come from the installed wheel, not the source tree"
    assert Path(located.stdout.strip(), "chatbi", "init_app_tables.sql").is_file()
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "provision", "--version"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=60,
    )
    assert version.returncode == 0 and "provision" in version.stdout
    typed = Path(located.stdout.strip()).parent / "py.typed"
    assert typed.is_file()
