"""idprov's own state database behind one small contract: SQLite or PostgreSQL.

The state (audit log, outbox, ledger, import journals, IdP health, serve tokens,
internal roles, SCIM externalIds, run locks) is read and written through a
:class:`StateDB`: statements with ``?`` parameters, ``transaction()``, migrations per
dialect, and the run lock of sync and import. Every query is written once, in SQL both
databases accept (``ON CONFLICT`` upserts, ``RETURNING``); only the tables' DDL differs,
in each module's migrations for ``sqlite`` and ``postgresql``.

- :class:`SqliteStateDB`, the embedded default: ``<data_dir>/idprov.db``, the same file
  and connection as the embedded PRIMARY userstore, so one transaction covers a local
  change and its records; one writer at a time.
- :class:`PostgresStateDB` (``state: {url: postgresql://...}``): shared by several
  ``idprov serve`` processes and outbox workers on one or several machines; workers
  claim outbox rows with ``FOR UPDATE SKIP LOCKED``, and the run lock is an advisory
  lock. psycopg is imported only when one is opened.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import sqlite3

    from idprov.config.models import Config
    from idprov.config.postgres import PostgresStateConfig
    from idprov.db import Database, DatabasePool
    from idprov.pg import PgSession

STATE_FILENAME = "idprov.db"
CLOCK_READ_SECONDS = 600.0
"""How often a process on a PostgreSQL state reads the server's clock again: hosts'
clocks drift apart (see :func:`idprov.db.clock`)."""


class Cursor(Protocol):
    """What both drivers' cursors give back."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


Migration = tuple[str, Callable[["StateDB"], None]]
Migrations = Mapping[str, Sequence[Migration]]
"""Per dialect (``sqlite``, ``postgresql``): named steps, applied in order, once each."""


