"""A sample suite whose copies meet each fate once recycling judges them: three tests only read
(reused), two change rows (put back), one changes the schema (dropped)."""

import pytest


@pytest.mark.parametrize("i", range(3))
def test_only_reads(provision_db, i):
    cur = provision_db.conn.cursor()
    cur.execute("SELECT count(*) FROM app_users")
    assert cur.fetchone()[0] == 0


@pytest.mark.parametrize("i", range(2))
def test_changes_rows(provision_db, i):
    cur = provision_db.conn.cursor()
    cur.execute("SELECT count(*) FROM app_users")
    assert cur.fetchone()[0] == 0, "another test's rows are visible"
    cur.execute("INSERT INTO app_users (email, username) VALUES (%s, %s)", [f"row{i}@example.com", f"row{i}"])
    provision_db.conn.commit()


def test_changes_the_schema(provision_db):
    cur = provision_db.conn.cursor()
    cur.execute("ALTER TABLE app_users ADD COLUMN extra int")
    provision_db.conn.commit()
