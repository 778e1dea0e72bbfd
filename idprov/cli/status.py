"""`idprov status`, and the `--metrics FILE` option of sync, import and outbox work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from idprov.cli.common import JsonOpt, emit, service

MetricsOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics",
        metavar="FILE",
        help="Write OpenMetrics text here after the run (atomically), for node_exporter's "
        "textfile collector: per IdP last successful sync, operations, outbox depth, drift, "
        "guard trips, duration.",
    ),
]


def status(json: JsonOpt = False) -> None:
    """Each identity provider at a glance: last sync, outbox depth, oldest row, health."""
    from idprov.cli import render
    from idprov.provisioning.metrics import idp_status

    emit(idp_status(service()), render.status)


def write_run_metrics(path: Path | None, svc: Any, run: Any) -> None:
    """Write the metrics file of ``run`` (a RunStats) when ``--metrics`` was given. One
    that cannot be written is a warning, not the run's failure: the run did its work,
    its report follows and its exit code stands (it was a usage error, exit 2, with no
    report, after a sync that had been applied)."""
    if path is None:
        return
    from idprov.cli.common import render_error
    from idprov.errors import IdprovError
    from idprov.provisioning.metrics import idp_status, openmetrics, write_metrics

    try:
        write_metrics(path, openmetrics(idp_status(svc), run))
    except IdprovError as exc:
        exc.message += "; the metrics were not written"
        render_error(exc, "warning")
