"""The ``externalId`` each application's SCIM client gave a user or role.

SCIM clients (Entra, Okta) set ``externalId`` on what they create and look it up by
filter. idprov keeps it per application in table ``inbound_external_ids`` of its
state database, written by the unit of work in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from idprov.statedb import Migrations, ddl

if TYPE_CHECKING:
    from idprov.statedb import StateDB


def _external_ids_schema(db: StateDB) -> None:
    db.execute(
        "CREATE TABLE inbound_external_ids ("
        " application TEXT NOT NULL, kind TEXT NOT NULL, local_id TEXT NOT NULL,"
        " external_id TEXT NOT NULL, PRIMARY KEY (application, kind, local_id)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE INDEX inbound_external_ids_value ON inbound_external_ids"
        " (application, kind, external_id)"
    )


MIGRATIONS: Migrations = {
    "sqlite": [("0001_external_ids", _external_ids_schema)],
    "postgresql": [
        (
            "0001_external_ids",
            ddl(
                "CREATE TABLE inbound_external_ids (application text NOT NULL,"
                " kind text NOT NULL, local_id text NOT NULL, external_id text NOT NULL,"
                " PRIMARY KEY (application, kind, local_id))",
                "CREATE INDEX inbound_external_ids_value ON inbound_external_ids"
                " (application, kind, external_id)",
            ),
        )
    ],
}


class ExternalIds:
    """The ``externalId`` each application's SCIM client gave a user or role."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.migrate("inbound", MIGRATIONS)

    def get_many(self, application: str, kind: str, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows = self.db.execute(
                "SELECT local_id, external_id FROM inbound_external_ids WHERE application = ?"
                f" AND kind = ? AND local_id IN ({','.join('?' * len(chunk))})",
                [application, kind, *chunk],
            ).fetchall()
            out.update({r[0]: r[1] for r in rows})
        return out

    def find(self, application: str, kind: str, external_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT local_id FROM inbound_external_ids"
            " WHERE application = ? AND kind = ? AND external_id = ?",
            [application, kind, external_id],
        ).fetchall()
        return [r[0] for r in rows]

    def set(self, application: str, kind: str, local_id: str, value: str | None) -> None:
        """Set (None: remove) one externalId; inside the unit of work's transaction."""
        if value is None:
            self.db.execute(
                "DELETE FROM inbound_external_ids"
                " WHERE application = ? AND kind = ? AND local_id = ?",
                [application, kind, local_id],
            )
        else:
            self.db.execute(
                "INSERT INTO inbound_external_ids VALUES (?, ?, ?, ?) ON CONFLICT"
                " (application, kind, local_id) DO UPDATE SET external_id = excluded.external_id",
                [application, kind, local_id, value],
            )

    def forget(self, kind: str, local_id: str) -> None:
        """Drop every application's externalId of a deleted user or role."""
        self.db.execute(
            "DELETE FROM inbound_external_ids WHERE kind = ? AND local_id = ?", [kind, local_id]
        )
