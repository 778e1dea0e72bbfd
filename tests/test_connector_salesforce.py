"""The salesforce connector against a strict Salesforce org on loopback: the user
lifecycle (create, update, deactivate, re-activate) and roles as permission sets and
public groups, through the service and the CLI; the three OAuth flows; sObject
Collections for many creates; request limits and retries; a session that expires
mid-run; Salesforce's error arrays in the report; and no secret in any output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from idprov.connectors.salesforce_api import (
    SalesforceOptions,
    derive_alias,
    raise_salesforce_error,
    soql_literal,
)
from tests.outbound_helpers import make_service
from tests.peers.salesforce import SalesforceError, SalesforceOrg
from tests.test_outbound_tls_auth import https_server

__all__ = ["https_server"]  # the fixture, used here

NO_SLEEP = {"sleep": lambda s: None}
ROLES = """      roles:
        staff: {type: permission_set, name: Sales_Ops}
        engineers: {type: group, name: Engineering}
"""


@pytest.fixture
def org(salesforce_org: SalesforceOrg, monkeypatch: pytest.MonkeyPatch) -> SalesforceOrg:
    monkeypatch.setenv("SF_KEY", salesforce_org.private_key_pem())
    monkeypatch.setenv("SF_SECRET", salesforce_org.consumer_secret)
    monkeypatch.setenv("SF_PASSWORD", salesforce_org.password)
    monkeypatch.setenv("SF_TOKEN", salesforce_org.security_token)
    return salesforce_org


def credentials(org: SalesforceOrg, flow: str) -> str:
    common = f"      flow: {flow}\n      client_id: {org.consumer_key}\n"
    if flow == "jwt_bearer":
        return (
            common + f"      private_key: env:SF_KEY\n      username: {org.integration_username}\n"
        )
    if flow == "client_credentials":
        return common + "      client_secret: env:SF_SECRET\n"
    return common + (
        f"      client_secret: env:SF_SECRET\n      username: {org.integration_username}\n"
        "      password: env:SF_PASSWORD\n      security_token: env:SF_TOKEN\n"
    )


def sf_idp(org: SalesforceOrg, flow: str = "jwt_bearer", options: str = "", extra: str = "") -> str:
    return f"""
  - name: sf
    connector: salesforce
    options:
      base_url: {org.login.url}
      domain: example.com
      profile: Standard User
{credentials(org, flow)}{options}{ROLES}    provisioning_roles: [staff]
    deprovision: disable
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}"""


def service(tmp_path: Path, org: SalesforceOrg, **kwargs: Any):
    return make_service(tmp_path, sf_idp(org, **kwargs), ["sf"], **NO_SLEEP)


def ops(result: Any, kind: str | None = None) -> list[Any]:
    return [o for o in result.outbound.idps["sf"].operations if kind in (None, o.kind)]


ALICE = {
    "email": "alice.liddell@example.org",
    "given_name": "Alice",
    "family_name": "Liddell",
    "title": "Engineer",
    "department": "R&D",
}


# ---------------------------------------------------------------- lifecycle
def test_user_and_permission_set_lifecycle(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        result = svc.add_user("alice", ALICE, roles=["staff"])
        assert result.outbound.ok, result.outbound.to_dict()
        alice = org.users()["alice@example.com"]
        assert {k: alice[k] for k in ("FirstName", "LastName", "Email", "Alias")} == {
            "FirstName": "Alice",
            "LastName": "Liddell",
            "Email": "alice.liddell@example.org",
            "Alias": "aliddell",
        }
        assert alice["ProfileId"] == org.profile_id("Standard User")
        assert (alice["TimeZoneSidKey"], alice["LocaleSidKey"]) == ("GMT", "en_US")
        assert alice["IsActive"] is True and alice["Title"] == "Engineer"
        entry = svc.state.ledger.get("sf", "user", svc.get_user("alice").id)
        assert entry.remote_id == alice["Id"]
        assert org.assignees("Sales_Ops") == {"alice@example.com"}

        assert svc.update_user("alice", {"title": "CTO"}).outbound.ok
        patch = org.api_requests("PATCH")[-1]
        assert patch.body == {"Title": "CTO"}  # only what changed; never IsActive

        result = svc.unassign("staff", ["alice"])
        assert result.outbound.ok
        assert org.users()["alice@example.com"]["IsActive"] is False
        assert org.assignees("Sales_Ops") == set()

        result = svc.assign("staff", ["alice"])
        assert result.outbound.ok
        assert org.users()["alice@example.com"]["IsActive"] is True
        assert org.assignees("Sales_Ops") == {"alice@example.com"}
        assert len(org.users()) == 1


def test_a_renamed_user_gets_the_new_username_in_place(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("nina", {"family_name": "Ng"}, roles=["staff"])
        nina_id = org.users()["nina@example.com"]["Id"]
        assert svc.rename_user("nina", "nina.ng").outbound.ok
    users = org.users()
    assert list(users) == ["nina.ng@example.com"] and users["nina.ng@example.com"]["Id"] == nina_id
    assert org.api_requests("PATCH")[-1].body["Username"] == "nina.ng@example.com"


def test_an_update_keeps_a_username_an_administrator_changed(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("henry", {"family_name": "Ford", "title": "Chief"}, roles=["staff"])
        org.users()["henry@example.com"]["Username"] = "h.ford@example.com"  # Setup > Users
        assert svc.update_user("henry", {"title": "CEO"}).outbound.ok
    assert "henry@example.com" not in org.users()
    assert org.users()["h.ford@example.com"]["Title"] == "CEO"
    assert org.api_requests("PATCH")[-1].body == {"Title": "CEO"}


def test_a_field_no_longer_mapped_is_cleared(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("mona", {"title": "Lead", "department": "Ops"}, roles=["staff"])
        assert svc.update_user("mona", {}, unset=["title"]).outbound.ok
    mona = org.users()["mona@example.com"]
    assert "Title" not in mona and mona["Department"] == "Ops"
    assert org.api_requests("PATCH")[-1].body["Title"] is None


def test_deprovision_delete_deactivates_too(tmp_path, org):
    idps = sf_idp(org).replace("    deprovision: disable\n", "    deprovision: delete\n")
    with make_service(tmp_path, idps, ["sf"], **NO_SLEEP) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {}, roles=["staff"])
        result = svc.delete_user("bob")
        assert result.outbound.ok
        assert [o.operation for o in ops(result, "user")] == ["delete"]
    bob = org.users()["bob@example.com"]
    assert bob["IsActive"] is False
    assert bob["LastName"] == "bob" and bob["Email"] == "bob@example.com" and bob["Alias"] == "bob"
    assert not [r for r in org.requests if r.method == "DELETE" and "/User/" in r.path]


def test_a_new_user_of_a_deleted_users_name_is_told_the_account_is_idprovs_old_one(tmp_path, org):
    """Salesforce keeps a deleted user's account (deactivated), so a new user of the
    same name meets it. It was called one "idprov did not create", with the advice to
    remove it there, which Salesforce does not allow."""
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("henry", {"family_name": "Ford"}, roles=["staff"])
        svc.delete_user("henry")
        result = svc.add_user("henry", {"family_name": "Ford"}, roles=["staff"])
    [user] = ops(result, "user")
    assert user.outcome == "failed"
    assert "that idprov made for an earlier user of that name" in user.error
    assert "did not create" not in user.error and "change its Username" in user.error
    assert [u["IsActive"] for u in org.users().values()] == [False]


def test_a_role_mapped_to_a_public_group(tmp_path, org):
    with service(tmp_path, org, extra="    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("engineers")
        result = svc.add_user("carol", {}, roles=["staff", "engineers"])
        assert result.outbound.ok, result.outbound.to_dict()
        assert org.group_members("Engineering") == {"carol@example.com"}
        assert svc.unassign("engineers", ["carol"]).outbound.ok
        assert org.group_members("Engineering") == set()
        assert org.assignees("Sales_Ops") == {"carol@example.com"}
        # a deleted role leaves the Salesforce group alone
        assert svc.delete_role("engineers").outbound.ok
        assert org.group_id("Engineering")


def test_an_unmapped_role_fails_with_a_hint_and_the_user_still_goes(tmp_path, org):
    with service(tmp_path, org, extra="    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("auditors")
        result = svc.add_user("dave", {}, roles=["staff", "auditors"])
    failed = [o for o in ops(result) if o.outcome == "failed"]
    assert [(o.kind, o.label) for o in failed] == [("role", "auditors")]
    assert "role 'auditors' has no Salesforce permission set or public group" in failed[0].error
    assert "map it under options.roles of identity provider sf" in failed[0].error
    assert org.users()["dave@example.com"]["IsActive"] is True


def cli_config(tmp_path: Path, org: SalesforceOrg, flow: str) -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:{sf_idp(org, flow)}
applications:
  - name: resident
    identity_providers: [sf]
""")


