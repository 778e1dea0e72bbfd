"""The SQLite state's record that `idprov state copy` took it to PostgreSQL.

Read by every command that opens an SQLite state (:meth:`StateStore.open`): one
lookup in the file's schema, a query only once copied. Its own module, apart from
:mod:`idprov.provisioning.state_copy` (the copy itself, which only that command
needs), so that reading the record costs nothing at start-up.

A command reads the record when it opens the state, and writes later: one that opened
the file in the instant before the copy committed, then waited for the copy's write
lock, would find no record and write after the copy. So the copy also *fences* each
SQLite file it copied (:func:`fence`), in the transaction that records it: a trigger
on every table refuses every write, whoever makes it and whenever it opened the file
(an older idprov too). Nothing is checked at a write; the triggers cost nothing until
a copy made them, and `idprov state copy --forget` removes them (:func:`unfence`) from
exactly the files the record names (``fenced``), whether the configuration still names
them or not. A userstore file another configuration shares is fenced too: its refusal
names the file and the configuration whose copy fenced it, and the ways out (that
configuration's `--forget`, or `--forget --file FILE` to lift this file's fence
alone); :func:`fence_of` reads it back from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from idprov.errors import ConfigError, IdprovError
from idprov.statedb import SqliteStateDB, StateDB

if TYPE_CHECKING:
    from idprov.db import Database

COPIED_TABLE = "state_copied"
"""The SQLite state's record of where a copy took it (see :class:`StateCopied`)."""
FENCE = "idprov_state_copied_"
"""How the names of the triggers of :func:`fence` begin."""
REFUSED = "idprov state copy fence: "
"""How the error of a write a fence refused begins (see :func:`fenced_error`)."""
UNFENCED = (COPIED_TABLE, "idprov_migrations")
"""Tables a fence leaves writable: the record itself (`--forget` drops it), and the
migrations a newer idprov's read command records."""


@dataclass(frozen=True)
class StateCopied:
    """An SQLite state's record that `idprov state copy` took it to PostgreSQL: when,
    where (never a password), and the configuration that names it there."""

    path: str
    """The SQLite state file."""
    at: str
    host: str
    port: int
    database: str
    schema: str
    config: str
    """The new configuration's file."""
    copied_from: str = ""
    """The configuration whose copy it was ("" in a record an earlier idprov made)."""
    fenced: tuple[str, ...] = ()
    """Every SQLite file the copy fenced (:func:`fence`), the state's among them; empty
    in a record that did not keep them."""

    @property
    def where(self) -> str:
        return f"PostgreSQL at {self.host}:{self.port}/{self.database}, schema {self.schema}"

    @property
    def said(self) -> str:
        return (
            f"idprov's state in {self.path} was copied to {self.where} on {self.at} by "
            "`idprov state copy`"
        )

    def refusal(self) -> ConfigError:
        """The error of a command that would use this state: it is not idprov's now."""
        return ConfigError(
            f"{self.said}: use the configuration that names it ({self.config}, with "
            "`state: {url: ...}`); what this one changed would stay behind in the old file, "
            "unseen by the new state, and pushed again from a second ledger",
            hint=f"point --config or IDPROV_CONFIG (the timer's unit, idprov serve's) at "
            f"{self.config}; to abandon the move and use {self.path} again: `idprov state "
            "copy --forget` with this configuration (README: Moving to PostgreSQL)",
        )

    def file_refusal(self, path: str) -> ConfigError:
        """The error of a write to ``path``, a userstore file this copy took away, by
        whichever configuration uses it (another one sharing the file too)."""
        by = f" of {self.copied_from}" if self.copied_from else ""
        forget = f"`idprov --config {self.copied_from} state copy --forget`"
        return ConfigError(
            f"{path} was copied to PostgreSQL at {self.host}:{self.port}/{self.database} on "
            f"{self.at} by `idprov state copy`{by} "
            f"(with the state {self.path}), and is fenced: no write reaches it since, so "
            "that none stays behind unseen by the copy",
            hint=f"to abandon that move: {forget if by else 'its `state copy --forget`'}; "
            f"to go on using {path} from a configuration that shares it, leaving the copy as "
            f"it is (what is written there from then on, {self.config} does not see): "
            f"`idprov state copy --forget --file {path}`",
        )

    def warning(self) -> IdprovError:
        """What a command that only reads this state says beside its output."""
        warning = IdprovError(
            f"{self.said}: this shows the old file, not the state idprov uses now",
            hint=f"to see the current state, run the command with --config {self.config}",
        )
        warning.code = "state_copied"
        return warning


