"""Per-test copies for Django: point Django's connection at a database of provision's (imported only when asked for)."""

from __future__ import annotations

ALIAS = "default"  # the one Django database that gets a copy per test


def use_database(name: str) -> str:
    """Point Django's default connection at database `name` from its next query on; the name it had.

    The connection is closed first: an open one would go on talking to the database it had."""
    from django.db import connections

    conn = connections[ALIAS]
    conn.close()
    previous: str = conn.settings_dict["NAME"]
    conn.settings_dict["NAME"] = name
    return previous
