"""The userstore contract, passed by every SQL userstore: SQLite (a real file) and
PostgreSQL (a real server, the ``postgres`` fixture's database of this test).

Each test runs once per store (``[sqlite]``, ``[postgres]``). What a test checks on
storage it reads with a connection of its own (sqlite3, or psycopg), not through the
store under test.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idprov.config import Config, SqliteUserstoreConfig
from idprov.config.postgres import PostgresUserstoreConfig
from idprov.config.secrets import SecretRef
from idprov.db import open_database
from idprov.errors import ConflictError, ExitCode, NotFoundError, ReadOnlyError
from idprov.model import UserQuery
from idprov.userstores.base import ImportedUser
from idprov.userstores.sql import SqlUserStore

CLAIMS = Config().claim_definitions()


class Backend:
    """Opens stores of one kind on one database, and reads that database directly."""

    kind = ""

    def __init__(self) -> None:
        self.opened: list[SqlUserStore] = []

    def open(self, **config: Any) -> SqlUserStore:
        raise NotImplementedError

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        for store in self.opened:
            store.close()


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.dbs: list[Any] = []

    def open(self, **config: Any) -> SqlUserStore:
        from idprov.userstores.sqlite import SqliteUserStore

        db = open_database(self.path)
        self.dbs.append(db)
        store = SqliteUserStore(SqliteUserstoreConfig(path=str(self.path), **config), CLAIMS, db)
        self.opened.append(store)
        return store

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def close(self) -> None:
        super().close()
        for db in self.dbs:
            db.close()


class PostgresBackend(Backend):
    kind = "postgres"

    def __init__(self, database: Any, tmp_path: Path) -> None:
        super().__init__()
        self.database = database
        secret = tmp_path / "pg-password"
        secret.write_text(database.password + "\n")
        self.password = SecretRef(f"file:{secret}")

    def open(self, **config: Any) -> SqlUserStore:
        from idprov.userstores.postgres import PostgresUserStore

        settings = {"url": self.database.url, "password": self.password, "sslmode": "disable"}
        store = PostgresUserStore(PostgresUserstoreConfig(**settings, **config), CLAIMS)
        self.opened.append(store)
        return store

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.database.rows(sql)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        chosen: Backend = SqliteBackend(tmp_path / "stores" / "users.db")
    else:
        chosen = PostgresBackend(request.getfixturevalue("postgres"), tmp_path)
    try:
        yield chosen
    finally:
        chosen.close()


@pytest.fixture
def store(backend: Backend) -> SqlUserStore:
    return backend.open()


def names(page) -> list[str]:
    return [u.username for u in page.items]


# ---- users


def test_add_and_find_user(store):
    user = store.add_user("Alice", {"email": "a@example.com", "emails": ["x@y", "z@w"]}, "$h$")
    assert (user.domain, user.username, user.has_password) == ("PRIMARY", "Alice", True)
    assert user.created == user.modified
    found = store.find_user("aLiCe")
    assert found is not None
    assert (found.id, found.username) == (user.id, "Alice")
    assert found.claims == {"email": "a@example.com", "emails": ["x@y", "z@w"]}
    assert (found.created, found.modified) == (user.created, user.modified)
    assert store.find_user("bob") is None
    assert store.find_user_by_id(user.id).username == "Alice"
    assert store.find_user_by_id("no-such-id") is None


def test_reopening_keeps_data_and_migrates_once(backend, store):
    store.add_user("alice", {"email": "a@example.com"}, None)
    again = backend.open()
    assert again.find_user("alice").claims == {"email": "a@example.com"}
    rows = backend.rows("SELECT name FROM idprov_migrations WHERE namespace = 'userstore'")
    assert sorted(rows) == [
        ("0001_users_roles",),
        ("0002_filter_indexes",),
        ("0003_claim_indexes",),
    ]


@pytest.mark.parametrize(("first", "second"), [("alice", "ALICE"), ("Straße", "STRASSE")])
def test_usernames_are_unique_ignoring_case(store, first, second):
    store.add_user(first, {}, None)
    with pytest.raises(ConflictError) as info:
        store.add_user(second, {}, None)
    assert info.value.exit_code == ExitCode.CONFLICT
    assert store.list_users(UserQuery()).total == 1


def test_claims_are_stored_as_given(backend, store):
    claims = {
        "display_name": "José Zoë 山田",
        "title": 'x"; DROP TABLE users; --',
        "nickname": "%_*?",
    }
    store.add_user("jose", claims, None)
    assert store.find_user("jose").claims == claims
    ((raw,),) = backend.rows("SELECT claims FROM users")
    assert "José Zoë 山田" in str(raw)


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


def test_iter_users_reads_everyone_in_batches_as_listed(crowd):
    batches = list(crowd.iter_users(2))
    assert [len(b) for b in batches] == [2, 2, 1]
    listed = {u.id: u for u in crowd.list_users(UserQuery(limit=None)).items}
    read = [u for batch in batches for u in batch]
    assert [u.username for u in read] == ["alice", "Bob", "carol", "dave", "erin"]
    for user in read:  # claims as a mapping (perhaps still JSON text), roles as listed
        assert (dict(user.claims), user.roles) == (listed[user.id].claims, listed[user.id].roles)
    assert all(u.roles == [] for b in crowd.iter_users(10, roles=False) for u in b)


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
        (UserQuery(claims={"emails": "erin@"}), [], 0),
        (UserQuery(claims={"department": "%"}), [], 0),
        (UserQuery(claims={"department": "eng", "emails": "erin@a.org"}), [], 0),
        (UserQuery(role="STAFF"), ["alice", "carol"], 2),
        (UserQuery(role="staff", claims={"department": "eng"}), ["carol"], 1),
        (UserQuery(username_prefix="B"), ["Bob"], 1),
        (UserQuery(username_prefix="%"), [], 0),
    ],
)
def test_list_users_filters_and_pages(crowd, query, expected, total):
    page = crowd.list_users(query)
    assert (names(page), page.total) == (expected, total)


@pytest.mark.parametrize(
    "query",
    [UserQuery(limit=None), UserQuery(limit=3, offset=1), UserQuery(role="staff", limit=None)],
)
def test_a_stream_reads_in_batches_what_a_page_holds(crowd, monkeypatch, query):
    """Two users a batch: the same users, in order, with their roles, and the total
    known before the first is read."""
    monkeypatch.setattr("idprov.userstores.sql_read.CHUNK", 2)
    page = crowd.list_users(query)
    stream = crowd.stream_users(query)
    assert (stream.total, stream.offset, stream.limit) == (page.total, page.offset, page.limit)
    assert [(u.username, u.roles, u.claims) for u in stream.items] == [
        (u.username, u.roles, u.claims) for u in page.items
    ]
    assert list(stream.items) == []  # read once


def test_list_users_prefix_with_characters_that_casefold_longer(store):
    store.add_user("Straßer", {}, None)
    store.add_user("Strauss", {}, None)
    assert names(store.list_users(UserQuery(username_prefix="STRASS"))) == ["Straßer"]
    assert names(store.list_users(UserQuery(username_prefix="straß"))) == ["Straßer"]


def test_names_sort_by_code_point_whatever_the_database_locale(store):
    for name in ["zoe", "Émile", "_under", "adam", "Zara"]:
        store.add_user(name, {}, None)
    assert names(store.list_users(UserQuery())) == ["_under", "adam", "Zara", "zoe", "Émile"]


def test_update_user(store):
    user = store.add_user("alice", {"title": "Dev", "department": "eng"}, None)
    updated = store.update_user("ALICE", {"title": "Lead", "locale": "fr-FR"}, ["department"])
    assert updated.claims == {"title": "Lead", "locale": "fr-FR"}
    assert store.find_user("alice").claims == updated.claims
    assert store.find_user("alice").modified == updated.modified >= user.modified
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


def test_delete_user_removes_memberships(backend, crowd):
    deleted = crowd.delete_user("CAROL")
    assert (deleted.username, deleted.roles) == ("carol", ["staff"])
    assert crowd.find_user("carol") is None
    assert crowd.find_role("staff", with_members=True).members == ["alice"]
    assert backend.rows("SELECT count(*) FROM user_roles") == [(1,)]
    with pytest.raises(NotFoundError):
        crowd.delete_user("carol")


def test_find_many_users_at_once(store):
    made = [store.add_user(f"user{i:04d}", {"title": str(i)}, None) for i in range(1100)]
    store.add_role("staff")
    store.assign("staff", ["user0000", "user1099"])
    by_name = store.find_users([*(f"USER{i:04d}" for i in range(0, 1100, 2)), "nobody"])
    assert len(by_name) == 550 and by_name["user1098"].claims == {"title": "1098"}
    by_id = store.find_users_by_id([u.id for u in made[500:]] + ["no-such-id"])
    assert len(by_id) == 600 and by_id[made[1099].id].roles == ["staff"]


# ---- roles


def test_roles(crowd):
    role = crowd.find_role("Staff", with_members=True)
    assert (role.name, role.member_count, role.members) == ("staff", 2, ["alice", "carol"])
    assert crowd.find_role("staff").members is None
    assert crowd.find_role_by_id(role.id).name == "staff"
    assert crowd.find_role_by_id("no-such-id") is None
    assert sorted(crowd.role_member_ids(role.id)) == sorted(
        crowd.find_user(n).id for n in ("alice", "carol")
    )
    crowd.add_role("Admins")
    assert [(r.name, r.member_count) for r in crowd.list_roles()] == [("Admins", 0), ("staff", 2)]
    assert [r.name for r in crowd.list_roles("ADM")] == ["Admins"]
    with pytest.raises(ConflictError):
        crowd.add_role("ADMINS")


def test_a_roles_members_among_some_users_are_read_for_those_alone(crowd):
    """What a role's push reads when its change named a few of a large role's users."""
    role = crowd.find_role("staff")
    ids = {n: crowd.find_user(n).id for n in ("alice", "Bob", "carol", "dave")}
    asked = [ids["dave"], ids["carol"], "no-such-id", ids["Bob"], ids["alice"]]
    assert crowd.role_member_ids_among(role.id, asked) == [ids["carol"], ids["alice"]]
    assert crowd.role_member_ids_among(role.id, []) == []
    crowd.add_role("empty")
    assert crowd.role_member_ids_among(crowd.find_role("empty").id, asked) == []


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


def test_rename_user_keeps_id_claims_password_and_roles(crowd, backend):
    before = crowd.find_user("alice")
    renamed = crowd.rename_user("ALICE", "alice.smith@example.com")
    assert (renamed.id, renamed.username) == (before.id, "alice.smith@example.com")
    assert crowd.find_user("alice") is None
    after = crowd.find_user("Alice.Smith@example.com")
    assert (after.id, after.claims, after.roles) == (before.id, before.claims, before.roles)
    assert after.has_password == before.has_password
    assert crowd.find_role("staff", with_members=True).members == [
        "alice.smith@example.com",
        "carol",
    ]
    assert after.modified >= before.modified
    crowd.rename_user("alice.smith@example.com", "Alice.Smith@example.com")
    assert crowd.find_user("alice.smith@example.com").username == "Alice.Smith@example.com"
    with pytest.raises(ConflictError):
        crowd.rename_user("bob", "CAROL")
    with pytest.raises(NotFoundError):
        crowd.rename_user("nobody", "somebody")
    keys = backend.rows("SELECT username_key FROM users ORDER BY 1")
    assert ("alice.smith@example.com",) in keys and ("alice",) not in keys


def test_delete_role_keeps_its_members(crowd):
    deleted = crowd.delete_role("staff")
    assert deleted.members == ["alice", "carol"]
    assert crowd.find_role("staff") is None
    assert crowd.find_user("alice").roles == []
    assert crowd.list_users(UserQuery()).total == 5
    with pytest.raises(NotFoundError):
        crowd.delete_role("staff")


# ---- transactions, bulk import, read-only


def test_a_failed_transaction_leaves_nothing(backend, crowd):
    before = backend.rows("SELECT * FROM users ORDER BY id")
    members = crowd.find_role("staff", with_members=True).members
    with pytest.raises(NotFoundError):
        with crowd.transaction():
            crowd.add_user("frank", {}, None)
            crowd.assign("staff", ["frank", "nobody"])
    assert crowd.find_user("frank") is None
    assert crowd.find_role("staff", with_members=True).members == members
    assert backend.rows("SELECT * FROM users ORDER BY id") == before


def test_a_bulk_import_batch_creates_updates_and_sets_roles(store):
    store.add_role("staff")
    store.add_role("eng")
    alice = store.add_user("alice", {"email": "old@example.com", "title": "Dev"}, "$old$")
    store.assign("eng", ["alice"])
    batch = [
        ImportedUser("id-bob", "bob", {"email": "b@example.com"}, None, ["staff", "STAFF"], False),
        ImportedUser("id-carol", "Carol", {"emails": ["c@a", "c@b"]}, "$scrypt$c", None, False),
        ImportedUser(alice.id, "ALICE", {"email": "new@example.com"}, None, ["staff"], True),
    ]
    with store.transaction():
        store.import_users(batch)
    found = store.find_users(["Bob", "alice", "carol", "nobody"])
    assert sorted(found) == ["alice", "bob", "carol"]
    assert (found["bob"].id, found["bob"].roles) == ("id-bob", ["staff"])
    assert found["alice"].claims == {"email": "new@example.com"}
    assert found["alice"].roles == ["staff"]
    assert store.password_hash("alice") == "$old$"
    assert store.password_hash("carol") == "$scrypt$c"
    assert found["carol"].claims == {"emails": ["c@a", "c@b"]}
    assert store.find_role("staff", with_members=True).members == ["alice", "bob"]
    assert store.list_users(UserQuery(claims={"emails": "c@b"})).total == 1


def test_read_only_store_refuses_every_write(backend, store):
    store.add_user("alice", {}, None)
    store.add_role("staff")
    read_only = backend.open(read_only=True)
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
        lambda: read_only.import_users([ImportedUser("x", "x", {}, None, None, False)]),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError) as info:
            write()
        assert info.value.exit_code == ExitCode.POLICY
        assert "read_only: false" in info.value.hint
    assert read_only.find_user("alice").claims == {}
    assert read_only.find_role("staff", with_members=True).members == []


def test_stores_opening_together_on_a_new_database_migrate_it_once(backend):
    opened: list[SqlUserStore] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        opened.append(backend.open())

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 4
    opened[0].add_user("alice", {}, None)
    assert all(store.find_user("alice") for store in opened)
    rows = backend.rows("SELECT name FROM idprov_migrations WHERE namespace = 'userstore'")
    assert sorted(rows) == [
        ("0001_users_roles",),
        ("0002_filter_indexes",),
        ("0003_claim_indexes",),
    ]


@pytest.fixture
def ticking(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that moves a second at each reading: no two writes share a stamp."""
    import itertools

    ticks = itertools.count(1)

    def now() -> str:
        tick = next(ticks)
        return f"2030-01-01T{tick // 3600:02d}:{tick // 60 % 60:02d}:{tick % 60:02d}.000Z"

    monkeypatch.setattr("idprov.userstores.sql.now", now)


