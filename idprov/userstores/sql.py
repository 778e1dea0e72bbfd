"""The userstore contract over three SQL tables, for every SQL database idprov uses.

SQLite (:mod:`idprov.userstores.sqlite`) and PostgreSQL
(:mod:`idprov.userstores.postgres`) keep users and roles the same way:

- ``users`` (id, username, username_key, claims as one JSON object, password_hash,
  created, modified), unique by ``username_key``, the casefolded name;
- ``roles`` (id, name, name_key, created, modified), unique by ``name_key``;
- ``user_roles`` (user_id, role_id), deleted with either side.

Every query lives once, here (the writes) or in :mod:`~idprov.userstores.sql_read`
(the reads, and the dialect), written with ``?`` parameters in SQL both databases
accept. A dialect supplies how to run a statement, how a claim filter reads the JSON
(``json_each`` or ``jsonb``), how stored values come back, and may replace the bulk
writes of an import with faster ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from idprov.db import now
from idprov.errors import ConflictError
from idprov.model import ClaimValue, Role, User, new_id
from idprov.userstores.base import ImportedUser
from idprov.userstores.sql_read import SqlReader, claims_json, name_key

INSERT_USER = (
    "INSERT INTO users (id, username, username_key, claims, password_hash, created, modified)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_IMPORTED_USER = (
    "UPDATE users SET claims = ?, password_hash = coalesce(?, password_hash), modified = ?"
    " WHERE id = ?"
)


class SqlUserStore(SqlReader):
    """Users and roles of one domain in the three tables above (see the module)."""

    adds_as_read: ClassVar[bool] = True

    def _insert_users(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert new users (rows in :data:`INSERT_USER`'s order) for an import."""
        self._executemany(INSERT_USER, rows)

    def _insert_memberships(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Add (user id, role name key) memberships for an import; roles exist. The
        few roles' ids are read once, not looked up again for every membership."""
        role_ids: dict[str, str] = {}
        for test, args in self._one_of(sorted({key for _, key in pairs})):
            found = self._execute(f"SELECT name_key, id FROM roles WHERE name_key {test}", args)
            role_ids.update(dict(found.fetchall()))
        self._executemany(
            "INSERT INTO user_roles (user_id, role_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(user, role_ids[key]) for user, key in pairs if key in role_ids],
        )

    def add_user(
        self, username: str, claims: Mapping[str, ClaimValue], password_hash: str | None
    ) -> User:
        self.ensure_writable()
        existing = self.find_user(username)
        if existing is not None:
            raise ConflictError(
                f"user {existing.qualified_name!r} already exists in the {self.domain} userstore",
                hint="choose another name, or change it with `idprov user update`",
            )
        stamp = now()
        user = User(new_id(), self.domain, username, dict(claims), [], password_hash is not None)
        user.created = user.modified = stamp
        self._execute(
            INSERT_USER,
            [user.id, username, name_key(username), claims_json(user.claims), password_hash]
            + [stamp, stamp],
        )
        return user

    def update_user(
        self, username: str, set_claims: Mapping[str, ClaimValue], unset: Sequence[str]
    ) -> User:
        self.ensure_writable()
        user = self.find_user(username)
        if user is None:
            raise self._no_user(username)
        claims = {**user.claims, **set_claims}
        for name in unset:
            claims.pop(name, None)
        if claims != user.claims:
            user.claims, user.modified = claims, now()
            self._execute(
                "UPDATE users SET claims = ?, modified = ? WHERE id = ?",
                [claims_json(claims), user.modified, user.id],
            )
        return user

    def rename_user(self, username: str, new_name: str) -> User:
        self.ensure_writable()
        user = self.find_user(username)
        if user is None:
            raise self._no_user(username)
        clash = self.find_user(new_name)
        if clash is not None and clash.id != user.id:
            raise ConflictError(
                f"user {clash.qualified_name!r} already exists in the {self.domain} userstore",
                hint="choose another name",
            )
        user.username, user.modified = new_name, now()
        self._execute(
            "UPDATE users SET username = ?, username_key = ?, modified = ? WHERE id = ?",
            [new_name, name_key(new_name), user.modified, user.id],
        )
        self._touch("roles", self._role_ids_of(user.id), user.modified)
        return user

    def set_password_hash(self, username: str, password_hash: str) -> None:
        self.ensure_writable()
        self._execute(
            "UPDATE users SET password_hash = ?, modified = ? WHERE id = ?",
            [password_hash, now(), self._user_id(username)],
        )

    def delete_user(self, username: str) -> User:
        self.ensure_writable()
        user = self.find_user(username)
        if user is None:
            raise self._no_user(username)
        self._touch("roles", self._role_ids_of(user.id))
        self._execute("DELETE FROM users WHERE id = ?", [user.id])
        return user

    def add_role(self, name: str) -> Role:
        self.ensure_writable()
        existing = self.find_role(name)
        if existing is not None:
            raise ConflictError(
                f"role {existing.qualified_name!r} already exists in the {self.domain} userstore"
            )
        stamp = now()
        role = Role(new_id(), self.domain, name, 0, [], stamp, stamp)
        self._execute(
            "INSERT INTO roles (id, name, name_key, created, modified) VALUES (?, ?, ?, ?, ?)",
            [role.id, name, name_key(name), stamp, stamp],
        )
        return role

    def delete_role(self, name: str) -> Role:
        self.ensure_writable()
        role = self.find_role(name, with_members=True)
        if role is None:
            raise self._no_role(name)
        self._touch("users", self.role_member_ids(role.id))
        self._execute("DELETE FROM roles WHERE id = ?", [role.id])
        return role

    def rename_role(self, name: str, new_name: str) -> Role:
        self.ensure_writable()
        role = self.find_role(name, with_members=True)
        if role is None:
            raise self._no_role(name)
        clash = self.find_role(new_name)
        if clash is not None and clash.id != role.id:
            raise ConflictError(f"role {clash.qualified_name!r} already exists")
        role.name, role.modified = new_name, now()
        self._execute(
            "UPDATE roles SET name = ?, name_key = ?, modified = ? WHERE id = ?",
            [new_name, name_key(new_name), role.modified, role.id],
        )
        self._touch("users", self.role_member_ids(role.id), role.modified)
        return role

    def assign(self, role: str, usernames: Sequence[str]) -> list[str]:
        return self._change_members(
            role,
            usernames,
            "INSERT INTO user_roles (user_id, role_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            joining=True,
        )

    def unassign(self, role: str, usernames: Sequence[str]) -> list[str]:
        return self._change_members(
            role,
            usernames,
            "DELETE FROM user_roles WHERE user_id = ? AND role_id = ?",
            joining=False,
        )

    def _change_members(
        self, role: str, usernames: Sequence[str], sql: str, joining: bool
    ) -> list[str]:
        """Run ``sql`` (user id, role id) for the users it changes (``joining``: those
        not members yet; else those who are); the usernames changed. The users are
        looked up and the memberships read a chunk at a time (a statement per user
        cost a role assign of 5,000 users 10,000). The role and those users are
        modified then (a client reading changes since a time sees both)."""
        self.ensure_writable()
        role_id = self._role_id(role)
        ids = self._user_ids(usernames)
        members = self._members_among(role_id, list(ids.values()))
        changed = [name for name, i in ids.items() if (i in members) != joining]
        user_ids = [ids[name] for name in changed]
        self._executemany(sql, [(user_id, role_id) for user_id in user_ids])
        if changed:
            self._touch("roles", [role_id])
            self._touch("users", user_ids)
        return changed

    def _user_ids(self, usernames: Sequence[str]) -> dict[str, str]:
        """Username -> id of each of ``usernames`` (in order, once per user); the first
        unknown one raises."""
        by_key: dict[str, str] = {}
        keys = list(dict.fromkeys(name_key(n) for n in usernames))
        for test, args in self._one_of(keys):
            found = self._execute(
                f"SELECT username_key, id FROM users WHERE username_key {test}", args
            )
            by_key.update((str(k), str(i)) for k, i in found.fetchall())
        ids: dict[str, str] = {}
        seen: set[str] = set()
        for name in usernames:
            user_id = by_key.get(name_key(name))
            if user_id is None:
                raise self._no_user(name)
            if user_id not in seen:
                ids[name] = user_id
                seen.add(user_id)
        return ids

    def _members_among(self, role_id: str, user_ids: Sequence[str]) -> set[str]:
        members: set[str] = set()
        for test, args in self._one_of(user_ids):
            found = self._execute(
                f"SELECT user_id FROM user_roles WHERE role_id = ? AND user_id {test}",
                [role_id, *args],
            )
            members.update(str(r[0]) for r in found.fetchall())
        return members

    def _touch(self, table: str, ids: Sequence[str], stamp: str | None = None) -> None:
        """Set ``modified`` of these users or roles (now, or ``stamp``)."""
        stamp = stamp or now()
        for test, args in self._one_of(list(dict.fromkeys(ids))):
            self._execute(f"UPDATE {table} SET modified = ? WHERE id {test}", [stamp, *args])

    def _role_ids_of(self, user_id: str) -> list[str]:
        rows = self._execute("SELECT role_id FROM user_roles WHERE user_id = ?", [user_id])
        return [r[0] for r in rows.fetchall()]

    def import_users(self, users: Sequence[ImportedUser]) -> None:
        """A batch in a few statements: inserts, updates, then the memberships."""
        self.ensure_writable()
        stamp = now()

        def stored(user: ImportedUser) -> str:
            return user.claims_json or claims_json(user.claims)

        self._insert_users(
            [
                (u.id, u.username, name_key(u.username), stored(u), u.password_hash, stamp, stamp)
                for u in users
                if not u.existing
            ]
        )
        self._executemany(
            UPDATE_IMPORTED_USER,
            [(stored(u), u.password_hash, stamp, u.id) for u in users if u.existing],
        )
        with_roles = [u for u in users if u.roles is not None]
        for test, args in self._one_of([u.id for u in with_roles if u.existing]):
            self._execute(
                "UPDATE roles SET modified = ? WHERE id IN (SELECT role_id FROM user_roles"
                f" WHERE user_id {test})",
                [stamp, *args],
            )
        self._executemany(
            "DELETE FROM user_roles WHERE user_id = ?", [(u.id,) for u in with_roles if u.existing]
        )
        self._insert_memberships(
            list({(u.id, name_key(r)): None for u in with_roles for r in u.roles or []})
        )
        touched = {name_key(r) for u in with_roles for r in u.roles or []}
        for test, args in self._one_of(sorted(touched)):
            self._execute(f"UPDATE roles SET modified = ? WHERE name_key {test}", [stamp, *args])
