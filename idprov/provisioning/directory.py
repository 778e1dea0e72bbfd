"""The read-only view of the userstores that outbound provisioning gets.

Outbound needs these reads — users by id, a role by id or name, a role's members
(all, or those among some users) — across
every domain, internal roles included. :class:`StoreDirectory` provides exactly
those (the :class:`~idprov.provisioning.outbound.Directory` protocol) over the
service's stores, so the engine never holds the service and cannot write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from idprov.provisioning.internal_roles import is_internal

if TYPE_CHECKING:
    from idprov.model import Role, User
    from idprov.provisioning.internal_roles import InternalRoles
    from idprov.userstores import UserStore


class StoreDirectory:
    """Users and roles by id, read through the stores of a service."""

    def __init__(
        self, store: Callable[[str], UserStore], internal: Callable[[], InternalRoles]
    ) -> None:
        self._store = store
        self._internal = internal

    def with_internal_roles(self, users: list[User]) -> list[User]:
        """Add each user's internal roles (``Internal/NAME``) to its roles."""
        if users:
            held = self._internal().roles_of([u.id for u in users])
            for user in users:
                user.roles = [*user.roles, *held.get(user.id, [])]
        return users

    def users_by_id(self, refs: Iterable[tuple[str, str]]) -> dict[str, User]:
        """Users by id, from (domain, id) pairs, with their internal roles."""
        by_domain: dict[str, list[str]] = {}
        for domain, user_id in refs:
            by_domain.setdefault(domain, []).append(user_id)
        found: dict[str, User] = {}
        for domain, ids in by_domain.items():
            found.update(self._store(domain).find_users_by_id(ids))
        self.with_internal_roles(list(found.values()))
        return found

    def role_by_id(self, domain: str, role_id: str) -> Role | None:
        if is_internal(domain):
            return self._internal().find_by_id(role_id)
        return self._store(domain).find_role_by_id(role_id)

    def role_by_name(self, domain: str, name: str) -> Role | None:
        prefix, _, bare = name.partition("/")
        if bare and is_internal(prefix):
            return self._internal().find(bare)
        return self._store(domain).find_role(name)

    def role_members(self, domain: str, role_id: str) -> list[tuple[str, str]]:
        """(domain, user id) of the role's members."""
        if is_internal(domain):
            return [(d, u) for d, u, _ in self._internal().members(role_id)]
        return [(domain, u) for u in self._store(domain).role_member_ids(role_id)]

    def role_members_among(
        self, domain: str, role_id: str, refs: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Those of ``refs`` (domain, user id) that are members of the role: work grows
        with ``refs``, not with the role's members."""
        asked = list(refs)
        if is_internal(domain):
            return [(d, u) for d, u, _ in self._internal().members_among(role_id, asked)]
        ids = list(dict.fromkeys(user_id for _, user_id in asked))
        return [(domain, u) for u in self._store(domain).role_member_ids_among(role_id, ids)]
