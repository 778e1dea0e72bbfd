"""The LDAP userstore against a real OpenLDAP slapd (the ``slapd`` fixtures).

Each test works in a fresh subtree of its own (``slapd.people``, ``slapd.groups``), or
on a private server when it stops one. Every check of what was written looks at the
directory itself with the OpenLDAP tools (``ldapsearch``, ``ldapwhoami``), not through
the store under test.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from idprov.config import Config, load_text
from idprov.config.models import LdapUserstoreConfig
from idprov.config.secrets import SecretRef
from idprov.errors import (
    ConfigError,
    ConflictError,
    ExitCode,
    NotFoundError,
    PolicyError,
    ReadOnlyError,
    StoreError,
)
from idprov.model import User, UserQuery
from idprov.provisioning.service import IdentityService
from idprov.provisioning.state import AuditQuery
from idprov.userstores import ldap_bulk
from idprov.userstores.ldap import LdapUserStore
from idprov.userstores.ldap_session import Unreachable
from idprov.userstores.passwords import hash_password, hash_ssha, verify_password
from tests.peers.slapd import Directory, Slapd, make_certificates

CLAIMS = Config().claim_definitions()
SERVICE_PASSWORD = "svc-secret"


def secret(tmp_path: Path, value: str) -> SecretRef:
    """A ``file:`` secret reference holding ``value``."""
    path = tmp_path / f"secret-{abs(hash(value))}"
    path.write_text(value + "\n", encoding="utf-8")
    return SecretRef(f"file:{path}")


@pytest.fixture
def open_store(slapd, tmp_path):
    """``open_store(directory=slapd, **options)``: a CORP store on ``directory``'s bases,
    bound as the root DN unless ``options`` say otherwise; closed after the test."""
    opened: list[LdapUserStore] = []

    def open_(directory: Directory | None = None, **options) -> LdapUserStore:
        where = directory or slapd
        settings = {
            "domain": "CORP",
            "url": where.url,
            "bind_dn": where.root_dn,
            "bind_password": secret(tmp_path, where.root_password),
            "user_search_base": where.people,
            "group_search_base": where.groups,
            **options,
        }
        opened.append(LdapUserStore(LdapUserstoreConfig(**settings), CLAIMS))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store):
    return open_store()


def people(directory: Directory) -> list[str]:
    """The uid of every person in the test's subtree, as ldapsearch sees it."""
    entries = directory.search(directory.base, "(objectClass=person)", "uid")
    return sorted(e.first("uid") or "" for e in entries)


def user_entry(directory: Directory, username: str):
    (entry,) = [
        e
        for e in directory.search(directory.people, "(objectClass=person)", "*", "+", scope="one")
        if e.first("uid") == username
    ]
    return entry


def add_service_account(directory: Directory) -> str:
    """A non-root account (slapd's default access: read everything, write nothing);
    returns its DN."""
    dn = f"cn=svc,{directory.base}"
    directory.add(
        f"dn: {dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: svc\nuserPassword: {hash_ssha(SERVICE_PASSWORD)}\n"
    )
    return dn


# ---- users


def test_a_user_becomes_an_inetorgperson_entry_with_a_hashed_password(slapd, store):
    claims = {
        "email": "alice@example.com",
        "given_name": "Alice",
        "family_name": "Liddell",
        "department": "Research",
        "employee_number": "E-042",
    }
    user = store.add_user("Alice", claims, store.hash_password("Wonder-land1"))

    entry = user_entry(slapd, "Alice")
    assert entry.dn == f"uid=Alice,{slapd.people}"
    assert set(entry.get("objectClass")) >= {"inetOrgPerson", "organizationalPerson", "person"}
    assert (entry.first("mail"), entry.first("givenName"), entry.first("sn")) == (
        "alice@example.com",
        "Alice",
        "Liddell",
    )
    assert entry.first("cn") == "Alice Liddell"
    assert entry.first("departmentNumber") == "Research"
    assert entry.first("employeeNumber") == "E-042"
    assert user.id == entry.first("entryUUID")
    (stored,) = entry.get("userPassword")
    assert stored.startswith("{SSHA}") and "Wonder-land1" not in stored
    # the directory itself accepts the password: the user can bind with it
    bound = slapd.tool("ldapwhoami", bind=(entry.dn, "Wonder-land1"), check=False)
    assert bound.returncode == 0, bound.stderr
    wrong = slapd.tool("ldapwhoami", bind=(entry.dn, "wonder-land1"), check=False)
    assert wrong.returncode == 49


def test_users_read_back_by_name_in_any_case_and_by_id(open_store):
    # description stands in for any multi-valued attribute
    store = open_store(claim_attributes={"emails": "description"})
    added = store.add_user("Alice", {"email": "alice@example.com", "emails": ["a@x.org"]}, None)
    found = store.find_user("ALICE")
    assert found is not None
    assert (found.username, found.id, found.domain) == ("Alice", added.id, "CORP")
    assert found.claims == {"email": "alice@example.com", "emails": ["a@x.org"]}
    assert not found.has_password
    assert found.created.endswith("Z") and found.created == found.modified
    assert store.find_user_by_id(added.id) == found
    assert store.find_users_by_id([added.id, "not-a-uuid", ""]) == {added.id: found}
    assert store.find_user("bob") is None
    assert store.find_user_by_id("8c1b6f5e-0000-4000-8000-000000000000") is None


def test_cn_and_sn_are_derived_when_claims_are_missing(slapd, store):
    store.add_user("bob", {}, None)
    store.add_user("ada", {"given_name": "Ada", "display_name": "Countess Lovelace"}, None)
    bob, ada = user_entry(slapd, "bob"), user_entry(slapd, "ada")
    assert (bob.first("cn"), bob.first("sn")) == ("bob", "bob")
    assert (ada.first("cn"), ada.first("sn")) == ("Countess Lovelace", "ada")
    # an sn that only stands in for the missing family name is not read back as one
    assert store.find_user("bob").claims == {}
    assert "family_name" not in store.find_user("ada").claims


def test_adding_an_existing_name_in_another_case_conflicts(slapd, store):
    store.add_user("alice", {}, None)
    with pytest.raises(ConflictError) as info:
        store.add_user("ALICE", {"email": "other@example.com"}, None)
    assert "'alice' already exists in the CORP userstore" in info.value.message
    assert people(slapd) == ["alice"]


def test_update_sets_and_removes_attributes_and_keeps_cn_and_sn_valid(slapd, store):
    store.add_user("carol", {"email": "c@example.com", "family_name": "Jones"}, None)
    user = store.update_user("carol", {"title": "CTO", "display_name": "Carol J"}, ["email"])
    assert user.claims == {"title": "CTO", "display_name": "Carol J", "family_name": "Jones"}
    entry = user_entry(slapd, "carol")
    assert entry.get("mail") == []
    assert (entry.first("title"), entry.first("cn")) == ("CTO", "Carol J")
    store.update_user("carol", {}, ["family_name", "display_name"])
    entry = user_entry(slapd, "carol")
    assert (entry.first("sn"), entry.first("cn")) == ("carol", "carol")
    assert store.find_user("carol").claims == {"title": "CTO"}


