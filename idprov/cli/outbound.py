"""`idprov outbox ...`, `idprov idp ...`, `idprov connector list`: outbound provisioning."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import (
    AppOpt,
    CompactOpt,
    JsonOpt,
    YesOpt,
    complete_idp,
    emit,
    known_idps,
    new_app,
    service,
)
from idprov.cli.guard import AllowOpt, confirm
from idprov.cli.status import MetricsOpt, write_run_metrics

outbox_app = new_app("Outbound operations that are pending or failed.")
idp_app = new_app("Identity providers: the systems changes are provisioned to.")
connector_app = new_app("Installed connectors (built-in and plugins).")

IdpFilter = Annotated[
    list[str] | None,
    typer.Option("--idp", help="Only this identity provider; repeat.", autocompletion=complete_idp),
]


class OutboxStatus(StrEnum):
    pending = "pending"
    failed = "failed"
    held = "held"


@outbox_app.command("list")
def outbox_list(
    idp: IdpFilter = None,
    status: Annotated[OutboxStatus | None, typer.Option(help="Only these rows.")] = None,
    json: JsonOpt = False,
) -> None:
    """Show what is waiting to be provisioned, and why it failed.

    A row of an identity provider that is no longer configured shows as orphaned:
    drop it with `idprov outbox discard`. Example: idprov outbox list --status failed
    """
    import dataclasses

    svc = service(read_only=True)
    rows = [
        r if svc.outbound.configured(r.idp) else dataclasses.replace(r, status="orphaned")
        for r in svc.outbox_rows(known_idps(svc, idp), status.value if status else None)
    ]
    if not rows and (idp or status):  # say what the filter left out, not "empty"
        others = sum(svc.state.outbox.count().values())
        what = " ".join(
            p
            for p in (status.value if status else "", "rows", f"at {', '.join(idp)}" if idp else "")
            if p
        )
        if others:
            emit(
                rows,
                lambda _: render.note(
                    f"no {what}; the outbox holds {others} other rows: idprov outbox list"
                ),
            )
            return
    emit(rows, render.outbox)


@outbox_app.command("retry")
def outbox_retry(
    idp: IdpFilter = None, app_name: AppOpt = "resident", json: JsonOpt = False
) -> None:
    """Push every pending and failed operation again, now.

    Rows the deletion guard held stay held: `idprov outbox release` pushes them.
    """
    from collections import Counter

    from idprov.cli.render_reports import retry_report

    svc = service(app_name, live=True)
    idps = known_idps(svc, idp)
    report = svc.retry_outbox(idps)
    held = Counter(r.idp for r in svc.outbox_rows(idps, "held"))
    emit(report, lambda r: retry_report(r, dict(held)))


@outbox_app.command("release")
def outbox_release(
    idp: IdpFilter = None,
    yes: YesOpt = False,
    allow_deletes: AllowOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Push the changes the deletion guard held, once you have checked them.

    Lists what they would delete and asks (not on a terminal: --yes and
    --allow-deletes N).
    """
    from idprov.cli.guard import confirm_effects

    svc = service(app_name, live=True)
    idp = known_idps(svc, idp)
    verdict = svc.held_verdict(idp)
    confirm_effects(svc, verdict, yes, allow_deletes)
    emit(svc.release_held(idp), render.outbound_report)


