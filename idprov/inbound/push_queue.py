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
still gets the report of its own rows only.

A second drain (up to ``parallel``) starts only once the latest batch has been
pushing for ``patience`` seconds: while pushes are quick, the changes wait for the
running drain and go out together in its next batch (measured: batches of 3.2 rows
instead of 2.0 under `serve_load`, 1.21 ms of CPU a row instead of 1.46); a slow one
(a target that takes seconds to answer one request) holds up the others for at most
``patience``, then they go out beside it.

A request waits for its push, but not past its **deadline** (``deadline`` seconds
after its change was committed, 20 by default: Okta waits 30 s for an answer, Entra
60 s, and a client that gives up sends its POST again and gets a 409). Then it
answers with its rows left to the outbox (``queued``), and the drain that carries
them is halted (:mod:`idprov.provisioning.halting`): what it has not sent yet stays
pending, its claims given back, for the outbox worker; the calls under way finish and
are recorded. The other requests of that batch answer so too, at once.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from idprov.provisioning.halting import halting

if TYPE_CHECKING:
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.unit_of_work import PendingPush

Push = Callable[[Hashable, list["PendingPush"]], list["OutboundReport | None"]]

PUSH_DEADLINE_SECONDS = 20.0
"""How long a request waits for its push by default (`serve --push-deadline`)."""


class Answer(Future["OutboundReport | None"]):
    """What a request waits for: its change's report, or, at its deadline, its rows
    left to the outbox. :attr:`pushed` is done once the drain that took the change has
    ended (each of its rows recorded, or its claim given back)."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed: Future[None] = Future()


@dataclass(eq=False)
class Waiting:
    """A change in the queue, then in a drain's batch."""

    change: PendingPush
    answer: Answer
    batch: list[Waiting] | None = None
    halt: threading.Event | None = None
    """Set when the drain of its batch is halted."""


class PushQueue:
    """Changes waiting for their push, by caller; drained in batches on ``pool``."""

    def __init__(
        self,
        pool: Executor,
        push: Push,
        parallel: int = 2,
        most: int = 500,
        patience: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        deadline: float | None = PUSH_DEADLINE_SECONDS,
    ) -> None:
        self._pool = pool
        self._push = push
        self._parallel = parallel
        self._most = most
        self._patience = patience
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, list[Waiting]] = {}
        self._running: dict[Hashable, int] = {}
        self._since: dict[Hashable, float] = {}
        """When the caller's latest batch started pushing."""
        self._timers: set[Hashable] = set()
        """Callers whose waiting changes a timer will look at after ``patience``."""
        self.deadline = deadline
        """Seconds a request waits for its push (None: until it is done)."""
        self._due: list[tuple[float, int, Waiting]] = []
        """A heap of the changes' deadlines, looked after by one thread."""
        self._order = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._watching = False

    def submit(self, caller: Hashable, change: PendingPush) -> Answer:
        """Queue ``change`` for ``caller``'s next drain; the answer holds its report (at
        the deadline, its rows queued)."""
        waiting = Waiting(change, Answer())
        with self._lock:
            self._waiting.setdefault(caller, []).append(waiting)
            if self.deadline is not None:
                self._watch(waiting, self.deadline)
            if not self._may_start(caller):
                return waiting.answer  # a running drain takes it when it is done
        self._pool.submit(self._drain, caller)
        return waiting.answer

    def _watch(self, waiting: Waiting, seconds: float) -> None:
        """Under the lock: answer ``waiting`` as queued in ``seconds`` if it has no
        answer by then (the thread that does is started on first use)."""
        heapq.heappush(self._due, (self._clock() + seconds, next(self._order), waiting))
        self._wake.notify()
        if not self._watching:
            self._watching = True
            threading.Thread(target=self._deadlines, name="idprov-deadlines", daemon=True).start()

    def _deadlines(self) -> None:
        """The deadline thread: answers each change whose deadline passed; it ends when
        none is left to look after (:meth:`_watch` starts another)."""
        while True:
            with self._lock:
                while self._due and self._due[0][0] > self._clock():
                    self._wake.wait(self._due[0][0] - self._clock())
                if not self._due:
                    self._watching = False
                    return
                _, _, waiting = heapq.heappop(self._due)
            if not waiting.answer.done():
                self._give_up(waiting)

    def _give_up(self, waiting: Waiting) -> None:
        """``waiting``'s deadline passed: it answers with its rows queued; if its drain
        has started, that drain is halted and its batch answers so too."""
        with self._lock:
            batch, halt = waiting.batch or [waiting], waiting.halt
        if halt is not None:
            halt.set()
        for each in batch:
            _settle(each.answer, _queued(each.change))

    def _may_start(self, caller: Hashable) -> bool:
        """Under the lock: whether a drain of ``caller``'s waiting changes starts now
        (then it is counted as running). If not, and another may start later, a timer
        looks again when the latest batch has pushed for ``patience``."""
        running = self._running.get(caller, 0)
        if running >= self._parallel:
            return False
        if running:
            pushing = self._clock() - self._since.get(caller, 0.0)
            if pushing < self._patience:
                if caller not in self._timers:
                    self._timers.add(caller)
                    timer = threading.Timer(self._patience - pushing, self._look, [caller])
                    timer.daemon = True
                    timer.start()
                return False
        self._running[caller] = running + 1
        return True

    def _look(self, caller: Hashable) -> None:
        """A timer: start a drain for changes still waiting behind a slow batch."""
        with self._lock:
            self._timers.discard(caller)
            if not self._waiting.get(caller) or not self._may_start(caller):
                return
        self._pool.submit(self._drain, caller)

    def _next(self, caller: Hashable) -> list[Waiting]:
        """The next batch of ``caller``'s changes; none: this drain stops."""
        with self._lock:
            waiting = self._waiting.get(caller, [])
            batch, rest = waiting[: self._most], waiting[self._most :]
            if rest:
                self._waiting[caller] = rest
            else:
                self._waiting.pop(caller, None)
            if batch:
                self._since[caller] = self._clock()
                halt = threading.Event()
                for each in batch:
                    each.batch, each.halt = batch, halt
            else:
                self._running[caller] -= 1
                if not self._running[caller]:
                    del self._running[caller]
                    self._since.pop(caller, None)
            return batch

    def _drain(self, caller: Hashable) -> None:
        while batch := self._next(caller):
            try:
                with halting(cast(threading.Event, batch[0].halt)):
                    reports = self._push(caller, [each.change for each in batch])
            except BaseException as exc:  # each request answers with the error
                for each in batch:
                    _settle(each.answer, exc)
                continue
            finally:
                for each in batch:
                    _settle(each.answer.pushed, None)
            for each, report in zip(batch, reports, strict=True):
                _settle(each.answer, report)


def _queued(change: PendingPush) -> OutboundReport:
    """The report of a change whose request stopped waiting: its rows are left to the
    outbox (those its drain finished before it stops are recorded as done there)."""
    from idprov.provisioning.results import OutboundReport

    report = OutboundReport()
    for row in change.rows:
        report.note("queued", change.idps.get(row, "?"), row)
    return report


def _settle(future: Future[OutboundReport | None] | Future[None], outcome: object) -> None:
    """Give a change its report (or error), unless its request gave up waiting (a task
    cancelled at a server's stop cancels the future): the drain goes on for the rest."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(cast("OutboundReport | None", outcome))  # type: ignore[arg-type]
    except InvalidStateError:
        pass
