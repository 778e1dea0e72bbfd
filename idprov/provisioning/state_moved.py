"""The SQLite state's record that `idprov state copy` took it to PostgreSQL.

Read by every command that opens an SQLite state (:meth:`StateStore.open`): one
lookup in the file's schema, a query only once copied. Its own module, apart from
:mod:`idprov.provisioning.state_copy` (the copy itself, which only that command
needs), so that reading the record costs nothing at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from idprov.errors import ConfigError, IdprovError
from idprov.statedb import SqliteStateDB, StateDB

COPIED_TABLE = "state_copied"
"""The SQLite state's record of where a copy took it (see :class:`StateCopied`)."""


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
    row = state_db.execute(
        f"SELECT at, host, port, database, schema, config FROM {COPIED_TABLE}"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else StateCopied(str(state_db.path), *row)


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
