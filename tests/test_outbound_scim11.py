"""The SCIM 1.1 connector against the SCIM 1.1 service provider under tests/peers."""

from __future__ import annotations

from pathlib import Path

import pytest

from idprov.provisioning.service import IdentityService
from tests.outbound_helpers import make_service
from tests.peers.scim11 import Scim11Server

EXT = "urn:scim:schemas:extension:enterprise:1.0"


def scim11_idp(server: Scim11Server, auth: str = "bearer", extra: str = "") -> str:
    creds = (
        "      token: env:SCIM11_TOKEN\n"
        if auth == "bearer"
        else "      username: idprov\n      password: env:SCIM11_PASSWORD\n"
    )
    return f"""
  - name: legacy
    connector: scim11
    options:
      base_url: {server.base_url}
      auth: {auth}
{creds}    provisioning_roles: [staff]
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}"""


@pytest.fixture()
def legacy(scim11_server: Scim11Server, monkeypatch: pytest.MonkeyPatch) -> Scim11Server:
    monkeypatch.setenv("SCIM11_TOKEN", scim11_server.token)
    return scim11_server


def service(tmp_path: Path, server: Scim11Server, **kwargs: str) -> IdentityService:
    return make_service(tmp_path, scim11_idp(server, **kwargs), ["legacy"], sleep=lambda s: None)


def test_lifecycle_user_and_group(tmp_path, legacy):
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        result = svc.add_user(
            "alice",
            {"email": "alice@example.com", "given_name": "Alice", "department": "Ops"},
            roles=["staff"],
        )
        assert result.outbound.ok
        [alice] = legacy.users()
        assert alice["schemas"][0] == "urn:scim:schemas:core:1.0"
        assert alice["userName"] == "alice"
        assert alice["name"]["givenName"] == "Alice"
        assert alice[EXT]["department"] == "Ops"
        [group] = legacy.groups()
        assert [m["value"] for m in group["members"]] == [alice["id"]]

        svc.update_user("alice", {"title": "Boss"}, unset=["department"])
        [alice] = legacy.users()
        assert alice["title"] == "Boss" and "department" not in alice.get(EXT, {})
        patch = [r for r in legacy.requests if r.method == "PATCH" and "/Users/" in r.path]
        assert patch, "updates go out as 1.1 PATCH when supported"

        svc.unassign("staff", ["alice"])
        assert legacy.users() == []
        assert legacy.groups()[0].get("members", []) == []
        svc.delete_role("staff")
        assert legacy.groups() == []


def test_updates_use_put_when_patch_is_not_supported(tmp_path, legacy):
    legacy.patch_supported = False
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {"email": "bob@example.com"}, roles=["staff"])
        svc.update_user("bob", {"title": "Dev"})
        assert legacy.users()[0]["title"] == "Dev"
        svc.add_user("carol", {"email": "carol@example.com"}, roles=["staff"])
        assert len(legacy.groups()[0]["members"]) == 2
    assert not [r for r in legacy.requests if r.method == "PATCH" and r.status < 300]


@pytest.mark.parametrize("patch_supported", [True, False])
def test_a_renamed_user_gets_the_new_user_name_in_place(tmp_path, legacy, patch_supported):
    legacy.patch_supported = patch_supported
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        svc.add_user("hank", {"email": "hank@example.com"}, roles=["staff"])
        [before] = legacy.users()
        assert svc.rename_user("hank", "henry").outbound.ok
        [after] = legacy.users()
        assert (after["id"], after["userName"]) == (before["id"], "henry")
        assert after["emails"] == before["emails"]
        method = "PATCH" if patch_supported else "PUT"
        assert [r.method for r in legacy.requests if "/Users/" in r.path][-1] == method


def test_basic_auth(tmp_path, legacy, monkeypatch):
    legacy.token = None
    monkeypatch.setenv("SCIM11_PASSWORD", legacy.basic[1])
    with service(tmp_path, legacy, auth="basic") as svc:
        svc.add_role("staff")
        assert svc.add_user("dave", {"email": "d@example.com"}, roles=["staff"]).outbound.ok
    assert [u["userName"] for u in legacy.users()] == ["dave"]


def test_errors_reach_the_report_in_11_format(tmp_path, legacy):
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        legacy.fail_next(
            400, body={"Errors": [{"description": "department is read-only", "code": "400"}]}
        )
        result = svc.add_user("erin", {"email": "e@example.com"}, roles=["staff"])
        op = next(o for o in result.outbound.idps["legacy"].operations if o.kind == "user")
        assert op.outcome == "failed" and "department is read-only" in op.error
        assert op.attempts == 1


def test_duplicate_username_is_a_conflict_not_a_duplicate(tmp_path, legacy):
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        legacy.fail_next(503, count=2)
        assert svc.add_user("frank", {"email": "f@example.com"}, roles=["staff"]).outbound.ok
    assert [u["userName"] for u in legacy.users()] == ["frank"]


def emails(server: Scim11Server) -> list[tuple[str, str]]:
    [user] = server.users()
    return sorted((e.get("type", ""), e["value"]) for e in user.get("emails", []))


def add_home_email(server: Scim11Server, value: str) -> None:
    """An administrator's home e-mail beside idprov's work one, at the target."""
    [user] = server.users()
    stored = server.store.resources["Users"][user["id"]]
    stored["emails"].append({"type": "home", "value": value})


