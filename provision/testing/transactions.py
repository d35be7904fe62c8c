"""Transactional test isolation: a connection whose commit() and rollback() stay inside the test's transaction.

One outer transaction lives as long as the connection, with a savepoint at its start; after each
test the connection rolls back to that savepoint (one round trip), so nothing a test writes
outlives it, whatever the database's size. Code under test that calls commit() releases an inner
savepoint and opens a new one instead of committing, and its rollback() returns to the last such
point, so the code behaves within the test as it would against a real database.

What a rollback cannot undo: sequence values (nextval is never rolled back); NOTIFY is never
delivered (nothing commits); statements that refuse to run in a transaction block (CREATE
DATABASE, VACUUM, CREATE INDEX CONCURRENTLY, ...) fail; and a COMMIT sent as SQL text ends the
outer transaction for real: unwind() then reports the copy as dirty, and the fixture replaces it.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

BASE = "provision_test"  # the state every test starts from
WORK = "provision_work"  # where the code under test's last commit() left it


class TransactionalConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that, once isolate() has run, never really commits."""

    _isolated = False
    _work = False

    def isolate(self) -> None:
        """Open the outer transaction and its base savepoint (once per connection)."""
        super().rollback()
        self.autocommit = False
        with self.cursor() as cur:
            cur.execute("SAVEPOINT " + BASE)
        self._isolated = True

    def unwind(self) -> bool:
        """Undo everything since isolate(); False when the outer transaction was ended by a COMMIT in
        SQL text (what it wrote is then committed: the caller must stop using this database)."""
        self._work = False
        try:
            with self.cursor() as cur:
                cur.execute("ROLLBACK TO SAVEPOINT " + BASE)
            return True
        except psycopg2.Error:
            self._isolated = False
            if not self.closed:
                super().rollback()
            return False

    def commit(self) -> None:
        if not self._isolated:
            super().commit()
            return
        # The work stays visible to the test, and is undone by unwind() all the same.
        with self.cursor() as cur:
            cur.execute(f"RELEASE SAVEPOINT {WORK}; SAVEPOINT {WORK}" if self._work else "SAVEPOINT " + WORK)
        self._work = True

    def rollback(self) -> None:
        if not self._isolated:
            super().rollback()
            return
        with self.cursor() as cur:
            cur.execute("ROLLBACK TO SAVEPOINT " + (WORK if self._work else BASE))
