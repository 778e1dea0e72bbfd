"""`idprov log`: the audit log, newest first."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import JsonOpt, emit, parse_when, service
from idprov.cli.tables import note


def log(
    action: Annotated[
        str | None, typer.Option(help="Only actions starting with this (user., role.assign...).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Only targets starting with this.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this OS user.")] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="Only this application.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="From this time: ISO (UTC), an age (12h, 7d), today, yesterday."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this time (the same forms as --since).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=0, help="At most this many entries (0: every one).")
    ] = 50,
    run: Annotated[
        str | None, typer.Option(help="Only what this sync run did (its id is in the sync output).")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Show the audit log: who changed what, through which application, when."""
    from idprov.model import Page
    from idprov.provisioning.state import AuditQuery

    query = AuditQuery(
        action,
        target,
        actor,
        app_name,
        parse_when(since, "--since"),
        parse_when(until, "--until"),
        limit or None,
        run,
    )
    svc = service(read_only=True)
    entries = svc.audit_log(query)
    full = query.limit is not None and len(entries) == query.limit
    total = svc.state.audit_count(query) if full else len(entries)  # counted if cut off
    emit(Page(entries, total, 0, query.limit), _render)


def _render(page: Any) -> None:
    """The entries, then, when the limit cut them off, how many there are."""
    render.audit(page.items)
    if page.total > len(page.items):
        note(f"showing the newest {len(page.items)} of {page.total} (--limit 0 for all)")
