"""A non-editable install into a new venv works from any directory, with the SQL inside the wheel (issue 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def install_wheel(tmp_path: Path) -> Path:
    """Build the wheel and install it into a new venv; returns the venv."""
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
    return venv


def test_wheel_install_runs_from_anywhere_with_its_sql(tmp_path: Path) -> None:
    venv = install_wheel(tmp_path)
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


def test_the_installed_wheel_needs_neither_the_docker_cli_nor_psql(tmp_path: Path, project: Project) -> None:
    """Issue 14: up, fresh, status and down against the docker target with only the SDK; `psql` says
    what is missing. PATH holds the venv alone: no docker CLI, no psql, no /usr/bin."""
    venv = install_wheel(tmp_path)
    path = str(venv / "bin")
    assert shutil.which("docker", path=path) is None and shutil.which("psql", path=path) is None
    env = {"PATH": path, "HOME": str(tmp_path)}

    def provision(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "provision"), "-c", str(project.path), *args],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
        )  # fmt: skip

    up = provision("up")
    assert up.returncode == 0, up.stderr
    built = provision("fresh", "--yes", "--json")
    assert built.returncode == 0, built.stderr
    assert {d["name"]: d["tables"] for d in json.loads(built.stdout)["databases"]}["chatbi"] == 16
    status = provision("status", "--json")
    assert status.returncode == 0 and all(d["exists"] for d in json.loads(status.stdout)["databases"])
    psql = provision("psql")
    assert psql.returncode == 2, psql.stderr
    assert "needs the docker CLI" in psql.stderr and "neither is on PATH" in psql.stderr
    assert "provision url --show-password" in psql.stderr and "Traceback" not in psql.stderr
    down = provision("down", "--volumes", "--yes")
    assert down.returncode == 0, down.stderr