def test_lifecycle_through_the_cli_without_secrets_in_any_output(cli, tmp_path, org):
    cli_config(tmp_path, org, "client_credentials")
    cli("role", "add", "staff").ok()
    out = cli(
        "user", "add", "erin", "-c", "given_name=Erin", "-c", "family_name=Brown", "-r", "staff"
    )
    assert "sf: 2 done" in out.ok().stdout
    assert org.users()["erin@example.com"]["Alias"] == "ebrown"
    report = cli("idp", "test", "sf", "--json").json()
    assert report["ok"] and report["capabilities"]["instance_url"] == org.instance.url
    cli("user", "update", "erin", "-c", "title=Lead").ok()
    assert org.users()["erin@example.com"]["Title"] == "Lead"
    cli("user", "delete", "erin", "--yes").ok()
    assert org.users()["erin@example.com"]["IsActive"] is False
    assert org.assignees("Sales_Ops") == set()
    log = cli("log", "--action", "outbound.", "--json").items()
    outputs = str(log) + out.stdout + out.stderr + json.dumps(report)
    assert org.issued and not any(token in outputs for token in org.issued)
    assert org.consumer_secret not in outputs
    assert org.grants == ["client_credentials"] * len(org.grants)


def test_config_show_lists_only_the_options_that_apply(cli, tmp_path, org):
    """auth, token and header_name are refused or unused by this connector: they were
    listed with their defaults, as if they could be set."""
    cli_config(tmp_path, org, "password")
    options = cli("config", "show", "--json").json()["identity_providers"][0]["options"]
    assert not {"auth", "token", "header_name"} & set(options)
    assert {"flow", "client_id", "username", "password", "security_token", "ca_file"} <= set(
        options
    )
    text = cli("config", "show").ok().stdout
    assert "header_name" not in text and "auth:" not in text and "\n    token:" not in text
    shown = tmp_path / "elsewhere" / "shown.yaml"  # still a configuration that validates
    shown.parent.mkdir()
    shown.write_text(text)
    again = cli("--config", str(shown), "config", "show", "--json").json()
    assert again["identity_providers"][0]["options"] == options


