"""SCIM dialects against a strict IAM Identity Center fake (tests/peers/scim_aws.py):
what a new user meets with a plain scim2 IdP, and what ``dialect:
aws-identity-center`` does instead, through the CLI as an administrator runs it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.peers.scim_aws import AwsScim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def write_config(tmp_path: Path, fake: AwsScim, options: str = "", extra: str = "") -> Path:
    path = tmp_path / "idprov.yaml"
    path.write_text(f"""
version: 1
identity_providers:
  - name: aws
    connector: scim2
    options:
      base_url: {fake.base_url}
      auth: bearer
      token: env:AWS_SCIM_TOKEN
{options}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}
applications:
  - name: resident
    identity_providers: [aws]
""")
    return path


@pytest.fixture
def aws(tmp_path, aws_scim, monkeypatch) -> AwsScim:
    monkeypatch.setenv("AWS_SCIM_TOKEN", aws_scim.token)
    write_config(tmp_path, aws_scim, "      dialect: aws-identity-center")
    return aws_scim


def names(fake: AwsScim) -> set[str]:
    return {u["userName"] for u in fake.users.values()}


def test_a_plain_scim2_idp_meets_the_refusals(cli, tmp_path, aws_scim, monkeypatch):
    """The issue's report: without the dialect, a user with no display_name is refused."""
    monkeypatch.setenv("AWS_SCIM_TOKEN", aws_scim.token)
    write_config(tmp_path, aws_scim)
    out = cli("user", "add", "alice", "-c", "given_name=Alice", "-c", "family_name=L")
    assert out.exit_code == 6
    assert "displayName is required" in out.stdout
    assert aws_scim.violations == ["POST /scim/v2/Users: displayName is required"]


def test_the_dialect_fills_display_name_and_sends_what_aws_accepts(cli, aws):
    cli(
        "user",
        "add",
        "alice",
        "-c",
        "given_name=Alice",
        "-c",
        "family_name=Liddell",
        "-c",
        "email=alice@example.com",
    ).ok()
    [alice] = aws.users.values()
    assert alice["displayName"] == "Alice Liddell"
    assert alice["emails"] == [{"type": "work", "value": "alice@example.com", "primary": True}]
    cli("user", "update", "alice", "-c", "title=Queen", "--unset", "email").ok()
    [alice] = aws.users.values()
    assert alice["title"] == "Queen" and "emails" not in alice
    assert aws.violations == []


def test_a_missing_required_attribute_fails_that_user_before_any_request(cli, aws):
    cli("user", "add", "okay", "-c", "given_name=O", "-c", "family_name=K").ok()
    before = len(aws.requests)
    out = cli("user", "add", "bob", "-c", "given_name=Bob", "--json")
    assert out.exit_code == 6
    [idp] = json.loads(out.stdout)["outbound"]["idps"]
    [failure] = [o for o in idp["operations"] if o["outcome"] == "failed"]
    assert "name.familyName is required (dialect aws-identity-center)" in failure["error"]
    assert "'{family_name}' gives no value for this user" in failure["error"]
    assert aws.requests[before:] == []  # nothing was sent for bob
    assert names(aws) == {"okay"} and aws.violations == []


def test_group_members_go_in_batches_of_100_and_membership_is_read_by_filter(cli, aws, tmp_path):
    from idprov.config import load_file
    from idprov.provisioning.service import IdentityService

    cli("role", "add", "staff").ok()
    cli("import", "users", str(_users_csv(tmp_path, 230)), "--json").ok()
    [group_id] = aws.groups
    assert len(aws.members[group_id]) == 230
    patches = [r for r in aws.requests if r[0] == "PATCH" and "/Groups/" in r[1]]
    assert len(patches) >= 2 and all(status == 204 for _, _, status in patches)
    cli("role", "unassign", "staff", "user7").ok()
    assert len(aws.members[group_id]) == 229
    with IdentityService(load_file(tmp_path / "idprov.yaml")) as svc:
        connector = svc.connector("aws")
        user3 = next(i for i, u in aws.users.items() if u["userName"] == "user3")
        user7 = next(i for i, u in aws.users.items() if u["userName"] == "user7")
        assert connector.has_member(group_id, user3) is True
        assert connector.has_member(group_id, user7) is False
        listed = connector.list_users()  # cursor pages of 50
    assert len(listed) == 230
    assert aws.violations == []


