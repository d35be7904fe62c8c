"""The pytest plugin for any kind of app: any driver via `.url`, settings read at import, a failed test kept."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import DRIVERS_SAMPLE, Project, list_databases, run_sample

pytestmark = pytest.mark.integration


def test_psycopg3_asyncpg_and_sqlalchemy_reach_each_copy_through_url(project: Project, docker_client: Any) -> None:
    """Real psycopg 3, asyncpg and SQLAlchemy 2 (psycopg2 and psycopg 3) write through `.url`, each
    test sees only its own copy, and provision_tx undoes what SQLAlchemy 2 over psycopg 3 commits."""
    result = run_sample(project, "-p", "no:randomly", sample=DRIVERS_SAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "18 passed" in result.stdout, result.stdout
    assert not [n for n in list_databases(docker_client, project.name + "-test") if "__pool_" in n]