@outbox_app.command("work")
def outbox_work(
    idp: IdpFilter = None,
    once: Annotated[
        bool, typer.Option("--once", help="Drain what is due now, then exit (for cron).")
    ] = False,
    metrics: MetricsOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
    compact: CompactOpt = False,
) -> None:
    """Run the outbox worker: push pending rows, and failed ones when their retry is due.

    Without --once it runs until interrupted (Ctrl-C or SIGTERM), like the worker that
    `idprov serve` runs. Example: idprov outbox work --once --idp scim-main
    """
    svc = service(app_name, live=once)
    from idprov.errors import ExitCode
    from idprov.provisioning.metrics import RunStats, run_outcome

    stats = RunStats("outbox-work")
    stop = _stop_on_signals()
    if once:
        report = svc.outbound.work(idp, once=True, stop=stop, progress=svc.progress)
    else:  # a service's worker: a database that went away is waited for, not an exit
        from idprov.provisioning.outbound import keep_working
        from idprov.provisioning.results import OutboundReport

        report = OutboundReport()

        def work() -> None:
            report.merge(svc.outbound.work(idp, stop=stop, progress=svc.progress))

        svc.outbound.say = _say_waiting

        keep_working(work, stop, _say_worker)
    stats.add(report)
    stats.outcome = run_outcome(0 if report.ok else ExitCode.OUTBOUND_FAILED)
    write_run_metrics(metrics, svc, stats)
    emit(report, render.outbound_report)


def _say_worker(text: str, bug: bool) -> None:
    import traceback

    sys.stderr.write(f"idprov outbox work: {text}\n")
    if bug:
        traceback.print_exc()
    sys.stderr.flush()


def _say_waiting(text: str) -> None:
    """What the worker says, once per IdP, of rows it leaves waiting for a rename, and
    once per IdP and holder, of another drainer's lease it waits for."""
    _say_worker(text, False)


def _stop_on_signals() -> Any:
    """An event set by SIGTERM or SIGINT, so the worker finishes its batch and stops."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


@outbox_app.command("discard")
def outbox_discard(
    idp: Annotated[str, typer.Option("--idp", help="The identity provider whose rows go.")],
    user: Annotated[
        list[str] | None,
        typer.Option("--user", help="Only this user's (or role's) row; repeat.", metavar="NAME"),
    ] = None,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Drop outbox rows nobody will push, e.g. of an identity provider you removed.

    The rows are gone for good (recorded in the audit log); `idprov sync` computes
    again what a configured IdP needs. Example: idprov outbox discard --idp old-scim --yes
    """
    svc = service()
    rows = svc.outbox_rows(known_idps(svc, [idp]))
    if user:
        wanted = {u.casefold() for u in user}
        rows = [r for r in rows if r.label.casefold() in wanted]
    if not rows:
        emit([], render.outbox)
        return
    if not yes:
        confirm(f"Discard {len(rows)} outbox row(s) of {idp}? They will not be pushed.")
    discarded = svc.discard_outbox(idp, [r.local_id for r in rows])
    emit(discarded, render.discarded)
    warn_returning(svc, idp, discarded)


def warn_returning(svc: Any, idp: str, rows: list[Any]) -> None:
    """A warning on stderr (a JSON line with ``--json``) for each discarded row whose
    cause remains, so that a later change or sync makes it again, with what stops it."""
    from idprov.cli.common import render_error
    from idprov.errors import IdprovError
    from idprov.provisioning.discard import returning

    try:
        back_again = returning(svc, idp, rows)
    except IdprovError as exc:  # discarded all the same: only the check could not be made
        unread = IdprovError(
            f"the rows are discarded, but whether a later change makes them again cannot be "
            f"told now: {exc.message}",
            hint=exc.hint,
        )
        unread.code = "row_comes_back_unknown"
        render_error(unread, "warning")
        return
    for back in back_again:
        warning = IdprovError(back.message, hint=back.hint)
        warning.code = "row_comes_back"
        render_error(warning, "warning")


@idp_app.command("list")
def idp_list(json: JsonOpt = False) -> None:
    """List the configured identity providers."""
    svc = service(previewing=True)
    health = svc.idp_health()
    rows = [
        {
            "name": i.name,
            "connector": i.connector,
            "enabled": i.enabled,
            "blocking": i.blocking,
            "health": health.get(i.name, "ok"),
            "provisioning_roles": i.provisioning_roles,
            "deprovision": i.deprovision,
            "applications": [
                a.name for a in svc.config.applications if i.name in a.identity_providers
            ],
        }
        for i in svc.config.identity_providers
    ]
    emit(rows, render.idp_list)


