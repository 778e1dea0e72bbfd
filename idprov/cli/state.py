"""`idprov state copy --to NEW.yaml`: move idprov's SQLite state and SQLite userstores
to PostgreSQL, ids and all (see :mod:`idprov.provisioning.state_copy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from idprov.cli.common import JsonOpt, emit, new_app, service
from idprov.cli.tables import esc, message, note, table
from idprov.errors import UsageError

app = new_app("idprov's own state: move it to PostgreSQL.")


@app.command("copy")
def copy(
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            metavar="NEW.yaml",
            exists=True,
            dir_okay=False,
            help="The configuration to move to: state in PostgreSQL, and a type: postgres "
            "userstore for each SQLite domain of the current one.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Do everything but commit: show what would be copied, change nothing."
        ),
    ] = False,
    forget: Annotated[
        bool,
        typer.Option(
            "--forget",
            help="Abandon a move: let the current configuration use its SQLite state again "
            "(after a copy, its commands refuse). Refused if the PostgreSQL state has moved "
            "on since the copy (or cannot be reached); it is left as it is. With --to: the "
            "new configuration, if not where the copy recorded it.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --forget: forget even if the PostgreSQL state has moved on since the "
            "copy, or cannot be reached (what it did since is lost to this configuration).",
        ),
    ] = False,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            dir_okay=False,
            help="With --forget: lift the fence of this SQLite userstore file alone (one "
            "another configuration's copy fenced, which this one shares), leaving that copy "
            "as it is.",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Copy the state and users (ids, password hashes, ledger, outbox, audit, tokens)
    of the current configuration to NEW.yaml's PostgreSQL database; stop idprov first."""
    from idprov.config.loader import load_file
    from idprov.provisioning.state_copy import copy_state, forget_copy, lift_fence

    alone = file is not None and (not forget or to is not None or force)
    if (not forget and to is None) or (forget and dry_run) or (force and not forget) or alone:
        raise UsageError(
            "give --to NEW.yaml (with or without --dry-run), or --forget (with or without "
            "--to NEW.yaml and --force), or --forget --file FILE",
            hint="idprov state copy --to NEW.yaml moves the state; --forget, run with the "
            "old configuration, undoes what the copy did to it; --forget --file FILE lifts "
            "the fence of one userstore file another configuration shares",
        )
    if file is not None:
        emit(lift_fence(file), show_lifted)
        return
    current = service(live=False)
    new = load_file(to) if to is not None else None
    if forget:
        emit(forget_copy(current.config, new, force=force), show_forgotten)
        return
    assert new is not None
    result = copy_state(current.config, new, dry_run=dry_run, actor=current.actor)
    emit(result, show)


def show(report: Any) -> None:
    """Where each part goes and what it came to, the rows of each table, what next."""
    for part in report.parts:
        note(f"{part.name}: {part.source} -> {part.destination}: {part.status}")
    for line in report.kept:
        note(line)
    rows = [(p.name, t.table, t.rows) for p in report.parts for t in p.tables]
    table(["part", "table", "rows"], rows)
    done = {"copied": "copied; the rows of every table counted there match"}
    message(f"[green]✓[/] {done.get(report.status, report.status)}")
    message("next:")
    for number, step in enumerate(report.next_steps, 1):
        message(f"  {number}. {esc(step)}")


def show_forgotten(report: Any) -> None:
    if report.copied is None:
        message(f"{esc(report.source)} records no copy: nothing to forget")
        return
    message(
        f"[green]✓[/] {esc(report.source)}: its copy to {esc(report.copied.where)} on "
        f"{esc(report.copied.at)} is forgotten"
    )
    if not report.since and report.checked:
        note(f"the state at {report.copied.where} holds nothing the copy did not carry")
    for line in report.notes:
        note(line)


def show_lifted(report: Any) -> None:
    message(f"[green]✓[/] {esc(report.path)} is no longer fenced")
    note(f"it was: {report.fenced_by}")
    for line in report.notes:
        note(line)
