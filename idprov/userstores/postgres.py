"""A userstore in a PostgreSQL database (``type: postgres``): WSO2's JDBC userstore.

The tables and every query are :mod:`idprov.userstores.sql`'s, shared with SQLite;
this module connects through :class:`idprov.pg.PgSession` (psycopg 3, imported only
when such a store is opened; it turns the driver's errors into idprov's), runs the
migrations of its ``schema`` under an advisory lock (several idprov processes may
start at once), and writes the new rows of a bulk import with ``COPY``.

Names stay case-insensitive through the ``*_key`` columns, which sort with the "C"
collation: pages come in the same order as from SQLite, whatever the database's
locale. Claim filters use ``jsonb`` containment, which a GIN index serves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

from idprov.config.claims import ClaimDefinition
from idprov.config.postgres import PostgresUserstoreConfig
from idprov.model import ClaimValue, new_id
from idprov.pg import PgSession
from idprov.statedb import Cursor
from idprov.userstores import sql_read
from idprov.userstores.sql import SqlUserStore
from idprov.userstores.sql_read import name_key

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_users_roles",
        [
            "CREATE TABLE users (id text PRIMARY KEY, username text NOT NULL,"
            ' username_key text COLLATE "C" NOT NULL UNIQUE, claims jsonb NOT NULL,'
            " password_hash text, created timestamptz NOT NULL, modified timestamptz NOT NULL)",
            "CREATE INDEX users_claims ON users USING gin (claims jsonb_path_ops)",
            "CREATE TABLE roles (id text PRIMARY KEY, name text NOT NULL,"
            ' name_key text COLLATE "C" NOT NULL UNIQUE,'
            " created timestamptz NOT NULL, modified timestamptz NOT NULL)",
            "CREATE TABLE user_roles ("
            " user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
            " role_id text NOT NULL REFERENCES roles(id) ON DELETE CASCADE,"
            " PRIMARY KEY (user_id, role_id))",
            "CREATE INDEX user_roles_role ON user_roles (role_id, user_id)",
        ],
    )
]
MIGRATIONS.append(
    (
        "0002_filter_indexes",
        [
            "CREATE INDEX users_modified ON users (modified)",
            "CREATE INDEX users_claim_email ON users (lower(claims->>'email'))",
            "CREATE INDEX users_claim_emails ON users (jsonb_typeof(claims->'emails'))",
        ],
    )
)
MIGRATIONS.append(
    (
        "0003_claim_indexes",
        [
            "CREATE INDEX users_claim_manager ON users (lower(claims->>'manager'))",
            "CREATE INDEX users_claim_home_email ON users (lower(claims->>'home_email'))",
        ],
    )
)
"""Applied in order, once each, per schema; recorded in its ``idprov_migrations``."""


class PostgresUserStore(SqlUserStore):
    """Users and roles of one domain in one schema of a PostgreSQL database."""

    type: ClassVar[str] = "postgres"
    config: PostgresUserstoreConfig

    def __init__(
        self,
        config: PostgresUserstoreConfig,
        claims: Mapping[str, ClaimDefinition],
        session: PgSession | None = None,
    ):
        """``session``: one to use instead of a connection of its own (a state copy
        writes the store and the state in one transaction: :meth:`PgSession.sharing`)."""
        super().__init__(config, claims)
        label = f"userstore {self.domain}"
        self.session = session or PgSession(config, label, owner=label)
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.session.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.session.transaction():
            yield

    def lock_user(self, username: str) -> None:
        self._execute("SELECT 1 FROM users WHERE username_key = ? FOR UPDATE", [name_key(username)])

    def lock_role(self, name: str) -> None:
        self._execute("SELECT 1 FROM roles WHERE name_key = ? FOR UPDATE", [name_key(name)])

    # ---- the dialect
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.session.execute(sql, params)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.session.executemany(sql, rows)

    def _claim_text(self, claim: str) -> str:
        return f"lower(users.claims->>'{claim}')"

    def _claim_held(self, claim: str) -> str:
        return f"jsonb_typeof(users.claims->'{claim}') IN ('array', 'string')"

    def _claim_elements(self, claim: str) -> tuple[str, str]:
        values = f"users.claims->'{claim}'"
        array = f"CASE WHEN jsonb_typeof({values}) = 'array' THEN {values} ELSE '[]' END"
        return f"jsonb_array_elements_text({array}) AS element(v)", "element.v"

    def _one_of(self, values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        for chunk in sql_read.chunks(values):
            yield "= ANY(?)", [chunk]

    def _claim_match(self, claim: str, value: str) -> tuple[str, list[Any]]:
        return (
            "(users.claims @> jsonb_build_object(?::text, ?::text)"
            " OR users.claims @> jsonb_build_object(?::text, jsonb_build_array(?::text)))",
            [claim, value, claim, value],
        )

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """A server-side cursor, fetched :data:`CHUNK` rows at a time (psycopg's
        ordinary cursor holds the whole result). ``WITH HOLD``: the connection is in
        autocommit, and the cursor outlives the statement's implicit transaction."""
        conn = self.session.connection()
        with self.session.translated():
            cursor = conn.cursor(f"idprov_list_{new_id()}", withhold=True)
            cursor.itersize = sql_read.CHUNK
            cursor.execute(self.session.sql(sql), list(params))
        return self._fetched(cursor)

    def _fetched(self, cursor: Any) -> Iterator[Sequence[Any]]:
        with self.session.translated(), cursor:
            yield from cursor

    def _load_claims(self, stored: Any) -> dict[str, ClaimValue]:
        return dict(stored)  # psycopg decodes jsonb already

    def _time(self, stored: Any) -> str:
        if isinstance(stored, datetime):
            text = stored.astimezone(UTC).isoformat(timespec="milliseconds")
            return text.replace("+00:00", "Z")
        return str(stored)

    def _copy(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.session.translated(), self.session.connection().cursor() as cur:
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def _insert_users(self, rows: Sequence[tuple[Any, ...]]) -> None:
        columns = "id, username, username_key, claims, password_hash, created, modified"
        self._copy("users", columns, rows)

    def _insert_memberships(self, pairs: Sequence[tuple[str, str]]) -> None:
        keys = sorted({key for _, key in pairs})
        found = self._execute("SELECT name_key, id FROM roles WHERE name_key = ANY(?)", [keys])
        role_ids = dict(found.fetchall())
        rows = [(user, role_ids[key]) for user, key in pairs if key in role_ids]
        self._copy("user_roles", "user_id, role_id", rows)

    # ---- migrations
    def _migrate(self) -> None:
        """Apply what :data:`MIGRATIONS` the schema lacks (see :meth:`PgSession.migrate`)."""
        steps = [(name, partial(self._run_all, sql)) for name, sql in MIGRATIONS]
        self.session.migrate("userstore", steps)

    def _run_all(self, statements: Sequence[str]) -> None:
        for statement in statements:
            self._execute(statement)
