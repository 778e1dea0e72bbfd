"""`idprov import users FILE.csv` and `idprov export users FILE.csv`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer

from idprov.cli import render
from idprov.cli.common import AppOpt, JsonOpt, display, emit_with_code, new_app, service
from idprov.errors import UsageError

import_app = new_app("Import users from a CSV file.")
export_app = new_app("Export users to a CSV file.")

FileArg = Annotated[Path, typer.Argument(help="The CSV file.", metavar="FILE.csv")]


def _pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for value in values or []:
        column, sep, claim = value.partition("=")
        if not sep or not column.strip() or not claim.strip():
            raise UsageError(f"--map {value!r} is not COLUMN=claim")
        out[column.strip()] = claim.strip()
    return out


@import_app.command("users")
def import_users(
    file: FileArg,
    mode: Annotated[
        str,
        typer.Option(
            help="create (existing users are errors), upsert, or update (only existing users)."
        ),
    ] = "create",
    delimiter: Annotated[str, typer.Option(help="Field delimiter.")] = ",",
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="Rename a column: COLUMN=claim (or =username, =roles...); repeat."
        ),
    ] = None,
    ignore_column: Annotated[
        list[str] | None, typer.Option(help="Skip this column; repeat.")
    ] = None,
    separator: Annotated[
        str, typer.Option(help="Between roles, and between values of multi-valued claims.")
    ] = ";",
    create_roles: Annotated[bool, typer.Option(help="Create roles the file names.")] = False,
    on_error: Annotated[
        str,
        typer.Option(help="skip: import the good rows; stop: import nothing if any row is bad."),
    ] = "skip",
    rejects: Annotated[
        Path | None, typer.Option(help="Write the bad rows here, with line and error columns.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Check everything, change nothing.")] = False,
    no_push: Annotated[
        bool, typer.Option(help="Leave outbound provisioning to `idprov sync`.")
    ] = False,
    domain: Annotated[
        str | None,
        typer.Option("--domain", "-d", help="Domain of bare usernames (default PRIMARY)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = 5000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    wait: Annotated[
        bool, typer.Option(help="Wait for a running sync or import instead of exiting with code 8.")
    ] = False,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Import users from a CSV file: checked whole first, then written in batches."""
    from idprov.inbound.csv_import import CsvImport, ImportOptions

    if mode not in ("create", "upsert", "update"):
        raise UsageError(f"--mode {mode!r}: choose create, upsert or update")
    if on_error not in ("skip", "stop"):
        raise UsageError(f"--on-error {on_error!r}: choose skip or stop")
    if len(delimiter) != 1:
        raise UsageError("--delimiter must be one character")
    options = ImportOptions(
        mode=cast(Any, mode),
        delimiter=delimiter,
        column_map=_pairs(map_),
        ignore_columns=frozenset(ignore_column or []),
        separator=separator,
        create_roles=create_roles,
        on_error=cast(Any, on_error),
        dry_run=dry_run,
        push=not no_push,
        batch_size=batch_size,
        wait=wait,
        domain=domain,
    )
    svc = service(app_name, live=not quiet)
    live = display()
    report = CsvImport(svc, file, options, rejects, live.phase if live else None).run()
    emit_with_code(report, render.import_report, int(report.exit_code))


@export_app.command("users")
def export_users(
    file: FileArg,
    domain: Annotated[
        str | None, typer.Option("--domain", "-d", help="Only this domain (default: all).")
    ] = None,
    separator: Annotated[str, typer.Option(help="Between roles and values.")] = ";",
    delimiter: Annotated[str, typer.Option(help="Field delimiter.")] = ",",
    json: JsonOpt = False,
) -> None:
    """Export users (no passwords) in the format `idprov import users` reads."""
    from idprov.inbound.csv_export import export_users as export

    report = export(service(read_only=True), file, domain, separator, delimiter)

    def show(r: Any) -> None:
        render.message(f"[green]✓[/] exported {r.users} users to {render.esc(r.file)}")

    emit_with_code(report, show, 0)