def _users_csv(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "users.csv"
    rows = [f"user{i},User,Number{i},staff" for i in range(count)]
    path.write_text("username,given_name,family_name,roles\n" + "\n".join(rows) + "\n")
    return path


def test_every_setting_can_be_overridden_in_options(cli, tmp_path, aws_scim, monkeypatch):
    monkeypatch.setenv("AWS_SCIM_TOKEN", aws_scim.token)
    write_config(
        tmp_path,
        aws_scim,
        "      dialect: aws-identity-center\n      page_size: 20\n"
        "      required_attributes: [displayName, name.givenName, name.familyName, title]",
    )
    out = cli("user", "add", "carl", "-c", "given_name=C", "-c", "family_name=D", "--json")
    assert out.exit_code == 6
    assert "title is required" in out.stdout
    from idprov.config import load_file
    from idprov.provisioning.service import IdentityService

    with IdentityService(load_file(tmp_path / "idprov.yaml")) as svc:
        assert svc.connector("aws").settings.page_size == 20
        svc.connector("aws").list_users()
    assert aws_scim.violations == []


def test_unknown_dialect_and_two_values_of_a_single_valued_attribute(
    cli, tmp_path, aws_scim, monkeypatch
):
    monkeypatch.setenv("AWS_SCIM_TOKEN", aws_scim.token)
    path = write_config(tmp_path, aws_scim, "      dialect: aws")
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:")
    assert "unknown dialect 'aws' (known: rfc, aws-identity-center)" in error["message"]
    write_config(
        tmp_path,
        aws_scim,
        "      dialect: aws-identity-center",
        "    attributes:\n      'emails[type eq \"home\"].value': '{nickname}'\n",
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:")
    assert (
        "identity_providers[0].attributes: emails holds one value at this target"
        in (error["message"])
    )
    assert "single_valued" in error["hint"]


# ---------------------------------------------------------------- the fake is strict
def _valid_user(**changes) -> dict:
    user = {
        "schemas": [USER],
        "userName": "u",
        "displayName": "U",
        "name": {"givenName": "G", "familyName": "F"},
    }
    user.update(changes)
    return user


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "detail"),
    [
        ("POST", "/Users", {}, _valid_user(displayName=None), "displayName is required"),
        ("POST", "/Users", {}, _valid_user(name={"givenName": "G"}), "name.familyName"),
        ("POST", "/Users", {}, _valid_user(password="secret1!"), "password is not supported"),
        ("POST", "/Users", {}, _valid_user(emails=[{"value": "a"}, {"value": "b"}]), "single"),
        ("POST", "/Users", {}, _valid_user(emails=[{"value": "a"}]), "primary"),
        ("GET", "/Users", {"filter": 'userName co "a"'}, None, "only eq joined by and"),
        ("GET", "/Users", {"filter": 'title eq "a"'}, None, "unsupported filter combination"),
        ("GET", "/Users", {"filter": 'userName eq "a" or id eq "b"'}, None, "only eq"),
        ("GET", "/Users", {"startIndex": "1"}, None, "startIndex is not supported"),
        ("GET", "/Users", {"attributes": "id"}, None, "attributes is not supported"),
        ("GET", "/Users", {"count": "51"}, None, "count must be between 1 and 50"),
        ("POST", "/Bulk", {}, {"Operations": []}, "/Bulk is not supported"),
        ("GET", "/Me", {}, None, "/Me is not supported"),
        ("POST", "/.search", {}, {}, "/.search is not supported"),
        ("POST", "/Groups", {}, {"displayName": "g", "members": [{"value": "x"}] * 101}, "100"),
    ],
)
def test_the_fake_refuses_what_aws_documents_it_refuses(
    aws_scim, method, path, params, body, detail
):
    response = _send(aws_scim, method, path, params, body)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("operations", "detail"),
    [
        ([{"op": "replace", "path": "members", "value": []}], "replacing all members"),
        ([{"op": "remove", "path": "members"}], "removing all members"),
        ([{"op": "add", "path": "members", "value": [{"value": "x"}] * 101}], "100 membership"),
        ([{"op": "replace", "path": "description", "value": "d"}], "only displayName"),
    ],
)
def test_the_fake_refuses_group_patches_aws_refuses(aws_scim, operations, detail):
    group = _send(aws_scim, "POST", "/Groups", {}, {"displayName": "g"}).json()
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}
    response = _send(aws_scim, "PATCH", f"/Groups/{group['id']}", {}, body)
    assert response.status_code == 400 and detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("operations", "detail"),
    [
        ([{"op": "remove", "path": "userName"}], "userName cannot be removed"),
        ([{"op": "remove"}], "remove needs a path"),
        ([{"op": "replace", "path": "title"}], "replace needs a value"),
        ([{"op": "replace", "path": "active", "value": False}] * 2, "several operations on active"),
        ([{"op": "add", "path": "password", "value": "x"}], "password cannot be modified"),
        ([{"op": "move", "path": "title", "value": "x"}], "unsupported op"),
    ],
)
def test_the_fake_refuses_user_patches_aws_refuses(aws_scim, operations, detail):
    user = _send(aws_scim, "POST", "/Users", {}, _valid_user()).json()
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}
    response = _send(aws_scim, "PATCH", f"/Users/{user['id']}", {}, body)
    assert response.status_code == 400 and detail in response.json()["detail"]


