"""What a change would destroy at the targets, before it is made.

A CLI command asks before a change whose remote effects are over the deletion guard
("will delete 25 users at scim-main (83% of its 30 users)"), and declining must
change nothing: so the effects are computed *before* the local change, by the same
guard code (:func:`idprov.provisioning.guard.effects_of`) run over a view of the
userstores as they would be after it (:class:`Imagined`). The change itself is then
made through the unit of work as usual, and its push judged again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from idprov.errors import NotFoundError
from idprov.provisioning.guard import Change, Verdict, effects_of, judge
from idprov.provisioning.internal_roles import is_internal

if TYPE_CHECKING:
    from idprov.model import Role, User
    from idprov.provisioning.outbound import Directory
    from idprov.provisioning.service import IdentityService


@dataclass
class Imagined:
    """The directory as it would read after a change: users gone or disabled, a role
    gone or renamed, members taken out of a role."""

    real: Directory
    role: Role | None = None
    gone_users: set[str] = field(default_factory=set)
    disabled_users: set[str] = field(default_factory=set)
    """Users whose ``active`` claim would be false."""
    left_role: set[str] = field(default_factory=set)
    """Users that would no longer hold :attr:`role`."""
    role_gone: bool = False
    new_name: str | None = None
    after: dict[str, User] = field(default_factory=dict)
    """Users as an import's rows would leave them (their claims and roles), by id."""

    def users_by_id(self, refs: Iterable[tuple[str, str]]) -> dict[str, User]:
        found = self.real.users_by_id(refs)
        found.update({i: self.after[i] for i in found.keys() & self.after.keys()})
        return {i: self._user(u) for i, u in found.items() if i not in self.gone_users}

    def _user(self, user: User) -> User:
        if user.id in self.disabled_users:
            user = replace(user, claims={**user.claims, "active": "false"})
        if self.role is None or not (self.role_gone or user.id in self.left_role or self.new_name):
            return user
        mine = _names(self.role)
        roles = [r for r in user.roles if r.casefold() not in mine]
        if self.new_name is not None and user.id not in self.left_role:
            roles.append(self.new_name)
        return replace(user, roles=roles)

    def role_by_id(self, domain: str, role_id: str) -> Role | None:
        found = self.real.role_by_id(domain, role_id)
        if found is None or self.role is None or found.id != self.role.id:
            return found
        if self.role_gone:
            return None
        return replace(found, name=self.new_name) if self.new_name else found

    def role_by_name(self, domain: str, name: str) -> Role | None:
        return self.real.role_by_name(domain, name)

    def role_members(self, domain: str, role_id: str) -> list[tuple[str, str]]:
        if self.role is not None and role_id == self.role.id and self.role_gone:
            return []
        members = self.real.role_members(domain, role_id)
        out = [(d, u) for d, u in members if u not in self.gone_users]
        if self.role is not None and role_id == self.role.id:
            out = [(d, u) for d, u in out if u not in self.left_role]
        if self.after and (role := self.real.role_by_id(domain, role_id)) is not None:
            names = _names(role)
            out = [(d, u) for d, u in out if u not in self.after or _holds(self.after[u], names)]
            held = {u for _, u in out}
            out += [
                (user.domain, i)
                for i, user in self.after.items()
                if i not in held
                and _holds(user, names)
                and (is_internal(role.domain) or user.domain.casefold() == domain.casefold())
            ]
        return out

    def role_members_among(
        self, domain: str, role_id: str, refs: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        asked = {user_id for _, user_id in refs}
        return [(d, u) for d, u in self.role_members(domain, role_id) if u in asked]


def _names(role: Role) -> set[str]:
    """How a user's roles name ``role`` (case-folded)."""
    names = {role.qualified_name.casefold()}
    if not is_internal(role.domain):
        names.add(role.name.casefold())
    return names


def _holds(user: User, names: set[str]) -> bool:
    return any(r.casefold() in names for r in user.roles)


def _judge(service: IdentityService, view: Imagined, changes: list[Change]) -> Verdict:
    outbound = service.outbound
    return judge(outbound, effects_of(outbound, view, changes), service.allow_deletes)


def _changes(service: IdentityService, users: Sequence[User], role: Role | None) -> list[Change]:
    out = []
    for idp in service.targets():
        out += [Change(idp, "user", u.id, u.domain, u.qualified_name) for u in users]
        if role is not None:
            out.append(Change(idp, "role", role.id, role.domain, role.qualified_name))
    return out


def _members(service: IdentityService, role: Role) -> list[User]:
    refs = service.role_members(role.domain, role.id)
    return list(service.users_by_id(refs).values())


def delete_user(service: IdentityService, username: str, domain: str | None = None) -> Verdict:
    """What `user delete` would destroy: the user's account, its memberships."""
    if not service.targets():
        return Verdict()
    user = service.get_user(username, domain)
    view = Imagined(service.directory, gone_users={user.id})
    roles = [_role_of(service, user, r) for r in user.roles]
    changes = _changes(service, [user], None)
    for role in (r for r in roles if r is not None):
        changes += [c for c in _changes(service, [], role) if c.kind == "role"]
    return _judge(service, view, changes)


def leavers(
    service: IdentityService, users: Sequence[tuple[str, str, str]], delete: bool
) -> Verdict:
    """What `import users --missing` would destroy: ``users`` (id, domain, label)
    deleted, or disabled (``delete`` False), at the application's IdPs."""
    if not service.targets() or not users:
        return Verdict()
    ids = {user_id for user_id, _, _ in users}
    view = (
        Imagined(service.directory, gone_users=ids)
        if delete
        else Imagined(service.directory, disabled_users=ids)
    )
    changes = [
        Change(idp, "user", user_id, domain, label)
        for idp in service.targets()
        for user_id, domain, label in users
    ]
    return _judge(service, view, changes)


def _role_of(service: IdentityService, user: User, name: str) -> Role | None:
    try:
        return service.get_role(name, None if "/" in name else user.domain)
    except NotFoundError:  # a role gone meanwhile: nothing to count
        return None


def unassign(
    service: IdentityService, role_name: str, users: Sequence[str], domain: str | None = None
) -> Verdict:
    """What `role unassign` would destroy: deprovisions, memberships."""
    if not service.targets():
        return Verdict()
    role = service.get_role(role_name, domain)
    found = [_find(service, role, u) for u in users]
    view = Imagined(service.directory, role=role, left_role={u.id for u in found})
    return _judge(service, view, _changes(service, found, role))


def _find(service: IdentityService, role: Role, username: str) -> User:
    if is_internal(role.domain):
        return service.get_user(username)
    store = service.store(role.domain)
    return service.get_user(username, service.in_domain_of(store, username)[0].domain)


def delete_role(service: IdentityService, role_name: str, domain: str | None = None) -> Verdict:
    """What `role delete` would destroy: the group, and members out of scope."""
    if not service.targets():
        return Verdict()
    role = service.get_role(role_name, domain)
    view = Imagined(service.directory, role=role, role_gone=True)
    return _judge(service, view, _changes(service, _members(service, role), role))


def rename_role(
    service: IdentityService, role_name: str, new_name: str, domain: str | None = None
) -> Verdict:
    """What `role rename` would destroy: members leave a provisioning role's scope."""
    if not service.targets():
        return Verdict()
    role = service.get_role(role_name, domain)
    bare = new_name.rpartition("/")[2]
    view = Imagined(service.directory, role=role, new_name=bare)
    return _judge(service, view, _changes(service, _members(service, role), role))


@dataclass(frozen=True)
class RowChange:
    """What an import's row changes of an existing user (see :func:`imported`)."""

    user_id: str
    domain: str
    claims: dict[str, str]
    """Its claims after the row."""
    roles_added: tuple[str, ...] = ()
    roles_removed: tuple[str, ...] = ()


def imported(
    service: IdentityService,
    rows: Sequence[RowChange],
    leavers: Sequence[tuple[str, str, str]] = (),
    delete: bool = False,
) -> Verdict:
    """What an import would destroy (`import users --dry-run`): its rows' changes of
    existing users (claims removed, ``active`` false, roles left: out of a group, out
    of a provisioning role's scope), with its ``leavers`` (``--missing``: (id, domain,
    label), deleted or disabled), judged as one change, as its run's pushes are."""
    if not service.targets() or not (rows or leavers):
        return Verdict()
    before = service.users_by_id([(r.domain, r.user_id) for r in rows])
    after: dict[str, User] = {}
    touched: dict[str, Role] = {}
    for row in rows:
        user = before.get(row.user_id)
        if user is None:
            continue
        left = {r.casefold() for r in row.roles_removed}
        roles = [r for r in user.roles if r.casefold() not in left] + list(row.roles_added)
        after[user.id] = replace(user, claims=dict(row.claims), roles=roles)
        for name in (*row.roles_removed, *row.roles_added):
            role = _role_of(service, user, name)
            if role is not None:
                touched[role.id] = role
    ids = {user_id for user_id, _, _ in leavers}
    view = Imagined(
        service.directory,
        gone_users=ids if delete else set(),
        disabled_users=set() if delete else ids,
        after=after,
    )
    changes = _changes(service, list(after.values()), None)
    for role in touched.values():
        changes += [c for c in _changes(service, [], role) if c.kind == "role"]
    changes += [
        Change(idp, "user", user_id, domain, label)
        for idp in service.targets()
        for user_id, domain, label in leavers
    ]
    return _judge(service, view, changes)
