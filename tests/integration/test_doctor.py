"""`provision doctor` against the real engine: healthy, a wrong DOCKER_HOST, a stopped engine, a taken port,
a killed run's leftovers (issue 13)."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, fresh, run_cli

pytestmark = pytest.mark.integration

NAMES = [
    "engine address",
    "socket",
    "engine",
    "image",
    "disk",
    "container",
    "port",
    "server",
    "copy-on-write",
    "leftovers",
    "templates",
    "lock",
]


def doctor(project: Project, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("-c", str(project.path), "doctor", *args, cwd=project.dir, env=env)


def checks(result: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_a_healthy_setup_passes_every_check(project: Project) -> None:
    assert fresh(project, "--yes").returncode == 0
    result = doctor(project, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    found = checks(result)
    assert list(found) == NAMES
    assert all(c["status"] != "fail" for c in found.values()), found
    assert found["engine"]["detail"].startswith("Docker ") and "API 1." in found["engine"]["detail"]
    assert found["container"]["status"] == "ok" and found["server"]["status"] == "ok"
    text = doctor(project).stdout
    assert "  ok  engine" in text and "Traceback" not in text


def test_a_wrong_docker_host_is_named(project: Project, tmp_path: Path) -> None:
    wrong = f"unix://{tmp_path}/no-engine-here.sock"
    result = doctor(project, env={"DOCKER_HOST": wrong})
    assert result.returncode == 12, result.stdout + result.stderr
    assert f"{wrong}, from DOCKER_HOST" in result.stdout
    assert "FAIL  socket" in result.stdout and "does not exist" in result.stdout
    assert "fix:" in result.stdout and "Traceback" not in result.stderr


def test_a_stopped_engine_fails_with_a_fix(project: Project, tmp_path: Path) -> None:
    """The socket of an engine that stopped: the file is there, nothing answers."""
    path = str(tmp_path / "stopped.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: connections are refused, as after the engine died
    try:
        result = doctor(project, "--json", env={"DOCKER_HOST": f"unix://{path}"})
    finally:
        stale.close()
    assert result.returncode == 12, result.stdout + result.stderr
    engine = checks(result)["engine"]
    assert engine["status"] == "fail" and path in engine["detail"] and engine["fix"]


def test_a_taken_port_fails_with_a_fix(project: Project) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        project.write(port=port)
        result = doctor(project, "--json")
    assert result.returncode == 12, result.stdout + result.stderr
    found = checks(result)["port"]
    assert found["status"] == "fail" and str(port) in found["detail"] and "port" in (found["fix"] or "")


def test_leftovers_of_a_killed_run_are_reported(project: Project) -> None:
    assert fresh(project, "--yes").returncode == 0
    killed = fresh(project, "--yes", "--no-cache", env={"PROVISION_KILL_AT": "sql-loaded"})
    assert killed.returncode == -signal.SIGKILL
    result = doctor(project, "--json")
    assert result.returncode == 0, result.stdout + result.stderr  # a warning: the next run tidies them
    found = checks(result)["leftovers"]
    assert found["status"] == "warn" and "__stage_" in found["detail"] and "fresh" in (found["fix"] or "")
    assert fresh(project, "--yes").returncode == 0
    assert checks(doctor(project, "--json"))["leftovers"]["status"] == "ok"


def test_status_says_why_a_database_is_stale(project: Project) -> None:
    """Issue 13, truthful staleness: a different variable is not "sources changed"."""
    (project.dir / "demo.sql").write_text("CREATE TABLE t (n int);\nINSERT INTO t SELECT generate_series(1, :scale);\n")
    project.write(databases={"app": {"sql": "demo.sql", "demo": True, "tables": ["t"]}})
    assert fresh(project, "--yes", "--demo-scale", "3").returncode == 0
    status = run_cli("-c", str(project.path), "status", "--json", cwd=project.dir)
    db = json.loads(status.stdout)["databases"][0]
    assert db["stale"] is True
    assert db["stale_reason"] == "variable scale is 3 in the database, 1 in the config"
    assert (
        "STALE: variable scale is 3 in the database, 1 in the config"
        in run_cli("-c", str(project.path), "status", cwd=project.dir).stdout
    )
    (project.dir / "demo.sql").write_text(
        "CREATE TABLE t (n bigint);\nINSERT INTO t SELECT generate_series(1, :scale);\n"
    )
    db = json.loads(run_cli("-c", str(project.path), "status", "--json", cwd=project.dir).stdout)["databases"][0]
    assert db["stale_reason"] == "sources changed: demo.sql; variable scale is 3 in the database, 1 in the config"
    assert fresh(project, "--yes").returncode == 0
    db = json.loads(run_cli("-c", str(project.path), "status", "--json", cwd=project.dir).stdout)["databases"][0]
    assert db["stale"] is False and db["stale_reason"] is None
