"""Internal roles: roles whose members come from any userstore domain.

A directory group can only hold entries of its own directory; an internal role
(WSO2 calls them that, and so does idprov: ``Internal/NAME``) lives in idprov's own
database and holds users of every domain, by their stable ids. Members keep their
own userstore; deleting a user removes it from its internal roles. Internal roles
count for provisioning scope (``provisioning_roles: [Internal/auditors]``) and are
pushed as groups like any role.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from idprov.db import now
from idprov.errors import ConflictError, NotFoundError
from idprov.model import Role, User, new_id

if TYPE_CHECKING:
    from idprov.statedb import StateDB

INTERNAL = "Internal"


def is_internal(domain: str | None) -> bool:
    return domain is not None and domain.casefold() == INTERNAL.casefold()


def create_tables(db: StateDB) -> None:
    db.execute(
        "CREATE TABLE internal_roles (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
        " name_key TEXT NOT NULL UNIQUE, created TEXT NOT NULL, modified TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE internal_members ("
        " role_id TEXT NOT NULL REFERENCES internal_roles(id) ON DELETE CASCADE,"
        " domain TEXT NOT NULL, user_id TEXT NOT NULL, username TEXT NOT NULL,"
        " PRIMARY KEY (role_id, domain, user_id)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX internal_members_user ON internal_members (user_id)")


class InternalRoles:
    """The internal roles table, in idprov's state database."""

    def __init__(self, db: StateDB):
        self.db = db

    def _role(self, row: Sequence[str], with_members: bool) -> Role:
        id_, name, created, modified = row
        members = self.members(id_) if with_members else None
        count = self.db.execute(
            "SELECT count(*) FROM internal_members WHERE role_id = ?", [id_]
        ).fetchone()[0]
        labels = [str(_label(d, n)) for d, _, n in members] if members is not None else None
        return Role(id_, INTERNAL, name, count, labels, created, modified)

    def find(self, name: str, with_members: bool = False) -> Role | None:
        row = self.db.execute(
            "SELECT id, name, created, modified FROM internal_roles WHERE name_key = ?",
            [name.casefold()],
        ).fetchone()
        return self._role(row, with_members) if row else None

    def find_by_id(self, role_id: str) -> Role | None:
        row = self.db.execute(
            "SELECT id, name, created, modified FROM internal_roles WHERE id = ?", [role_id]
        ).fetchone()
        return self._role(row, False) if row else None

    def get(self, name: str, with_members: bool = False) -> Role:
        role = self.find(name, with_members)
        if role is None:
            raise NotFoundError(
                f"no internal role {name!r}",
                hint=f"create it with `idprov role add {INTERNAL}/{name}`",
            )
        return role

    def all(self, prefix: str | None = None) -> list[Role]:
        rows = self.db.execute(
            "SELECT id, name, created, modified FROM internal_roles ORDER BY name_key"
        ).fetchall()
        roles = [self._role(r, False) for r in rows]
        if prefix:
            roles = [r for r in roles if r.name.casefold().startswith(prefix.casefold())]
        return roles

    def add(self, name: str) -> Role:
        if self.find(name) is not None:
            raise ConflictError(f"internal role {name!r} already exists")
        stamp = now()
        role_id = new_id()
        self.db.execute(
            "INSERT INTO internal_roles VALUES (?, ?, ?, ?, ?)",
            [role_id, name, name.casefold(), stamp, stamp],
        )
        return self.get(name)

    def delete(self, name: str) -> Role:
        role = self.get(name, with_members=True)
        self.db.execute("DELETE FROM internal_roles WHERE id = ?", [role.id])
        return role

    def rename(self, name: str, new_name: str) -> Role:
        role = self.get(name, with_members=True)
        clash = self.find(new_name)
        if clash is not None and clash.id != role.id:
            raise ConflictError(f"internal role {new_name!r} already exists")
        self.db.execute(
            "UPDATE internal_roles SET name = ?, name_key = ?, modified = ? WHERE id = ?",
            [new_name, new_name.casefold(), now(), role.id],
        )
        return self.get(new_name, with_members=True)

    def assign(self, name: str, users: Iterable[User]) -> list[str]:
        role = self.get(name)
        added = []
        for user in users:
            cur = self.db.execute(
                "INSERT INTO internal_members VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [role.id, user.domain, user.id, user.username],
            )
            if cur.rowcount:
                added.append(user.qualified_name)
        return added

    def unassign(self, name: str, users: Iterable[User]) -> list[str]:
        role = self.get(name)
        removed = []
        for user in users:
            cur = self.db.execute(
                "DELETE FROM internal_members WHERE role_id = ? AND user_id = ?", [role.id, user.id]
            )
            if cur.rowcount:
                removed.append(user.qualified_name)
        return removed

    def members(self, role_id: str) -> list[tuple[str, str, str]]:
        """(domain, user id, username) of every member."""
        rows = self.db.execute(
            "SELECT domain, user_id, username FROM internal_members WHERE role_id = ?"
            " ORDER BY domain, username",
            [role_id],
        ).fetchall()
        return [(str(d), str(u), str(n)) for d, u, n in rows]

    def members_among(
        self, role_id: str, refs: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str, str]]:
        """(domain, user id, username) of the members among ``refs`` (domain, user id)."""
        ids = list(dict.fromkeys(user_id for _, user_id in refs))
        sql = "SELECT domain, user_id, username FROM internal_members WHERE role_id = ? AND user_id"
        return [(str(d), str(u), str(n)) for d, u, n in self.db.select_among(sql, [role_id], ids)]

    def roles_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        """User id -> ``Internal/NAME`` of each internal role it holds."""
        out: dict[str, list[str]] = {}
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            for user_id, name in self.db.execute(
                "SELECT m.user_id, r.name FROM internal_members m JOIN internal_roles r"
                f" ON r.id = m.role_id WHERE m.user_id IN ({','.join('?' * len(chunk))})"
                " ORDER BY r.name_key",
                chunk,
            ).fetchall():
                out.setdefault(user_id, []).append(f"{INTERNAL}/{name}")
        return out

    def roles_of_user(self, user_id: str) -> list[Role]:
        rows = self.db.execute(
            "SELECT r.id, r.name, r.created, r.modified FROM internal_members m JOIN"
            " internal_roles r ON r.id = m.role_id WHERE m.user_id = ?",
            [user_id],
        ).fetchall()
        return [self._role(r, False) for r in rows]

    def forget_user(self, user_id: str) -> None:
        self.db.execute("DELETE FROM internal_members WHERE user_id = ?", [user_id])


def _label(domain: str, username: str) -> str:
    return username if domain.upper() == "PRIMARY" else f"{domain}/{username}"
