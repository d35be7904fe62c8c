"""The app's tests, unchanged: provision_env points its settings at the session's copy before they are imported."""

import os

import pytest
from envapp import db, users
from sqlalchemy import text


@pytest.fixture(scope="session", autouse=True)
def _record_the_copy(tmp_path_factory):
    """For the runner: which database this process's engine reached."""
    with db.engine.connect() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar()
    marker = tmp_path_factory.getbasetemp().parent / f"env-copy-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    marker.write_text(name)


def test_the_apps_engine_uses_the_session_copy():
    with db.engine.connect() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar()
    assert name == os.environ["POSTGRES_DB"]
    assert "__pool_" in name and name.endswith("_session"), name


def test_the_apps_own_commits_work(tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with db.SessionLocal() as session:
        users.create_user(session, f"committed-{worker}@example.com")
    with db.SessionLocal() as session:
        assert users.count(session, f"committed-{worker}@%") == 1


@pytest.mark.parametrize("i", range(4))
def test_the_recipe_isolates_each_test(db_session, i):
    assert users.count(db_session, "recipe-%") == 0, "another test's rows are visible"
    users.create_user(db_session, f"recipe-{i}@example.com")  # commit() releases a savepoint only
    assert users.count(db_session, "recipe-%") == 1
