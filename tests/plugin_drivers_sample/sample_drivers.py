"""A sample suite for `.url` and `.params`: real psycopg 3, asyncpg and SQLAlchemy 2 reach each test's own copy."""

import asyncio
import urllib.parse

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool


def count_users(provision_db):
    with provision_db.conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM app_users")
        return cur.fetchone()[0]


@pytest.mark.parametrize("i", range(3))
def test_psycopg3_writes_through_url(provision_db, i):
    with psycopg.connect(provision_db.url) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == provision_db.name
        assert conn.execute("SELECT count(*) FROM app_users").fetchone()[0] == 0, "another test's rows"
        conn.execute("INSERT INTO app_users (email) VALUES (%s)", [f"psycopg-{i}@example.com"])
    # Committed by psycopg 3, seen by the fixture's psycopg2 connection: the same database.
    assert count_users(provision_db) == 1


def test_psycopg3_and_psycopg2_take_params(provision_db):
    with psycopg.connect(**provision_db.params) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == provision_db.name
    import psycopg2

    conn2 = psycopg2.connect(**provision_db.params)
    conn2.close()
    url = urllib.parse.urlsplit(provision_db.url)
    assert (url.hostname, url.port, url.username, urllib.parse.unquote(url.password or "")) == (
        provision_db.params["host"],
        provision_db.params["port"],
        provision_db.params["user"],
        provision_db.params["password"],
    )
    assert f":{provision_db.params['password']}@" not in repr(provision_db)


@pytest.mark.parametrize("i", range(3))
def test_asyncpg_writes_through_url(provision_db, i):
    async def work():
        conn = await asyncpg.connect(provision_db.url)
        try:
            assert await conn.fetchval("SELECT current_database()") == provision_db.name
            assert await conn.fetchval("SELECT count(*) FROM app_users") == 0, "another test's rows"
            await conn.execute("INSERT INTO app_users (email) VALUES ($1)", f"asyncpg-{i}@example.com")
        finally:
            await conn.close()

    asyncio.run(work())
    assert count_users(provision_db) == 1


@pytest.mark.parametrize("i", range(3))
def test_sqlalchemy_with_psycopg2_and_psycopg3_through_url(provision_db, i):
    for driver in ("postgresql", "postgresql+psycopg"):  # the URL as it is, then with psycopg 3
        engine = create_engine(make_url(provision_db.url).set(drivername=driver))
        with Session(engine) as session:
            assert session.execute(text("SELECT current_database()")).scalar() == provision_db.name
            session.execute(text("INSERT INTO app_users (email) VALUES (:e)"), {"e": f"{driver}-{i}@example.com"})
            session.commit()
        engine.dispose()
    assert count_users(provision_db) == 2


def test_connection_opens_psycopg3_on_the_copy(provision_db):
    conn = provision_db.connection("psycopg")
    assert conn is provision_db.connection("psycopg")
    assert conn.execute("SELECT current_database()").fetchone()[0] == provision_db.name


# ---------------------------------------------------------------- provision_tx with SQLAlchemy 2 and psycopg 3


def tx_engine(provision_tx):
    """The recipe: an Engine over the worker's transactional psycopg 3 connection."""
    conn = provision_tx.connection("psycopg")
    return create_engine("postgresql+psycopg://", creator=lambda: conn, poolclass=StaticPool)


@pytest.mark.parametrize("i", range(3))
def test_tx_sqlalchemy_psycopg3_commits_stay_inside_the_test(provision_tx, i):
    with Session(tx_engine(provision_tx)) as session:
        assert session.execute(text("SELECT count(*) FROM app_users")).scalar() == 0, "another test's rows"
        session.execute(text("INSERT INTO app_users (email) VALUES (:e)"), {"e": f"tx-{i}@example.com"})
        session.commit()  # a savepoint: visible to this test, undone after it
        session.execute(text("INSERT INTO app_users (email) VALUES ('undone@example.com')"))
        session.rollback()
        assert session.execute(text("SELECT email FROM app_users")).scalars().all() == [f"tx-{i}@example.com"]


def test_tx_psycopg2_and_psycopg3_share_the_copy_and_both_are_undone(provision_tx):
    with provision_tx.conn.cursor() as cur:
        assert provision_tx.connection("psycopg").execute("SELECT count(*) FROM app_users").fetchone()[0] == 0
        cur.execute("INSERT INTO app_users (email) VALUES ('two@example.com')")
        provision_tx.conn.commit()
    provision_tx.connection("psycopg").execute("INSERT INTO app_users (email) VALUES ('three@example.com')")
    provision_tx.connection("psycopg").commit()


def test_tx_after_both_drivers_the_copy_is_clean(provision_tx):
    with provision_tx.conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM app_users")
        assert cur.fetchone()[0] == 0
    assert provision_tx.connection("psycopg").execute("SELECT count(*) FROM app_users").fetchone()[0] == 0


def test_tx_psycopg3_commit_as_sql_text_is_real(provision_tx):
    provision_tx.connection("psycopg").execute("INSERT INTO app_users (email) VALUES ('escaped@example.com'); COMMIT")


def test_tx_after_a_real_psycopg3_commit_the_next_test_is_clean(provision_tx):
    assert provision_tx.connection("psycopg").execute("SELECT count(*) FROM app_users").fetchone()[0] == 0
