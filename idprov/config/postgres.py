"""Configuration of PostgreSQL connections: userstores (``type: postgres``) and idprov's
state (``state: {url: ...}``), apart from the other models so that commands on the
embedded default do not pay for it.

The URL names the server, the database and the user; the password is a secret
reference of its own (``password: env:PGPASSWORD``), never part of the URL. TLS with
certificate and host name checks is the default (``sslmode: verify-full``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

from idprov.config.models import StateConfig, UserstoreConfig
from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.config.urls import refuse_url_credentials

SSL_MODES = ("disable", "require", "verify-ca", "verify-full")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
URL_FORM = "postgresql://USER@HOST[:PORT]/DATABASE"
PASSWORD_KEY = "password: env:NAME (or file:PATH, keyring:NAME)"


@dataclass(frozen=True)
class PostgresConnection:
    """Where a PostgreSQL database is and how to reach it: the keys a userstore and
    the state share."""

    url: str = ""
    password: SecretRef | None = None
    sslmode: Literal["disable", "require", "verify-ca", "verify-full"] = "verify-full"
    ca_file: str | None = None
    schema: str = "public"
    connect_timeout: int = 10

    def check_connection(self) -> None:
        """Raise :class:`Invalid` naming the key that is wrong."""
        self.parsed_url()
        if self.ca_file and self.sslmode in ("disable",):
            raise Invalid("ca_file needs sslmode require, verify-ca or verify-full", "ca_file")
        if not SCHEMA_NAME.match(self.schema):
            raise Invalid("a schema name is lower-case letters, digits and '_'", "schema")
        if self.connect_timeout < 1:
            raise Invalid("must be at least 1 (seconds)", "connect_timeout")

    def parsed_url(self) -> SplitResult:
        """The URL, checked: scheme, host, user and database, no password, no query."""
        try:
            url = urlsplit(self.url)
            url.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise Invalid(f"expected {URL_FORM}", "url") from None
        refuse_url_credentials(url, "url", PASSWORD_KEY, user_allowed=True)
        if url.scheme not in ("postgresql", "postgres") or not url.hostname:
            raise Invalid(f"expected {URL_FORM}", "url")
        if not url.username or not url.path.strip("/") or "/" in url.path.strip("/"):
            raise Invalid(f"name the user and the database: {URL_FORM}", "url")
        if url.query or url.fragment:
            raise Invalid(
                "options are keys of the userstore (sslmode, ca_file...), not ?query", "url"
            )
        return url

    @property
    def host(self) -> str:
        return str(self.parsed_url().hostname)

    @property
    def port(self) -> int:
        return self.parsed_url().port or 5432

    @property
    def database(self) -> str:
        return unquote(self.parsed_url().path.strip("/"))

    @property
    def user(self) -> str:
        return unquote(self.parsed_url().username or "")

    @property
    def where(self) -> str:
        """``host:port/database`` as user, for messages (never the password)."""
        return f"{self.host}:{self.port}/{self.database} as {self.user}"


@dataclass(frozen=True)
class PostgresUserstoreConfig(UserstoreConfig, PostgresConnection):
    """A PostgreSQL database (WSO2's JDBC userstore): users, claims, roles and
    memberships in three tables of ``schema``."""

    type: Literal["postgres"] = "postgres"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_connection()


@dataclass(frozen=True)
class PostgresStateConfig(StateConfig, PostgresConnection):
    """idprov's own state (audit log, outbox, ledger, tokens, journals, locks) in
    ``schema`` of a PostgreSQL database, shared by every idprov process that names it."""

    type: Literal["postgres"] = "postgres"

    def __post_init__(self) -> None:
        self.check_connection()
