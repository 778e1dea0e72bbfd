"""`idprov secret set NAME`: store a secret in the system keyring, without echo."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from idprov.cli import render
from idprov.cli.common import JsonOpt, emit, new_app
from idprov.errors import UsageError

app = new_app("Store secrets in the system keyring.")


@app.command("set")
def set_(
    name: Annotated[str, typer.Argument(help="Name to store it under (service `idprov`).")],
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the value from stdin.")] = False,
    json: JsonOpt = False,
) -> None:
    """Store a secret; prints the reference to put in the configuration."""
    from idprov.config.secrets import set_keyring_secret

    if stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = typer.prompt(
            f"Value for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
    if not value:
        raise UsageError("the secret is empty")
    ref = set_keyring_secret(name, value)
    emit(
        {"reference": ref},
        lambda r: render.message(f"[green]✓[/] stored; reference it as {r['reference']}"),
    )
