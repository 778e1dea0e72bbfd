"""The outbox and the ledger: idprov's memory of outbound provisioning.

The **outbox** holds one row per (identity provider, user or role) that needs to be
brought up to date there. It records *that* something must be reconciled, not a
payload: the engine computes what to send from the current local state when it
drains, so repeated changes coalesce and nothing stale or secret is stored. A row
is written in the same transaction as the local change (same SQLite file as the
embedded store), removed when done, and kept with its last error when it fails.

The **ledger** holds, per (identity provider, user or role), the remote id, the
attributes last sent and their hash, whether idprov created the remote object,
and its state (``creating`` while a create is in flight, ``active``,
``disabled``); ``ledger_members`` the group memberships idprov made remotely.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import sqlite_utils

from idprov.db import now

Kind = Literal["user", "role"]
STALE_AFTER_SECONDS = 300


def create_tables(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE outbox ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, idp TEXT NOT NULL, kind TEXT NOT NULL,"
        " local_id TEXT NOT NULL, domain TEXT NOT NULL, label TEXT NOT NULL,"
        " status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT, last_status INTEGER, enqueued_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL, UNIQUE (idp, kind, local_id))"
    )
    db.execute("CREATE INDEX outbox_status ON outbox (status, updated_at)")
    db.execute(
        "CREATE TABLE ledger ("
        " idp TEXT NOT NULL, kind TEXT NOT NULL, local_id TEXT NOT NULL,"
        " domain TEXT NOT NULL, label TEXT NOT NULL, remote_id TEXT, state TEXT NOT NULL,"
        " hash TEXT, sent TEXT, created_by_idprov INTEGER NOT NULL DEFAULT 1,"
        " updated_at TEXT NOT NULL, PRIMARY KEY (idp, kind, local_id)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE ledger_members ("
        " idp TEXT NOT NULL, role_id TEXT NOT NULL, user_id TEXT NOT NULL,"
        " PRIMARY KEY (idp, role_id, user_id)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX ledger_members_user ON ledger_members (idp, user_id)")


@dataclass
class OutboxRow:
    """One pending or failed reconciliation of a user or role at an IdP."""

    id: int
    idp: str
    kind: str
    local_id: str
    domain: str
    label: str
    status: str
    attempts: int
    last_error: str | None
    last_status: int | None
    enqueued_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LedgerEntry:
    """What idprov knows of one provisioned entity at one IdP."""

    idp: str
    kind: str
    local_id: str
    domain: str
    label: str
    remote_id: str | None
    state: str
    hash: str | None
    sent: dict[str, Any] | None
    created_by_idprov: bool
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_OUTBOX_COLUMNS = (
    "id, idp, kind, local_id, domain, label, status, attempts, last_error, last_status,"
    " enqueued_at, updated_at"
)


class Outbox:
    """Durable queue of reconciliations, in idprov's state database."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def enqueue(
        self, idps: Sequence[str], kind: Kind, local_id: str, domain: str, label: str
    ) -> list[int]:
        """Ask for ``kind local_id`` to be reconciled at each IdP; an existing row is
        reset to pending (changes coalesce). Returns the row ids. Call inside the
        transaction of the local change."""
        stamp = now()
        ids = []
        for idp in idps:
            row = self.db.execute(
                "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (idp, kind, local_id) DO UPDATE SET status = 'pending',"
                " label = excluded.label, domain = excluded.domain,"
                " enqueued_at = excluded.enqueued_at, updated_at = excluded.updated_at"
                " RETURNING id",
                [idp, kind, local_id, domain, label, stamp, stamp],
            ).fetchone()
            ids.append(int(row[0]))
        return ids

    def rows(
        self,
        ids: Iterable[int] | None = None,
        *,
        idps: Sequence[str] | None = None,
        status: str | None = None,
        stale_pending: bool = False,
    ) -> list[OutboxRow]:
        """Rows by id, or by IdP/status; ``stale_pending`` adds pending rows left by a
        command that stopped before draining them."""
        where: list[str] = []
        params: list[Any] = []
        if ids is not None:
            id_list = list(ids)
            where.append(f"id IN ({','.join('?' * len(id_list))})" if id_list else "0")
            params += id_list
        if idps is not None:
            where.append(f"idp IN ({','.join('?' * len(idps))})")
            params += list(idps)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        clause = " AND ".join(where) or "1"
        if stale_pending:
            clause = (
                f"({clause}) OR (status = 'pending' AND "
                f"updated_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', "
                f"'-{STALE_AFTER_SECONDS} seconds'))"
            )
        rows = self.db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {clause} ORDER BY id", params
        ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def done(self, row: OutboxRow) -> None:
        """The reconciliation succeeded: remove the row, unless it was re-enqueued
        (a newer change) since it was read."""
        self.db.execute(
            "DELETE FROM outbox WHERE id = ? AND enqueued_at = ?", [row.id, row.enqueued_at]
        )

    def failed(self, row: OutboxRow, error: str, status: int | None, attempts: int) -> None:
        self.db.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + ?, last_error = ?,"
            " last_status = ?, updated_at = ? WHERE id = ?",
            [attempts, error, status, now(), row.id],
        )

    def count(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}


