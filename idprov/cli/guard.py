"""Asking before a change that would destroy at the targets (the deletion guard).

A command previews the remote effects of its change (idprov/provisioning/preview.py)
before making it, and :func:`confirm_effects` asks: on a terminal, listing them; not
on a terminal, a change over the guard needs ``--yes --allow-deletes N``. Declining
changes nothing, here or at any target.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from idprov.errors import GuardError, IdprovError

AllowOpt = Annotated[
    int | None,
    typer.Option(
        "--allow-deletes",
        min=0,
        help="Accept up to N destructive changes of each kind per IdP (deprovisions, group "
        "deletions, members removed, attributes removed) over the deletion guard.",
    ),
]


def confirm_effects(
    svc: Any, verdict: Any, yes: bool, allow_deletes: int | None, question: str | None = None
) -> None:
    """Ask before the change ``verdict`` judged (``question``: ask even under the guard,
    unless ``yes``); over the guard, let the push through once confirmed."""
    verdict = verdict.without_sync()  # its push holds those: only a sync accepts them
    if verdict.trips:
        if not (yes and allow_deletes is not None and allow_deletes >= verdict.needed):
            _ask_over_guard(verdict, question)
        svc.allow_deletes = verdict.needed  # what was judged and accepted, not all of N
    elif question and not yes:
        _ask(verdict.lines(), question)


def _ask_over_guard(verdict: Any, question: str | None) -> None:
    if not sys.stdin.isatty():
        raise GuardError(
            f"deletion guard: {verdict.message()}; nothing was changed",
            hint="on a terminal idprov asks; elsewhere, if this is expected, run the command "
            f"again with --yes --allow-deletes {verdict.needed}",
        )
    _ask(
        ["this is over the deletion guard:", *verdict.lines()],
        question or "Go ahead?",
    )


def _ask(lines: list[str], question: str) -> None:
    for line in lines:
        typer.echo(f"  {line}", err=True)
    confirm(question)


def confirm(question: str) -> None:
    """Ask ``question`` on standard error and read the answer from standard input: only
    y or yes goes ahead; anything else (no answer, end of input, Ctrl-C) aborts, having
    changed nothing; end of an input that is no terminal (cron, ``</dev/null``) says
    to pass --yes. Not Click's confirm: it writes the prompt's last space to standard
    output (a stray character before `--json`'s document) and leaves the line open on
    end of input (the error document then follows the prompt on the same line)."""
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if not answer.endswith("\n") or not sys.stdin.isatty():  # no echo ended the line
        sys.stderr.write("\n")
    if not answer and not sys.stdin.isatty():
        raise IdprovError(
            "cannot ask for confirmation (stdin is not a terminal): pass --yes",
            hint="nothing was changed; run it on a terminal to be asked, or again with --yes",
        )
    if answer.strip().lower() not in ("y", "yes"):
        raise typer.Abort()
