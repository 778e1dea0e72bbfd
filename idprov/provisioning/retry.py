"""Retries: exponential backoff with full jitter, honouring ``Retry-After``.

The engine wraps every call to a target in :func:`with_retries`; the connector only
says, with a :class:`TargetError`, whether retrying can help.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from idprov.config.models import RetryConfig
from idprov.connectors.base import TargetError, Throttled, last_status, note_status
from idprov.provisioning.results import Attempt


def backoff(attempt: int, retry: RetryConfig) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry."""
    ceiling = min(retry.max_backoff, retry.initial_backoff * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


THROTTLE_FACTOR = 4
"""Throttling may take this many times ``max_attempts``: it slows a run down (the
IdP's rate limiter halves its pace) rather than failing it."""


def with_retries(
    call: Callable[[int], Any],
    retry: RetryConfig,
    attempts: list[Attempt],
    sleep: Callable[[float], None] = time.sleep,
    on_throttled: Callable[[], None] | None = None,
) -> Any:
    """Run ``call(attempt_number)`` until it succeeds, fails for good, or runs out.
    A :class:`Throttled` failure calls ``on_throttled`` (the IdP's rate limiter); a
    ``partial`` one (progress was made, the repeat resumes) is not counted."""
    failures = throttled = 0
    number = 0
    while True:
        number += 1
        start = time.monotonic()
        note_status(None)
        try:
            value = call(number)
        except TargetError as exc:
            attempts.append(Attempt(number, _ms(start), exc.status, exc.message, exc.ambiguous))
            if isinstance(exc, Throttled):
                throttled += 1
                if on_throttled is not None:
                    on_throttled()
            elif not exc.partial:
                failures += 1
            exhausted = failures >= retry.max_attempts or throttled >= (
                retry.max_attempts * THROTTLE_FACTOR
            )
            if not exc.retryable or exhausted:
                raise
            sleep(_delay(exc, failures + throttled, retry))
        else:
            attempts.append(Attempt(number, _ms(start), last_status()))
            return value


def _delay(exc: TargetError, attempt: int, retry: RetryConfig) -> float:
    delay = backoff(attempt, retry)
    if exc.retry_after is None:
        return delay
    if exc.retry_after > retry.max_backoff:
        raise TargetError(
            f"{exc.message} (the target asks to wait {exc.retry_after:.0f}s, more than "
            f"retry.max_backoff {retry.max_backoff:.0f}s; left in the outbox)",
            status=exc.status,
        ) from exc
    return max(delay, exc.retry_after)


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
