"""Retries named transient failures through tenacity, which is imported only once a first attempt fails."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_with_retries(
    fn: Callable[[], T],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    interval: float,
    timeout: float,
) -> T:
    """Call `fn`; while it raises `retry_on`, call it again every `interval` s for up to `timeout` s in all.

    Any other exception stops at once. When time runs out, the last `retry_on` error is raised.
    The common case, success at the first try, does not pay for importing tenacity (~25 ms).
    """
    started = time.monotonic()
    try:
        return fn()
    except retry_on:
        pass
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

    remaining = max(0.0, timeout - (time.monotonic() - started))
    for attempt in Retrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait_fixed(interval),
        stop=stop_after_delay(remaining),
        reraise=True,
    ):
        with attempt:
            return fn()
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
