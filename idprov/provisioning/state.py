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
    from idprov.provisioning.ledger import Ledger
    from idprov.provisioning.outbox import Outbox


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


def _outbox_worker(db: sqlite_utils.Database) -> None:
    from idprov.provisioning.outbox import worker_columns

    worker_columns(db)


def _import_batches(db: sqlite_utils.Database) -> None:
    """The batch an import is writing to a store that cannot roll back (a directory):
    a re-run after a kill finishes exactly those lines."""
    db.execute("ALTER TABLE imports ADD COLUMN batch_first INTEGER")
    db.execute("ALTER TABLE imports ADD COLUMN batch_last INTEGER")


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
    ("0007_outbox_worker", _outbox_worker),
    ("0008_import_batches", _import_batches),
]
STATE_FILENAME = "idprov.db"


def audit_row(
    actor: str,
    application: str,
    action: str,
    target: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    run: str | None = None,
) -> tuple[Any, ...]:
    """One audit entry as :meth:`StateStore.audit_many` writes it."""
    encoded = json.dumps(details or {}, ensure_ascii=False, sort_keys=True)
    return (now(), actor, application, action, target, outcome, encoded, run)


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
    def imports(self) -> ImportJournal:
        return ImportJournal(self.db)

    @property
    def ledger(self) -> Ledger:
        from idprov.provisioning.ledger import Ledger

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
        self.audit_many([audit_row(actor, application, action, target, outcome, details, run)])

    def audit_many(self, rows: list[tuple[Any, ...]]) -> None:
        """Append entries made with :func:`audit_row` (one statement)."""
        self.db.conn.executemany(
            "INSERT INTO audit (at, actor, application, action, target, outcome, details, run)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
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


@dataclass
class ImportRun:
    """An unfinished import of one file with one set of options (see csv_import)."""

    id: int
    lines_done: int
    batch: tuple[int, int] | None
    """Lines (first, last) of a batch being written to a store that cannot roll back,
    when the run was killed in it: a re-run finishes exactly those lines."""


class ImportJournal:
    """The ``imports`` table: how far each import got, so that a re-run resumes."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def unfinished(self, sha256: str, options: str) -> ImportRun | None:
        row = self.db.execute(
            "SELECT id, lines_done, batch_first, batch_last FROM imports WHERE sha256 = ?"
            " AND options = ? AND finished_at IS NULL ORDER BY id DESC LIMIT 1",
            [sha256, options],
        ).fetchone()
        if row is None:
            return None
        batch = (int(row[2]), int(row[3])) if row[2] is not None else None
        return ImportRun(int(row[0]), int(row[1]), batch)

    def start(self, path: str, sha256: str, options: str, actor: str, application: str) -> int:
        cur = self.db.execute(
            "INSERT INTO imports (path, sha256, options, started_at, lines_done, actor,"
            " application) VALUES (?, ?, ?, ?, 0, ?, ?)",
            [path, sha256, options, now(), actor, application],
        )
        return int(cur.lastrowid or 0)

    def writing(self, import_id: int, first: int, last: int) -> None:
        """Lines ``first``..``last`` are about to go to a store that cannot roll back."""
        self.db.execute(
            "UPDATE imports SET batch_first = ?, batch_last = ? WHERE id = ?",
            [first, last, import_id],
        )

    def written(self, import_id: int, last_line: int) -> None:
        """Every line up to ``last_line`` is written, with its records."""
        self.db.execute(
            "UPDATE imports SET lines_done = ?, batch_first = NULL, batch_last = NULL WHERE id = ?",
            [last_line, import_id],
        )

    def finish(self, import_id: int) -> None:
        self.db.execute("UPDATE imports SET finished_at = ? WHERE id = ?", [now(), import_id])
