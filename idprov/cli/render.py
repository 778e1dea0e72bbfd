"""Rich views of core results. Rich is imported on first render, not at startup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from idprov.connectors.base import CheckReport
    from idprov.model import Page, Role, User
    from idprov.provisioning.outbox import OutboxRow
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import ChangeResult
    from idprov.provisioning.state import AuditEntry

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False, soft_wrap=True)
    return _console


def esc(text: object) -> str:
    from rich.markup import escape

    return escape(str(text))


def _claim_text(value: str | list[str]) -> str:
    return ", ".join(value) if isinstance(value, list) else value


def user_detail(user: User) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("user", esc(user.qualified_name))
    table.add_row("id", user.id)
    table.add_row("domain", esc(user.domain))
    for name, value in sorted(user.claims.items()):
        table.add_row(esc(name), esc(_claim_text(value)))
    table.add_row("roles", esc(", ".join(user.roles)) or "[dim]none[/]")
    table.add_row("password", "set" if user.has_password else "[dim]none[/]")
    table.add_row("created", user.created)
    table.add_row("modified", user.modified)
    console().print(table)


def user_page(page: Page) -> None:
    from rich.table import Table

    if not page.items:
        console().print(f"no users match (total {page.total})")
        return
    domains = {u.domain for u in page.items}
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("username")
    if len(domains) > 1:
        table.add_column("domain")
    for col in ("email", "display name", "roles"):
        table.add_column(col)
    for user in page.items:
        display = user.claims.get("display_name") or " ".join(
            _claim_text(user.claims[c]) for c in ("given_name", "family_name") if c in user.claims
        )
        row = [esc(user.username)]
        if len(domains) > 1:
            row.append(esc(user.domain))
        row += [
            esc(_claim_text(user.claims.get("email", ""))),
            esc(_claim_text(display)),
            esc(", ".join(user.roles)),
        ]
        table.add_row(*row)
    console().print(table)
    shown_to = page.offset + len(page.items)
    console().print(f"[dim]{page.offset + 1}–{shown_to} of {page.total}[/]")


def role_detail(role: Role) -> None:
    console().print(
        f"[bold]{esc(role.qualified_name)}[/]  id {role.id}  "
        f"{role.member_count} member{'s' if role.member_count != 1 else ''}"
    )
    for member in role.members or []:
        console().print(f"  {esc(member)}")


def role_list(roles: list[Role]) -> None:
    from rich.table import Table

    if not roles:
        console().print("no roles")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("role", "domain", "members", "created"):
        table.add_column(col)
    for role in roles:
        table.add_row(esc(role.name), esc(role.domain), str(role.member_count), role.created)
    console().print(table)


_VERBS = {
    "user.add": "added user",
    "user.update": "updated user",
    "user.passwd": "set password of",
    "user.delete": "deleted user",
    "role.add": "added role",
    "role.delete": "deleted role",
    "role.rename": "renamed role",
    "role.assign": "assigned role",
    "role.unassign": "unassigned role",
}


def change(result: ChangeResult) -> None:
    """One line per change. Plain click styling: a one-liner need not load rich."""
    import typer

    verb = _VERBS.get(result.action, result.action)
    if not result.changed:
        typer.secho("unchanged", fg="yellow", nl=False)
        typer.echo(f" {result.target}: nothing to do")
        return
    text = f"{verb} {result.target}"
    if result.action == "role.assign":
        text += " to " + ", ".join(result.details["added"])
    elif result.action == "role.unassign":
        text += " from " + ", ".join(result.details["removed"])
    elif result.action == "role.rename":
        text = f"{verb} {result.details['from']} → {result.target}"
    elif result.action == "user.update":
        text += ": " + ", ".join(result.details["claims"])
    typer.secho("✓", fg="green", nl=False)
    typer.echo(" " + text)
    if result.outbound is not None:
        outbound_report(result.outbound)


def outbound_report(report: OutboundReport) -> None:
    """A line per identity provider, then each failure with the target's message."""
    import typer

    if not report.idps and not report.queued:
        typer.echo("  nothing to provision")
    for idp in report.idps.values():
        done, failed, skipped = idp.count("done"), idp.count("failed"), idp.count("skipped")
        mark, colour = ("✗", "red") if failed else ("✓", "green")
        typer.echo("  ", nl=False)
        typer.secho(mark, fg=colour, nl=False)
        parts = [f"{done} done"] + ([f"{failed} failed"] if failed else [])
        parts += [f"{skipped} unchanged or out of scope"] if skipped else []
        typer.echo(f" {idp.name}: " + ", ".join(parts))
        for op in idp.operations:
            if op.outcome == "failed":
                typer.echo(f"      {op.kind} {op.label}: {op.operation} failed: {op.error}")
    for name, count in sorted(report.queued.items()):
        typer.echo(f"  … {name}: {count} queued for the outbox worker (`idprov outbox work`)")
    for warning in report.warnings:
        typer.secho(f"  ! {warning}", fg="yellow", err=True)
    if not report.ok:
        typer.echo(
            "  failed operations stay in the outbox: `idprov outbox list`, `idprov outbox retry`"
        )


