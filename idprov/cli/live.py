"""One live display for a whole command, on a terminal only.

A command that takes a while (an import, a sync, a push that waits on a slow
identity provider) shows one rich ``Progress`` on standard error, and every phase of
the command is a task in it: checking the file, hashing passwords, writing, and
pushing to each identity provider. The engine reports per drain (an import drains
once per batch), so the push tasks add up every drain's operations: their position is
the command's, not the batch's. The display is transient: the command's report
replaces it.

A push appears only once it has run for :data:`SHOW_AFTER` seconds (a timer thread;
the push never waits for the display), so the common fast push shows nothing. Then
each identity provider has a line: a bar for a push of many operations, a spinner
for a few, and ``(waiting 3.2 s)`` while it has not answered for a second or more.
Rich's own refresh thread keeps that figure moving while the engine waits; the
columns are in :mod:`idprov.cli.live_columns`.

Core code never imports this module; it calls two plain callbacks, :meth:`phase`
(``(name, done, total)``) and :meth:`outbound` (the engine's report so far: when a
drain starts, and after every operation).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idprov.provisioning.engine import IdpReport, OutboundReport

SHOW_AFTER = 1.0
"""Seconds a push runs before it is shown: a faster one leaves the screen alone."""
WAITING_AFTER = 1.0
"""Seconds without an answer from an identity provider before its line says so."""
QUIET_BELOW = 6
"""Pushes of fewer operations than this get a spinner, not a bar (a single `user add`)."""

PHASE_LABELS = {
    "checking": "checking the file",
    "hashing": "hashing passwords",
    "importing": "writing users",
}


@dataclass(frozen=True)
class Push:
    """One identity provider's position in the command's pushes."""

    done: int
    total: int
    failed: int
    since: float
    """When ``done`` or ``total`` last changed (``time.monotonic``)."""

    @property
    def unit(self) -> str:
        failed = f"  {self.failed:,} failed" if self.failed else ""
        return f"{self.done:,}/{self.total:,}{failed}"


class LiveDisplay:
    """The command's one progress display (see the module docstring).

    The engine's thread and the timer's both change it: ``_lock`` guards its state.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: Any = None
        self._timer: threading.Timer | None = None
        self._tasks: dict[str, Any] = {}
        self._pushes: dict[str, Push] = {}
        self._earlier: dict[str, tuple[int, int, int]] = {}
        """Per IdP: (done, total, failed) of the drains before the current one."""
        self._scanned: dict[str, tuple[int, int]] = {}
        """Per IdP: (operations looked at, failures among them) of the current drain."""
        self._report: OutboundReport | None = None

    def phase(self, name: str, done: int, total: int) -> None:
        """A phase of the command (checking, hashing, importing) is ``done`` of ``total``."""
        unit = "" if name == "checking" else f"{done:,}/{total:,}"
        with self._lock:
            self._show(f"phase:{name}", PHASE_LABELS.get(name, name), done, total, unit)

    def outbound(self, report: OutboundReport) -> None:
        """The engine's report so far: when a drain starts, and after every operation."""
        with self._lock:
            if report is not self._report:
                self._fold(self._report)
                self._report = report
            for name, idp in report.idps.items():
                self._note(name, idp)
            if self._progress is not None:
                self._show_pushes()
            elif self._unfinished() and self._timer is None:
                self._timer = threading.Timer(SHOW_AFTER, self._appear)
                self._timer.daemon = True  # never keeps a finished command alive
                self._timer.start()

    def stop(self) -> None:
        """Take the display off the screen, or keep it from appearing (idempotent)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._tasks.clear()

    def _appear(self) -> None:
        """The timer's end: show the pushes still running, unless :meth:`stop` came first
        (it forgets the timer, so a timer that fired meanwhile finds it is not current)."""
        with self._lock:
            if self._timer is not threading.current_thread():
                return
            self._timer = None
            if self._unfinished():
                self._show_pushes()

    def _unfinished(self) -> bool:
        return any(push.done < push.total for push in self._pushes.values())

    def _note(self, name: str, idp: IdpReport) -> None:
        done, total, failed = self._counts(name, idp)
        before = self._pushes.get(name)
        since = time.monotonic()
        if before is not None and (before.done, before.total) == (done, total):
            since = before.since
        self._pushes[name] = Push(done, total, failed, since)

    def _show_pushes(self) -> None:
        for name, push in self._pushes.items():
            bar = push.total >= QUIET_BELOW
            label = f"pushing to {name}"
            self._show(f"idp:{name}", label, push.done, push.total, push.unit, push.since, bar)

    def _counts(self, name: str, idp: IdpReport) -> tuple[int, int, int]:
        done, total, failed = self._earlier.get(name, (0, 0, 0))
        return done + len(idp.operations), total + idp.total, failed + self._failed(name, idp)

    def _failed(self, name: str, idp: IdpReport) -> int:
        """The current drain's failures at ``name``, counting only the operations added
        since the last call (a count of them all, per operation, is quadratic)."""
        seen, failed = self._scanned.get(name, (0, 0))
        failed += sum(1 for op in idp.operations[seen:] if op.outcome == "failed")
        self._scanned[name] = (len(idp.operations), failed)
        return failed

    def _fold(self, report: OutboundReport | None) -> None:
        """Add a finished drain's counts to the command's totals."""
        for name, idp in (report.idps if report is not None else {}).items():
            self._earlier[name] = self._counts(name, idp)
        self._scanned.clear()

    def _show(
        self,
        key: str,
        label: str,
        done: int,
        total: int,
        unit: str,
        since: float | None = None,
        bar: bool = True,
    ) -> None:
        progress = self._start()
        fields = {"unit": unit, "since": since, "bar": bar}
        if key not in self._tasks:
            self._tasks[key] = progress.add_task(
                label, total=max(total, 1), completed=done, **fields
            )
        progress.update(self._tasks[key], completed=done, total=max(total, 1), **fields)

    def _start(self) -> Any:
        if self._progress is None:
            from idprov.cli.live_columns import new_progress

            self._progress = new_progress(WAITING_AFTER)
            self._progress.start()
        return self._progress


def live_display() -> LiveDisplay | None:
    """A display when standard error is a terminal, else None (pipes, cron, tests)."""
    return LiveDisplay() if sys.stderr.isatty() else None
