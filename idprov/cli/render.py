"""Rich views of core results. Rich is imported on first render, not at startup.

Tables go through :func:`table`: on a terminal a rich table; anywhere else (a pipe,
a file, cron) tab-separated rows, never padded, wrapped or truncated, and notes
such as "1–20 of 300" go to standard error, so `| cut -f1` sees only data.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

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
    if not console().is_terminal:
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
    text = value.text if isinstance(value, Styled) else str(value)
    return text.replace("\t", " ").replace("\n", " ")


def _rich_cell(value: object) -> str:
    if isinstance(value, Styled):
        return f"[{value.style}]{esc(value.text)}[/]"
    return esc(value)


def note(text: str) -> None:
    """A line about the output rather than of it: stdout on a terminal, else stderr."""
    if console().is_terminal:
        console().print(text)
        return
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True, no_color=True).print(text)


def _claim_text(value: str | list[str]) -> str:
    return ", ".join(value) if isinstance(value, list) else value


def user_detail(user: User) -> None:
    rows: list[tuple[str, object]] = [
        ("user", user.qualified_name),
        ("id", user.id),
        ("domain", user.domain),
    ]
    rows += [(name, _claim_text(value)) for name, value in sorted(user.claims.items())]
    rows += [
        ("roles", ", ".join(user.roles) or Styled("none", "dim")),
        ("password", "set" if user.has_password else Styled("none", "dim")),
        ("created", user.created),
        ("modified", user.modified),
    ]
    table(["field", "value"], rows, header=False)


def user_page(page: Page) -> None:
    if not page.items:
        note(f"no users match (total {page.total})")
        return
    many = len({u.domain for u in page.items}) > 1
    columns = ["username", *(["domain"] if many else []), "email", "display name", "roles"]
    table(columns, (_user_row(user, many) for user in page.items))
    note(f"[dim]{page.offset + 1}–{page.offset + len(page.items)} of {page.total}[/]")


def _user_row(user: User, with_domain: bool) -> list[str]:
    claims = user.claims
    display = claims.get("display_name") or " ".join(
        _claim_text(claims[c]) for c in ("given_name", "family_name") if c in claims
    )
    domain = [user.domain] if with_domain else []
    email = _claim_text(claims.get("email", ""))
    return [user.username, *domain, email, _claim_text(display), ", ".join(user.roles)]


def role_detail(role: Role) -> None:
    console().print(
        f"[bold]{esc(role.qualified_name)}[/]  id {role.id}  "
        f"{role.member_count} member{'s' if role.member_count != 1 else ''}"
    )
    for member in role.members or []:
        console().print(f"  {esc(member)}")


def role_list(roles: list[Role]) -> None:
    if not roles:
        note("no roles")
        return
    rows = ((r.name, r.domain, r.member_count, r.created) for r in roles)
    table(["role", "domain", "members", "created"], rows)


_VERBS = {
    "user.add": "added user",
    "user.update": "updated user",
    "user.passwd": "set password of",
    "user.delete": "deleted user",
    "user.rename": "renamed user",
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
    elif result.action in ("role.rename", "user.rename"):
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

    if not report.idps and not report.queued and not report.held:
        typer.echo("  nothing to provision")
    for idp in report.idps.values():
        done, failed, skipped = idp.count("done"), idp.count("failed"), idp.count("skipped")
        mark, colour = ("✗", "red") if failed else ("✓", "green")
        typer.echo("  ", nl=False)
        typer.secho(mark, fg=colour, nl=False)
        parts = [f"{done} done"] + ([f"{failed} failed"] if failed else [])
        parts += [f"{skipped} unchanged or out of scope"] if skipped else []
        pending = idp.total - len(idp.operations)
        parts += [f"{pending} left pending"] if pending > 0 else []
        typer.echo(f" {idp.name}: " + ", ".join(parts))
        _failures(idp.name, [op for op in idp.operations if op.outcome == "failed"])
    for name, count in sorted(report.queued.items()):
        typer.echo(f"  … {name}: {count} queued for the outbox worker (`idprov outbox work`)")
    for name, count in sorted(report.held.items()):
        typer.secho(f"  ✋ {name}: {count} held by the deletion guard", fg="yellow")
    for warning in report.warnings:
        typer.secho(f"  ! {warning}", fg="yellow", err=True)
    if not report.ok:
        typer.echo(
            "  failed operations stay in the outbox: `idprov outbox list`, `idprov outbox retry`"
        )


SHOWN_FAILURES = 10


def _failures(idp: str, failed: list[Any]) -> None:
    """The first failures, each once (an import's batches repeat a role's failure),
    then how many more, and where to see them all: never a wall of lines."""
    import typer

    lines = list(
        dict.fromkeys(f"{op.kind} {op.label}: {op.operation} failed: {op.error}" for op in failed)
    )
    for line in lines[:SHOWN_FAILURES]:
        typer.echo(f"      {_clipped(line)}")
    if len(lines) > SHOWN_FAILURES:
        typer.echo(
            f"      … and {len(lines) - SHOWN_FAILURES} more: "
            f"`idprov outbox list --idp {idp} --status failed`"
        )


def _clipped(line: str, most: int = 300) -> str:
    return line if len(line) <= most else line[: most - 1] + "…"


def outbox(rows: list[OutboxRow]) -> None:
    if not rows:
        note("the outbox is empty: everything has been provisioned")
        return
    columns = ["idp", "kind", "entity", "status", "attempts", "since", "last error"]
    table(
        columns,
        (
            (
                r.idp,
                r.kind,
                r.label,
                r.status + (f" (next try {r.next_attempt_at})" if r.next_attempt_at else ""),
                r.attempts,
                r.enqueued_at,
                r.last_error or "",
            )
            for r in rows
        ),
    )


def discarded(rows: list[OutboxRow]) -> None:
    console().print(
        f"✓ discarded {len(rows)} outbox row(s): " + ", ".join(esc(r.label) for r in rows)
    )


def idp_list(rows: list[dict[str, Any]]) -> None:
    if not rows:
        note("no identity providers are configured")
        return
    columns = ["name", "connector", "enabled", "blocking", "health", "scope", "deprovision"]
    table(
        [*columns, "applications"],
        (
            (
                r["name"],
                r["connector"],
                "yes" if r["enabled"] else "no",
                "yes" if r["blocking"] else "no",
                r["health"],
                ", ".join(r["provisioning_roles"] or []) or "all users",
                r["deprovision"],
                ", ".join(r["applications"]),
            )
            for r in rows
        ),
    )


def check_report(name: str, report: CheckReport) -> None:
    yes = "[green]yes[/]"
    no = "[red]no[/]"
    console().print(f"[bold]{esc(name)}[/]")
    console().print(f"  reachable      {yes if report.reachable else no}")
    unknown = "[yellow]unknown[/] (the endpoint was not found)"
    auth = unknown if report.authenticated is None else yes if report.authenticated else no
    console().print(f"  authenticated  {auth}")
    for key, value in report.capabilities.items():
        console().print(f"  {key:<14} {esc(value)}")
    for message in report.messages:
        console().print(f"  [yellow]![/] {esc(message)}")


def connector_list(rows: list[dict[str, Any]]) -> None:
    table(
        ["connector", "package", "module", "description"],
        ((r["name"], r["package"] or "", r["module"], r["description"]) for r in rows),
    )


def audit(entries: list[AuditEntry]) -> None:
    """One line per entry, newest first: when, who@application, action, target, details."""
    if not entries:
        note("no audit entries match")
        return
    if not console().is_terminal:  # every detail in full, a column each
        columns = ["at", "actor", "application", "action", "target", "outcome", "details"]
        table(columns, (_audit_row(e) for e in entries))
        return
    for e in entries:
        details = " ".join(f"{k}={_short(v)}" for k, v in sorted(e.details.items()) if v)
        outcome = "" if e.outcome == "ok" else f" [red]{esc(e.outcome)}[/]"
        console().print(
            f"[dim]{e.at[:19].replace('T', ' ')}[/] {esc(e.actor)}@{esc(e.application)} "
            f"[bold]{e.action}[/] {esc(e.target)}{outcome} [dim]{esc(details)}[/]"
        )


def _audit_row(e: AuditEntry) -> list[str]:
    details = " ".join(f"{k}={_text(v)}" for k, v in sorted(e.details.items()) if v)
    return [e.at, e.actor, e.application, e.action, e.target, e.outcome, details]


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _short(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def message(text: str) -> None:
    console().print(text)


def import_report(report: Any) -> None:
    """The summary of an import: counts, then the first errors."""
    title = (
        "dry run: nothing was changed"
        if report.dry_run
        else ("stopped: nothing was imported (--on-error stop)" if report.stopped else "import")
    )
    verb = "would be " if report.dry_run or report.stopped else ""
    counts = [
        ("rows", report.rows),
        (f"{verb}created", report.created),
        (f"{verb}updated", report.updated),
        ("unchanged", report.unchanged),
        ("rejected", report.rejected),
        ("already imported (resumed)", report.skipped_done),
    ]
    rows = [(k, f"{v:,}") for k, v in counts if v or k in ("rows", "rejected")]
    if report.seconds:
        rows.append(("rows/s", f"{report.rows / report.seconds:,.0f}"))
    table(["count", "value"], rows, header=False, title=title)
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


def sync_result(
    result: Any, drift: dict[str, Any] | None, quiet: bool, repaired: Any = None
) -> None:
    """The plan per IdP (a table of differences), then what applying it did."""
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
            table(
                ["action", "kind", "entity", "why", "changes"],
                (
                    (
                        Styled(item.action, _ACTION_STYLE.get(item.action, "cyan")),
                        item.kind,
                        item.label,
                        item.reason,
                        _shortened(item.changed),
                    )
                    for item in idp_plan.items
                ),
            )
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
        for label in report.get("groups_deleted_remotely", []):
            console().print(f"  [red]group deleted remotely[/] {esc(label)}")
        for change in report.get("groups_changed_remotely", []):
            lost = ", ".join(change["missing_members"]) or "none"
            console().print(
                f"  [yellow]group changed remotely[/] {esc(change['group'])}: "
                f"members missing: {esc(lost)}"
                + (f"; named {esc(change['display_name'])}" if "display_name" in change else "")
            )
        for error in report["errors"]:
            console().print(f"  [red]✗[/] {esc(error)}")
        if report["repaired"] is not None:
            console().print(f"  repaired {report['repaired']} of {len(report['repairs'])}")
        elif report["repairs"]:
            console().print(
                f"  {len(report['repairs'])} to repair: run `idprov sync --verify --repair`"
            )
    if repaired is not None:
        outbound_report(repaired)


def _shortened(changes: list[str], most: int = 10) -> str:
    """A plan's changes to an entity: a 2,000-member group is not 2,000 names."""
    if len(changes) <= most:
        return ", ".join(changes)
    return ", ".join(changes[:most]) + f", … and {len(changes) - most} more"


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
    if not records:
        note("no tokens: make one with `idprov token create --app NAME`")
        return
    table(
        ["id", "application", "scope", "created", "by", "state", "description"],
        (
            (
                r.id,
                r.application,
                r.scope,
                r.created_at[:19],
                r.created_by,
                f"revoked {r.revoked_at[:19]}" if r.revoked_at else "active",
                r.description,
            )
            for r in records
        ),
    )


def status(rows: list[Any]) -> None:
    """`idprov status`: a line per identity provider."""
    if not rows:
        note("no identity providers configured")
        return
    table(
        ["idp", "last sync", "last success", "pending", "failed", "held", "oldest", "health"],
        (
            (
                r.idp,
                f"{r.last_sync} ({r.last_sync_outcome})" if r.last_sync else "never",
                r.last_success or "never",
                r.outbox.get("pending", 0),
                r.outbox.get("failed", 0),
                r.outbox.get("held", 0),
                "-" if r.oldest_age() is None else f"{r.oldest_age():.0f}s",
                r.health,
            )
            for r in rows
        ),
    )
