"""The reads of the SQL userstores (:class:`SqlReader`): the dialect a database
supplies, and every query that reads users and roles. The writes are
:class:`~idprov.userstores.sql.SqlUserStore`'s, on top of these; the tables are
described in :mod:`idprov.userstores.sql`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, ClassVar

from idprov.errors import NotFoundError
from idprov.model import ClaimValue, Page, PageStream, Role, User, UserQuery
from idprov.statedb import Cursor
from idprov.userstores.base import JsonClaims, UserStore
from idprov.userstores.sql_filters import ConditionSql

CHUNK = 500
"""Ids per ``IN (...)`` list: below SQLite's old 999-parameter limit."""

USER_COLUMNS = "id, username, claims, password_hash, created, modified"
ROLE_COLUMNS = (
    "id, name, created, modified,"
    " (SELECT count(*) FROM user_roles WHERE role_id = roles.id) AS members"
)


def name_key(name: str) -> str:
    """The case-insensitive key of a user or role name."""
    return name.casefold()


def claims_json(claims: Mapping[str, ClaimValue]) -> str:
    """Claims as stored: one JSON object, keys sorted, non-ASCII kept (the bytes of
    ``json.dumps(claims, ensure_ascii=False, sort_keys=True)``)."""
    return "".join(_claims_encoder(claims, 0))


