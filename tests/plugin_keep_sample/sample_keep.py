"""A sample suite with one failing test: under provision_keep = failed its copy, and only its, is kept."""

import pytest


def insert(db, email):
    with db.conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES (%s)", [email])
    db.conn.commit()


@pytest.mark.parametrize("i", range(2))
def test_passes(provision_db, i):
    insert(provision_db, f"passed-{i}@example.com")


def test_fails_after_writing(provision_db):
    insert(provision_db, "evidence@example.com")
    assert provision_db.name == "anything else", "the row above is what a developer wants to look at"
