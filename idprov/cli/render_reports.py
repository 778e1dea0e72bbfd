"""Views of what a change did: the one-line result, the push to each identity
provider, an import's summary, a sync's plan and run, and `idprov explain`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idprov.cli.tables import Styled, console, esc, printable, table

if TYPE_CHECKING:
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import ChangeResult


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
        typer.echo(printable(f" {result.target}: nothing to do"))
        return
    text = f"{verb} {result.target}"
    if result.action == "role.assign":
        text += " to " + ", ".join(_qualified(result.details["added"], result.target))
    elif result.action == "role.unassign":
        text += " from " + ", ".join(_qualified(result.details["removed"], result.target))
    elif result.action in ("role.rename", "user.rename"):
        [old] = _qualified([result.details["from"]], result.target)
        text = f"{verb} {old} → {result.target}"
    elif result.action == "user.update":
        text += ": " + ", ".join(result.details["claims"])
    reports = result.details.get("reports") if result.details else None
    if reports and result.action in ("user.rename", "user.delete"):
        lost = "follows the new name" if result.action == "user.rename" else "is removed"
        text += f"; the manager claim of {', '.join(reports)} {lost}"
    typer.secho("✓", fg="green", nl=False)
    typer.echo(" " + printable(text))
    if result.outbound is not None:
        outbound_report(result.outbound)


def _qualified(names: list[str], target: str) -> list[str]:
    """``names`` of users or roles of ``target``'s domain, as ``target`` is written
    (``CORP/bob`` beside ``CORP/staff``; bare in PRIMARY): a change's details name them
    as the store does. An internal role's members are named with their domains."""
    from idprov.model import QualifiedName
    from idprov.provisioning.internal_roles import is_internal

    domain, sep, _ = target.partition("/")
    if not sep or is_internal(domain):
        return names
    return [str(QualifiedName.parse(name, domain)) for name in names]


def losing_manager(reports: list[str], shown: int = 10) -> str:
    """What a delete's question adds for the users whose manager claim it removes:
    " and remove the manager claim of 3 users (bob, carol, dave)" ("" for none)."""
    if not reports:
        return ""
    names = ", ".join(reports[:shown])
    if len(reports) > shown:
        names += f" and {len(reports) - shown} more"
    users = "user" if len(reports) == 1 else "users"
    return f" and remove the manager claim of {len(reports)} {users} ({names})"


def outbound_report(report: OutboundReport) -> None:
    """A line per identity provider, then each failure with the target's message."""
    import typer

    if not (report.idps or report.queued or report.held or report.awaiting_rename):
        if not report.leased:
            typer.echo("  nothing to provision")
    for idp in report.idps.values():
        done, failed, skipped = idp.count("done"), idp.count("failed"), idp.count("skipped")
        mark, colour = ("✗", "red") if failed else ("✓", "green")
        typer.echo("  ", nl=False)
        typer.secho(mark, fg=colour, nl=False)
        parts = [f"{done:,} done"] + ([f"{failed:,} failed"] if failed else [])
        parts += [f"{skipped:,} unchanged or out of scope"] if skipped else []
        pending = idp.total - len(idp.operations)
        parts += [f"{pending:,} left pending"] if pending > 0 else []
        typer.echo(f" {idp.name}: " + ", ".join(parts))
        _failures(idp.name, [op for op in idp.operations if op.outcome == "failed"])
    for name, count in sorted(report.queued.items()):
        typer.echo(f"  … {name}: {count} queued for the outbox worker (`idprov outbox work`)")
    from idprov.provisioning.outbound import lease_line

    for name, count in sorted(report.leased.items()):
        line = lease_line(count, report.leases.get(name, {}))
        typer.secho(f"  ⏳ {name}: {printable(line)}", fg="yellow")
    for name, count in sorted(report.awaiting_rename.items()):
        other = report.renamed_from[name]
        why = (
            f"its ledger went to {other} (`idprov idp rename`, {report.renamed_away[name]}): "
            "this configuration is older than that rename; use the new one"
            if name in report.renamed_away
            else f"waiting in the outbox for `idprov idp rename {other} {name}`"
        )
        typer.secho(f"  ⏸ {name}: {count} not pushed, {why}", fg="yellow")
    held_by_guard(report.held)
    for warning in report.warnings:
        typer.secho(f"  ! {printable(warning)}", fg="yellow", err=True)
    if report.failed:
        typer.echo(
            "  failed operations stay in the outbox: `idprov outbox list`, `idprov outbox retry`"
        )


