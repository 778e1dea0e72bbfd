"""`idprov config ...`: validate and show the configuration; `idprov init` writes one."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from idprov.cli import render
from idprov.cli.common import JsonOpt, _session, emit, new_app, service
from idprov.errors import StoreError

app = new_app("Check and show the configuration.")


def _loaded() -> tuple[Any, list[Any]]:
    """The configuration, identity providers' connectors and options checked too, and
    the problems of the options of those with ``enabled: false`` (warnings)."""
    from idprov.config import load_config
    from idprov.provisioning.connect import check_identity_providers

    config = load_config(_session().config_path)
    return config, check_identity_providers(config)


def _masked(config: Any) -> dict[str, Any]:
    """The configuration as data, each secret reference shown with whether it is set."""
    from idprov.config.schema import to_data
    from idprov.config.secrets import SecretRef

    def mask(value: Any) -> Any:
        if isinstance(value, SecretRef):
            return f"{value.ref} ({value.status()})"
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    data = mask(to_data(config))
    data["source"] = config.source
    data["known_claims"] = sorted(config.claim_definitions())
    return data


@app.command("validate")
def validate(
    strict: Annotated[
        bool,
        typer.Option(
            help="Also fail when a secret or a JIT key file cannot be read, when "
            "provisioning_roles cannot be checked (an LDAP userstore that cannot be read), "
            "or on an unsafe setting (verify_tls: false, a credential over plain http://, "
            "sslmode disable or require beyond loopback, a secret file others can read)."
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Check the configuration; say where any error is.

    Also warns about a ledger in idprov's state kept under an IdP name the
    configuration no longer has (renamed in the file only: `idprov idp rename`).
    """
    from idprov.config.loader import check_store_files
    from idprov.config.unsafe import unsafe_settings

    svc = service(live=False, read_only=True, warn=False)  # the configuration, read once
    config, disabled = svc.config, svc.disabled_idp_problems
    check_store_files(config)
    missing = _missing_secrets(config)
    key_files = _broken_key_files(config)
    state_check, scope, unchecked = _state_check(svc)
    unused = _unused_idps(config)
    unsafe = unsafe_settings(config)  # settings that work: refused after those that do not
    refusals = _refusals(missing, key_files, scope, unchecked, unsafe) if strict else []
    result = {
        "valid": not refusals,
        "source": config.source,
        "userstores": [u.domain for u in config.userstores],
        "identity_providers": [i.name for i in config.identity_providers],
        "applications": [a.name for a in config.applications],
        "missing_secrets": [ref for ref, _, _ in missing],
        "ignored_connectors": _ignored_connectors(),
        "username_clashes": _username_clashes(config),
        "disabled_idp_problems": [p.warning().message for p in disabled],
        "unknown_scope_roles": [p.message for p in scope],
        "unchecked_scopes": [record for _, record in unchecked],
        "unused_identity_providers": [name for name, _ in unused],
        "unsafe_settings": [p.to_dict() for p in unsafe],
    }

    def show(r: dict[str, Any]) -> None:
        if r["valid"]:
            render.message(
                f"[green]✓[/] {render.esc(r['source'])} is valid: "
                f"{len(r['userstores'])} userstore(s), {len(r['identity_providers'])} "
                f"identity provider(s), {len(r['applications'])} application(s)"
            )
        for ref, where, key in missing:
            render.message(f"[yellow]![/] {render.esc(where)}: {key}: secret {ref} is not set")
        for problem in key_files:
            render.message(f"[yellow]![/] {render.esc(problem.message)}")
        for text in r["ignored_connectors"] + r["username_clashes"]:
            render.message(f"[yellow]![/] {render.esc(text)}")
        for problem in disabled:
            warning = problem.warning()
            render.message(f"[yellow]![/] {render.esc(warning.message)}")
            if warning.hint:
                render.message(f"  [dim]fix:[/] {render.esc(warning.hint)}")
        for problem in scope:
            render.message(f"[yellow]![/] {render.esc(problem.message)}")
            render.message(f"  [dim]fix:[/] {render.esc(problem.hint or '')}")
        for _, text in unused:
            render.message(f"[yellow]![/] {render.esc(text)}")
        for problem in unsafe:
            render.message(f"[yellow]![/] {render.esc(problem.message)}")
            render.message(f"  [dim]fix:[/] {render.esc(problem.hint or '')}")

    if refusals:
        _refuse(result, show, state_check, refusals)
    emit(result, show)
    state_check()