def add_person(directory: Directory, uid: str, *lines: str) -> None:
    """A person entry ``uid`` made by an administrator (ldapadd), with ``lines``."""
    body = "".join(f"{line}\n" for line in lines)
    directory.add(
        f"dn: uid={uid},{directory.people}\nobjectClass: inetOrgPerson\nuid: {uid}\n{body}"
    )


def test_a_cn_an_administrator_set_stays_when_the_names_change(slapd, store):
    """Only the cn idprov made from the old names follows a name claim; one an
    administrator set, or several, is left as it is (it became "Ann Jones")."""
    add_person(slapd, "ann", "cn: Dr. Ann Smith-Custom", "sn: Smith", "givenName: Ann")
    add_person(slapd, "amy", "cn: Amy Smith", "cn: A. Smith", "sn: Smith", "givenName: Amy")
    store.update_user("ann", {"family_name": "Jones"}, [])
    store.update_user("amy", {"given_name": "Amelia"}, [])
    ann, amy = user_entry(slapd, "ann"), user_entry(slapd, "amy")
    assert (ann.get("cn"), ann.first("sn")) == (["Dr. Ann Smith-Custom"], "Jones")
    assert (sorted(amy.get("cn")), amy.first("givenName")) == (["A. Smith", "Amy Smith"], "Amelia")
    store.add_user("bea", {"given_name": "Bea", "family_name": "Smith"}, None)
    store.update_user("bea", {"family_name": "Jones"}, [])
    assert user_entry(slapd, "bea").get("cn") == ["Bea Jones"]  # idprov's own follows


def test_an_upsert_with_empty_names_keeps_a_cn_an_administrator_set(slapd, store):
    from idprov.userstores.base import ImportedUser

    add_person(slapd, "gina", "cn: Dr. Gina New", "sn: New", "givenName: Gina")
    store.add_user("hal", {"given_name": "Hal", "family_name": "New"}, None)
    store.import_users(
        [
            ImportedUser("", name, {"email": f"{name}@example.com"}, None, None, True)
            for name in ("gina", "hal")
        ]  # fmt: skip
    )
    gina, hal = user_entry(slapd, "gina"), user_entry(slapd, "hal")
    assert (gina.get("cn"), gina.first("sn"), gina.get("givenName")) == (
        ["Dr. Gina New"],
        "gina",
        [],
    )
    assert hal.get("cn") == ["hal"]  # made from the names by idprov: it follows them


def test_passwords_are_ssha_values_idprov_and_the_directory_both_verify(slapd, store):
    store.add_user("dave", {}, None)
    assert store.password_hash("dave") is None
    store.set_password_hash("dave", store.hash_password("first-pass"))
    assert verify_password("first-pass", store.password_hash("dave"))
    store.set_password_hash("dave", hash_ssha("second-pass"))
    assert verify_password("second-pass", store.password_hash("DAVE"))
    assert not verify_password("first-pass", store.password_hash("dave"))
    assert store.find_user("dave").has_password
    dn = user_entry(slapd, "dave").dn
    assert slapd.tool("ldapwhoami", bind=(dn, "second-pass"), check=False).returncode == 0


def test_a_hash_the_directory_cannot_check_binds_against_is_refused(slapd, store):
    store.add_user("erin", {}, None)
    for bad in (hash_password("pw-123456"), "{CLEARTEXT}pw-123456", "pw-123456"):
        with pytest.raises(PolicyError) as info:
            store.set_password_hash("erin", bad)
        assert "pw-123456" not in info.value.message
        with pytest.raises(PolicyError):
            store.add_user("frank", {}, bad)
    assert user_entry(slapd, "erin").get("userPassword") == []
    assert people(slapd) == ["erin"]


def test_a_claim_without_an_attribute_is_refused_not_dropped(slapd, store, open_store):
    with pytest.raises(PolicyError) as info:
        store.add_user("gina", {"cost_center": "CC-1"}, None)
    assert "claim_attributes" in info.value.hint
    assert people(slapd) == []
    mapped = open_store(claim_attributes={"cost_center": "businessCategory"})
    mapped.add_user("gina", {"cost_center": "CC-1"}, None)
    assert user_entry(slapd, "gina").first("businessCategory") == "CC-1"
    assert mapped.find_user("gina").claims == {"cost_center": "CC-1"}


def test_delete_user_removes_the_entry_and_its_memberships(slapd, store):
    store.add_role("staff")
    store.add_role("admins")
    for name in ("alice", "bob"):
        store.add_user(name, {}, None)
    store.assign("staff", ["alice", "bob"])
    store.assign("admins", ["alice"])
    deleted = store.delete_user("ALICE")
    assert (deleted.username, deleted.roles) == ("alice", ["admins", "staff"])
    assert people(slapd) == ["bob"]
    members = {
        e.first("cn"): e.get("member") for e in slapd.search(slapd.groups, "(cn=*)", "cn", "member")
    }
    assert members == {
        "staff": [f"uid=bob,{slapd.people}"],
        "admins": [f"cn=admins,{slapd.groups}"],  # the placeholder of an empty group
    }
    assert store.find_role("admins", with_members=True).members == []
    with pytest.raises(NotFoundError):
        store.delete_user("alice")


# ---- roles


def test_roles_are_groups_whose_members_are_user_dns(slapd, store):
    role = store.add_role("Staff")
    group = slapd.entry(f"cn=Staff,{slapd.groups}")
    assert group is not None and group.get("objectClass") == ["groupOfNames"]
    assert role.id == group.first("entryUUID")
    assert (role.member_count, role.members) == (0, [])
    for name in ("alice", "Bob"):
        store.add_user(name, {}, None)

    assert store.assign("staff", ["ALICE", "bob", "alice"]) == ["ALICE", "bob"]
    assert store.assign("STAFF", ["alice"]) == []
    group = slapd.entry(f"cn=Staff,{slapd.groups}", "member")
    assert sorted(group.get("member")) == [f"uid=Bob,{slapd.people}", f"uid=alice,{slapd.people}"]
    found = store.find_role("staff", with_members=True)
    assert (found.name, found.member_count, found.members) == ("Staff", 2, ["alice", "Bob"])
    assert store.find_user("bob").roles == ["Staff"]
    assert sorted(store.role_member_ids(role.id)) == sorted(
        store.find_user(n).id for n in ("alice", "bob")
    )
    ids = [store.find_user(n).id for n in ("bob", "alice")]
    assert store.role_member_ids_among(role.id, [*ids, "no-such-id"]) == ids
    assert store.find_role_by_id(role.id).name == "Staff"

    assert store.unassign("staff", ["BOB", "bob"]) == ["BOB"]
    assert store.unassign("staff", ["bob"]) == []
    assert store.unassign("staff", ["alice"]) == ["alice"]
    group = slapd.entry(f"cn=Staff,{slapd.groups}", "member")
    assert group.get("member") == [f"cn=Staff,{slapd.groups}"]
    assert store.find_role("staff", with_members=True).members == []


