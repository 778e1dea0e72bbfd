"""Carry idprov's state and its SQLite userstores over to PostgreSQL, ids and all.

An installation that outgrows one machine moves from the embedded default
(``<data_dir>/idprov.db``: the state, and the embedded PRIMARY userstore) to
``state: {url: postgresql://...}`` with a ``type: postgres`` userstore for each SQLite
domain. Without its state the new installation would know nothing of what it did: the
ledger (which remote accounts are idprov's, and their ids: every target account would
look "not ours"), the outbox, the audit log, serve tokens, SCIM ``externalId``s,
internal roles, JIT links. Without the users' ids the ledger would name nobody.
:func:`copy_state` copies every row of every table as it is:

- tables are found, not listed: each table of the source file goes to the table of
  that name that the destination's migrations make, column by column. A table or a
  column the destination lacks makes the copy refuse, so that a table a later version
  adds is never left behind. Identity columns continue after the highest id the source
  ever gave (SQLite's ``sqlite_sequence``), so no id is used twice;
- the destination is written in one transaction per database (the state and a
  userstore in one database: one for both) and the rows of each table counted before
  it commits: a copy that dies leaves nothing, and runs again. The state's commits
  first; a later commit that fails says which parts were committed, and the re-run
  copies the userstore it left out, found empty beside the state this same source
  made (even once the new configuration has been used);
- a destination holding anything is refused, unless it is what an earlier copy of this
  same source wrote (the ``state.copy`` entry it adds to the audit log holds a digest
  of the source): then there is nothing to do;
- a userstore that is not copied (LDAP, PostgreSQL) must be the same store in both
  configurations: the copied ledger and memberships name its users;
- the source's run lock and the destination's are held throughout (no sync or import
  of either meanwhile), and each source file is read in a write transaction that
  commits nothing but the copy's record and fences: a command started meanwhile
  waits for the copy. An outbox worker
  holding rows, or another process with a source file open (``idprov serve``, a
  command waiting to write), found before the copy or just before its commit, makes
  it refuse;
- an error never quotes a row (PostgreSQL's CONTEXT of a failed COPY holds the
  password hash): it names the table and the line;
- once every commit succeeded, the SQLite state records where it went (its own
  ``state_copied`` table, never copied), and each SQLite file copied is fenced
  (:func:`~idprov.provisioning.state_moved.fence`), in the transaction that kept
  writers out: from then on a command of the old configuration refuses to use it (a
  read-only one warns), and no write reaches it, until :func:`forget_copy` (an
  administrator abandoning the move), which first looks whether the new state has
  moved on since the copy (:func:`since_copy`) and refuses if so.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from idprov.config.models import Config, SqliteUserstoreConfig, UserstoreConfig
from idprov.db import Database, DatabasePool, now
from idprov.errors import (
    ConfigError,
    ConflictError,
    IdprovError,
    LockedError,
    NotFoundError,
    StoreError,
)
from idprov.provisioning.state_moved import (
    COPIED_TABLE,
    RECORD_COLUMNS,
    StateCopied,
    copied_to,
    fence,
    fence_of,
    unfence,
)
from idprov.statedb import STATE_FILENAME, SqliteStateDB, StateDB

if TYPE_CHECKING:
    from idprov.config.postgres import (
        PostgresConnection,
        PostgresStateConfig,
        PostgresUserstoreConfig,
    )
    from idprov.pg import PgSession

USERSTORE_TABLES = ("users", "roles", "user_roles")
"""An SQL userstore's tables (:mod:`idprov.userstores.sql`), never state tables."""
OWN_TABLES = ("idprov_migrations", "run_locks")
"""Each database's own: its migrations, and who holds its run lock now."""
SOURCE_ONLY = ("idprov_migrations", COPIED_TABLE)
"""Tables of the SQLite state that are the file's own, never copied."""
MARKER = "state.copy"
"""The audit action a copy records in the destination, with the source's digest."""
COPIED, WOULD_COPY, ALREADY_COPIED = "copied", "would copy", "already copied"


@dataclass
class TableCount:
    table: str
    rows: int


@dataclass
class PartReport:
    """One SQLite database part (the state, or a userstore) and where it went."""

    name: str
    source: str
    destination: str
    status: str
    """``copied`` (and counted there), ``would copy`` (--dry-run), ``already copied``."""
    tables: list[TableCount]


@dataclass
class CopyReport:
    status: str
    """``copied``, ``would copy`` or ``already copied``: the whole copy's."""
    dry_run: bool
    parts: list[PartReport]
    kept: list[str] = field(default_factory=list)
    """Userstores not copied (LDAP, PostgreSQL): the new configuration names them."""
    next_steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_state_tables(db: StateDB) -> None:
    """Apply the migrations of every module that keeps tables in the state."""
    from idprov.provisioning import idp_rename
    from idprov.provisioning.external_ids import ExternalIds
    from idprov.provisioning.jit_links import JitLinks
    from idprov.provisioning.state import StateStore
    from idprov.provisioning.tokens import InboundTokens

    StateStore(db)
    InboundTokens(db)
    JitLinks(db)
    ExternalIds(db)
    idp_rename.migrate_tables(db)


# ---- the source: SQLite files


@dataclass
class Source:
    """One SQLite file's part: its tables (with their columns) and rows."""

    name: str
    db: Database
    path: Path
    tables: dict[str, list[str]]
    counts: dict[str, int] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    """Per table, the highest AUTOINCREMENT id ever given (``sqlite_sequence``)."""

    @property
    def has_rows(self) -> bool:
        return any(self.counts.values())

    def read(self) -> None:
        for table in self.tables:
            found = self.db.execute(f"SELECT count(*) FROM {q(table)}").fetchone()
            self.counts[table] = int(found[0])
        if self.db.has_table("sqlite_sequence"):
            found = self.db.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
            self.sequences = {str(n): int(s) for n, s in found if n in self.tables}

    def rows(self, table: str) -> Iterator[Sequence[Any]]:
        columns = ", ".join(map(q, self.tables[table]))
        yield from self.db.execute(f"SELECT {columns} FROM {q(table)}")


def q(name: str) -> str:
    """``name`` as a quoted SQL identifier (both databases)."""
    return '"' + name.replace('"', '""') + '"'