class Ledger:
    """Remote ids, last-sent attributes and memberships, per IdP."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    _COLUMNS = (
        "idp, kind, local_id, domain, label, remote_id, state, hash, sent, created_by_idprov,"
        " updated_at"
    )

    def get(self, idp: str, kind: str, local_id: str) -> LedgerEntry | None:
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM ledger WHERE idp = ? AND kind = ? AND local_id = ?",
            [idp, kind, local_id],
        ).fetchone()
        return None if row is None else self._entry(row)

    def get_many(self, idp: str, kind: str, local_ids: Sequence[str]) -> list[LedgerEntry]:
        """The entries that exist among ``local_ids`` (in chunks of 500)."""
        out = []
        for start in range(0, len(local_ids), 500):
            chunk = list(local_ids[start : start + 500])
            rows = self.db.execute(
                f"SELECT {self._COLUMNS} FROM ledger WHERE idp = ? AND kind = ? AND local_id"
                f" IN ({','.join('?' * len(chunk))})",
                [idp, kind, *chunk],
            ).fetchall()
            out += [self._entry(r) for r in rows]
        return out

    @staticmethod
    def _entry(row: Any) -> LedgerEntry:
        sent = json.loads(row[8]) if row[8] else None
        return LedgerEntry(
            idp=row[0],
            kind=row[1],
            local_id=row[2],
            domain=row[3],
            label=row[4],
            remote_id=row[5],
            state=row[6],
            hash=row[7],
            sent=sent,
            created_by_idprov=bool(row[9]),
            updated_at=row[10],
        )

    def for_idp(self, idp: str, kind: str) -> dict[str, LedgerEntry]:
        """Every entry of one kind at one IdP, by local id (one query)."""
        rows = self.db.execute(
            f"SELECT {self._COLUMNS} FROM ledger WHERE idp = ? AND kind = ?", [idp, kind]
        ).fetchall()
        return {r[2]: self._entry(r) for r in rows}

    def all_members(self, idp: str) -> dict[str, set[str]]:
        """Role id -> the user ids idprov put in its group at ``idp``."""
        out: dict[str, set[str]] = {}
        for role_id, user_id in self.db.execute(
            "SELECT role_id, user_id FROM ledger_members WHERE idp = ?", [idp]
        ).fetchall():
            out.setdefault(role_id, set()).add(user_id)
        return out

    def digest(self, idps: Sequence[str]) -> str:
        """A hash of the ledger's state at ``idps`` (a saved plan is refused if it moved)."""
        import hashlib

        h = hashlib.sha256()
        for idp in sorted(idps):
            for row in self.db.execute(
                "SELECT kind, local_id, remote_id, state, hash FROM ledger WHERE idp = ?"
                " ORDER BY kind, local_id",
                [idp],
            ):
                h.update(repr(row).encode())
            for row in self.db.execute(
                "SELECT role_id, user_id FROM ledger_members WHERE idp = ? ORDER BY 1, 2", [idp]
            ):
                h.update(repr(row).encode())
        return h.hexdigest()

    def remote_ids(self, idp: str, user_ids: Iterable[str]) -> dict[str, str]:
        """Remote ids of provisioned, active users among ``user_ids``."""
        ids = list(user_ids)
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.db.execute(
                "SELECT local_id, remote_id FROM ledger WHERE idp = ? AND kind = 'user'"
                f" AND state = 'active' AND remote_id IS NOT NULL AND local_id IN"
                f" ({','.join('?' * len(chunk))})",
                [idp, *chunk],
            ).fetchall()
            out.update({r[0]: r[1] for r in rows})
        return out

    def mark_creating(self, entities: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Note that creates are about to be sent, for (idp, kind, local_id, domain,
        label) tuples, so that a crash mid-create is recognised on the next run."""
        stamp = now()
        self.db.conn.executemany(
            "INSERT INTO ledger (idp, kind, local_id, domain, label, state, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'creating', ?) ON CONFLICT DO NOTHING",
            [(*entity, stamp) for entity in entities],
        )

    def record(self, entry: LedgerEntry) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO ledger (idp, kind, local_id, domain, label, remote_id,"
            " state, hash, sent, created_by_idprov, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                entry.idp,
                entry.kind,
                entry.local_id,
                entry.domain,
                entry.label,
                entry.remote_id,
                entry.state,
                entry.hash,
                json.dumps(entry.sent, ensure_ascii=False) if entry.sent is not None else None,
                int(entry.created_by_idprov),
                now(),
            ],
        )

    def forget(self, idp: str, kind: str, local_id: str) -> None:
        self.db.execute(
            "DELETE FROM ledger WHERE idp = ? AND kind = ? AND local_id = ?", [idp, kind, local_id]
        )
        column = "user_id" if kind == "user" else "role_id"
        self.db.execute(
            f"DELETE FROM ledger_members WHERE idp = ? AND {column} = ?", [idp, local_id]
        )

    def members(self, idp: str, role_id: str) -> set[str]:
        rows = self.db.execute(
            "SELECT user_id FROM ledger_members WHERE idp = ? AND role_id = ?", [idp, role_id]
        ).fetchall()
        return {r[0] for r in rows}

    def groups_of(self, idp: str, user_id: str) -> list[str]:
        """Role ids whose remote group holds this user (as idprov made it)."""
        rows = self.db.execute(
            "SELECT role_id FROM ledger_members WHERE idp = ? AND user_id = ?", [idp, user_id]
        ).fetchall()
        return [r[0] for r in rows]

    def set_members(
        self, idp: str, role_id: str, added: Iterable[str], removed: Iterable[str]
    ) -> None:
        self.db.conn.executemany(
            "INSERT OR IGNORE INTO ledger_members (idp, role_id, user_id) VALUES (?, ?, ?)",
            [(idp, role_id, u) for u in added],
        )
        self.db.conn.executemany(
            "DELETE FROM ledger_members WHERE idp = ? AND role_id = ? AND user_id = ?",
            [(idp, role_id, u) for u in removed],
        )
