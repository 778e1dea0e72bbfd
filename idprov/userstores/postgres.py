"""A userstore in a PostgreSQL database (``type: postgres``): WSO2's JDBC userstore.

The tables and every query are :mod:`idprov.userstores.sql`'s, shared with SQLite;
this module connects (psycopg 3, imported only when such a store is opened), runs the
migrations of its ``schema`` under an advisory lock (several idprov processes may
start at once), turns the driver's errors into idprov's, and writes the new rows of
a bulk import with ``COPY``.

Names stay case-insensitive through the ``*_key`` columns, which sort with the "C"
collation: pages come in the same order as from SQLite, whatever the database's
locale. Claim filters use ``jsonb`` containment, which a GIN index serves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from idprov.config.claims import ClaimDefinition
from idprov.config.postgres import PostgresUserstoreConfig
from idprov.db import now
from idprov.errors import ConfigError, ConflictError, IdprovError, StoreError
from idprov.model import ClaimValue
from idprov.userstores.sql import Cursor, SqlUserStore

if TYPE_CHECKING:
    import psycopg

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
"""Applied in order, once each, per schema; recorded in its ``idprov_migrations``."""

CREDENTIAL_FAILURES = ("password authentication failed", "no password supplied", 'role "')
TLS_FAILURES = ("SSL", "certificate", "sslmode")


class PostgresUserStore(SqlUserStore):
    """Users and roles of one domain in one schema of a PostgreSQL database."""

    type: ClassVar[str] = "postgres"
    config: PostgresUserstoreConfig

    def __init__(self, config: PostgresUserstoreConfig, claims: Mapping[str, ClaimDefinition]):
        super().__init__(config, claims)
        self._conn: psycopg.Connection[Any] | None = None
        self._sql: dict[str, str] = {}
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # ---- the connection
    def _where(self) -> str:
        return f"userstore {self.domain} (PostgreSQL at {self.config.where})"

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        cfg = self.config
        password = cfg.password.reveal() if cfg.password else None
        verify = cfg.sslmode.startswith("verify")
        root = cfg.ca_file or ("system" if verify else None)  # None: left out
        try:
            return psycopg.connect(
                host=cfg.host,
                port=cfg.port,
                dbname=cfg.database,
                user=cfg.user,
                password=password,
                sslmode=cfg.sslmode,
                sslrootcert=root,
                connect_timeout=cfg.connect_timeout,
                application_name="idprov",
                options=f"-c search_path={cfg.schema}",
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise self._cannot_connect(_reason(exc, password)) from None

    def _cannot_connect(self, reason: str) -> IdprovError:
        cfg = self.config
        message = f"{self._where()}: cannot connect: {reason}"
        if any(s in reason for s in CREDENTIAL_FAILURES):
            secret = cfg.password.ref if cfg.password else "none set"
            return StoreError(
                message,
                hint=f"check the user in url and the password secret ({secret}) of userstore "
                f"{self.domain}",
            )
        if any(s in reason for s in TLS_FAILURES):
            return ConfigError(
                message,
                hint=f"check ca_file ({cfg.ca_file or 'none: the system CAs'}) and that the "
                "server's certificate names the host in url; sslmode: disable only for a "
                "server on this machine",
            )
        return StoreError(
            message,
            hint=f"check that PostgreSQL runs at {cfg.host}:{cfg.port} and accepts "
            "connections from here (listen_addresses, pg_hba.conf, firewalls)",
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _failed(self, exc: Exception) -> IdprovError:
        """The idprov error for a driver error while the connection was open."""
        import psycopg

        password = self.config.password.reveal() if self.config.password else None
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return ConflictError(
                f"{self._where()}: {_reason(exc, password)}",
                hint="another writer added the same name just now; re-run the command",
            )
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
            return StoreError(
                f"{self._where()}: the connection was lost ({_reason(exc, password)}); "
                "the server rolled back the transaction that was open: nothing of it was "
                "written",
                hint="re-run the command when the database answers again",
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            cfg = self.config
            return StoreError(
                f"{self._where()}: {_reason(exc, password)}",
                hint=f"grant {cfg.user} CREATE on schema {cfg.schema} (for the first run, "
                "which creates the tables), and SELECT, INSERT, UPDATE, DELETE on its tables",
            )
        return StoreError(f"{self._where()}: {_reason(exc, password)}")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._translated(), ExitStack() as stack:
            stack.push(self._begin().__exit__)
            yield

    def _begin(self) -> AbstractContextManager[Any]:
        """A transaction (a savepoint inside one) begun on the connection. A connection
        found dropped at ``BEGIN``, outside any transaction, is reopened once."""
        import psycopg

        conn = self._connection()
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            return _entered(conn.transaction())
        except psycopg.OperationalError:
            if not (idle and conn.broken):
                raise
        self._conn = None
        return _entered(self._connection().transaction())

    # ---- the dialect
    def _postgres_sql(self, sql: str) -> str:
        """``?`` parameters become psycopg's ``%s`` (and a literal ``%`` is doubled)."""
        if sql not in self._sql:
            self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return self._sql[sql]

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement. A read outside any transaction that finds the connection
        dropped (a restarted server, a failover) runs again once on a new one."""
        import psycopg

        statement, values = self._postgres_sql(sql), list(params)
        with self._translated():
            conn = self._connection()
            idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            try:
                return conn.execute(statement, values)
            except psycopg.OperationalError:
                if not (idle and conn.broken and sql.startswith("SELECT")):
                    raise
            self._conn = None
            return self._connection().execute(statement, values)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._translated(), self._connection().cursor() as cur:
            cur.executemany(self._postgres_sql(sql), rows)

    def _claim_match(self, claim: str, value: str) -> tuple[str, list[Any]]:
        return (
            "(users.claims @> jsonb_build_object(?::text, ?::text)"
            " OR users.claims @> jsonb_build_object(?::text, jsonb_build_array(?::text)))",
            [claim, value, claim, value],
        )

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
        with self._translated(), self._connection().cursor() as cur:
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
        """Create the schema and apply what :data:`MIGRATIONS` it lacks, each in one
        transaction with its record, under an advisory lock per schema."""
        schema = self.config.schema
        with self.transaction():
            self._execute("SELECT pg_advisory_xact_lock(hashtext(?))", [f"idprov:{schema}"])
            if not self._execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = ?", [schema]
            ).fetchone():
                self._execute(f"CREATE SCHEMA {schema}")  # a checked name: see the config
            self._execute(
                "CREATE TABLE IF NOT EXISTS idprov_migrations (namespace text NOT NULL,"
                " name text NOT NULL, applied_at text NOT NULL, PRIMARY KEY (namespace, name))"
            )
            rows = self._execute(
                "SELECT name FROM idprov_migrations WHERE namespace = 'userstore'"
            ).fetchall()
            applied = {r[0] for r in rows}
            for name, statements in MIGRATIONS:
                if name not in applied:
                    for statement in statements:
                        self._execute(statement)
                    self._execute(
                        "INSERT INTO idprov_migrations VALUES ('userstore', ?, ?)", [name, now()]
                    )


def _entered(transaction: AbstractContextManager[Any]) -> AbstractContextManager[Any]:
    """``transaction``, entered (its ``__exit__`` is the caller's to call)."""
    transaction.__enter__()
    return transaction


def _reason(exc: Exception, password: str | None) -> str:
    """The driver's message on one line. libpq never quotes the password; should one
    appear anyway it is hidden (from 8 characters on: hiding a short one would mangle
    host and user names that merely contain it)."""
    text = " ".join(str(exc).split())
    text = text.removeprefix("connection failed: ")
    if password and len(password) >= 8:
        text = text.replace(password, "***")
    return text