def test_the_username_password_flow_appends_the_security_token(tmp_path, org):
    with service(tmp_path, org, flow="password") as svc:
        svc.add_role("staff")
        assert svc.add_user("frank", {}, roles=["staff"]).outbound.ok
    assert org.grants == ["password"]


# ---------------------------------------------------------------- sObject Collections
def push_many(tmp_path: Path, org: SalesforceOrg, count: int):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        names = [f"user{i:03d}" for i in range(count)]
        for name in names:
            svc.add_user(name, {"family_name": name.title()})
        before = len(org.requests)
        result = svc.assign("staff", names)
        calls = Counter(
            f"{r.method} {r.path.split('/', 4)[-1]}"
            for r in org.requests[before:]
            if r.path.startswith("/services/data/")
        )
        return result, calls


def test_many_creates_go_in_collections_of_at_most_200(tmp_path, org):
    result, calls = push_many(tmp_path, org, 250)
    assert result.outbound.ok, [o.error for o in ops(result) if o.error][:3]
    assert calls["POST composite/sobjects"] == 2 + 2  # users: 200 + 50; assignments: 200 + 50
    assert calls["POST sobjects/User/"] == 0
    sizes = [
        len(r.body["records"])
        for r in org.api_requests("POST", "composite/sobjects")
        if r.body["records"][0]["attributes"]["type"] == "User"
    ]
    assert sorted(sizes) == [50, 200]  # the two collections go out concurrently
    assert all(r.body["allOrNone"] is False for r in org.api_requests("POST", "composite"))
    assert len(org.users()) == 250 and len(org.assignees("Sales_Ops")) == 250


def test_a_taken_username_fails_alone_inside_a_collection(tmp_path, org):
    org._insert(
        "User",
        {
            "Username": "user007@example.com",
            "LastName": "Someone",
            "Email": "s@example.com",
            "Alias": "some",
            "ProfileId": org.profile_id("Standard User"),
            "IsActive": True,
        },
    )
    result, _ = push_many(tmp_path, org, 20)
    failed = [o for o in ops(result, "user") if o.outcome == "failed"]
    assert [o.label for o in failed] == ["user007"]
    assert "did not create it" in failed[0].error
    assert '"statusCode": "DUPLICATE_USERNAME"' in failed[0].error
    assert '"fields": ["Username"]' in failed[0].error
    assert len(org.users()) == 20


def test_a_username_taken_in_another_org_says_to_change_domain_or_pattern(tmp_path, org):
    """Salesforce usernames are unique across every org: DUPLICATE_USERNAME for one no
    user of this org holds was called a name "the target may enforce uniqueness on
    another attribute (email?)"; the fix is another domain or username_pattern."""
    org.taken_elsewhere.update({"ivy@example.com", "user003@example.com"})
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        [user] = ops(svc.add_user("ivy", {}, roles=["staff"]), "user")
    assert user.outcome == "failed" and '"errorCode": "DUPLICATE_USERNAME"' in user.error
    assert "another Salesforce org holds it" in user.error
    assert "options.domain or options.username_pattern of identity provider sf" in user.error
    assert "another attribute" not in user.error and "did not create" not in user.error
    result, _ = push_many(tmp_path / "many", org, 12)  # sObject Collections say the same
    [failed] = [o for o in ops(result, "user") if o.outcome == "failed"]
    assert failed.label == "user003" and "another Salesforce org holds it" in failed.error


