"""idprov's own database: the audit log, the outbox and the ledger of provisioned
entities.

It lives at ``<data_dir>/idprov.db``, the same file as the embedded PRIMARY
userstore, so one transaction covers a local change and its records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from idprov.db import migrate, now

if TYPE_CHECKING:
    from idprov.provisioning.outbox import Ledger, Outbox


def _audit_schema(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE audit ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,"
        " application TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
        " outcome TEXT NOT NULL, details TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX audit_at ON audit (at)")
    db.execute("CREATE INDEX audit_target ON audit (target)")


def _outbound_schema(db: sqlite_utils.Database) -> None:
    from idprov.provisioning.outbox import create_tables

    create_tables(db)


def _imports_schema(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE imports ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, sha256 TEXT NOT NULL,"
        " options TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,"
        " lines_done INTEGER NOT NULL DEFAULT 0, actor TEXT NOT NULL, application TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX imports_file ON imports (sha256, options)")


def _audit_runs(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE audit ADD COLUMN run TEXT")
    db.execute("CREATE INDEX audit_run ON audit (run)")


def _internal_roles(db: sqlite_utils.Database) -> None:
    from idprov.provisioning.internal_roles import create_tables

    create_tables(db)


def _inbound_tokens(db: sqlite_utils.Database) -> None:
    from idprov.provisioning.tokens import create_tables

    create_tables(db)


MIGRATIONS = [
    ("0001_audit", _audit_schema),
    ("0002_outbox_ledger", _outbound_schema),
    ("0003_imports", _imports_schema),
    ("0004_audit_runs", _audit_runs),
    ("0005_internal_roles", _internal_roles),
    ("0006_inbound_tokens", _inbound_tokens),
]
STATE_FILENAME = "idprov.db"


@dataclass
class AuditEntry:
    """One line of the audit log: who, through which application, did what, when."""

    id: int
    at: str
    actor: str
    application: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)
    run: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditQuery:
    action: str | None = None
    target: str | None = None
    actor: str | None = None
    application: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 50
    run: str | None = None


class StateStore:
    """The audit log table (and later outbox/ledger) in idprov's own database."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        migrate(db, "state", MIGRATIONS)

    @classmethod
    def path_in(cls, data_dir: Path) -> Path:
        return data_dir / STATE_FILENAME

    @property
    def outbox(self) -> Outbox:
        from idprov.provisioning.outbox import Outbox

        return Outbox(self.db)

    @property
    def ledger(self) -> Ledger:
        from idprov.provisioning.outbox import Ledger

        return Ledger(self.db)

    def audit(
        self,
        *,
        actor: str,
        application: str,
        action: str,
        target: str,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        run: str | None = None,
    ) -> None:
        """Append one entry (``run``: the sync run it belongs to). No secrets in ``details``."""
        self.db.execute(
            "INSERT INTO audit (at, actor, application, action, target, outcome, details, run)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                now(),
                actor,
                application,
                action,
                target,
                outcome,
                json.dumps(details or {}, ensure_ascii=False, sort_keys=True),
                run,
            ],
        )

    def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """Newest first, filtered; ``target`` and ``action`` match as prefixes."""
        where, params = [], []
        for column in ("actor", "application", "run"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for column in ("action", "target"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"substr({column}, 1, ?) = ?")
                params += [len(value), value]
        if query.since:
            where.append("at >= ?")
            params.append(query.since)
        if query.until:
            where.append("at < ?")
            params.append(query.until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.db.execute(
            "SELECT id, at, actor, application, action, target, outcome, details, run FROM audit"
            f"{clause} ORDER BY id DESC LIMIT ?",
            [*params, query.limit],
        ).fetchall()
        return [
            AuditEntry(
                id=r[0],
                at=r[1],
                actor=r[2],
                application=r[3],
                action=r[4],
                target=r[5],
                outcome=r[6],
                details=json.loads(r[7]),
                run=r[8],
            )
            for r in rows
        ]
