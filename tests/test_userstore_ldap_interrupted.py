"""Writes of the LDAP userstore cut off half-way: the directory stops answering at a
chosen request (a relay in front of the real slapd drops every connection there and
refuses new ones until it is restored). A directory cannot roll back, so a command
must leave the user as it was meant to be read (holding its roles), say what was
written and how to finish, and finish when it is run again: audited, and pushed to
the real scim2-server.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from idprov.userstores import ldap_bulk
from idprov.userstores.ldap import LdapUserStore
from idprov.userstores.ldap_session import closed_by_peer
from tests.peers.scim2 import Scim2Peer
from tests.peers.slapd import Directory
from tests.test_guard_ldap import corp_config

MODIFY, ADD, DELETE, MODIFY_DN = 0x66, 0x68, 0x4A, 0x6C
"""The protocol op tags of the requests a cut is set at."""


class Cutoff:
    """A loopback relay to a real slapd that cuts the directory off at one request.

    :meth:`at` arms it: the first request with op tag ``tag`` (after one tagged
    ``after`` went through, if given) is not forwarded, or with ``made`` it is
    forwarded and its answer withheld (the write is made, the client never hears).
    Then every connection is dropped and new ones are closed at once, until
    :meth:`restore` (with ``reopen``, new ones are let in again at once: only the
    connection the request went out on is lost, as when a firewall or a load balancer
    drops it)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 389)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._armed: tuple[int, int | None, bool] | None = None
        self._seen: set[int] = set()
        self._withheld: int | None = None
        self._reopen = False
        self.drops = 0
        """How many times the connections were dropped."""
        self.cut = threading.Event()
        self.accepted = 0
        """Connections let through to the directory so far."""
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self._listener.getsockname()[1]}"

    def at(
        self, tag: int, after: int | None = None, made: bool = False, reopen: bool = False
    ) -> None:
        with self._lock:
            self._armed, self._seen, self._reopen = (tag, after, made), set(), reopen

    def restore(self) -> None:
        with self._lock:
            self._armed, self._withheld, self._reopen = None, None, False
            self.cut.clear()

    def close(self) -> None:
        self._listener.close()
        self._drop_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self._upstream)
            except OSError:  # slapd stopped: as a relay that cannot reach it
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, asking: bool) -> None:
        """Copy whole LDAP messages from ``source`` to ``sink``, cutting where armed."""
        data = b""
        try:
            while chunk := source.recv(65536):
                data += chunk
                while (size := ldap_bulk.message_size(data)) is not None and len(data) >= size:
                    message, data = data[:size], data[size:]
                    if not self._passes(message, asking):
                        self._drop_all()
                        return
                    sink.sendall(message)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    def _passes(self, message: bytes, asking: bool) -> bool:
        """Whether ``message`` goes on (requests when ``asking``, else answers)."""
        message_id, tag, _, _ = ldap_bulk.decode_message(message)
        with self._lock:
            if not asking:
                return message_id != self._withheld
            if self._armed is None:
                return True
            wanted, after, made = self._armed
            if tag != wanted or (after is not None and after not in self._seen):
                self._seen.add(tag)
                return True
            self._armed = None
            if made:
                self._withheld = message_id
            return made

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets, reopen = self._sockets, [], self._reopen
            if reopen:  # disarmed before any connection is dropped: none is refused
                self._armed, self._withheld, self._reopen = None, None, False
            else:
                self.cut.set()
            self.drops += 1
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def cutoff(slapd: Directory) -> Iterator[Cutoff]:
    relay = Cutoff(slapd.url)
    yield relay
    relay.close()