def test_request_limit_on_a_collection_is_retried_without_duplicates(tmp_path, org):
    org.fail_next(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", path="/composite")
    result, calls = push_many(tmp_path, org, 12)
    assert result.outbound.ok
    assert len(org.users()) == 12
    assert all(o.attempts == 2 for o in ops(result, "user"))


# ---------------------------------------------------------------- limits, sessions, errors
def test_request_limit_exceeded_is_retried(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        org.fail_next(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", method="POST")
        result = svc.add_user("gina", {}, roles=["staff"])
        assert svc.connector("sf").limiter.slowdowns == 1  # fed the rate limiter
    assert result.outbound.ok
    [user] = ops(result, "user")
    assert user.attempts == 2 and len(org.users()) == 1


def test_a_session_that_expires_mid_run_is_renewed_once(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("hank", {}, roles=["staff"])
        org.revoke_tokens()
        result = svc.update_user("hank", {"title": "Chief"})
        assert result.outbound.ok
        assert [o.attempts for o in ops(result)] == [1]
        assert [r.status for r in org.api_requests("PATCH")] == [401, 204]
        assert org.grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"] * 2


def test_a_session_refused_twice_fails_with_salesforces_words(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        org.fail_next(401, "INVALID_SESSION_ID", "Session expired or invalid", count=5)
        result = svc.add_user("ivy", {}, roles=["staff"])
    [user] = ops(result, "user")
    assert user.outcome == "failed" and user.status == 401 and user.attempts == 1
    assert '"errorCode": "INVALID_SESSION_ID"' in user.error
    assert len(org.grants) == 2


def test_wrong_client_secret_reports_the_oauth_error_and_no_secret(tmp_path, org, monkeypatch):
    monkeypatch.setenv("SF_SECRET", "not-the-secret")
    with service(tmp_path, org, flow="client_credentials") as svc:
        svc.add_role("staff")
        result = svc.add_user("jack", {}, roles=["staff"])
        rows = svc.outbox_rows(["sf"], "failed")
    [user] = ops(result, "user")
    assert user.outcome == "failed" and user.attempts == 1
    assert '{"error": "invalid_client", "error_description": "invalid client credentials"}' in (
        user.error
    )
    texts = json.dumps(result.outbound.to_dict()) + str([r.last_error for r in rows])
    assert "not-the-secret" not in texts and org.consumer_secret not in texts


def test_a_wrong_security_token_is_told_to_check_password_and_security_token(
    tmp_path, org, monkeypatch
):
    monkeypatch.setenv("SF_TOKEN", "not-the-token")
    with service(tmp_path, org, flow="password") as svc:
        report = svc.test_idp("sf")
    assert not report.ok
    [message] = report.messages
    assert "authentication failure" in message
    assert "password and security_token" in message and "Reset My Security Token" in message
    assert "pre-authorized" not in message and "certificate" not in message
    assert "not-the-token" not in message and org.password not in message


def test_a_certificate_that_fails_verification_names_ca_file_once(tmp_path, org, https_server):
    url, _ca = https_server
    idps = sf_idp(org).replace(f"base_url: {org.login.url}", f"base_url: {url.removesuffix('/v2')}")
    with make_service(tmp_path, idps, ["sf"], **NO_SLEEP) as svc:
        [message] = svc.test_idp("sf").messages
    assert "certificate" in message and message.count("options.ca_file") == 1


def test_a_user_not_preauthorized_for_the_jwt_flow_is_told_how_to_fix_it(tmp_path, org):
    org.preauthorized = False
    with service(tmp_path, org) as svc:
        report = svc.test_idp("sf")
    assert not report.ok
    [message] = report.messages
    assert "user hasn't approved this consumer" in message and "pre-authorized" in message
    assert "BEGIN" not in message


def test_a_refused_field_reaches_the_report_verbatim(tmp_path, org):
    with service(tmp_path, org, options="      time_zone: Mars/Olympus_Mons\n") as svc:
        svc.add_role("staff")
        result = svc.add_user("kate", {}, roles=["staff"])
    [user] = ops(result, "user")
    assert user.status == 400 and user.attempts == 1
    errors = json.loads(user.error.split(": HTTP 400: ", 1)[1])
    assert errors == [
        {
            "message": "TimeZoneSidKey: bad value for restricted picklist field: Mars/Olympus_Mons",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "fields": ["TimeZoneSidKey"],
        }
    ]


def test_the_instance_url_override_wins(tmp_path, org):
    org.advertised_instance_url = "http://127.0.0.1:9"  # nothing listens there
    with service(tmp_path, org, options=f"      instance_url: {org.instance.url}\n") as svc:
        svc.add_role("staff")
        assert svc.add_user("liam", {}, roles=["staff"]).outbound.ok


def test_an_unknown_api_version_fails_the_check(tmp_path, org):
    with service(tmp_path, org, options='      api_version: "40.0"\n') as svc:
        report = svc.test_idp("sf")
    assert not report.ok and '"errorCode": "NOT_FOUND"' in report.messages[0]


def test_the_check_warns_about_deprovision_delete_and_unknown_roles(tmp_path, org):
    idps = sf_idp(org).replace("    deprovision: disable\n", "    deprovision: delete\n")
    idps = idps.replace("name: Engineering}", "name: Nobody}")
    with make_service(tmp_path, idps, ["sf"]) as svc:
        report = svc.test_idp("sf")
    assert report.ok
    assert any("deprovision: disable" in m for m in report.messages)
    assert any("engineers: no group named Nobody" in m for m in report.messages)
    assert (
        "role engineers is mapped under options.roles but never pushed (not a provisioning "
        "role): add it to provisioning_roles, set push_roles: all, or remove it from "
        "options.roles"
    ) in report.messages
    assert not any(m.startswith("role staff ") for m in report.messages)


def test_error_mapping_of_salesforce_replies():
    import httpx

    from idprov.connectors.base import RemoteConflict, RemoteNotFound, TargetError

    def reply(status: int, code: str) -> httpx.Response:
        return httpx.Response(status, json=[{"message": "m", "errorCode": code, "fields": []}])

    with pytest.raises(RemoteConflict):
        raise_salesforce_error(reply(400, "DUPLICATE_USERNAME"), "x")
    with pytest.raises(RemoteNotFound):
        raise_salesforce_error(reply(404, "NOT_FOUND"), "x")
    for status, code in ((403, "REQUEST_LIMIT_EXCEEDED"), (400, "UNABLE_TO_LOCK_ROW"), (503, "X")):
        with pytest.raises(TargetError) as info:
            raise_salesforce_error(reply(status, code), "x")
        assert info.value.retryable, code
    with pytest.raises(TargetError) as info:
        raise_salesforce_error(reply(400, "INVALID_FIELD"), "x")
    assert not info.value.retryable


# ---------------------------------------------------------------- units and options
def test_soql_literals_and_aliases():
    assert soql_literal("o'brien\\x") == "'o\\'brien\\\\x'"
    assert derive_alias("Alice", "Liddell", "x") == "aliddell"
    assert derive_alias(None, "O'Neil-Smith", "x") == "oneilsmi"
    assert derive_alias("", "", "Zoë.Z@example.com") == "zoez"
    assert derive_alias("Émile", "Zola", "x") == "ezola"


def options(**extra: Any) -> dict[str, Any]:
    base = {
        "client_id": "ck",
        "private_key": "env:K",
        "username": "i@example.com",
        "domain": "example.com",
        "profile": "Standard User",
    }
    return {k: v for k, v in {**base, **extra}.items() if v is not None}


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (options(private_key=None), "private_key", "needs private_key, username"),
        (options(flow="client_credentials", client_secret="env:S"), "base_url", "My Domain"),
        (options(profile=None), "profile", "profile_id"),
        (options(domain=None), "domain", "set domain"),
        (options(api_version="v60"), "api_version", "60.0"),
        (
            options(roles={"staff": {"type": "group", "id": "0PS000000000001AAA"}}),
            "roles.staff.id",
            "starting 00G",
        ),
        (options(auth="basic"), "auth", "OAuth"),
        (options(mark_field="Email"), "mark_field", "idprov writes Email itself"),
    ],
)
def test_options_are_checked_with_the_key_named(data, key, words):
    from idprov.config.schema import Locator, build
    from idprov.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        build(SalesforceOptions, data, Locator("idprov.yaml"), ("options",))
    assert f"options.{key}" in info.value.message and words in info.value.message


def test_sandbox_hosts_get_the_sandbox_audience():
    from idprov.config.schema import Locator, build

    sandbox = build(
        SalesforceOptions,
        options(base_url="https://acme--uat.sandbox.my.salesforce.com"),
        Locator("t"),
    )
    assert sandbox.jwt_audience == "https://test.salesforce.com"
    assert build(SalesforceOptions, options(), Locator("t")).jwt_audience == (
        "https://login.salesforce.com"
    )


# ---------------------------------------------------------------- access left behind, admins, marks
def test_deleting_a_role_revokes_its_permission_set_and_group_memberships(tmp_path, org):
    with service(tmp_path, org, extra="    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("engineers")
        svc.add_user("ann", {}, roles=["staff", "engineers"])
        svc.add_user("ben", {}, roles=["staff", "engineers"])
        assert org.assignees("Sales_Ops") == {"ann@example.com", "ben@example.com"}
        assert org.group_members("Engineering") == {"ann@example.com", "ben@example.com"}
        assert svc.delete_role("engineers").outbound.ok
        assert org.group_members("Engineering") == set()
        assert svc.state.ledger.for_idp("sf", "role").keys() == {svc.get_role("staff").id}
    # the public group itself is not idprov's: it stays
    assert org.group_id("Engineering")


def test_deleting_a_role_leaves_alone_an_assignment_idprov_did_not_make(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("cal", {}, roles=["staff"])
        other = org._insert(
            "User",
            {
                "Username": "admin-made@example.com",
                "LastName": "Admin",
                "Email": "a@example.com",
                "Alias": "adm",
                "ProfileId": org.profile_id("Standard User"),
                "IsActive": True,
            },
        )
        org.create_membership(
            "PermissionSetAssignment",
            {"PermissionSetId": org.permission_set_id("Sales_Ops"), "AssigneeId": other},
        )
        result = svc.delete_role("staff")
        assert result.outbound.ok, result.outbound.to_dict()
    assert org.assignees("Sales_Ops") == {"admin-made@example.com"}


def test_without_deprovision_salesforce_deactivates_and_keeps_the_id(tmp_path, org):
    idps = sf_idp(org).replace("    deprovision: disable\n", "")
    with make_service(tmp_path, idps, ["sf"], **NO_SLEEP) as svc:
        svc.add_role("staff")
        svc.add_user("dee", {}, roles=["staff"])
        svc.unassign("staff", ["dee"])
        entry = svc.state.ledger.get("sf", "user", svc.get_user("dee").id)
        assert entry.state == "disabled" and entry.remote_id  # kept: she can come back
        assert svc.assign("staff", ["dee"]).outbound.ok
    assert org.users()["dee@example.com"]["IsActive"] is True and len(org.users()) == 1


def test_a_user_an_administrator_deactivated_stays_deactivated(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("eve", {"title": "Clerk"}, roles=["staff"])
        org.users()["eve@example.com"]["IsActive"] = False  # Setup > Users
        assert svc.update_user("eve", {"title": "Boss"}).outbound.ok
    eve = org.users()["eve@example.com"]
    assert eve["IsActive"] is False and eve["Title"] == "Boss"


def test_a_user_an_administrator_deactivated_stays_so_after_leaving_and_reentering_scope(
    tmp_path, org
):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("henry", {"family_name": "Ford"}, roles=["staff"])
        org.users()["henry@example.com"]["IsActive"] = False  # Setup > Users > Deactivate
        org.requests.clear()
        result = svc.unassign("staff", ["henry"])
        assert result.outbound.ok
        assert [o.operation for o in ops(result, "user")] == [
            "left its groups; already disabled at the target"
        ]
        assert org.assignees("Sales_Ops") == set()
        result = svc.assign("staff", ["henry"])
    [user] = ops(result, "user")
    assert user.outcome == "done"
    [role] = ops(result, "role")  # Salesforce assigns nothing to an inactive user
    assert role.outcome == "failed" and "inactive user" in role.error
    assert org.users()["henry@example.com"]["IsActive"] is False
    assert not [r for r in org.api_requests("PATCH") if "IsActive" in r.body]


def test_a_permission_set_refused_to_a_deactivated_user_says_why_and_how_to_fix_it(tmp_path, org):
    """The role row names the user deactivated at Salesforce, says idprov did not do
    it, and gives the fix; once an administrator re-activates the user there, `outbox
    retry` assigns the permission set (idprov never sent IsActive)."""
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("henry", {}, roles=["staff"])
        org.users()["henry@example.com"]["IsActive"] = False  # Setup > Users > Deactivate
        assert svc.unassign("staff", ["henry"]).outbound.ok
        [role] = ops(svc.assign("staff", ["henry"]), "role")
        assert role.outcome == "failed"
        assert role.error.startswith(
            "user henry@example.com is deactivated at Salesforce, not by idprov (idprov "
            "never re-activates a user it did not deactivate), and Salesforce does not "
            f"assign permission set {org.permission_set_id('Sales_Ops')} to an inactive user"
        )
        assert "INACTIVE_OWNER_OR_USER" in role.error  # Salesforce's own words too
        assert role.error.endswith(
            ": re-activate it at Salesforce (Setup > Users > Edit > Active), then `idprov "
            "outbox retry --idp sf`; or, if it is to stay inactive, take this role from that "
            "user in idprov"
        )
        [row] = svc.outbox_rows()
        assert row.last_error == role.error
        org.users()["henry@example.com"]["IsActive"] = True  # the administrator's fix
        assert svc.retry_outbox(["sf"]).ok
    assert org.assignees("Sales_Ops") == {"henry@example.com"}
    assert not [r for r in org.api_requests("PATCH") if "IsActive" in (r.body or {})]


def test_a_group_refusing_a_deactivated_member_names_it_whatever_the_error_code(tmp_path, org):
    """Salesforce documents no code for a membership of an inactive user: the connector
    reads whether the refused users are active. The others are added."""
    org.inactive_member_error = ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
    with service(tmp_path, org, extra="    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("engineers")
        for name in ("ivy", "jack", "kim"):
            svc.add_user(name, {}, roles=["staff"])
        for name in ("jack", "kim"):
            org.users()[f"{name}@example.com"]["IsActive"] = False
        [role] = ops(svc.assign("engineers", ["ivy", "jack", "kim"]), "role")
    assert role.outcome == "failed"
    assert role.error.startswith(
        "users jack@example.com, kim@example.com are deactivated at Salesforce, not by "
        "idprov (idprov never re-activates a user it did not deactivate), and Salesforce "
        f"does not add an inactive user to public group {org.group_id('Engineering')}"
    )
    assert "INVALID_CROSS_REFERENCE_KEY" in role.error
    assert "re-activate them at Salesforce" in role.error
    assert org.group_members("Engineering") == {"ivy@example.com"}


def test_a_refused_assignment_of_an_active_user_reaches_the_report_as_sent(
    tmp_path, org, monkeypatch
):
    def refuse(sobject: str, fields: dict[str, Any]) -> str:
        raise SalesforceError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "no, says a rule")

    monkeypatch.setattr(org, "create_membership", refuse)
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        [role] = ops(svc.add_user("lou", {}, roles=["staff"]), "role")
    assert role.outcome == "failed"
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in role.error and "no, says a rule" in role.error
    assert "deactivated" not in role.error


def test_a_collection_whose_reply_was_lost_is_not_sent_again(tmp_path, org):
    org.fail_next(500, "UNKNOWN_EXCEPTION", path="/composite/sobjects", after_apply=True)
    result, calls = push_many(tmp_path, org, 30)
    assert result.outbound.ok, [o.error for o in ops(result) if o.error][:3]
    user_collections = [
        r
        for r in org.api_requests("POST", "composite/sobjects")
        if r.body["records"][0]["attributes"]["type"] == "User"
    ]
    assert len(user_collections) == 1 and calls["POST sobjects/User/"] == 0
    assert len(org.users()) == 30  # each found by idprov's mark, adopted as idprov's


def test_a_foreign_user_is_not_taken_over_after_a_500(tmp_path, org):
    org._insert(
        "User",
        {
            "Username": "victim@example.com",
            "LastName": "Victim",
            "Email": "v@example.com",
            "Alias": "vic",
            "ProfileId": org.profile_id("Standard User"),
            "IsActive": True,
        },
    )
    org.fail_next(500, "UNKNOWN_EXCEPTION", method="POST", path="/sobjects/User")
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        result = svc.add_user("victim", {}, roles=["staff"])
        [op] = ops(result, "user")
        assert op.outcome == "failed" and "nothing at the target proves it" in op.error
    assert org.users()["victim@example.com"]["IsActive"] is True
    assert org.assignees("Sales_Ops") == set()


def test_the_mark_is_federation_identifier_unless_configured(tmp_path, org):
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("fay", {}, roles=["staff"])
        assert org.users()["fay@example.com"]["FederationIdentifier"] == svc.get_user("fay").id


def test_a_claim_mapped_to_the_mark_field_is_refused_by_config_validate(cli, tmp_path, org):
    """The usual single sign-on setup maps FederationIdentifier to the e-mail. When it
    was also the mark, an administrator's own user holding that e-mail there was
    adopted as "created by idprov" (no on_conflict: adopt) and overwritten."""
    cli_config(tmp_path, org, "client_credentials")
    config = tmp_path / "idprov.yaml"
    config.write_text(
        config.read_text().replace(
            "    deprovision: disable\n",
            "    deprovision: disable\n    attributes:\n      FederationIdentifier: '{email}'\n",
        )
    )
    err = cli("config", "validate").fails(2)
    assert "idprov.yaml:" in err and "FederationIdentifier: '{email}'" in err
    assert "mark_field" in err and "Idprov_Id__c" in err
    org.objects["User"].clear()  # nothing was pushed
    assert cli("user", "list").exit_code == 2  # every command refuses it, not only validate


def test_with_single_sign_on_mapped_the_mark_goes_in_a_field_only_idprov_writes(tmp_path, org):
    org.user_fields["Idprov_Id__c"] = ("string", 255)
    org._insert(
        "User",
        {
            "Username": "hrperson@example.com",
            "LastName": "Head of HR",
            "Email": "hr.person@corp.test",
            "Alias": "hrp",
            "ProfileId": org.profile_id("System Administrator"),
            "FederationIdentifier": "hr.person@corp.test",
            "IsActive": True,
        },
    )
    options = "      mark_field: Idprov_Id__c\n"
    extra = "    attributes:\n      FederationIdentifier: '{email}'\n"
    with service(tmp_path, org, options=options, extra=extra) as svc:
        svc.add_role("staff")
        org.fail_next(
            500, "UNKNOWN_EXCEPTION", method="POST", path="/sobjects/User", after_apply=True
        )
        result = svc.add_user("fay", {"email": "fay@corp.test"}, roles=["staff"])
        assert result.outbound.ok, [o.error for o in ops(result)]
        fay_id = svc.get_user("fay").id
        claims = {"email": "hr.person@corp.test", "family_name": "Person"}
        [user] = ops(svc.add_user("hrperson", claims, roles=["staff"]), "user")
        assert user.outcome == "failed" and "did not create" in (user.error or "")
        assert svc.state.ledger.get("sf", "user", svc.get_user("hrperson").id) is None
    hr = org.users()["hrperson@example.com"]
    assert hr["LastName"] == "Head of HR" and org.assignees("Sales_Ops") == {"fay@example.com"}
    fay = org.users()["fay@example.com"]  # a lost reply: found by its mark, made once
    assert (fay["Idprov_Id__c"], fay["FederationIdentifier"]) == (fay_id, "fay@corp.test")


def test_passwords_go_through_the_password_resource_with_send_password(tmp_path, org):
    with service(tmp_path, org, options="      send_password: true\n") as svc:
        svc.add_role("staff")
        assert svc.add_user("gil", {}, roles=["staff"], password="First-Pass-1").outbound.ok
        uid = org.users()["gil@example.com"]["Id"]
        assert org.passwords[uid] == ["First-Pass-1"]
        before = len(org.api_requests("PATCH"))
        result = svc.set_password("gil", "Second-Pass-2")
        assert result.outbound.ok and result.outbound.idps["sf"].count("done") == 1
    assert org.passwords[uid] == ["First-Pass-1", "Second-Pass-2"]
    assert len(org.api_requests("PATCH")) == before  # the password alone: no PATCH


def test_a_password_that_fails_after_the_create_is_set_on_the_repeat(tmp_path, org):
    org.fail_next(503, "SERVER_UNAVAILABLE", method="POST", path="/sobjects/User/0")
    with service(tmp_path, org, options="      send_password: true\n") as svc:
        svc.add_role("staff")
        result = svc.add_user("hal", {}, roles=["staff"], password="Hal-Pass-123")
        assert result.outbound.ok, result.outbound.to_dict()
    [hal] = [u for u in org.users().values() if u["Username"] == "hal@example.com"]
    assert org.passwords[hal["Id"]] == ["Hal-Pass-123"] and len(org.users()) == 1
    posts = [r.status for r in org.api_requests("POST") if r.path.endswith("/password")]
    assert posts == [503, 204]  # refused once, then set on the repeat (after a look-up)


# ---------------------------------------------------------------- sync --verify
def test_verify_reports_changed_and_deactivated_users_and_repair_restores(tmp_path, org):
    """`sync --verify` found no drift at Salesforce (no drift()): a LastName changed in
    Setup stayed unreported, and a user an administrator deactivated was never in
    disabled_remotely."""
    from idprov.provisioning.verify import repair, verify_idp

    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        svc.add_user("bob", {"family_name": "Brown"}, roles=["staff"])
        svc.add_user("carol", {"email": "Carol@Example.org"}, roles=["staff"])
        assert verify_idp(svc, "sf")["repairs"] == []  # no false drift
        users = org.users()
        users["alice@example.com"]["LastName"] = "Changed"  # Setup > Users > Edit
        users["bob@example.com"]["IsActive"] = False
        users["carol@example.com"]["Username"] = "c.carol@example.com"  # kept by idprov

        report = verify_idp(svc, "sf")
        assert report["checked"] == 3
        assert report["changed_remotely"] == [{"user": "alice", "attributes": ["LastName"]}]
        assert report["disabled_remotely"] == ["bob"]
        assert [r["label"] for r in report["repairs"]] == ["alice"]

        assert repair(svc, {"sf": report}).ok
        assert org.users()["alice@example.com"]["LastName"] == "Liddell"
        assert org.users()["bob@example.com"]["IsActive"] is False  # an administrator's
        assert verify_idp(svc, "sf")["repairs"] == []


def test_repair_of_a_user_deactivated_and_changed_keeps_it_inactive(tmp_path, org):
    """An administrator deactivated bob and changed his LastName: the repair PATCHes
    LastName alone (it forgot what was sent, and the push sent every field, IsActive:
    true with them)."""
    from idprov.provisioning.verify import repair, verify_idp

    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {"family_name": "Brown"}, roles=["staff"])
        bob = org.users()["bob@example.com"]
        bob["IsActive"] = False
        bob["LastName"] = "Changed"
        report = verify_idp(svc, "sf")
        assert report["disabled_remotely"] == ["bob"]
        assert repair(svc, {"sf": report}).ok
        bob = org.users()["bob@example.com"]
        assert bob["IsActive"] is False and bob["LastName"] == "Brown"
        assert [r.body for r in org.api_requests("PATCH")] == [{"LastName": "Brown"}]


def test_repair_keeps_an_administrator_s_rename(tmp_path, org):
    """carol renamed in Setup, and her LastName changed: the repair sends the LastName
    back, never the old Username."""
    from idprov.provisioning.verify import repair, verify_idp

    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("carol", {"family_name": "Carol"}, roles=["staff"])
        carol = org.users()["carol@example.com"]
        carol["Username"] = "c.carol@example.com"
        carol["LastName"] = "Changed"
        assert repair(svc, {"sf": verify_idp(svc, "sf")}).ok
        [carol] = [u for u in org.users().values() if u["LastName"] == "Carol"]
        assert carol["Username"] == "c.carol@example.com"