@idp_app.command("test")
def idp_test(
    name: Annotated[str, typer.Argument(help="Identity provider name.")],
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Also try what the target really does, on users and a group of its own "
            "(idprov-probe-*, deleted afterwards), and say which options fit.",
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Check reachability, authentication and capabilities; without --probe changes nothing."""
    from idprov.errors import OutboundError

    if probe:
        from idprov.cli import render_probe

        result = service().connector(name).probe(on_interrupt=render_probe.probe_interrupted)
        emit(result, render_probe.probe_report)
        if result.left_behind:
            raise OutboundError(
                f"the probe could not delete {len(result.left_behind)} of its objects",
                hint="delete them by hand: " + ", ".join(result.left_behind),
            )
        return
    from idprov.cli.status import warn_unchecked_tls

    svc = service()
    warn_unchecked_tls(svc.config, name)
    report = svc.test_idp(name)
    emit(report, lambda r: render.check_report(name, r))
    if report.checked and not report.ok:
        raise OutboundError(
            f"identity provider {name} failed its check", hint="; ".join(report.messages) or None
        )


@idp_app.command("rename")
def idp_rename(
    old: Annotated[str, typer.Argument(help="The name idprov's state holds it under.")],
    new: Annotated[str, typer.Argument(help="The name the configuration now gives it.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would move; change nothing.")
    ] = False,
    wait: Annotated[
        bool, typer.Option(help="Wait for a running sync or import instead of exiting with code 8.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also when NEW was renamed away before and idprov does not know where it "
            "pointed then (stop every process on an older configuration first).",
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Move what idprov knows about a renamed identity provider to its new name.

    Rename it in the configuration first, then run this: its ledger (the accounts and
    groups idprov made there), outbox rows, health and recorded scope move from OLD to
    NEW in one transaction. Nothing at the target changes. Example: idprov idp rename
    corp corp-scim
    """
    from idprov.provisioning.idp_rename import rename_idp

    svc = service(live=False)
    result = rename_idp(
        svc.state,
        svc.config,
        old,
        new,
        actor=svc.actor,
        application=svc.application,
        dry_run=dry_run,
        wait=wait,
        force=force,
    )
    emit(result, _renamed)


@idp_app.command("forget-rename")
def idp_forget_rename(
    name: Annotated[str, typer.Argument(help="A name `idprov idp rename` moved away.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also when idprov does not know where the name pointed then (stop every "
            "process on an older configuration first).",
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Let another identity provider use a name `idprov idp rename` moved away.

    After `idprov idp rename a b`, nothing is pushed under 'a' again. This gives the
    name to another IdP: one configured as 'a' that points elsewhere than the renamed
    one did is pushed to; a process still on a configuration older than the rename
    stays stopped. Example: idprov idp forget-rename a
    """
    from idprov.provisioning.idp_rename import forget_rename

    svc = service(live=False)
    result = forget_rename(
        svc.state, svc.config, name, actor=svc.actor, application=svc.application, force=force
    )
    emit(result, _forgotten_rename)


IdpName = Annotated[str, typer.Argument(help="The identity provider.", autocompletion=complete_idp)]
UserNames = Annotated[list[str], typer.Argument(help="User names, as `sync --verify` lists them.")]


@idp_app.command("stamp")
def idp_stamp(name: IdpName, users: UserNames, json: JsonOpt = False) -> None:
    """Confirm that idprov made these users' accounts: write its mark on them.

    For an account `idprov sync --verify` lists as made by idprov but without its mark
    (adopted when the mark could be a claim's value), after checking at the target that
    idprov made it: the mark (the user's idprov id, in mark_attribute or mark_field)
    is written, nothing else; a deprovision may then delete it. Example: idprov idp
    stamp oim carol
    """
    from idprov.provisioning.marks import stamp

    emit(stamp(service(live=False), name, users), _settled)


@idp_app.command("forget-account")
def idp_forget_account(name: IdpName, users: UserNames, json: JsonOpt = False) -> None:
    """Let go of these users' accounts: idprov's ledger forgets them.

    For an account `idprov sync --verify` lists as made by idprov but without its mark
    that is another system's: nothing at the target changes, and idprov no longer
    updates or deprovisions it (a user still in scope is created again, and a name
    the account holds is refused unless on_conflict: adopt). For an account `sync
    --verify` lists as one account of two local users, forget it for the users whose
    account it is not: the other keeps it. Example: idprov idp forget-account oim carol
    """
    from idprov.provisioning.marks import forget_accounts

    emit(forget_accounts(service(live=False), name, users), _settled)


def _settled(result: Any) -> None:
    done = "stamped idprov's mark on" if result.action == "stamp" else "forgot"
    render.message(
        f"[green]✓[/] {render.esc(result.idp)}: {done} "
        f"{render.esc(', '.join(result.users)) or 'nothing'}"
    )
    for user, holder in result.kept_by.items():
        render.message(
            f"  {render.esc(user)}'s account is {render.esc(holder)}'s: idprov's next push of "
            f"{render.esc(holder)} (`idprov sync --idp {render.esc(result.idp)}`) sends its own "
            "attributes to it again"
        )
    if result.users:
        render.message(f"  then `idprov outbox retry --idp {render.esc(result.idp)}`")


def _forgotten_rename(result: Any) -> None:
    name = render.esc(result.name)
    render.message(
        f"[green]✓[/] '{name}' is free: `idprov idp rename {name} "
        f"{render.esc(result.renamed_to)}` ({render.esc(result.renamed_at)}) no longer keeps "
        f"another identity provider from pushing under it"
    )
    if result.target is not None:
        render.message(
            f"  an entry '{name}' that points at {render.esc(result.target)}, as the renamed "
            "one did (a configuration older than the rename), still pushes nothing"
        )
    for note in result.notes:
        render.message(f"[yellow]![/] {render.esc(note)}")


_MOVED = {
    "accounts": "account",
    "groups": "group",
    "memberships": "membership",
    "inputs": "input digest",
    "outbox": "outbox row",
    "health": "health and scope record",
    "jit_links": "JIT login link",
}


def _renamed(result: Any) -> None:
    parts = [
        f"{n} {word}{'s' if n != 1 and word != 'health and scope record' else ''}"
        for key, word in _MOVED.items()
        if (n := result.moved[key])
    ]
    verb = "would move" if result.dry_run else "moved"
    done = "[dim]dry run:[/]" if result.dry_run else "[green]✓[/]"
    render.message(
        f"{done} {render.esc(result.old)} → {render.esc(result.new)}: {verb} "
        f"{render.esc(', '.join(parts))}; nothing at the target changes"
    )
    for note in result.notes:
        render.message(f"[yellow]![/] {render.esc(note)}")


@connector_app.command("list")
def connector_list(json: JsonOpt = False) -> None:
    """List installed connectors and where they come from."""
    from idprov.connectors import registry
    from idprov.errors import ConfigError

    rows: list[dict[str, Any]] = []
    for name in registry.available():
        try:
            description, loaded = registry.load(name).description, True
        except ConfigError as exc:  # a broken plugin is listed, not fatal
            description, loaded = exc.message, False
        rows.append(
            {
                "name": name,
                "module": registry.entry_point(name).value,
                "description": description,
                "loaded": loaded,
                "package": registry.package(name),
                "ignored": False,
            }
        )
    rows += [ignored_row(ep) for ep in registry.shadowed()]
    emit(rows, render.connector_list)


def ignored_row(ep: Any) -> dict[str, Any]:
    """`connector list`'s row for a package's entry point that takes a built-in name."""
    from idprov.connectors import registry

    return {
        "name": ep.name,
        "module": ep.value,
        "description": registry.why_ignored(ep),
        "loaded": False,
        "package": ep.dist.name if ep.dist else None,
        "ignored": True,
    }
