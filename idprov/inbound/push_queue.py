"""`idprov serve`'s pushes: the changes of concurrent requests, drained together.

Each request's change is committed on the writer thread (its outbox rows claimed in
that transaction), and the request answers once the change has been pushed. Pushing
every change on its own costs each one a planning pass, its transactions, an engine
and a call; under load those are most of a request's cost. So the changes of one
caller queue here by caller (application, view, token): while up to ``parallel``
drains of that caller's changes run on the pusher threads, the changes committed
meanwhile wait, and the next drain takes all of them (up to ``most``) at once: one
planning pass, a few transactions, the calls in parallel and in Bulk where the
target offers it, one judgement of the deletion guard for the lot. Each request
still gets the report of its own rows only. With ``parallel`` drains at a time, one
slow change holds up at most the changes drained with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.unit_of_work import PendingPush

Push = Callable[[Hashable, list["PendingPush"]], list["OutboundReport | None"]]
Waiting = tuple["PendingPush", "Future[OutboundReport | None]"]


class PushQueue:
    """Changes waiting for their push, by caller; drained in batches on ``pool``."""

    def __init__(self, pool: Executor, push: Push, parallel: int = 2, most: int = 500) -> None:
        self._pool = pool
        self._push = push
        self._parallel = parallel
        self._most = most
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, list[Waiting]] = {}
        self._running: dict[Hashable, int] = {}

    def submit(self, caller: Hashable, change: PendingPush) -> Future[OutboundReport | None]:
        """Queue ``change`` for ``caller``'s next drain; the future holds its report."""
        future: Future[OutboundReport | None] = Future()
        with self._lock:
            self._waiting.setdefault(caller, []).append((change, future))
            if self._running.get(caller, 0) >= self._parallel:
                return future  # a running drain takes it when it is done
            self._running[caller] = self._running.get(caller, 0) + 1
        self._pool.submit(self._drain, caller)
        return future

    def _next(self, caller: Hashable) -> list[Waiting]:
        """The next batch of ``caller``'s changes; none: this drain stops."""
        with self._lock:
            waiting = self._waiting.get(caller, [])
            batch, rest = waiting[: self._most], waiting[self._most :]
            if rest:
                self._waiting[caller] = rest
            else:
                self._waiting.pop(caller, None)
            if not batch:
                self._running[caller] -= 1
                if not self._running[caller]:
                    del self._running[caller]
            return batch

    def _drain(self, caller: Hashable) -> None:
        while batch := self._next(caller):
            try:
                reports = self._push(caller, [change for change, _ in batch])
            except BaseException as exc:  # each request answers with the error
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), report in zip(batch, reports, strict=True):
                future.set_result(report)
