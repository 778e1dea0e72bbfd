"""How `idprov idp test NAME --probe` looks: a table of findings, then the options."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from idprov.cli.render import console, esc
from idprov.cli.tables import printable

if TYPE_CHECKING:
    from idprov.connectors.scim_probe import ProbeReport

MARK = {True: "[green]RFC[/]", False: "[yellow]differs[/]", None: ""}


def probe_report(report: ProbeReport) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("check", "what the target did", ""):
        table.add_column(column)
    for finding in report.findings:
        table.add_row(esc(finding.check), esc(finding.result), MARK[finding.standard])
    console().print(f"[bold]{esc(report.idp)}[/]: conformance probe")
    console().print(table)
    console().print("\nOptions that fit this target:")
    console().print(
        "  options:\n"
        + "".join(f"    {esc(k)}: {esc(_yaml(v))}\n" for k, v in report.options.items())
    )
    _cleanup(report)


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _cleanup(report: ProbeReport) -> None:
    made = len(report.created)
    if report.left_behind:
        console().print(
            f"[red]left behind[/] {len(report.left_behind)} of the {made} probe objects: "
            + esc(", ".join(report.left_behind))
        )
    else:
        console().print(f"deleted the {made} probe objects it created")


def probe_interrupted(report: ProbeReport) -> None:
    """What an interrupted probe cleaned up, on stderr (stdout may be JSON)."""
    made = len(report.created)
    if report.left_behind:
        text = f"left behind: {', '.join(report.left_behind)} (delete them by hand)"
    else:
        text = f"deleted the {made} probe object{'s' if made != 1 else ''} it had created"
    sys.stderr.write(f"probe interrupted: {printable(text)}\n")
    sys.stderr.flush()
