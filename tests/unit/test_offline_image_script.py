"""compose/build-offline-image.sh's arguments: which major and extensions a tag asks for, refused before any work."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "compose" / "build-offline-image.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # The unit conftest points DOCKER_HOST at a socket that does not exist: a valid request gets
    # as far as the engine check (exit 3) and no further.
    return subprocess.run(
        [shutil.which("bash") or "bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--tag", "postgres:18"),
        ("--tag", "postgres:15"),
        ("--tag", "postgres:16"),
        ("--tag", "mine:16", "--major", "16"),
        ("--tag", "postgres:18-pgvector", "--extensions", "pgvector"),
        ("--tag", "postgres:17-pgvector-postgis", "--extensions", "pgvector,postgis"),
        ("--tag", "mine:latest", "--major", "18", "--extensions", "postgis"),
    ],
)
def test_supported_majors_and_extensions_reach_the_engine_check(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 3, result.stderr
    assert "cannot reach the Docker engine" in result.stderr


def test_the_major_flag_wins_over_the_tag() -> None:
    assert run("--tag", "postgres:18", "--major", "14").returncode == 2
    assert run("--tag", "postgres:14", "--major", "18").returncode == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tag", "postgres:15", "--extensions", "pgvector"), "no postgresql-15-pgvector"),
        (("--tag", "postgres:16-pgvector", "--extensions", "pgvector"), "no extension packages fit it"),
        (("--tag", "postgres:18", "--extensions", "timescaledb"), "unknown extension: timescaledb"),
        (("--tag", "postgres:14"), "PostgreSQL 14 cannot be built here"),
    ],
)
def test_what_cannot_be_built_is_refused(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
