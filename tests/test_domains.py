"""Several userstore domains at once: an LDAP directory beside the embedded store,
internal roles across them, outbound provisioning and sync of every domain."""

from __future__ import annotations

from pathlib import Path

import pytest

from idprov.config import load_text
from idprov.errors import UsageError
from idprov.provisioning.service import IdentityService
from idprov.provisioning.sync import run_sync
from tests.outbound_helpers import FakeScim
from tests.peers.slapd import Directory


def config_text(slapd: Directory, tmp_path: Path, provisioning_roles: str) -> str:
    secret = tmp_path / "ldap-password"
    secret.write_text(slapd.root_password)
    secret.chmod(0o600)
    return f"""
data_dir: {tmp_path / "state"}
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    url: {slapd.url}
    bind_dn: {slapd.root_dn}
    bind_password: file:{secret}
    user_search_base: {slapd.people}
    group_search_base: {slapd.groups}
identity_providers:
  - name: target
    connector: scim2
    options: {{base_url: "https://scim.test/v2", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: {provisioning_roles}
    username: "{{UN}}@{{UD}}"
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.02}}
applications:
  - name: resident
    identity_providers: [target]
"""


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScim:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    return FakeScim("secret-token")


def service(slapd: Directory, tmp_path: Path, fake: FakeScim, roles: str) -> IdentityService:
    return IdentityService(
        load_text(config_text(slapd, tmp_path, roles), "t.yaml"),
        http_transport=fake.transport(),
        sleep=lambda s: None,
    )


def test_an_internal_role_holds_users_of_both_domains_and_scopes_them(slapd, tmp_path, fake):
    with service(slapd, tmp_path, fake, "[Internal/auditors]") as svc:
        svc.add_user("alice", {"email": "alice@example.com"})
        svc.add_user("CORP/bob", {"email": "bob@example.com", "family_name": "Builder"})
        assert fake.users == {}
        svc.add_role("Internal/auditors")
        result = svc.assign("Internal/auditors", ["alice", "CORP/bob"])
        assert result.outbound.ok
        assert sorted(svc.get_role("Internal/auditors").members or []) == ["CORP/bob", "alice"]
        assert "Internal/auditors" in svc.get_user("CORP/bob").roles
        names = sorted(u["userName"] for u in fake.users.values())
        assert names == ["alice@PRIMARY", "bob@CORP"]  # {UD} in the username template
        [group] = fake.groups.values()
        assert group["displayName"] == "Internal/auditors"
        assert len(group["members"]) == 2
        # deleting the directory user takes it out of the internal role, here and there
        svc.delete_user("CORP/bob")
        assert svc.get_role("Internal/auditors").members == ["alice"]
        assert sorted(u["userName"] for u in fake.users.values()) == ["alice@PRIMARY"]
        assert [m["value"] for m in group["members"]] == [next(iter(fake.users))]
        assert run_sync(svc).plan.empty


def test_a_directory_role_does_not_take_users_of_another_domain(slapd, tmp_path, fake):
    with service(slapd, tmp_path, fake, "[staff]") as svc:
        svc.add_role("CORP/staff")
        svc.add_user("alice", {"email": "alice@example.com"})
        with pytest.raises(UsageError, match="in the PRIMARY userstore, the role in CORP") as e:
            svc.assign("CORP/staff", ["PRIMARY/alice"])
        assert "name the role `PRIMARY/staff`" in (e.value.hint or "")
        svc.add_user("CORP/carol", {"email": "carol@example.com"})
        with pytest.raises(UsageError, match="in the CORP userstore, the role in PRIMARY") as e:
            svc.unassign("staff", ["CORP/carol"])  # a bare role: the PRIMARY one
        assert "name the role `CORP/staff`" in (e.value.hint or "")


def test_a_role_granted_in_the_directory_is_provisioned_by_sync(slapd, tmp_path, fake):
    with service(slapd, tmp_path, fake, "[staff]") as svc:
        svc.add_role("CORP/staff")
        svc.add_user("CORP/carol", {"email": "carol@example.com"})
        assert fake.users == {}
    # an administrator adds carol to the group with the directory's own tools
    carol_dn = f"uid=carol,{slapd.people}"
    slapd.tool(
        "ldapmodify",
        input=f"dn: cn=staff,{slapd.groups}\nchangetype: modify\nadd: member\nmember: {carol_dn}\n",
    )
    with service(slapd, tmp_path, fake, "[staff]") as svc:
        plan = run_sync(svc, dry_run=True).plan
        assert [(i.label, i.action) for i in plan.idps[0].items if i.kind == "user"] == [
            ("CORP/carol", "create")
        ]
        assert run_sync(svc).outbound.ok
        assert [u["userName"] for u in fake.users.values()] == ["carol@CORP"]
        [group] = fake.groups.values()
        assert group["displayName"] == "CORP/staff"
    slapd.tool(
        "ldapmodify",
        input=f"dn: cn=staff,{slapd.groups}\nchangetype: modify\n"
        f"delete: member\nmember: {carol_dn}\n",
    )
    with service(slapd, tmp_path, fake, "[staff]") as svc:
        assert run_sync(svc).outbound.ok
        assert fake.users == {}


def test_user_list_spans_domains(slapd, tmp_path, fake, cli, monkeypatch):
    (tmp_path / "idprov.yaml").write_text(config_text(slapd, tmp_path, "null"))
    monkeypatch.chdir(tmp_path)
    with service(slapd, tmp_path, fake, "null") as svc:
        svc.add_user("alice", {"email": "alice@example.com"})
        svc.add_user("CORP/bob", {"email": "bob@example.com"})
    out = cli("user", "list").ok().stdout
    assert "domain" in out and "CORP" in out and "PRIMARY" in out
    page = cli("user", "list", "--json").json()
    assert [(u["domain"], u["username"]) for u in page["items"]] == [
        ("PRIMARY", "alice"),
        ("CORP", "bob"),
    ]
    assert cli("user", "list", "--domain", "CORP", "--json").json()["total"] == 1


def test_a_directory_user_gets_a_password_the_directory_binds_with(slapd, tmp_path, fake):
    with service(slapd, tmp_path, fake, "null") as svc:
        svc.add_user("CORP/dora", {"email": "dora@example.com"}, password="dora-Pass1")
        assert svc.verify_password("CORP/dora", "dora-Pass1")
        svc.set_password("CORP/dora", "dora-Pass2")
        assert not svc.verify_password("CORP/dora", "dora-Pass1")
    dn = f"uid=dora,{slapd.people}"
    entry = slapd.entry(dn, "userPassword")
    assert entry is not None
    assert (entry.first("userPassword") or "").startswith("{SSHA}")
    whoami = slapd.tool("ldapwhoami", bind=(dn, "dora-Pass2"))
    assert dn.lower() in whoami.stdout.lower()


def test_an_import_into_the_directory_hashes_for_the_directory(slapd, tmp_path, fake):
    from idprov.inbound.csv_import import CsvImport, ImportOptions

    path = tmp_path / "users.csv"
    path.write_text("username,email,password\nCORP/erin,erin@example.com,erin-Pass1\n")
    with service(slapd, tmp_path, fake, "null") as svc:
        report = CsvImport(svc, path, ImportOptions()).run()
        assert report.created == 1 and report.rejected == 0
        assert svc.verify_password("CORP/erin", "erin-Pass1")
    dn = f"uid=erin,{slapd.people}"
    assert dn.lower() in slapd.tool("ldapwhoami", bind=(dn, "erin-Pass1")).stdout.lower()