def test_membership_errors_name_what_is_missing(slapd, store):
    store.add_role("staff")
    store.add_user("alice", {}, None)
    with pytest.raises(NotFoundError, match="no role 'nope' in the CORP userstore"):
        store.assign("nope", ["alice"])
    with pytest.raises(NotFoundError, match="no user 'ghost'"):
        store.assign("staff", ["alice", "ghost"])
    assert slapd.entry(f"cn=staff,{slapd.groups}", "member").get("member") == [
        f"cn=staff,{slapd.groups}"
    ]
    with pytest.raises(ConflictError):
        store.add_role("STAFF")


def test_rename_keeps_id_and_members_and_delete_returns_members(slapd, store):
    staff = store.add_role("staff")
    empty = store.add_role("empty")
    store.add_user("alice", {}, None)
    store.assign("staff", ["alice"])
    renamed = store.rename_role("staff", "people")
    assert (renamed.id, renamed.name, renamed.members) == (staff.id, "people", ["alice"])
    assert store.find_user("alice").roles == ["people"]
    moved = store.rename_role("empty", "Void")
    assert (moved.id, moved.members) == (empty.id, [])
    assert slapd.entry(f"cn=Void,{slapd.groups}", "member").get("member") == [
        f"cn=Void,{slapd.groups}"
    ]
    with pytest.raises(ConflictError):
        store.rename_role("people", "void")
    assert [r.name for r in store.list_roles()] == ["people", "Void"]
    assert [r.member_count for r in store.list_roles("PEO")] == [1]
    deleted = store.delete_role("people")
    assert deleted.members == ["alice"]
    assert slapd.entry(f"cn=people,{slapd.groups}") is None
    assert store.find_user("alice").roles == []


def test_rename_user_is_a_modrdn_and_memberships_follow(slapd, store):
    staff = store.add_role("staff")
    store.add_role("admins")
    alice = store.add_user("alice", {"email": "a@example.com"}, None)
    store.add_user("bob", {}, None)
    store.assign("staff", ["alice", "bob"])
    store.assign("admins", ["alice"])
    renamed = store.rename_user("ALICE", "alice.smith@example.com")
    assert (renamed.id, renamed.username) == (alice.id, "alice.smith@example.com")
    assert renamed.roles == ["admins", "staff"] and renamed.claims == {"email": "a@example.com"}
    new_dn = f"uid=alice.smith@example.com,{slapd.people}"
    assert slapd.entry(f"uid=alice,{slapd.people}") is None
    entry = slapd.entry(new_dn, "uid", "sn", "cn")
    assert entry.get("uid") == ["alice.smith@example.com"]
    assert entry.get("sn") == entry.get("cn") == ["alice.smith@example.com"]  # from the name
    assert sorted(slapd.entry(f"cn=staff,{slapd.groups}", "member").get("member")) == sorted(
        [new_dn, f"uid=bob,{slapd.people}"]
    )
    assert slapd.entry(f"cn=admins,{slapd.groups}", "member").get("member") == [new_dn]
    assert store.find_role_by_id(staff.id).member_count == 2
    with pytest.raises(ConflictError):
        store.rename_user("bob", "Alice.Smith@example.com")
    recased = store.rename_user("alice.smith@example.com", "Alice.Smith@example.com")
    assert (recased.id, recased.username) == (alice.id, "Alice.Smith@example.com")
    assert store.find_user("alice.smith@example.com").roles == ["admins", "staff"]


def test_a_configured_empty_member_is_the_placeholder_and_stays_hidden(slapd, open_store):
    store = open_store(empty_member="cn=nobody,dc=example,dc=com")
    store.add_role("staff")
    assert slapd.entry(f"cn=staff,{slapd.groups}", "member").get("member") == [
        "cn=nobody,dc=example,dc=com"
    ]
    store.add_user("alice", {}, None)
    store.assign("staff", ["alice"])
    assert slapd.entry(f"cn=staff,{slapd.groups}", "member").get("member") == [
        f"uid=alice,{slapd.people}"
    ]
    store.unassign("staff", ["alice"])
    role = store.find_role("staff", with_members=True)
    assert (role.member_count, role.members) == (0, [])


# ---- listing and paging


def test_list_users_pages_through_more_entries_than_one_page(open_store):
    store = open_store(page_size=5)
    store.add_role("odd")
    outcomes = store.add_users(
        [(f"user{i:02d}", {"title": "even" if i % 2 == 0 else "odd"}, None) for i in range(25)]
    )
    assert all(isinstance(o, User) for o in outcomes)
    store.assign("odd", [f"user{i:02d}" for i in range(1, 25, 2)])

    page = store.list_users(UserQuery(limit=10, offset=5))
    assert page.total == 25
    assert [u.username for u in page.items] == [f"user{i:02d}" for i in range(5, 15)]
    assert (page.items[0].roles, page.items[1].roles) == (["odd"], [])
    everyone = store.list_users(UserQuery(limit=None))
    assert [u.username for u in everyone.items] == [f"user{i:02d}" for i in range(25)]
    odd = store.list_users(UserQuery(role="ODD", limit=3, offset=10))
    assert (odd.total, [u.username for u in odd.items]) == (12, ["user21", "user23"])
    even = store.list_users(UserQuery(claims={"title": "even"}, username_prefix="USER1"))
    assert (even.total, [u.username for u in even.items][:2]) == (5, ["user10", "user12"])
    assert store.list_users(UserQuery(role="missing")).total == 0
    assert len(store.find_users_by_id([u.id for u in everyone.items])) == 25
    assert len(store.role_member_ids(store.find_role("odd").id)) == 12


def test_iter_users_gives_the_listing_in_batches_and_roles_only_when_asked(open_store):
    store = open_store(page_size=5)
    store.add_users([(f"user{i:02d}", {"title": f"t{i}"}, None) for i in (11, 3, 7, 0, 9, 5, 1)])
    store.add_role("odd")
    store.assign("odd", ["user03", "user07", "user09"])
    listed = store.list_users(UserQuery(limit=None)).items
    with_roles = list(store.iter_users(3, roles=True))
    assert [len(batch) for batch in with_roles] == [3, 3, 1]
    assert [u for batch in with_roles for u in batch] == listed
    without = [u for batch in store.iter_users(3, roles=False) for u in batch]
    assert [(u.username, u.claims, u.roles) for u in without] == [
        (u.username, u.claims, []) for u in listed
    ]


