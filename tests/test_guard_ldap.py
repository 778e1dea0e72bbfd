"""Reads that come back short from a real slapd (an access rule hides entries or
attributes from idprov's bind account, the server is down, an entry is re-created)
never turn into deletions at the target: the guard refuses, `plan` exits 7, a
re-created entry converges in one sync. Target: the real scim2-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.scim2 import Scim2Peer
from tests.peers.slapd import Directory
from tests.test_userstore_ldap import SERVICE_PASSWORD, add_service_account

SVC = "cn=svc,dc=example,dc=com"
WRITE = f'access to * by dn.exact="{SVC}" write by * read\n'
HIDE_GROUPS = (
    f'access to dn.children="ou=groups,dc=example,dc=com" by dn.exact="{SVC}" none by * read\n'
)
HIDE_ATTRS = f'access to attrs=mail,givenName by dn.exact="{SVC}" none by * read\n'


def corp_config(
    tmp_path: Path,
    directory: Directory,
    rest: str = "",
    url: str | None = None,
    bind: tuple[str, str] | None = None,
) -> None:
    """Write tmp_path/idprov.yaml: PRIMARY and a CORP store on ``directory`` (at
    ``url``, default the directory's own; bound as the service account, or as
    ``bind``: a DN and its password), then ``rest`` (identity providers...)."""
    bind_dn, password = bind or (SVC, SERVICE_PASSWORD)
    secret = tmp_path / "bind-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    url: {url or directory.url}
    bind_dn: "{bind_dn}"
    bind_password: file:{secret}
    user_search_base: "{directory.people}"
    group_search_base: "{directory.groups}"
{rest}""")


def configure(tmp_path: Path, directory: Directory, scim: Scim2Peer) -> None:
    corp_config(
        tmp_path,
        directory,
        f"""identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    push_roles: all
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""",
    )


def person(directory: Directory, uid: str) -> str:
    return (
        f"dn: uid={uid},{directory.people}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
        f"cn: {uid}\nsn: {uid}\ngivenName: G{uid}\nmail: {uid}@example.com\n\n"
    )


def group(directory: Directory, name: str, uids: list[str]) -> str:
    members = "".join(f"member: uid={u},{directory.people}\n" for u in uids)
    return f"dn: cn={name},{directory.groups}\nobjectClass: groupOfNames\ncn: {name}\n{members}\n"


