"""``update_method: put`` never undoes what an administrator did at the target.

A PUT replaces the whole resource, so idprov PUTs the resource as the target holds it
with only idprov's own change made: what an administrator set there (a title, a
mobile number, a disabled flag) stays, and what idprov sent and no longer maps goes.
Against the real scim2-server (tests/peers/scim2.py) and the strict IAM Identity
Center fake (tests/peers/scim_aws.py), through the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers.scim2 import Scim2Peer
from tests.peers.scim_aws import AwsScim
from tests.test_outbound_scim2 import by_name, write_config
from tests.test_scim_dialects import write_config as write_aws_config

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MOBILE = {"type": "mobile", "value": "+1 555 0100"}


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server, extra="    deprovision: disable\n")
    path = tmp_path / "idprov.yaml"
    token = "      token: env:SCIM_TOKEN\n"
    path.write_text(path.read_text().replace(token, token + "      update_method: put\n"))
    return scim2_server


def administrator_sets(scim: Scim2Peer, user_name: str, **values: Any) -> None:
    """What an administrator does at the target, outside idprov: a PATCH add."""
    remote_id = by_name(scim.users())[user_name]["id"]
    body = {"schemas": [PATCH_OP], "Operations": [{"op": "add", "value": values}]}
    headers = {"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"}
    reply = httpx.patch(
        f"{scim.base_url}/Users/{remote_id}", json=body, headers=headers, timeout=30
    )
    assert reply.status_code in (200, 204), reply.text


def test_an_update_keeps_what_an_administrator_set_at_the_target(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "pat", "-c", "email=pat@example.com", "-c", "given_name=Pat", "-r", "staff")
    administrator_sets(scim, "pat", title="Manager", phoneNumbers=[MOBILE], nickName="P")
    assert (
        "scim: 1 done" in cli("user", "update", "pat", "-c", "email=pat2@example.com").ok().stdout
    )
    pat = by_name(scim.users())["pat"]
    assert [e["value"] for e in pat["emails"]] == ["pat2@example.com"]
    assert (pat["title"], pat["nickName"], pat["name"]["givenName"]) == ("Manager", "P", "Pat")
    assert [(p["type"], p["value"]) for p in pat["phoneNumbers"]] == [("mobile", "+1 555 0100")]


def test_what_idprov_sent_and_no_longer_maps_is_removed_and_the_rest_kept(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "ron", "-c", "title=CTO", "-c", "phone_number=+1 555 0199", "-r", "staff")
    administrator_sets(scim, "ron", nickName="R")
    ron = by_name(scim.users())["ron"]
    headers = {"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"}
    phones = [*ron["phoneNumbers"], MOBILE]
    body = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "value": {"phoneNumbers": phones}}],
    }
    httpx.patch(f"{scim.base_url}/Users/{ron['id']}", json=body, headers=headers, timeout=30)
    cli("user", "update", "ron", "--unset", "title", "--unset", "phone_number").ok()
    ron = by_name(scim.users())["ron"]
    assert "title" not in ron and ron["nickName"] == "R"
    assert [(p["type"], p["value"]) for p in ron["phoneNumbers"]] == [("mobile", "+1 555 0100")]
    cli("user", "update", "ron", "-c", "phone_number=+1 555 0111").ok()
    ron = by_name(scim.users())["ron"]
    assert sorted(p["value"] for p in ron["phoneNumbers"]) == ["+1 555 0100", "+1 555 0111"]
    assert sum(bool(p.get("primary")) for p in ron["phoneNumbers"]) <= 1


def test_a_rename_and_a_disable_keep_what_an_administrator_set(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "sam", "-c", "email=sam@example.com", "-r", "staff").ok()
    administrator_sets(scim, "sam", title="Manager", phoneNumbers=[MOBILE])
    cli("user", "rename", "sam", "samuel").ok()
    samuel = by_name(scim.users())["samuel"]
    assert samuel["title"] == "Manager" and samuel["phoneNumbers"][0]["value"] == MOBILE["value"]
    cli("role", "unassign", "staff", "samuel").ok()  # deprovision: disable
    samuel = by_name(scim.users())["samuel"]
    assert samuel["active"] is False and samuel["title"] == "Manager"
    assert samuel["emails"][0]["value"] == "sam@example.com"
    assert samuel["phoneNumbers"][0]["value"] == MOBILE["value"]


def test_a_put_to_a_single_valued_target_keeps_one_email_and_the_administrators_title(
    cli, tmp_path, aws_scim: AwsScim, monkeypatch
):
    monkeypatch.setenv("AWS_SCIM_TOKEN", aws_scim.token)
    write_aws_config(
        tmp_path, aws_scim, "      dialect: aws-identity-center\n      update_method: put"
    )
    claims = ["-c", "given_name=Ann", "-c", "family_name=Lee", "-c", "email=ann@example.com"]
    cli("user", "add", "ann", *claims).ok()
    [remote_id] = aws_scim.users
    aws_scim.users[remote_id] = {**aws_scim.users[remote_id], "title": "Manager"}
    cli("user", "update", "ann", "-c", "email=ann.lee@example.com").ok()
    [ann] = aws_scim.users.values()
    assert ann["title"] == "Manager"
    assert ann["emails"] == [{"type": "work", "value": "ann.lee@example.com", "primary": True}]
    assert aws_scim.violations == []


def test_an_account_an_administrator_disabled_stays_disabled(cli, scim):
    """Leaving scope, an account already inactive at the target was disabled "again"
    and counted as idprov's own deactivation, so back in scope idprov re-enabled what
    an administrator had disabled."""
    cli("role", "add", "staff").ok()
    cli("user", "add", "kim", "-c", "email=kim@example.com", "-r", "staff").ok()
    administrator_sets(scim, "kim", active=False)
    left = cli("role", "unassign", "staff", "kim", "--json").ok().stdout
    assert "already disabled at the target" in left, left
    cli("role", "assign", "staff", "kim").ok()
    assert by_name(scim.users())["kim"]["active"] is False
