"""The whole outbound flow through the CLI against a real, independently written
SCIM 2.0 server (the scim2-server package) on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.peers.scim2 import Scim2Peer

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def write_config(tmp_path: Path, server: Scim2Peer, extra: str = "") -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:
  - name: scim
    connector: scim2
    options:
      base_url: {server.base_url}
      auth: bearer
      token: env:SCIM_TOKEN
    provisioning_roles: [staff]
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}
applications:
  - name: resident
    identity_providers: [scim]
""")


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server)
    return scim2_server


def by_name(resources: list[dict], key: str = "userName") -> dict[str, dict]:
    return {r[key]: r for r in resources}


def test_user_add_with_a_provisioning_role_creates_the_remote_user_and_group(cli, scim):
    cli("role", "add", "staff").ok()
    out = cli(
        "user",
        "add",
        "alice",
        "-c",
        "email=alice@example.com",
        "-c",
        "given_name=Alice",
        "-c",
        "family_name=Liddell",
        "-c",
        "department=R&D",
        "--role",
        "staff",
    ).ok()
    assert "scim: 2 done" in out.stdout
    alice = by_name(scim.users())["alice"]
    assert alice["name"] == {"givenName": "Alice", "familyName": "Liddell"}
    assert alice["emails"][0]["value"] == "alice@example.com"
    assert alice[ENTERPRISE]["department"] == "R&D"
    assert alice["active"] is True
    [group] = scim.groups()
    assert group["displayName"] == "staff"
    assert [m["value"] for m in group["members"]] == [alice["id"]]


def test_user_outside_the_provisioning_roles_is_not_sent(cli, scim):
    cli("user", "add", "bob", "-c", "email=bob@example.com").ok()
    assert scim.users() == []


def test_assign_then_unassign_provisions_and_deprovisions(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "bob", "-c", "email=bob@example.com").ok()
    cli("role", "assign", "staff", "bob").ok()
    bob = by_name(scim.users())["bob"]
    assert [m["value"] for m in scim.groups()[0]["members"]] == [bob["id"]]
    out = cli("role", "unassign", "staff", "bob").ok()
    # the user's deprovisioning takes it out of the group: the group needs nothing more
    assert "scim: 1 done, 1 unchanged" in out.stdout
    assert scim.users() == []
    assert scim.groups()[0].get("members", []) == []
    # the local user is still there, without the role
    assert cli("user", "show", "bob", "--json").json()["roles"] == []


def test_update_patches_only_the_changed_user(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "carol", "-c", "email=carol@example.com", "-r", "staff").ok()
    cli("user", "update", "carol", "-c", "title=CTO", "--unset", "email").ok()
    carol = by_name(scim.users())["carol"]
    assert carol["title"] == "CTO"
    assert "emails" not in carol


def test_update_that_changes_nothing_remotely_sends_nothing(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "dave", "-c", "email=dave@example.com", "-r", "staff").ok()
    version = by_name(scim.users())["dave"]["meta"]["version"]
    # `nickname` is not mapped to any SCIM attribute: the hash is unchanged
    out = cli("user", "update", "dave", "-c", "nickname=D", "--json").json()
    [idp] = out["outbound"]["idps"]
    assert idp["done"] == 0 and idp["skipped"] == 1
    assert by_name(scim.users())["dave"]["meta"]["version"] == version


def test_role_rename_and_delete_follow(cli, scim, tmp_path):
    write_config(tmp_path, scim, extra="    push_roles: all\n")
    cli("role", "add", "staff").ok()
    cli("role", "add", "engineers").ok()
    cli(
        "user", "add", "erin", "-c", "email=erin@example.com", "-r", "staff", "-r", "engineers"
    ).ok()
    cli("role", "rename", "engineers", "builders").ok()
    groups = by_name(scim.groups(), "displayName")
    assert set(groups) == {"staff", "builders"}
    erin = by_name(scim.users())["erin"]
    assert [m["value"] for m in groups["builders"]["members"]] == [erin["id"]]
    cli("role", "delete", "builders", "--yes").ok()
    assert set(by_name(scim.groups(), "displayName")) == {"staff"}
    assert by_name(scim.users())["erin"]["active"] is True


