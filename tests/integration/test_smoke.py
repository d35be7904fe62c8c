"""One real `fresh` on a scratch container: the integration smoke test that runs under every supported Python."""

from __future__ import annotations

import json
import sys

import pytest

from provision.config import CHATBI_TABLES
from tests.conftest import Project, fresh, query

pytestmark = pytest.mark.integration


def test_fresh_on_a_scratch_container(project: Project) -> None:
    project.write(
        databases={
            "chatbi": {
                "sql": "builtin:chatbi/init_app_tables.sql",
                "alembic_revision": "0001_initial_schema",
                "tables": list(CHATBI_TABLES),
            }
        }
    )
    result = fresh(project, "--yes", "--json")
    assert result.returncode == 0, f"Python {sys.version.split()[0]}: {result.stderr}"
    assert json.loads(result.stdout)["databases"][0]["tables"] == len(CHATBI_TABLES) + 1
    assert query(project, "chatbi", "SELECT version_num FROM alembic_version") == [("0001_initial_schema",)]
