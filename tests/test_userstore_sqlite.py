"""The SQLite userstore on real files: what lands on disk. Its contract (users, roles,
paging, transactions, bulk import) is tests/test_userstore_contract.py, shared with
PostgreSQL."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from idprov.config import Config, SqliteUserstoreConfig
from idprov.db import open_database
from idprov.errors import ExitCode, StoreError
from idprov.userstores.sqlite import SqliteUserStore

CLAIMS = Config().claim_definitions()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "stores" / "users.db"


def open_store(path: Path, **config) -> SqliteUserStore:
    return SqliteUserStore(
        SqliteUserstoreConfig(path=str(path), **config), CLAIMS, open_database(path)
    )


@pytest.fixture
def store(db_path):
    store = open_store(db_path)
    yield store
    store.db.close()


# ---- the file


def test_new_database_is_private(db_path, store):
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


def test_existing_file_mode_is_not_widened(tmp_path):
    path = tmp_path / "mine.db"
    path.touch(mode=0o400)
    path.chmod(0o400)
    open_database(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert info.value.exit_code == ExitCode.ERROR
    assert str(path) in info.value.message
    assert "file is not a database" in info.value.message


# ---- what the CLI leaves on disk


def test_data_dir_and_database_are_private(cli, data_dir, write_config, tmp_path):
    write_config("userstores:\n  - domain: PRIMARY\n  - domain: EXT\n    path: ext/ext.db\n")
    cli("user", "add", "alice").ok()
    cli("user", "add", "EXT/bob").ok()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for path in [*data_dir.iterdir(), *(tmp_path / "ext").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (data_dir / "idprov.db").is_file()
    assert (tmp_path / "ext" / "ext.db").is_file()


def test_passwords_are_stored_hashed(cli, data_dir, state):
    passwords = {"alice": "Tr0ub4dor&3-unique", "bob": "pässwörd-ÜNICODE"}
    for user, password in passwords.items():
        cli("user", "add", user, "--password-stdin", input=password + "\n").ok()
    cli("user", "passwd", "bob", "--password-stdin", input="another-Secret-99\n").ok()
    passwords["old"] = passwords.pop("bob")
    passwords["bob"] = "another-Secret-99"
    raw = b"".join(p.read_bytes() for p in data_dir.iterdir())
    assert raw
    for password in passwords.values():
        for encoding in ("utf-8", "utf-16-le"):
            assert password.encode(encoding) not in raw
    hashes = dict(state.rows("SELECT username, password_hash FROM users"))
    assert set(hashes) == {"alice", "bob"}
    for value in hashes.values():
        assert value.startswith("$scrypt$ln=")
        assert len(value.split("$")) == 5


def test_sqlite_can_read_what_idprov_wrote(cli, state):
    cli("user", "add", "alice", "-c", "title=o'brien").ok()
    assert state.rows("SELECT username, json_extract(claims, '$.title') FROM users") == [
        ("alice", "o'brien")
    ]
    assert state.rows("PRAGMA integrity_check") == [("ok",)]
    conn = sqlite3.connect(state.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize(
    "scim_filter",
    [
        'userName eq "Test_User_ab6490ee@contoso.com"',
        'userName sw "test"',
        'externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"',
        'emails[type eq "work"].value eq "a@example.com"',
        'meta.lastModified gt "2030-01-01T00:00:00Z"',
        'userName eq "a" or emails eq "b@example.com"',
    ],
)
def test_the_filters_clients_send_are_answered_by_indexes(store, scim_filter):
    """No full scan of the users table: SQLite's plan searches an index for each."""
    from scim2_models import ScimFilter

    from idprov.inbound.scim.filters import user_condition

    condition = user_condition(ScimFilter(scim_filter).ast, lambda value: ["some-id"])
    sql, params = store._condition_sql().sql(condition)
    plan = [
        row[3]
        for row in store.db.execute(f"EXPLAIN QUERY PLAN SELECT id FROM users WHERE {sql}", params)
    ]
    assert not any(step.startswith("SCAN users") for step in plan), plan


def schema(path: Path) -> list[tuple[str, Any]]:
    """Tables' columns and indexes' columns, as SQLite describes them."""
    conn = sqlite3.connect(path)
    try:
        found: list[tuple[str, Any]] = []
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            found.append((table, conn.execute(f"PRAGMA table_xinfo({table})").fetchall()))
            for index in conn.execute(f"PRAGMA index_list({table})").fetchall():
                found.append((index[1], conn.execute(f"PRAGMA index_xinfo({index[1]})").fetchall()))
        return sorted(found, key=repr)
    finally:
        conn.close()


def test_the_schema_is_the_one_sqlite_utils_made_for_existing_databases(tmp_path):
    """Stores made when idprov created tables through sqlite-utils (a test dependency
    now) have the same tables, columns and indexes as those it makes now."""
    import sqlite_utils

    old = sqlite_utils.Database(tmp_path / "old.db")
    columns = {"id": str, "username": str, "username_key": str, "claims": str}
    old["users"].create(
        {**columns, "password_hash": str, "created": str, "modified": str},
        pk="id",
        not_null={"username", "username_key", "claims", "created", "modified"},
    )
    old["users"].create_index(["username_key"], unique=True)
    old["roles"].create(
        {"id": str, "name": str, "name_key": str, "created": str, "modified": str},
        pk="id",
        not_null={"name", "name_key", "created", "modified"},
    )
    old["roles"].create_index(["name_key"], unique=True)
    old.close()
    open_store(tmp_path / "new.db").db.close()
    before = schema(tmp_path / "old.db")
    names = {name for name, _ in before}
    assert {"users", "roles", "idx_users_username_key", "idx_roles_name_key"} <= names
    assert [entry for entry in schema(tmp_path / "new.db") if entry[0] in names] == before


def test_a_store_that_cannot_be_written_opens_without_a_new_index(db_path):
    """A read-only userstore of an earlier version, in a file this user cannot write
    (opened ``mode=ro``): it opens without the manager index (reads scan instead; it
    failed: 'attempt to write a readonly database'), and the next process that can
    write the file adds the index."""
    from idprov.db import open_database_read_only
    from idprov.model import UserQuery

    store = open_store(db_path)
    store.add_user("bob", {"manager": "alice"}, None)
    store.db.close()
    with sqlite3.connect(db_path) as conn:  # as version 0.1 left it
        conn.execute("DROP INDEX users_claim_manager")
        conn.execute("DROP INDEX users_claim_home_email")
        conn.execute("DELETE FROM idprov_migrations WHERE name = '0003_claim_indexes'")
    config = SqliteUserstoreConfig(domain="HR", path=str(db_path), read_only=True)
    read_only = SqliteUserStore(config, CLAIMS, open_database_read_only(db_path))
    assert [u.username for u in read_only.list_users(UserQuery()).items] == ["bob"]
    read_only.db.close()
    assert "users_claim_manager" not in {name for name, _ in schema(db_path)}
    open_store(db_path).db.close()
    assert "users_claim_manager" in {name for name, _ in schema(db_path)}
