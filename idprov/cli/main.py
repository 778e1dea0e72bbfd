"""The root command: global options, and the sub-apps attached. Nothing else."""

from __future__ import annotations

from typing import Annotated

import typer

from idprov import __version__
from idprov.cli.common import IdprovGroup, interrupted_exit, new_session

app = typer.Typer(
    cls=IdprovGroup,
    help="idprov: keep users and roles in userstores, provision them everywhere.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"idprov {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="Configuration file (default: $IDPROV_CONFIG, ./idprov.yaml, "
            "~/.config/idprov/idprov.yaml, else the embedded default).",
            metavar="FILE",
        ),
    ] = None,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="Return once the change is committed and pushed to the blocking identity "
            "providers; leave those with `blocking: false` to the outbox worker.",
        ),
    ] = False,
    json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON document instead of the rich view (as the command's own "
            "--json: `idprov --json user list` is `idprov user list --json`).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """idprov: keep users and roles in userstores, provision them everywhere."""
    new_session(config, no_wait).json = json


IdprovGroup.lazy = {
    "user": "idprov.cli.user",
    "role": "idprov.cli.role",
    "config": "idprov.cli.config_cmd",
    "secret": "idprov.cli.secret",
    "outbox": "idprov.cli.outbound:outbox_app",
    "idp": "idprov.cli.outbound:idp_app",
    "connector": "idprov.cli.outbound:connector_app",
    "import": "idprov.cli.import_cmd:import_app",
    "token": "idprov.cli.token",
    "export": "idprov.cli.import_cmd:export_app",
    "serve": "idprov.cli.serve",
    "jit": "idprov.cli.jit",
    "init": "idprov.cli.config_cmd:init",
    "log": "idprov.cli.log:log",
    "sync": "idprov.cli.sync:sync",
    "plan": "idprov.cli.sync:plan",
    "explain": "idprov.cli.sync:explain",
    "status": "idprov.cli.status:status",
    "state": "idprov.cli.state",
}


def main() -> None:
    _closed_streams_to_devnull()
    try:
        app(prog_name="idprov")
    finally:
        interrupted_exit()


def _closed_streams_to_devnull() -> None:
    """A command started with stdout or stderr closed (``>&-``, a service manager
    without them) writes what it would print to /dev/null: Python then has no
    ``sys.stdout``, and every command ended in an internal error, after its change."""
    import os
    import sys

    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