def test_member_ids_after_a_walk_follow_a_write_made_in_between(open_store):
    store = open_store()
    store.add_users([(f"user{i}", {}, None) for i in range(3)])
    store.add_role("staff")
    store.assign("staff", ["user0", "user2"])
    ids = {u.username: u.id for batch in store.iter_users(10, roles=False) for u in batch}
    [(role, members)] = store.roles_with_member_ids()  # the walk's ids, taken once
    assert (role.name, sorted(members)) == ("staff", sorted([ids["user0"], ids["user2"]]))
    list(store.iter_users(10, roles=False))
    late = store.add_user("late", {}, None)  # a write: the walk's ids are forgotten
    store.assign("staff", ["late"])
    [(_, members)] = store.roles_with_member_ids()
    assert sorted(members) == sorted([ids["user0"], ids["user2"], late.id])


def test_members_spelled_unlike_their_entries_still_hold_their_roles(slapd, open_store):
    store = open_store()
    store.add_users([(f"user{i:02d}", {}, None) for i in range(60)])  # past one lookup
    for role in ("Zeta", "alpha", "Beta"):
        store.add_role(role)
        store.assign(role, ["user01"])
    shouted = f"UID=USER02, {slapd.people.upper()}"  # the same DN, spelled otherwise
    slapd.tool(
        "ldapmodify",
        input=f"dn: cn=Beta,{slapd.groups}\nchangetype: modify\nadd: member\n"
        f"member: {shouted}\nmember: cn=somegroup,{slapd.groups}\n",
    )
    members = slapd.entry(f"cn=Beta,{slapd.groups}", "member").get("member")
    assert f"uid=user02,{slapd.people}" not in members  # slapd keeps the values' case
    users = {u.username: u.roles for u in store.list_users(UserQuery(limit=None)).items}
    assert (users["user01"], users["user02"], users["user03"]) == (
        ["alpha", "Beta", "Zeta"],
        ["Beta"],
        [],
    )


def test_a_walk_the_server_cuts_short_midway_yields_no_user(slapd_factory, open_store, tmp_path):
    limited = slapd_factory(
        extra_config="limits users size.soft=100 size.hard=100 size.prtotal=7\n"
        'access to * by dn.exact="cn=svc,dc=example,dc=com" write by * read'
    )
    service_dn = add_service_account(limited)
    open_store(limited).add_users([(f"user{i:02d}", {}, None) for i in range(12)])
    password = secret(tmp_path, SERVICE_PASSWORD)
    account = open_store(limited, bind_dn=service_dn, bind_password=password, page_size=5)
    for read in (
        lambda: next(account.iter_users(100, roles=False)),
        lambda: account.list_users(UserQuery(limit=None)),
    ):
        with pytest.raises(StoreError) as info:
            read()  # the second page passes the server's total for paged searches
        assert "stopped at a server limit" in info.value.message
        assert "size.prtotal=unlimited" in (info.value.hint or "")


def test_paging_gets_everything_past_the_servers_size_limit(slapd_factory, open_store, tmp_path):
    limited = slapd_factory(
        extra_config="limits users size.soft=5 size.hard=5 size.prtotal=unlimited\n"
        'access to * by dn.exact="cn=svc,dc=example,dc=com" write by * read'
    )
    service_dn = add_service_account(limited)
    admin = open_store(limited)
    admin.add_users([(f"user{i:02d}", {}, None) for i in range(60)])
    admin.add_role("all")  # more members than one lookup search takes: a walk finds their ids
    admin.assign("all", [f"user{i:02d}" for i in range(60)])
    # the server really cuts an unpaged search at 5 entries for this account
    unpaged = limited.tool(
        "ldapsearch",
        "-b",
        limited.people,
        "(uid=*)",
        "uid",
        bind=(service_dn, SERVICE_PASSWORD),
        check=False,
    )
    assert unpaged.returncode == 4  # sizeLimitExceeded

    password = secret(tmp_path, SERVICE_PASSWORD)
    account = open_store(limited, bind_dn=service_dn, bind_password=password, page_size=5)
    assert account.list_users(UserQuery(limit=None)).total == 60
    page = account.list_users(UserQuery(role="all", limit=5, offset=55))
    assert (page.total, page.items[-1].username) == (60, "user59")
    member_ids = account.role_member_ids(account.find_role("all").id)
    assert len(set(member_ids)) == 60
    assert len(account.find_users_by_id(member_ids)) == 60
    # the bulk path's own searches meet the limit too, and fall back to paged ones
    rows = [(f"user{i:02d}", {}, None) for i in range(50, 70)]
    outcomes = account.add_users(rows)
    assert [type(o).__name__ for o in outcomes] == ["ConflictError"] * 10 + ["User"] * 10
    assert all(o.id for o in outcomes[10:])
    assert account.list_users(UserQuery(limit=None)).total == 70


# ---- injection


@pytest.mark.parametrize("probe", ["*", "*)(uid=*", "a*", "*)(|(objectClass=*)", "\\2a"])
def test_names_in_filters_never_widen_a_search(store, probe):
    for name in ("alice", "bob", "admin"):
        store.add_user(name, {"email": f"{name}@example.com"}, None)
    store.add_role("staff")
    assert store.find_user(probe) is None
    assert store.find_role(probe) is None
    assert store.list_users(UserQuery(username_prefix=probe)).total == 0
    assert store.list_users(UserQuery(claims={"email": probe})).total == 0
    assert store.list_roles(prefix=probe) == []
    with pytest.raises(NotFoundError):
        store.assign("staff", [probe])
    with pytest.raises(NotFoundError):
        store.delete_user(probe)


@pytest.mark.parametrize(
    "name",
    [
        "a,ou=groups",
        "x,dc=example,dc=com",
        "a+cn=b",
        "#hash",
        'quo"te',
        "<angle>",
        "semi;colon",
        "back\\slash",
        "eq=ual",
        "*)(uid=*",
        "Ünïcødé",
        " lead",
        "trail ",
        "a\\ ",
    ],
)
def test_names_in_dns_stay_one_entry_below_their_base(slapd, store, name):
    user = store.add_user(name, {}, None)
    role = store.add_role(f"r{name}")
    people_below = slapd.search(slapd.people, "(objectClass=*)", "uid", scope="one")
    assert [e.get("uid") for e in people_below] == [[name]]
    assert slapd.search(slapd.groups, "(objectClass=*)", "cn", scope="one")[0].get("cn") == [
        f"r{name}"
    ]
    assert len(slapd.search(slapd.base, "(objectClass=*)", "1.1")) == 5  # 3 base + 2
    assert store.find_user(name).id == user.id
    assert store.assign(f"r{name}", [name]) == [name]
    assert store.find_role(f"r{name}", with_members=True).members == [name]
    assert store.find_user(name).roles == [f"r{name}"]
    assert store.role_member_ids(role.id) == [user.id]
    assert store.delete_user(name).roles == [f"r{name}"]
    assert store.delete_role(f"r{name}").members == []
    assert len(slapd.search(slapd.base, "(objectClass=*)", "1.1")) == 3


