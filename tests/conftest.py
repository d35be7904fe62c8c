"""Shared fixtures: a real Docker engine, throwaway provision configs, and a way to run the real CLI."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("PROVISION_TEST_IMAGE", "postgres:17")
# Per test session, so the session's cleanup never touches another run's containers.
NAME_PREFIX = f"provtest-{secrets.token_hex(2)}-"


def _docker_client() -> Any:
    import docker

    return docker.from_env()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The real engine. Under CI=true a missing engine fails the run instead of skipping it."""
    try:
        client = _docker_client()
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:  # noqa: BLE001 - any failure here means "no usable engine"
        message = f"Docker engine or image {IMAGE} not available: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: integration tests must not be skipped)")
        pytest.skip(message)
    yield client
    remove_test_objects(client)


def require_image(docker_client: Any, image: str, how: str, *, ci_must_have: bool = True) -> str:
    """`image` if the engine has it; else a skip that says how to get it. Under CI=true an image
    that scripts/dev test builds must be there, so its absence fails instead."""
    import docker.errors

    try:
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        message = f"{image} is not here: {how}"
        if ci_must_have and os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: scripts/dev test builds it, so it must not be skipped)")
        pytest.skip(message)
    return image


def remove_test_objects(client: Any, prefix: str = NAME_PREFIX) -> None:
    """Remove only what this test session created: provision-managed containers and volumes named `prefix`*."""
    import docker.errors

    for container in client.containers.list(all=True, filters={"label": "provision.managed=true"}):
        if container.name.startswith(prefix):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True, v=True)
    for volume in client.volumes.list():
        if volume.name.startswith(prefix):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)


@dataclass
class Project:
    """A throwaway provision config with its own container, volume and port."""

    path: Path
    name: str
    data: dict[str, Any]

    def write(self, **changes: Any) -> Project:
        self.data.update(changes)
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True))
        return self

    def config(self, **overrides: Any) -> Any:
        from provision.config import load_config

        return load_config(self.path, overrides=overrides, env={})

    @property
    def dir(self) -> Path:
        return self.path.parent


def project_data(name: str, **changes: Any) -> dict[str, Any]:
    """A config for a private container `name`: its own volume, a Docker-chosen port, sync tidy-up."""
    data: dict[str, Any] = {
        "container": name,
        "volume": name + "-data",
        "image": IMAGE,
        "port": 0,
        "cleanup": "sync",
        "timeout": 60,
    }
    data.update(changes)
    return data


@pytest.fixture
def project(tmp_path: Path, docker_client: Any) -> Iterator[Project]:
    """ChatBI's databases (the built-in SQL) in a private container on a Docker-chosen port."""
    name = NAME_PREFIX + secrets.token_hex(4)
    proj = Project(tmp_path / "provision.yaml", name, project_data(name)).write()
    yield proj
    remove_test_objects(docker_client, name)


@pytest.fixture
def make_project(tmp_path: Path, docker_client: Any) -> Iterator[Callable[..., Project]]:
    """Like `project`, but several per test, each in its own directory."""
    made: list[str] = []

    def make(**data: Any) -> Project:
        name = NAME_PREFIX + secrets.token_hex(4)
        made.append(name)
        directory = tmp_path / name
        directory.mkdir()
        return Project(directory / "provision.yaml", name, project_data(name, **data)).write()

    yield make
    for name in made:
        remove_test_objects(docker_client, name)


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `provision` program in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "provision", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        input=input,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


# ---------------------------------------------------------------- reading a project's databases


def connect(project: Project, dbname: str, autocommit: bool = True) -> Any:
    """A psycopg2 connection to one of the project's databases, found through the real `provision url`."""
    result = run_cli("-c", str(project.path), "url", "--show-password", cwd=project.dir)
    assert result.returncode == 0, result.stderr
    url = urllib.parse.urlparse(result.stdout.strip())
    conn = psycopg2.connect(
        host=url.hostname,
        port=url.port,
        user=url.username,
        password=urllib.parse.unquote(url.password or ""),
        dbname=dbname,
    )
    conn.autocommit = autocommit
    return conn


