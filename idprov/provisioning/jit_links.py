"""Which local user each federated login (an IdP and its subject) is.

A JIT login names its user by a claim (``sub``, ``email``...), and a name can be
anybody's: an IdP whose ``sub`` equals a local username would otherwise log in as
that local account. So the first login through an IdP that creates a user, or that
is allowed to take over one (``link_existing``), links (IdP, subject, userstore
domain) to that user's id, in table ``jit_links`` of idprov's state database; later
logins find the user by the link, follow it through renames, and never take another
user. Written by the unit of work, in the transaction of the login's change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idprov.db import now
from idprov.statedb import Migrations, ddl

if TYPE_CHECKING:
    from idprov.statedb import StateDB

MIGRATIONS: Migrations = {
    "sqlite": [
        (
            "0001_jit_links",
            ddl(
                "CREATE TABLE jit_links (idp TEXT NOT NULL, subject TEXT NOT NULL,"
                " domain TEXT NOT NULL, user_id TEXT NOT NULL, created TEXT NOT NULL,"
                " PRIMARY KEY (idp, subject, domain)) WITHOUT ROWID",
                "CREATE INDEX jit_links_user ON jit_links (user_id)",
            ),
        )
    ],
    "postgresql": [
        (
            "0001_jit_links",
            ddl(
                "CREATE TABLE jit_links (idp text NOT NULL, subject text NOT NULL,"
                " domain text NOT NULL, user_id text NOT NULL, created text NOT NULL,"
                " PRIMARY KEY (idp, subject, domain))",
                "CREATE INDEX jit_links_user ON jit_links (user_id)",
            ),
        )
    ],
}


class JitLinks:
    """(IdP, subject, domain) -> the local user id a login through it is."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.migrate("jit", MIGRATIONS)

    def user_id(self, idp: str, subject: str, domain: str) -> str | None:
        row = self.db.execute(
            "SELECT user_id FROM jit_links WHERE idp = ? AND subject = ? AND domain = ?",
            [idp, subject, domain.casefold()],
        ).fetchone()
        return None if row is None else str(row[0])

    def link(self, idp: str, subject: str, domain: str, user_id: str) -> None:
        """Link (or re-link, the old user being gone) a login to a user."""
        self.db.execute(
            "INSERT INTO jit_links VALUES (?, ?, ?, ?, ?) ON CONFLICT (idp, subject, domain)"
            " DO UPDATE SET user_id = excluded.user_id, created = excluded.created",
            [idp, subject, domain.casefold(), user_id, now()],
        )

    def forget_user(self, user_id: str) -> None:
        """Drop the links of a deleted user."""
        self.db.execute("DELETE FROM jit_links WHERE user_id = ?", [user_id])