# ---- refusals and faults


def test_a_read_only_store_reads_and_refuses_every_write(slapd, store, open_store):
    store.add_role("staff")
    store.add_user("alice", {}, None)
    reader = open_store(read_only=True)
    assert reader.find_user("alice") is not None
    assert reader.list_users(UserQuery()).total == 1
    writes = [
        lambda: reader.add_user("bob", {}, None),
        lambda: reader.add_users([("bob", {}, None)]),
        lambda: reader.update_user("alice", {"title": "x"}, []),
        lambda: reader.set_password_hash("alice", hash_ssha("x")),
        lambda: reader.delete_user("alice"),
        lambda: reader.add_role("more"),
        lambda: reader.rename_role("staff", "other"),
        lambda: reader.delete_role("staff"),
        lambda: reader.assign("staff", ["alice"]),
        lambda: reader.unassign("staff", ["alice"]),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError) as info:
            write()
        assert info.value.message == "the CORP userstore is read-only"
        assert "read_only: false" in info.value.hint
    assert people(slapd) == ["alice"]
    assert slapd.entry(f"cn=staff,{slapd.groups}", "member").get("member") == [
        f"cn=staff,{slapd.groups}"
    ]


@pytest.mark.parametrize("how", ["ldaps", "start_tls"])
def test_tls_with_a_ca_file_verifies_the_server(slapd_factory, open_store, how):
    secure = slapd_factory(tls=True)
    url = secure.ldaps_url if how == "ldaps" else secure.url
    ca_file = str(secure.ca_file)
    store = open_store(secure, url=url, start_tls=how == "start_tls", ca_file=ca_file)
    store.add_user("alice", {}, None)
    assert people(secure) == ["alice"]
    store.add_role("staff")
    store.assign("staff", ["alice"])  # searches and modifies sent by ldap_bulk, over TLS
    assert [u.roles for u in store.list_users(UserQuery(limit=None)).items] == [["staff"]]
    reader = open_store(secure, url=url, start_tls=how == "start_tls", ca_file=ca_file)
    assert [u.roles for u in reader.list_users(UserQuery(limit=None)).items] == [["staff"]]
    reader.add_user("bob", {}, None)  # a store that read first writes too
    assert people(secure) == ["alice", "bob"]


def test_start_tls_refused_by_the_server_says_what_to_change(slapd, open_store):
    store = open_store(start_tls=True)  # this server offers no TLS
    with pytest.raises(ConfigError) as info:
        store.find_user("alice")
    assert "refused StartTLS" in info.value.message and slapd.url in info.value.message
    assert "ldaps://" in info.value.hint and "start_tls" in info.value.hint


READ_WITHOUT_LDAP3 = """
import json, sys
from idprov.config import Config
from idprov.config.models import LdapUserstoreConfig
from idprov.config.secrets import SecretRef
from idprov.model import UserQuery
from idprov.userstores.ldap import LdapUserStore
from idprov.userstores.ldap_session import Unreachable
settings = json.loads(sys.argv[1])
settings["bind_password"] = SecretRef(settings["bind_password"])
store = LdapUserStore(LdapUserstoreConfig(**settings), Config().claim_definitions())
names = [u.username for u in store.list_users(UserQuery(limit=None)).items]
ids = [u.id for batch in store.iter_users(10, roles=True) for u in batch]
roles = [(r.name, m) for r, m in store.roles_with_member_ids()]
found = store.find_user("alice")
read = "ldap3" in sys.modules
[dave] = store.add_users([("dave", {}, None)])  # an import's adds: BER on the same wire
bulk = "ldap3" in sys.modules
store.add_user("carol", {}, None)
print(names, len(ids), roles == [("staff", [found.id])], read, bulk, "ldap3" in sys.modules)
"""


