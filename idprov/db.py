"""Opening idprov's SQLite files the same way everywhere, and running migrations.

Every SQLite file idprov writes (its own state by default, and SQLite userstores) is
opened here: created 0600, WAL journal, ``synchronous=NORMAL``, foreign keys on, a
busy timeout.
Transactions are explicit (``BEGIN IMMEDIATE``) so that a command's writes to one
file are one transaction, and writers queue instead of failing.

:class:`Database` is the connection as the stores use it. It is not sqlite-utils'
``Database``: of that idprov used the connection, ``execute``, savepoints and "does
this table exist", and importing sqlite-utils cost every command ~50 ms at start-up.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from idprov.config.paths import create_private_file
from idprov.errors import ExitCode, StoreError, from_sqlite_error

BUSY_TIMEOUT_MS = 30_000


class Database:
    """One SQLite connection in autocommit mode (each statement commits, unless in
    a transaction of :func:`write_transaction`)."""

    def __init__(self, conn: sqlite3.Connection, writers: threading.Lock | None = None) -> None:
        self.conn = conn
        self.writers = writers
        """The file's lock for this process's writers (see :func:`writers_of`)."""
        self.read_only = False
        """Opened ``mode=ro`` (:func:`open_database_read_only`): nothing can be written."""
        self.recorded: set[tuple[str, str]] | None = None
        """The file's ``idprov_migrations`` as :func:`migrate` last read them."""
        conn.execute("PRAGMA recursive_triggers = ON")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def has_table(self, name: str) -> bool:
        found = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name]
        )
        return found.fetchone() is not None

    def close(self) -> None:
        self.conn.close()


Migration = tuple[str, Callable[[Database], None]]


_clock_offset = 0.0
"""Seconds to add to this host's clock to read the clock of the state the process
shares with other hosts (a PostgreSQL state: :func:`set_clock_offset`); 0 otherwise."""


def clock() -> datetime:
    """Now, by the one clock that times what the state records: leases, next tries,
    the ages of rows. With a PostgreSQL state that is the database server's (this
    host's, corrected by the offset read from it): hosts whose clocks disagree then
    still agree on when a lease ends. A host whose clock ran ahead took rows another
    host held on a live lease and pushed them a second time, and called rows left
    behind that another host's command was about to push; with SQLite, one host, it
    is this host's own."""
    now = datetime.now(UTC)
    return now + timedelta(seconds=_clock_offset) if _clock_offset else now


def set_clock_offset(seconds: float) -> None:
    """Time what the state records by a clock ``seconds`` ahead of this host's (see
    :func:`clock`)."""
    global _clock_offset
    _clock_offset = seconds


def clock_offset() -> float:
    """The offset :func:`set_clock_offset` last set (0: this host's clock)."""
    return _clock_offset


def now() -> str:
    """The current time by :func:`clock`, as an ISO 8601 UTC string with milliseconds."""
    return clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_database(path: Path) -> Database:
    """Open (creating with mode 0600) an SQLite file for idprov's use."""
    conn: sqlite3.Connection | None = None
    try:
        create_private_file(path)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # random (UUID) keys touch index pages all over: keep 64 MiB of them cached,
        # and statement journals in memory
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA temp_store = MEMORY")
    except (OSError, sqlite3.Error) as exc:
        if conn is not None:
            conn.close()
        raise _cannot_open(path, exc) from exc
    return Database(conn, writers_of(path))