def test_user_rename_renames_the_remote_account_in_place(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "frank", "-c", "email=frank@example.com", "-r", "staff").ok()
    before = by_name(scim.users())["frank"]
    out = cli("user", "rename", "frank", "frank.smith@example.com").ok()
    assert "scim: 1 done" in out.stdout
    [after] = scim.users()
    assert (after["id"], after["userName"]) == (before["id"], "frank.smith@example.com")
    assert after["emails"] == before["emails"]
    assert [m["value"] for m in scim.groups()[0]["members"]] == [before["id"]]


def test_a_username_template_whose_claim_changes_renames_at_that_target(cli, scim, tmp_path):
    write_config(tmp_path, scim, extra="    username: '{email}'\n")
    cli("role", "add", "staff").ok()
    cli("user", "add", "gina", "-c", "email=gina@example.com", "-r", "staff").ok()
    before = by_name(scim.users())["gina@example.com"]
    cli("user", "update", "gina", "-c", "email=gina.lee@example.com").ok()
    [after] = scim.users()
    assert (after["id"], after["userName"]) == (before["id"], "gina.lee@example.com")
    assert after["emails"][0]["value"] == "gina.lee@example.com"
    cli("sync").ok()  # the ledger knows the new name: nothing more to send
    assert scim.users() == [after]


def test_user_delete_removes_the_remote_user_and_its_membership(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "frank", "-c", "email=frank@example.com", "-r", "staff").ok()
    cli("user", "add", "grace", "-c", "email=grace@example.com", "-r", "staff").ok()
    cli("user", "delete", "frank", "--yes").ok()
    users = by_name(scim.users())
    assert set(users) == {"grace"}
    assert [m["value"] for m in scim.groups()[0]["members"]] == [users["grace"]["id"]]


def test_deprovision_disable_keeps_the_account_inactive_and_reactivates(cli, scim, tmp_path):
    write_config(tmp_path, scim, extra="    deprovision: disable\n")
    cli("role", "add", "staff").ok()
    cli("user", "add", "heidi", "-c", "email=heidi@example.com", "-r", "staff").ok()
    cli("role", "unassign", "staff", "heidi").ok()
    assert by_name(scim.users())["heidi"]["active"] is False
    cli("role", "assign", "staff", "heidi").ok()
    users = by_name(scim.users())
    assert len(users) == 1 and users["heidi"]["active"] is True


def test_an_account_disabled_here_is_disabled_there_never_deleted_and_enabled_again(cli, scim):
    """The `active` claim (a SCIM client's `active: false`): the account is disabled at
    the target, even where deprovisioning deletes, and enabled again with it. A user
    disabled before being provisioned is not created."""
    cli("role", "add", "staff").ok()
    cli("user", "add", "judy", "-c", "email=judy@example.com", "-r", "staff").ok()
    out = cli("user", "update", "judy", "-c", "active=false").ok()
    assert "scim: 1 done" in out.stdout
    assert by_name(scim.users())["judy"]["active"] is False
    assert cli("user", "update", "judy", "-c", "title=Dev").ok()  # still disabled there
    assert by_name(scim.users())["judy"]["active"] is False
    cli("user", "update", "judy", "-c", "active=true").ok()
    judy = by_name(scim.users())["judy"]
    assert judy["active"] is True and judy["title"] == "Dev"
    cli("user", "add", "karl", "-c", "active=false", "-r", "staff").ok()
    assert set(by_name(scim.users())) == {"judy"}
    log = cli("log", "--action", "outbound.disable", "--json").items()
    assert [(e["target"], e["outcome"]) for e in log] == [("judy", "ok")]


