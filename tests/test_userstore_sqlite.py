"""The SQLite userstore against its contract, on real files; and what lands on disk."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from idprov.config import Config, SqliteUserstoreConfig
from idprov.db import open_database
from idprov.errors import ConflictError, ExitCode, NotFoundError, ReadOnlyError, StoreError
from idprov.model import UserQuery
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


def names(page) -> list[str]:
    return [u.username for u in page.items]


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


def test_reopening_keeps_data_and_migrates_once(db_path, store):
    store.add_user("alice", {"email": "a@example.com"}, None)
    again = open_store(db_path)
    try:
        assert again.find_user("alice").claims == {"email": "a@example.com"}
        rows = again.db.execute(
            "SELECT name FROM idprov_migrations WHERE namespace = 'userstore'"
        ).fetchall()
        assert len(rows) == 1
    finally:
        again.db.close()


def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert info.value.exit_code == ExitCode.ERROR
    assert str(path) in info.value.message
    assert "file is not a database" in info.value.message


# ---- users


def test_add_and_find_user(store):
    user = store.add_user("Alice", {"email": "a@example.com", "emails": ["x@y", "z@w"]}, "$h$")
    assert (user.domain, user.username, user.has_password) == ("PRIMARY", "Alice", True)
    assert user.created == user.modified
    found = store.find_user("aLiCe")
    assert found is not None
    assert (found.id, found.username) == (user.id, "Alice")
    assert found.claims == {"email": "a@example.com", "emails": ["x@y", "z@w"]}
    assert store.find_user("bob") is None
    assert store.find_user_by_id(user.id).username == "Alice"
    assert store.find_user_by_id("no-such-id") is None


@pytest.mark.parametrize(("first", "second"), [("alice", "ALICE"), ("Straße", "STRASSE")])
def test_usernames_are_unique_ignoring_case(store, first, second):
    store.add_user(first, {}, None)
    with pytest.raises(ConflictError) as info:
        store.add_user(second, {}, None)
    assert info.value.exit_code == ExitCode.CONFLICT
    assert store.list_users(UserQuery()).total == 1


def test_claims_are_stored_as_given(store):
    claims = {
        "display_name": "José Zoë 山田",
        "title": 'x"; DROP TABLE users; --',
        "nickname": "%_*",
    }
    store.add_user("jose", claims, None)
    assert store.find_user("jose").claims == claims
    raw = store.db.execute("SELECT claims FROM users").fetchone()[0]
    assert "José Zoë 山田" in raw


@pytest.fixture
def crowd(store):
    for name, dept in [("carol", "eng"), ("Bob", "eng"), ("alice", "sales"), ("dave", None)]:
        claims = {"department": dept} if dept else {}
        store.add_user(name, claims, None)
    store.add_user("erin", {"emails": ["erin@a.org", "erin@b.org"]}, None)
    store.add_role("staff")
    store.assign("staff", ["carol", "alice"])
    return store


def test_list_users_orders_by_name_ignoring_case(crowd):
    page = crowd.list_users(UserQuery())
    assert names(page) == ["alice", "Bob", "carol", "dave", "erin"]
    assert page.total == 5
    assert page.items[0].roles == ["staff"]


@pytest.mark.parametrize(
    ("query", "expected", "total"),
    [
        (UserQuery(limit=2), ["alice", "Bob"], 5),
        (UserQuery(limit=2, offset=2), ["carol", "dave"], 5),
        (UserQuery(limit=None, offset=4), ["erin"], 5),
        (UserQuery(offset=9), [], 5),
        (UserQuery(claims={"department": "eng"}), ["Bob", "carol"], 2),
        (UserQuery(claims={"department": "eng"}, limit=1, offset=1), ["carol"], 2),
        (UserQuery(claims={"emails": "erin@b.org"}), ["erin"], 1),
        (UserQuery(claims={"department": "%"}), [], 0),
        (UserQuery(role="STAFF"), ["alice", "carol"], 2),
        (UserQuery(role="staff", claims={"department": "eng"}), ["carol"], 1),
        (UserQuery(username_prefix="B"), ["Bob"], 1),
        (UserQuery(username_prefix="%"), [], 0),
    ],
)
def test_list_users_filters_and_pages(crowd, query, expected, total):
    page = crowd.list_users(query)
    assert (names(page), page.total) == (expected, total)


def test_list_users_prefix_with_characters_that_casefold_longer(store):
    store.add_user("Straßer", {}, None)
    store.add_user("Strauss", {}, None)
    assert names(store.list_users(UserQuery(username_prefix="STRASS"))) == ["Straßer"]
    assert names(store.list_users(UserQuery(username_prefix="straß"))) == ["Straßer"]


def test_update_user(store):
    user = store.add_user("alice", {"title": "Dev", "department": "eng"}, None)
    updated = store.update_user("ALICE", {"title": "Lead", "locale": "fr-FR"}, ["department"])
    assert updated.claims == {"title": "Lead", "locale": "fr-FR"}
    assert store.find_user("alice").claims == updated.claims
    assert updated.modified >= user.modified
    with pytest.raises(NotFoundError):
        store.update_user("bob", {"title": "x"}, [])


def test_passwords(store):
    store.add_user("alice", {}, None)
    assert store.password_hash("alice") is None
    store.set_password_hash("ALICE", "$scrypt$stand-in")
    assert store.password_hash("alice") == "$scrypt$stand-in"
    assert store.find_user("alice").has_password
    with pytest.raises(NotFoundError):
        store.password_hash("bob")
    with pytest.raises(NotFoundError):
        store.set_password_hash("bob", "$x")


def test_delete_user_removes_memberships(crowd):
    deleted = crowd.delete_user("CAROL")
    assert (deleted.username, deleted.roles) == ("carol", ["staff"])
    assert crowd.find_user("carol") is None
    assert crowd.find_role("staff", with_members=True).members == ["alice"]
    assert crowd.db.execute("SELECT count(*) FROM user_roles").fetchone()[0] == 1
    with pytest.raises(NotFoundError):
        crowd.delete_user("carol")


# ---- roles


def test_roles(crowd):
    role = crowd.find_role("Staff", with_members=True)
    assert (role.name, role.member_count, role.members) == ("staff", 2, ["alice", "carol"])
    assert crowd.find_role("staff").members is None
    assert crowd.find_role_by_id(role.id).name == "staff"
    assert sorted(crowd.role_member_ids(role.id)) == sorted(
        crowd.find_user(n).id for n in ("alice", "carol")
    )
    crowd.add_role("Admins")
    assert [(r.name, r.member_count) for r in crowd.list_roles()] == [("Admins", 0), ("staff", 2)]
    assert [r.name for r in crowd.list_roles("ADM")] == ["Admins"]
    with pytest.raises(ConflictError):
        crowd.add_role("ADMINS")


def test_assign_and_unassign_report_what_changed(crowd):
    assert crowd.assign("staff", ["alice", "Bob"]) == ["Bob"]
    assert crowd.assign("staff", ["bob"]) == []
    assert crowd.unassign("staff", ["bob", "dave"]) == ["bob"]
    assert crowd.unassign("staff", ["bob"]) == []
    with pytest.raises(NotFoundError):
        crowd.assign("nope", ["alice"])
    with pytest.raises(NotFoundError):
        crowd.unassign("staff", ["nobody"])


def test_rename_role_keeps_id_and_members(crowd):
    before = crowd.find_role("staff", with_members=True)
    renamed = crowd.rename_role("STAFF", "Employees")
    assert (renamed.id, renamed.name, renamed.members) == (before.id, "Employees", before.members)
    assert crowd.find_role("staff") is None
    assert crowd.find_user("alice").roles == ["Employees"]
    crowd.rename_role("employees", "EMPLOYEES")
    assert crowd.find_role("employees").name == "EMPLOYEES"
    crowd.add_role("admins")
    with pytest.raises(ConflictError):
        crowd.rename_role("employees", "Admins")
    with pytest.raises(NotFoundError):
        crowd.rename_role("nope", "other")


def test_delete_role_keeps_its_members(crowd):
    deleted = crowd.delete_role("staff")
    assert deleted.members == ["alice", "carol"]
    assert crowd.find_role("staff") is None
    assert crowd.find_user("alice").roles == []
    assert crowd.list_users(UserQuery()).total == 5
    with pytest.raises(NotFoundError):
        crowd.delete_role("staff")


def test_a_failed_transaction_leaves_nothing(crowd):
    before = crowd.find_role("staff", with_members=True).members
    with pytest.raises(NotFoundError):
        with crowd.transaction():
            crowd.add_user("frank", {}, None)
            crowd.assign("staff", ["frank", "nobody"])
    assert crowd.find_user("frank") is None
    assert crowd.find_role("staff", with_members=True).members == before


def test_read_only_store_refuses_every_write(db_path, store):
    store.add_user("alice", {}, None)
    store.add_role("staff")
    read_only = open_store(db_path, read_only=True)
    writes = [
        lambda: read_only.add_user("bob", {}, None),
        lambda: read_only.update_user("alice", {"title": "x"}, []),
        lambda: read_only.set_password_hash("alice", "$x"),
        lambda: read_only.delete_user("alice"),
        lambda: read_only.add_role("admins"),
        lambda: read_only.delete_role("staff"),
        lambda: read_only.rename_role("staff", "people"),
        lambda: read_only.assign("staff", ["alice"]),
        lambda: read_only.unassign("staff", ["alice"]),
    ]
    try:
        for write in writes:
            with pytest.raises(ReadOnlyError) as info:
                write()
            assert info.value.exit_code == ExitCode.POLICY
            assert "read_only: false" in info.value.hint
        assert read_only.find_user("alice").claims == {}
        assert read_only.find_role("staff", with_members=True).members == []
    finally:
        read_only.db.close()


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
