"""`idprov token ...`: bearer tokens for `idprov serve`, each acting as an application."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import JsonOpt, emit, new_app, service

app = new_app("Bearer tokens for `idprov serve`.")


@app.command("create")
def create(
    app_name: Annotated[str, typer.Option("--app", help="The application the token acts as.")],
    description: Annotated[str, typer.Option(help="What the token is for.")] = "",
    scope: Annotated[
        str, typer.Option(help="write (every request) or read (GET and searches only).")
    ] = "write",
    json: JsonOpt = False,
) -> None:
    """Make a token; it is shown this once and stored only as a digest."""

    def show(new: Any) -> None:
        render.message(
            f"[green]✓[/] {new.record.scope} token {new.record.id} for application "
            f"{render.esc(new.record.application)} (shown once, store it now):"
        )
        render.console().print(new.token, highlight=False, soft_wrap=True)

    emit(service().create_token(app_name, description, scope), show)


@app.command("list")
def list_(json: JsonOpt = False) -> None:
    """List tokens (ids, applications, state; never the tokens)."""
    emit(service(read_only=True).tokens.all(), render.token_list)


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id.")], json: JsonOpt = False
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    svc = service()
    before = next((r for r in svc.tokens.all() if r.id == token_id), None)
    record = svc.revoke_token(token_id)
    if before is not None and before.revoked_at is not None:
        text = f"token {record.id} ({render.esc(record.application)}) was revoked already, at "
        emit(record, lambda r: render.message(f"[green]✓[/] {text}{r.revoked_at}"))
        return
    emit(
        record,
        lambda r: render.message(f"[green]✓[/] revoked token {r.id} ({render.esc(r.application)})"),
    )
