"""The embedded userstore: users and roles in an SQLite file.

Without a ``path`` it lives in idprov's own database (``<data_dir>/idprov.db``), so
a change, its audit record and its outbound operations commit in one transaction.
Claims are one JSON object per user; names are unique by their casefolded key.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import sqlite_utils

from idprov.config.claims import ClaimDefinition
from idprov.config.models import SqliteUserstoreConfig
from idprov.db import migrate, now, write_transaction
from idprov.errors import ConflictError, NotFoundError, StoreError
from idprov.model import ClaimValue, Page, Role, User, UserQuery
from idprov.userstores.base import ImportedUser, UserStore


def name_key(name: str) -> str:
    """The case-insensitive key of a user or role name."""
    return name.casefold()


def _create_schema(db: sqlite_utils.Database) -> None:
    db.table("users").create(
        {
            "id": str,
            "username": str,
            "username_key": str,
            "claims": str,
            "password_hash": str,
            "created": str,
            "modified": str,
        },
        pk="id",
        not_null={"username", "username_key", "claims", "created", "modified"},
    )
    db.table("users").create_index(["username_key"], unique=True)
    db.table("roles").create(
        {"id": str, "name": str, "name_key": str, "created": str, "modified": str},
        pk="id",
        not_null={"name", "name_key", "created", "modified"},
    )
    db.table("roles").create_index(["name_key"], unique=True)
    db.execute(
        "CREATE TABLE user_roles ("
        " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
        " role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,"
        " PRIMARY KEY (user_id, role_id)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX user_roles_role ON user_roles (role_id, user_id)")


MIGRATIONS = [("0001_users_roles", _create_schema)]


class SqliteUserStore(UserStore):
    """Users and roles of one domain in one SQLite file."""

    type: ClassVar[str] = "sqlite"
    config: SqliteUserstoreConfig

    def __init__(
        self,
        config: SqliteUserstoreConfig,
        claims: Mapping[str, ClaimDefinition],
        db: sqlite_utils.Database,
    ):
        super().__init__(config, claims)
        self.db = db
        try:
            migrate(db, "userstore", MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"userstore {self.domain}: {exc}") from exc

    @classmethod
    def default_path(cls, data_dir: Path) -> Path:
        return data_dir / "idprov.db"

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with write_transaction(self.db):
            yield

    # ---- reads
    def _row_to_user(self, row: sqlite3.Row | tuple[Any, ...], roles: list[str]) -> User:
        id_, username, claims, pw, created, modified = row
        return User(
            id=id_,
            domain=self.domain,
            username=username,
            claims=json.loads(claims),
            roles=roles,
            has_password=pw is not None,
            created=created,
            modified=modified,
        )

    _USER_COLUMNS = "id, username, claims, password_hash, created, modified"

    def find_user(self, username: str) -> User | None:
        row = self.db.execute(
            f"SELECT {self._USER_COLUMNS} FROM users WHERE username_key = ?",
            [name_key(username)],
        ).fetchone()
        if row is None:
            return None
        return self._row_to_user(row, self._roles_of([row[0]]).get(row[0], []))

    def find_user_by_id(self, user_id: str) -> User | None:
        row = self.db.execute(
            f"SELECT {self._USER_COLUMNS} FROM users WHERE id = ?", [user_id]
        ).fetchone()
        if row is None:
            return None
        return self._row_to_user(row, self._roles_of([row[0]]).get(row[0], []))

    def find_users_by_id(self, user_ids: Sequence[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            rows = self.db.execute(
                f"SELECT {self._USER_COLUMNS} FROM users"
                f" WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            roles = self._roles_of([r[0] for r in rows])
            found.update({r[0]: self._row_to_user(r, roles.get(r[0], [])) for r in rows})
        return found

    def find_users(self, usernames: Sequence[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for start in range(0, len(usernames), 500):
            keys = [name_key(n) for n in usernames[start : start + 500]]
            rows = self.db.execute(
                f"SELECT {self._USER_COLUMNS} FROM users"
                f" WHERE username_key IN ({','.join('?' * len(keys))})",
                keys,
            ).fetchall()
            roles = self._roles_of([r[0] for r in rows])
            found.update({name_key(r[1]): self._row_to_user(r, roles.get(r[0], [])) for r in rows})
        return found

    def import_users(self, users: Sequence[ImportedUser]) -> None:
        """A batch in a few statements: executemany of inserts, updates and roles."""
        self.ensure_writable()
        stamp = now()
        conn = self.db.conn

        def claims_json(user: ImportedUser) -> str:
            return user.claims_json or json.dumps(user.claims, ensure_ascii=False, sort_keys=True)

        conn.executemany(
            "INSERT INTO users (id, username, username_key, claims, password_hash, created,"
            " modified) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    u.id,
                    u.username,
                    name_key(u.username),
                    claims_json(u),
                    u.password_hash,
                    stamp,
                    stamp,
                )
                for u in users
                if not u.existing
            ],
        )
        conn.executemany(
            "UPDATE users SET claims = ?, password_hash = coalesce(?, password_hash),"
            " modified = ? WHERE id = ?",
            [(claims_json(u), u.password_hash, stamp, u.id) for u in users if u.existing],
        )
        with_roles = [u for u in users if u.roles is not None]
        conn.executemany(
            "DELETE FROM user_roles WHERE user_id = ?", [(u.id,) for u in with_roles if u.existing]
        )
        conn.executemany(
            "INSERT OR IGNORE INTO user_roles (user_id, role_id)"
            " SELECT ?, id FROM roles WHERE name_key = ?",
            [(u.id, name_key(r)) for u in with_roles for r in u.roles or []],
        )

    def find_role_by_id(self, role_id: str) -> Role | None:
        row = self.db.execute(
            "SELECT id, name, created, modified,"
            " (SELECT count(*) FROM user_roles WHERE role_id = roles.id)"
            " FROM roles WHERE id = ?",
            [role_id],
        ).fetchone()
        if row is None:
            return None
        return Role(row[0], self.domain, row[1], row[4], None, row[2], row[3])

    def role_member_ids(self, role_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT user_id FROM user_roles WHERE role_id = ?", [role_id]
        ).fetchall()
        return [r[0] for r in rows]

    def _roles_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for chunk in range(0, len(user_ids), 500):
            ids = list(user_ids[chunk : chunk + 500])
            marks = ",".join("?" * len(ids))
            rows = self.db.execute(
                "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
                f" WHERE ur.user_id IN ({marks}) ORDER BY r.name_key",
                ids,
            )
            for user_id, role in rows.fetchall():
                out.setdefault(user_id, []).append(role)
        return out

    def _user_filter(self, query: UserQuery) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for claim, value in query.claims.items():
            where.append("EXISTS (SELECT 1 FROM json_each(users.claims, ?) WHERE value = ?)")
            params += [f'$."{claim}"', value]
        if query.role is not None:
            where.append(
                "id IN (SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
                " WHERE r.name_key = ?)"
            )
            params.append(name_key(query.role))
        if query.username_prefix:
            where.append("substr(username_key, 1, ?) = ?")
            prefix = name_key(query.username_prefix)
            params += [len(prefix), prefix]
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def list_users(self, query: UserQuery) -> Page:
        where, params = self._user_filter(query)
        total = self.db.execute(f"SELECT count(*) FROM users{where}", params).fetchone()[0]
        limit = -1 if query.limit is None else query.limit
        rows = self.db.execute(
            f"SELECT {self._USER_COLUMNS} FROM users{where} ORDER BY username_key LIMIT ? OFFSET ?",
            [*params, limit, query.offset],
        ).fetchall()
        roles = self._roles_of([r[0] for r in rows])
        users = [self._row_to_user(r, roles.get(r[0], [])) for r in rows]
        return Page(users, total, query.offset, query.limit)

    def password_hash(self, username: str) -> str | None:
        row = self.db.execute(
            "SELECT password_hash FROM users WHERE username_key = ?", [name_key(username)]
        ).fetchone()
        if row is None:
            raise self._no_user(username)
        return row[0]

    def find_role(self, name: str, with_members: bool = False) -> Role | None:
        row = self.db.execute(
            "SELECT id, name, created, modified,"
            " (SELECT count(*) FROM user_roles WHERE role_id = roles.id)"
            " FROM roles WHERE name_key = ?",
            [name_key(name)],
        ).fetchone()
        if row is None:
            return None
        members = None
        if with_members:
            members = [
                r[0]
                for r in self.db.execute(
                    "SELECT u.username FROM user_roles ur JOIN users u ON u.id = ur.user_id"
                    " WHERE ur.role_id = ? ORDER BY u.username_key",
                    [row[0]],
                ).fetchall()
            ]
        return Role(row[0], self.domain, row[1], row[4], members, row[2], row[3])

    def list_roles(self, prefix: str | None = None) -> list[Role]:
        where, params = "", []
        if prefix:
            key = name_key(prefix)  # casefolding can change the length ('ß' -> 'ss')
            where, params = " WHERE substr(name_key, 1, ?) = ?", [len(key), key]
        rows = self.db.execute(
            "SELECT id, name, created, modified,"
            " (SELECT count(*) FROM user_roles WHERE role_id = roles.id)"
            f" FROM roles{where} ORDER BY name_key",
            params,
        ).fetchall()
        return [Role(r[0], self.domain, r[1], r[4], None, r[2], r[3]) for r in rows]

    # ---- writes
    def _no_user(self, username: str) -> NotFoundError:
        return NotFoundError(
            f"no user {username!r} in the {self.domain} userstore",
            hint="list users with `idprov user list`",
        )

    def _no_role(self, name: str) -> NotFoundError:
        return NotFoundError(
            f"no role {name!r} in the {self.domain} userstore",
            hint=f"create it with `idprov role add {name}`, or list roles with `idprov role list`",
        )

    def _user_id(self, username: str) -> str:
        row = self.db.execute(
            "SELECT id FROM users WHERE username_key = ?", [name_key(username)]
        ).fetchone()
        if row is None:
            raise self._no_user(username)
        return str(row[0])

    def _role_id(self, name: str) -> str:
        row = self.db.execute(
            "SELECT id FROM roles WHERE name_key = ?", [name_key(name)]
        ).fetchone()
        if row is None:
            raise self._no_role(name)
        return str(row[0])

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
        user = User(
            str(uuid.uuid4()),
            self.domain,
            username,
            dict(claims),
            [],
            password_hash is not None,
            stamp,
            stamp,
        )
        self.db.table("users").insert(
            {
                "id": user.id,
                "username": username,
                "username_key": name_key(username),
                "claims": json.dumps(user.claims, ensure_ascii=False, sort_keys=True),
                "password_hash": password_hash,
                "created": stamp,
                "modified": stamp,
            }
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
            self.db.table("users").update(
                user.id,
                {
                    "claims": json.dumps(claims, ensure_ascii=False, sort_keys=True),
                    "modified": user.modified,
                },
            )
        return user

    def set_password_hash(self, username: str, password_hash: str) -> None:
        self.ensure_writable()
        self.db.table("users").update(
            self._user_id(username), {"password_hash": password_hash, "modified": now()}
        )

    def delete_user(self, username: str) -> User:
        self.ensure_writable()
        user = self.find_user(username)
        if user is None:
            raise self._no_user(username)
        self.db.execute("DELETE FROM users WHERE id = ?", [user.id])
        return user

    def add_role(self, name: str) -> Role:
        self.ensure_writable()
        existing = self.find_role(name)
        if existing is not None:
            raise ConflictError(
                f"role {existing.qualified_name!r} already exists in the {self.domain} userstore"
            )
        stamp = now()
        role = Role(str(uuid.uuid4()), self.domain, name, 0, [], stamp, stamp)
        self.db.table("roles").insert(
            {
                "id": role.id,
                "name": name,
                "name_key": name_key(name),
                "created": stamp,
                "modified": stamp,
            }
        )
        return role

    def delete_role(self, name: str) -> Role:
        self.ensure_writable()
        role = self.find_role(name, with_members=True)
        if role is None:
            raise self._no_role(name)
        self.db.execute("DELETE FROM roles WHERE id = ?", [role.id])
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
        self.db.table("roles").update(
            role.id, {"name": new_name, "name_key": name_key(new_name), "modified": role.modified}
        )
        return role

    def assign(self, role: str, usernames: Sequence[str]) -> list[str]:
        self.ensure_writable()
        role_id = self._role_id(role)
        added = []
        for username in usernames:
            user_id = self._user_id(username)
            cur = self.db.execute(
                "INSERT OR IGNORE INTO user_roles (user_id, role_id) VALUES (?, ?)",
                [user_id, role_id],
            )
            if cur.rowcount:
                added.append(username)
        return added

    def unassign(self, role: str, usernames: Sequence[str]) -> list[str]:
        self.ensure_writable()
        role_id = self._role_id(role)
        removed = []
        for username in usernames:
            user_id = self._user_id(username)
            cur = self.db.execute(
                "DELETE FROM user_roles WHERE user_id = ? AND role_id = ?", [user_id, role_id]
            )
            if cur.rowcount:
                removed.append(username)
        return removed