class StateDB(ABC):
    """One connection to idprov's state database, for one thread of control."""

    dialect: ClassVar[str]
    claim_lock: ClassVar[str]
    """Appended to the ``SELECT`` that picks rows to claim: PostgreSQL locks them and
    skips rows another worker is claiming (``FOR UPDATE SKIP LOCKED``); SQLite has one
    writer at a time and needs nothing."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement with ``?`` parameters; errors become idprov's."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows``."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction; nested ones are savepoints. Rolled back on error."""

    @abstractmethod
    def migrate(self, namespace: str, migrations: Migrations) -> None:
        """Apply, once each and in order, this dialect's ``migrations`` of ``namespace``;
        several processes opening a new database at once apply them once."""

    @abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether the state has table ``name`` (a module's tables are made on its first
        use; a reader that may not make them, `config validate`, asks first)."""

    @abstractmethod
    def run_lock(self, command: str, wait: bool = False) -> AbstractContextManager[Any]:
        """One sync or import at a time on this state: raises LockedError naming the
        holder, or with ``wait`` queues behind it. Released however the holder ends."""

    def close(self) -> None:  # noqa: B027 - optional: the SQLite pool closes its own
        """Close the connection, if this object owns it."""

    def select_among(
        self, sql: str, params: Sequence[Any], values: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of ``sql``, which ends in a column name to compare with ``IN``, for
        every one of ``values``: one statement per :data:`IN_CHUNK` of them (after
        ``params``), so that no statement passes the dialect's parameter limit."""
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(values), IN_CHUNK):
            chunk = list(values[start : start + IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            cursor = self.execute(f"{sql} IN ({marks})", [*params, *chunk])
            found += [tuple(r) for r in cursor.fetchall()]
        return found


IN_CHUNK = 500
"""Values per ``IN (...)`` list (:meth:`StateDB.select_among`)."""


class SqliteStateDB(StateDB):
    """The state in an SQLite file, on a connection of the service's pool."""

    dialect: ClassVar[str] = "sqlite"
    claim_lock: ClassVar[str] = ""

    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        """The connection's :class:`~idprov.db.Database` (the embedded userstore shares it)."""
        self.path = path

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, which an SQLite userstore in the same file shares."""
        return self.db.conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(sql, list(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.conn.executemany(sql, rows)

    def transaction(self) -> AbstractContextManager[None]:
        from idprov.db import write_transaction

        return write_transaction(self.db)

    def migrate(self, namespace: str, migrations: Migrations) -> None:
        from idprov.db import migrate

        migrate(self.db, namespace, [(n, self._step(f)) for n, f in migrations[self.dialect]])

    def has_table(self, name: str) -> bool:
        return self.db.has_table(name)

    def _step(self, apply: Callable[[StateDB], None]) -> Callable[[object], None]:
        """``apply`` as idprov.db.migrate calls it: with this object, not the Database."""
        return lambda _: apply(self)

    def run_lock(self, command: str, wait: bool = False) -> AbstractContextManager[Any]:
        from idprov.provisioning.lock import RunLock

        return RunLock(self.path.parent, command, wait)


class PostgresStateDB(StateDB):
    """The state in a schema of a PostgreSQL database, shared by every process."""

    dialect: ClassVar[str] = "postgresql"
    claim_lock: ClassVar[str] = " FOR UPDATE SKIP LOCKED"

    def __init__(self, config: PostgresStateConfig, session: PgSession | None = None) -> None:
        """``session``: one to use instead of a connection of its own (a state copy
        writes the state and a userstore in one transaction)."""
        from idprov.pg import PgSession

        self.config = config
        self.session = session or PgSession(config, "the state", owner="state")
        self._clock_read: float | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self._read_clock()
        return self.session.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._read_clock()
        self.session.executemany(sql, rows)

    def transaction(self) -> AbstractContextManager[None]:
        self._read_clock()
        return self.session.transaction()

    def _read_clock(self) -> None:
        """Time what the state records by the server's clock (:func:`idprov.db.clock`):
        its offset from this host's is read when the state is first used, and every
        :data:`CLOCK_READ_SECONDS` after. Hosts sharing the state then agree on when a
        lease ends and a row is due, whatever their own clocks say."""
        import time

        from idprov.db import set_clock_offset

        moment = time.monotonic()
        if self._clock_read is not None and moment - self._clock_read < CLOCK_READ_SECONDS:
            return
        self._clock_read = moment
        set_clock_offset(server_offset(self.session))

    def migrate(self, namespace: str, migrations: Migrations) -> None:
        steps = [(name, partial(apply, self)) for name, apply in migrations[self.dialect]]
        self.session.migrate(namespace, steps)

    def has_table(self, name: str) -> bool:
        return self.session.has_table(name)

    def run_lock(self, command: str, wait: bool = False) -> AbstractContextManager[Any]:
        from idprov.provisioning.lock import AdvisoryRunLock

        return AdvisoryRunLock(self.config, command, wait)

    def close(self) -> None:
        self.session.close()


def server_offset(session: PgSession) -> float:
    """Seconds the PostgreSQL server's clock is ahead of this host's: of three reads,
    the one answered fastest, against the middle of its round trip."""
    from datetime import UTC, datetime

    best: tuple[float, float] | None = None
    for _ in range(3):
        before = datetime.now(UTC)
        row = session.execute("SELECT clock_timestamp()").fetchone()
        after = datetime.now(UTC)
        trip = (after - before).total_seconds()
        assert row is not None
        offset = (row[0] - (before + (after - before) / 2)).total_seconds()
        if best is None or trip < best[0]:
            best = (trip, offset)
    assert best is not None
    return best[1]


def open_state_db(config: Config, pool: DatabasePool) -> StateDB:
    """The state database ``config`` names: PostgreSQL when ``state.url`` is set, else
    ``<data_dir>/idprov.db`` from ``pool`` (shared with the embedded userstore)."""
    if config.state is not None:
        from idprov.config.postgres import PostgresStateConfig

        assert isinstance(config.state, PostgresStateConfig)
        return PostgresStateDB(config.state)
    path = Path(config.data_dir or ".") / STATE_FILENAME
    return SqliteStateDB(pool.get(path), path)


def state_exists(config: Config) -> bool:
    """Whether the state ``config`` names has been made (by a command that used it):
    the SQLite file, or the PostgreSQL schema with its ``idprov_migrations`` table (one
    catalog query). A check that must not write (``config validate``) asks first:
    opening the state makes it."""
    if config.state is None:
        return (Path(config.data_dir or ".") / STATE_FILENAME).exists()
    from idprov.config.postgres import PostgresStateConfig
    from idprov.pg import PgSession

    assert isinstance(config.state, PostgresStateConfig)
    session = PgSession(config.state, "the state", "state")
    try:
        return session.has_table("idprov_migrations")
    finally:
        session.close()


def ddl(*statements: str) -> Callable[[StateDB], None]:
    """A migration step that runs ``statements`` in order."""

    def apply(db: StateDB) -> None:
        for statement in statements:
            db.execute(statement)

    return apply
