"""docker-compose end to end: Postgres healthy -> one-shot `provision fresh` exits 0 -> the app starts.

Runs the repository's docker-compose.yml with both Compose v1 (Debian's docker-compose 1.29) and
Compose v2 (the `docker compose` plugin, 2.26), each under a
throwaway project name and a free host port, and always takes the project down with its volumes.
The first run builds the provision image (apt + PyPI, a minute or two); later runs reuse the
cached layers, and a change to provision's code rebuilds only the last layer, offline.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from provision.config import CHATBI_TABLES, DEMO_TABLES
from tests.conftest import HEAD

pytestmark = [pytest.mark.integration, pytest.mark.compose]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
IMAGE = os.environ.get("PROVISION_TEST_IMAGE", "postgres:17")
BUILD_TIMEOUT = 900
PROVISION_IMAGE_TAG = "chatbi-provision:local"  # `image:` of the provision service
USER = "chatbi"
# Exercises quoting on the way through compose, the provision container and the app's psql.
PASSWORD = "compose pw'" + secrets.token_hex(4) + '"!'
# Debian's place for site-local CAs; a TLS-intercepting proxy's CA lives there on such networks.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _build_ca_certs() -> str:
    """Extra CAs for pip inside the image build: $PROVISION_BUILD_CA_CERTS, else the host's site-local CAs."""
    if os.environ.get("PROVISION_BUILD_CA_CERTS"):
        return os.environ["PROVISION_BUILD_CA_CERTS"]
    if not LOCAL_CA_DIR.is_dir():
        return ""
    pems = [p.read_text() for p in sorted(LOCAL_CA_DIR.rglob("*.crt")) if "BEGIN CERTIFICATE" in p.read_text()]
    return "\n".join(pem.strip() for pem in pems)


def _timestamp(value: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, e.g. 2026-01-02T03:04:05.123456789Z."""
    main, _, rest = value.rstrip("Z").partition(".")
    fraction = (rest + "000000")[:6]
    return datetime.fromisoformat(f"{main}.{fraction}").replace(tzinfo=timezone.utc)


# Compose v1 (Debian's docker-compose 1.29) and v2 (the `docker compose` CLI plugin).
COMPOSE_VERSIONS = {"v1": ["docker-compose"], "v2": ["docker", "compose"]}


def _compose_command(version: str) -> list[str] | None:
    argv = COMPOSE_VERSIONS[version]
    program = shutil.which(argv[0])
    if program is None:
        return None
    probe = subprocess.run([program, *argv[1:], "version"], capture_output=True, text=True, check=False)
    return [program, *argv[1:]] if probe.returncode == 0 else None


class ComposeProject:
    def __init__(self, name: str, env: dict[str, str], command: list[str]) -> None:
        self.name = name
        self.env = env
        self.command = command
        self.files = [COMPOSE_FILE]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return subprocess.run(
            [*self.command, *files, "-p", self.name, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO,
            timeout=timeout,
        )

    def containers(self, client: Any) -> dict[str, Any]:
        found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.name}"})
        return {c.labels["com.docker.compose.service"]: c for c in found}


@pytest.fixture(scope="session")
def name_prefix(request: pytest.FixtureRequest) -> str:
    """tests/conftest.py's per-session prefix: its cleanup removes leftovers named with it, and only those."""
    conftest = request.config.pluginmanager.get_plugin(str(REPO / "tests" / "conftest.py"))
    return str(getattr(conftest, "NAME_PREFIX", "provtest-"))


@pytest.fixture(params=sorted(COMPOSE_VERSIONS))
def compose_project(request: pytest.FixtureRequest, docker_client: Any, name_prefix: str) -> Iterator[ComposeProject]:
    command = _compose_command(request.param)
    if command is None:
        wanted = " ".join(COMPOSE_VERSIONS[request.param])
        message = f"Compose {request.param} ({wanted}) is not installed; scripts/dev setup installs both"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: integration tests must not be skipped)")
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "CHATBI_", "COMPOSE_"))}
    env.update(
        PROVISION_IMAGE=IMAGE,
        PROVISION_BUILD_CA_CERTS=_build_ca_certs(),
        CHATBI_DB_USER=USER,
        CHATBI_DB_PASSWORD=PASSWORD,
        CHATBI_DB_PORT=str(_free_port()),
    )
    # Compose names the data volume <project>_chatbi-pgdata, so the session cleanup catches it too.
    project = ComposeProject(name_prefix + "compose-" + secrets.token_hex(4), env, command)
    yield project
    down = project.run("down", "-v", "--remove-orphans", "-t", "5", timeout=180)
    assert down.returncode == 0, down.stderr
    assert not project.containers(docker_client), "docker-compose down left containers behind"


def _image_id(client: Any, tag: str) -> str | None:
    try:
        return str(client.images.get(tag).id)
    except Exception:  # noqa: BLE001 - absent (or unreadable): nothing to tidy up later
        return None


