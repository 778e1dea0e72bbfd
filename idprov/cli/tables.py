"""Tables and lines on the console. Rich is imported on first use, not at startup.

Tables go through :func:`table`: on a terminal a rich table; anywhere else (a pipe,
a file, cron) tab-separated rows, never padded, wrapped or truncated, written as the
rows come (a listing of every user is not held first), and notes such as "1–20 of
300" go to standard error, so `| cut -f1` sees only data.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from idprov.text import escaped

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False, soft_wrap=True, emoji=False)  # :x: is text
    return _console


def on_terminal() -> bool:
    """Whether standard output is a terminal, as rich decides it. Rich is imported
    (13 ms) only to answer when it may say yes: output to a terminal, or an
    environment that overrides its test (``TTY_COMPATIBLE``, ``FORCE_COLOR``)."""
    overridden = {"TTY_COMPATIBLE", "FORCE_COLOR"} & os.environ.keys()
    if _console is None and not overridden and not sys.stdout.isatty():
        return False
    return console().is_terminal


_BRACKET = re.compile(r"(\\*)(\[(?:[a-z#/@][^[]*?\])?)")
"""A ``[`` and the backslashes before it; with what follows when rich would read a tag."""


def printable(text: object, lines: bool = False) -> str:
    """``text`` with each character a terminal would act on, or a reader not see,
    written as its escape (``\\x1b``, ``\\n``, ``\\u202e``: see
    :data:`idprov.text.UNSAFE`): what every view shows of a value it did not write
    itself (a name, a claim, a target's error message, an audit detail). With
    ``lines``, a line break stays one (a message of several lines idprov wrote)."""
    return escaped(text, keep="\n" if lines else "")


def esc(text: object, lines: bool = False) -> str:
    """``text`` as rich markup that shows it as typed, each control character as its
    escape (:func:`printable`). Rich's ``escape`` handles a bracket that would open a
    tag; rich also reads a backslash before any other bracket as an escape and drops
    it (a stored ``\\[x`` showed as ``[x``), so such a backslash is doubled here."""

    def one(match: re.Match[str]) -> str:
        backslashes, bracket = match.groups()
        if len(bracket) > 1:  # a tag: each backslash doubled, then one escaping it
            return f"{backslashes * 2}\\{bracket}"
        return f"{backslashes}\\{bracket}" if backslashes else bracket

    escaped = _BRACKET.sub(one, printable(text, lines))
    if escaped.endswith("\\") and not escaped.endswith("\\\\"):
        escaped += "\\"  # as rich's escape: markup after it stays markup
    return escaped


class Styled(NamedTuple):
    """A table cell with a rich style on a terminal (plain text elsewhere)."""

    text: str
    style: str


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    header: bool = True,
    title: str | None = None,
) -> None:
    """Print rows: a rich table on a terminal, else tab-separated lines (see the
    module docstring). Cells are plain values; markup in them is shown as typed."""
    if not on_terminal():
        if title:
            note(title)
        write = sys.stdout.write  # line by line: a reader that goes away is noticed
        if header:
            write("\t".join(columns) + "\n")
        for row in rows:
            write("\t".join(map(_plain_cell, row)) + "\n")
        return
    from rich.table import Table

    shown = Table(box=None, pad_edge=False, header_style="bold", show_header=header, title=title)
    for i, column in enumerate(columns):
        shown.add_column(column, style="bold" if not header and i == 0 else None)
    for row in rows:
        shown.add_row(*map(_rich_cell, row))
    console().print(shown)


def _plain_cell(value: object) -> str:
    """A tab-separated cell: a tab or line break inside is a space, any other control
    character its escape."""
    text = value.text if isinstance(value, Styled) else str(value)
    return printable(text.replace("\t", " ").replace("\n", " "))


def _rich_cell(value: object) -> Text:
    """A cell as rich text: shown as stored, never read as markup or emoji codes."""
    from rich.text import Text

    if isinstance(value, Styled):
        return Text(printable(value.text), style=value.style)
    return Text(printable(value))


def note(text: str, style: str | None = None) -> None:
    """A line about the output rather than of it (plain text, shown as written):
    stdout on a terminal, in ``style``; else a plain line on stderr."""
    if on_terminal():
        console().print(esc(text), style=style)
        return
    sys.stderr.write(printable(text) + "\n")


def message(text: str) -> None:
    console().print(text)