def _refusals(
    missing: list[tuple[str, str, str]],
    key_files: list[Any],
    scope: list[Any],
    unchecked: list[Any],
    unsafe: list[Any],
) -> list[Any]:
    """What ``--strict`` refuses, the most grave first (its exit code is the command's):
    secrets that cannot be read, JIT key files, scope roles no userstore has, a
    directory that could not be read to check them (1, whatever the cause), then the
    unsafe settings (all in one error)."""
    out: list[Any] = []
    if missing:
        out.append(_missing_refusal(missing))
    out += key_files
    out += scope
    if unchecked:
        first = unchecked[0][0]
        out.append(StoreError(first.message, hint=first.hint))
    if unsafe:
        out.append(_refused_unsafe(unsafe))
    return out


def _refuse(
    result: dict[str, Any],
    show: Callable[[dict[str, Any]], None],
    state_check: Callable[[], None],
    refusals: list[Any],
) -> None:
    """Refuse (``--strict``) with the first of ``refusals``, after every finding is
    said: the validate document (``--json``: on stdout, ``valid: false`` with the
    refusal, as a script reads it without ``--strict``), or the warnings. Refused at the
    first, a directory that could not be read hid the unsafe settings behind it."""
    first = refusals[0]
    if len(refusals) > 1:
        more = f"--strict refuses {len(refusals) - 1} more finding(s), listed above"
        first.hint = f"{first.hint}; {more}" if first.hint else more
    if _session().json:
        emit({**result, "refused": first.to_dict()}, lambda _: None)
    else:
        show(result)
        state_check()
    raise first


def _state_check(svc: Any) -> tuple[Callable[[], None], list[Any], list[Any]]:
    """What to say about idprov's state after the result (warnings): the IdP names it
    holds a ledger for that the configuration does not configure (renamed in the file only),
    or why it was not read. Nothing is written: a state or an SQLite or PostgreSQL
    userstore an earlier idprov made is not upgraded (that it needs it is said), and
    one a newer idprov upgraded is refused here, before the result, as every command
    refuses it. Also the IdPs whose scope names a role no userstore has, and the
    directories not read to check them (:func:`_unknown_scope_roles`)."""
    from idprov.cli.common import render_error
    from idprov.cli.status import warn_orphaned_idps
    from idprov.statedb import state_exists

    config = svc.config
    made = state_exists(config)  # not made yet: nothing orphaned, and opening makes it
    unread = _unread("idprov's state", lambda: svc.state) if made else []
    stores = [
        _unread(f"userstore {s.domain}", partial(svc.store, s.domain))
        for s in _stores_to_check(config, svc.data_dir)
    ]

    problems = [*unread, *(p for found in stores for p in found)]
    scope, unchecked = ([], []) if problems else _unknown_scope_roles(config, svc, made)

    def warn() -> None:
        warnings = [*problems, *(p for p, _ in unchecked)]
        for problem in {p.message: p for p in warnings}.values():  # once
            render_error(problem, "warning")
        if made and not unread:
            for problem in _unread("idprov's state", lambda: warn_orphaned_idps(svc)):
                render_error(problem, "warning")

    return warn, scope, unchecked


def _unknown_scope_roles(config: Any, svc: Any, made: bool) -> tuple[list[Any], list[Any]]:
    """A located :class:`ConfigError` for each enabled IdP whose provisioning_roles
    name a role no userstore has (a typo: `sync` would refuse its plan), and the
    warning of each LDAP userstore that could not be read, so that they were not
    checked (then none is said: its roles are not known). Roles are read where nothing
    is written: SQLite and PostgreSQL userstores, the internal roles, and the LDAP
    directories, contacted only when an IdP has a scope to check. With a userstore of
    another type (a plugin's), or one whose database cannot be read, none is said."""
    from idprov.db import migrations_held
    from idprov.errors import IdprovError
    from idprov.provisioning.scope_roles import known_roles, scope_errors

    names = [idp.name for idp in config.identity_providers if idp.enabled]
    scoped = [i.name for i in config.identity_providers if i.name in names and i.provisioning_roles]
    if not scoped or any(s.type not in ("sqlite", "postgres", "ldap") for s in config.userstores):
        return [], []
    roles: list[Any] = []
    try:
        with migrations_held():
            for store in _stores_to_check(config, svc.data_dir):
                roles += svc.store(store.domain).list_roles()
            roles += svc.internal.all() if made else []
    except IdprovError:
        return [], []  # said by the state check, or not this check's to say
    unchecked = _directory_roles(config, svc, scoped, roles)
    if unchecked:
        return [], unchecked
    return list(scope_errors(config, names, known_roles(roles), planned=False).values()), []