def _wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def test_compose_stack_provisions_then_starts_the_app(
    compose_project: ComposeProject, docker_client: Any, cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    previous_image = _image_id(docker_client, PROVISION_IMAGE_TAG)
    started = time.monotonic()
    up = compose_project.run("up", "-d", "--build", timeout=BUILD_TIMEOUT)
    up_seconds = time.monotonic() - started
    if previous_image and previous_image != _image_id(docker_client, PROVISION_IMAGE_TAG):
        # A code change rebuilt the image; drop the untagged old one (best effort: it may be in use).
        try:
            docker_client.images.remove(previous_image)
        except Exception:  # noqa: BLE001
            pass
    assert up.returncode == 0, f"docker-compose up failed after {up_seconds:.0f}s:\n{up.stdout}\n{up.stderr}"
    assert "obsolete" not in up.stderr.lower() and "warn" not in up.stderr.lower(), up.stderr

    containers = compose_project.containers(docker_client)
    assert set(containers) == {"chatbi-postgres", "provision", "app"}, containers

    def exited(service: str) -> bool:
        containers[service].reload()
        return bool(containers[service].attrs["State"]["Status"] == "exited")

    _wait_for("the app container to finish", lambda: exited("app"), timeout=60)
    logs = compose_project.run("logs", "--no-color", "provision", "app").stdout
    db, one_shot, app = (containers[s] for s in ("chatbi-postgres", "provision", "app"))
    db.reload()

    # chatbi-postgres is up and healthy (its healthcheck is pg_isready over TCP).
    assert db.attrs["State"]["Status"] == "running"
    assert db.attrs["State"]["Health"]["Status"] == "healthy", db.attrs["State"]["Health"]

    # The one-shot ran `provision fresh` and exited 0; the app started only after it finished.
    assert one_shot.attrs["State"]["ExitCode"] == 0, logs
    assert app.attrs["State"]["ExitCode"] == 0, logs
    provision_finished = _timestamp(one_shot.attrs["State"]["FinishedAt"])
    provision_started = _timestamp(one_shot.attrs["State"]["StartedAt"])
    app_started = _timestamp(app.attrs["State"]["StartedAt"])
    assert app_started >= provision_finished > provision_started, (provision_started, provision_finished, app_started)
    assert "chatbi: built" in logs and "chatbi_demo: built" in logs, logs
    assert "app: chatbi has" in logs, logs
    assert PASSWORD not in logs and PASSWORD not in up.stdout + up.stderr

    # Both databases are built, stamped and verified, as seen from the host port.
    port = int(compose_project.env["CHATBI_DB_PORT"])

    def query(database: str, sql: str) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()

    tables = {r[0] for r in query("chatbi", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(CHATBI_TABLES) <= tables and len(tables) >= 15, sorted(tables)
    assert query("chatbi", "SELECT version_num FROM alembic_version") == [("0001_initial_schema",)]
    demo_tables = {r[0] for r in query("chatbi_demo", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(DEMO_TABLES) <= demo_tables, sorted(demo_tables)
    assert query("chatbi_demo", "SELECT count(*) FROM orders")[0][0] > 0

    # Stamped: provision's provenance record, and the SQL in the image's wheel is the repository's.
    status = cli(
        "--target", "server", "--host", "127.0.0.1", "--port", str(port), "--user", USER, "status", "--json",
        env={"PROVISION_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert PASSWORD not in status.stdout + status.stderr
    report = {d["name"]: d for d in json.loads(status.stdout)["databases"]}
    for name in ("chatbi", "chatbi_demo"):
        assert report[name]["exists"], report[name]
        assert report[name]["content_hash"], report[name]
        assert report[name]["stale"] is False, report[name]
    assert report["chatbi"]["alembic_versions"] == ["0001_initial_schema"]
    print(f"docker-compose up -d --build: {up_seconds:.1f}s")


def test_compose_one_shot_runs_the_apps_migrations(compose_project: ComposeProject, docker_client: Any) -> None:
    """compose/migrations.yml mounts examples/chatbi-alembic into the one-shot, whose image has
    Alembic (EXTRA_PIP): chatbi ends at the migrations' head before the app starts."""
    compose_project.files.append(REPO / "compose" / "migrations.yml")
    compose_project.env["PROVISION_EXTRA_PIP"] = "alembic sqlalchemy"
    up = compose_project.run("up", "-d", "--build", timeout=BUILD_TIMEOUT)
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    containers = compose_project.containers(docker_client)

    def exited(service: str) -> bool:
        containers[service].reload()
        return bool(containers[service].attrs["State"]["Status"] == "exited")

    _wait_for("the app container to finish", lambda: exited("app"), timeout=120)
    logs = compose_project.run("logs", "--no-color", "provision", "app").stdout
    assert containers["provision"].attrs["State"]["ExitCode"] == 0, logs
    assert containers["app"].attrs["State"]["ExitCode"] == 0, logs
    assert f"run the migrations to {HEAD}" in logs, logs
    assert f"tables at alembic {HEAD};" in logs, logs
    assert PASSWORD not in logs