SHOWN_FAILURES = 10


def held_by_guard(held: dict[str, int]) -> None:
    """A line per IdP with rows the deletion guard holds, and where to go next."""
    import typer

    for name, count in sorted(held.items()):
        typer.secho(
            f"  ✋ {name}: {count} held by the deletion guard: check them with `idprov outbox "
            f"list --idp {name} --status held`, push them with `idprov outbox release --idp "
            f"{name}` (those a change of scope holds: `idprov sync --idp {name}`)",
            fg="yellow",
        )


def retry_report(report: OutboundReport, held: dict[str, int]) -> None:
    """`idprov outbox retry`: what it pushed, then the rows held (``held``: those held
    now, the ones it held among them), one line per IdP, each said once."""
    import copy

    total = {n: max(held.get(n, 0), report.held.get(n, 0)) for n in {*held, *report.held}}
    if not (report.idps or report.queued or report.held or report.leased or not total):
        held_by_guard(total)
        return
    shown = copy.copy(report)
    shown.held = total
    outbound_report(shown)


def _failures(idp: str, failed: list[Any]) -> None:
    """The first failures, each once (an import's batches repeat a role's failure),
    then how many more, and where to see them all: never a wall of lines."""
    import typer

    lines = list(
        dict.fromkeys(f"{op.kind} {op.label}: {op.operation} failed: {op.error}" for op in failed)
    )
    for line in lines[:SHOWN_FAILURES]:
        typer.echo(f"      {printable(_clipped(line))}")
    if len(lines) > SHOWN_FAILURES:
        typer.echo(
            f"      … and {len(lines) - SHOWN_FAILURES} more: "
            f"`idprov outbox list --idp {idp} --status failed`"
        )


def _clipped(line: str, most: int = 400) -> str:
    return line if len(line) <= most else line[: most - 1] + "…"