CHECK_TIMEOUT = 5.0
"""Seconds `config validate` waits for an LDAP directory to connect and to answer
(at most: less when the userstore's connect_timeout or timeout is less): a directory
that never answers is reported as not read, in seconds, not after its full timeout."""


def _directory_roles(config: Any, svc: Any, scoped: list[str], roles: list[Any]) -> list[Any]:
    """Add the roles of every LDAP userstore to ``roles`` (read with
    :data:`CHECK_TIMEOUT`); the warning of each that could not be read (the directory
    is down, refuses the bind...): the scopes of ``scoped`` (IdP names) were not
    checked: each with its ``unchecked_scopes`` entry (the IdPs, the userstore, why)."""
    from dataclasses import replace

    from idprov.userstores import open_userstore

    what = f"the provisioning_roles of {', '.join(scoped)} were not checked against its roles"

    def read(store: Any) -> None:
        quick = replace(
            store,
            connect_timeout=min(store.connect_timeout, CHECK_TIMEOUT),
            timeout=min(store.timeout, CHECK_TIMEOUT),
        )
        opened = open_userstore(quick, svc.claims, svc._pool, svc.data_dir)
        try:
            roles.extend(opened.list_roles())
        finally:
            opened.close()

    unread: list[Any] = []
    for store in config.userstores:
        if store.type == "ldap":
            prefix = f"userstore {store.domain}"
            for problem in _unread(prefix, partial(read, store), what):
                why = problem.message.removeprefix(f"{prefix} was not read, so {what}: ")
                record = {"identity_providers": scoped, "userstore": store.domain, "reason": why}
                unread.append((problem, record))
    return unread


def _unread(
    what: str, read: Callable[[], object], unchecked: str = "it was not checked"
) -> list[Any]:
    """The warning (none, or one) of ``read``ing ``what`` where nothing may be
    written: it needs upgrading, or it could not be read (so ``unchecked``). One a
    newer idprov upgraded is raised."""
    from idprov.db import NeedsUpgradeError, NewerSchemaError, migrations_held
    from idprov.errors import IdprovError

    try:
        with migrations_held():
            read()
    except NewerSchemaError:
        raise
    except IdprovError as exc:
        if not isinstance(exc, NeedsUpgradeError):
            exc.message = f"{what} was not read, so {unchecked}: {exc.message}"
        return [exc]
    return []


def _stores_to_check(config: Any, data_dir: Path) -> list[Any]:
    """The userstores whose tables idprov keeps: SQLite ones whose file exists (else
    opening would make it), and PostgreSQL ones."""
    from idprov.userstores.sqlite import SqliteUserStore

    def exists(store: Any) -> bool:
        return Path(store.path or SqliteUserStore.default_path(data_dir)).exists()

    types = {"sqlite": exists, "postgres": lambda _: True}
    return [s for s in config.userstores if types.get(s.type, lambda _: False)(s)]


def _unused_idps(config: Any) -> list[tuple[str, str]]:
    """(name, warning) of each enabled identity provider that no application names:
    nothing is provisioned to it (the CLI, imports and sync act as `resident`)."""
    from idprov.config.schema import Locator

    locator = config.locator or Locator(config.source)
    return [
        (
            idp.name,
            f"{locator.where(('identity_providers', i, 'name'))}: identity_providers[{i}]: "
            f"{idp.name} is used by no application: nothing is provisioned to it; add it to "
            "applications[].identity_providers (the CLI, imports and sync act as `resident`)",
        )
        for i, idp in config.unused_identity_providers()
    ]


def _username_clashes(config: Any) -> list[str]:
    """The identity providers whose username template can map users of two userstores
    to one target userName (see :func:`~idprov.provisioning.mapping.domain_dropped`)."""
    from idprov.provisioning.mapping import domain_dropped

    domains = [u.domain for u in config.userstores]
    found = (domain_dropped(idp, domains) for idp in config.identity_providers)
    return [text for text in found if text is not None]


def _missing_secrets(config: Any) -> list[tuple[str, str, str]]:
    """(reference, file:line, key path) of every secret that cannot be read."""
    from idprov.config.models import path_in_file
    from idprov.config.schema import Locator, find_values, key_path
    from idprov.config.secrets import SecretRef

    locator = config.locator or Locator(config.source)
    found = []
    for path, ref in find_values(config, SecretRef):
        if ref.status() == "missing":
            in_file = path_in_file(config, path)
            found.append((ref.ref, locator.where(in_file), key_path(in_file)))
    return found