def copied_to(state_db: SqliteStateDB) -> StateCopied | None:
    """The record of the copy that took this SQLite state away; None if none did."""
    if not state_db.db.has_table(COPIED_TABLE):
        return None
    kept = {str(r[1]) for r in state_db.execute(f"PRAGMA table_info({COPIED_TABLE})")}
    later = ", ".join(c if c in kept else "NULL" for c in RECORD_COLUMNS)
    row = state_db.execute(
        f"SELECT at, host, port, database, schema, config, {later} FROM {COPIED_TABLE}"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    at, host, port, database, schema, config, copied_from, fenced = row
    files = tuple(str(f) for f in json.loads(fenced)) if fenced else ()
    return StateCopied(
        str(state_db.path), at, host, port, database, schema, config, copied_from or "", files
    )


RECORD_COLUMNS = ("copied_from", "fenced")
"""The columns of the record a later idprov added (see :class:`StateCopied`)."""


def copied_away(state_db: StateDB, reading: bool) -> StateCopied | None:
    """For a command opening ``state_db`` as its state: the ConfigError of
    :meth:`StateCopied.refusal` if a copy took it to PostgreSQL, unless the command
    only reads (``reading``), which gets the record to warn with. One lookup in the
    file's schema, and a query only once copied."""
    if not isinstance(state_db, SqliteStateDB):
        return None
    copied = copied_to(state_db)
    if copied is not None and not reading:
        raise copied.refusal()
    return copied


def fence(db: Database, copied: StateCopied, path: str) -> None:
    """Triggers on every table of ``db`` (the SQLite file ``path``; but
    :data:`UNFENCED`) that refuse each insert, update and delete with ``copied``'s
    refusal (the state's, or :meth:`StateCopied.file_refusal` for a userstore file),
    so that no write reaches a file the copy took away, even one by a process that
    read the record before it was there. Run in the copy's write transaction,
    committed with its record."""
    refusal = copied.refusal() if path == copied.path else copied.file_refusal(path)
    text = f"{REFUSED}{refusal.message}\n{refusal.hint}".replace("'", "''")
    for table in _fenced_tables(db):
        quoted = '"' + table.replace('"', '""') + '"'
        for op in ("INSERT", "UPDATE", "DELETE"):
            name = f'"{FENCE}{table.replace(chr(34), "")}_{op.lower()}"'
            db.execute(
                f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {op} ON {quoted}"
                f" BEGIN SELECT RAISE(ABORT, '{text}'); END"
            )


def _fenced_tables(db: Database) -> list[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%'"
        " ESCAPE '\\'"
    ).fetchall()
    return [str(r[0]) for r in rows if r[0] not in UNFENCED]


def unfence(db: Database) -> None:
    """Drop the triggers of :func:`fence` (in the caller's transaction)."""
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, ?) = ?",
        [len(FENCE), FENCE],
    ).fetchall()
    for (name,) in rows:
        db.execute('DROP TRIGGER IF EXISTS "' + str(name).replace('"', '""') + '"')


def fence_of(db: Database) -> ConfigError | None:
    """The refusal a fence of :func:`fence` gives a write to ``db`` (the file names
    the copy that fenced it); None when the file is not fenced."""
    row = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, ?) = ? LIMIT 1",
        [len(FENCE), FENCE],
    ).fetchone()
    if row is None:
        return None
    sql = str(row[0])
    start, end = sql.find("RAISE(ABORT, '"), sql.rfind("'); END")
    text = sql[start + len("RAISE(ABORT, '") : end].replace("''", "'")
    return fenced_error(Exception(text)) or ConfigError("fenced by `idprov state copy`")


def fenced_error(exc: BaseException) -> ConfigError | None:
    """The refusal of a write a fence stopped (an sqlite3 error whose message begins
    with :data:`REFUSED`), as the ConfigError a command opening the state after the
    copy gets; None for any other error."""
    text = str(exc)
    if not text.startswith(REFUSED):
        return None
    message, _, hint = text[len(REFUSED) :].partition("\n")
    return ConfigError(message, hint=hint or None)