@pytest.fixture
def corp(tmp_path: Path, slapd: Directory, cutoff: Cutoff, scim2_server: Scim2Peer, monkeypatch):
    """A CORP store on ``slapd`` behind ``cutoff``, pushed to scim2-server for the users
    who hold CORP/staff (losing it deprovisions them there)."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    corp_config(
        tmp_path,
        slapd,
        f"""identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""",
        url=cutoff.url,
        bind=(slapd.root_dn, slapd.root_password),
    )
    return slapd


def members(directory: Directory, group: str) -> list[str]:
    """The member values of ``cn=GROUP``, as ldapsearch sees them."""
    entry = directory.entry(f"cn={group},{directory.groups}", "member")
    assert entry is not None
    return sorted(entry.get("member"))


def uid_dn(directory: Directory, uid: str) -> str:
    return f"uid={uid},{directory.people}"


def target_users(scim2_server: Scim2Peer) -> list[str]:
    return sorted(u["userName"] for u in scim2_server.users())


def renames(cli) -> list[tuple[str, str]]:
    entries = cli("log", "--action", "user.rename", "--json").items()
    return [(e["target"], e["details"]["from"]) for e in entries]


def test_a_rename_cut_off_after_the_entry_moved_keeps_its_roles_and_a_rerun_finishes_it(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "-c", "email=ann@example.com", "--role", "CORP/staff").ok()
    assert target_users(scim2_server) == ["ann"]
    cutoff.at(MODIFY, after=MODIFY_DN)  # the first member change after the rename
    error = cli("user", "rename", "CORP/ann", "annb", "--json").error(1)
    assert "'ann' was renamed to 'annb'" in error["message"]
    assert "run the same command again" in error["hint"]
    assert "idprov user rename CORP/ann annb" in error["hint"]
    cutoff.restore()
    shown = cli("user", "show", "CORP/annb", "--json").json()
    assert shown["roles"] == ["staff"]  # never read as having lost them
    cli("user", "rename", "CORP/ann", "annb").ok()
    assert members(corp, "staff") == [uid_dn(corp, "annb")]
    assert renames(cli) == [("CORP/annb", "CORP/ann")]
    assert target_users(scim2_server) == ["annb"]
    cli("user", "rename", "CORP/ann", "annb").fails(3)  # finished: nothing left to do
    assert cli("role", "show", "CORP/staff", "--json").json()["members"] == ["annb"]


def test_a_rerun_that_spells_the_old_name_otherwise_finishes_the_rename_as_one_run_would(
    cli, corp, cutoff
):
    """sn and cn that idprov made from the stored name follow the rename, whatever
    case the command gives the old name in (a user named Ann kept sn Ann, read back
    as the family name Ann and pushed so)."""
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/Ann", "--role", "CORP/staff").ok()
    cutoff.at(MODIFY, after=MODIFY_DN)
    cli("user", "rename", "CORP/ann", "annb", "--json").error(1)
    cutoff.restore()
    cli("user", "rename", "CORP/ANN", "annb").ok()
    entry = corp.entry(f"uid=annb,{corp.people}", "sn", "cn")
    assert entry is not None and (entry.get("sn"), entry.get("cn")) == (["annb"], ["annb"])
    shown = cli("user", "show", "CORP/annb", "--json").json()
    assert "family_name" not in shown["claims"] and shown["roles"] == ["staff"]


def test_a_sync_after_a_rename_whose_answer_was_lost_deprovisions_no_one(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "-c", "email=ann@example.com", "--role", "CORP/staff").ok()
    cutoff.at(MODIFY_DN, made=True)
    error = cli("user", "rename", "CORP/ann", "annb", "--json").error(1)
    assert "stopped answering while user 'ann' was renamed to 'annb'" in error["message"]
    assert "run the same command again" in error["hint"]
    assert corp.entry(uid_dn(corp, "annb")) is not None  # it was made
    cutoff.restore()
    cli("sync").ok()
    assert target_users(scim2_server) == ["annb"]  # renamed there, not deleted
    cli("user", "rename", "CORP/ann", "annb").ok()
    assert members(corp, "staff") == [uid_dn(corp, "annb")]
    assert renames(cli) == [("CORP/annb", "CORP/ann")]


def test_a_rename_cut_off_before_the_entry_moved_is_finished_by_a_rerun(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    cutoff.at(MODIFY_DN)
    error = cli("user", "rename", "CORP/ann", "annb", "--json").error(1)
    assert "'ann' was renamed to 'annb', which may have been made" in error["message"]
    cutoff.restore()
    assert corp.entry(uid_dn(corp, "ann")) is not None
    assert cli("user", "show", "CORP/ann", "--json").json()["roles"] == ["staff"]
    cli("user", "rename", "CORP/ann", "annb").ok()
    assert members(corp, "staff") == [uid_dn(corp, "annb")]
    assert target_users(scim2_server) == ["annb"]


def test_a_refused_rename_leaves_the_groups_as_they_were(cli, corp):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    corp.add(f"dn: {uid_dn(corp, 'annb')}\nobjectClass: account\nuid: annb\n")  # no user
    cli("user", "rename", "CORP/ann", "annb").fails(4)
    assert members(corp, "staff") == [uid_dn(corp, "ann")]
    assert cli("user", "show", "CORP/ann", "--json").json()["roles"] == ["staff"]


def test_a_user_named_by_a_multi_valued_rdn_is_renamed_keeping_its_other_parts(cli, corp):
    cli("role", "add", "CORP/staff").ok()
    dn = f"uid=mr+cn=Multi Rdn,{corp.people}"
    corp.add(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: mr\ncn: Multi Rdn\nsn: M\n")
    cli("role", "assign", "CORP/staff", "CORP/mr").ok()
    cli("user", "rename", "CORP/mr", "mrx").ok()
    renamed = corp.entry(f"uid=mrx+cn=Multi Rdn,{corp.people}", "uid", "cn")
    assert renamed is not None and renamed.get("uid") == ["mrx"]
    assert renamed.get("cn") == ["Multi Rdn"]
    assert cli("user", "show", "CORP/mrx", "--json").json()["roles"] == ["staff"]
    assert cli("role", "show", "CORP/staff", "--json").json()["members"] == ["mrx"]


def test_an_add_with_roles_is_never_left_without_them(cli, corp, cutoff, scim2_server):
    cli("role", "add", "CORP/staff").ok()
    cutoff.at(MODIFY, after=ADD)  # where the role used to be given, after the entry
    cli("user", "add", "CORP/bo", "-c", "email=bo@example.com", "--role", "CORP/staff").ok()
    assert not cutoff.cut.is_set()  # nothing is written after the entry any more
    assert members(corp, "staff") == [uid_dn(corp, "bo")]
    cutoff.at(ADD, made=True)
    error = cli("user", "add", "CORP/cy", "--role", "CORP/staff", "--json").error(1)
    assert "while user 'cy' was added, after its roles (staff) listed its DN" in error["message"]
    assert "run the same command again" in error["hint"]
    cutoff.restore()
    assert cli("user", "show", "CORP/cy", "--json").json()["roles"] == ["staff"]


def test_an_add_cut_off_before_the_entry_is_finished_by_a_rerun(cli, corp, cutoff, scim2_server):
    cli("role", "add", "CORP/staff").ok()
    cutoff.at(ADD)
    args = ("user", "add", "CORP/bo", "-c", "email=bo@example.com", "--role", "CORP/staff")
    error = cli(*args, "--json").error(1)
    assert "its roles (staff) listed its DN" in error["message"]
    cutoff.restore()
    assert corp.entry(uid_dn(corp, "bo")) is None
    cli(*args).ok()
    assert members(corp, "staff") == [uid_dn(corp, "bo")]
    assert [e["target"] for e in cli("log", "--action", "user.add", "--json").items()] == [
        "CORP/bo"
    ]
    assert target_users(scim2_server) == ["bo"]


def test_a_refused_add_takes_the_user_out_of_its_roles_again(cli, corp):
    cli("role", "add", "CORP/staff").ok()
    corp.add(f"dn: {uid_dn(corp, 'bo')}\nobjectClass: account\nuid: bo\n")  # no user
    cli("user", "add", "CORP/bo", "--role", "CORP/staff").fails(4)
    assert members(corp, "staff") == [f"cn=staff,{corp.groups}"]  # the empty group's own


def add_member(directory: Directory, group: str, dn: str) -> None:
    """Have ``cn=GROUP`` list ``dn``, as an administrator's ldapmodify does."""
    change = f"dn: cn={group},{directory.groups}\nchangetype: modify\nadd: member\nmember: {dn}\n"
    directory.tool("ldapmodify", input=change)