def import_report(report: Any, quiet: bool = False) -> None:
    """The summary of an import: counts, then the first errors (``quiet``: without the
    title that only says "import", a line on stderr where stdout is no terminal)."""
    title = (
        "dry run: nothing was changed"
        if report.dry_run
        else (
            "stopped: nothing was imported (--on-error stop)"
            if report.stopped
            else (None if quiet else "import")
        )
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
    if report.dry_run and report.changes:
        _planned_changes(report.changes)
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


PLANNED_SHOWN = 20
"""Users a dry run of an import lists (``--json`` gives them all)."""


def _planned_changes(changes: list[dict[str, Any]]) -> None:
    """What a dry run of an import would change, user by user: the first
    :data:`PLANNED_SHOWN`, then how many more (all of them in ``--json``)."""
    total = len(changes)
    more = (
        f" (the first {PLANNED_SHOWN} of {total:,}; all with --json)"
        if total > PLANNED_SHOWN
        else ""
    )
    console().print(f"would change{more}:")
    for change in changes[:PLANNED_SHOWN]:
        parts = []
        for key, said in (
            ("set", "set"),
            ("removed", "remove"),
            ("roles_added", "add role"),
            ("roles_removed", "remove role"),
        ):
            if change.get(key):
                parts.append(f"{said} {', '.join(change[key])}")
        if change.get("password"):
            parts.append("set password")
        action = change["action"]
        style = _ACTION_STYLE.get(action, "")
        what = "; ".join(parts) if parts else "no claims"
        console().print(
            f"  [{style}]{action}[/] {esc(change['user'])}: {esc(what)}"
            if style
            else f"  {action} {esc(change['user'])}: {esc(what)}"
        )


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
        for label in report.get("lost", []):
            console().print(f"  [red]lost at the target, not made again yet[/] {esc(label)}")
        for change in report["changed_remotely"]:
            console().print(
                f"  [yellow]changed remotely[/] {esc(change['user'])}: "
                f"{esc(', '.join(change['attributes']))}"
            )
        for change in report.get("kept_remotely", []):
            console().print(
                f"  changed at the target, left so (a repair never sends the user name or"
                f" what the connector derives) {esc(change['user'])}: "
                f"{esc(', '.join(change['attributes']))}"
            )
        if report.get("disabled_remotely"):
            console().print(
                "  disabled at the target (an administrator's doing: left so, never "
                f"re-enabled): {esc(', '.join(report['disabled_remotely'][:20]))}"
                + (" ..." if len(report["disabled_remotely"]) > 20 else "")
            )
        if report.get("not_proven"):
            console().print(
                "  [red]recorded as made by idprov, but without idprov's mark[/] (not "
                f"provably idprov's, never deleted): {esc(_first(report['not_proven']))}; "
                f"if idprov made them, `idprov idp stamp {esc(name)} USER...`; if not, "
                f"`idprov idp forget-account {esc(name)} USER...`"
            )
        for shared in report.get("shared", []):
            console().print(
                f"  [red]one account, {len(shared['users'])} local users[/] "
                f"{esc(', '.join(shared['users']))} (account {esc(shared['remote_id'])}: "
                f"merged by an earlier version's adoption; not checked or repaired): "
                f"{esc(shared['fix'])}"
            )
        if report.get("accounts_listed") is False:  # whatever else failed
            console().print(
                "  accounts outside idprov's ledger were not looked for (the connector "
                "cannot list the target's accounts)"
            )
        if report["unowned"]:
            console().print(
                f"  not idprov's (never touched): "
                f"{esc(', '.join(report['unowned'][:20]))}"
                + (" ..." if len(report["unowned"]) > 20 else "")
            )
        if report.get("marked_unowned"):
            console().print(
                "  [yellow]carry idprov's mark but are not in this IdP's ledger[/] "
                f"(left alone): {esc(_first(report['marked_unowned']))}; was the IdP renamed "
                "in the configuration? Its ledger stays under the old name: `idprov idp "
                "rename OLD NEW` moves it"
            )
        if report.get("cut_off_creates"):
            console().print(
                "  made by a push that was cut off before it was recorded (a kill, a lost "
                f"reply): {esc(_first(report['cut_off_creates']))}; the next push or "
                "`idprov sync` adopts them (they carry idprov's mark)"
            )
        for label in report.get("groups_deleted_remotely", []):
            console().print(f"  [red]group deleted remotely[/] {esc(label)}")
        for change in report.get("groups_changed_remotely", []):
            what = []
            if change["missing_members"]:
                what.append(f"members missing: {esc(', '.join(change['missing_members']))}")
            if "display_name" in change:
                what.append(f"named {esc(change['display_name'])}")
            dangling = change.get("dangling_members", [])
            if dangling:
                what.append(f"{len(dangling)} member(s) that are no account there")
            console().print(
                f"  [yellow]group changed remotely[/] {esc(change['group'])}: " + "; ".join(what)
            )
            for member in change.get("dangling_members", []):
                console().print(f"    member {esc(member)} does not exist at the target")
        if report.get("unverifiable"):
            console().print(f"  [yellow]not verified[/]: {esc(report['unverifiable'])}")
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
    if result.audit_removed:
        console().print(
            f"audit log: {result.audit_removed} entries older than audit.keep_days removed"
        )


def _first(names: list[str], most: int = 20) -> str:
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


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
    if ledger and ledger["remote_id"] is None:  # creating, accepted: no claim of whose
        what = (
            "the target took a create to carry out later"
            if ledger["state"] == "accepted"
            else "a create may have reached the target (a timeout, a lost reply, an "
            "interrupted run) and its outcome is not known"
        )
        console().print(
            f"  ledger: {ledger['state']}: {what}; idprov looks the account up before it "
            f"sends anything again (since {ledger['updated_at']})"
        )
    elif ledger:
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
