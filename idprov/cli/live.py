"""One live display for a whole command, on a terminal only.

A command that takes a while (an import, a sync, a push of many operations) shows
one rich ``Progress`` on standard error, and every phase of the command is a task
in it: checking the file, hashing passwords, writing, and pushing to each identity
provider. The engine reports per drain (an import drains once per batch), so the
push tasks add up every drain's operations: their position is the command's, not
the batch's. The display is transient: the command's report replaces it.

Core code never imports this module; it calls two plain callbacks, :meth:`phase`
(``(name, done, total)``) and :meth:`outbound` (the engine's report so far).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idprov.provisioning.engine import IdpReport, OutboundReport

QUIET_BELOW = 6
"""Pushes of fewer operations than this are not worth a bar (a single `user add`)."""

PHASE_LABELS = {
    "checking": "checking the file",
    "hashing": "hashing passwords",
    "importing": "writing users",
}


class LiveDisplay:
    """The command's one progress display (see the module docstring)."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._earlier: dict[str, tuple[int, int, int]] = {}
        """Per IdP: (done, total, failed) of the drains before the current one."""
        self._report: OutboundReport | None = None

    def phase(self, name: str, done: int, total: int) -> None:
        """A phase of the command (checking, hashing, importing) is ``done`` of ``total``."""
        unit = "" if name == "checking" else f"{done:,}/{total:,}"
        self._show(f"phase:{name}", PHASE_LABELS.get(name, name), done, total, unit)

    def outbound(self, report: OutboundReport) -> None:
        """The engine's report so far; called after every outbound operation."""
        if report is not self._report:
            self._fold(self._report)
            self._report = report
        for name, idp in report.idps.items():
            done, total, failed = self._counts(name, idp)
            if self._progress is None and total < QUIET_BELOW:
                continue
            unit = f"{done:,}/{total:,}" + (f"  {failed:,} failed" if failed else "")
            self._show(f"idp:{name}", f"pushing to {name}", done, total, unit)

    def stop(self) -> None:
        """Take the display off the screen (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def _counts(self, name: str, idp: IdpReport) -> tuple[int, int, int]:
        done, total, failed = self._earlier.get(name, (0, 0, 0))
        return done + len(idp.operations), total + idp.total, failed + idp.count("failed")

    def _fold(self, report: OutboundReport | None) -> None:
        """Add a finished drain's counts to the command's totals."""
        for name, idp in (report.idps if report is not None else {}).items():
            self._earlier[name] = self._counts(name, idp)

    def _show(self, key: str, label: str, done: int, total: int, unit: str) -> None:
        progress = self._start()
        if key not in self._tasks:
            self._tasks[key] = progress.add_task(label, total=max(total, 1), unit=unit)
        progress.update(self._tasks[key], completed=done, total=max(total, 1), unit=unit)

    def _start(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description:<24}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True, highlight=False),
                transient=True,
            )
            self._progress.start()
        return self._progress


def live_display() -> LiveDisplay | None:
    """A display when standard error is a terminal, else None (pipes, cron, tests)."""
    return LiveDisplay() if sys.stderr.isatty() else None