def test_a_rename_of_a_user_deleted_in_the_directory_finishes_nothing(cli, corp):
    cli("role", "add", "CORP/admins").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/admins").ok()
    cli("user", "add", "CORP/bob", "-c", "family_name=Jones").ok()
    corp.tool("ldapdelete", uid_dn(corp, "ann"))  # no referential integrity: admins keeps it
    assert members(corp, "admins") == [uid_dn(corp, "ann")]
    error = cli("user", "rename", "CORP/ann", "bob", "--json").error(3)
    assert error["message"] == "no user 'ann' in the CORP userstore"
    assert cli("user", "show", "CORP/bob", "--json").json()["roles"] == []
    assert members(corp, "admins") == [uid_dn(corp, "ann")]
    assert renames(cli) == []


def test_a_rename_is_finished_only_onto_the_user_it_was_renaming(cli, corp, cutoff):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    cutoff.at(MODIFY_DN)  # recorded, the groups list annb too, the entry not moved
    cli("user", "rename", "CORP/ann", "annb", "--json").error(1)
    cutoff.restore()
    corp.tool("ldapdelete", uid_dn(corp, "ann"))  # an administrator's doing, then
    corp.add(f"dn: {uid_dn(corp, 'annb')}\nobjectClass: inetOrgPerson\nuid: annb\ncn: B\nsn: B\n")
    cli("user", "rename", "CORP/ann", "annb").fails(3)
    assert renames(cli) == []


def test_a_stale_member_value_gives_no_role_to_a_user_added_later(cli, corp, cutoff, scim2_server):
    cli("role", "add", "CORP/staff").ok()
    cutoff.at(ADD)
    cli("user", "add", "CORP/bo", "--role", "CORP/staff", "--json").error(1)
    cutoff.restore()
    assert uid_dn(corp, "bo") in members(corp, "staff")  # listed before the add, cut off
    cli("user", "add", "CORP/bo").ok()  # another add, with no role
    assert cli("user", "show", "CORP/bo", "--json").json()["roles"] == []
    assert members(corp, "staff") == [f"cn=staff,{corp.groups}"]
    assert target_users(scim2_server) == []  # pushed only to holders of staff


def test_a_refused_add_or_rename_keeps_memberships_it_did_not_make(cli, corp):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    for uid in ("bo", "annb"):  # entries that are no users, members of staff
        corp.add(f"dn: {uid_dn(corp, uid)}\nobjectClass: account\nuid: {uid}\n")
        add_member(corp, "staff", uid_dn(corp, uid))
    listed = members(corp, "staff")
    cli("user", "add", "CORP/bo", "--role", "CORP/staff").fails(4)
    cli("user", "rename", "CORP/ann", "annb").fails(4)
    assert members(corp, "staff") == listed
    cli("user", "add", "CORP/bo", "--role", "CORP/staff").fails(4)  # nothing was kept to adopt


