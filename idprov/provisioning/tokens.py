"""Bearer tokens of `idprov serve`, each bound to an application.

`idprov token create --app NAME` makes one and shows it once; only its SHA-256
digest is stored (table ``inbound_tokens`` of idprov's state), so the database never
holds a usable token. Tokens are listed and revoked by their id; a revoked token
stops working at once, since every request looks its digest up. Each token has a
scope: ``write`` (the default: everything) or ``read`` (GET and searches only).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from idprov.db import now
from idprov.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from idprov.statedb import Migrations, StateDB

PREFIX = "idprov"
SCOPES = ("read", "write")


def create_tables(db: StateDB) -> None:
    db.execute(
        "CREATE TABLE inbound_tokens (id TEXT PRIMARY KEY, application TEXT NOT NULL,"
        " digest TEXT NOT NULL UNIQUE, description TEXT NOT NULL, created_at TEXT NOT NULL,"
        " created_by TEXT NOT NULL, revoked_at TEXT)"
    )


def _scope_column(db: StateDB) -> None:
    db.execute("ALTER TABLE inbound_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'write'")


MIGRATIONS: Migrations = {
    dialect: [("0001_scope", _scope_column)] for dialect in ("sqlite", "postgresql")
}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class TokenRecord:
    """A token as listed: never the token itself."""

    id: str
    application: str
    description: str
    created_at: str
    created_by: str
    revoked_at: str | None
    scope: str = "write"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Caller:
    """Who a live token is: its id (never the token), application and scope."""

    token_id: str
    application: str
    scope: str


@dataclass
class NewToken:
    """A token just made: ``token`` is shown this once and stored nowhere."""

    record: TokenRecord
    token: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "token": self.token}


class InboundTokens:
    """The token table in idprov's state database."""

    def __init__(self, db: StateDB):
        self.db = db
        db.migrate("tokens", MIGRATIONS)

    def create(
        self, application: str, description: str, actor: str, scope: str = "write"
    ) -> NewToken:
        if scope not in SCOPES:
            raise UsageError(f"no token scope {scope!r}", hint="scopes: read, write")
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(token_id, application, description, now(), actor, None, scope)
        self.db.execute(
            "INSERT INTO inbound_tokens (id, application, digest, description, created_at,"
            " created_by, revoked_at, scope) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
            [token_id, application, digest(token), description, record.created_at, actor, scope],
        )
        return NewToken(record, token)

    def all(self) -> list[TokenRecord]:
        rows = self.db.execute(
            "SELECT id, application, description, created_at, created_by, revoked_at, scope"
            " FROM inbound_tokens ORDER BY created_at"
        ).fetchall()
        return [TokenRecord(*r) for r in rows]

    def revoke(self, token_id: str) -> TokenRecord:
        cur = self.db.execute(
            "UPDATE inbound_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            [now(), token_id],
        )
        found = [r for r in self.all() if r.id == token_id]
        if not found:
            raise NotFoundError(
                f"no token with id {token_id!r}", hint="list them with `idprov token list`"
            )
        if not cur.rowcount and found[0].revoked_at is None:  # pragma: no cover - race
            raise NotFoundError(f"token {token_id!r} could not be revoked")
        return found[0]

    def caller(self, token: str) -> Caller | None:
        """Who a live token is, or None (unknown or revoked)."""
        wanted = digest(token)
        row = self.db.execute(
            "SELECT digest, id, application, scope FROM inbound_tokens WHERE digest = ?"
            " AND revoked_at IS NULL",
            [wanted],
        ).fetchone()
        if row is None or not hmac.compare_digest(row[0], wanted):
            return None
        return Caller(str(row[1]), str(row[2]), str(row[3]))

    def applications(self) -> set[str]:
        rows = self.db.execute(
            "SELECT DISTINCT application FROM inbound_tokens WHERE revoked_at IS NULL"
        ).fetchall()
        return {r[0] for r in rows}
