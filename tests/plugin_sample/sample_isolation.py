"""A sample suite for the pytest plugin: 50 tests, each writing to its own copy of chatbi."""

import os

import pytest


@pytest.mark.parametrize("i", range(48))
def test_each_test_gets_a_private_chatbi(provision_db, i):
    cur = provision_db.conn.cursor()
    cur.execute("SELECT count(*) FROM app_users")
    assert cur.fetchone()[0] == 0, "another test's rows are visible"
    marker = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{i}@example.com"
    cur.execute("INSERT INTO app_users (email, username) VALUES (%s, %s)", [marker, f"user{i}"])
    provision_db.conn.commit()
    cur.execute("SELECT email FROM app_users")
    assert cur.fetchall() == [(marker,)]
    cur.execute("SELECT version_num FROM alembic_version")
    # The runner says which revision the configuration builds (0001 for the bootstrap SQL alone).
    assert cur.fetchall() == [(os.environ.get("SAMPLE_EXPECT_REVISION", "0001_initial_schema"),)]


def test_factory_gives_demo_data(provision_db_factory):
    demo = provision_db_factory("chatbi_demo")
    cur = demo.conn.cursor()
    cur.execute("SELECT count(*) FROM orders")
    assert cur.fetchone()[0] > 1000
    cur.execute("DELETE FROM order_items")
    demo.conn.commit()


def test_demo_copy_was_not_reused_dirty(provision_db_factory):
    demo = provision_db_factory("chatbi_demo")
    cur = demo.conn.cursor()
    cur.execute("SELECT count(*) FROM order_items")
    assert cur.fetchone()[0] > 1000
