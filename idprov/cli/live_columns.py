"""The columns of the live display (:mod:`idprov.cli.live`), in rich's terms.

Its own module so that rich is imported only when a display appears: a command
whose push is quick never pays for it. Text never wraps; the bar takes what the
other columns leave, up to 40 columns (a line of many operations fits in 80), and
nothing in a display of spinners only (a push of a few operations).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text


class WithBar(ProgressColumn):
    """``column`` for tasks with a bar (phases, pushes of many operations), else blank."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__(column.get_table_column())
        self.column = column

    def render(self, task: Task) -> Any:
        return self.column(task) if task.fields.get("bar", True) else Text("")


class Position(ProgressColumn):
    """``12/40``, then ``(waiting 3.2 s)`` once the task's ``since`` (when its position
    last moved) is ``waiting_after`` seconds ago and it is not finished."""

    def __init__(self, waiting_after: float) -> None:
        super().__init__(fixed())
        self.waiting_after = waiting_after

    def render(self, task: Task) -> Text:
        text = Text(task.fields["unit"])
        since = task.fields.get("since")
        waited = time.monotonic() - since if since is not None else 0.0
        if not task.finished and waited >= self.waiting_after:
            text.append(f" (waiting {waited:.1f} s)", style="yellow")
        return text


def fixed() -> Column:
    """A column that never wraps (too narrow a terminal cuts it with an ellipsis)."""
    return Column(no_wrap=True, overflow="ellipsis")


def new_progress(waiting_after: float) -> Progress:
    """The display's ``Progress``, on standard error, gone when stopped."""
    return Progress(
        SpinnerColumn(finished_text=" ", table_column=fixed()),
        TextColumn("{task.description:<24}", table_column=fixed()),
        WithBar(BarColumn(bar_width=None, table_column=Column(max_width=40))),
        WithBar(TaskProgressColumn(table_column=fixed())),
        Position(waiting_after),
        WithBar(TimeElapsedColumn(table_column=fixed())),
        console=Console(stderr=True, highlight=False),
        transient=True,
    )