def _make_claims_encoder() -> Callable[[Any, int], Any]:
    """The C encoder of :func:`claims_json`, made once: ``json.dumps`` with these
    options makes an encoder per call, 70% of the time of a claims digest in a sync."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python implementation)
        encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True)
        return lambda value, _: [encoder.encode(value)]
    refuse = json.JSONEncoder().default
    encode = json.encoder.encode_basestring
    return make(None, refuse, encode, None, ": ", ", ", True, False, True)


_claims_encoder = _make_claims_encoder()


def chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


class SqlReader(UserStore):
    """Reads of users and roles of one domain in the SQL tables (see
    :mod:`~idprov.userstores.sql`)."""

    no_limit: ClassVar[int | None] = None
    """The ``LIMIT`` parameter that means "no limit" (SQLite: -1)."""

    # ---- the dialect
    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement with ``?`` parameters; errors become idprov's."""

    @abstractmethod
    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows``."""

    @abstractmethod
    def _claim_match(self, claim: str, value: str) -> tuple[str, list[Any]]:
        """SQL true when claim ``claim`` of ``users`` is ``value`` or a list holding it."""

    @abstractmethod
    def _claim_text(self, claim: str) -> str:
        """SQL: the lower-cased text of single-valued claim ``claim`` (a safe name)."""

    @abstractmethod
    def _claim_elements(self, claim: str) -> tuple[str, str]:
        """SQL: a FROM source over each value of multi-valued claim ``claim``, and its
        column holding the value."""

    @abstractmethod
    def _claim_held(self, claim: str) -> str:
        """SQL: true when a user has claim ``claim`` (an index can answer it)."""

    def _one_of(self, values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        """Per :data:`CHUNK` of ``values``: SQL true when the expression before it is one
        of them, and its parameters (PostgreSQL plans ``= ANY(?)`` of an array faster)."""
        for chunk in chunks(values):
            yield f"IN ({','.join('?' * len(chunk))})", chunk

    def _condition_sql(self) -> ConditionSql:
        return ConditionSql(self.claims, self._claim_text, self._claim_elements, self._claim_held)

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterable[Sequence[Any]]:
        """A listing's rows, read as iterated (a driver reading all first overrides)."""
        return self._execute(sql, params)

    def _load_claims(self, stored: Any) -> dict[str, ClaimValue]:
        claims: dict[str, ClaimValue] = json.loads(stored)
        return claims

    def _time(self, stored: Any) -> str:
        return str(stored)

    # ---- reads
    def _user(self, row: Sequence[Any], roles: list[str], as_text: bool = False) -> User:
        """The user of ``row``; ``as_text``: claims stored as text stay text until read."""
        id_, username, claims, pw, created, modified = row
        as_text = as_text and isinstance(claims, str)
        return User(
            id=id_,
            domain=self.domain,
            username=username,
            claims=JsonClaims(claims) if as_text else self._load_claims(claims),
            roles=roles,
            has_password=pw is not None,
            created=self._time(created),
            modified=self._time(modified),
        )

    def _role(self, row: Sequence[Any], members: list[str] | None = None) -> Role:
        id_, name, created, modified, count = row
        return Role(
            id_, self.domain, name, count, members, self._time(created), self._time(modified)
        )

    def _users_where(self, column: str, values: Sequence[str]) -> list[User]:
        """Users whose ``column`` is one of ``values``, with their roles."""
        found: list[User] = []
        for test, args in self._one_of(values):
            sql = f"SELECT {USER_COLUMNS} FROM users WHERE {column} {test}"
            found += self._users_of(self._execute(sql, args))
        return found

    def find_user(self, username: str) -> User | None:
        found = self._users_where("username_key", [name_key(username)])
        return found[0] if found else None

    def find_user_by_id(self, user_id: str) -> User | None:
        found = self._users_where("id", [user_id])
        return found[0] if found else None

    def find_users_by_id(self, user_ids: Sequence[str]) -> dict[str, User]:
        return {u.id: u for u in self._users_where("id", user_ids)}

    def find_users(self, usernames: Sequence[str]) -> dict[str, User]:
        keys = [name_key(n) for n in usernames]
        return {name_key(u.username): u for u in self._users_where("username_key", keys)}

    def _roles_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for test, args in self._one_of(user_ids):
            rows = self._execute(
                "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
                f" WHERE ur.user_id {test} ORDER BY r.name_key",
                args,
            ).fetchall()
            for user_id, role in rows:
                out.setdefault(user_id, []).append(role)
        return out

    def _user_filter(self, query: UserQuery) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for claim, value in query.claims.items():
            sql, more = self._claim_match(claim, value)
            where.append(sql)
            params += more
        if query.role is not None:
            where.append(
                "id IN (SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
                " WHERE r.name_key = ?)"
            )
            params.append(name_key(query.role))
        if query.where is not None:
            condition = self._condition_sql().sql(query.where)
            if condition is not None:
                where.append(condition[0])
                params += condition[1]
        if query.username_prefix:
            prefix = name_key(query.username_prefix)  # casefolding can change the length
            where.append("substr(username_key, 1, CAST(? AS INTEGER)) = ?")
            params += [len(prefix), prefix]
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def list_users(self, query: UserQuery) -> Page:
        return self.stream_users(query).page()

    def stream_users(self, query: UserQuery) -> PageStream:
        """The total now; the users as they are read, :data:`CHUNK` rows at a time,
        each batch's roles in one query."""
        where, params = self._user_filter(query)
        total = self._execute(f"SELECT count(*) FROM users{where}", params).fetchone()[0]
        limit = self.no_limit if query.limit is None else query.limit
        # With a condition, the rows it finds are sorted, not the name index walked in
        # order (a planner without statistics would walk all of it to skip a sort).
        order = "username_key || ''" if query.where is not None else "username_key"
        rows = self._stream(
            f"SELECT {USER_COLUMNS} FROM users{where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, query.offset],
        )
        domains = [self.domain] if total > query.offset and query.limit != 0 else []
        return PageStream(self._users_of(rows), total, query.offset, query.limit, domains)

    def _users_of(self, rows: Iterable[Sequence[Any]]) -> Iterator[User]:
        """Users of ``rows`` (:data:`USER_COLUMNS`), with their roles, a batch at a time."""
        for batch in self._batches_of(rows, CHUNK):
            yield from batch

    def _batches_of(
        self, rows: Iterable[Sequence[Any]], size: int, roles: bool = True, as_text: bool = False
    ) -> Iterator[list[User]]:
        """Users of ``rows`` in batches of ``size``, each batch's roles in one query
        (unless not ``roles``), claims stored as text kept as text if ``as_text``."""
        rows = iter(rows)
        while batch := list(islice(rows, size)):
            held = self._roles_of([r[0] for r in batch]) if roles else {}
            yield [self._user(row, held.get(row[0], []), as_text) for row in batch]

    def iter_users(self, batch: int = 1000, roles: bool = True) -> Iterator[list[User]]:
        rows = self._stream(f"SELECT {USER_COLUMNS} FROM users ORDER BY username_key", [])
        return self._batches_of(rows, batch, roles, as_text=True)

    def password_hash(self, username: str) -> str | None:
        row = self._execute(
            "SELECT password_hash FROM users WHERE username_key = ?", [name_key(username)]
        ).fetchone()
        if row is None:
            raise self._no_user(username)
        return None if row[0] is None else str(row[0])

    def _role_where(self, column: str, value: str) -> Role | None:
        row = self._execute(
            f"SELECT {ROLE_COLUMNS} FROM roles WHERE {column} = ?", [value]
        ).fetchone()
        return None if row is None else self._role(row)

    def find_role(self, name: str, with_members: bool = False) -> Role | None:
        role = self._role_where("name_key", name_key(name))
        if role is not None and with_members:
            role.members = [
                r[0]
                for r in self._execute(
                    "SELECT u.username FROM user_roles ur JOIN users u ON u.id = ur.user_id"
                    " WHERE ur.role_id = ? ORDER BY u.username_key",
                    [role.id],
                ).fetchall()
            ]
        return role

    def find_role_by_id(self, role_id: str) -> Role | None:
        return self._role_where("id", role_id)

    def role_member_ids(self, role_id: str) -> list[str]:
        rows = self._execute("SELECT user_id FROM user_roles WHERE role_id = ?", [role_id])
        return [r[0] for r in rows.fetchall()]

    def role_member_ids_among(self, role_id: str, user_ids: Sequence[str]) -> list[str]:
        found: set[str] = set()
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            rows = self._execute(
                "SELECT user_id FROM user_roles WHERE role_id = ?"
                f" AND user_id IN ({','.join('?' * len(chunk))})",
                [role_id, *chunk],
            )
            found.update(r[0] for r in rows.fetchall())
        return [user_id for user_id in user_ids if user_id in found]

    def list_roles(self, prefix: str | None = None) -> list[Role]:
        where, params = "", []
        if prefix:
            key = name_key(prefix)  # casefolding can change the length ('ß' -> 'ss')
            where = " WHERE substr(name_key, 1, CAST(? AS INTEGER)) = ?"
            params = [len(key), key]
        rows = self._execute(
            f"SELECT {ROLE_COLUMNS} FROM roles{where} ORDER BY name_key", params
        ).fetchall()
        return [self._role(r) for r in rows]

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

    def _id_of(self, table: str, column: str, name: str) -> str | None:
        row = self._execute(f"SELECT id FROM {table} WHERE {column} = ?", [name_key(name)])
        found = row.fetchone()
        return None if found is None else str(found[0])

    def _user_id(self, username: str) -> str:
        found = self._id_of("users", "username_key", username)
        if found is None:
            raise self._no_user(username)
        return found

    def _role_id(self, name: str) -> str:
        found = self._id_of("roles", "name_key", name)
        if found is None:
            raise self._no_role(name)
        return found