def outbox(rows: list[OutboxRow]) -> None:
    from rich.table import Table

    if not rows:
        console().print("the outbox is empty: everything has been provisioned")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("idp", "kind", "entity", "status", "attempts", "since", "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            esc(r.idp),
            r.kind,
            esc(r.label),
            r.status + (f" (next try {r.next_attempt_at})" if r.next_attempt_at else ""),
            str(r.attempts),
            r.enqueued_at,
            esc(r.last_error or ""),
        )
    console().print(table)


def discarded(rows: list[OutboxRow]) -> None:
    console().print(
        f"✓ discarded {len(rows)} outbox row(s): " + ", ".join(esc(r.label) for r in rows)
    )


def idp_list(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not rows:
        console().print("no identity providers are configured")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in (
        "name",
        "connector",
        "enabled",
        "blocking",
        "health",
        "scope",
        "deprovision",
        "applications",
    ):
        table.add_column(col)
    for r in rows:
        scope = ", ".join(r["provisioning_roles"]) if r["provisioning_roles"] else "all users"
        table.add_row(
            esc(r["name"]),
            r["connector"],
            "yes" if r["enabled"] else "no",
            "yes" if r["blocking"] else "no",
            esc(r["health"]),
            esc(scope),
            r["deprovision"],
            esc(", ".join(r["applications"])),
        )
    console().print(table)


def check_report(name: str, report: CheckReport) -> None:
    yes = "[green]yes[/]"
    no = "[red]no[/]"
    console().print(f"[bold]{esc(name)}[/]")
    console().print(f"  reachable      {yes if report.reachable else no}")
    console().print(f"  authenticated  {yes if report.authenticated else no}")
    for key, value in report.capabilities.items():
        console().print(f"  {key:<14} {esc(value)}")
    for message in report.messages:
        console().print(f"  [yellow]![/] {esc(message)}")


def connector_list(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("connector", "package", "module", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], esc(r["package"] or ""), esc(r["module"]), esc(r["description"]))
    console().print(table)


def audit(entries: list[AuditEntry]) -> None:
    """One line per entry, newest first: when, who@application, action, target, details."""
    if not entries:
        console().print("no audit entries match")
        return
    for e in entries:
        details = " ".join(f"{k}={_short(v)}" for k, v in sorted(e.details.items()) if v)
        outcome = "" if e.outcome == "ok" else f" [red]{esc(e.outcome)}[/]"
        console().print(
            f"[dim]{e.at[:19].replace('T', ' ')}[/] {esc(e.actor)}@{esc(e.application)} "
            f"[bold]{e.action}[/] {esc(e.target)}{outcome} [dim]{esc(details)}[/]"
        )


def _short(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def message(text: str) -> None:
    console().print(text)


def import_report(report: Any) -> None:
    """The summary of an import: counts, then the first errors."""
    from rich.table import Table

    title = (
        "dry run: nothing was changed"
        if report.dry_run
        else ("stopped: nothing was imported (--on-error stop)" if report.stopped else "import")
    )
    table = Table(title=title, box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    verb = "would be " if report.dry_run or report.stopped else ""
    for label, value in (
        ("rows", report.rows),
        (f"{verb}created", report.created),
        (f"{verb}updated", report.updated),
        ("unchanged", report.unchanged),
        ("rejected", report.rejected),
        ("already imported (resumed)", report.skipped_done),
    ):
        if value or label in ("rows", "rejected"):
            table.add_row(label, f"{value:,}")
    if report.seconds:
        table.add_row("rows/s", f"{report.rows / report.seconds:,.0f}")
    console().print(table)
    if report.roles_created:
        console().print(
            f"roles {'to create' if report.dry_run else 'created'}: "
            + esc(", ".join(report.roles_created))
        )
    for error in report.errors[:20]:
        console().print(f"  [red]✗[/] {esc(error)}")
    if report.rejected > 20:
        console().print(
            f"  … and {report.rejected - 20} more"
            + (
                f" (all in {esc(report.rejects_file)})"
                if report.rejects_file
                else " (write them all with --rejects FILE)"
            )
        )
    elif report.rejects_file:
        console().print(f"rejected rows written to {esc(report.rejects_file)}")
    if report.outbound is not None:
        outbound_report(report.outbound)


_ACTION_STYLE = {
    "create": "green",
    "update": "yellow",
    "enable": "yellow",
    "delete": "red",
    "disable": "red",
}


def sync_result(result: Any, drift: dict[str, Any] | None, quiet: bool) -> None:
    """The plan per IdP (a table of differences), then what applying it did."""
    from rich.table import Table

    plan = result.plan
    head = "plan (dry run: nothing was changed)" if result.dry_run else f"sync run {result.run}"
    console().print(f"[bold]{head}[/]")
    for error in plan.source_errors:
        console().print(f"  [red]✗[/] {esc(error)}")
    for idp_plan in plan.idps:
        counts = (
            ", ".join(f"{n} {k.replace('.', ' ')}" for k, n in sorted(idp_plan.counts().items()))
            or "in sync: nothing to do"
        )
        console().print(f"[bold]{esc(idp_plan.idp)}[/]: {counts}")
        if idp_plan.guard:
            console().print(f"  [red]deletion guard:[/] {esc(idp_plan.guard)}")
        if idp_plan.items and not (quiet and not result.dry_run):
            table = Table(box=None, pad_edge=False, header_style="bold")
            for col in ("", "kind", "entity", "why", "changes"):
                table.add_column(col)
            for item in idp_plan.items:
                style = _ACTION_STYLE.get(item.action, "cyan")
                table.add_row(
                    f"[{style}]{item.action}[/]",
                    item.kind,
                    esc(item.label),
                    esc(item.reason),
                    esc(", ".join(item.changed)),
                )
            console().print(table)
    if result.outbound is not None:
        outbound_report(result.outbound)
    for name, report in (drift or {}).items():
        console().print(f"[bold]drift at {esc(name)}[/]: {report['checked']} checked")
        for label in report["deleted_remotely"]:
            console().print(f"  [red]deleted remotely[/] {esc(label)}")
        for change in report["changed_remotely"]:
            console().print(
                f"  [yellow]changed remotely[/] {esc(change['user'])}: "
                f"{esc(', '.join(change['attributes']))}"
            )
        if report["unowned"]:
            console().print(
                f"  not idprov's (never touched): "
                f"{esc(', '.join(report['unowned'][:20]))}"
                + (" ..." if len(report["unowned"]) > 20 else "")
            )
        for error in report["errors"]:
            console().print(f"  [red]✗[/] {esc(error)}")


def explanation(data: dict[str, Any]) -> None:
    scope = "[green]in scope[/]" if data["in_scope"] else "[yellow]not in scope[/]"
    console().print(f"[bold]{esc(data['user'])}[/] at [bold]{esc(data['idp'])}[/]: {scope}")
    console().print(f"  why: {esc(data['why'])}")
    if not data["targeted_by_application"]:
        console().print("  [yellow]note:[/] the acting application does not provision to it")
    decision = data["decision"]
    console().print(
        f"  next: {decision['action']} ({esc(decision['reason'])})"
        + (f": {esc(', '.join(decision['changed']))}" if decision["changed"] else "")
    )
    if data["would_send"]:
        console().print(f"  userName: {esc(data['would_send']['userName'])}")
        for key, value in data["would_send"]["attributes"].items():
            console().print(f"    {esc(key)}: {esc(value)}")
    ledger = data["ledger"]
    if ledger:
        console().print(
            f"  ledger: remote id {esc(ledger['remote_id'])}, {ledger['state']}, "
            f"{'created by idprov' if ledger['created_by_idprov'] else 'adopted'}"
            f", updated {ledger['updated_at']}"
        )
    else:
        console().print("  ledger: never provisioned there")
    for row in data["outbox"]:
        console().print(
            f"  outbox: {row['status']} since {row['enqueued_at']}"
            + (f": {esc(row['last_error'])}" if row["last_error"] else "")
        )


def token_list(records: list[Any]) -> None:
    from rich.table import Table

    if not records:
        console().print("no tokens: make one with `idprov token create --app NAME`")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("id", "application", "created", "by", "state", "description"):
        table.add_column(col)
    for r in records:
        state = f"revoked {r.revoked_at[:19]}" if r.revoked_at else "active"
        table.add_row(
            r.id,
            esc(r.application),
            r.created_at[:19],
            esc(r.created_by),
            state,
            esc(r.description),
        )
    console().print(table)
