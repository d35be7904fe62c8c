"""Names provision derives from configured databases (dbops, pipeline, pool), and Endpoint.dsn."""

from __future__ import annotations

import urllib.parse

import pytest

from provision.endpoint import Endpoint
from provision.names import derived_name, derived_prefix, pool_name, pool_prefix, spare_name, template_name
from provision.postgres import dbops
from provision.testing.pool import _token_of, new_session_token

KINDS = ("stage", "old", "tpl", "spare", "pool")
# The suffixes provision really uses: a token_hex(4), a content hash prefix, a pool token and serial.
SUFFIXES = ("0badcafe", "0123456789abcdef", "7fffffff_123456")
HASH = "f" * 64


def byte_len(name: str) -> int:
    return len(name.encode())


# ---------------------------------------------------------------- derived_name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_derived_name_fits_for_a_63_byte_database(kind: str, suffix: str) -> None:
    database = "d" * 63
    name = derived_name(database, kind, suffix)
    assert byte_len(name) <= 63
    assert name.endswith(f"__{kind}_{suffix}")
    assert name != database


def test_short_names_are_readable() -> None:
    assert derived_name("chatbi", "stage", "0badcafe") == "chatbi__stage_0badcafe"
    assert derived_prefix("chatbi", "tpl") == "chatbi__tpl_"


def test_distinct_kinds_and_suffixes_give_distinct_names() -> None:
    for database in ("chatbi", "d" * 63, "e" * 40):
        names = {derived_name(database, kind, suffix) for kind in KINDS for suffix in SUFFIXES}
        assert len(names) == len(KINDS) * len(SUFFIXES)
    # Long names that share their first 16 characters still differ.
    assert derived_name("x" * 16 + "a" * 47, "tpl", "1") != derived_name("x" * 16 + "b" * 47, "tpl", "1")


def test_derived_names_never_equal_a_valid_configured_name() -> None:
    # Configured names may not contain '__'; every derived name does.
    for kind in KINDS:
        assert "__" in derived_name("chatbi", kind, "x")
        assert "__" in derived_name("d" * 63, kind, "x")


@pytest.mark.parametrize("length", [6, 30, 39, 58, 63])
@pytest.mark.parametrize("kind", KINDS)
def test_derived_prefix_is_a_prefix_of_derived_name(length: int, kind: str) -> None:
    database = "d" * length
    prefix = derived_prefix(database, kind)
    for suffix in SUFFIXES:
        assert derived_name(database, kind, suffix).startswith(prefix)


@pytest.mark.parametrize("length", [40, 45, 50, 57])
def test_derived_prefix_is_a_prefix_of_derived_name_for_mid_length_names(length: int) -> None:
    database = "d" * length
    for kind in KINDS:
        prefix = derived_prefix(database, kind)
        for suffix in SUFFIXES:
            assert derived_name(database, kind, suffix).startswith(prefix), (kind, suffix)


def test_prefix_of_one_database_does_not_match_another() -> None:
    assert not derived_name("chatbi_demo", "stage", "x").startswith(derived_prefix("chatbi", "stage"))
    assert not derived_name("chatbi", "stage", "x").startswith(derived_prefix("chatbi_demo", "stage"))


# ---------------------------------------------------------------- template and spare names


def test_template_and_spare_names() -> None:
    assert template_name("chatbi", HASH) == "chatbi__tpl_" + HASH[:16]
    assert spare_name("chatbi", HASH) == "chatbi__spare_" + HASH[:16]
    assert template_name("chatbi", HASH) != template_name("chatbi", "0" * 64)
    assert template_name("chatbi", HASH).startswith(derived_prefix("chatbi", "tpl"))
    assert spare_name("chatbi", HASH).startswith(derived_prefix("chatbi", "spare"))
    long = "d" * 63
    assert byte_len(template_name(long, HASH)) <= 63 and byte_len(spare_name(long, HASH)) <= 63
    assert template_name(long, HASH) != spare_name(long, HASH)


# ---------------------------------------------------------------- pool names


@pytest.mark.parametrize("database", ["chatbi", "chatbi_demo", "d" * 30, "d" * 63])
@pytest.mark.parametrize("token", [0, 1, 0xABCDEF, 2**31 - 1])
@pytest.mark.parametrize("serial", [1, 12, 99999])
def test_pool_name_token_round_trip(database: str, token: int, serial: int) -> None:
    name = pool_name(database, token, serial)
    assert byte_len(name) <= 63
    assert name.startswith(pool_prefix(database))
    assert _token_of(name, database) == token


def test_pool_name_token_round_trip_for_a_50_byte_database() -> None:
    database = "d" * 50
    name = pool_name(database, 0xABCDEF, 3)
    assert name.startswith(pool_prefix(database))
    assert _token_of(name, database) == 0xABCDEF


def test_pool_names_are_unique_per_token_and_serial() -> None:
    names = {pool_name("chatbi", token, serial) for token in (1, 2) for serial in range(1, 50)}
    assert len(names) == 98


def test_token_of_a_foreign_name_is_none() -> None:
    assert _token_of(pool_prefix("chatbi") + "not-hex_1", "chatbi") is None
    assert _token_of(pool_prefix("chatbi"), "chatbi") is None


def test_session_tokens_fit_an_advisory_lock_key() -> None:
    for _ in range(100):
        assert 0 <= new_session_token() < 2**31


# ---------------------------------------------------------------- Endpoint.dsn


def test_dsn_masks_the_password_by_default() -> None:
    ep = Endpoint("127.0.0.1", 5432, "chatbi", "hunter2")
    assert ep.dsn("chatbi") == "postgresql://chatbi:***@127.0.0.1:5432/chatbi"
    assert "hunter2" not in ep.dsn("chatbi")
    assert "hunter2" not in repr(ep)
    assert ep.dsn("chatbi", show_password=True) == "postgresql://chatbi:hunter2@127.0.0.1:5432/chatbi"


def test_dsn_percent_encodes_special_characters() -> None:
    password = "p@ss w'rd\"$\\é/:?#%"
    ep = Endpoint("127.0.0.1", 6543, "us@r", password)
    dsn = ep.dsn("my-db", show_password=True)
    parsed = urllib.parse.urlsplit(dsn)
    assert parsed.scheme == "postgresql"
    assert parsed.hostname == "127.0.0.1" and parsed.port == 6543
    assert urllib.parse.unquote(parsed.password or "") == password
    assert urllib.parse.unquote(parsed.username or "") == "us@r"
    assert parsed.path == "/my-db"
    masked = ep.dsn("my-db")
    assert "p@ss" not in masked and urllib.parse.quote(password, safe="") not in masked


def test_dsn_brackets_ipv6_hosts() -> None:
    dsn = Endpoint("::1", 5432, "chatbi", "x").dsn("chatbi")
    assert dsn == "postgresql://chatbi:***@[::1]:5432/chatbi"
    assert urllib.parse.urlsplit(dsn).hostname == "::1"


def test_lock_namespace_is_stable() -> None:
    # Changing it would let an old and a new provisioner run at once.
    assert dbops.LOCK_NAMESPACE == 0x70726F76
