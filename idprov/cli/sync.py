"""`idprov sync`, `idprov plan` and `idprov explain`: reconciliation from cron or by hand."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import (
    AppOpt,
    CompactOpt,
    JsonOpt,
    _session,
    complete_idp,
    display,
    emit,
    emit_with_code,
    render_error,
    service,
)
from idprov.cli.status import MetricsOpt, warn_orphaned_idps, write_run_metrics
from idprov.errors import ExitCode, IdprovError, StoreError, UsageError

IdpOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--idp",
        help="Only this identity provider; repeat. Default: all of the app's.",
        autocompletion=complete_idp,
    ),
]


def _exit_code(result: Any, detailed: bool) -> int:
    """The exit code; with ``detailed``, 11 says the plan was not empty: its changes were
    applied, or, in a dry run, are pending (one check for cron or CI, as terraform
    plan's 2: the caller knows which it asked for)."""
    from idprov.provisioning.verify import drift_found

    if result.plan.refused:
        return int(ExitCode.USAGE)  # an IdP's scope names a role no userstore has
    if not result.ok:
        return int(ExitCode.OUTBOUND_FAILED)
    if result.held is not None:
        return int(ExitCode.GUARD_TRIPPED)  # an IdP's plan held: `--allow-deletes N`
    if result.outbound is not None and result.outbound.held:
        return int(ExitCode.GUARD_TRIPPED)  # held in the outbox: `idprov outbox release`
    if result.repaired is not None and result.repaired.held:
        return int(ExitCode.GUARD_TRIPPED)  # the repair's push, held the same way
    if result.plan.ambiguous:
        return int(ExitCode.PARTIAL)  # users left out until their names are unique
    if detailed and drift_found(result.drift) and result.repaired is None:
        return int(ExitCode.DRIFT_FOUND)
    if detailed and (not result.plan.empty or result.repaired is not None):
        return int(ExitCode.CHANGES_APPLIED)
    return 0


def sync(
    idp: IdpOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing anywhere.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Save the plan as JSON (with --dry-run), to apply it later with --apply."
        ),
    ] = None,
    apply: Annotated[
        Path | None,
        typer.Option(help="Apply exactly this saved plan; refused if anything changed since."),
    ] = None,
    allow_deletes: Annotated[
        int | None,
        typer.Option(
            help="Accept a plan with up to N deprovisions per IdP, over the deletion guard."
        ),
    ] = None,
    verify: Annotated[bool, typer.Option(help="Also read the targets and report drift.")] = False,
    repair: Annotated[
        bool,
        typer.Option(
            help="With --verify: restore what idprov owns (re-create what was deleted "
            "remotely, revert changed attributes, restore members); with --dry-run it "
            "only reports."
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option(help="Wait for a running sync or import instead of exiting with code 8.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress, only errors and the summary.")
    ] = False,
    metrics: MetricsOpt = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            help="Exit 11 when changes were applied, or with --dry-run are pending (0: "
            "nothing to do); 12 when --verify found drift that was not repaired."
        ),
    ] = False,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
    compact: CompactOpt = False,
) -> None:
    """Bring every identity provider into line with the userstores (cron-safe)."""
    from contextlib import nullcontext

    from idprov.provisioning.metrics import RunStats, run_outcome
    from idprov.provisioning.sync import load_plan, run_sync

    if out is not None and not dry_run:
        raise UsageError("--out saves a plan: use it with --dry-run (or `idprov plan`)")
    saved = load_plan(apply) if apply is not None else None
    svc = service(app_name, live=not quiet, previewing=dry_run)
    if verify and display() is not None:  # the reads of the targets, as they go
        svc.phase = display().phase
    stats = RunStats("sync")
    try:
        with nullcontext() if dry_run else svc.state.run_lock("sync", wait=wait):
            result = run_sync(svc, idp, dry_run, allow_deletes, saved, verify, repair)
    except IdprovError as exc:
        stats.outcome = run_outcome(exc.exit_code)
        stats.guard_trips.update(getattr(exc, "tripped", {}))
        write_run_metrics(metrics, svc, stats)
        raise
    if out is not None:  # it holds usernames and ids: 0600, in a directory that exists
        from idprov.config.paths import open_private_output

        with open_private_output(out, overwrite=True) as f:
            f.write(jsonlib.dumps(result.plan.to_dict(), indent=2))
    code = _exit_code(result, detailed_exitcode)
    write_run_metrics(metrics, svc, _stats(stats, result, code))
    _after_run(lambda: warn_orphaned_idps(svc))
    for name in result.plan.ambiguous:
        render_error(StoreError(name.message, hint=name.hint), "warning")
    emit(
        result.to_dict(), lambda _: render.sync_result(result, result.drift, quiet, result.repaired)
    )
    if result.held is not None:  # the IdPs held, after what was done at the others
        render_error(result.held)
    for refusal in result.plan.refused:  # an IdP whose scope names no role: not synced
        render_error(refusal)
    if code:
        raise typer.Exit(code)


def _after_run(step: Any) -> None:
    """Warn about a ledger under a name no longer configured: a failure to look is a
    warning, since the sync's work is done and its report and exit code must stand."""
    from idprov.cli.common import as_idprov_error, render_error

    try:
        step()
    except Exception as exc:  # a database error, or a bug: said, not the sync's failure
        error = as_idprov_error(exc, "sync")
        if error is None:
            raise
        error.message = (
            f"after the sync, idprov's identity provider names were not checked: {error.message}"
        )
        render_error(error, "warning")


def _stats(stats: Any, result: Any, code: int) -> Any:
    from idprov.provisioning.metrics import run_outcome

    stats.add(result.outbound)
    stats.add(result.repaired)
    if result.held is not None:
        stats.guard_trips.update(result.held.tripped)
    stats.outcome = run_outcome(code)
    for name, report in (result.drift or {}).items():
        stats.drift_found[name] = len(report["repairs"])
        if report["repaired"] is not None:
            stats.drift_repaired[name] = report["repaired"]
    return stats


def plan(
    idp: IdpOpt = None,
    out: Annotated[Path | None, typer.Option(help="Save the plan as JSON.")] = None,
    detailed_exitcode: Annotated[
        bool, typer.Option(help="Exit 11 when changes are pending (0: nothing to do).")
    ] = False,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Show what `idprov sync` would do (same as `sync --dry-run`); change nothing."""
    sync(
        idp=idp,
        dry_run=True,
        out=out,
        apply=None,
        allow_deletes=None,
        verify=False,
        repair=False,
        wait=False,
        quiet=True,
        metrics=None,
        detailed_exitcode=detailed_exitcode,
        app_name=app_name,
        json=_session().json,
        compact=_session().compact,
    )


def explain(
    user: Annotated[str, typer.Argument(help="Username, or DOMAIN/username.")],
    idp: Annotated[str, typer.Option("--idp", help="The identity provider.")],
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Why a user is or is not provisioned to an IdP, what would be sent, the ledger."""
    from idprov.provisioning.explain import explain as explain_user

    emit_with_code(
        explain_user(service(app_name, read_only=True), user, idp), render.explanation, 0
    )