_WRITERS: dict[Path, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def writers_of(path: Path) -> threading.Lock:
    """The lock the write transactions of this process take on one SQLite file.

    SQLite lets one writer in at a time and makes the others sleep and retry (1, 2,
    5, 10 ms... up to the busy timeout); a thread waiting on a lock is woken the
    moment the writer before it commits. `idprov serve` has a connection per thread
    (the writer, the pushers, the outbox worker): measured there, 4,556 sleeps of
    0.8 ms on average for 2,000 requests. Other processes still meet SQLite's busy
    handler, as before."""
    key = path.expanduser().resolve()
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(key, threading.Lock())


def _cannot_open(path: Path, exc: Exception) -> StoreError:
    """Why a database cannot be opened for writing, as precisely as the system says."""
    if isinstance(exc, StoreError):
        return exc
    unusable = _unusable(path, exc)
    if unusable is not None:
        return unusable
    if isinstance(exc, OSError):
        reason = f"{exc.strerror or exc}"
    elif path.parent.is_dir() and not os.access(path.parent, os.W_OK):
        reason = f"its directory {path.parent} is read-only for this user"
    elif path.exists() and not os.access(path, os.W_OK):
        reason = "the file is read-only for this user"
    else:
        reason = str(exc)
    return StoreError(
        f"cannot open database {path} for writing: {reason}",
        hint="commands that change something need the file and its directory writable "
        "(read commands such as `user list` and `log` do not); check the owner and mode, "
        "and that the directory exists",
    )


def _unusable(path: Path, exc: Exception) -> StoreError | None:
    """The file is not an SQLite database, or something else stands where it or its
    directory should be: what is there and what to do, not a matter of permissions."""
    blocking = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocking is not None and blocking != path and not blocking.is_dir():
        error = StoreError(
            f"cannot open database {path}: {blocking} is a file, not a directory",
            hint=f"set data_dir (or the userstore's path) to a directory, or move {blocking} away",
        )
    elif path.is_dir():
        error = StoreError(
            f"cannot open database {path}: it is a directory, not an SQLite file",
            hint=f"move the directory away (mv {path} {path}.dir), or fix data_dir (or the "
            "userstore's path) in the configuration",
        )
    elif str(getattr(exc, "sqlite_errorname", "")).startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        error = StoreError(
            f"cannot open database {path}: it is damaged, or not an SQLite database ({exc})",
            hint="restore it from a backup (README: Administration, back up and restore); "
            f"without one, move it away (mv {path} {path}.damaged) to start with an empty "
            "one; or fix the path in the configuration if it names the wrong file",
        )
        return error  # exit 1, as for every damaged database
    else:
        return None
    error.exit_code = ExitCode.USAGE  # a directory where a file is expected (README)
    return error


def open_database_read_only(path: Path) -> Database:
    """Open an existing SQLite file for reading only (read commands: `user list`,
    `log`...), so they work where the file or its directory is not writable. A WAL
    file whose side files cannot be made (a read-only directory) is opened immutable:
    nobody can write there either."""
    for query in ("mode=ro", "mode=ro&immutable=1"):
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?{query}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            db = Database(conn)
            db.read_only = True
            return db
        except sqlite3.Error as exc:
            conn.close()
            error = exc
    unusable = _unusable(path, error)
    if unusable is not None:
        raise unusable from error
    raise StoreError(
        f"cannot read database {path}: {error}",
        hint="check that this user may read the file and its directory",
    ) from error


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. On a new file that other processes or threads open at the same
    moment, SQLite may answer "database is locked" at once, without waiting for the
    busy timeout: try again for a while before giving up."""
    import time

    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def write_transaction(db: Database) -> Iterator[None]:
    """One write transaction (``BEGIN IMMEDIATE``); nested calls become savepoints."""
    conn = db.conn
    if conn.in_transaction:
        with _savepoint(conn):
            yield
        return
    with _writing(db):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _cannot_begin(conn, exc) from exc
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")


@contextmanager
def _writing(db: Database) -> Iterator[None]:
    """Hold the file's lock of this process's writers (:func:`writers_of`), waiting
    at most the busy timeout; then SQLite's own wait decides, as without it."""
    lock = db.writers
    held = lock is not None and lock.acquire(timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        yield
    finally:
        if held:
            assert lock is not None
            lock.release()


@contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """A savepoint in the open transaction, rolled back to on error (unless the error
    ended the whole transaction, savepoints with it)."""
    name = f"idprov_{os.urandom(8).hex()}"
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            conn.execute(f"RELEASE SAVEPOINT {name}")
        raise
    conn.execute(f"RELEASE SAVEPOINT {name}")


class NeedsUpgradeError(StoreError):
    """A database made by an earlier idprov that this one has not upgraded yet, where
    it may not (`config validate`) or cannot (a read-only file) write."""

    code = "needs_upgrade"


class NewerSchemaError(StoreError):
    """A database a newer idprov upgraded: this one would misread or damage it."""

    code = "newer_schema"


_HELD: ContextVar[bool] = ContextVar("idprov_migrations_held", default=False)

MIGRATION_MODULES = {
    "state": "idprov.provisioning.state",
    "tokens": "idprov.provisioning.tokens",
    "jit": "idprov.provisioning.jit_links",
    "inbound": "idprov.provisioning.external_ids",
    "idp_names": "idprov.provisioning.idp_rename",
    "userstore": "idprov.userstores.{store}",
}
"""Where each migration namespace's ``MIGRATIONS`` are (a userstore's per store type,
the others a mapping per dialect): every namespace any idprov module migrates."""
_STORE_MODULES = {"sqlite": "sqlite", "postgresql": "postgres"}


@contextmanager
def migrations_held() -> Iterator[None]:
    """Within: a database that needs migrations is not upgraded; opening it raises
    :class:`NeedsUpgradeError` (`config validate` writes nothing). The tables of a
    namespace the database has none of (a module's, made on its first use) are not
    made either: a reader within must expect them missing."""
    token = _HELD.set(True)
    try:
        yield
    finally:
        _HELD.reset(token)


@cache
def known_migrations(namespace: str, dialect: str) -> frozenset[str]:
    """The names of this idprov's migrations of ``namespace`` in ``dialect`` (``sqlite``,
    ``postgresql``); empty for a namespace it does not have."""
    from importlib import import_module

    module = MIGRATION_MODULES.get(namespace)
    if module is None:
        return frozenset()
    found = import_module(module.format(store=_STORE_MODULES[dialect])).MIGRATIONS
    steps = found if isinstance(found, list) else found[dialect]
    return frozenset(name for name, _ in steps)


def pending_migrations(
    recorded: Collection[tuple[str, str]],
    namespace: str,
    names: Sequence[str],
    dialect: str,
    where: Callable[[], str],
    optional: Collection[str] = (),
) -> list[str]:
    """Which of ``names`` (``namespace``'s migrations, in order) a database whose
    ``idprov_migrations`` hold ``recorded`` (namespace, name) still needs: the one
    decision of every database idprov migrates, SQLite or PostgreSQL, state or userstore.

    Refuses a database carrying a migration this idprov does not know (a newer one
    upgraded it: :class:`NewerSchemaError`), and, while :func:`migrations_held`, one
    that needs any but ``optional`` ones (:class:`NeedsUpgradeError`). ``where`` names
    the database in those messages."""
    newer = sorted(
        f"{space} {name}"
        for space, name in recorded
        if name not in (names if space == namespace else known_migrations(space, dialect))
    )
    if newer:
        raise NewerSchemaError(
            f"{where()} was upgraded by a newer idprov (migrations {', '.join(newer)}); this "
            f"idprov ({_version()}) cannot use it: run the newer release",
            hint="install the release that upgraded it (or a later one) wherever idprov runs "
            "on this data; to go back to this release, restore the backup made before the "
            "upgrade (README: Administration, back up and restore)",
        )
    pending = [name for name in names if (namespace, name) not in recorded]
    if _HELD.get() and not any(space == namespace for space, _ in recorded):
        return []  # not made yet: nothing to upgrade, and nothing to read there
    if pending and _HELD.get() and not set(pending) <= set(optional):
        count = _pending_count(recorded, namespace, names, dialect)
        raise NeedsUpgradeError(
            f"{where()} needs upgrading ({_migrations(count)}); the first command with write "
            "access applies them",
            hint="an older idprov still running on it keeps working until then; after it, "
            "only this release (or a newer one) can use it: upgrade every machine and job "
            "that runs idprov on it at the same time",
        )
    return pending


def needs_upgrade_here(
    recorded: Collection[tuple[str, str]],
    namespace: str,
    names: Sequence[str],
    dialect: str,
    where: str,
) -> NeedsUpgradeError:
    """The error of a database that needs migrations and cannot be written here."""
    count = _pending_count(recorded, namespace, names, dialect)
    return NeedsUpgradeError(
        f"{where} needs upgrading by this release ({_migrations(count)} pending) and cannot "
        "be written here",
        hint="run any idprov command once as a user who can write it (e.g. `idprov status`); "
        "read commands then work read-only",
    )


def _pending_count(
    recorded: Collection[tuple[str, str]], namespace: str, names: Sequence[str], dialect: str
) -> int:
    """How many migrations the database lacks, in ``namespace`` and in each namespace
    it has some of."""
    spaces = {space for space, _ in recorded} | {namespace}
    wanted = {(namespace, name) for name in names}
    wanted |= {(s, n) for s in spaces - {namespace} for n in known_migrations(s, dialect)}
    return len(wanted - set(recorded))


def _migrations(count: int) -> str:
    return f"{count} migration{'' if count == 1 else 's'}"


def _version() -> str:
    from idprov import __version__

    return __version__


def migrate(
    db: Database,
    namespace: str,
    migrations: Sequence[Migration],
    optional: Collection[str] = (),
) -> None:
    """Apply, in order and once each, the named ``migrations`` of ``namespace``.

    Each migration runs in its own transaction together with its record in
    ``idprov_migrations``, so a killed run leaves no half-applied migration and a
    re-run continues where it stopped. A file this process cannot write (a
    read-only userstore someone else owns, opened ``mode=ro``) is used without the
    ``optional`` ones still to apply (indexes: reads are slower, not different), and
    applied by the next process that can write it; needing others, it is refused
    (:class:`NeedsUpgradeError`), as a file a newer idprov upgraded is
    (:func:`pending_migrations`).
    """
    names = [n for n, _ in migrations]
    recorded = _recorded(db)
    pending = pending_migrations(
        recorded, namespace, names, "sqlite", lambda: _where(db, recorded), optional
    )
    if not pending or (_HELD.get() and set(pending) <= set(optional)):
        return
    if db.read_only:
        if set(pending) <= set(optional):
            return
        raise needs_upgrade_here(recorded, namespace, names, "sqlite", _where(db, recorded))
    query_only = db.execute("PRAGMA query_only").fetchone()[0]
    db.execute("PRAGMA query_only = OFF")  # a read command's first use of a new file
    db.recorded = None
    try:
        _apply(db, namespace, migrations)
    except (sqlite3.OperationalError, StoreError) as exc:
        if not _read_only_error(exc):
            raise
        if not set(pending) <= set(optional):
            error = needs_upgrade_here(recorded, namespace, names, "sqlite", _where(db, recorded))
            raise error from exc
    finally:
        db.execute(f"PRAGMA query_only = {int(query_only)}")


def _where(db: Database, recorded: Collection[tuple[str, str]]) -> str:
    """The file, in messages: idprov's state, or another database (a userstore's)."""
    what = "idprov's state" if any(space == "state" for space, _ in recorded) else "the database"
    return f"{what} at {_file_of(db.conn)}"


def _read_only_error(exc: BaseException) -> bool:
    """Whether SQLite refused a write because the file cannot be written (a read-only
    file, directory or mount), as itself or as the StoreError it became."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    return str(getattr(cause, "sqlite_errorname", "")).startswith("SQLITE_READONLY")


def _recorded(db: Database) -> set[tuple[str, str]]:
    """Every (namespace, name) in the file's ``idprov_migrations`` (none: no table),
    read once per connection (:func:`migrate` forgets it when it applies some)."""
    if db.recorded is None:
        rows = (
            db.execute("SELECT namespace, name FROM idprov_migrations").fetchall()
            if db.has_table("idprov_migrations")
            else []
        )
        db.recorded = {(str(r[0]), str(r[1])) for r in rows}
    return db.recorded


def _apply(db: Database, namespace: str, migrations: Sequence[Migration]) -> None:
    applied = _applied(db, namespace)
    for name, apply in migrations:
        if name in applied:
            continue
        with write_transaction(db):
            if name in _applied(db, namespace):
                continue  # another process applied it while we waited
            apply(db)
            db.execute(
                "INSERT INTO idprov_migrations (namespace, name, applied_at) VALUES (?, ?, ?)",
                [namespace, name, now()],
            )


def _applied(db: Database, namespace: str) -> set[str]:
    if not db.has_table("idprov_migrations"):
        db.execute(
            "CREATE TABLE IF NOT EXISTS idprov_migrations ("
            "namespace TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
            "PRIMARY KEY (namespace, name))"
        )
    rows = db.execute("SELECT name FROM idprov_migrations WHERE namespace = ?", [namespace])
    return {r[0] for r in rows.fetchall()}


class DatabasePool:
    """One connection per SQLite file for the life of a service, shared by its users."""

    def __init__(self, read_only: bool = False) -> None:
        self._open: dict[Path, Database] = {}
        self.read_only = read_only
        """Open existing files read-only (a file not there yet is still created)."""

    def get(self, path: Path) -> Database:
        key = path.expanduser().resolve()
        if key not in self._open:
            self._open[key] = self._open_one(key)
        return self._open[key]

    def _open_one(self, path: Path) -> Database:
        """Read-only: ``query_only`` where the file could be written (migrations may
        still run, see :func:`migrate`), ``mode=ro`` where it cannot."""
        if not self.read_only or not path.exists():
            return open_database(path)
        if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            db = open_database(path)
            db.execute("PRAGMA query_only = ON")
            # SQLite's default page cache: a read command walks a listing once (the
            # writers' 64 MiB cache would make its memory grow with the database)
            db.execute("PRAGMA cache_size = -2000")
            return db
        return open_database_read_only(path)

    def close(self) -> None:
        for db in self._open.values():
            db.close()
        self._open.clear()


def _cannot_begin(conn: sqlite3.Connection, exc: sqlite3.OperationalError) -> StoreError:
    """Why a write transaction could not start: busy (naming who holds the file),
    or what else SQLite says about the file (read-only, damaged...)."""
    path = _file_of(conn)
    if not str(getattr(exc, "sqlite_errorname", "SQLITE_BUSY")).startswith("SQLITE_BUSY"):
        error = from_sqlite_error(exc, [path])
        if error is not None:
            return error
    found = _processes(path, exclude=os.getpid())
    held = "held by " + (", ".join(_shown(p) for p in found) if found else "another process")
    copying = any(" state copy" in command for _, command in found)
    return StoreError(
        f"database {path} is busy: {exc}; {held}",
        hint="it is being copied to PostgreSQL (`idprov state copy`): once the copy is "
        "done, run this again with the new configuration (a change made in this file "
        "now would stay behind)"
        if copying
        else "wait for that command to finish and run this one again",
    )


def _file_of(conn: sqlite3.Connection) -> str:
    rows = conn.execute("PRAGMA database_list").fetchall()
    return next((str(r[2]) for r in rows if r[1] == "main" and r[2]), "(in memory)")


def holders(path: str, exclude: int | None = None) -> str:
    """Which processes have the database file open, read from /proc (Linux; other
    systems, or another user's processes, give "held by another process")."""
    found = processes_with(path, exclude)
    return "held by " + (", ".join(found) if found else "another process")


def processes_with(path: str, exclude: int | None = None) -> list[str]:
    """The processes that have the file ``path`` open, as ``pid N (command line)``,
    read from /proc (Linux; other systems, and other users' processes: none found)."""
    return [_shown(found) for found in _processes(path, exclude)]


def _shown(process: tuple[int, str]) -> str:
    pid, command = process
    return f"pid {pid} ({command[:80]})"


def _processes(path: str, exclude: int | None = None) -> list[tuple[int, str]]:
    """(pid, whole command line) of each process with the file ``path`` open."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        try:
            if pid == exclude or not any(os.readlink(fd) == path for fd in fd_dir.iterdir()):
                continue
            raw = (fd_dir.parent / "cmdline").read_bytes()
        except OSError:
            continue
        found.append((pid, " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)))
    return found
