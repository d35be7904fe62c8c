"""Recycling's rules that need no server: the FILE_COPY invariant, the outcome type, the summary line."""

from __future__ import annotations

import pytest

from provision.testing import pool, recycling
from provision.testing.pool import Tally, summary


def test_pool_copies_are_made_the_way_recycling_requires() -> None:
    """The pool's strategy is the one the WAL proof rests on (recycling.py's docstring)."""
    assert pool.STRATEGY == recycling.COPY_STRATEGY == "FILE_COPY"
    recycling.check_copy_strategy(pool.STRATEGY)
    for other in ("WAL_LOG", None):
        with pytest.raises(AssertionError, match="FILE_COPY"):
            recycling.check_copy_strategy(other)


def test_an_outcome_carries_what_its_kind_needs() -> None:
    baseline = recycling.Baseline(1, "0/0", "row")
    assert recycling.Outcome.reuse("c", baseline).kind == "reuse"
    assert recycling.Outcome.reset("c", ((1663, 16384),)).touched == ((1663, 16384),)
    assert recycling.Outcome.drop("c", "DDL").reason == "DDL"
    with pytest.raises(ValueError):
        recycling.Outcome("reuse", "c", "unchanged")  # reused from where?
    with pytest.raises(ValueError):
        recycling.Outcome("reset", "c", "rows")  # put back what?
    with pytest.raises(ValueError):
        recycling.Outcome("drop", "c", "DDL", baseline=baseline)


def test_the_summary_line() -> None:
    assert summary({"chatbi": Tally(80, 30, 10)}) == "provision: 120 copies: 80 reused, 30 reset, 10 dropped"
    # Several databases (or xdist workers) add up; what held recycling back is said once each.
    assert summary(
        {
            "chatbi": Tally(3, 2, 1) + Tally(1, 0, 0),
            "audited": Tally(1, 0, 2, no_reset="it has triggers or rules that fire during a reset: trigger t on x"),
            "scratch": Tally(0, 0, 4, off="its template has an unlogged table"),
        }
    ) == (
        "provision: 14 copies: 5 reused, 2 reset, 7 dropped (recycling off for scratch: its template has an"
        " unlogged table; changed copies of audited dropped, not reset: it has triggers or rules that fire"
        " during a reset: trigger t on x)"
    )
    off = {"chatbi": Tally(0, 0, 5, off=pool.SWITCHED_OFF), "demo": Tally(0, 0, 1, off=pool.SWITCHED_OFF)}
    assert (
        summary(off) == "provision: 6 copies: 0 reused, 0 reset, 6 dropped (recycling off: provision_recycle = false)"
    )
    old = {"chatbi": Tally(0, 0, 2, off=recycling.UNAVAILABLE)}
    assert summary(old).endswith("(recycling off: needs PostgreSQL 16+ with pg_walinspect)")