def test_an_add_whose_answer_was_lost_is_finished_by_a_rerun(cli, corp, cutoff, scim2_server):
    cli("role", "add", "CORP/staff").ok()
    args = ("user", "add", "CORP/cy", "-c", "email=cy@example.com", "--role", "CORP/staff")
    cutoff.at(ADD, made=True)
    error = cli(*args, "--json").error(1)
    assert "the add may have been made" in error["message"]
    assert "run the same command again" in error["hint"]
    cutoff.restore()
    assert corp.entry(uid_dn(corp, "cy")) is not None
    cli(*args).ok()
    assert [e["target"] for e in cli("log", "--action", "user.add", "--json").items()] == [
        "CORP/cy"
    ]
    assert target_users(scim2_server) == ["cy"]
    cli(*args).fails(4)  # done: the user exists


def test_a_rename_whose_last_answer_was_lost_is_finished_by_a_rerun(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "-c", "family_name=Lee", "--role", "CORP/staff").ok()
    cutoff.at(MODIFY, after=MODIFY_DN, made=True)  # the old DN leaves staff, unheard
    cli("user", "rename", "CORP/ann", "annb", "--json").error(1)
    cutoff.restore()
    assert members(corp, "staff") == [uid_dn(corp, "annb")]  # every step was made
    cli("user", "rename", "CORP/ann", "annb").ok()
    assert renames(cli) == [("CORP/annb", "CORP/ann")]
    assert target_users(scim2_server) == ["annb"]
    cli("user", "rename", "CORP/ann", "annb").fails(3)


class Blip(Cutoff):
    """:class:`Cutoff` that drops the connections once, then lets the client in again."""

    def _drop_all(self) -> None:
        super()._drop_all()
        self.restore()


def test_an_idle_connection_past_descriptor_1024_is_not_taken_for_closed(cutoff):
    """A busy process (a serve with many clients) has descriptors past 1,024, which
    select refuses: every add or rename took its open connection for one the server
    had closed, and reconnected."""
    host, port = cutoff.url.removeprefix("ldap://").split(":")
    with socket.create_connection((host, int(port))) as opened:
        high = os.dup2(opened.fileno(), 1500)
        with socket.socket(fileno=high) as sock:
            conn = types.SimpleNamespace(socket=sock)
            assert not closed_by_peer(conn)
            cutoff.at(ADD)
            sock.sendall(ldap_bulk.encode_add(1, "uid=x,dc=example", {"uid": ["x"]}))
            sock.settimeout(5)  # a bound: the relay drops the connection
            assert sock.recv(1) == b""
            assert closed_by_peer(conn)


