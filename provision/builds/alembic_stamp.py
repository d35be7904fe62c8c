"""Stamps a database at an Alembic revision, leaving exactly one row, as `alembic stamp` would."""

from __future__ import annotations

from ..postgres.dbops import Connection

# Alembic's own DDL for its version table; a different shape makes `alembic upgrade` misbehave.
ALEMBIC_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS alembic_version ("
    "version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)


def stamp_alembic(conn: Connection, revision: str) -> None:
    """Replace whatever alembic_version holds with `revision`, in one transaction.

    Two rows (what `INSERT ... ON CONFLICT DO NOTHING` leaves behind) make Alembic fail with
    "more than one head", so the table is emptied first.
    """
    previous = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(ALEMBIC_TABLE_DDL)
            cur.execute("DELETE FROM alembic_version")
            cur.execute("INSERT INTO alembic_version (version_num) VALUES (%s)", [revision])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = previous