@pytest.fixture()
def corp(tmp_path, slapd_factory, scim2_server, monkeypatch) -> Directory:
    """A slapd whose bind account can write; 12 people in 4 groups, synced to SCIM."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    directory = slapd_factory(extra_config=WRITE)
    add_service_account(directory)
    uids = [f"u{i:02d}" for i in range(12)]
    ldif = "".join(person(directory, u) for u in uids)
    ldif += "".join(group(directory, f"team{g}", uids[g * 3 : g * 3 + 3]) for g in range(4))
    directory.add(ldif)
    configure(tmp_path, directory, scim2_server)
    return directory


def restart_with(directory: Directory, rules: str) -> None:
    directory.server.extra_config = rules + WRITE
    directory.server.write_config()
    directory.restart()


def test_groups_hidden_by_an_access_rule_are_not_deleted_remotely(cli, corp, scim2_server):
    cli("sync").ok()
    assert (len(scim2_server.users()), len(scim2_server.groups())) == (12, 4)
    restart_with(corp, HIDE_GROUPS)
    assert cli("role", "list", "--domain", "CORP", "--json").json()["items"] == []  # hidden
    error = cli("sync", "--json").error(7)
    assert "will delete 4 groups at scim (100% of its 4 groups)" in error["message"]
    assert len(scim2_server.groups()) == 4
    plan = cli("plan", "--json").json()["plan"]["idps"][0]
    assert plan["guard"] and len(plan["effects"]["groups"]) == 4


def test_attributes_hidden_by_an_access_rule_are_not_wiped_remotely(cli, corp, scim2_server):
    cli("sync").ok()
    restart_with(corp, HIDE_ATTRS)
    error = cli("sync", "--json").error(7)
    assert "of 12 users at scim (100% of its 12 users)" in error["message"]
    assert "deletion_guard.attributes" in error["message"]
    assert "name.givenName" in error["message"]
    assert {u["name"]["givenName"] for u in scim2_server.users()} == {
        f"Gu{i:02d}" for i in range(12)
    }


def test_plan_exits_7_when_the_directory_is_down(cli, corp, scim2_server):
    cli("sync").ok()
    corp.stop()
    error = cli("plan", "--json").error(7)
    assert "could not be read" in error["message"] and "CORP" in error["message"]
    cli("sync", "--dry-run", "--json").error(7)


def test_an_entry_recreated_with_the_same_name_converges_in_one_sync(cli, corp, scim2_server):
    cli("sync").ok()
    before = {u["userName"]: u["externalId"] for u in scim2_server.users()}
    corp.tool("ldapdelete", f"cn=team0,{corp.groups}", f"uid=u00,{corp.people}")
    corp.add(person(corp, "u00") + group(corp, "team0", ["u00", "u01"]))  # new entryUUIDs
    result = cli("sync", "--json")
    assert result.exit_code == 0, result
    after = {u["userName"]: u["externalId"] for u in scim2_server.users()}
    assert set(after) == set(before) and after["u00"] != before["u00"]
    assert cli("plan", "--json").json()["plan"]["idps"][0]["items"] == []


HIDE_IDS = f'access to attrs=entryUUID by dn.exact="{SVC}" none by * read\n'
HIDE_MEMBERS = (
    f'access to dn.subtree="cn=team0,ou=groups,dc=example,dc=com" attrs=member'
    f' by dn.exact="{SVC}" none by * read\n'
)


def test_ids_hidden_by_an_access_rule_fail_the_read_and_delete_nothing(cli, corp, scim2_server):
    """Users read without their entryUUID looked deleted and made anew: 5 users
    under the guard's minimum were all deleted at the target, and the sync exited 0."""
    cli("sync").ok()
    before = {u["userName"]: u["id"] for u in scim2_server.users()}
    restart_with(corp, HIDE_IDS)
    for command in (["sync"], ["plan"]):
        error = cli(*command, "--json").error(7)
        assert "was read without its entryUUID" in error["message"], error
        assert "access rules hide it from cn=svc,dc=example,dc=com" in error["message"]
        assert "grant cn=svc,dc=example,dc=com read access to entryUUID" in error["hint"]
    assert {u["userName"]: u["id"] for u in scim2_server.users()} == before
    listed = cli("user", "list", "--domain", "CORP", "--json").error(1)
    assert "entryUUID" in listed["message"]
    shown = cli("user", "show", "CORP/u01", "--json").error(1)
    assert "entryUUID" in shown["message"]
    restart_with(corp, "")
    result = cli("sync", "--json")
    assert result.exit_code == 0, result
    assert {u["userName"]: u["id"] for u in scim2_server.users()} == before


def test_members_hidden_by_an_access_rule_fail_the_read_and_remove_nobody(cli, corp, scim2_server):
    """A groupOfNames always has a member (idprov keeps a placeholder in an empty
    one): read back with none, its members are hidden, not gone. The 3 members of
    team0 were taken out of its group at the target (under the guard's minimum)."""
    cli("sync").ok()
    members = {g["displayName"]: len(g.get("members", [])) for g in scim2_server.groups()}
    assert members["CORP/team0"] == 3
    restart_with(corp, HIDE_MEMBERS)
    error = cli("sync", "--json").error(7)
    assert f"cn=team0,{corp.groups} was read without its member" in error["message"], error
    assert "which every groupOfNames has" in error["message"]
    assert "read access to member" in error["hint"]
    after = {g["displayName"]: len(g.get("members", [])) for g in scim2_server.groups()}
    assert after == members
    assert len(scim2_server.users()) == 12
    shown = cli("role", "show", "CORP/team0", "--json").error(1)
    assert "was read without its member" in shown["message"]


def test_outbox_discard_needs_no_directory(cli, corp, tmp_path, scim2_server):
    """Rows nobody will push (the target is gone) are discarded while the directory is
    down too: the groups they would have changed are compared whole at their next push
    (every group idprov holds there, as the discarded users' roles cannot be read)."""
    cli("role", "add", "CORP/staff").ok()
    path = tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace(scim2_server.base_url, "http://127.0.0.1:9/v2"))
    cli("user", "add", "CORP/zed", "--role", "CORP/staff")  # its push fails: rows stay
    assert cli("outbox", "list", "--json").items() != []
    corp.stop()

    run = cli("outbox", "discard", "--idp", "scim", "--yes")

    assert run.exit_code == 0, run.stderr
    assert "discarded 2 outbox row(s)" in run.stdout
    assert "whether a later change makes them again cannot be told now" in run.stderr
    assert "CORP userstore" in run.stderr  # what could not be read, and the hint
    assert cli("outbox", "list", "--json").items() == []
