"""Every name provision gives a database, and the rules a configured name must follow."""

from __future__ import annotations

import hashlib
import re

from .errors import ConfigError

# Names the server needs, or that provision derives its own databases from.
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
MAX_IDENTIFIER_BYTES = 63
# The longest suffix provision appends: a pool copy's "<8 hex>_<serial>" or a 16-hex hash.
_SUFFIX_ROOM = 24
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def validate_database_name(name: str, where: str) -> str:
    """`name`, if it can be a configured database: a plain identifier, at most 63 bytes, no '__', not reserved."""
    if not isinstance(name, str) or not _DB_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid database name {name!r} in {where}",
            hint="use letters, digits, '_' and '-', starting with a letter or '_' (no quotes, spaces or ';')",
        )
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ConfigError(
            f"database name {name[:20]}... in {where} is {len(name.encode())} bytes; PostgreSQL allows 63",
            hint="choose a shorter name",
        )
    if "__" in name:
        raise ConfigError(
            f"database name {name!r} in {where} contains '__', which provision keeps for its own copies",
            hint="use a single '_' instead",
        )
    if name in RESERVED_DATABASES:
        raise ConfigError(
            f"database name {name!r} in {where} is reserved by PostgreSQL and cannot be rebuilt",
            hint="configure your application's own databases only",
        )
    return name


def derived_name(database: str, kind: str, suffix: str = "") -> str:
    """The name of one of provision's own copies of `database` (staging, old, template, spare, pool).

    Configured names may not contain '__', so these never collide with them.
    """
    # Decided on the name without the suffix, so derived_prefix() agrees with every derived_name().
    base = f"{database}__{kind}_"
    if len(base.encode()) + _SUFFIX_ROOM > MAX_IDENTIFIER_BYTES:
        digest = hashlib.sha1(database.encode()).hexdigest()[:8]
        base = f"{database[:16]}_{digest}__{kind}_"
    return base + suffix


def derived_prefix(database: str, kind: str) -> str:
    return derived_name(database, kind, "")


def template_name(database: str, content_hash: str) -> str:
    """The cached template of `database` built from sources with this content hash."""
    return derived_name(database, "tpl", content_hash[:16])


def spare_name(database: str, content_hash: str) -> str:
    """The copy of that template kept ready, so the next `fresh` is a rename."""
    return derived_name(database, "spare", content_hash[:16])


def snapshot_db(database: str, name: str) -> str:
    return derived_name(database, "snap", name)


def standby_db(database: str, name: str) -> str:
    """The copy of a snapshot kept ready, so its restore is a rename."""
    return derived_name(database, "standby", name)


def pool_prefix(database: str) -> str:
    return derived_prefix(database, "pool")


def pool_name(database: str, token: int, serial: int) -> str:
    """A pytest session's copy: its session token and serial number."""
    return derived_name(database, "pool", f"{token:08x}_{serial}")
