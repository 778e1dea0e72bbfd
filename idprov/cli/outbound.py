"""`idprov outbox ...`, `idprov idp ...`, `idprov connector list`: outbound provisioning."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import AppOpt, JsonOpt, emit, new_app, service

outbox_app = new_app("Outbound operations that are pending or failed.")
idp_app = new_app("Identity providers: the systems changes are provisioned to.")
connector_app = new_app("Installed connectors (built-in and plugins).")

IdpFilter = Annotated[
    list[str] | None, typer.Option("--idp", help="Only this identity provider; repeat.")
]


@outbox_app.command("list")
def outbox_list(
    idp: IdpFilter = None,
    status: Annotated[str | None, typer.Option(help="pending or failed.")] = None,
    json: JsonOpt = False,
) -> None:
    """Show what is waiting to be provisioned, and why it failed."""
    emit(service().outbox_rows(idp, status), render.outbox)


@outbox_app.command("retry")
def outbox_retry(
    idp: IdpFilter = None, app_name: AppOpt = "resident", json: JsonOpt = False
) -> None:
    """Push every pending and failed operation again, now."""
    svc = service(app_name, live=True)
    emit(svc.retry_outbox(idp), render.outbound_report)


@idp_app.command("list")
def idp_list(json: JsonOpt = False) -> None:
    """List the configured identity providers."""
    svc = service()
    rows = [
        {
            "name": i.name,
            "connector": i.connector,
            "enabled": i.enabled,
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
    name: Annotated[str, typer.Argument(help="Identity provider name.")], json: JsonOpt = False
) -> None:
    """Check reachability, authentication and capabilities; changes nothing."""
    from idprov.errors import OutboundError

    report = service().test_idp(name)
    emit(report, lambda r: render.check_report(name, r))
    if not report.ok:
        raise OutboundError(
            f"identity provider {name} failed its check", hint="; ".join(report.messages) or None
        )


@connector_app.command("list")
def connector_list(json: JsonOpt = False) -> None:
    """List installed connectors and where they come from."""
    from idprov.connectors import registry
    from idprov.errors import ConfigError

    rows: list[dict[str, Any]] = []
    for name in registry.available():
        ep = registry.entry_point(name)
        try:
            description, loaded = registry.load(name).description, True
        except ConfigError as exc:  # a broken plugin is listed, not fatal
            description, loaded = exc.message, False
        package = ep.dist.name if ep.dist else None
        rows.append(
            {
                "name": name,
                "module": ep.value,
                "description": description,
                "loaded": loaded,
                "package": package,
            }
        )
    emit(rows, render.connector_list)
