"""`idprov jit login`: what a federated login through an IdP does, from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from idprov.cli.common import JsonOpt, emit, new_app, service
from idprov.errors import UsageError, from_os_error

app = new_app("Just-in-time provisioning of users who log in through a federated IdP.")


@app.command("login")
def login(
    app_name: Annotated[str, typer.Option("--app", help="The application logged in to.")],
    idp: Annotated[str, typer.Option("--idp", help="The federated IdP (its jit entry).")],
    claims: Annotated[
        str | None,
        typer.Option(
            help="JSON file of the IdP's claims, already verified (refused for an IdP with "
            "token keys unless its jit entry says allow_unverified_claims).",
            metavar="FILE",
        ),
    ] = None,
    id_token: Annotated[
        str | None,
        typer.Option(
            help="An OpenID Connect ID token to verify: the JWT, @FILE, or - for stdin "
            "(a token on the command line is visible to other local users).",
            metavar="JWT",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Create or update the local user of a login, map its roles, and provision it to
    the application's IdPs that opted in to JIT."""
    from idprov.inbound import jit

    if (claims is None) == (id_token is None):
        raise UsageError("give one of --claims FILE and --id-token JWT")
    base = service(app_name)
    token = _token(id_token) if id_token is not None else None
    idp_claims = jit.read_claims_file(str(claims)) if claims is not None else None
    svc = jit.open_jit_service(base.config, app_name, progress=base.progress)
    try:
        result = jit.attempt(svc, idp, claims=idp_claims, id_token=token)
    finally:
        svc.close()
    emit(result, _render)


def _token(value: str) -> str:
    if value == "-":
        return sys.stdin.readline().strip()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:  # missing: exit 3, as every file a command is given
            raise from_os_error(exc, "read the ID token") from exc
    return value.strip()


def _render(result: Any) -> None:
    from idprov.cli import render

    user = result.user.qualified_name
    if result.action == "unchanged":
        typer.secho("unchanged", fg="yellow", nl=False)
        typer.echo(f" {user}: login through {result.idp}, nothing to do")
    else:
        typer.secho("✓", fg="green", nl=False)
        typer.echo(f" {result.action} {user} (login through {result.idp} to {result.application})")
    changes = [*result.claims_changed]
    changes += [f"+{r}" for r in result.roles_added] + [f"-{r}" for r in result.roles_removed]
    if changes and result.action != "unchanged":
        typer.echo("  " + ", ".join(changes))
    if result.outbound is not None:
        render.outbound_report(result.outbound)
