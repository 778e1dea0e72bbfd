"""`idprov role ...`: add, list, show, delete, rename, assign, unassign."""

from __future__ import annotations

from typing import Annotated

import typer

from idprov.cli import render
from idprov.cli.common import AppOpt, DomainOpt, JsonOpt, YesOpt, emit, new_app, service
from idprov.cli.guard import AllowOpt, confirm_effects

app = new_app("Manage roles and their members.")

RoleArg = Annotated[str, typer.Argument(help="Role name, or DOMAIN/role.")]
UsersArg = Annotated[list[str], typer.Argument(help="Usernames (DOMAIN/username for others).")]


@app.command("add")
def add(
    name: RoleArg, domain: DomainOpt = None, app_name: AppOpt = "resident", json: JsonOpt = False
) -> None:
    """Create an empty role."""
    emit(service(app_name).add_role(name, domain), render.change)


@app.command("list")
def list_(
    domain: Annotated[
        str | None,
        typer.Option("--domain", "-d", help="Only this userstore domain (default: all)."),
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Only roles starting with this.")] = None,
    json: JsonOpt = False,
) -> None:
    """List roles with their member counts."""
    emit(service(read_only=True).list_roles(domain, prefix), render.role_list)


@app.command("show")
def show(name: RoleArg, domain: DomainOpt = None, json: JsonOpt = False) -> None:
    """Show a role and its members."""
    emit(service(read_only=True).get_role(name, domain), render.role_detail)


@app.command("delete")
def delete(
    name: RoleArg,
    domain: DomainOpt = None,
    yes: YesOpt = False,
    allow_deletes: AllowOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Delete a role (its members stay; asks first unless --yes, listing what it would
    delete at the identity providers)."""
    from idprov.provisioning import preview

    svc = service(app_name)
    if not svc.unfinished("role_delete", name, domain):  # else: confirmed when it started
        role = svc.get_role(name, domain)
        question = f"Delete role {role.qualified_name} ({role.member_count} members)?"
        verdict = preview.delete_role(svc, name, domain)
        confirm_effects(svc, verdict, yes, allow_deletes, question)
    emit(svc.delete_role(name, domain), render.change)


@app.command("rename")
def rename(
    name: RoleArg,
    new_name: Annotated[str, typer.Argument(help="The new name.")],
    domain: DomainOpt = None,
    yes: YesOpt = False,
    allow_deletes: AllowOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Rename a role, keeping its members (asks first if that would deprovision users
    or delete groups at the identity providers over the deletion guard)."""
    from idprov.provisioning import preview

    svc = service(app_name)
    if not svc.unfinished("role_rename", name, domain):  # else: confirmed when it started
        verdict = preview.rename_role(svc, name, new_name, domain)
        confirm_effects(svc, verdict, yes, allow_deletes)
    if yes and allow_deletes is not None:  # members leaving a scope: accepted (see the core)
        svc.allow_deletes = max(svc.allow_deletes or 0, allow_deletes)
    emit(svc.rename_role(name, new_name, domain), render.change)


@app.command("assign")
def assign(
    role: RoleArg,
    users: UsersArg,
    domain: DomainOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Give a role to users (already members are left alone)."""
    emit(service(app_name).assign(role, users, domain), render.change)


@app.command("unassign")
def unassign(
    role: RoleArg,
    users: UsersArg,
    domain: DomainOpt = None,
    yes: YesOpt = False,
    allow_deletes: AllowOpt = None,
    app_name: AppOpt = "resident",
    json: JsonOpt = False,
) -> None:
    """Take a role away from users (asks first if that would deprovision them at the
    identity providers over the deletion guard)."""
    from idprov.provisioning import preview

    svc = service(app_name)
    confirm_effects(svc, preview.unassign(svc, role, users, domain), yes, allow_deletes)
    emit(svc.unassign(role, users, domain), render.change)