def test_the_fake_never_returns_members(aws_scim):
    user = _send(aws_scim, "POST", "/Users", {}, _valid_user()).json()
    group = _send(
        aws_scim, "POST", "/Groups", {}, {"displayName": "g", "members": [{"value": user["id"]}]}
    ).json()
    assert _send(aws_scim, "GET", f"/Groups/{group['id']}", {}, None).json()["members"] == []
    query = f'id eq "{group["id"]}" and members eq "{user["id"]}"'
    found = _send(aws_scim, "GET", "/Groups", {"filter": query}, None).json()
    assert [g["id"] for g in found["Resources"]] == [group["id"]]


def _send(fake: AwsScim, method: str, path: str, params: dict, body) -> httpx.Response:
    return httpx.request(
        method,
        fake.base_url + path,
        params=params,
        json=body,
        headers={"Authorization": f"Bearer {fake.token}"},
        timeout=30,
    )


def test_bulk_creates_skip_only_the_users_without_a_required_attribute(
    cli, tmp_path, scim2_server, monkeypatch
):
    """rfc with Bulk (scim2-server advertises it) and one required attribute added in
    options: the users without it fail by name, the others go out in one Bulk."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:
  - name: scim
    connector: scim2
    options:
      base_url: {scim2_server.base_url}
      auth: bearer
      token: env:SCIM_TOKEN
      required_attributes: [title]
applications:
  - name: resident
    identity_providers: [scim]
""")
    from idprov.connectors.scim2 import Scim2Connector

    bulk_calls: list[int] = []
    original = Scim2Connector.create_users

    def counted(self, accounts):
        bulk_calls.append(len(accounts))
        return original(self, accounts)

    monkeypatch.setattr(Scim2Connector, "create_users", counted)
    rows = [f"user{i:02d},{'Dev' if i % 5 else ''}" for i in range(12)]
    (tmp_path / "u.csv").write_text("username,title\n" + "\n".join(rows) + "\n")
    out = cli("import", "users", str(tmp_path / "u.csv"), "--json")
    assert out.exit_code == 6
    created = sorted(u["userName"] for u in scim2_server.users())
    assert created == [f"user{i:02d}" for i in range(12) if i % 5]
    failed = cli("outbox", "list", "--json").json()["items"]
    assert sorted(r["label"] for r in failed) == ["user00", "user05", "user10"]
    assert all("title is required" in r["last_error"] for r in failed)
    assert bulk_calls == [12]  # one Bulk call; the three were never sent


def test_a_scim11_idp_takes_no_dialect(cli, write_config):
    path = write_config(
        "identity_providers:\n"
        "  - name: old\n"
        "    connector: scim11\n"
        "    options: {base_url: 'https://scim.example.com', auth: bearer, token: env:T,"
        " dialect: aws-identity-center}\n"
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:2:")
    assert "the scim11 connector takes none" in error["message"]


def test_no_put_of_members_read_from_a_group_that_never_returns_them(
    cli, tmp_path, aws_scim, monkeypatch
):
    """update_method: put would rebuild the member list from a GET that returns none,
    dropping every member: refused before the PUT, saying what to set instead."""
    monkeypatch.setenv("AWS_SCIM_TOKEN", aws_scim.token)
    write_config(tmp_path, aws_scim, "      dialect: aws-identity-center\n      update_method: put")
    cli("role", "add", "staff").ok()
    out = cli(
        "user", "add", "ann", "-c", "given_name=A", "-c", "family_name=B", "-r", "staff", "--json"
    )
    assert out.exit_code == 6
    [idp] = json.loads(out.stdout)["outbound"]["idps"]
    [failure] = [o for o in idp["operations"] if o["outcome"] == "failed"]
    assert (
        "never returns a group's members, so they cannot be replaced with PUT" in (failure["error"])
    )
    assert not any(method == "PUT" for method, _, _ in aws_scim.requests)
    assert [u["userName"] for u in aws_scim.users.values()] == ["ann"]


def test_verify_finds_members_removed_at_the_target_by_filter(cli, aws, tmp_path):
    """AWS never returns members: `sync --verify` asks one filter per member."""
    cli("role", "add", "staff").ok()
    for name in ("ann", "bea", "cid"):
        cli("user", "add", name, "-c", "given_name=X", "-c", "family_name=Y", "-r", "staff").ok()
    [group_id] = aws.groups
    bea = next(i for i, u in aws.users.items() if u["userName"] == "bea")
    aws.members[group_id].discard(bea)  # removed at the target, behind idprov's back
    drift = cli("sync", "--dry-run", "--verify", "--json").json()["drift"]["aws"]
    assert drift["groups_changed_remotely"] == [{"group": "staff", "missing_members": ["bea"]}]
    filters = [r for r in aws.requests if r[0] == "GET" and r[1].endswith("/Groups")]
    assert len(filters) == 3 and aws.violations == []  # one per member idprov put there
