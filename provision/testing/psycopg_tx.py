"""The psycopg 3 twin of transactions.TransactionalConnection, imported only when a test asks for psycopg 3."""

from __future__ import annotations

from typing import Any

import psycopg

from .transactions import BASE, WORK


class TransactionalConnection(psycopg.Connection[Any]):
    """A psycopg 3 connection that, once isolate() has run, never really commits: commit() and
    rollback() move between savepoints inside one outer transaction, as the psycopg2 one does."""

    _isolated = False
    _work = False

    def isolate(self) -> None:
        """Open the outer transaction and its base savepoint (once per connection)."""
        super().rollback()
        self.autocommit = False
        self.execute("SAVEPOINT " + BASE)
        self._isolated = True

    def unwind(self) -> bool:
        """Undo everything since isolate(); False when a COMMIT sent as SQL text ended the outer
        transaction (what it wrote is committed: the caller must stop using this database)."""
        self._work = False
        try:
            self.execute("ROLLBACK TO SAVEPOINT " + BASE)
            return True
        except psycopg.Error:
            self._isolated = False
            if not self.closed:
                super().rollback()
            return False

    def commit(self) -> None:
        if not self._isolated:
            super().commit()
            return
        # The work stays visible to the test, and is undone by unwind() all the same.
        if self._work:
            self.execute("RELEASE SAVEPOINT " + WORK)
        self.execute("SAVEPOINT " + WORK)
        self._work = True

    def rollback(self) -> None:
        if not self._isolated:
            super().rollback()
            return
        self.execute("ROLLBACK TO SAVEPOINT " + (WORK if self._work else BASE))
