"""The embedded userstore: users and roles in an SQLite file.

Without a ``path`` it lives in idprov's own database (``<data_dir>/idprov.db``), so
a change, its audit record and its outbound operations commit in one transaction.
The queries are :mod:`idprov.userstores.sql`'s, shared with PostgreSQL; this module
is the schema, the transactions, and how a claim filter reads the JSON.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from idprov.config.claims import ClaimDefinition
from idprov.config.models import SqliteUserstoreConfig
from idprov.db import Database, migrate, write_transaction
from idprov.errors import StoreError
from idprov.statedb import Cursor
from idprov.userstores.sql import SqlUserStore
from idprov.userstores.sql_read import name_key

__all__ = ["MIGRATIONS", "SqliteUserStore", "name_key"]


def _create_schema(db: Database) -> None:
    """The tables and indexes (as sqlite-utils made them for the first databases)."""
    db.execute(
        'CREATE TABLE "users" ("id" TEXT PRIMARY KEY, "username" TEXT NOT NULL,'
        ' "username_key" TEXT NOT NULL, "claims" TEXT NOT NULL, "password_hash" TEXT,'
        ' "created" TEXT NOT NULL, "modified" TEXT NOT NULL)'
    )
    db.execute('CREATE UNIQUE INDEX "idx_users_username_key" ON "users" ("username_key")')
    db.execute(
        'CREATE TABLE "roles" ("id" TEXT PRIMARY KEY, "name" TEXT NOT NULL,'
        ' "name_key" TEXT NOT NULL, "created" TEXT NOT NULL, "modified" TEXT NOT NULL)'
    )
    db.execute('CREATE UNIQUE INDEX "idx_roles_name_key" ON "roles" ("name_key")')
    db.execute(
        "CREATE TABLE user_roles ("
        " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
        " role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,"
        " PRIMARY KEY (user_id, role_id)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX user_roles_role ON user_roles (role_id, user_id)")


def _claim_text(claim: str) -> str:
    return f"lower(json_extract(claims, '$.\"{claim}\"'))"


def _claim_held(claim: str) -> str:
    """True for every user holding ``claim`` (and maybe a few more: its name in quotes
    anywhere in the JSON), answered by an index that needs no JSON parse per row."""
    return f"instr(claims, '\"{claim}\"') > 0"


INDEXED_CLAIMS = ("email",)
"""Claims SCIM clients look users up by, with an expression index each (each costs
imports a parse of the claims per row: bench/import_users.py)."""
INDEXED_LISTS = ("emails",)
"""Multi-valued claims whose holders an index finds."""


def _filter_indexes(db: Database) -> None:
    """What searches in the store use (see :mod:`idprov.userstores.sql_filters`)."""
    db.execute("CREATE INDEX users_modified ON users (modified)")
    for claim in INDEXED_CLAIMS:
        db.execute(f"CREATE INDEX users_claim_{claim} ON users ({_claim_text(claim)})")
    for claim in INDEXED_LISTS:
        held = f"instr(claims, '\"{claim}\"')"
        db.execute(f"CREATE INDEX users_claim_{claim} ON users ({held})")


def _claim_indexes(db: Database) -> None:
    """The users whose ``manager`` names a user, found when that user is renamed or
    deleted (see ``UnitOfWork._reports_of``; a scan of 100,000 users' claims took
    0.1 s, per delete), and by their home e-mail (a SCIM filter on ``emails`` asks for
    all three e-mail claims: one without an index made it a scan)."""
    for claim in ("manager", "home_email"):
        db.execute(f"CREATE INDEX users_claim_{claim} ON users ({_claim_text(claim)})")


MIGRATIONS = [
    ("0001_users_roles", _create_schema),
    ("0002_filter_indexes", _filter_indexes),
    ("0003_claim_indexes", _claim_indexes),
]
OPTIONAL = {"0003_claim_indexes"}
"""Migrations a store opened read-only goes on without (see :func:`idprov.db.migrate`)."""


class SqliteUserStore(SqlUserStore):
    """Users and roles of one domain in one SQLite file."""

    type: ClassVar[str] = "sqlite"
    config: SqliteUserstoreConfig
    no_limit: ClassVar[int | None] = -1

    def __init__(
        self,
        config: SqliteUserstoreConfig,
        claims: Mapping[str, ClaimDefinition],
        db: Database,
    ):
        super().__init__(config, claims)
        self.db = db
        try:
            migrate(db, "userstore", MIGRATIONS, optional=OPTIONAL)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"userstore {self.domain}: {exc}") from exc

    @classmethod
    def default_path(cls, data_dir: Path) -> Path:
        return data_dir / "idprov.db"

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with write_transaction(self.db):
            yield

    def shares_connection(self, db: object) -> bool:
        return getattr(db, "conn", None) is self.db.conn

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(sql, list(params))

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.conn.executemany(sql, rows)

    def _claim_text(self, claim: str) -> str:
        return _claim_text(claim)

    def _claim_held(self, claim: str) -> str:
        return _claim_held(claim)

    def _claim_elements(self, claim: str) -> tuple[str, str]:
        return f"json_each(users.claims, '$.\"{claim}\"')", "value"

    def _claim_match(self, claim: str, value: str) -> tuple[str, list[Any]]:
        return (
            "EXISTS (SELECT 1 FROM json_each(users.claims, ?) WHERE value = ?)",
            [f'$."{claim}"', value],
        )