def test_reads_and_bulk_adds_never_import_ldap3_and_a_lone_write_does(slapd, open_store, tmp_path):
    store = open_store()
    store.add_users([("alice", {}, None), ("bob", {}, None)])
    store.add_role("staff")
    store.assign("staff", ["alice"])
    settings = {
        "domain": "CORP",
        "url": slapd.url,
        "bind_dn": slapd.root_dn,
        "bind_password": str(secret(tmp_path, slapd.root_password)),
        "user_search_base": slapd.people,
        "group_search_base": slapd.groups,
    }
    done = subprocess.run(
        [sys.executable, "-c", READ_WITHOUT_LDAP3, json.dumps(settings)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['alice',", "'bob']", "2", "True", "False", "False", "True"]
    assert people(slapd) == ["alice", "bob", "carol", "dave"]


def test_tls_refuses_a_server_its_ca_file_does_not_vouch_for(slapd_factory, open_store, tmp_path):
    secure = slapd_factory(tls=True)
    make_certificates(tmp_path / "other-ca")
    other_ca = str(tmp_path / "other-ca" / "ca.pem")
    store = open_store(secure, url=secure.ldaps_url, ca_file=other_ca)
    with pytest.raises(ConfigError) as info:
        store.find_user("alice")
    assert "certificate" in info.value.message and "ca_file" in info.value.hint
    plain = open_store(secure, start_tls=True, ca_file=other_ca)
    with pytest.raises(ConfigError):
        plain.find_user("alice")


@pytest.mark.parametrize("how", ["ldaps", "start_tls"])
def test_tls_refuses_a_certificate_for_another_host(slapd_factory, open_store, how):
    """A certificate the CA signed, but for another name than the url's host: refused,
    on the connection reads open (ldap_wire) and on the one writes open (ldap3)."""
    secure = slapd_factory(tls=True, certificate_names="DNS:directory.example.org")
    url = secure.ldaps_url if how == "ldaps" else secure.url
    options = {"url": url, "start_tls": how == "start_tls", "ca_file": str(secure.ca_file)}
    for action in (lambda s: s.find_user("alice"), lambda s: s.add_user("bob", {}, None)):
        with pytest.raises(ConfigError) as info:
            action(open_store(secure, **options))
        assert "certificate was not accepted" in info.value.message
        assert "names the host in url" in info.value.hint
    assert people(secure) == []


def test_an_anonymous_store_reads_and_is_refused_writes(slapd, open_store):
    open_store().add_users([("alice", {"email": "a@example.com"}, None)])
    anonymous = open_store(bind_dn=None, bind_password=None)  # slapd lets anyone read
    [alice] = anonymous.list_users(UserQuery(limit=None)).items
    assert (alice.username, alice.claims["email"]) == ("alice", "a@example.com")
    with pytest.raises(ConfigError) as info:
        anonymous.add_user("bob", {}, None)
    assert "strongerAuthRequired" in info.value.message and slapd.url in info.value.message
    assert "bind_dn" in info.value.hint and "bind_password" in info.value.hint
    assert people(slapd) == ["alice"]


def test_a_bind_dn_whose_password_is_empty_never_reads_as_anonymous(
    slapd, open_store, keyring_backend
):
    """A DN with an empty password is an unauthenticated bind (RFC 4513), which some
    directories answer as anonymous, seeing less: a listing that would look complete."""
    open_store().add_users([("alice", {"email": "a@example.com"}, None)])
    keyring_backend("memory").set_password("idprov", "ldap-bind", "")
    store = open_store(bind_password=SecretRef("keyring:ldap-bind"))
    with pytest.raises(ConfigError) as info:
        store.list_users(UserQuery(limit=None))
    assert "bind_password is empty" in info.value.message
    assert "bind_password" in info.value.hint


def test_the_directorys_refusals_become_idprov_errors_with_its_message(slapd, open_store, tmp_path):
    service_dn = add_service_account(slapd)
    writer = open_store(bind_dn=service_dn, bind_password=secret(tmp_path, SERVICE_PASSWORD))
    with pytest.raises(PolicyError) as info:
        writer.add_user("alice", {}, None)
    assert "insufficientAccessRights" in info.value.message
    assert "read_only: true" in info.value.hint
    undefined = open_store(claim_attributes={"cost_center": "costCenterX"})
    with pytest.raises(ConfigError) as info:
        undefined.add_user("alice", {"cost_center": "1"}, None)
    assert "costCenterX" in info.value.message and "claim_attributes" in info.value.hint
    nowhere = open_store(user_search_base=f"ou=nowhere,{slapd.base}")
    with pytest.raises(ConfigError, match=f"ou=nowhere,{slapd.base} does not exist") as info:
        nowhere.find_user("alice")
    assert "may not see it" in info.value.message  # noSuchObject: also a base an ACL hides
    assert "grant" in info.value.hint and "read access" in info.value.hint
    assert people(slapd) == []


def test_a_server_that_is_down_is_a_store_error_naming_the_url(private_slapd, open_store):
    slapd, store = private_slapd, open_store(private_slapd)
    slapd.stop()
    with pytest.raises(StoreError) as info:
        store.find_user("alice")
    assert slapd.url in info.value.message and "cannot be reached" in info.value.message


@pytest.fixture
def echo_server() -> Iterator[str]:
    """Not an LDAP server: it sends back what it gets (as a client's socket that
    connected to itself does, once a stopped server's port is free)."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # the client may reset it
                while data := conn.recv(4096):
                    conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    yield f"ldap://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("client", ["idprov's BER", "ldap3"])
def test_a_server_that_does_not_speak_ldap_is_a_store_error(slapd, open_store, echo_server, client):
    """An answer that is no LDAP response (here the bind request itself, password
    included) is an idprov error naming the url, and never shows what came back. A
    store's reads bind with idprov's BER; once it has written, with ldap3 (CI met it:
    a socket that connected to itself, once a stopped server's port was free, and a
    KeyError out of ldap3's decoder)."""
    store = open_store(url=echo_server)
    store._writer = client == "ldap3"  # as after its first write
    with pytest.raises(StoreError) as info:
        store.find_user("alice")
    said = info.value.message + str(info.value.hint)
    assert echo_server in said and "not an LDAP response" in said
    assert slapd.root_password not in said


def test_a_dropped_connection_is_reopened_once(private_slapd, open_store):
    slapd, store = private_slapd, open_store(private_slapd)
    store.add_user("alice", {}, None)
    slapd.restart()  # same port: the store's connection is dead, the server is back
    assert store.find_user("alice") is not None
    store.add_user("bob", {}, None)
    assert people(slapd) == ["alice", "bob"]
    reader = open_store(private_slapd)  # a store that has only read: its own connection
    assert reader.list_users(UserQuery(limit=None)).total == 2
    slapd.restart()
    assert [u.username for u in reader.list_users(UserQuery(limit=None)).items] == [
        "alice",
        "bob",
    ]


def test_a_server_stopped_mid_command_fails_cleanly(private_slapd, open_store):
    slapd, store = private_slapd, open_store(private_slapd)
    store.add_user("alice", {}, None)
    slapd.stop()
    with pytest.raises(StoreError) as info:
        store.add_user("bob", {}, None)
    assert slapd.url in info.value.message and info.value.exit_code == ExitCode.ERROR


# ---- bulk


def test_add_users_reports_one_outcome_per_row(slapd, store):
    store.add_user("taken", {}, None)
    rows = [
        (f"bulk{i:02d}", {"email": f"b{i}@example.com"}, hash_ssha(f"pw{i}")) for i in range(20)
    ]
    rows += [
        ("TAKEN", {}, None),
        ("bulk05", {}, None),
        ("nohash", {}, hash_password("pw-123456")),
        ("unmapped", {"cost_center": "x"}, None),
    ]
    outcomes = store.add_users(rows, window=4)
    users = outcomes[:20]
    assert all(isinstance(u, User) for u in users)
    assert [type(o) for o in outcomes[20:]] == [
        ConflictError,
        ConflictError,
        PolicyError,
        PolicyError,
    ]
    assert people(slapd) == sorted(["taken", *(f"bulk{i:02d}" for i in range(20))])
    entry = user_entry(slapd, "bulk07")
    assert users[7].id == entry.first("entryUUID") and users[7].created
    assert entry.first("mail") == "b7@example.com"
    assert slapd.tool("ldapwhoami", bind=(entry.dn, "pw7"), check=False).returncode == 0


def answer_then_hang_up(server: socket.socket, count: int, reply: bytes) -> threading.Thread:
    """A peer on ``server``'s end of a socket pair that answers ``count`` requests with
    ``reply`` (an LDAP protocolOp) and hangs up: a fault no real server shows on
    demand. Returns its running thread."""

    def run() -> None:
        data = b""
        for _ in range(count):
            while (size := ldap_bulk.message_size(data)) is None or len(data) < size:
                data += server.recv(65536)
            message_id = ldap_bulk.decode_message(data[:size])[0]
            server.sendall(ldap_bulk._message(message_id, reply))
            data = data[size:]
        server.close()

    peer = threading.Thread(target=run)
    peer.start()
    return peer


def test_a_batch_cut_off_mid_way_reports_which_adds_were_answered():
    """A peer that answers two adds and hangs up: a fault no real server shows on demand."""
    client, server = socket.socketpair()
    peer = answer_then_hang_up(server, 2, ldap_bulk._ADD_SUCCESS)
    entries = [(f"uid=u{i},ou=people,dc=example,dc=com", {"uid": [f"u{i}"]}) for i in range(5)]
    with pytest.raises(ldap_bulk.ConnectionLost) as info:
        ldap_bulk.Pipeline(client, window=8, timeout=5).run(
            5, lambda i, message_id: ldap_bulk.encode_add(message_id, *entries[i])
        )
    peer.join()
    client.close()
    replies = info.value.args[1]
    assert [r.result if r else None for r in replies] == [0, 0, None, None, None]


def test_add_users_when_the_server_is_gone(private_slapd, open_store):
    slapd, store = private_slapd, open_store(private_slapd)
    slapd.stop()
    with pytest.raises(StoreError, match="cannot be reached"):
        store.add_users([("alice", {}, None)])


def test_a_bulk_import_batch_creates_updates_and_records_directory_ids(slapd, store):
    from idprov.userstores.base import ImportedUser

    store.add_role("staff")
    store.add_user("alice", {"email": "old@example.com", "title": "Dev"}, None)
    batch = [
        ImportedUser(
            "uuid-made-by-the-caller", "bob", {"email": "b@example.com"}, None, ["staff"], False
        ),
        ImportedUser("", "carol", {}, hash_ssha("carol-pw"), None, False),
        ImportedUser("", "ALICE", {"email": "new@example.com"}, None, ["staff"], True),
    ]
    store.import_users(batch)
    assert batch[0].id == user_entry(slapd, "bob").first("entryUUID")
    assert batch[1].id == user_entry(slapd, "carol").first("entryUUID")
    found = store.find_users(["Bob", "alice", "nobody"])
    assert sorted(found) == ["alice", "bob"]
    assert found["alice"].claims == {"email": "new@example.com"}
    assert store.find_role("staff", with_members=True).members == ["alice", "bob"]
    again = [
        ImportedUser("", "bob", {}, None, None, False),
        ImportedUser("", "dave", {}, None, None, False),
    ]
    store.import_users(again)  # LDAP cannot roll back: the refused one is marked
    assert isinstance(again[0].refused, ConflictError) and again[1].refused is None
    assert "dave" in people(slapd)


# ---- through the service, alongside the embedded store


def service_yaml(slapd: Directory, tmp_path: Path) -> str:
    password = secret(tmp_path, slapd.root_password)
    return f"""
data_dir: state
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    url: {slapd.url}
    bind_dn: {slapd.root_dn}
    bind_password: {password}
    user_search_base: {slapd.people}
    group_search_base: {slapd.groups}
"""


def test_the_service_writes_domain_users_to_the_directory(slapd, tmp_path):
    config = load_text(service_yaml(slapd, tmp_path), "t.yaml", tmp_path)
    with IdentityService(config, actor="tester") as svc:
        svc.add_role("CORP/staff")
        svc.add_user("CORP/alice", {"email": "alice@example.com"}, roles=["staff"])
        svc.add_user("alice")
        assert svc.get_user("CORP/ALICE").roles == ["staff"]
        assert user_entry(slapd, "alice").first("mail") == "alice@example.com"
        assert svc.get_role("CORP/staff").members == ["alice"]
        everyone = svc.list_users(UserQuery())
        assert [(u.domain, u.username) for u in everyone.items] == [
            ("PRIMARY", "alice"),
            ("CORP", "alice"),
        ]
        targets = [e.target for e in svc.audit_log(AuditQuery())]
        assert sorted(targets) == ["CORP/alice", "CORP/staff", "alice"]


def test_a_new_directory_user_is_reported_as_the_directory_reads_it(slapd, tmp_path):
    """`user add --json` and a SCIM create's reply (and its ETag) show the user as a
    later read does: a family name equal to the username is the stand-in ``sn`` the
    directory needs, which a read does not take for a claim."""
    config = load_text(service_yaml(slapd, tmp_path), "t.yaml", tmp_path)
    with IdentityService(config, actor="tester") as svc:
        added = svc.add_user("CORP/bob", {"family_name": "bob", "email": "bob@example.com"})
        assert added.entity == svc.get_user("CORP/bob")
        assert "family_name" not in added.entity.claims


def test_a_directory_stopped_mid_command_leaves_idprovs_state_untouched(private_slapd, tmp_path):
    slapd = private_slapd
    config = load_text(service_yaml(slapd, tmp_path), "t.yaml", tmp_path)
    with IdentityService(config, actor="tester") as svc:
        svc.add_user("CORP/alice")
        before = svc.audit_log(AuditQuery())
        slapd.stop()
        with pytest.raises(StoreError) as info:
            svc.add_user("CORP/bob", {"email": "bob@example.com"})
        assert slapd.url in info.value.message
        assert svc.audit_log(AuditQuery()) == before
        assert svc.list_users(UserQuery(), domain="PRIMARY").total == 0
        assert svc.outbox_rows() == []


# ---- configuration and cost


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ("url: http://ldap.example.com", "url", "ldap://HOST"),
        ("url: ldap://ldap.example.com:notaport", "url", "ldap://HOST"),
        ("url: ldaps://ldap.example.com\n    start_tls: true", "start_tls", "ldaps:// is TLS"),
        ("url: ldap://ldap.example.com\n    ca_file: ca.pem", "ca_file", "needs ldaps://"),
        ("url: ldap://h\n    bind_dn: cn=x", "bind_password", "give both"),
        ("url: ldap://h\n    bind_password: secret", "bind_password", "are references"),
        ("url: ldap://h\n    claim_attributes: {title: mail}", "claim_attributes", "both map"),
        ("url: ldap://h\n    page_size: 0", "page_size", "greater than 0"),
        ("url: ldap://h\n    user_search_scope: deep", "user_search_scope", "one of"),
        ("url: ldap://h\n    colour: blue", "colour", "unknown key"),
    ],
)
def test_ldap_options_are_checked_when_the_config_loads(extra, key, says):
    text = f"""
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    user_search_base: ou=people,dc=example,dc=com
    group_search_base: ou=groups,dc=example,dc=com
    {extra}
"""
    with pytest.raises(ConfigError) as info:
        load_text(text, "t.yaml")
    assert info.value.message.startswith("t.yaml:")
    assert key in info.value.message and says in info.value.message


def test_defaults_map_the_standard_claims(tmp_path):
    config = load_text(
        "userstores:\n  - domain: PRIMARY\n  - {domain: CORP, type: ldap, url: 'ldap://h',"
        " user_search_base: 'ou=p,dc=x', group_search_base: 'ou=g,dc=x',"
        " claim_attributes: {department: ou, mobile: null}}\n",
        "t.yaml",
    )
    corp = config.userstore("CORP")
    assert isinstance(corp, LdapUserstoreConfig)
    mapping = corp.ldap_claims()
    assert mapping["email"] == "mail" and mapping["family_name"] == "sn"
    assert mapping["department"] == "ou" and "mobile" not in mapping


def test_ldap3_is_imported_only_when_an_ldap_store_opens(run_python, slapd, tmp_path):
    code = f"""
import sys
from idprov.config import load_text
from idprov.provisioning.service import IdentityService
with IdentityService(load_text({service_yaml(slapd, tmp_path)!r}, "t.yaml")) as svc:
    svc.add_user("alice")
    print("ldap3" in sys.modules)
    svc.add_user("CORP/alice")
    print("ldap3" in sys.modules)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


def test_the_fixture_leaves_no_slapd_behind(tmp_path: Path):
    server = Slapd(tmp_path / "own")
    server.start()
    process = server.process
    server.stop()
    assert process is not None and process.poll() is not None
    assert not server.running


# ---- a killed import into a directory resumes to the exact state
def _killed_import_config(slapd: Directory, tmp_path: Path) -> Config:
    text = service_yaml(slapd, tmp_path) + (
        "identity_providers:\n"
        "  - name: target\n"
        "    connector: scim2\n"
        "    options: {base_url: 'https://scim.example.com/v2', auth: none}\n"
        "applications:\n"
        "  - name: resident\n"
        "    identity_providers: [target]\n"
    )
    return load_text(text, "t.yaml", tmp_path)


@pytest.mark.parametrize(
    "where",
    ["after the directory writes", "in the middle of a batch", "before the memberships"],
)
def test_a_killed_ldap_import_resumes_to_exactly_the_uninterrupted_state(
    slapd, tmp_path, monkeypatch, where
):
    from idprov.inbound.csv_import import CsvImport, ImportOptions
    from idprov.provisioning.state import ImportJournal
    from idprov.userstores.ldap import LdapUserStore

    tag = {"after": "a", "in": "m", "before": "b"}[where.split()[0]]
    names = [f"kill{tag}{i:02d}" for i in range(30)]
    path = tmp_path / "people.csv"
    path.write_text(
        "username,email,roles\n" + "".join(f"{n},{n}@example.com,kill{tag}\n" for n in names)
    )
    options = ImportOptions(batch_size=10, domain="CORP", create_roles=True, push=False)
    config = _killed_import_config(slapd, tmp_path)
    batches = {"n": 0}
    if where == "after the directory writes":
        original_written = ImportJournal.written

        def killed(self, import_id, last_line):
            batches["n"] += 1
            if batches["n"] == 2:
                raise KeyboardInterrupt  # kill -9 between the directory and the state
            original_written(self, import_id, last_line)

        monkeypatch.setattr(ImportJournal, "written", killed)
    elif where == "before the memberships":  # entries added, no group modified yet
        original_change = LdapUserStore._change_members

        def killed(self, changes, groups=None):
            batches["n"] += 1
            if batches["n"] == 2:
                raise KeyboardInterrupt
            return original_change(self, changes, groups)

        monkeypatch.setattr(LdapUserStore, "_change_members", killed)
    else:
        original_import = LdapUserStore.import_users

        def killed(self, users):
            batches["n"] += 1
            if batches["n"] == 2:
                original_import(self, users[:4])  # 4 of 10 entries written, then killed
                raise KeyboardInterrupt
            original_import(self, users)

        monkeypatch.setattr(LdapUserStore, "import_users", killed)
    with IdentityService(config, actor="tester") as svc:
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, options).run()
    monkeypatch.undo()
    with IdentityService(config, actor="tester") as svc:
        report = CsvImport(svc, path, options).run()
        assert report.rejected == 0, report.errors
        assert report.skipped_done == 10 and report.created == 20
        found = svc.list_users(UserQuery(limit=None, username_prefix=f"kill{tag}"), "CORP")
        assert sorted(u.username for u in found.items) == names
        assert all(u.roles == [f"kill{tag}"] for u in found.items)
        assert svc.get_role(f"CORP/kill{tag}").member_count == 30
        rows = [
            r for r in svc.outbox_rows() if r.kind == "user" and r.label.startswith("CORP/kill")
        ]
        assert sorted(r.label for r in rows) == sorted(f"CORP/{n}" for n in names)
        created = [
            name
            for entry in svc.audit_log(AuditQuery(action="user.import", limit=100))
            for name in entry.details["created"]
        ]
        assert sorted(created) == names, "each user audited as created exactly once"


@pytest.mark.parametrize(
    ("scim_filter", "expected"),
    [
        ('userName eq "ALICE"', ["alice"]),
        ('userName sw "b"', ["bob", "bobby"]),
        ('userName co "ob"', ["bob", "bobby"]),
        ('emails[type eq "work"].value eq "bob@example.com"', ["bob"]),
        ('emails co "@example.org"', ["bobby"]),
        ('displayName eq "Alice L" or userName eq "bob"', ["alice", "bob"]),
        ('meta.lastModified gt "2000-01-01T00:00:00Z"', ["alice", "bob", "bobby"]),
        ('meta.lastModified lt "2000-01-01T00:00:00Z"', []),
        ('title eq "x" and not (userName eq "bob")', []),
    ],
)
def test_scim_filters_become_ldap_filters(slapd, store, scim_filter, expected):
    from scim2_models import ScimFilter

    from idprov.inbound.scim.filters import user_condition

    store.add_user("alice", {"email": "alice@example.com", "display_name": "Alice L"}, None)
    store.add_user("bob", {"email": "bob@example.com"}, None)
    store.add_user("bobby", {"email": "bobby@example.org"}, None)
    condition = user_condition(ScimFilter(scim_filter).ast, lambda value: [])
    assert condition is not None
    page = store.list_users(UserQuery(limit=None, where=condition))
    assert [u.username for u in page.items] == expected


def test_an_add_whose_answer_was_lost_is_never_sent_again(slapd, open_store):
    """A connection that drops while an add is out may have made it: sent again on a
    new connection, the add would be refused as a name taken (and the roles the first
    one gave taken away); it is Unreachable, for the re-run to finish."""
    from tests.test_userstore_ldap_interrupted import ADD, Blip, members, uid_dn

    relay = Blip(slapd.url)
    try:
        store = open_store(url=relay.url)
        store.add_role("staff")  # a write before: the store's connection is open
        relay.at(ADD, made=True)
        with pytest.raises(Unreachable, match="the add may have been made"):
            store.add_user_with_roles("cy", {}, None, ["staff"])
        assert members(slapd, "staff") == [uid_dn(slapd, "cy")]
        assert store.find_user("cy").roles == ["staff"]
    finally:
        relay.close()


def test_new_users_take_no_role_from_member_values_left_in_groups(store, slapd):
    store.add_role("staff")
    stale = [f"uid={name},{slapd.people}" for name in ("dave", "erin")]
    store.assign("staff", [store.add_user("keep", {}, None).username])
    for dn in stale:  # left by users deleted without referential integrity
        slapd.tool("ldapmodify", input=f"dn: cn=staff,{slapd.groups}\nchangetype: modify\n"
                   f"add: member\nmember: {dn}\n")  # fmt: skip
    store.add_users([("dave", {}, None)])
    store.add_user("erin", {}, None)
    assert store.find_user("dave").roles == store.find_user("erin").roles == []
    assert store.find_role("staff", with_members=True).members == ["keep"]
