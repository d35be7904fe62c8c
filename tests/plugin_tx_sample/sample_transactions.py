"""A sample suite for provision_tx: every test starts from the same data, whatever it commits."""

import os

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool


def count(conn, table="app_users"):
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]


@pytest.mark.parametrize("i", range(20))
def test_each_test_starts_clean_even_after_commit(provision_tx, i):
    assert count(provision_tx.conn) == 0, "another test's rows are visible"
    with provision_tx.conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES (%s)", [f"{i}@example.com"])
    provision_tx.conn.commit()  # the code under test commits: the row stays for this test only
    assert count(provision_tx.conn) == 1


def test_rollback_returns_to_the_last_commit(provision_tx):
    conn = provision_tx.conn
    with conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES ('kept@example.com')")
        conn.commit()
        cur.execute("INSERT INTO app_users (email) VALUES ('undone@example.com')")
        conn.rollback()
        cur.execute("SELECT email FROM app_users")
        assert cur.fetchall() == [("kept@example.com",)]


def test_an_error_inside_the_test_does_not_break_the_next(provision_tx):
    import psycopg2

    with provision_tx.conn.cursor() as cur, pytest.raises(psycopg2.errors.UndefinedTable):
        cur.execute("SELECT * FROM no_such_table")


def test_the_same_worker_keeps_one_copy(provision_tx, tmp_path_factory):
    marker = tmp_path_factory.getbasetemp().parent / f"tx-copy-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    with open(marker, "a") as fh:
        fh.write(provision_tx.name + "\n")


def test_sqlalchemy_session_joins_with_a_savepoint(provision_tx):
    """The recipe: an Engine over the fixture's connection, a Session that joins it with a savepoint."""
    engine = create_engine("postgresql+psycopg2://", creator=lambda: provision_tx.conn, poolclass=StaticPool)
    with engine.connect() as connection:
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        session.execute(text("INSERT INTO app_users (email) VALUES ('orm@example.com')"))
        session.commit()  # releases the Session's savepoint; the test's transaction goes on
        assert session.execute(text("SELECT count(*) FROM app_users")).scalar() == 1
        session.execute(text("INSERT INTO app_users (email) VALUES ('orm-undone@example.com')"))
        session.rollback()
        assert session.execute(text("SELECT email FROM app_users")).scalars().all() == ["orm@example.com"]
        session.close()


def test_a_commit_sent_as_sql_text_is_real_and_the_copy_is_replaced(provision_tx):
    with provision_tx.conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES ('escaped@example.com'); COMMIT")
    # The fixture notices at teardown; the next test on this worker gets another copy.


def test_after_a_real_commit_the_next_test_is_clean_again(provision_tx):
    assert count(provision_tx.conn) == 0


def test_sequences_are_not_rolled_back(provision_tx):
    with provision_tx.conn.cursor() as cur:
        cur.execute("CREATE SEQUENCE IF NOT EXISTS tx_demo_seq")
        cur.execute("SELECT nextval('tx_demo_seq')")
        assert cur.fetchone()[0] >= 1  # the sequence itself is rolled back here; a shared one would not be