def test_wrong_token_exits_6_keeps_the_local_change_and_the_outbox_row(cli, scim, monkeypatch):
    cli("role", "add", "staff").ok()
    monkeypatch.setenv("SCIM_TOKEN", "not-the-token")
    run = cli("user", "add", "ivan", "-c", "email=ivan@example.com", "-r", "staff")
    assert run.exit_code == 6, run
    assert "401" in run.stdout and "outbox" in run.stdout
    assert "not-the-token" not in run.stdout + run.stderr
    assert cli("user", "show", "ivan", "--json").json()["username"] == "ivan"
    rows = cli("outbox", "list", "--json").items()
    assert {(r["kind"], r["status"], r["last_status"]) for r in rows} == {
        ("user", "failed", 401),
        ("role", "pending", None),  # credentials refused: the rest waits, untried
    }
    assert scim.users() == []
    monkeypatch.setenv("SCIM_TOKEN", scim.token)
    cli("outbox", "retry").ok()
    assert cli("outbox", "list", "--json").items() == []
    assert set(by_name(scim.users())) == {"ivan"}
    assert [m["value"] for m in scim.groups()[0]["members"]] == [scim.users()[0]["id"]]


def test_idp_test_reads_capabilities_and_checks_auth(cli, scim, monkeypatch):
    report = cli("idp", "test", "scim", "--json").json()
    assert report["ok"] and report["capabilities"]["patch"]["supported"] is True
    monkeypatch.setenv("SCIM_TOKEN", "wrong")
    run = cli("idp", "test", "scim", "--json")
    assert run.exit_code == 6
    assert "wrong" not in run.stdout + run.stderr


def test_audit_log_records_each_outbound_attempt_without_secrets(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "judy", "-c", "email=judy@example.com", "-r", "staff").ok()
    entries = cli("log", "--action", "outbound.", "--json").items()
    creates = [e for e in entries if e["action"] == "outbound.create"]
    assert {e["target"] for e in creates} == {"judy", "staff"}
    for entry in creates:
        assert entry["details"]["idp"] == "scim"
        assert entry["details"]["status"] == 201
        assert entry["details"]["remote_id"]
        assert entry["details"]["duration_ms"] >= 0
    assert scim.token not in str(entries)


def test_many_users_go_out_concurrently_and_all_arrive(cli, scim, tmp_path):
    write_config(tmp_path, scim, extra="    max_concurrency: 4\n")
    cli("role", "add", "staff").ok()
    names = [f"user{i:03d}" for i in range(40)]
    for name in names:
        cli("user", "add", name, "-c", f"email={name}@example.com").ok()
    out = cli("role", "assign", "staff", *names, "--json").json()
    [idp] = out["outbound"]["idps"]
    assert idp["done"] == 41 and idp["failed"] == 0
    assert set(by_name(scim.users())) == set(names)
    assert len(scim.groups()[0]["members"]) == 40


@pytest.mark.parametrize("method", ["patch", "put"])
def test_an_account_an_administrator_disabled_stays_disabled(cli, scim, tmp_path, method):
    idp = (
        (tmp_path / "idprov.yaml")
        .read_text()
        .replace(
            "      token: env:SCIM_TOKEN\n",
            f"      token: env:SCIM_TOKEN\n      update_method: {method}\n",
        )
    )
    (tmp_path / "idprov.yaml").write_text(idp)
    cli("role", "add", "staff").ok()
    cli("user", "add", "ivan", "-c", "email=ivan@example.com", "-r", "staff").ok()
    ivan = by_name(scim.users())["ivan"]
    headers = {"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"}
    disable = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": False}}],
    }
    assert httpx.patch(
        f"{scim.base_url}/Users/{ivan['id']}", json=disable, headers=headers, timeout=30
    ).status_code in (200, 204)
    cli("user", "update", "ivan", "-c", "title=Boss").ok()
    ivan = by_name(scim.users())["ivan"]
    assert ivan["title"] == "Boss" and ivan["active"] is False
