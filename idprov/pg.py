"""One PostgreSQL connection as idprov uses it, for the PostgreSQL userstore and the
PostgreSQL state database alike.

psycopg 3 is imported here only, and only when a session connects. A
:class:`PgSession` connects with a :class:`~idprov.config.postgres.PostgresConnection`'s
settings, runs SQL written with ``?`` parameters, opens transactions (a savepoint
inside one), and turns the driver's errors into idprov's: they name the host, the
database and the user, never the password. A connection found dropped outside any
transaction (a restarted server, a failover) is reopened once, for a read or at
``BEGIN``; inside a transaction it never is: the server rolled that transaction back,
and the error says so.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from idprov.db import needs_upgrade_here, now, pending_migrations
from idprov.errors import ConfigError, ConflictError, IdprovError, StoreError

_quiet = logging.getLogger("psycopg")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False
"""psycopg logs what it ignores while a connection is lost ("error ignored in rollback
of <psycopg.Transaction ...>") to stderr, ahead of idprov's own one-line error, which
says what happened: a cron job's stderr is meant to be one JSON line per error."""

if TYPE_CHECKING:
    import psycopg

    from idprov.config.postgres import PostgresConnection

CREDENTIAL_FAILURES = ("password authentication failed", "no password supplied", 'role "')
TLS_FAILURES = ("SSL", "certificate", "sslmode")


class DatabaseGone(StoreError):
    """The database went away: it could not be reached, or the connection was lost
    (``rolled_back``: the server rolled back the transaction that was open). What was
    committed before stays committed: the command's error says what that was, and
    what finishes it (:func:`idprov.cli.common.as_idprov_error`)."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None,
        reason: str,
        rolled_back: bool,
        unknown: bool = False,
        committed_before: tuple[str, ...] = (),
    ):
        super().__init__(message, hint=hint)
        self.reason = reason
        """What happened, without what it means for the command (``<where>: cannot
        connect: <why>``)."""
        self.rolled_back = rolled_back
        self.unknown = unknown
        """The connection was lost as its transaction was committing (COMMIT sent, its
        answer never came): the server may have made the change, or not."""
        self.committed_before = committed_before
        """With ``unknown``: the other databases (``where``) that committed their part
        of the same change during that transaction (a PostgreSQL userstore, on its own
        connection, commits just before the state): their part is made."""


class _Commits(threading.local):
    """The transactions this thread committed lately, numbered (a few: a change opens
    one per database), to say which databases made their part of a change whose last
    COMMIT got no answer (:attr:`DatabaseGone.committed_before`)."""

    def __init__(self) -> None:
        self.seq = 0
        self.log: deque[tuple[int, str]] = deque(maxlen=32)

    def add(self, where: str) -> None:
        self.seq += 1
        self.log.append((self.seq, where))

    def since(self, mark: int, own: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w for s, w in self.log if s > mark and w != own))


_COMMITS = _Commits()


class PgSession:
    """A connection to the database ``config`` names, opened on first use.

    ``label`` says in messages what the database holds ("userstore PG", "the state"),
    ``owner`` in which configuration section its keys are ("userstore PG", "state").
    """

    def __init__(self, config: PostgresConnection, label: str, owner: str) -> None:
        self.config = config
        self.label = label
        self.owner = owner
        self._conn: psycopg.Connection[Any] | None = None
        self._sql: dict[str, str] = {}
        self._recorded: set[tuple[str, str]] | None = None
        """The schema's ``idprov_migrations`` as :meth:`migrate` last read them."""

    @property
    def where(self) -> str:
        return f"{self.label} (PostgreSQL at {self.config.where})"

    # ---- connecting
    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection, autocommit (``transaction()`` opens transactions)."""
        import psycopg

        cfg = self.config
        password = self.password()
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
            raise self.cannot_connect(reason(exc, password)) from None

    def password(self) -> str | None:
        return self.config.password.reveal() if self.config.password else None

    def cannot_connect(self, why: str) -> IdprovError:
        cfg = self.config
        message = f"{self.where}: cannot connect: {why}"
        if any(s in why for s in CREDENTIAL_FAILURES):
            secret = cfg.password.ref if cfg.password else "none set"
            return StoreError(
                message,
                hint=f"check the user in url and the password secret ({secret}) of {self.owner}",
            )
        if any(s in why for s in TLS_FAILURES):
            return ConfigError(
                message,
                hint=f"check ca_file ({cfg.ca_file or 'none: the system CAs'}) and that the "
                "server's certificate names the host in url; sslmode: disable only for a "
                "server on this machine",
            )
        return DatabaseGone(
            message,
            hint=f"check that PostgreSQL runs at {cfg.host}:{cfg.port} and accepts "
            "connections from here (listen_addresses, pg_hba.conf, firewalls)",
            reason=message,
            rolled_back=False,
        )

    def sharing(self, config: PostgresConnection, label: str, owner: str) -> PgSession:
        """A session for ``config``, another schema of this session's database, on this
        session's connection: its statements run in this session's transactions (one
        transaction for both). The connection's ``search_path`` is this session's: set
        it (``SET LOCAL search_path``) before statements that name tables unqualified."""
        shared = PgSession(config, label, owner)
        shared._conn = self.connection()
        return shared

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ---- errors
    def failed(self, exc: Exception, committing: int | None = None) -> IdprovError:
        """The idprov error for a driver error while the connection was open
        (``committing``: raised by the COMMIT of a transaction begun when this thread's
        commits were at that number)."""
        import psycopg

        why = reason(exc, self.password())
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return ConflictError(
                f"{self.where}: {why}",
                hint="another writer added the same name just now; re-run the command",
            )
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
            if committing is not None:
                before = _COMMITS.since(committing, self.where)
                made = "".join(f"; {where} committed its part before" for where in before)
                return DatabaseGone(
                    f"{self.where}: the connection was lost as the change was committing "
                    f"({why}): it may have been made{made}",
                    hint="check whether it was made (`idprov log`) before running it again",
                    reason=f"{self.where}: the connection was lost ({why})",
                    rolled_back=False,
                    unknown=True,
                    committed_before=before,
                )
            return DatabaseGone(
                f"{self.where}: the connection was lost ({why}); the server rolled back the "
                "transaction that was open: nothing of it was written",
                hint="re-run the command when the database answers again",
                reason=f"{self.where}: the connection was lost ({why})",
                rolled_back=True,
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            cfg = self.config
            return StoreError(
                f"{self.where}: {why}",
                hint=f"grant {cfg.user} CREATE on schema {cfg.schema} (for the first run, "
                "which creates the tables), and SELECT, INSERT, UPDATE, DELETE on its tables",
            )
        return StoreError(f"{self.where}: {why}")

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Driver errors raised inside become idprov's."""
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise self.failed(exc) from None

    # ---- transactions and statements
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; a savepoint when one is open already."""
        with self.translated(), ExitStack() as stack:
            outer = not self.in_transaction
            exit = self._begin().__exit__
            stack.push(self._committing(exit) if outer else exit)
            yield

    def _committing(self, exit: Callable[..., Any]) -> Callable[..., Any]:
        """``exit`` of an outermost transaction: a COMMIT that fails on a lost
        connection leaves the outcome unknown (:attr:`DatabaseGone.unknown`); one that
        succeeds is noted (:attr:`DatabaseGone.committed_before`)."""
        import psycopg

        begun = _COMMITS.seq

        def end(*exc: Any) -> Any:
            if exc[0] is not None:
                return exit(*exc)
            try:
                result = exit(*exc)
            except psycopg.Error as error:
                raise self.failed(error, committing=begun) from None
            _COMMITS.add(self.where)
            return result

        return end

    @property
    def in_transaction(self) -> bool:
        import psycopg

        conn = self._conn
        idle = psycopg.pq.TransactionStatus.IDLE
        return conn is not None and not conn.closed and conn.info.transaction_status != idle

    def _begin(self) -> AbstractContextManager[Any]:
        """A transaction begun on the connection. A connection found dropped at
        ``BEGIN``, outside any transaction, is reopened once."""
        import psycopg

        conn = self.connection()
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            return _entered(conn.transaction())
        except psycopg.OperationalError:
            if not (idle and conn.broken):
                raise
        self._conn = None
        return _entered(self.connection().transaction())

    def sql(self, sql: str) -> str:
        """``?`` parameters become psycopg's ``%s`` (and a literal ``%`` is doubled)."""
        if sql not in self._sql:
            self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return self._sql[sql]

    def has_table(self, name: str) -> bool:
        """Whether table ``name`` is in this session's schema (a checked name: see the
        config)."""
        found = self.execute("SELECT to_regclass(?)", [f"{self.config.schema}.{name}"])
        return found.fetchone() != (None,)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement. A read outside any transaction that finds the connection
        dropped runs again once on a new one."""
        import psycopg

        statement, values = self.sql(sql), list(params)
        with self.translated():
            conn = self.connection()
            idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            try:
                return conn.execute(statement, values)
            except psycopg.OperationalError:
                if not (idle and conn.broken and sql.lstrip().startswith("SELECT")):
                    raise
            self._conn = None
            return self.connection().execute(statement, values)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.translated(), self.connection().cursor() as cur:
            cur.executemany(self.sql(sql), rows)

    # ---- migrations
    def migrate(self, namespace: str, steps: Sequence[tuple[str, Callable[[], None]]]) -> None:
        """Create the schema if need be and apply, in order, the named ``steps`` of
        ``namespace`` it lacks, in one transaction with their records in
        ``idprov_migrations``, under an advisory lock per schema: processes starting
        together on a new database migrate it once. What the schema has applied is read
        once per session, and decided as for SQLite (:func:`~idprov.db.pending_migrations`:
        a schema a newer idprov upgraded is refused)."""
        recorded = self._recorded_migrations()
        names = [name for name, _ in steps]
        if not pending_migrations(recorded, namespace, names, "postgresql", lambda: self.where):
            return
        self._recorded = None
        try:
            self._apply(namespace, steps)
        except StoreError as exc:
            if not (recorded and _cannot_write(exc)):
                raise  # a new schema: the error's hint says what to grant
            error = needs_upgrade_here(recorded, namespace, names, "postgresql", self.where)
            raise error from exc

    def _recorded_migrations(self) -> set[tuple[str, str]]:
        """Every (namespace, name) in the schema's ``idprov_migrations`` (none: no
        table yet), read once (:meth:`migrate` forgets it when it applies some)."""
        if self._recorded is None:
            table = f"{self.config.schema}.idprov_migrations"  # a checked name: see the config
            rows: list[Any] = []
            if self.has_table("idprov_migrations"):
                rows = self.execute(f"SELECT namespace, name FROM {table}").fetchall()
            self._recorded = {(str(r[0]), str(r[1])) for r in rows}
        return self._recorded

    def _apply(self, namespace: str, steps: Sequence[tuple[str, Callable[[], None]]]) -> None:
        schema = self.config.schema
        with self.transaction():
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", [f"idprov:{schema}"])
            if not self.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = ?", [schema]
            ).fetchone():
                self.execute(f"CREATE SCHEMA {schema}")  # a checked name: see the config
            self.execute(
                "CREATE TABLE IF NOT EXISTS idprov_migrations (namespace text NOT NULL,"
                " name text NOT NULL, applied_at text NOT NULL, PRIMARY KEY (namespace, name))"
            )
            rows = self.execute(
                "SELECT name FROM idprov_migrations WHERE namespace = ?", [namespace]
            ).fetchall()
            applied = {r[0] for r in rows}
            for name, apply in steps:
                if name not in applied:
                    apply()
                    self.execute(
                        "INSERT INTO idprov_migrations VALUES (?, ?, ?)", [namespace, name, now()]
                    )


def _cannot_write(error: StoreError) -> bool:
    """Whether the server refused a migration's write: no privilege, or a read-only
    server or transaction (a standby, ``default_transaction_read_only``)."""
    import psycopg

    refused = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)
    return isinstance(error.__context__, refused)  # raised "from None": the context


def _entered(transaction: AbstractContextManager[Any]) -> AbstractContextManager[Any]:
    """``transaction``, entered (its ``__exit__`` is the caller's to call)."""
    transaction.__enter__()
    return transaction


def reason(exc: Exception, password: str | None) -> str:
    """The driver's message on one line, without the values of any row. The server's
    DETAIL and CONTEXT quote rows ("Failing row contains (...)", "Key (name)=(...)", a
    COPY's whole line: a password hash, personal data): of them only where a COPY
    stopped is kept ("COPY users, line 3"). libpq never quotes the password; should
    one appear anyway it is hidden (from 8 characters on: hiding a short one would
    mangle host and user names that merely contain it)."""
    text = _primary(exc)
    text = " ".join(text.split()).removeprefix("connection failed: ")
    if password and len(password) >= 8:
        text = text.replace(password, "***")
    return text


def _primary(exc: Exception) -> str:
    """The server's primary message (and where a COPY was), else the driver's text."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return str(exc)
    at = _COPY_LINE.search(getattr(diag, "context", None) or "")
    return f"{primary} (at {at.group(0)})" if at else str(primary)


_COPY_LINE = re.compile(r"COPY [^,\s]+, line \d+")
"""Where a COPY stopped, in the server's CONTEXT: what follows it is the row."""
