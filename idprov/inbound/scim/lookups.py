"""Looking users and roles up for the SCIM storage, across the acting application's
userstores: by id, by name, a name's domain, a manager by id and by name, the member
names of a Group, listings. Names are as the application sees them (see
:mod:`.storage`).

Every lookup and listing of a request goes through :func:`domains`, the acting
application's scope (:attr:`~.acting.Backend.domains`): a token sees and changes
the users and roles of its application's userstores only, and those of any other
userstore are not found (404, not 403: their existence is not revealed either)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from idprov.inbound.scim import mapping
from idprov.model import Page, QualifiedName, Role, User, UserQuery

if TYPE_CHECKING:
    from idprov.inbound.scim.acting import Backend

USERS, GROUPS = "User", "Group"
"""The SCIM resource types idprov serves."""


def label(domain: str, name: str, default_domain: str) -> str:
    """A name as the application sees it: bare in its own userstore, else DOMAIN/name."""
    return QualifiedName(domain, name).relative_to(default_domain)


def domains(backend: Backend) -> list[str]:
    """The userstores the acting application may see and change (its scope)."""
    return list(backend.domains)


def in_scope(backend: Backend, domain: str) -> bool:
    return domain.casefold() in {d.casefold() for d in domains(backend)}


def find_user(backend: Backend, user_id: str) -> User | None:
    for domain in domains(backend):
        user = backend.service.store(domain).find_user_by_id(user_id)
        if user is not None:
            return user
    return None


def find_role(backend: Backend, role_id: str) -> Role | None:
    for domain in domains(backend):
        role = backend.service.store(domain).find_role_by_id(role_id)
        if role is not None:
            return role
    return None


def list_users(backend: Backend, query: UserQuery) -> Page:
    """A page of the users of the application's userstores, in configuration order."""
    from idprov.provisioning.user_listing import stream_users

    service = backend.service
    stores = [service.store(d) for d in domains(backend)]
    return stream_users(stores, query, service.directory.with_internal_roles).page()


def list_roles(backend: Backend) -> list[Role]:
    """The roles of the application's userstores."""
    return [r for d in domains(backend) for r in backend.service.list_roles(d)]


def by_name(backend: Backend, kind: str, attribute: str, name: QualifiedName) -> User | Role | None:
    if not in_scope(backend, name.domain):
        return None
    store = backend.service.store(name.domain)
    if kind == USERS and attribute == "username":
        return store.find_user(name.name)
    if kind == GROUPS and attribute == "displayname":
        return store.find_role(name.name)
    return None


def external_lookup(backend: Backend) -> Callable[[str], list[str]]:
    return lambda value: backend.external_ids.find(backend.application, "user", value)


def parse_name(backend: Backend, text: str, attribute: str) -> QualifiedName:
    """``DOMAIN/name`` or a bare name (in the application's userstore); a name holds
    no ``/`` after its domain prefix."""
    name = QualifiedName.parse(text, backend.domain)
    if "/" in name.name:
        raise mapping.InvalidValue(
            f"{attribute}: {text[:80]!r} holds a '/' after its domain prefix "
            f"{name.domain!r}; a name holds none (write DOMAIN/name or the bare name)"
        )
    return name


def in_known_domain(backend: Backend, text: str, attribute: str) -> QualifiedName:
    """``DOMAIN/name`` or a bare name, whose domain must be a userstore's."""
    name = parse_name(backend, text, attribute)
    known = domains(backend)
    if not in_scope(backend, name.domain):
        raise mapping.InvalidValue(
            f"{attribute}: {name.domain!r} is no userstore domain of this application "
            f"(its domains: {', '.join(known)}); write the name without the prefix, or "
            "with one of these"
        )
    return name


def manager_claim(backend: Backend, given: mapping.UserInput, domain: str) -> dict[str, str]:
    """The ``manager`` claim of a user of ``domain`` whose document names its manager
    by id: the manager's name, bare in ``domain``, else ``DOMAIN/name``."""
    if given.manager_id is None:
        return {}
    manager = find_user(backend, given.manager_id)
    if manager is None:
        raise mapping.InvalidValue(f"manager: no user with id {given.manager_id!r}")
    return {"manager": label(manager.domain, manager.username, domain)}


def managers_of(backend: Backend, users: Sequence[User]) -> dict[str, str]:
    """User id -> its manager's user id, for users whose ``manager`` claim names an
    existing user (a bare name is in the user's own domain)."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    for user in users:
        claim = user.claims.get("manager")
        if isinstance(claim, str) and claim:
            named = QualifiedName.parse(claim, user.domain)
            wanted.setdefault(named.domain.casefold(), []).append((user.id, named.name))
    out: dict[str, str] = {}
    known = {d.casefold(): d for d in domains(backend)}
    for domain, pairs in wanted.items():
        if domain not in known:
            continue
        found = backend.service.store(known[domain]).find_users([n for _, n in pairs])
        for user_id, manager_name in pairs:
            manager = found.get(manager_name.casefold())
            if manager is not None:
                out[user_id] = manager.id
    return out


def member_names(backend: Backend, domain: str, user_ids: Sequence[str]) -> list[str]:
    """The usernames of ``user_ids``, which must be users of ``domain`` (a role holds
    users of its own userstore)."""
    found = backend.service.store(domain).find_users_by_id(list(user_ids))
    for user_id in user_ids:
        if user_id not in found:
            elsewhere = find_user(backend, user_id)
            where = f" (it is in the {elsewhere.domain} userstore)" if elsewhere else ""
            raise mapping.InvalidValue(
                f"members: no user with id {user_id!r} in the {domain} userstore{where}"
            )
    return [found[i].username for i in user_ids]
