"""`idprov status`, and the `--metrics FILE` option of sync, import and outbox work."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from idprov.cli.common import ON_ERROR, JsonOpt, _session, emit, service
from idprov.errors import IdprovError

PENDING = "idprov.metrics"
"""Key of the click context's ``meta``: where this run's metrics go, until written."""
RUN_NAMES = {"import users": "import", "outbox work": "outbox-work"}
"""The ``command`` label of a command (by its words), where it is not the words."""


def _remember(ctx: typer.Context, value: Path | None) -> Path | None:
    """``--metrics``'s callback: note where this run's metrics go, so that a run that
    fails before it writes them (a configuration that does not load, a saved plan that
    cannot be read) writes a failed run's file on its way out."""
    if value is not None:
        ctx.meta[PENDING] = (value, _run_name(ctx), time.monotonic())
        ctx.meta.setdefault(ON_ERROR, []).append(write_failed_run_metrics)
    return value


def _run_name(ctx: Any) -> str:
    words = []
    while ctx.parent is not None:
        words.append(ctx.info_name)
        ctx = ctx.parent
    name = " ".join(reversed(words))
    return RUN_NAMES.get(name, name.replace(" ", "-"))


MetricsOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics",
        metavar="FILE",
        help="Write OpenMetrics text here after the run (atomically), for node_exporter's "
        "textfile collector: per IdP last successful sync, operations, outbox depth, drift, "
        "guard trips, duration, outcome (a run that fails writes its outcome too).",
        callback=_remember,
    ),
]


def status(json: JsonOpt = False) -> None:
    """Each identity provider at a glance: last sync, outbox depth, oldest row, health.

    Warns about a ledger kept under an IdP name that is no longer configured, and about
    outbox rows left under one (orphaned: nothing pushes them).
    """
    from idprov.cli import render
    from idprov.provisioning.metrics import idp_status

    svc = service(read_only=True)
    statuses = idp_status(svc)
    emit(statuses, lambda rows: render.status([r for r in rows if r.configured]))
    warn_orphaned_idps(svc)
    warn_orphaned_rows(statuses)
    warn_cut_off(svc)
    warn_unused_idps(svc.config)
    warn_unchecked_tls(svc.config)


def warn_cut_off(svc: Any) -> None:
    """A warning for changes to a directory cut off half-way (a command killed, or
    whose answer was lost, and not run again): what they are, and that group pushes
    compare every member until they are finished."""
    from idprov.cli.common import render_error
    from idprov.provisioning.unit_of_work import cut_off

    cut = cut_off(svc.state, {u.domain.casefold(): u.domain for u in svc.config.userstores})
    if not cut:
        return
    warning = IdprovError(
        f"{len(cut)} change(s) to a directory cut off half-way: {'; '.join(cut)}. Until "
        "they are finished, every push of a group compares all of its members (slower for "
        "large roles)",
        hint="run the same command (or the same import, same file and options) again: it "
        "finishes exactly what was cut off",
    )
    warning.code = "cut_off_changes"
    render_error(warning, "warning")


def warn_unchecked_tls(config: Any, name: str | None = None) -> None:
    """A warning for each enabled IdP (or only ``name``) with ``verify_tls: false``:
    said where its health is looked at (`status`, `idp test`), not on every push."""
    from idprov.cli.common import render_error
    from idprov.config.unsafe import unchecked_tls

    for warning in unchecked_tls(config, name):
        render_error(warning, "warning")


def warn_unused_idps(config: Any) -> None:
    """A warning for each enabled IdP that no application names: its line in the table
    says never, and nothing will ever be provisioned to it."""
    from idprov.cli.common import render_error

    for _, idp in config.unused_identity_providers():
        warning = IdprovError(
            f"{idp.name} is used by no application: nothing is provisioned to it",
            hint="add it to applications[].identity_providers (the CLI, imports and sync "
            "act as `resident`)",
        )
        warning.code = "unused_idp"
        render_error(warning, "warning")


def warn_orphaned_idps(svc: Any) -> None:
    """A warning on stderr (a JSON line with ``--json``) for each IdP name the ledger
    holds accounts or groups for that is not configured: renamed in the configuration
    only, its ledger is lost to every command until `idprov idp rename`."""
    from idprov.cli.common import render_error
    from idprov.provisioning.idp_rename import orphaned_idps

    for orphan in orphaned_idps(svc.state, svc.config):
        warning = IdprovError(orphan.message, hint=orphan.hint)
        warning.code = "orphaned_idp"
        render_error(warning, "warning")


def warn_orphaned_rows(statuses: list[Any]) -> None:
    """A warning for each IdP name that is not configured and still has outbox rows
    (with ``--json``, its entry says ``orphaned`` too): they are orphaned, as `idprov
    outbox list` shows them, and no line of the table counts them as pending."""
    from idprov.cli.common import render_error

    for entry in statuses:
        count = entry.outbox.get("orphaned", 0)
        if entry.configured or not count:
            continue
        name = entry.idp
        warning = IdprovError(
            f"{count} outbox row(s) of '{name}', which is not configured, are orphaned: "
            f"nothing pushes them (`idprov outbox list --idp {name}`)",
            hint=f"if '{name}' was renamed, `idprov sync` pushes what its new name needs "
            f"(rows made under '{name}' after `idprov idp rename` come from a process still "
            f"running with the configuration that names it: restart it with the new one); "
            f"then drop them with `idprov outbox discard --idp {name}`",
        )
        warning.code = "orphaned_outbox"
        render_error(warning, "warning")


def write_run_metrics(path: Path | None, svc: Any, run: Any) -> None:
    """Write the metrics file of ``run`` (a RunStats) when ``--metrics`` was given. One
    that cannot be written is a warning, not the run's failure: the run did its work,
    its report follows and its exit code stands (it was a usage error, exit 2, with no
    report, after a sync that had been applied)."""
    _written()
    if path is None:
        return
    from idprov.provisioning.metrics import idp_status, openmetrics

    _write(path, lambda: openmetrics(idp_status(svc), run))


def write_failed_run_metrics(error: IdprovError) -> None:
    """On the way out of a run that failed before it wrote its metrics: write them, with
    the outcome of ``error``'s exit code, so that monitoring sees the failure (the old
    file told of the last success forever). The IdPs' state is read if the run got as
    far as opening it; else the last successful syncs are carried over from the old
    file (see :func:`~idprov.provisioning.metrics.failed_run_metrics`)."""
    pending = _written()
    if pending is None:
        return
    from idprov.provisioning.metrics import RunStats, run_outcome

    path, command, started = pending
    run = RunStats(command, started, run_outcome(error.exit_code))
    _write(path, lambda: _failed_run_text(path, run))


def _failed_run_text(path: Path, run: Any) -> str:
    from idprov.provisioning import metrics

    svc = _session()._service
    if svc is not None:
        try:
            return metrics.openmetrics(metrics.idp_status(svc), run)
        except Exception:  # the state that could not be read may be why the run failed
            pass
    return metrics.failed_run_metrics(metrics.previous_metrics(path), run)


def _written() -> tuple[Path, str, float] | None:
    """This run's metrics are being written: what was pending (None: none was)."""
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    return ctx.meta.pop(PENDING, None) if ctx is not None else None


def _write(path: Path, text: Callable[[], str]) -> None:
    from idprov.cli.common import render_error
    from idprov.provisioning.metrics import write_metrics

    try:
        write_metrics(path, text())
    except IdprovError as exc:
        exc.message += "; the metrics were not written"
        render_error(exc, "warning")
