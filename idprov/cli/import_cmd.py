"""`idprov import users FILE.csv` and `idprov export users FILE.csv`."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import (
    AppOpt,
    CompactOpt,
    JsonOpt,
    display,
    emit_with_code,
    new_app,
    service,
)
from idprov.cli.guard import AllowOpt
from idprov.cli.status import MetricsOpt, write_run_metrics
from idprov.errors import GuardError, IdprovError, Interrupted, UsageError

import_app = new_app("Import users from a CSV file.")
export_app = new_app("Export users to a CSV file.")

FileArg = Annotated[
    str, typer.Argument(help="The CSV file, or - for standard input/output.", metavar="FILE.csv")
]


class Mode(StrEnum):
    create = "create"
    upsert = "upsert"
    update = "update"


class Missing(StrEnum):
    keep = "keep"
    disable = "disable"
    delete = "delete"


class OnError(StrEnum):
    skip = "skip"
    stop = "stop"


def _pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for value in values or []:
        column, sep, claim = value.partition("=")
        if not sep or not column.strip() or not claim.strip():
            raise UsageError(f"--map {value!r} is not COLUMN=claim")
        out[column.strip()] = claim.strip()
    return out


def _one_char(value: str | None, option: str) -> str | None:
    if value is not None and len(value.replace("\\t", "\t")) != 1:
        raise UsageError(f"{option} must be one character", hint=f"e.g. {option} ';'")
    return value.replace("\\t", "\t") if value is not None else None


@import_app.command("users")
def import_users(
    file: FileArg,
    mode: Annotated[
        Mode,
        typer.Option(
            help="create (existing users are errors), upsert, or update (only existing users)."
        ),
    ] = Mode.create,
    delimiter: Annotated[
        str | None,
        typer.Option(help="Field delimiter (default: detected from the header).", metavar="CHAR"),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="The file's encoding (default utf-8): latin-1, cp1252, utf-16...."),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Rename a column: COLUMN=claim (or =username, =roles...); repeat.",
            metavar="COLUMN=CLAIM",
        ),
    ] = None,
    ignore_column: Annotated[
        list[str] | None, typer.Option(help="Skip this column; repeat.", metavar="COLUMN")
    ] = None,
    separator: Annotated[
        str,
        typer.Option(
            help="Between roles, and between values of multi-valued claims.", metavar="CHAR"
        ),
    ] = ";",
    create_roles: Annotated[bool, typer.Option(help="Create roles the file names.")] = False,
    on_error: Annotated[
        OnError,
        typer.Option(help="skip: import the good rows; stop: import nothing if any row is bad."),
    ] = OnError.skip,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Write the bad rows here, with line and error columns.", metavar="FILE"),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Check everything, change nothing.")] = False,
    push: Annotated[
        bool,
        typer.Option(
            "--push/--no-push", help="Push to identity providers now, or leave it to `sync`."
        ),
    ] = True,
    domain: Annotated[
        str | None,
        typer.Option(
            "--domain",
            "-d",
            help="Domain of bare usernames (default PRIMARY); with --missing, the domain "
            "whose complete list of users the file is.",
            metavar="DOMAIN",
        ),
    ] = None,
    missing: Annotated[
        Missing,
        typer.Option(
            help="Users of --domain not in the file (leavers, in a full HR snapshot): keep "
            "them, disable them (active=false) or delete them; judged by the deletion guard.",
        ),
    ] = Missing.keep,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Rows per transaction.", metavar="ROWS")
    ] = 5000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    wait: Annotated[
        bool, typer.Option(help="Wait for a running sync or import instead of exiting with code 8.")
    ] = False,
    allow_deletes: AllowOpt = None,
    metrics: MetricsOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
    compact: CompactOpt = False,
) -> None:
    """Import users from a CSV file: checked whole first, then written in batches."""
    from idprov.inbound.csv_import import CsvImport, ImportOptions
    from idprov.provisioning.metrics import RunStats

    options = ImportOptions(
        mode=mode.value,
        delimiter=_one_char(delimiter, "--delimiter"),
        encoding=encoding,
        column_map=_pairs(map_),
        ignore_columns=frozenset(ignore_column or []),
        separator=_one_char(separator, "--separator") or ";",
        create_roles=create_roles,
        on_error=on_error.value,
        dry_run=dry_run,
        push=push,
        batch_size=batch_size,
        wait=wait,
        domain=domain,
        missing=missing.value,
    )
    svc = service(app_name, live=not quiet)
    svc.allow_deletes = allow_deletes  # expected deprovisions go out; more are held
    live = display()
    source = sys.stdin.buffer if file == "-" else Path(file)
    typed = file == "-" and sys.stdin.isatty()
    stats = RunStats("import")
    try:
        if typed:
            typer.echo(
                _wrapped(
                    "reading CSV from the terminal: type the header, then a row per user; "
                    "Ctrl-D on an empty line ends it"
                ),
                err=True,
            )
        report = CsvImport(svc, source, options, rejects, live.phase if live else None).run()
    except IdprovError as exc:
        stats.outcome = "refused" if isinstance(exc, GuardError) else "error"
        write_run_metrics(metrics, svc, stats)
        raise
    except KeyboardInterrupt:
        if svc.cut_off() is None:  # no change was begun: nothing to keep or resume
            raise _nothing_changed(typed) from None
        raise
    if typed:
        report.seconds = 0.0  # the typing's time: no rate to give
    stats.add(report.outbound)
    stats.outcome = "ok" if report.exit_code == 0 else str(int(report.exit_code))
    write_run_metrics(metrics, svc, stats)
    emit_with_code(report, lambda r: _with_notes(r, quiet), int(report.exit_code))


def _wrapped(text: str) -> str:
    """``text`` broken between words to fit the terminal's width (it broke words)."""
    import shutil
    import textwrap

    width = shutil.get_terminal_size().columns
    return textwrap.fill(text, width=max(width - 1, 20))


