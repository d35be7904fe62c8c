"""Unit-layer fixtures: no Docker engine and no PostgreSQL server, ever.

Every test runs with the PROVISION_* variables of the caller's shell removed, no docker
context, and DOCKER_HOST pointing at a socket that does not exist, so a test that reached
for a real engine by mistake fails fast instead of touching one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_cli

NO_DOCKER = "unix:///nonexistent/provision-unit-tests/docker.sock"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith("PROVISION_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    # An empty docker config dir, so the user's ~/.docker (contexts, credentials) is never read.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    """write_yaml(text, name="provision.yaml", directory=tmp_path) -> the file's path."""

    def write(text: str, name: str = "provision.yaml", directory: Path | None = None) -> Path:
        path = (directory or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_provision(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m provision ...` in a subprocess, in tmp_path, with no Docker engine reachable."""

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        # stdin is an empty pipe: never a terminal, so nothing waits for an answer.
        return run_cli(
            *args, env={"DOCKER_HOST": NO_DOCKER, **(env or {})}, cwd=cwd or tmp_path, timeout=timeout, input=""
        )

    return run