def sqlite_tables(db: Database, names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Table -> columns of ``db`` (``names`` only, else all but SQLite's own)."""
    found = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%'"
        " ESCAPE '\\' ORDER BY name"
    ).fetchall()
    wanted = [str(r[0]) for r in found if names is None or r[0] in names]
    return {
        t: [str(c[1]) for c in db.execute(f"PRAGMA table_info({q(t)})").fetchall()] for t in wanted
    }


# ---- the destination: PostgreSQL schemas


@dataclass
class Target:
    """Where one source part goes: a schema, and how its tables are made there."""

    source: Source
    config: PostgresConnection
    label: str
    """What it holds, in messages ("the state", "userstore PRIMARY")."""
    owner: str
    """Which configuration section its keys are in ("state", "userstore PRIMARY")."""
    make_tables: Callable[[PgSession], None]
    status: str = WOULD_COPY
    tables: dict[str, list[str]] = field(default_factory=dict)
    """Its tables in the destination (made by ``make_tables``), with their columns."""

    @property
    def where(self) -> str:
        return f"PostgreSQL at {self.config.where}, schema {self.config.schema}"

    @property
    def database(self) -> tuple[str, int, str, str]:
        return database_of(self.config)

    def table(self, name: str) -> str:
        return f"{q(self.config.schema)}.{q(name)}"


def pg_tables(session: PgSession, schema: str) -> dict[str, list[str]]:
    rows = session.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = ? ORDER BY table_name, ordinal_position",
        [schema],
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(str(table), []).append(str(column))
    return tables


def pg_count(session: PgSession, target: Target, table: str) -> int:
    found = session.execute(f"SELECT count(*) FROM {target.table(table)}").fetchall()
    return int(found[0][0])


# ---- the copy


def copy_state(
    source: Config, destination: Config, *, dry_run: bool = False, actor: str = "idprov"
) -> CopyReport:
    """Copy ``source``'s SQLite state and SQLite userstores to ``destination``'s
    PostgreSQL state and userstores of the same domains (see the module). Raises
    ConfigError for configurations that do not pair up, ConflictError for a
    destination holding something else, LockedError while a sync, import or outbox
    worker of either configuration runs or another process has a source file open,
    StoreError for a table the destination lacks. ``dry_run``: everything
    but the commit."""
    stores, kept = pair_userstores(source, destination)
    pool = DatabasePool()
    try:
        state_db = source_state(source, pool)
        with state_db.run_lock("state copy"), destination_lock(destination):
            no_drainers(state_db)
            parts = source_parts(source, state_db, pool, stores)
            paths = sorted({p.path for p in parts})
            nobody_else(paths)
            with ExitStack() as stack:
                for part in {id(p.db): p for p in parts}.values():
                    stack.enter_context(snapshot(part.db, part.path))
                nobody_else(paths)  # who opened a file before the lock, and waits
                for part in parts:
                    part.read()
                targets = make_targets(destination, parts, stores)
                copy_parts(targets, dry_run, actor)
                if not dry_run:
                    record_copy(state_db, destination, targets, source.source)
    finally:
        pool.close()
    return report(source, destination, targets, kept, dry_run)


def pair_userstores(
    source: Config, destination: Config
) -> tuple[dict[str, PostgresUserstoreConfig], list[str]]:
    """Each SQLite userstore domain of ``source`` -> its ``type: postgres`` userstore in
    ``destination``; and the other domains, which stay where they are."""
    if source.state is not None:
        raise ConfigError(
            "the current configuration keeps idprov's state in PostgreSQL already: there "
            "is no SQLite state to copy",
            location=source.source,
            hint="run `idprov state copy` with the configuration that uses the SQLite "
            "default (--config or IDPROV_CONFIG naming it)",
        )
    if destination.state is None:
        raise ConfigError(
            "names no state database to copy to",
            location=destination.source,
            hint="add state: {url: postgresql://USER@HOST/DATABASE, password: env:NAME} "
            "(README: Moving to PostgreSQL)",
        )
    stores: dict[str, PostgresUserstoreConfig] = {}
    kept: list[str] = []
    for store in source.userstores:
        target = _counterpart(store, destination)
        if target is None:
            kept.append(
                f"{store.domain} ({store.type}): not copied; the new configuration names "
                f"the same store ({store_where(store)}), used as it is"
            )
        else:
            stores[store.domain] = target
    _distinct_schemas(stores, destination)
    return stores, kept


def _counterpart(store: UserstoreConfig, destination: Config) -> PostgresUserstoreConfig | None:
    """The PostgreSQL userstore an SQLite one goes to; None for another type (LDAP,
    PostgreSQL), which the new configuration names too and which is not copied."""
    from idprov.config.postgres import PostgresUserstoreConfig

    target = next(
        (u for u in destination.userstores if u.domain.casefold() == store.domain.casefold()),
        None,
    )
    if target is None:
        raise ConfigError(
            f"names no userstore {store.domain}, which the current configuration has",
            location=destination.source,
            hint=f"declare {store.domain} there (type: postgres for an SQLite one): the "
            "ledger, roles and memberships name its users",
        )
    if not isinstance(store, SqliteUserstoreConfig):
        _same_store(store, target, destination)
        return None
    if not isinstance(target, PostgresUserstoreConfig):
        raise ConfigError(
            f"userstore {store.domain} is type {target.type}; the current one is SQLite, "
            "whose users are copied to PostgreSQL",
            location=destination.source,
            hint=f"give {store.domain} type: postgres (with url, password, schema)",
        )
    return target


def _same_store(store: UserstoreConfig, target: UserstoreConfig, destination: Config) -> None:
    """A userstore that is not copied must be the very store the current configuration
    names: the ledger, memberships and the copied state name its users, whom a store
    elsewhere lacks (the next sync would deprovision them)."""
    if store_identity(store) != store_identity(target):
        raise ConfigError(
            f"userstore {store.domain} is not copied, so it must stay the store it is: "
            f"the current configuration has {store_where(store)}, the new one "
            f"{store_where(target)}; its users would be missing there, and the next sync "
            "would deprovision them",
            location=destination.source,
            hint=f"point {store.domain} of the new configuration at {store_where(store)}; "
            "to move its users elsewhere, do that apart, before or after the copy",
        )


def store_identity(store: UserstoreConfig) -> tuple[Any, ...]:
    """What makes two userstore configurations the same store: the type and where
    its users are (PostgreSQL: server, database, schema; LDAP: server and bases)."""
    from idprov.config.ldap import LdapUserstoreConfig
    from idprov.config.postgres import PostgresUserstoreConfig

    if isinstance(store, PostgresUserstoreConfig):
        return (store.type, store.host.lower(), store.port, store.database, store.schema)
    if isinstance(store, LdapUserstoreConfig):
        url = urlsplit(store.url)
        default = 636 if url.scheme.lower() == "ldaps" else 389
        server = (url.scheme.lower(), (url.hostname or "").lower(), url.port or default)
        bases = (_dn(store.user_search_base), _dn(store.group_search_base))
        return (store.type, server, bases)
    return (store.type, getattr(store, "path", None))


def _dn(dn: str) -> str:
    return ",".join(part.strip() for part in dn.split(",")).casefold()


def store_where(store: UserstoreConfig) -> str:
    """Where a userstore's users are, in messages."""
    from idprov.config.ldap import LdapUserstoreConfig
    from idprov.config.postgres import PostgresUserstoreConfig

    if isinstance(store, PostgresUserstoreConfig):
        return f"{store.type} at {store.host}:{store.port}/{store.database}, schema {store.schema}"
    if isinstance(store, LdapUserstoreConfig):
        return (
            f"{store.type} at {store.url}, users under {store.user_search_base!r}, groups "
            f"under {store.group_search_base!r}"
        )
    return store.type


def _distinct_schemas(stores: dict[str, PostgresUserstoreConfig], destination: Config) -> None:
    seen: dict[tuple[Any, ...], str] = {}
    for domain, cfg in stores.items():
        key = (cfg.host, cfg.port, cfg.database, cfg.schema)
        if key in seen:
            raise ConfigError(
                f"userstores {seen[key]} and {domain} name the same schema {cfg.schema} of "
                f"{cfg.host}:{cfg.port}/{cfg.database}: their users would mix",
                location=destination.source,
                hint="give each domain a schema of its own",
            )
        seen[key] = domain


def source_state(source: Config, pool: DatabasePool) -> SqliteStateDB:
    """The SQLite state, with every module's tables (as any command would make them)."""
    path = Path(source.data_dir or ".") / STATE_FILENAME
    if not path.is_file():
        raise NotFoundError(
            f"there is no idprov state at {path}: nothing to copy",
            hint="check data_dir in the current configuration (or IDPROV_DATA_DIR)",
        )
    state_db = SqliteStateDB(pool.get(path), path)
    open_state_tables(state_db)
    return state_db


STOP_IDPROV = "stop idprov (the sync timer, idprov serve, outbox workers) and run the copy again"
"""What to do when another idprov process uses the state being copied."""


def no_drainers(state_db: StateDB) -> None:
    """Refuse while an outbox worker holds rows: what it pushes would be recorded in
    the source after the copy."""
    from idprov.provisioning.outbox import Outbox

    holders = Outbox(state_db).holders()
    if holders:
        raise LockedError(
            f"outbox rows are claimed by {', '.join(holders)}: an outbox worker or "
            "idprov serve is pushing them",
            hint=f"{STOP_IDPROV}; a lease of a killed worker runs out within 5 minutes",
        )


def nobody_else(paths: Sequence[Path]) -> None:
    """Refuse while another process has a source file open (idprov serve, a command):
    what it changes after the copy would stay behind."""
    from idprov.db import processes_with

    for path in paths:
        others = processes_with(str(path.resolve()), exclude=os.getpid())
        if others:
            raise LockedError(
                f"{path} is open in {', '.join(others)}: idprov serve or another command is "
                "using it, and what it changes after the copy would stay behind",
                hint=STOP_IDPROV,
            )


def source_parts(
    source: Config,
    state_db: SqliteStateDB,
    pool: DatabasePool,
    stores: dict[str, PostgresUserstoreConfig],
) -> list[Source]:
    """The state part, then a part per SQLite userstore, each migrated and counted.
    A table of the state file that is neither state nor an embedded userstore's is
    kept among the state's: the destination has none such, and the copy refuses."""
    from idprov.userstores import open_userstore
    from idprov.userstores.sqlite import SqliteUserStore

    claims = source.claim_definitions()
    data_dir = Path(source.data_dir or ".")
    parts: list[Source] = []
    embedded = False
    for domain in stores:
        store = open_userstore(source.userstore(domain), claims, pool, data_dir)
        assert isinstance(store, SqliteUserStore)
        embedded = embedded or store.db is state_db.db
        path = Path(store.config.path) if store.config.path else state_db.path
        tables = sqlite_tables(store.db, USERSTORE_TABLES)
        parts.append(Source(f"userstore {domain}", store.db, path, tables))
    state_tables = sqlite_tables(state_db.db)
    for table in (*SOURCE_ONLY, *(USERSTORE_TABLES if embedded else ())):
        state_tables.pop(table, None)
    parts.insert(0, Source("state", state_db.db, state_db.path, state_tables))
    return parts


@contextmanager
def snapshot(db: Database, path: Path) -> Iterator[None]:
    """Every table as of one moment, and no writer until the copy ends: a write
    transaction (``BEGIN IMMEDIATE``), committed only with the copy's record and fences
    (:func:`record_copy`), else rolled back. A command started meanwhile (``user
    add``, ``token create``, ``idprov serve``) waits for it up to its busy timeout, and
    fails changing nothing, or meets the fences; one that has the file open is found by
    :func:`nobody_else`, which runs again once this is taken and before the commit."""
    from idprov.db import BUSY_TIMEOUT_MS, holders

    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise LockedError(
            f"{path} is being written ({exc}), {holders(str(path.resolve()), os.getpid())}, "
            f"for longer than {BUSY_TIMEOUT_MS // 1000} s: nothing was copied",
            hint=STOP_IDPROV,
        ) from None
    try:
        yield
    finally:
        if db.conn.in_transaction:  # the state's is committed with its record of the copy
            db.execute("ROLLBACK")


@contextmanager
def destination_lock(destination: Config) -> Iterator[None]:
    """The new state's run lock, as a sync or an import of the new configuration takes
    it: none of them runs while the copy writes. Before the state's tables are made
    (a new database), the lock alone, without ``run_locks``' note of who holds it."""
    from idprov.pg import PgSession
    from idprov.provisioning.lock import AdvisoryRunLock

    config: PostgresStateConfig = destination.state  # type: ignore[assignment]
    lock = AdvisoryRunLock(config, "state copy")
    session = PgSession(config, "the state", "state")
    try:
        try:
            noted = session.has_table("run_locks")
            if noted:
                session.close()
                lock.__enter__()
            else:
                row = session.execute("SELECT pg_try_advisory_lock(hashtext(?))", [lock.key])
                if row.fetchone() != (True,):
                    raise LockedError("another idprov process holds its run lock")
        except LockedError as exc:
            raise LockedError(
                f"the new configuration's state at {config.where}, schema {config.schema}: "
                f"{exc.message}; nothing was copied",
                hint="stop idprov on the new configuration too (its sync timer, idprov "
                "serve, outbox workers) and run the copy again",
            ) from None
        try:
            yield
        finally:
            if noted:
                lock.__exit__(None, None, None)
    finally:
        session.close()  # which releases the lock taken on it


def make_targets(
    destination: Config, parts: list[Source], stores: dict[str, PostgresUserstoreConfig]
) -> list[Target]:
    """The state's target first, then a userstore's per SQLite domain."""
    claims = destination.claim_definitions()
    state_config: PostgresStateConfig = destination.state  # type: ignore[assignment]

    def state_tables(session: PgSession) -> None:
        from idprov.statedb import PostgresStateDB

        open_state_tables(PostgresStateDB(state_config, session))

    def store_tables(cfg: PostgresUserstoreConfig) -> Callable[[PgSession], None]:
        from idprov.userstores.postgres import PostgresUserStore

        def make(session: PgSession) -> None:
            PostgresUserStore(cfg, claims, session=session)

        return make

    targets = [Target(parts[0], state_config, "the state", "state", state_tables)]
    for part, (domain, cfg) in zip(parts[1:], stores.items(), strict=True):
        label = f"userstore {domain}"
        targets.append(Target(part, cfg, label, label, store_tables(cfg)))
    return targets


class _DryRun(Exception):
    """Rolls the destination back once a dry run has done everything but commit."""


def copy_parts(targets: list[Target], dry_run: bool, actor: str) -> None:
    """Make the tables, check the destination holds nothing else, copy and count, in
    one transaction per database. The state's commits first: a userstore in another
    database is written only after the state that names its users (a re-run copies
    what a failed commit left out, and the error says which that is)."""
    sessions, owners = _sessions(targets)
    committed: set[tuple[str, int, str, str]] = set()
    try:
        with ExitStack() as stack:
            for owner in reversed(owners):  # the state's last: its commit comes first
                stack.push(_noting_commit(owner, committed))
                stack.enter_context(owner.transaction())
            for target, session in zip(targets, sessions, strict=True):
                prepare(target, session)
            source_digest = _Digest(targets)
            decide(targets, sessions, source_digest)
            for target, session in zip(targets, sessions, strict=True):
                if target.status == WOULD_COPY:
                    copy_tables(target, session)
            if targets[0].status == WOULD_COPY:
                mark(targets, sessions[0], source_digest(), actor)
            nobody_else(sorted({t.source.path for t in targets}))  # came while it copied
            if dry_run:
                raise _DryRun
    except _DryRun:
        return
    except IdprovError as exc:
        if any(t.database in committed for t in targets if t.status == WOULD_COPY):
            raise partly_committed(exc, targets, committed) from None
        raise
    finally:
        for owner in owners:
            owner.close()
    for target in targets:
        target.status = COPIED if target.status == WOULD_COPY else target.status


def _noting_commit(
    owner: PgSession, committed: set[tuple[str, int, str, str]]
) -> Callable[..., None]:
    """Run after ``owner``'s transaction ends: notes its database if it committed."""

    def note(exc_type: type[BaseException] | None, *_: Any) -> None:
        if exc_type is None:
            committed.add(database_of(owner.config))

    return note


def partly_committed(
    exc: IdprovError, targets: list[Target], committed: set[tuple[str, int, str, str]]
) -> IdprovError:
    """``exc`` (a commit that failed after another database's succeeded), saying which
    parts were committed and that a re-run copies the rest."""
    copying = [t for t in targets if t.status == WOULD_COPY]
    done = [t.label for t in copying if t.database in committed]
    left = [t.label for t in copying if t.database not in committed]
    exc.message = f"{exc.message}; committed: {', '.join(done)}; not committed: {', '.join(left)}"
    exc.args = (exc.message,)
    exc.hint = (
        f"once the cause is fixed, run the copy again: it copies {', '.join(left)} and "
        "leaves what was committed as it is"
    )
    return exc


def database_of(config: PostgresConnection) -> tuple[str, int, str, str]:
    """Server, database and user: what one connection, and one transaction, reaches."""
    return (config.host, config.port, config.database, config.user)


def _sessions(targets: list[Target]) -> tuple[list[PgSession], list[PgSession]]:
    """A session per target, and the sessions that own a connection: targets in one
    database (server, database, user) share one connection, and so one transaction."""
    from idprov.pg import PgSession

    by_database: dict[tuple[str, int, str, str], PgSession] = {}
    sessions: list[PgSession] = []
    for target in targets:
        owner = by_database.get(target.database)
        if owner is None:
            owner = by_database[target.database] = PgSession(
                target.config, target.label, target.owner
            )
            sessions.append(owner)
        else:
            sessions.append(owner.sharing(target.config, target.label, target.owner))
    return sessions, list(by_database.values())


def prepare(target: Target, session: PgSession) -> None:
    """Make the target's tables (its migrations) and check that each source table and
    column has its counterpart there."""
    session.execute(f"SET LOCAL search_path TO {q(target.config.schema)}")
    target.make_tables(session)
    found = pg_tables(session, target.config.schema)
    is_state = target.owner == "state"
    target.tables = {
        name: columns
        for name, columns in found.items()
        if name not in OWN_TABLES and (name in USERSTORE_TABLES) != is_state
    }
    source = target.source
    for table, columns in source.tables.items():
        there = target.tables.get(table)
        if there is None:
            raise StoreError(
                f"table {table} of {source.path} ({source.counts[table]} rows) has no "
                f"counterpart in {target.label} at {target.where}: the copy would lose it; "
                "nothing was copied",
                hint="copy with the idprov version that made the table (a newer one?); if "
                "the table is not idprov's, move it out of the file first",
            )
        missing = [c for c in columns if c not in there]
        if missing:
            raise StoreError(
                f"column {', '.join(missing)} of table {table} of {source.path} has no "
                f"counterpart in {target.label} at {target.where}: the copy would lose it; "
                "nothing was copied",
                hint="copy with the idprov version that made the column (a newer one?)",
            )


class _Digest:
    """The source's digest, read once when first asked for: a sum of the SHA-256 of
    every row (each part, table and values), which no order of rows changes."""

    def __init__(self, targets: list[Target]) -> None:
        self.parts = [t.source for t in targets]
        self.value: str | None = None

    def __call__(self) -> str:
        if self.value is None:
            total = 0
            for part in self.parts:
                for table in part.tables:
                    for row in part.rows(table):
                        line = json.dumps([part.name, table, list(row)], default=repr)
                        total += int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")
            self.value = f"{total % 2**256:064x}"
        return self.value


def decide(targets: list[Target], sessions: list[PgSession], source_digest: _Digest) -> None:
    """Each part's status, judged apart: empty there, to copy; beside a state that is
    this very source's copy, a userstore is copied if it is empty (a failed commit left
    it out) and already copied if not; anything else, a ConflictError."""
    held = [
        {t: pg_count(session, target, t) for t in target.tables}
        for target, session in zip(targets, sessions, strict=True)
    ]
    state, stores = targets[0], list(zip(targets[1:], sessions[1:], held[1:], strict=True))
    used_since = False
    if any(held[0].values()):
        left_out = [
            t.label
            for t, _, h in stores
            if not any(h.values()) and t.source.has_rows and t.database != state.database
        ]
        used_since = earlier_copy(state, sessions[0], held[0], source_digest, left_out)
        state.status = ALREADY_COPIED
    for target, session, counts in stores:
        target.status = userstore_status(target, session, counts, state, used_since)
    if used_since and all(t.status == ALREADY_COPIED for t in targets):
        raise ConflictError(
            f"{state.where} holds a copy of this source, and idprov has used it since: "
            "there is nothing to copy",
            hint="use the new configuration; the copy is not needed again",
        )


def userstore_status(
    target: Target, session: PgSession, held: dict[str, int], state: Target, used_since: bool
) -> str:
    """WOULD_COPY for an empty userstore, ALREADY_COPIED for this source's copy; else
    a ConflictError. Beside a state already copied, an empty one is copied only if its
    source has rows and it is in another database than the state's (in the same one,
    it was committed with the state, and emptied since)."""
    copied = state.status == ALREADY_COPIED
    if not any(held.values()):
        left_out = target.source.has_rows and target.database != state.database
        return ALREADY_COPIED if copied and not left_out else WOULD_COPY
    if copied and (held == target.source.counts or used_since):
        if not target.source.has_rows or holds_any_user(target, session):
            return ALREADY_COPIED
        raise ConflictError(
            f"{target.label} at {target.where} holds none of the "
            f"{target.source.counts.get('users', 0)} users of {target.source.path} but "
            f"others ({_counted(held)}): the commit that copies it failed, and the new "
            "configuration has added users there since; nothing was copied",
            hint=f"move the users the new configuration added to {target.label} away (or "
            "drop its schema if they are trials), and run the copy again: it copies "
            f"{target.label}",
        )
    raise ConflictError(
        f"{target.label} at {target.where} holds users or roles already "
        f"({_counted(held)}): a copy goes only to an empty userstore; nothing was copied",
        hint=f"give {target.label} an empty schema in the new configuration (a new "
        "schema is created), or drop this one if it is a failed trial",
    )


def holds_any_user(target: Target, session: PgSession) -> bool:
    """Whether the destination holds any of the source's users (by id)."""
    ids = [str(r[0]) for r in target.source.db.execute('SELECT id FROM "users"')]
    found = session.execute(
        f"SELECT 1 FROM {target.table('users')} WHERE id::text = ANY(?) LIMIT 1", [ids]
    )
    return found.fetchone() is not None or not ids


def earlier_copy(
    state: Target,
    session: PgSession,
    held: dict[str, int],
    source_digest: _Digest,
    left_out: list[str],
) -> bool:
    """Whether idprov has used the state there since a copy of this very source made
    it; a ConflictError if it is not such a copy."""
    row = session.execute(
        f"SELECT at, target, details FROM {state.table('audit')} WHERE action = ?"
        " ORDER BY id DESC LIMIT 1",
        [MARKER],
    ).fetchone()
    if row is None:
        raise ConflictError(
            f"{state.where} already holds idprov's state ({_counted(held)}): a copy goes only "
            "to an empty one; nothing was copied",
            hint="name an empty schema in state.schema of the new configuration (it is "
            "created), or drop this one if it is a failed trial",
        )
    at, copied_from, details = row[0], row[1], json.loads(row[2])
    if details.get("digest") != source_digest():
        empty = f" ({', '.join(left_out)} there: empty, left out by a failed commit)"
        raise ConflictError(
            f"{state.where} holds a copy of {copied_from} made at {at}"
            f"{empty if left_out else ''}; this source has changed since (idprov went on "
            "using it): nothing was copied",
            hint="if the new configuration is not in use yet, drop its schemas (the state's "
            "and the userstores') and copy again, with idprov stopped",
        )
    expected = {**state.source.counts, "audit": state.source.counts.get("audit", 0) + 1}
    return any(held.get(t, 0) != expected.get(t, 0) for t in {*held, *expected})


def _counted(held: dict[str, int]) -> str:
    return ", ".join(f"{table}: {n}" for table, n in sorted(held.items()) if n)


def copy_tables(target: Target, session: PgSession) -> None:
    """Every table of the part, with COPY; then its identity columns continued and its
    rows counted."""
    source = target.source
    for table in copy_order(session, target):
        rows_of(target, session, table)
        continue_ids(session, target, table, source.sequences.get(table, 0))
        counted = pg_count(session, target, table)
        if counted != source.counts[table]:
            raise StoreError(
                f"table {table}: {counted} rows in {target.where} after the copy, "
                f"{source.counts[table]} in {source.path}; nothing was committed",
                hint="run the copy again; if it says the same, report it",
            )


def rows_of(target: Target, session: PgSession, table: str) -> None:
    """COPY one table's rows. A failure names the table and the line, never a row's
    values (a password hash, personal data: PostgreSQL's CONTEXT quotes the row)."""
    source = target.source
    names = ", ".join(map(q, source.tables[table]))
    try:
        with session.translated(), session.connection().cursor() as cur:
            with cur.copy(f"COPY {target.table(table)} ({names}) FROM STDIN") as copy:
                for row in source.rows(table):
                    copy.write_row(row)
    except IdprovError as exc:
        raise StoreError(
            f"copying table {table} of {source.path}: {exc.message}; nothing was committed",
            hint="run the copy again once the cause is fixed (PostgreSQL's own log may "
            "record the row it refused: see README, Moving to PostgreSQL)",
        ) from None


def copy_order(session: PgSession, target: Target) -> list[str]:
    """The source's tables, each after the tables its foreign keys name there."""
    rows = session.execute(
        "SELECT a.relname, b.relname FROM pg_constraint c JOIN pg_class a ON a.oid = c.conrelid"
        " JOIN pg_class b ON b.oid = c.confrelid JOIN pg_namespace n ON n.oid = a.relnamespace"
        " WHERE c.contype = 'f' AND n.nspname = ?",
        [target.config.schema],
    ).fetchall()
    left = {t: {str(b) for a, b in rows if a == t and b != t} for t in target.source.tables}
    order: list[str] = []
    while left:
        ready = sorted(t for t, needs in left.items() if not needs - set(order))
        order += ready or sorted(left)  # a cycle: as they come (none in idprov's tables)
        for table in ready or list(left):
            left.pop(table)
    return order


def continue_ids(session: PgSession, target: Target, table: str, used: int) -> None:
    """Identity columns of ``table`` go on after its highest id, or after the highest
    the source ever gave (``used``: ids of deleted rows are not given again)."""
    rows = session.execute(
        "SELECT attname, pg_get_serial_sequence(?, attname) FROM pg_attribute"
        " WHERE attrelid = ?::regclass AND attnum > 0 AND NOT attisdropped",
        [target.table(table), target.table(table)],
    ).fetchall()
    for column, sequence in rows:
        if sequence is not None:
            session.execute(
                f"SELECT setval(?, greatest((SELECT coalesce(max({q(column)}), 0) FROM"
                f" {target.table(table)}), ?) + 1, false)",
                [sequence, used],
            )


def mark(targets: list[Target], session: PgSession, digest: str, actor: str) -> None:
    """The copy's entry in the destination's audit log: what it copied from, and the
    source's digest, by which a re-run knows its own copy."""
    from idprov.provisioning.state import audit_row

    state = targets[0]
    details = {
        "digest": digest,
        "tables": {t.owner: t.source.counts for t in targets if t.status == WOULD_COPY},
    }
    row = audit_row(actor, "resident", MARKER, str(state.source.path), "ok", details)
    session.execute(
        f"INSERT INTO {state.table('audit')} (at, actor, application, action, target,"
        " outcome, details, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )


def report(
    source: Config, destination: Config, targets: list[Target], kept: list[str], dry_run: bool
) -> CopyReport:
    parts = [
        PartReport(
            t.owner,
            str(t.source.path),
            t.where,
            t.status,
            [TableCount(n, c) for n, c in t.source.counts.items()],
        )
        for t in targets
    ]
    if all(t.status == ALREADY_COPIED for t in targets):
        status = ALREADY_COPIED
    else:
        status = WOULD_COPY if dry_run else COPIED
    files = sorted({str(t.source.path) for t in targets})
    return CopyReport(status, dry_run, parts, kept, next_steps(source, destination, status, files))


def next_steps(source: Config, destination: Config, status: str, files: list[str]) -> list[str]:
    """What the administrator does next; ``files``: every SQLite file copied."""
    new = destination.source
    if status == WOULD_COPY:
        return [
            "stop idprov: the sync timer, idprov serve, outbox workers (what they change "
            "after the copy is not carried over)",
            "run the same command without --dry-run",
        ]
    return [
        f"switch to the new configuration: point IDPROV_CONFIG (the timer's unit, idprov "
        f"serve's) at {new}, or put it in place of {source.source}",
        f"idprov --config {new} sync --dry-run: it should plan no change (the ledger came "
        "over) other than what the outbox still holds (`idprov outbox list`: the rows copied "
        "pending or failed, which it plans to push)",
        "start the sync timer, idprov serve and outbox workers again",
        f"keep {', '.join(files)} as a backup: a command of {source.source} now refuses to "
        "change them (one that only reads warns); to abandon the move, `idprov --config "
        f"{source.source} state copy --forget`",
    ]


# ---- the copy's record in the source: the old configuration stops


def record_copy(
    state_db: SqliteStateDB, destination: Config, targets: list[Target], copied_from: str
) -> None:
    """Record in the source state (that of ``copied_from``, the configuration copied)
    that it now lives in ``destination``, and every SQLite file copied, and fence each
    (:func:`~idprov.provisioning.state_moved.fence`), each committed with its
    snapshot's write transaction: no writer came between, and none writes after, even
    one that opened the file before the record was there. Once per copy: a re-run
    finding its record keeps it (and fences what an earlier run left unfenced, adding
    it to the record)."""
    config = targets[0].config
    copied = copied_to(state_db)
    dbs = {id(t.source.db): t.source for t in targets if t.source.db is not state_db.db}
    files = [str(state_db.path), *(str(part.path) for part in dbs.values())]
    try:
        if copied is None:
            copied = StateCopied(
                str(state_db.path), now(), config.host, config.port, config.database,
                config.schema, destination.source, copied_from, tuple(files),
            )  # fmt: skip
            _make_record_table(state_db)
            state_db.execute(
                f"INSERT INTO {COPIED_TABLE} (at, host, port, database, schema, config,"
                " copied_from, fenced) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [copied.at, copied.host, copied.port, copied.database, copied.schema,
                 copied.config, copied_from, json.dumps(files)],
            )  # fmt: skip
        elif set(files) - set(copied.fenced):
            copied = _keep_fenced(state_db, copied, files)
        for db, path in zip((state_db.db, *(p.db for p in dbs.values())), files, strict=True):
            fence(db, copied, path)
            db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(
            f"the copy to {targets[0].where} is committed, but the SQLite files could not "
            f"record it ({exc}): commands of the old configuration would go on using them",
            hint="fix the cause (disk space, permissions) and run the copy again: it says "
            "`already copied` and records it",
        ) from None


def _make_record_table(state_db: SqliteStateDB) -> None:
    state_db.execute(
        f"CREATE TABLE IF NOT EXISTS {COPIED_TABLE} (id INTEGER PRIMARY KEY,"
        " at TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL,"
        " database TEXT NOT NULL, schema TEXT NOT NULL, config TEXT NOT NULL,"
        " copied_from TEXT, fenced TEXT)"
    )


def _keep_fenced(state_db: SqliteStateDB, copied: StateCopied, files: list[str]) -> StateCopied:
    """The record of an earlier run, with ``files`` among its fenced ones (the columns
    of :data:`~idprov.provisioning.state_moved.RECORD_COLUMNS` added to a record an
    earlier idprov made)."""
    from dataclasses import replace

    kept = {str(r[1]) for r in state_db.execute(f"PRAGMA table_info({COPIED_TABLE})")}
    for column in RECORD_COLUMNS:
        if column not in kept:
            state_db.execute(f"ALTER TABLE {COPIED_TABLE} ADD COLUMN {column} TEXT")
    fenced = tuple(dict.fromkeys((*copied.fenced, *files)))
    state_db.execute(f"UPDATE {COPIED_TABLE} SET fenced = ?", [json.dumps(fenced)])
    return replace(copied, fenced=fenced)


@dataclass
class ForgetReport:
    status: str
    """``forgotten``, or ``not copied`` (there was no record: nothing to do)."""
    source: str
    copied: StateCopied | None
    notes: list[str] = field(default_factory=list)
    since: list[str] = field(default_factory=list)
    """What the new state holds that the copy did not carry (with ``--force``: what
    going back loses); empty when it holds nothing more, or was not looked at."""
    checked: bool = False
    """Whether the new state was looked at (``--force`` forgets one it cannot reach)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def forget_copy(source: Config, new: Config | None = None, *, force: bool = False) -> ForgetReport:
    """Remove the SQLite state's record of its copy and its fences, so that ``source``
    (the old configuration) works again: an administrator abandons the move. The state
    in PostgreSQL (that of ``new``, else of the configuration the copy recorded) is
    left as it is, but looked at first: one that has moved on since the copy (:func:
    `since_copy`) is refused, a ConflictError saying what it holds, and one that cannot
    be reached too (its error, saying so), unless ``force``."""
    if source.state is not None:
        raise ConfigError(
            "keeps idprov's state in PostgreSQL: --forget is for the configuration whose "
            "SQLite state was copied",
            location=source.source,
            hint="run it with the old configuration (--config or IDPROV_CONFIG naming it)",
        )
    path = Path(source.data_dir or ".") / STATE_FILENAME
    pool = DatabasePool()
    try:
        if not path.is_file():
            raise NotFoundError(
                f"there is no idprov state at {path}",
                hint="check data_dir in the configuration (or IDPROV_DATA_DIR)",
            )
        state_db = SqliteStateDB(pool.get(path), path)
        copied = copied_to(state_db)
        if copied is None:
            _fenced_by_another(source, pool)
            return ForgetReport("not copied", str(path), None)
        report = ForgetReport("forgotten", str(path), copied)
        _look_since(report, source, new, state_db, pool, force)
        report.notes += _unfence(source, state_db, pool, copied)
    finally:
        pool.close()
    report.notes = [
        f"{source.source} uses {path} again; the state at {copied.where} stays as it is",
        f"stop idprov on {copied.config} first (sync timer, idprov serve, outbox workers): "
        f"what it did since {copied.at} (users, accounts made at the targets) is not in "
        f"{path}",
        *report.notes,
    ]
    return report


def _look_since(
    report: ForgetReport,
    source: Config,
    new: Config | None,
    state_db: SqliteStateDB,
    pool: DatabasePool,
    force: bool,
) -> None:
    """Fill ``report.since``; refuse (unless ``force``) a new state that moved on, or
    that cannot be looked at."""
    copied = report.copied
    assert copied is not None
    try:
        report.since = since_copy(source, new, copied, state_db, pool)
        report.checked = True
    except IdprovError as exc:
        if not force:
            exc.message = (
                f"cannot tell whether the state at {copied.where} has moved on since the "
                f"copy of {copied.at}: {exc.message}; nothing was changed"
            )
            exc.args = (exc.message,)
            exc.hint = (
                f"{exc.hint + '; ' if exc.hint else ''}name the new configuration with "
                "--to NEW.yaml if it is not where the copy recorded it; to forget without "
                "looking, accepting to lose what it did since: --forget --force"
            )
            raise
        report.notes.append(f"the state at {copied.where} was not looked at: {exc.message}")
        return
    if report.since and not force:
        raise ConflictError(
            f"the state at {copied.where} has moved on since the copy of {copied.at}: "
            f"{'; '.join(report.since)}. {copied.path} knows none of it: its ledger lacks "
            "the accounts made since (the next sync would take them for someone else's, "
            "or make them again); nothing was changed",
            hint=f"keep using {copied.config} (idprov cannot copy a state back to SQLite); "
            "to go back all the same, losing what it did, `idprov state copy --forget "
            "--force`, then `idprov sync --verify --dry-run` lists the accounts at the "
            "targets this file does not know",
        )
    if report.since:
        report.notes.append(f"lost with the move: {'; '.join(report.since)}")


def _unfence(
    source: Config, state_db: SqliteStateDB, pool: DatabasePool, copied: StateCopied
) -> list[str]:
    """Drop the fences of every SQLite file the copy fenced (those the record names,
    whether ``source`` still names them or not; in a record an earlier idprov made,
    which names none, those of ``source``), then the record (so a failure in between
    leaves the record, which a re-run removes). What it could not unfence, one line
    each."""
    from idprov.db import write_transaction

    state = state_db.path.resolve()
    files = [Path(f) for f in copied.fenced if Path(f).resolve() != state]
    if not copied.fenced:
        files = _sqlite_files(source)
    gone = [f"{f} is not there any more: no fence to lift" for f in files if not f.is_file()]
    for file in files:
        if file.is_file():
            db = pool.get(file)
            with write_transaction(db):
                unfence(db)
    with state_db.transaction():
        unfence(state_db.db)
        state_db.execute(f"DROP TABLE IF EXISTS {COPIED_TABLE}")
    return gone


def _sqlite_files(source: Config) -> list[Path]:
    """The SQLite userstore files ``source`` names (its embedded PRIMARY aside)."""
    files = []
    for store in source.userstores:
        file = getattr(store, "path", None)
        if isinstance(store, SqliteUserstoreConfig) and file:
            files.append(Path(file))
    return files


def _fenced_by_another(source: Config, pool: DatabasePool) -> None:
    """Raise the refusal of a fence on an SQLite userstore file of ``source``, whose
    state records no copy: another configuration's copy fenced the file it shares
    (the refusal names it, and what to run)."""
    for file in _sqlite_files(source):
        if file.is_file():
            refusal = fence_of(pool.get(file))
            if refusal is not None:
                raise refusal


@dataclass
class UnfencedReport:
    """What :func:`lift_fence` did to ``path``."""

    path: str
    fenced_by: str
    """The fence's refusal: which copy fenced the file."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lift_fence(path: Path) -> UnfencedReport:
    """Drop the fences of the SQLite userstore file ``path`` alone, so that every
    configuration sharing it writes it again, leaving the copy that fenced it (and its
    record, and the fences of its other files) as it is: what is written there from
    now on, the copy's PostgreSQL userstore does not see. Refused: a file that is not
    there or not fenced (NotFoundError), a state file a copy took away (ConflictError:
    its own configuration's `state copy --forget` lifts that)."""
    from idprov.db import write_transaction

    if not path.is_file():
        raise NotFoundError(f"there is no file {path}", hint="give the path of the fenced file")
    pool = DatabasePool()
    try:
        db = pool.get(path)
        refusal = fence_of(db)
        if refusal is None:
            raise NotFoundError(
                f"{path} is not fenced by `idprov state copy`: nothing to lift",
                hint="the error of the refused write names the fenced file",
            )
        if db.has_table(COPIED_TABLE):
            raise ConflictError(
                f"{path} is an idprov state that `idprov state copy` took away, not a "
                "userstore file another configuration shares",
                hint=f"run `idprov state copy --forget` with the configuration whose state "
                f"is {path} (--config)",
            )
        with write_transaction(db):
            unfence(db)
    finally:
        pool.close()
    note = (
        "every configuration using it writes it again; the copy stays as it is, and does "
        "not see what is written here from now on"
    )
    return UnfencedReport(str(path), refusal.message, [note])


def since_copy(
    source: Config,
    new: Config | None,
    copied: StateCopied,
    state_db: SqliteStateDB,
    pool: DatabasePool,
) -> list[str]:
    """What the PostgreSQL state and userstores hold that the copy of ``source`` did
    not carry, one line each: audit entries after the copy's (every change, sync and
    push records one), a table whose rows are not as many as in the SQLite file (which
    no command changed since: it is fenced), ids given since (outbox rows made and
    pushed leave no other trace), users or roles changed since, outbox rows being
    pushed now. Empty when it holds nothing more. ``new``: the new configuration,
    else the one the copy recorded. Counts only: one query per table."""
    destination = new or _recorded_configuration(copied)
    state: Any = destination.state
    where = (state.host, state.port, state.database, state.schema) if state else None
    if where != (copied.host, copied.port, copied.database, copied.schema):
        raise ConfigError(
            f"names another state than the copy went to ({copied.where})",
            location=destination.source,
            hint=f"name the configuration whose state is {copied.where}",
        )
    stores, _ = pair_userstores(source, destination)
    parts = source_parts(source, state_db, pool, stores)
    for part in parts:
        part.read()
    targets = make_targets(destination, parts, stores)
    sessions, owners = _sessions(targets)
    try:
        found: list[str] = []
        for target, session in zip(targets, sessions, strict=True):
            found += _moved_on(target, session, copied)
        return found
    finally:
        for owner in owners:
            owner.close()


def _recorded_configuration(copied: StateCopied) -> Config:
    from idprov.config.loader import load_file

    path = Path(copied.config)
    if not path.is_file():
        raise ConfigError(
            f"the new configuration the copy recorded, {path}, is not there",
            hint="name it with --to NEW.yaml (it was moved, or put in place of another)",
        )
    return load_file(path)


def _moved_on(target: Target, session: PgSession, copied: StateCopied) -> list[str]:
    """What one part's schema holds that its SQLite file does not (see
    :func:`since_copy`)."""
    schema = target.config.schema
    there = pg_tables(session, schema)
    if not there:
        return []  # dropped since: nothing there to lose
    found = []
    if target.owner == "state":
        found += _audit_since(target, session)
        found += _claimed(target, session)
    for table, rows in target.source.counts.items():
        if table == "audit" or table not in there:
            continue
        held = pg_count(session, target, table)
        if held != rows:
            found.append(f"{target.label}: {table} holds {held} rows, {rows} when copied")
        elif _ids_given(session, target, table):
            found.append(f"{target.label}: rows were added to {table} since (and removed)")
        elif target.owner != "state" and "modified" in there[table]:
            changed = _one(
                session,
                f"SELECT count(*) FROM {target.table(table)} WHERE modified >"
                " CAST(? AS timestamptz)",
                [copied.at],
            )
            if changed:
                found.append(f"{target.label}: {changed} {table} changed since")
    return found


def _audit_since(target: Target, session: PgSession) -> list[str]:
    """The audit entries after the copy's own (``state.copy``), by action."""
    marker = _one(
        session,
        f"SELECT max(id) FROM {target.table('audit')} WHERE action = ? AND target = ?",
        [MARKER, str(target.source.path)],
    )
    if marker is None:
        return [f"no record of this copy in its audit log ({MARKER}): it is not this copy"]
    rows = session.execute(
        f"SELECT action, count(*) FROM {target.table('audit')} WHERE id > ? AND action <> ?"
        " GROUP BY action ORDER BY count(*) DESC, action",
        [marker, MARKER],
    ).fetchall()
    if not rows:
        return []
    total = sum(int(n) for _, n in rows)
    shown = ", ".join(f"{n} {action}" for action, n in rows[:5])
    more = ", ..." if len(rows) > 5 else ""
    entries = "entry" if total == 1 else "entries"
    return [f"{total} audit {entries} since the copy ({shown}{more})"]


def _claimed(target: Target, session: PgSession) -> list[str]:
    from idprov.provisioning.outbound import holder_label

    rows = session.execute(
        f"SELECT claimed_by, max(claimed_until) FROM {target.table('outbox')}"
        " WHERE claimed_until >= ? GROUP BY claimed_by ORDER BY claimed_by",
        [now()],
    ).fetchall()
    if not rows:
        return []
    holders = ", ".join(f"{holder_label(str(r[0]))} until {r[1]}" for r in rows)
    return [
        f"outbox rows are claimed by {holders}: an idprov command or worker that is pushing "
        "them (or was, and was killed: its claim runs out then) uses this state"
    ]


def _ids_given(session: PgSession, target: Target, table: str) -> bool:
    """Whether an identity column of ``table`` gave an id since the copy set it to go
    on (``setval(..., false)``: not called until the next insert)."""
    rows = session.execute(
        "SELECT pg_get_serial_sequence(?, attname) FROM pg_attribute"
        " WHERE attrelid = ?::regclass AND attnum > 0 AND NOT attisdropped",
        [target.table(table), target.table(table)],
    ).fetchall()
    for (sequence,) in rows:
        if sequence is not None:
            if _one(session, f"SELECT is_called FROM {sequence}"):
                return True
    return False


def _one(session: PgSession, sql: str, params: Sequence[Any] = ()) -> Any:
    """The one value a query of one row gives."""
    row = session.execute(sql, params).fetchone()
    assert row is not None
    return row[0]