def _nothing_changed(typed: bool) -> Interrupted:
    """A Ctrl-C before the import began any change: nothing was written, so there is
    nothing kept and nothing to resume (typed rows cannot be resumed at all)."""
    from idprov.cli.common import _again

    if typed:
        return Interrupted(
            "interrupted: stopped before anything was changed (nothing typed was imported)",
            hint="run the command again and type the rows, or give a file: "
            "idprov import users FILE.csv",
        )
    return Interrupted(
        "interrupted: stopped before anything was changed",
        hint=f"run the same command again: {_again()}",
    )


def _with_notes(report: Any, quiet: bool = False) -> None:
    """The import's report, its leavers (``--missing``), then its notes (what it
    decided on its own); ``quiet``: without the title that only says "import"."""
    render.import_report(report, quiet)
    if report.missing is not None:
        _missing(report.missing, report.dry_run)
    if report.guard is not None:
        render.message(
            f"[red]✗[/] {render.esc(report.guard.message)}: run so, the import would hold"
            " these changes in the outbox (exit 7); once checked, run it with"
            f" --allow-deletes {report.guard.allow_deletes}"
        )
    for text in report.notes:
        render.note(f"note: {text}")


LISTED = 20
"""Missing users named in the report (`--json` names them all)."""


def _missing(missing: Any, dry_run: bool) -> None:
    """``users not in the file: 3 of 120 active in HR, disabled: a, b, c``."""
    count = len(missing.users)
    if not count or missing.unread_lines:
        return
    done = "disabled" if missing.action == "disable" else "deleted"
    if dry_run:
        what = f"would be {done}"
    elif missing.done == count:
        what = done
    else:
        what = f"{missing.done:,} {done}"
    names = ", ".join(missing.users[:LISTED]) + (
        f" and {count - LISTED:,} more (--json lists them all)" if count > LISTED else ""
    )
    render.message(
        f"users not in the file: {count:,} of {missing.of:,} "
        f"{'active ' if missing.action == 'disable' else ''}in {render.esc(missing.domain)}, "
        f"{what}: {render.esc(names)}"
    )
    if missing.refused:
        render.message(f"[red]✗[/] {render.esc(missing.refused)}")


@export_app.command("users")
def export_users(
    file: FileArg,
    domain: Annotated[
        str | None,
        typer.Option("--domain", "-d", help="Only this domain (default: all).", metavar="DOMAIN"),
    ] = None,
    separator: Annotated[str, typer.Option(help="Between roles and values.", metavar="CHAR")] = ";",
    delimiter: Annotated[str, typer.Option(help="Field delimiter.", metavar="CHAR")] = ",",
    force: Annotated[bool, typer.Option(help="Overwrite FILE.csv if it exists.")] = False,
    json: JsonOpt = False,
) -> None:
    """Export users (no passwords) in the format `idprov import users` reads.

    The file is created with mode 0600 (it holds user data), in a directory that
    must exist; an existing file is replaced only with --force."""
    from idprov.inbound.csv_export import export_users as export

    out: Any = sys.stdout if file == "-" else Path(file)
    sep = _one_char(delimiter, "--delimiter") or ","
    values = _one_char(separator, "--separator") or ";"
    report = export(service(read_only=True), out, domain, values, sep, overwrite=force)
    if file == "-":
        typer.echo(f"exported {report.users} users", err=True)
        return

    def show(r: Any) -> None:
        render.message(f"[green]✓[/] exported {r.users} users to {render.esc(r.file)}")

    emit_with_code(report, show, 0)
