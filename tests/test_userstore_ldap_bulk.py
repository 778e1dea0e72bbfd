"""The LDAP userstore's paths for many users at once, against a real slapd: listings
and lookups that read the groups once, imports that write members with one modify
per role. Each result is checked against what ``ldapsearch`` sees, or against the
one-user paths that the bulk ones replace.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from idprov.errors import NotFoundError, PolicyError, StoreError
from idprov.model import User, UserQuery
from idprov.userstores.base import ImportedUser
from idprov.userstores.ldap_escape import CHUNK, dn_key
from idprov.userstores.passwords import hash_ssha
from tests import test_userstore_ldap as one_by_one

open_store, store = one_by_one.open_store, one_by_one.store  # the same fixtures

MANY = CHUNK + 15
"""More users than the per-user lookups serve, so the bulk paths run."""


def roles_of(i: int) -> list[str]:
    return sorted({f"r{i % 3}", "all"} | ({"Seven"} if i % 7 == 0 else set()), key=str.casefold)


def populate(store, count: int = MANY) -> list[User]:
    for role in ("all", "r0", "r1", "r2", "Seven", "empty"):
        store.add_role(role)
    users = store.add_users([(f"u{i:03d}", {"title": f"t{i}"}, None) for i in range(count)])
    for role in ("all", "r0", "r1", "r2", "Seven"):
        store.assign(role, [f"u{i:03d}" for i in range(count) if role in roles_of(i)])
    return users


def test_a_listing_of_many_users_has_every_users_roles(store):
    populate(store)
    listed = store.list_users(UserQuery(limit=None))
    assert listed.total == MANY
    assert [(u.username, u.roles) for u in listed.items] == [
        (f"u{i:03d}", roles_of(i)) for i in range(MANY)
    ]
    one = store.find_user("u007")
    assert listed.items[7] == one


def test_many_users_by_id_and_by_name_carry_their_roles(store):
    users = populate(store)
    by_id = store.find_users_by_id([u.id for u in users] + ["not-a-uuid"])
    assert len(by_id) == MANY
    assert all(by_id[u.id].roles == roles_of(i) for i, u in enumerate(users))
    by_name = store.find_users([f"U{i:03d}" for i in range(MANY)] + ["nobody"])
    assert sorted(by_name) == [f"u{i:03d}" for i in range(MANY)]
    assert by_name["u014"] == store.find_user("u014")


def test_a_member_outside_the_user_subtree_is_no_users_role(slapd, store):
    populate(store, 3)
    slapd.tool(
        "ldapmodify",
        input=f"dn: cn=all,{slapd.groups}\nchangetype: modify\nadd: member\n"
        f"member: cn=someone,{slapd.base}\n",
    )
    listed = store.list_users(UserQuery(limit=None))
    assert [u.roles for u in listed.items] == [roles_of(i) for i in range(3)]
    assert store.find_role("all").member_count == 3


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("uid=A,ou=People,dc=X", "UID=a,OU=people,DC=x"),
        ("uid=a\\2Cb,ou=p", "uid=A\\,B,ou=p"),
        ("uid=été,ou=p", "UID=ÉTÉ,OU=P"),
    ],
)
def test_dn_keys_of_plain_and_escaped_dns_compare_as_the_directory_does(one, other):
    assert dn_key(one) == dn_key(other)


def test_plain_and_escaped_forms_of_one_dn_have_one_key():
    assert dn_key("uid=ab,ou=p") == dn_key("uid=a\\62,ou=p")
    assert dn_key("uid=a b,ou=p") != dn_key("uid=ab,ou=p")


def test_an_import_batch_writes_each_roles_new_members_with_one_modify(slapd, store):
    populate(store, 2)
    batch = [
        ImportedUser("", f"n{i}", {}, None, ["all", "r1"] if i % 2 else ["r2"], False)
        for i in range(4)
    ]
    store.import_users(batch)
    assert all(u.refused is None for u in batch)
    members = {
        e.first("cn"): sorted(m.split(",")[0] for m in e.get("member"))
        for e in slapd.search(slapd.groups, "(objectClass=groupOfNames)", "cn", "member")
    }
    assert members["all"] == ["uid=n1", "uid=n3", "uid=u000", "uid=u001"]
    assert members["r2"] == ["uid=n0", "uid=n2"]  # and the empty group's placeholder went


def test_an_upsert_batch_gives_existing_users_exactly_their_claims_password_and_roles(slapd, store):
    populate(store, MANY)
    store.update_user("u001", {"email": "old@example.com"}, [])
    batch = [
        ImportedUser("", f"U{i:03d}", {"title": "new"}, None, ["r0"], True) for i in range(MANY)
    ]
    batch[1] = ImportedUser("", "u001", {"given_name": "Una"}, hash_ssha("pw-1"), None, True)
    batch[2] = ImportedUser("", "u002", {"cost_center": "x"}, None, ["r1"], True)
    batch.append(ImportedUser("", "ghost", {}, None, [], True))
    store.import_users(batch)

    assert isinstance(batch[2].refused, PolicyError)  # no attribute for that claim
    assert isinstance(batch[-1].refused, NotFoundError)
    assert [u.username for u in batch if u.refused] == ["u002", "ghost"]
    listed = {u.username: u for u in store.list_users(UserQuery(limit=None)).items}
    assert listed["u001"].claims == {"given_name": "Una"}  # the email went
    assert listed["u001"].roles == roles_of(1)  # roles None: left as they were
    assert (listed["u002"].claims, listed["u002"].roles) == ({"title": "t2"}, roles_of(2))
    assert all(listed[f"u{i:03d}"].roles == ["r0"] for i in range(3, MANY))
    assert listed["u003"].claims == {"title": "new"}
    entry = slapd.entry(f"uid=u001,{slapd.people}", "*")
    assert slapd.tool("ldapwhoami", bind=(entry.dn, "pw-1"), check=False).returncode == 0
    groups = {
        e.first("cn"): e.get("member")
        for e in slapd.search(slapd.groups, "(objectClass=groupOfNames)", "cn", "member")
    }
    assert groups["Seven"] == [f"cn=Seven,{slapd.groups}"]  # emptied: the placeholder is back
    assert f"uid=u001,{slapd.people}" in groups["all"]


def test_assign_and_unassign_report_only_what_they_changed(slapd, store):
    populate(store, 3)
    assert store.assign("r0", ["u000", "U001", "u001"]) == ["U001"]
    assert store.unassign("r0", ["u000", "u002"]) == ["u000"]
    assert store.unassign("r0", ["u001"]) == ["u001"]
    (group,) = slapd.search(slapd.groups, "(cn=r0)", "member")
    assert group.get("member") == [group.dn]


def test_roles_with_member_ids_at_once_equal_the_one_role_at_a_time_answer(slapd, store):
    users = populate(store, 5)
    slapd.tool(
        "ldapmodify",
        input=f"dn: cn=all,{slapd.groups}\nchangetype: modify\nadd: member\n"
        f"member: cn=someone,{slapd.base}\nmember: uid=gone,{slapd.people}\n",
    )
    at_once = store.roles_with_member_ids()
    one_by_one = [(r, store.role_member_ids(r.id)) for r in store.list_roles()]
    assert at_once == one_by_one
    assert [r.name for r, _ in at_once] == ["all", "empty", "r0", "r1", "r2", "Seven"]
    assert dict((r.name, ids) for r, ids in at_once)["r1"] == [users[1].id, users[4].id]


def test_a_connection_lost_midway_through_modifies_is_not_sent_again(open_store):
    """A peer that answers two modifies and hangs up: a fault no real server shows on
    demand. Resending could add a member twice, so it is an error naming how far it got."""
    store = open_store()
    client, server = socket.socketpair()
    success = bytes((0x67, 7, 0x0A, 1, 0, 0x04, 0, 0x04, 0))  # ModifyResponse
    peer = one_by_one.answer_then_hang_up(server, 2, success)
    store._conn = SimpleNamespace(socket=client, unbind=lambda: None)
    modifies = [(f"change {i}", f"cn=g{i},ou=x", [("add", "member", ["uid=a"])]) for i in range(5)]
    with pytest.raises(StoreError, match="dropped after 2 of 5 changes") as info:
        store._modify_all(modifies)
    peer.join()
    client.close()
    assert "run the command again" in info.value.hint


def test_new_entries_ids_and_stamps_are_the_directorys(slapd, store):
    outcomes = store.add_users([(f"p{i}", {}, None) for i in range(3)])
    for i, user in enumerate(outcomes):
        entry = slapd.entry(f"uid=p{i},{slapd.people}", "entryUUID", "createTimestamp")
        assert isinstance(user, User) and user.id == entry.first("entryUUID")
        assert user.created.startswith(entry.first("createTimestamp")[:4])


def test_rows_whose_entry_cannot_be_made_are_refused_and_the_others_added(slapd, store):
    """Entries are made as the pipeline's window opens: a row refused then (a password
    hash the directory cannot check binds against) is not sent, and every other row,
    before and after it, is added; the last row refused too ends the run."""
    rows = [(f"m{i:02d}", {"title": f"t{i}"}, hash_ssha(f"pw{i}")) for i in range(40)]
    for bad in (3, 17, 39):
        rows[bad] = (rows[bad][0], rows[bad][1], "plain-text-password")
    outcomes = store.add_users(rows, window=4)
    refused = [i for i, o in enumerate(outcomes) if isinstance(o, PolicyError)]
    assert refused == [3, 17, 39]
    assert "userPassword" in str(outcomes[3])
    added = {e.first("uid") for e in slapd.search(slapd.people, "(uid=m*)", "uid", scope="one")}
    assert added == {f"m{i:02d}" for i in range(40) if i not in (3, 17, 39)}
    assert all(isinstance(outcomes[i], User) for i in range(40) if i not in refused)
