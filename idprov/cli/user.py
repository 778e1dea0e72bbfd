"""`idprov user ...`: add, show, list, update, passwd, delete."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from idprov.cli import render
from idprov.cli.common import (
    AppOpt,
    DomainOpt,
    JsonOpt,
    YesOpt,
    emit,
    new_app,
    parse_pairs,
    render_error,
    service,
)
from idprov.cli.guard import AllowOpt, confirm_effects
from idprov.errors import PolicyError, StoreError, UsageError

app = new_app("Manage users in the userstores.")

ClaimOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--claim",
        "-c",
        help="Claim as NAME=VALUE; repeat for more (or for values of a multi-valued claim).",
    ),
]
UsernameArg = Annotated[str, typer.Argument(help="Username, or DOMAIN/username.")]


def read_password(from_stdin: bool, prompt: bool) -> str | None:
    """The password from one line of stdin, a hidden prompt (asked twice), or none."""
    if from_stdin and prompt:
        raise UsageError("give --password-stdin or --prompt-password, not both")
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    if prompt:
        return typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return None


@app.command("add")
def add(
    username: UsernameArg,
    claim: ClaimOpt = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", "-r", help="Role to give; repeat.")
    ] = None,
    domain: DomainOpt = None,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
    prompt_password: Annotated[bool, typer.Option(help="Ask for the password (hidden).")] = False,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Add a user, with claims, roles and optionally a password."""
    password = read_password(password_stdin, prompt_password)
    result = service(app_name).add_user(username, claim_values(claim), password, role or [], domain)
    emit(result, render.change)


@app.command("show")
def show(username: UsernameArg, domain: DomainOpt = None, json: JsonOpt = False) -> None:
    """Show one user: claims, roles, timestamps."""
    emit(service(read_only=True).get_user(username, domain), render.user_detail)


@app.command("list")
def list_(
    claim: Annotated[
        list[str] | None,
        typer.Option(
            "--claim", "-c", help="Only users with this claim value (NAME=VALUE); repeat to AND."
        ),
    ] = None,
    role: Annotated[
        str | None, typer.Option("--role", "-r", help="Only members of this role.")
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option("--domain", "-d", help="Only this userstore domain (default: all)."),
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Only usernames starting with this.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Page size (0: no limit).")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many users.")] = 0,
    json: JsonOpt = False,
) -> None:
    """List users, filtered and paged, across domains."""
    from idprov.model import UserQuery

    filters = {k: v for k, v in parse_pairs(claim, "--claim").items() if isinstance(v, str)}
    if len(filters) != len(parse_pairs(claim, "--claim")):
        raise UsageError("give each --claim filter once")
    query = UserQuery(filters, role, prefix, limit or None, offset)
    page = service(read_only=True).stream_users(query, domain)
    emit(page, render.user_page)
    for name in page.ambiguous:
        render_error(StoreError(name.message, hint=name.hint), "warning")


def claim_values(claim: list[str] | None) -> dict[str, str | list[str]]:
    """``--claim NAME=VALUE`` options (the core trims what it keeps: `department= Ops `
    is `Ops` whichever way it comes in, so an export imported again changes nothing)."""
    return parse_pairs(claim, "--claim")


@app.command("update")
def update(
    username: UsernameArg,
    claim: Annotated[
        list[str] | None,
        typer.Option("--claim", "-c", "--set", help="Set a claim (NAME=VALUE); repeat."),
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="Remove a claim; repeat.")
    ] = None,
    domain: DomainOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Set and remove claims of a user."""
    pairs = claim_values(claim)
    if not pairs and not unset:
        raise UsageError("nothing to update", hint="give --claim NAME=VALUE or --unset NAME")
    both = [name for name in unset or [] if name in pairs]
    if both:
        raise UsageError(
            f"--claim {both[0]}=... and --unset {both[0]} contradict each other",
            hint=f"give --claim {both[0]}=VALUE to set it, or --unset {both[0]} to remove it",
        )
    try:
        result = service(app_name).update_user(username, pairs, unset or [], domain)
    except PolicyError as exc:
        empty = [n for n, v in pairs.items() if v == "" and f"claim {n!r}" in exc.message]
        if empty and exc.hint is None:  # an empty value is a value; --unset removes
            exc.hint = f"to remove the claim, use --unset {empty[0]}"
        raise
    emit(result, render.change)


@app.command("rename")
def rename(
    username: UsernameArg,
    new_name: Annotated[str, typer.Argument(help="The new username.")],
    domain: DomainOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Rename a user, keeping its claims, password and roles (targets rename it too)."""
    emit(service(app_name).rename_user(username, new_name, domain), render.change)


@app.command("passwd")
def passwd(
    username: UsernameArg,
    domain: DomainOpt = None,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Set a user's password (asked for, hidden, unless --password-stdin)."""
    password = read_password(password_stdin, not password_stdin)
    assert password is not None
    emit(service(app_name).set_password(username, password, domain), render.change)


@app.command("delete")
def delete(
    username: UsernameArg,
    domain: DomainOpt = None,
    yes: YesOpt = False,
    allow_deletes: AllowOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Delete a user (asks first unless --yes, listing what it would delete at the
    identity providers)."""
    from idprov.model import QualifiedName
    from idprov.provisioning import managers, preview

    svc = service(app_name)
    if not svc.unfinished("delete", username, domain):  # else: confirmed when it started
        user = svc.get_user(username, domain)
        verdict = preview.delete_user(svc, username, domain)
        reports = managers.reports_of(svc, QualifiedName(user.domain, user.username))
        lost = render.losing_manager(sorted(r.qualified_name for r in reports))
        question = f"Delete user {user.qualified_name}{lost}?"
        confirm_effects(svc, verdict, yes, allow_deletes, question)
    emit(svc.delete_user(username, domain), render.change)
