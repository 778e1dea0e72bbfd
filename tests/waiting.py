"""Waiting in tests for what another thread or process does: on a condition, with a
deadline only as a bound (never a sleep that assumes how fast a machine is)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], seconds: float = 60.0) -> bool:
    """Whether ``condition()`` came true within ``seconds`` (polled every 10 ms)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