def _broken_key_files(config: Any) -> list[Any]:
    """A located :class:`ConfigError` for each JIT entry whose ``jwks_file`` or
    ``public_key_file`` cannot be read or holds no usable key."""
    from idprov.config.models import path_in_file
    from idprov.config.schema import Locator
    from idprov.errors import ConfigError
    from idprov.inbound.jit import check_key_material

    locator = config.locator or Locator(config.source)
    problems = []
    for n, app in enumerate(config.applications):
        for j, entry in enumerate(app.jit):
            key = "jwks_file" if entry.jwks_file else "public_key_file"
            path = path_in_file(config, ("applications", n, "jit", j, key))
            a = path[1]
            try:
                check_key_material(entry)
            except ConfigError as exc:
                where = f"applications[{a}].jit[{j}].{key}"
                problems.append(
                    ConfigError(exc.message, location=locator.where(path), key=where, hint=exc.hint)
                )
    return problems


def _refused_unsafe(unsafe: list[Any]) -> Any:
    """The error of ``--strict`` for the unsafe settings: the first itself, or all of
    them, each with where it is and how to fix it."""
    from idprov.errors import ConfigError

    if len(unsafe) == 1:
        return unsafe[0]
    lines = [f"- {p.message}\n  fix: {p.hint}" for p in unsafe]
    error = ConfigError(
        f"{len(unsafe)} unsafe settings (refused by --strict):\n" + "\n".join(lines),
        hint="fix each as its line says, or run without --strict to only be warned",
    )
    error.code = unsafe[0].code if len({p.code for p in unsafe}) == 1 else "unsafe_settings"
    return error


def _missing_refusal(missing: list[tuple[str, str, str]]) -> Any:
    from idprov.errors import SecretError

    ref, where, key = missing[0]
    others = [f"{k} ({r}, {w})" for r, w, k in missing[1:]]
    return SecretError(
        f"secret {ref} cannot be read"
        + (f"; nor can {len(others)} more: " + ", ".join(others) if others else ""),
        location=where,
        key=key,
        hint="set it (`idprov secret set NAME` for keyring:, export the variable for env:, "
        "create the file for file:), or correct the reference",
    )


def _ignored_connectors() -> list[str]:
    """Why each installed connector that takes a built-in name is not used."""
    from idprov.connectors import registry

    return [registry.why_ignored(ep) for ep in registry.shadowed()]


@app.command("show")
def show(json: JsonOpt = False) -> None:
    """Show the effective configuration, defaults filled in (secrets never shown)."""

    config, _ = _loaded()

    def as_yaml(data: dict[str, Any]) -> None:
        typer.echo(_as_yaml(config, data), nl=False)

    emit(_masked(config), as_yaml)


def _as_yaml(config: Any, data: dict[str, Any]) -> str:
    """A configuration file that validates: what is not configuration (where it came
    from, the known claims, whether each secret is set) goes in comments."""
    import yaml

    from idprov.config.schema import to_data

    body = {k: v for k, v in to_data(config).items() if k not in ("source", "known_claims")}
    lines = [f"# the effective configuration of {config.source or 'the embedded default'}"]
    lines.append("# known claims: " + ", ".join(data["known_claims"]))
    lines += [f"# secret {ref.ref}: {ref.status()}" for ref in config.secret_refs()]
    text = yaml.safe_dump(_refs(body), sort_keys=False, allow_unicode=True)
    return "\n".join(lines) + "\n" + text


def _refs(value: Any) -> Any:
    """Secret references as the text that names them (never their values)."""
    from idprov.config.secrets import SecretRef

    if isinstance(value, SecretRef):
        return value.ref
    if isinstance(value, dict):
        return {k: _refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_refs(v) for v in value]
    return value


def init(
    path: Annotated[
        Path | None,
        typer.Option(help="Where to write (default: the user config directory's idprov.yaml)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    json: JsonOpt = False,
) -> None:
    """Write a commented starter configuration."""
    from importlib.resources import files

    from idprov.config.paths import CONFIG_FILENAME, create_private_file, user_config_dir
    from idprov.errors import ConflictError

    target = path or user_config_dir() / CONFIG_FILENAME
    if target.exists() and not force:
        raise ConflictError(f"{target} exists", hint="add --force to overwrite it")
    create_private_file(target)
    target.write_text(files("idprov.config").joinpath("starter.yaml").read_text("utf-8"), "utf-8")
    emit(
        {"written": str(target)},
        lambda r: render.message(
            f"[green]✓[/] wrote {render.esc(r['written'])}; check it with `idprov config validate`"
        ),
    )
