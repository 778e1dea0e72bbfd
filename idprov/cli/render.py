"""Rich views of core results, one function per view, named for what it shows.

The table machinery is :mod:`idprov.cli.tables`; what a change did (results, pushes,
imports, syncs) is :mod:`idprov.cli.render_reports`; both are reachable from here,
so a command needs ``render`` only. ``--json`` output is :mod:`idprov.cli.render_json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, Any

from idprov.cli.render_reports import change as change
from idprov.cli.render_reports import explanation as explanation
from idprov.cli.render_reports import import_report as import_report
from idprov.cli.render_reports import losing_manager as losing_manager
from idprov.cli.render_reports import outbound_report as outbound_report
from idprov.cli.render_reports import sync_result as sync_result
from idprov.cli.tables import Styled, console, esc, note, on_terminal, table
from idprov.cli.tables import message as message
from idprov.provisioning.active import is_active

if TYPE_CHECKING:
    from idprov.connectors.base import CheckReport
    from idprov.model import PageStream, Role, User
    from idprov.provisioning.outbox import OutboxRow
    from idprov.provisioning.state import AuditEntry


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


def user_page(page: PageStream) -> None:
    """Users as they are read (written as they come when not on a terminal), with a
    domain column when they come from several domains, then which of how many."""
    first = next(page.items, None)
    if first is None:
        note(f"no users match (total {page.total})")
        return
    many = len(page.domains) > 1
    domain = ["domain"] if many else []
    columns = ["username", *domain, "email", "display name", "roles", "state"]
    shown = [0]
    table(columns, _user_rows(chain([first], page.items), many, shown))
    note(f"{page.offset + 1}–{page.offset + shown[0]} of {page.total}", style="dim")


def _user_rows(users: Iterable[User], with_domain: bool, shown: list[int]) -> Iterator[list[str]]:
    """Table rows of ``users``, counting them in ``shown[0]``."""
    for user in users:
        shown[0] += 1
        yield _user_row(user, with_domain)


def _user_row(user: User, with_domain: bool) -> list[str]:
    claims = user.claims
    display = claims.get("display_name") or " ".join(
        _claim_text(claims[c]) for c in ("given_name", "family_name") if c in claims
    )
    domain = [user.domain] if with_domain else []
    email = _claim_text(claims.get("email", ""))
    state = "active" if is_active(claims) else "disabled"
    return [user.username, *domain, email, _claim_text(display), ", ".join(user.roles), state]


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


def _next_try(row: OutboxRow) -> bool:
    """Whether ``row`` waits for a next try: a held row waits for its release."""
    return row.next_attempt_at is not None and row.status != "held"


def _due(row: OutboxRow, now: datetime) -> bool:
    """Whether ``row``'s next try has come (a drainer may take it now)."""
    assert row.next_attempt_at is not None
    try:
        when = datetime.fromisoformat(row.next_attempt_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when <= now


def _outbox_status(row: OutboxRow, now: datetime) -> str:
    """A row's status, and its next try: a time to come, or ``due now`` once past."""
    text = row.status
    if _next_try(row):
        text += " (due now)" if _due(row, now) else f" (next try {row.next_attempt_at})"
    if row.allowed is not None:
        text += f" (--allow-deletes {row.allowed})"
    if _claimed(row, now):
        from idprov.provisioning.outbound import holder_label

        text += f" (claimed by {holder_label(row.claimed_by or '')} until {row.claimed_until})"
    return text


def _leases(rows: list[OutboxRow], now: datetime) -> None:
    """A note per IdP with rows a drainer holds: who, until when, and what then. A
    holder on this machine that no longer runs (a killed command) waits for no lease:
    the next `idprov outbox retry` takes its rows (as it does: it releases them)."""
    from idprov.provisioning.outbound import holder_gone, holder_label, lease_line

    by: dict[str, dict[str, str]] = {}
    counts: dict[str, int] = {}
    dead: dict[str, dict[str, int]] = {}
    for r in rows:
        if not _claimed(r, now):
            continue
        holder = r.claimed_by or ""
        if holder_gone(holder):  # once per process: each change claims under a name
            gone, label = dead.setdefault(r.idp, {}), holder_label(holder)
            gone[label] = gone.get(label, 0) + 1
            continue
        holders = by.setdefault(r.idp, {})
        holders[holder] = max(r.claimed_until or "", holders.get(holder, ""))
        counts[r.idp] = counts.get(r.idp, 0) + 1
    for idp in sorted(by.keys() | dead.keys()):
        if idp in by:
            note(f"{idp}: {lease_line(counts[idp], by[idp])}")
        for label, count in sorted(dead.get(idp, {}).items()):
            rows_are = "row is" if count == 1 else "rows are"
            note(
                f"{idp}: {count} {rows_are} claimed by {label}, which no longer "
                "runs on this machine (a killed command): `idprov outbox retry` takes them now"
            )


def _claimed(row: OutboxRow, now: datetime) -> bool:
    """Whether a drainer's lease on ``row`` runs (no other takes it before it ends)."""
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return bool(row.claimed_by) and (row.claimed_until or "") >= stamp


def _attempts(row: OutboxRow) -> str:
    """A row's calls that failed; a failed row with none was never sent (its secret
    is missing, its group waits for members), which ``0`` alone would not say."""
    return (
        f"{row.attempts} (not sent)"
        if row.status == "failed" and not row.attempts
        else str(row.attempts)
    )


def outbox(rows: list[OutboxRow]) -> None:
    if not rows:
        note("the outbox is empty: everything has been provisioned")
        return
    from idprov.db import clock

    now = clock()  # the clock the rows' stamps were written by
    columns = ["idp", "kind", "entity", "status", "attempts", "since", "last error"]
    table(
        columns,
        (
            (
                r.idp,
                r.kind,
                r.label,
                _outbox_status(r, now),
                _attempts(r),
                r.enqueued_at,
                r.last_error or "",
            )
            for r in rows
        ),
    )
    _leases(rows, now)
    due = sum(1 for r in rows if _next_try(r) and _due(r, now) and not _claimed(r, now))
    if due:
        note(
            f"{due} row(s) due now: no worker has taken them yet; run `idprov outbox retry`, "
            "or start `idprov outbox work` (`idprov serve` runs one)"
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
    if not report.checked:
        console().print("  reachable      [yellow]unknown[/] (this connector has no check)")
        for text in report.messages:
            console().print(f"  [yellow]![/] {esc(text)}")
        return
    console().print(f"  reachable      {yes if report.reachable else no}")
    unknown = "[yellow]unknown[/] (the endpoint was not found)"
    auth = unknown if report.authenticated is None else yes if report.authenticated else no
    console().print(f"  authenticated  {auth}")
    for key, value in report.capabilities.items():
        console().print(f"  {key:<14} {esc(value)}")
    for text in report.messages:
        console().print(f"  [yellow]![/] {esc(text)}")


def connector_list(rows: list[dict[str, Any]]) -> None:
    table(
        ["connector", "package", "module", "description"],
        (
            (r["name"], r["package"] or "(not installed)", r["module"], r["description"])
            for r in rows
        ),
    )


def audit(entries: list[AuditEntry]) -> None:
    """One line per entry, newest first: when, who@application, action, target, details."""
    if not entries:
        note("no audit entries match")
        return
    if not on_terminal():  # every detail in full, a column each
        columns = ["at", "actor", "application", "action", "target", "outcome", "details"]
        table(columns, (_audit_row(e) for e in entries))
        return
    for e in entries:
        details = " ".join(f"{k}={_short(v)}" for k, v in sorted(e.details.items()) if v)
        outcome = "" if e.outcome == "ok" else f" [red]{esc(e.outcome)}[/]"
        console().print(
            f"[dim]{e.at[:19].replace('T', ' ')}[/] {esc(e.actor)}@{esc(e.application)} "
            f"[bold]{esc(e.action)}[/] {esc(e.target)}{outcome} [dim]{esc(details)}[/]"
        )


def _audit_row(e: AuditEntry) -> list[str]:
    details = " ".join(f"{k}={_text(v)}" for k, v in sorted(e.details.items()) if v)
    return [e.at, e.actor, e.application, e.action, e.target, e.outcome, details]


def _text(value: Any) -> str:
    """An audit detail as text: a list comma-separated, a mapping (a sync's counts per
    IdP) as compact JSON, not Python's repr."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        import json

        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return str(value)


def _short(value: Any) -> str:
    text = _text(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