def query(project: Project, dbname: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = connect(project, dbname)
    try:
        cur = conn.cursor()
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def databases(project: Project) -> set[str]:
    return {r[0] for r in query(project, "postgres", "SELECT datname FROM pg_database")}


def fresh(project: Project, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the real `provision fresh` for the project."""
    return run_cli("-c", str(project.path), "fresh", *args, cwd=project.dir, **kwargs)


# ---------------------------------------------------------------- the app's own migrations

ALEMBIC_EXAMPLE = REPO / "examples" / "chatbi-alembic"
HEAD = "0002_chat_sessions_pinned_at"


def use_alembic_example(project: Project, *, demo: bool = False) -> Project:
    """Copy examples/chatbi-alembic (alembic.ini, migrations/) beside the project's config and build
    its databases the example's way: bootstrap SQL, stamp 0001, then the app's migrations to head."""
    import shutil

    shutil.copy(ALEMBIC_EXAMPLE / "alembic.ini", project.dir / "alembic.ini")
    shutil.copytree(
        ALEMBIC_EXAMPLE / "migrations", project.dir / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    example = yaml.safe_load((ALEMBIC_EXAMPLE / "provision.yaml").read_text())
    databases = {name: spec for name, spec in example["databases"].items() if demo or name == "chatbi"}
    return project.write(databases=databases)


def alembic_cli(project: Project, *args: str, database: str = "chatbi") -> subprocess.CompletedProcess[str]:
    """Run the real `alembic` of this environment against one of the project's databases."""
    url = run_cli("-c", str(project.path), "url", database, "--show-password", cwd=project.dir).stdout.strip()
    alembic = Path(sys.executable).parent / "alembic"
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [str(alembic), "-c", "alembic.ini", *args], capture_output=True, text=True, cwd=project.dir, env=env, timeout=60
    )


# ---------------------------------------------------------------- the pytest plugin

SAMPLE = REPO / "tests" / "plugin_sample"
TX_SAMPLE = REPO / "tests" / "plugin_tx_sample"
RECYCLE_SAMPLE = REPO / "tests" / "plugin_recycle_sample"
DRIVERS_SAMPLE = REPO / "tests" / "plugin_drivers_sample"
ENV_SAMPLE = REPO / "tests" / "plugin_env_sample"
KEEP_SAMPLE = REPO / "tests" / "plugin_keep_sample"
DJANGO_EXAMPLE = REPO / "examples" / "django"


def use_django_example(project: Project) -> Project:
    """Copy examples/django (manage.py, settings, the shop app and its migrations, pytest.ini)
    beside the project's config, and build its database the example's way: `manage.py migrate`."""
    import shutil

    shutil.copytree(
        DJANGO_EXAMPLE, project.dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "provision.yaml")
    )
    example = yaml.safe_load((DJANGO_EXAMPLE / "provision.yaml").read_text())
    return project.write(databases=example["databases"])


def run_django(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the copied Django example's own suite under real pytest-django, as its developer would:
    in its directory, with this environment's bin first on PATH (an activated venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "PYTEST_", "POSTGRES_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.dir,
        timeout=600,
    )


def run_sample(
    project: Project, *args: str, revision: str | None = None, sample: Path = SAMPLE
) -> subprocess.CompletedProcess[str]:
    """Run a sample suite for the pytest plugin in its own pytest process, against the project's config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "PYTEST_"))}
    if revision:
        env["SAMPLE_EXPECT_REVISION"] = revision
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "python_files=sample_*.py",
            "--rootdir",
            str(project.dir),
            "--provision-config",
            str(project.path),
            str(sample),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.dir,
        timeout=600,
    )


def list_databases(docker_client: Any, container: str) -> list[str]:
    """The databases of a container, read with psql inside it."""
    code, out = docker_client.containers.get(container).exec_run(
        ["psql", "-U", "chatbi", "-d", "postgres", "-Atc", "SELECT datname FROM pg_database"]
    )
    assert code == 0, out
    return out.decode().split()


# ---------------------------------------------------------------- a project that is a git repository (issue 24)

ADD_0003 = '''"""Add saved_queries.shared_at."""
import sqlalchemy as sa
from alembic import op

revision = "0003_saved_queries_shared"
down_revision = "0002_chat_sessions_pinned_at"


def upgrade() -> None:
    op.add_column("saved_queries", sa.Column("shared_at", sa.TIMESTAMP(timezone=True)))


def downgrade() -> None:
    op.drop_column("saved_queries", "shared_at")
'''


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real git in `repo`, with an identity for commits; fails the test when git does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def make_repo(project: Project) -> Project:
    """examples/chatbi-alembic (chatbi only) as a git repository: `main` at 0002, `feature` adding 0003
    (saved_queries.shared_at); `main` checked out."""
    use_alembic_example(project)
    (project.dir / ".gitignore").write_text("__pycache__/\n")
    git(project.dir, "init", "-q", "-b", "main")
    git(project.dir, "add", "-A")
    git(project.dir, "commit", "-qm", "base")
    git(project.dir, "switch", "-qc", "feature")
    (project.dir / "migrations" / "versions" / "0003_saved_queries_shared.py").write_text(ADD_0003)
    git(project.dir, "add", "-A")
    git(project.dir, "commit", "-qm", "0003: saved_queries.shared_at")
    git(project.dir, "switch", "-q", "main")
    return project
