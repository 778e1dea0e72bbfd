"""Stopping a drain before it is done: `idprov serve`'s push deadline.

A request of `idprov serve` waits for its change's push, but not past its deadline
(:mod:`idprov.inbound.push_queue`): then it answers with the rows left to the outbox,
and the drain that pushes them is *halted*. A halted drain sends nothing more: a row
whose call has not started stays pending in the outbox, its claim given back (a
``creating`` mark of a create never sent is removed), for the outbox worker to push
on its schedule; a call already under way finishes and is recorded, as after a
Ctrl-C. Nothing is lost, and nothing goes twice: the rows in flight stay claimed
until their outcome is recorded.

The event that halts a drain is the one of the thread that starts it
(:func:`halting`): the engine reads it when it is made, on that thread, and its
workers ask it before each call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_current = threading.local()


@contextmanager
def halting(event: threading.Event) -> Iterator[None]:
    """The drains started on this thread inside the block stop sending once ``event``
    is set."""
    previous = getattr(_current, "event", None)
    _current.event = event
    try:
        yield
    finally:
        _current.event = previous


def current_halt() -> threading.Event | None:
    """The event that halts a drain started now on this thread (None: it runs to the
    end)."""
    event: threading.Event | None = getattr(_current, "event", None)
    return event