def test_a_changed_email_replaces_the_old_one(tmp_path, legacy):
    """A 1.1 PATCH adds to a multi-valued attribute: the old e-mail stayed beside the
    new one. The removed value goes with ``"operation": "delete"``; an administrator's
    e-mail of another type stays."""
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        svc.add_user("alice", {"email": "a@x.test"}, roles=["staff"])
        add_home_email(legacy, "alice@home.test")
        assert svc.update_user("alice", {"email": "alice@x.test"}).outbound.ok
        assert emails(legacy) == [("home", "alice@home.test"), ("work", "alice@x.test")]
        [patch] = [r for r in legacy.requests if r.method == "PATCH" and "/Users/" in r.path]
        assert {"type": "work", "value": "a@x.test", "operation": "delete"} in (
            patch.body["emails"]
        )
        assert svc.update_user("alice", {}, unset=["email"]).outbound.ok
        assert emails(legacy) == [("home", "alice@home.test")]


def test_an_email_changed_while_disabled_is_replaced_when_enabled_again(tmp_path, legacy):
    """Enabling again sends the whole account (no previous values to compare): the
    e-mail the target holds of idprov's type and no longer wanted goes."""
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {"email": "b@x.test"}, roles=["staff"])
        add_home_email(legacy, "bob@home.test")
        svc.update_user("bob", {"active": "false"})
        svc.update_user("bob", {"email": "bob@x.test"})
        assert svc.update_user("bob", {"active": "true"}).outbound.ok
        assert emails(legacy) == [("home", "bob@home.test"), ("work", "bob@x.test")]
        assert legacy.users()[0]["active"] is True


def test_the_default_mapping_sends_cost_center_organization_locale_timezone(tmp_path, legacy):
    claims = {
        "email": "c@x.test",
        "cost_center": "CC-7",
        "organization": "Example Ltd",
        "locale": "en-GB",
        "timezone": "Europe/London",
    }
    with service(tmp_path, legacy) as svc:
        svc.add_role("staff")
        assert svc.add_user("carol", claims, roles=["staff"]).outbound.ok
    [carol] = legacy.users()
    assert carol[EXT]["costCenter"] == "CC-7" and carol[EXT]["organization"] == "Example Ltd"
    assert (carol["locale"], carol["timezone"]) == ("en-GB", "Europe/London")


@pytest.mark.parametrize("patch_supported", [True, False])
def test_verify_finds_and_repair_removes_values_the_target_holds_where_idprov_holds_none(
    tmp_path, legacy, cli, patch_supported
):
    """The target holds a title and a department for alice, who has neither here (an
    administrator set them, or the target ignored idprov's removal), beside a home
    e-mail and a nickName idprov does not map. `sync --verify` names the two; the
    repair clears those alone (``meta.attributes`` in a 1.1 PATCH; a PUT, without
    PATCH, of the account as the target holds it without them) and keeps the rest."""
    from tests.outbound_helpers import make_config_text

    (tmp_path / "idprov.yaml").write_text(
        make_config_text(tmp_path, scim11_idp(legacy), ["legacy"])
    )
    legacy.patch_supported = patch_supported
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "email=a@x.test", "-r", "staff").ok()
    [user] = legacy.users()
    stored = legacy.store.resources["Users"][user["id"]]
    stored.update(title="Boss", nickName="Al")
    stored[EXT] = {"department": "Sales"}
    stored["emails"].append({"type": "home", "value": "alice@home.test"})
    drift = cli("sync", "--verify", "--json").json()["drift"]["legacy"]
    assert drift["changed_remotely"] == [
        {"user": "alice", "attributes": ["title", f"{EXT}.department"]}
    ]
    cli("sync", "--verify", "--repair").ok()
    [user] = legacy.users()
    assert "title" not in user and "department" not in user.get(EXT, {})
    assert user["nickName"] == "Al"
    assert emails(legacy) == [("home", "alice@home.test"), ("work", "a@x.test")]
    [sent] = [r for r in legacy.requests if r.method in ("PATCH", "PUT") and "/Users/" in r.path]
    if patch_supported:
        assert sorted(sent.body["meta"]["attributes"]) == ["title", f"{EXT}:department"]
        assert set(sent.body) == {"schemas", "meta"}
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0


def test_a_removal_whose_repair_failed_is_still_drift_and_the_next_repair_makes_it(
    tmp_path, legacy, cli
):
    """The repair's PATCH fails (the target is down): the ledger keeps the removal to
    make, so verify still names the title the target holds, and the next sync removes
    it (the push of the failed row, or a repair again)."""
    from tests.outbound_helpers import make_config_text

    (tmp_path / "idprov.yaml").write_text(
        make_config_text(tmp_path, scim11_idp(legacy), ["legacy"])
    )
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "email=a@x.test", "-r", "staff").ok()
    [user] = legacy.users()
    legacy.store.resources["Users"][user["id"]]["title"] = "Boss"
    legacy.fail_next(503, count=3, method="PATCH")
    cli("sync", "--verify", "--repair")
    assert legacy.users()[0]["title"] == "Boss"
    drift = cli("sync", "--verify", "--dry-run", "--json").json()["drift"]["legacy"]
    assert drift["changed_remotely"] == [{"user": "alice", "attributes": ["title"]}]
    legacy.fail_next(503, count=3, method="PATCH")  # the sync's push of the row fails too
    cli("sync", "--verify", "--repair").ok()  # and its repair removes it
    assert "title" not in legacy.users()[0]
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0
