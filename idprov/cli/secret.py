"""`idprov secret set NAME`: store a secret in the system keyring, without echo;
`idprov secret scrub`: blank the secrets an earlier release stored in the state."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import JsonOpt, emit, new_app, service
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


@app.command("scrub")
def scrub(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the rows holding a secret; change nothing.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Blank, in the audit log, the outbox and `status`, the secrets of the configuration
    that an earlier release stored (a target echoing a credential in its error). Run it
    after upgrading, and rotate every credential it finds: backups and copies keep them."""
    from idprov.provisioning.scrub import scrub_secrets

    emit(scrub_secrets(service(live=False), dry_run=dry_run), _scrubbed)


def _scrubbed(result: Any) -> None:
    """What `secret scrub` blanked (would), per table; the references it could not read."""
    verb = "hold" if result.dry_run else "held"
    for ref in result.unresolved:
        render.message(
            f"[yellow]![/] {render.esc(ref)} cannot be read: its secret was not looked for"
        )
    if result.short:
        render.message(
            f"[yellow]![/] {result.short} secret(s) shorter than 8 characters were not looked for"
        )
    if not result.found:
        render.message(f"[green]✓[/] no stored text holds any of {result.secrets} secret(s)")
        return
    done = "would be blanked (--dry-run: nothing changed)" if result.dry_run else "blanked"
    for table, count in result.rows.items():
        render.message(f"{table}: {count} row(s) {done}")
    render.message(
        f"[yellow]![/] {result.found} row(s) {verb} a credential of the configuration: "
        "rotate it (backups of the state and copies of these logs still hold it)"
    )
