"""Userstores: where users and roles live, one module per type behind one contract."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from idprov.config.claims import ClaimDefinition
from idprov.config.loader import MISSING_STORE_HINT, missing_store_file
from idprov.config.models import SqliteUserstoreConfig, UserstoreConfig
from idprov.db import DatabasePool
from idprov.errors import StoreError
from idprov.userstores.base import UserStore

__all__ = ["UserStore", "open_userstore"]


def open_userstore(
    config: UserstoreConfig,
    claims: Mapping[str, ClaimDefinition],
    pool: DatabasePool,
    data_dir: Path,
) -> UserStore:
    """Open the userstore ``config`` describes; heavy client libraries load only here."""
    if isinstance(config, SqliteUserstoreConfig):
        from idprov.userstores.sqlite import SqliteUserStore

        path = Path(config.path) if config.path else SqliteUserStore.default_path(data_dir)
        problem = missing_store_file(config.domain, path) if config.read_only else None
        if problem is not None:
            raise StoreError(problem, hint=MISSING_STORE_HINT)
        return SqliteUserStore(config, claims, pool.get(path))
    if config.type == "ldap":
        from idprov.config.ldap import LdapUserstoreConfig
        from idprov.userstores.ldap import LdapUserStore

        assert isinstance(config, LdapUserstoreConfig)
        return LdapUserStore(config, claims)
    if config.type == "postgres":
        from idprov.config.postgres import PostgresUserstoreConfig
        from idprov.userstores.postgres import PostgresUserStore

        assert isinstance(config, PostgresUserstoreConfig)
        return PostgresUserStore(config, claims)
    raise NotImplementedError(f"userstore type {config.type!r}")  # pragma: no cover
