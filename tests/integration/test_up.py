"""`up`, `wait`, `status`, `down`, `logs`, `url`, `psql` against the real engine (issue 2)."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.conftest import IMAGE, Project, run_cli

pytestmark = pytest.mark.integration


def _url(project: Project, db: str = "postgres") -> urllib.parse.ParseResult:
    result = run_cli("-c", str(project.path), "url", "--show-password", cwd=project.dir)
    assert result.returncode == 0, result.stderr
    parsed = urllib.parse.urlparse(result.stdout.strip())
    return parsed


def _psql_login(project: Project) -> subprocess.CompletedProcess[str]:
    """A real psql login from the host through the published port, as a user would do right after `up`."""
    parsed = _url(project)
    env = {"PGPASSWORD": urllib.parse.unquote(parsed.password or ""), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [
            "psql",
            "-X",
            "-h",
            parsed.hostname or "",
            "-p",
            str(parsed.port),
            "-U",
            "chatbi",
            "-d",
            "postgres",
            "-Atc",
            "select 1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


@pytest.fixture(scope="module")
def sleepy_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image whose init script sleeps 5 s: the temporary init server is up all that time."""
    tag = "provtest-sleepy-init:latest"
    directory = tmp_path_factory.mktemp("sleepy")
    (directory / "10-sleep.sh").write_text("#!/bin/sh\necho 'init: sleeping 5 s'\nsleep 5\n")
    (directory / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY 10-sleep.sh /docker-entrypoint-initdb.d/\n")
    docker_client.images.build(path=str(directory), tag=tag, rm=True)
    return tag


@pytest.mark.parametrize("attempt", range(20))
def test_login_works_right_after_a_cold_up(project: Project, attempt: int) -> None:
    result = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout
    login = _psql_login(project)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "1"


@pytest.mark.parametrize("attempt", range(4))
def test_up_waits_out_a_slow_init_script(project: Project, sleepy_image: str, attempt: int) -> None:
    project.write(image=sleepy_image)
    result = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert result.returncode == 0, result.stderr
    login = _psql_login(project)
    assert login.returncode == 0, login.stderr
    logs = run_cli("-c", str(project.path), "logs", cwd=project.dir)
    assert "init: sleeping 5 s" in logs.stdout + logs.stderr


def test_second_up_reuses_and_a_stopped_container_is_started(project: Project, docker_client: Any) -> None:
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    again = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert again.returncode == 0
    assert "\nreused " in again.stdout
    docker_client.containers.get(project.name).stop(timeout=5)
    started = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert started.returncode == 0, started.stderr
    assert "started container" in started.stdout
    assert _psql_login(project).returncode == 0


def test_container_is_labelled_and_bound_to_loopback(project: Project, docker_client: Any) -> None:
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    attrs = docker_client.containers.get(project.name).attrs
    assert attrs["Config"]["Labels"]["provision.managed"] == "true"
    bindings = attrs["HostConfig"]["PortBindings"]["5432/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_port_drift_is_reported_and_recreate_keeps_the_data(project: Project) -> None:
    project.write(port=_free_port())
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    parsed = _url(project)
    conn = psycopg2.connect(host=parsed.hostname, port=parsed.port, user="chatbi", password="chatbi", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute("CREATE DATABASE survivor")
    conn.close()

    new_port = _free_port()
    project.write(port=new_port)
    drift = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert drift.returncode == 4
    assert f"config says {new_port}" in drift.stderr
    assert "--recreate" in drift.stderr

    fixed = run_cli("-c", str(project.path), "up", "--recreate", cwd=project.dir)
    assert fixed.returncode == 0, fixed.stderr
    parsed = _url(project)
    assert parsed.port == new_port
    conn = psycopg2.connect(host=parsed.hostname, port=new_port, user="chatbi", password="chatbi", dbname="survivor")
    conn.close()


def test_port_taken_by_another_process(project: Project, docker_client: Any) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        project.write(port=port)
        result = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert result.returncode == 4
    assert f"port {port}" in result.stderr
    assert "port:" in result.stderr  # names the key to change
    assert "Traceback" not in result.stderr
    assert not docker_client.containers.list(all=True, filters={"name": project.name})


def test_docker_unreachable_has_its_own_exit_code(project: Project) -> None:
    result = run_cli(
        "-c", str(project.path), "up", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, cwd=project.dir
    )
    assert result.returncode == 3
    assert "unix:///nonexistent/docker.sock" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_json_has_the_fields_and_no_password(project: Project) -> None:
    project.write(password="s3cret-Pa55")
    assert run_cli("-c", str(project.path), "fresh", "--yes", cwd=project.dir).returncode == 0
    result = run_cli("-c", str(project.path), "status", "--json", cwd=project.dir)
    assert result.returncode == 0, result.stderr
    assert "s3cret-Pa55" not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == "running"
    assert data["image"] == IMAGE
    assert data["port"] > 0
    assert data["server_version"].startswith("17.")
    by_name = {db["name"]: db for db in data["databases"]}
    assert by_name["chatbi"]["exists"] is True
    assert by_name["chatbi"]["tables"] == 16  # 15 app tables + alembic_version
    assert by_name["chatbi"]["alembic_versions"] == ["0001_initial_schema"]
    assert by_name["chatbi"]["size_bytes"] > 0
    assert by_name["chatbi"]["stale"] is False
    assert by_name["chatbi_demo"]["tables"] >= 5
    human = run_cli("-c", str(project.path), "status", cwd=project.dir)
    assert "up to date" in human.stdout and "s3cret-Pa55" not in human.stdout


def test_url_masks_the_password_unless_asked(project: Project) -> None:
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    masked = run_cli("-c", str(project.path), "url", "chatbi_demo", cwd=project.dir)
    assert masked.returncode == 0
    assert ":***@" in masked.stdout and masked.stdout.strip().endswith("/chatbi_demo")
    shown = _url(project)
    assert shown.password == "chatbi"


def test_wait_and_psql(project: Project) -> None:
    assert run_cli("-c", str(project.path), "wait", "--timeout", "5", cwd=project.dir).returncode == 4  # no container
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    waited = run_cli("-c", str(project.path), "wait", cwd=project.dir)
    assert waited.returncode == 0 and "ready" in waited.stdout
    psql = run_cli(
        "-c", str(project.path), "psql", "chatbi_demo", cwd=project.dir, input="select current_database() || '!';\n"
    )
    # chatbi_demo does not exist before `fresh`: psql itself says so.
    assert "chatbi_demo" in psql.stdout + psql.stderr
    assert run_cli("-c", str(project.path), "fresh", "--yes", "--skip-demo", cwd=project.dir).returncode == 0
    psql = run_cli("-c", str(project.path), "psql", cwd=project.dir, input="select current_database() || '!';\n")
    assert psql.returncode == 0, psql.stderr
    assert "chatbi!" in psql.stdout


def test_down_keeps_the_volume_unless_confirmed(project: Project, docker_client: Any) -> None:
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    refused = run_cli("-c", str(project.path), "down", "--volumes", cwd=project.dir, input="")
    assert refused.returncode == 9
    assert docker_client.containers.list(all=True, filters={"name": project.name})
    down = run_cli("-c", str(project.path), "down", cwd=project.dir)
    assert down.returncode == 0
    assert not docker_client.containers.list(all=True, filters={"name": project.name})
    assert docker_client.volumes.get(project.name + "-data")
    gone = run_cli("-c", str(project.path), "down", "--volumes", "--yes", cwd=project.dir)
    assert gone.returncode == 0 and "removed" in gone.stdout
    assert not [v for v in docker_client.volumes.list() if v.name == project.name + "-data"]


def test_crash_looping_server_fails_fast_with_the_log(project: Project) -> None:
    project.write(server_settings={"shared_buffers": "bogus"})
    result = run_cli("-c", str(project.path), "up", cwd=project.dir, timeout=60)
    assert result.returncode == 5
    assert "exited" in result.stderr
    assert "shared_buffers" in result.stderr  # the log tail says why


def test_wrong_password_on_an_initialised_volume_is_an_auth_error(project: Project) -> None:
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    assert run_cli("-c", str(project.path), "down", cwd=project.dir).returncode == 0
    project.write(password="another-password")
    result = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert result.returncode == 6
    assert "another-password" not in result.stderr
    assert "down --volumes" in result.stderr


def test_help_of_every_command_has_an_example(tmp_path: Path) -> None:
    for command in ["up", "wait", "status", "down", "logs", "psql", "url", "fresh"]:
        result = run_cli(command, "--help", cwd=tmp_path)
        assert result.returncode == 0
        assert "Example" in result.stdout, command


def test_a_volume_of_another_major_version_names_the_ways_out(project: Project, docker_client: Any) -> None:
    """The volume says it was initialised by PostgreSQL 15 (its PG_VERSION), the image runs 17."""
    assert run_cli("-c", str(project.path), "up", cwd=project.dir).returncode == 0
    docker_client.containers.get(project.name).stop(timeout=10)
    volume = project.data["volume"]
    docker_client.containers.run(
        IMAGE,
        ["sh", "-c", "echo 15 > /data/PG_VERSION"],
        volumes={volume: {"bind": "/data", "mode": "rw"}},
        user="postgres",
        remove=True,
    )
    result = run_cli("-c", str(project.path), "up", cwd=project.dir)
    assert result.returncode == 5, result.stderr
    assert f"the data volume {volume} was initialised by PostgreSQL 15" in result.stderr
    assert "runs PostgreSQL 17" in result.stderr
    assert "image: postgres:15" not in result.stderr  # the hint names the key, not a wrong config line
    for way in ("postgres:15", "snapshot export", "down --volumes` DESTROYS"):
        assert way in result.stderr, way
    doctor = run_cli("-c", str(project.path), "doctor", cwd=project.dir)
    assert doctor.returncode == 12
    assert "initialised by PostgreSQL 15" in doctor.stdout and "down --volumes` DESTROYS" in doctor.stdout
    assert "fix: provision up\n" not in doctor.stdout