def test_an_add_that_another_writer_beats_gives_that_entry_none_of_its_roles(
    cli, corp, monkeypatch
):
    cli("role", "add", "CORP/admins").ok()
    list_new = LdapUserStore._list_new

    def beaten(self, username, dn, roles):  # the roles list the DN, then eve appears
        listed = list_new(self, username, dn, roles)
        corp.add(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: eve\ncn: Other Eve\nsn: Eve\n")
        return listed

    monkeypatch.setattr(LdapUserStore, "_list_new", beaten)
    cli("user", "add", "CORP/eve", "--role", "CORP/admins").fails(4)
    monkeypatch.setattr(LdapUserStore, "_list_new", list_new)
    assert members(corp, "admins") == [f"cn=admins,{corp.groups}"]  # the empty group's own
    assert cli("user", "show", "CORP/eve", "--json").json()["roles"] == []


def test_a_rename_that_another_writer_beats_gives_that_entry_none_of_its_roles(
    cli, corp, monkeypatch
):
    cli("role", "add", "CORP/admins").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/admins").ok()
    rename_entry = LdapUserStore._rename_entry

    def beaten(self, entry, new_dn, listed, old, new):  # listed, then zed appears
        corp.add(f"dn: {new_dn}\nobjectClass: inetOrgPerson\nuid: {new}\ncn: Zed\nsn: Zed\n")
        return rename_entry(self, entry, new_dn, listed, old, new)

    monkeypatch.setattr(LdapUserStore, "_rename_entry", beaten)
    cli("user", "rename", "CORP/ann", "zed").fails(4)
    monkeypatch.setattr(LdapUserStore, "_rename_entry", rename_entry)
    assert members(corp, "admins") == [uid_dn(corp, "ann")]
    assert cli("user", "show", "CORP/zed", "--json").json()["roles"] == []
    assert cli("user", "show", "CORP/ann", "--json").json()["roles"] == ["admins"]


SEARCH = 0x63


def adds(cli) -> list[str]:
    return [e["target"] for e in cli("log", "--action", "user.add", "--json").items()]


def make_user(directory: Directory, uid: str, group: str, mail: str | None = None) -> None:
    """``uid``, a member of ``group``, made by someone else (an administrator's
    ldapadd, an HR feed)."""
    extra = f"mail: {mail}\n" if mail else ""
    entry = f"dn: {uid_dn(directory, uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
    directory.add(f"{entry}cn: Other {uid}\nsn: Other\n{extra}")
    add_member(directory, group, uid_dn(directory, uid))


def test_a_cut_off_add_adopts_no_user_someone_else_made(cli, corp, cutoff, scim2_server):
    cli("role", "add", "CORP/staff").ok()
    cutoff.at(MODIFY)  # the first write, the DN listed in staff, is lost
    cli("user", "add", "CORP/bob", "--role", "CORP/staff", "--json").error(1)
    cutoff.restore()
    make_user(corp, "bob", "staff", mail="other@corp.example")
    args = ("user", "add", "CORP/bob", "-c", "email=bob@example.com", "--role", "CORP/staff")
    error = cli(*args, "--json").error(4)
    assert "already exists" in error["message"]
    assert "nothing proves that it made this user" in error["message"]
    assert adds(cli) == []
    assert target_users(scim2_server) == []
    assert corp.entry(uid_dn(corp, "bob"), "mail").get("mail") == ["other@corp.example"]
    cli(*args).fails(4)  # the record is gone: a plain conflict now


def test_an_add_that_wrote_nothing_leaves_nothing_to_adopt(
    cli, corp, cutoff, scim2_server, monkeypatch
):
    cli("role", "add", "CORP/staff").ok()
    args = ("user", "add", "CORP/bob", "--role", "CORP/staff")
    refuse_existing = LdapUserStore._refuse_existing

    def gone(self, username, dn):  # the directory is gone at the add's first search
        cutoff.at(SEARCH)
        return refuse_existing(self, username, dn)

    monkeypatch.setattr(LdapUserStore, "_refuse_existing", gone)
    cli(*args, "--json").error(1)
    monkeypatch.setattr(LdapUserStore, "_refuse_existing", refuse_existing)
    cutoff.restore()
    make_user(corp, "bob", "staff")  # what the add asked for, made by someone else
    error = cli(*args, "--json").error(4)
    assert "already exists" in error["message"]
    assert adds(cli) == []
    assert target_users(scim2_server) == []


def test_a_rerun_asking_for_other_claims_adopts_nothing(cli, corp, cutoff, scim2_server):
    cli("role", "add", "CORP/staff").ok()
    cutoff.at(ADD, made=True)
    cli("user", "add", "CORP/cy", "-c", "email=typo@example.com", "--role", "CORP/staff", "--json")
    cutoff.restore()
    args = ("user", "add", "CORP/cy", "-c", "email=cy@example.com", "--role", "CORP/staff")
    error = cli(*args, "--json").error(4)
    assert "asked for other claims, roles or password" in error["message"]
    assert "idprov user update" in error["hint"]
    assert corp.entry(uid_dn(corp, "cy"), "mail").get("mail") == ["typo@example.com"]
    assert adds(cli) == []
    assert target_users(scim2_server) == []


def test_a_rerun_with_another_password_adopts_nothing(cli, corp, cutoff):
    cli("role", "add", "CORP/staff").ok()
    args = ("user", "add", "CORP/cy", "--role", "CORP/staff", "--password-stdin")
    cutoff.at(ADD, made=True)
    assert cli(*args, "--json", input="First-pass-1234\n").exit_code == 1
    cutoff.restore()
    cli(*args, input="Other-pass-5678\n").fails(4)
    assert adds(cli) == []


def test_a_rerun_with_the_same_password_adopts_the_user_made(cli, corp, cutoff, scim2_server):
    cli("role", "add", "CORP/staff").ok()
    args = ("user", "add", "CORP/di", "--role", "CORP/staff", "--password-stdin")
    cutoff.at(ADD, made=True)
    assert cli(*args, "--json", input="First-pass-1234\n").exit_code == 1
    cutoff.restore()
    cli(*args, input="First-pass-1234\n").ok()
    assert adds(cli) == ["CORP/di"]
    assert target_users(scim2_server) == ["di"]


def test_a_cut_off_rename_is_finished_once_the_process_that_made_it_is_gone(
    cli, corp, cutoff, tmp_path
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    cutoff.at(MODIFY, after=MODIFY_DN)
    cli("user", "rename", "CORP/ann", "annb", "--json").error(1)
    cutoff.restore()
    state = sqlite3.connect(tmp_path / "data" / "idprov.db")

    def owned_by(pid: int) -> None:  # as if another process of this machine made it
        with state:
            state.execute(
                "UPDATE directory_writes SET owner = ?", [f"{socket.gethostname()}:{pid}:x"]
            )

    owned_by(os.getppid())  # a process that runs
    assert (
        "being made by another"
        in cli("user", "rename", "CORP/ann", "annb", "--json").error(8)["message"]
    )
    owned_by(int(Path("/proc/sys/kernel/pid_max").read_text()))  # no process has it
    cli("user", "rename", "CORP/ann", "annb").ok()
    state.close()
    assert renames(cli) == [("CORP/annb", "CORP/ann")]
    assert members(corp, "staff") == [uid_dn(corp, "annb")]


def jit_portal(cli, tmp_path, slapd, cutoff, monkeypatch) -> tuple[str, ...]:
    """A portal whose JIT logins land in CORP (behind ``cutoff``) with role staff; the
    command line of jo's login through it."""
    corp_config(
        tmp_path,
        slapd,
        """applications:
  - name: portal
    identity_providers: []
    userstore: CORP
    jit:
      - idp: proxy
        roles: {Everyone: [staff]}
""",
        url=cutoff.url,
        bind=(slapd.root_dn, slapd.root_password),
    )
    monkeypatch.chdir(tmp_path)
    cli("role", "add", "CORP/staff").ok()
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps({"sub": "jo", "email": "jo@example.com", "groups": ["Everyone"]}))
    return ("jit", "login", "--app", "portal", "--idp", "proxy", "--claims", str(claims))


def test_a_jit_login_whose_add_answer_was_lost_is_finished_by_the_next_login(
    cli, tmp_path, slapd, cutoff, monkeypatch
):
    login = jit_portal(cli, tmp_path, slapd, cutoff, monkeypatch)
    cutoff.at(ADD, made=True)
    cli(*login, "--json").error(1)
    cutoff.restore()
    assert cli(*login, "--json").json()["action"] == "created"
    assert cli(*login, "--json").json()["action"] == "unchanged"  # linked to this login
    assert adds(cli) == ["CORP/jo"]
    assert members(slapd, "staff") == [uid_dn(slapd, "jo")]


def test_a_jit_login_takes_no_user_someone_else_made_after_its_cut_off_add(
    cli, tmp_path, slapd, cutoff, monkeypatch
):
    login = jit_portal(cli, tmp_path, slapd, cutoff, monkeypatch)
    cutoff.at(MODIFY)  # the DN listed in staff is lost: no entry made
    cli(*login, "--json").error(1)
    cutoff.restore()
    make_user(slapd, "jo", "staff", mail="someone@corp.example")
    assert "already exists" in cli(*login, "--json").error(4)["message"]
    cli(*login, "--json").error(4)  # and then: not linked
    assert adds(cli) == []


# ---- a write whose answer is lost, the directory answering again at once


def actions(cli, action: str) -> list[tuple[str, dict]]:
    return [(e["target"], e["details"]) for e in cli("log", "--action", action, "--json").items()]


def target_groups(scim2_server: Scim2Peer) -> dict[str, list[str]]:
    users = {u["id"]: u["userName"] for u in scim2_server.users()}
    return {
        g["displayName"]: sorted(users.get(m["value"], m["value"]) for m in g.get("members", []))
        for g in scim2_server.groups()
    }


@pytest.mark.parametrize("made", [True, False], ids=["answer lost", "request lost"])
def test_a_user_delete_whose_answer_was_lost_is_done_audited_and_pushed(
    cli, corp, cutoff, scim2_server, made
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/cut3", "-c", "email=c@example.com", "--role", "CORP/staff").ok()
    assert target_users(scim2_server) == ["cut3"]
    cutoff.at(DELETE, made=made, reopen=True)
    cli("user", "delete", "CORP/cut3", "--yes").ok()
    assert cutoff.drops == 1  # the connection was dropped with the delete out
    assert corp.entry(uid_dn(corp, "cut3")) is None
    assert actions(cli, "user.delete") == [("CORP/cut3", {"roles": ["staff"]})]
    assert target_users(scim2_server) == []
    assert members(corp, "staff") == [f"cn=staff,{corp.groups}"]


def test_a_role_delete_whose_answer_was_lost_is_done_audited_and_pushed(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    assert list(target_groups(scim2_server)) == ["CORP/staff"]
    cutoff.at(DELETE, made=True, reopen=True)
    cli("role", "delete", "CORP/staff", "--yes", "--allow-deletes", "1").ok()
    assert cutoff.drops == 1
    assert corp.entry(f"cn=staff,{corp.groups}") is None
    assert [t for t, _ in actions(cli, "role.delete")] == ["CORP/staff"]
    assert target_groups(scim2_server) == {}
    assert target_users(scim2_server) == []  # ann left the scope with it


@pytest.mark.parametrize("made", [True, False], ids=["answer lost", "request lost"])
def test_a_role_rename_whose_answer_was_lost_is_done_audited_and_pushed(
    cli, corp, cutoff, scim2_server, made
):
    cli("role", "add", "CORP/tmprole2").ok()
    cutoff.at(MODIFY_DN, made=made, reopen=True)
    cli("role", "rename", "CORP/tmprole2", "CORP/tmprole3").ok()
    assert cutoff.drops == 1
    assert corp.entry(f"cn=tmprole3,{corp.groups}") is not None
    assert actions(cli, "role.rename") == [("CORP/tmprole3", {"from": "tmprole2"})]
    assert cli("role", "show", "CORP/tmprole3", "--json").json()["members"] == []


@pytest.mark.parametrize("made", [True, False], ids=["answer lost", "request lost"])
def test_a_role_assign_and_unassign_whose_answers_were_lost_are_done_audited_and_pushed(
    cli, corp, cutoff, scim2_server, made
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    cli("user", "add", "CORP/h02").ok()
    cutoff.at(MODIFY, made=made, reopen=True)
    cli("role", "assign", "CORP/staff", "CORP/h02").ok()
    assert cutoff.drops == 1
    assert members(corp, "staff") == sorted([uid_dn(corp, "ann"), uid_dn(corp, "h02")])
    assert actions(cli, "role.assign") == [("CORP/staff", {"users": ["h02"]})]
    assert target_groups(scim2_server) == {"CORP/staff": ["ann", "h02"]}
    cutoff.at(MODIFY, made=made, reopen=True)
    cli("role", "unassign", "CORP/staff", "CORP/ann", "--yes", "--allow-deletes", "1").ok()
    assert cutoff.drops == 2
    assert members(corp, "staff") == [uid_dn(corp, "h02")]
    assert actions(cli, "role.unassign") == [("CORP/staff", {"users": ["ann"]})]
    assert target_groups(scim2_server) == {"CORP/staff": ["h02"]}
    assert target_users(scim2_server) == ["h02"]


# ---- a write whose answer is lost, the directory down until the command has failed


def test_a_user_delete_cut_off_with_its_answer_lost_is_finished_by_a_rerun(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/cut3", "-c", "email=c@example.com", "--role", "CORP/staff").ok()
    cutoff.at(DELETE, made=True)
    error = cli("user", "delete", "CORP/cut3", "--yes", "--json").error(1)
    assert "may have been made" in error["message"]
    assert "run the same command again" in error["hint"]
    cutoff.restore()
    assert corp.entry(uid_dn(corp, "cut3")) is None  # made, never heard
    assert actions(cli, "user.delete") == [] and target_users(scim2_server) == ["cut3"]
    cli("user", "delete", "CORP/cut3", "--yes").ok()  # it said: no user 'cut3'
    assert actions(cli, "user.delete") == [("CORP/cut3", {"roles": ["staff"]})]
    assert target_users(scim2_server) == []
    cli("user", "delete", "CORP/cut3", "--yes").fails(3)  # done: nothing left to finish


def test_a_role_delete_cut_off_with_its_answer_lost_is_finished_by_a_rerun(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    cutoff.at(DELETE, made=True)
    cli("role", "delete", "CORP/staff", "--yes", "--allow-deletes", "1", "--json").error(1)
    cutoff.restore()
    assert corp.entry(f"cn=staff,{corp.groups}") is None
    assert list(target_groups(scim2_server)) == ["CORP/staff"]
    cli("role", "delete", "CORP/staff", "--yes", "--allow-deletes", "1").ok()
    assert actions(cli, "role.delete") == [("CORP/staff", {"members": ["ann"]})]
    assert target_groups(scim2_server) == {} and target_users(scim2_server) == []
    cli("role", "delete", "CORP/staff", "--yes").fails(3)


def test_a_role_rename_cut_off_with_its_answer_lost_is_finished_by_a_rerun(cli, corp, cutoff):
    cli("role", "add", "CORP/tmprole2").ok()
    cutoff.at(MODIFY_DN, made=True)
    cli("role", "rename", "CORP/tmprole2", "CORP/tmprole3", "--json").error(1)
    cutoff.restore()
    assert corp.entry(f"cn=tmprole3,{corp.groups}") is not None  # made, never heard
    cli("role", "rename", "CORP/tmprole2", "CORP/tmprole3").ok()  # it said: no role
    assert actions(cli, "role.rename") == [("CORP/tmprole3", {"from": "tmprole2"})]
    assert members(corp, "tmprole3") == [f"cn=tmprole3,{corp.groups}"]  # its own DN
    cli("role", "rename", "CORP/tmprole2", "CORP/tmprole3").fails(3)


def test_a_role_assign_and_unassign_cut_off_with_their_answers_lost_are_finished_by_a_rerun(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    cli("user", "add", "CORP/h02").ok()
    cutoff.at(MODIFY, made=True)
    cli("role", "assign", "CORP/staff", "CORP/h02", "CORP/ann", "--json").error(1)
    cutoff.restore()
    assert members(corp, "staff") == sorted([uid_dn(corp, "ann"), uid_dn(corp, "h02")])
    cli("role", "assign", "CORP/staff", "CORP/h02", "CORP/ann").ok()  # it said: nothing to do
    assert actions(cli, "role.assign") == [("CORP/staff", {"users": ["h02"]})]
    assert target_groups(scim2_server) == {"CORP/staff": ["ann", "h02"]}
    cutoff.at(MODIFY, made=True)
    args = ("role", "unassign", "CORP/staff", "CORP/ann", "--yes", "--allow-deletes", "1")
    cli(*args, "--json").error(1)
    cutoff.restore()
    cli(*args).ok()
    assert actions(cli, "role.unassign") == [("CORP/staff", {"users": ["ann"]})]
    assert target_users(scim2_server) == ["h02"]
    cli(*args).ok()
    assert len(actions(cli, "role.unassign")) == 1  # done: nothing to do
    assert "no user 'ghost'" in cli("role", "unassign", "CORP/staff", "CORP/ghost").fails(3)


def test_a_user_update_cut_off_with_its_answer_lost_is_finished_by_a_rerun(
    cli, corp, cutoff, scim2_server
):
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "-c", "family_name=Lee", "--role", "CORP/staff").ok()
    cutoff.at(MODIFY, made=True)
    cli("user", "update", "CORP/ann", "-c", "family_name=Jones", "--json").error(1)
    cutoff.restore()
    assert corp.entry(uid_dn(corp, "ann"), "sn").get("sn") == ["Jones"]
    cli("user", "update", "CORP/ann", "-c", "family_name=Jones").ok()  # it said: unchanged
    assert actions(cli, "user.update") == [("CORP/ann", {"claims": ["family_name"]})]
    (pushed,) = scim2_server.users()
    assert pushed["name"]["familyName"] == "Jones"
    cli("user", "update", "CORP/ann", "-c", "family_name=Jones").ok()
    assert len(actions(cli, "user.update")) == 1


def test_a_managers_delete_cut_off_with_its_answer_lost_finishes_its_reports_updates(
    cli, tmp_path, slapd, cutoff, scim2_server, monkeypatch
):
    """The reports of a deleted manager lose their manager claim first (an update each,
    recorded too): a re-run after the delete's answer was lost audits and pushes those
    updates with the delete (the directory holds them: it said "nothing to do")."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    corp_config(
        tmp_path,
        slapd,
        f"""    claim_attributes: {{manager: description}}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
applications:
  - name: resident
    identity_providers: [scim]
""",
        url=cutoff.url,
        bind=(slapd.root_dn, slapd.root_password),
    )
    cli("user", "add", "CORP/boss").ok()
    cli("user", "add", "CORP/emp", "-c", "manager=boss").ok()
    assert target_users(scim2_server) == ["boss", "emp"]
    cutoff.at(DELETE, made=True)
    cli("user", "delete", "CORP/boss", "--yes", "--json").error(1)
    cutoff.restore()
    assert slapd.entry(uid_dn(slapd, "emp"), "description").get("description") == []
    cli("user", "delete", "CORP/boss", "--yes").ok()
    assert actions(cli, "user.update") == [("CORP/emp", {"claims": ["manager"]})]
    assert [t for t, _ in actions(cli, "user.delete")] == ["CORP/boss"]
    assert target_users(scim2_server) == ["emp"]
    (emp,) = scim2_server.users()
    assert "manager" not in json.dumps(emp)


def test_an_assign_cut_off_after_its_write_is_in_the_next_push_of_the_group(
    cli, corp, cutoff, scim2_server
):
    """h02's assign is cut off with its answer lost (the member value was written);
    the operator assigns cid instead of running it again: that push compares every
    member of staff while the cut write is recorded unfinished, so h02 is created and
    put in the group with cid."""
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "--role", "CORP/staff").ok()
    cli("user", "add", "CORP/h02").ok()
    cli("user", "add", "CORP/cid").ok()
    cutoff.at(MODIFY, made=True)
    cli("role", "assign", "CORP/staff", "CORP/h02", "--json").error(1)
    cutoff.restore()
    assert members(corp, "staff") == sorted([uid_dn(corp, "ann"), uid_dn(corp, "h02")])

    status = cli("status")
    assert status.exit_code == 0, status.stderr
    assert "1 change(s) to a directory cut off half-way: assign of CORP/staff" in status.stderr
    assert "run the same command" in status.stderr

    cli("role", "assign", "CORP/staff", "CORP/cid").ok()

    assert target_groups(scim2_server) == {"CORP/staff": ["ann", "cid", "h02"]}
    cli("role", "assign", "CORP/staff", "CORP/h02").ok()  # run again: finished
    assert "cut off" not in cli("status").stderr


def test_an_unassign_cut_off_after_its_write_is_in_the_next_push_of_the_group(
    cli, corp, cutoff, scim2_server, tmp_path
):
    """ann's unassign from eng is cut off after the directory took her out: the next
    assign to eng (of cid) takes her out of the group at the target too (her access
    through eng goes), as a push comparing every member does."""
    config = tmp_path / "idprov.yaml"
    scoped = "    provisioning_roles: [staff]\n"
    config.write_text(config.read_text().replace(scoped, scoped + "    push_roles: all\n"))
    cli("role", "add", "CORP/staff").ok()
    cli("role", "add", "CORP/eng").ok()
    for name in ("ann", "bob", "cid"):
        roles = ["--role", "CORP/eng"] if name != "cid" else []
        cli("user", "add", f"CORP/{name}", "--role", "CORP/staff", *roles).ok()
    assert target_groups(scim2_server)["CORP/eng"] == ["ann", "bob"]
    cutoff.at(MODIFY, made=True)
    cli("role", "unassign", "CORP/eng", "CORP/ann", "--yes", "--json").error(1)
    cutoff.restore()
    assert members(corp, "eng") == [uid_dn(corp, "bob")]

    cli("role", "assign", "CORP/eng", "CORP/cid").ok()

    assert target_groups(scim2_server)["CORP/eng"] == ["bob", "cid"]