def test_modified_moves_on_both_sides_of_a_membership_change(ticking, crowd):
    def stamps() -> tuple[str, str, str]:
        return (
            crowd.find_role("staff").modified,
            crowd.find_user("alice").modified,
            crowd.find_user("bob").modified,
        )

    def moved(before: tuple[str, str, str]) -> list[bool]:
        return [a > b for a, b in zip(stamps(), before, strict=True)]

    before = stamps()
    crowd.assign("staff", ["bob"])
    assert moved(before) == [True, False, True]
    before = stamps()
    crowd.unassign("staff", ["alice"])
    assert moved(before) == [True, True, False]
    before = stamps()
    crowd.rename_role("staff", "crew")
    assert [a > b for a, b in zip(stamps_of(crowd, "crew"), before, strict=True)] == [
        True,
        False,
        True,
    ]
    before = stamps_of(crowd, "crew")
    crowd.delete_user("bob")
    assert crowd.find_role("crew").modified > before[0]


def stamps_of(store, role: str) -> tuple[str, str, str]:
    bob = store.find_user("bob")
    return (
        store.find_role(role).modified,
        store.find_user("alice").modified,
        bob.modified if bob else "",
    )


@pytest.mark.parametrize(
    ("scim_filter", "expected"),
    [
        ('userName eq "ALICE"', ["alice"]),
        ('userName sw "b"', ["bob", "bobby"]),
        ('userName co "ob"', ["bob", "bobby"]),
        ('userName ew "BY"', ["bobby"]),
        ('emails[type eq "work"].value eq "BOB@example.com"', ["bob"]),
        ('emails eq "second@example.net"', ["bobby"]),
        ('emails co "%"', []),
        ('displayName eq "alice l" or userName eq "bob"', ["alice", "bob"]),
        ('meta.lastModified gt "2000-01-01T00:00:00Z"', ["alice", "bob", "bobby"]),
        ('meta.created lt "2000-01-01T00:00:00.5Z"', []),
        ("active eq false", ["bob"]),
    ],
)
def test_scim_filters_become_sql(store, scim_filter, expected):
    from scim2_models import ScimFilter

    from idprov.inbound.scim.filters import user_condition

    store.add_user("alice", {"email": "alice@example.com", "display_name": "Alice L"}, None)
    store.add_user("bob", {"email": "bob@example.com", "active": "false"}, None)
    store.add_user("bobby", {"email": "x@example.org", "emails": ["second@example.net"]}, None)
    condition = user_condition(ScimFilter(scim_filter).ast, lambda value: [])
    assert condition is not None
    page = store.list_users(UserQuery(limit=None, where=condition))
    assert [u.username for u in page.items] == expected
    assert page.total == len(expected)
