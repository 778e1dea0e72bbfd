"""The google connector against a strict Google Workspace on loopback: users and groups
through their whole lifecycle (service and CLI), the service account's JWT bearer flow,
token expiry mid-run, quotas and retries, Google's error JSON in the report, and no
secret in any output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from idprov.config.secrets import SecretRef
from idprov.connectors.base import Account, RemoteConflict, TargetError
from idprov.connectors.google import GoogleOptions, raise_google_error, set_path, with_domain
from idprov.connectors.oauth import AccessToken, TokenCache
from tests.outbound_helpers import make_service
from tests.peers.google import USER_SCOPE, GoogleWorkspace, pem_of, rsa_key

NO_SLEEP = {"sleep": lambda s: None}


def google_idp(fake: GoogleWorkspace, credentials: str, options: str = "", extra: str = "") -> str:
    return f"""
  - name: google
    connector: google
    options:
      base_url: {fake.url}
      credentials: {credentials}
      subject: {fake.admin}
{options}    provisioning_roles: [staff]
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}"""


@pytest.fixture
def key_file(tmp_path: Path, google_workspace: GoogleWorkspace) -> Path:
    path = tmp_path / "google-key.json"
    path.write_text(google_workspace.key_json(), encoding="utf-8")
    return path


@pytest.fixture
def google(google_workspace: GoogleWorkspace, key_file: Path) -> GoogleWorkspace:
    return google_workspace


def service(tmp_path: Path, fake: GoogleWorkspace, options: str = "", extra: str = ""):
    idps = google_idp(fake, f"file:{tmp_path / 'google-key.json'}", options, extra)
    return make_service(tmp_path, idps, ["google"], **NO_SLEEP)


def outcome(result: Any) -> list[tuple[str, str, str]]:
    report = result.outbound.idps["google"]
    return [(op.kind, op.operation, op.outcome) for op in report.operations]


ALICE = {
    "email": "alice@example.com",
    "given_name": "Alice",
    "family_name": "Liddell",
    "phone_number": "+44 20 7946 0000",
    "title": "Engineer",
    "department": "R&D",
    "employee_number": "E-1",
}


# ---------------------------------------------------------------- lifecycle
def test_user_and_group_lifecycle(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        result = svc.add_user("alice", ALICE, roles=["staff"])
        assert result.outbound.ok, result.outbound.to_dict()
        alice = google.user("alice@example.com")
        assert alice is not None
        assert alice["name"]["givenName"] == "Alice" and alice["name"]["familyName"] == "Liddell"
        assert alice["phones"] == [{"type": "work", "value": "+44 20 7946 0000"}]
        assert alice["organizations"] == [
            {"type": "work", "title": "Engineer", "department": "R&D"}
        ]
        local_id = svc.get_user("alice").id
        assert alice["externalIds"] == [
            {"type": "organization", "value": "E-1"},
            {"type": "custom", "customType": "idprov", "value": local_id},  # idprov's mark
        ]
        assert alice["suspended"] is False and alice["changePasswordAtNextLogin"] is False
        [password] = google.passwords[alice["id"]]
        assert len(password) >= 24
        entry = svc.state.ledger.get("google", "user", svc.get_user("alice").id)
        assert entry.remote_id == alice["id"]  # Google's id, not the email
        assert google.member_emails("staff@example.com") == {"alice@example.com"}
        assert google.group("staff@example.com")["name"] == "staff"

        result = svc.update_user("alice", {"title": "CTO"})
        assert result.outbound.ok
        assert google.user("alice@example.com")["organizations"][0]["title"] == "CTO"
        patch = google.api_requests("PATCH")[-1]
        assert "password" not in patch.body  # never reset on update (WSO2's connector does)
        assert google.passwords[alice["id"]] == [password]

        result = svc.unassign("staff", ["alice"])
        assert result.outbound.ok
        assert google.user("alice@example.com") is None
        assert google.member_emails("staff@example.com") == set()


def test_missing_names_are_derived_and_unset_fields_are_cleared(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {"phone_number": "123"}, roles=["staff"])
        bob = google.user("bob@example.com")
        assert bob["name"] == {"givenName": "bob", "familyName": "bob", "fullName": "bob bob"}
        svc.update_user("bob", {"given_name": "Bob"}, unset=["phone_number"])
        bob = google.user("bob@example.com")
        assert bob["name"]["givenName"] == "Bob"
        assert "phones" not in bob or bob["phones"] == []


def test_suspend_on_deprovision_and_unsuspend_when_back(tmp_path, google):
    with service(tmp_path, google, extra="    deprovision: disable\n") as svc:
        svc.add_role("staff")
        svc.add_user("carol", {"email": "carol@example.com"}, roles=["staff"])
        result = svc.unassign("staff", ["carol"])
        assert ("user", "disable", "done") in outcome(result)
        carol = google.user("carol@example.com")
        assert carol["suspended"] is True
        assert google.api_requests("PATCH")[-1].body == {"suspended": True}
        result = svc.assign("staff", ["carol"])
        assert result.outbound.ok
        assert google.user("carol@example.com")["suspended"] is False
        assert len(google.users) == 1
        assert google.member_emails("staff@example.com") == {"carol@example.com"}


def test_a_new_primary_email_follows_by_the_google_id(tmp_path, google):
    with service(tmp_path, google, extra='    username: "{email}"\n') as svc:
        svc.add_role("staff")
        svc.add_user("dave", {"email": "dave@example.com"}, roles=["staff"])
        dave_id = google.user("dave@example.com")["id"]
        result = svc.update_user("dave", {"email": "david@example.com"})
        assert result.outbound.ok
        david = google.user("david@example.com")
        assert david["id"] == dave_id and david["primaryEmail"] == "david@example.com"
        assert len(google.users) == 1


def test_a_renamed_user_gets_the_new_primary_email_in_place(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("erin", {"email": "erin@example.com"}, roles=["staff"])
        erin_id = google.user("erin@example.com")["id"]
        result = svc.rename_user("erin", "erin.west")
        assert result.outbound.ok, result.outbound.to_dict()
        renamed = google.user("erin.west@example.com")
        assert renamed["id"] == erin_id and len(google.users) == 1
        assert google.api_requests("PATCH")[-1].body["primaryEmail"] == "erin.west@example.com"
        assert google.member_emails("staff@example.com") == {"erin.west@example.com"}


def test_role_rename_and_delete_follow(tmp_path, google):
    with service(tmp_path, google, extra="    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("R&D+Ops")
        svc.add_user("erin", {"email": "erin@example.com"}, roles=["staff", "R&D+Ops"])
        assert google.member_emails("r-d-ops@example.com") == {"erin@example.com"}
        group_id = google.group("r-d-ops@example.com")["id"]
        svc.rename_role("R&D+Ops", "Builders")
        builders = google.group("builders@example.com")
        assert builders["id"] == group_id and builders["name"] == "Builders"
        assert "r-d-ops@example.com" in builders["aliases"]
        svc.delete_role("Builders")
        assert google.group("builders@example.com") is None
        assert google.user("erin@example.com")["suspended"] is False


def test_org_unit_and_change_password_at_next_login_apply_to_creates(tmp_path, google):
    options = "      org_unit_path: /Staff\n      change_password_at_next_login: true\n"
    with service(tmp_path, google, options=options) as svc:
        svc.add_role("staff")
        svc.add_user("frank", {}, roles=["staff"])
        frank = google.user("frank@example.com")
        assert frank["orgUnitPath"] == "/Staff" and frank["changePasswordAtNextLogin"] is True


def write_cli_config(tmp_path: Path, fake: GoogleWorkspace) -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:{google_idp(fake, "env:GOOGLE_KEY")}
applications:
  - name: resident
    identity_providers: [google]
""")


def test_lifecycle_through_the_cli_without_secrets_in_any_output(
    cli, tmp_path, google, monkeypatch
):
    monkeypatch.setenv("GOOGLE_KEY", google.key_json())
    write_cli_config(tmp_path, google)
    cli("role", "add", "staff").ok()
    out = cli(
        "user", "add", "grace", "-c", "given_name=Grace", "-c", "family_name=Hopper", "-r", "staff"
    )
    assert "google: 2 done" in out.ok().stdout
    grace = google.user("grace@example.com")
    assert grace["name"]["familyName"] == "Hopper"
    assert google.member_emails("staff@example.com") == {"grace@example.com"}
    report = cli("idp", "test", "google", "--json").json()
    assert report["ok"] and report["capabilities"]["domain"] == "example.com"
    cli("user", "update", "grace", "-c", "title=Admiral").ok()
    cli("user", "delete", "grace", "--yes").ok()
    assert google.user("grace@example.com") is None
    log = cli("log", "--action", "outbound.", "--json").items()
    assert {e["details"]["status"] for e in log if e["action"] == "outbound.create"} == {200}
    outputs = str(log) + out.stdout + out.stderr
    assert google.issued and not any(token in outputs for token in google.issued)
    assert "PRIVATE KEY" not in outputs and google.key_id not in outputs


def test_a_base_url_with_the_api_path_is_refused_by_config_validate(cli, tmp_path, google):
    """base_url: .../admin/directory/v1 doubled the path: every call was a 404, which
    `idp test` reported as "authenticated no"."""
    write_cli_config(tmp_path, google)
    config = tmp_path / "idprov.yaml"
    config.write_text(
        config.read_text().replace(
            f"base_url: {google.url}", f"base_url: {google.url}/admin/directory/v1"
        )
    )
    err = cli("config", "validate").fails(2)
    assert "idprov.yaml:" in err and "options.base_url" in err
    assert "must be the API host's root" in err and "remove the path" in err
    assert cli("idp", "test", "google").exit_code == 2


def test_config_show_lists_only_the_options_that_apply(cli, tmp_path, google):
    """auth, token, username, password and header_name are refused or unused by this
    connector: they were listed with their defaults, as if they could be set."""
    write_cli_config(tmp_path, google)
    options = cli("config", "show", "--json").json()["identity_providers"][0]["options"]
    assert not {"auth", "token", "username", "password", "header_name"} & set(options)
    assert {"credentials", "subject", "scopes", "token_uri", "client_email"} <= set(options)
    text = cli("config", "show").ok().stdout
    assert "header_name" not in text and "auth:" not in text and "\n    password:" not in text
    shown = tmp_path / "elsewhere" / "shown.yaml"  # still a configuration that validates
    shown.parent.mkdir()
    shown.write_text(text)
    again = cli("--config", str(shown), "config", "show", "--json").json()
    assert again["identity_providers"][0]["options"] == options


def test_cli_reports_a_refused_delegation_with_googles_words_and_a_hint(
    cli, tmp_path, google, monkeypatch
):
    monkeypatch.setenv("GOOGLE_KEY", google.key_json())
    write_cli_config(tmp_path, google)
    google.delegated_scopes = {USER_SCOPE}  # the group scope was not granted
    run = cli("idp", "test", "google", "--json")
    assert run.exit_code == 6, run
    report = json.loads(run.stdout)
    assert not report["ok"] and not report["authenticated"]
    [message] = report["messages"]
    assert '"error": "unauthorized_client"' in message and "domain-wide delegation" in message
    assert "PRIVATE KEY" not in run.stdout + run.stderr


# ---------------------------------------------------------------- authentication
def test_the_token_is_cached_then_refreshed_once_after_revocation(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("heidi", {}, roles=["staff"])
        svc.add_user("ivan", {}, roles=["staff"])
        assert google.token_requests == 1
        google.revoke_tokens()  # the token expires mid-run
        result = svc.update_user("heidi", {"given_name": "Heidi"})  # a PATCH, no read first
        assert result.outbound.ok
        [op] = result.outbound.idps["google"].operations
        assert op.attempts == 1
        assert google.token_requests == 2
        statuses = [r.status for r in google.api_requests("PATCH")]
        assert statuses == [401, 200]


def test_concurrent_operations_share_one_token(tmp_path, google):
    with service(tmp_path, google, extra="    max_concurrency: 6\n") as svc:
        svc.add_role("staff")
        names = [f"user{i:02d}" for i in range(24)]
        for name in names:
            svc.add_user(name, {})
        result = svc.assign("staff", names)
    assert result.outbound.ok
    assert len(google.users) == 24 and len(google.member_emails("staff@example.com")) == 24
    assert google.token_requests == 1


def test_a_token_refused_twice_fails_without_looping(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        google.fail_next(401, "authError", "Invalid Credentials", count=10, method="POST")
        result = svc.add_user("judy", {}, roles=["staff"])
        [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
        assert op.outcome == "failed" and op.status == 401 and op.attempts == 1
        assert '"reason": "authError"' in op.error
        assert google.token_requests == 2


def test_a_bare_pem_key_in_an_environment_variable(tmp_path, google, monkeypatch):
    monkeypatch.setenv("GOOGLE_PEM", google.private_key_pem().replace("\n", "\\n"))
    options = f"      client_email: {google.client_email}\n      token_uri: {google.token_uri}\n"
    idps = google_idp(google, "env:GOOGLE_PEM", options)
    with make_service(tmp_path, idps, ["google"], **NO_SLEEP) as svc:
        svc.add_role("staff")
        assert svc.add_user("kim", {}, roles=["staff"]).outbound.ok
    assert google.user("kim@example.com") is not None


def test_a_key_the_service_does_not_know_is_refused_with_its_words(tmp_path, google):
    other = tmp_path / "other.pem"
    other.write_text(pem_of(rsa_key("someone else")))
    options = f"      client_email: {google.client_email}\n      token_uri: {google.token_uri}\n"
    with make_service(tmp_path, google_idp(google, f"file:{other}", options), ["google"]) as svc:
        svc.add_role("staff")
        result = svc.add_user("leo", {}, roles=["staff"])
    [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
    assert op.outcome == "failed" and op.attempts == 1
    assert '"error_description": "Invalid JWT Signature."' in op.error
    assert "BEGIN" not in op.error


def test_an_unreadable_key_fails_the_operation_with_a_hint(tmp_path, google):
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "authorized_user"}')
    with make_service(tmp_path, google_idp(google, f"file:{bad}"), ["google"]) as svc:
        svc.add_role("staff")
        result = svc.add_user("mia", {}, roles=["staff"])
        report = svc.test_idp("google")
    [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
    assert op.outcome == "failed" and "not a service account key" in op.error
    assert not report.ok and "service account" in report.messages[0]
    assert google.token_requests == 0


def test_token_cache_refreshes_before_expiry_and_once_after_refusal():
    now = [0.0]
    issued: list[AccessToken] = []

    def fetch() -> AccessToken:
        issued.append(AccessToken(f"t{len(issued)}", 3600))
        return issued[-1]

    cache = TokenCache(fetch, clock=lambda: now[0])
    first = cache.get()
    now[0] = 3000
    assert cache.get() is first
    now[0] = 3545  # less than a minute left
    second = cache.get()
    assert second is not first
    cache.refused(first)  # a stale refusal: the new token stays
    assert cache.get() is second
    cache.refused(second)
    assert cache.get().value == "t2" and cache.fetches == 3
    assert "t2" not in repr(cache.get())


# ---------------------------------------------------------------- quotas, errors
@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, "userRateLimitExceeded"), (403, "rateLimitExceeded"), (429, "rateLimitExceeded")],
)
def test_rate_limits_are_retried(tmp_path, google, status, reason):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        google.fail_next(status, reason, "Rate Limit Exceeded", method="POST", path="/users")
        result = svc.add_user("nina", {}, roles=["staff"])
        assert result.outbound.ok
        [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
        assert op.attempts == 2
        assert len(google.users) == 1
        assert svc.connector("google").limiter.slowdowns == 1  # fed the rate limiter


def test_a_5xx_on_create_looks_before_creating_again(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        google.fail_next(503, "backendError", method="POST", path="/users")
        result = svc.add_user("omar", {}, roles=["staff"])
        assert result.outbound.ok
        gets = [r.path for r in google.api_requests("GET")]
        assert any(
            p.endswith("/users/omar%40example.com") or p.endswith("/users/omar@example.com")
            for p in gets
        )
        assert len(google.users) == 1


def test_a_plain_403_fails_at_once_with_googles_error_json(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        google.fail_next(403, "forbidden", "Not Authorized to access this resource/api")
        result = svc.add_user("pat", {}, roles=["staff"])
    [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
    assert op.outcome == "failed" and op.attempts == 1 and op.status == 403
    body = json.loads(op.error.split(": HTTP 403: ", 1)[1])
    assert body == {
        "error": {
            "code": 403,
            "message": "Not Authorized to access this resource/api",
            "errors": [
                {
                    "message": "Not Authorized to access this resource/api",
                    "domain": "global",
                    "reason": "forbidden",
                }
            ],
        }
    }


def test_a_refused_field_reaches_the_report_verbatim(tmp_path, google):
    with service(tmp_path, google, options="      org_unit_path: /Nowhere\n") as svc:
        svc.add_role("staff")
        result = svc.add_user("quinn", {}, roles=["staff"])
        rows = svc.outbox_rows(["google"], "failed")
    [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
    assert op.status == 400 and '"message": "Invalid Input: INVALID_OU_ID"' in op.error
    assert '"reason": "invalid"' in op.error
    assert any("INVALID_OU_ID" in (r.last_error or "") for r in rows)


def test_an_existing_account_is_a_conflict_unless_adopted(tmp_path, google):
    google.insert_user(
        {
            "primaryEmail": "rose@example.com",
            "name": {"givenName": "R", "familyName": "T"},
            "password": "x" * 12,
        }
    )
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        result = svc.add_user("rose", {}, roles=["staff"])
        [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
        assert op.outcome == "failed" and "did not create it" in op.error
        assert '"reason": "duplicate"' in op.error
    with service(tmp_path, google, extra="    on_conflict: adopt\n") as svc:
        assert svc.retry_outbox(["google"]).ok
    assert len(google.users) == 1
    assert google.member_emails("staff@example.com") == {"rose@example.com"}


def test_error_mapping_of_google_replies():
    import httpx

    def reply(status: int, reason: str) -> httpx.Response:
        body = {"error": {"code": status, "message": "m", "errors": [{"reason": reason}]}}
        return httpx.Response(status, json=body, headers={"Retry-After": "3"})

    with pytest.raises(RemoteConflict):
        raise_google_error(reply(409, "duplicate"), "x")
    with pytest.raises(TargetError) as info:
        raise_google_error(reply(403, "userRateLimitExceeded"), "x")
    assert info.value.retryable and info.value.retry_after == 3 and info.value.hint is None
    with pytest.raises(TargetError) as info:
        raise_google_error(reply(403, "forbidden"), "x")
    assert not info.value.retryable and "delegation" in (info.value.hint or "")
    with pytest.raises(TargetError) as info:
        raise_google_error(httpx.Response(502, text="<html>bad gateway</html>"), "x")
    assert info.value.retryable and info.value.ambiguous and "bad gateway" in info.value.message


# ---------------------------------------------------------------- units and options
@pytest.mark.parametrize(
    ("user_name", "email"),
    [
        ("alice", "alice@example.com"),
        ("Alice@Example.com", "alice@example.com"),
        ("ann@partner.org", "ann.partner.org@example.com"),
    ],
)
def test_primary_email_follows_the_pattern_and_wso2s_rule(user_name, email):
    assert with_domain(user_name, "{UN}@{domain}", "example.com") == email


def test_set_path_builds_nested_objects_and_typed_list_items():
    body: dict[str, Any] = {}
    set_path(body, "name.givenName", "A")
    set_path(body, 'phones[type eq "work"].value', "1")
    set_path(body, 'phones[type eq "mobile"].value', "2")
    set_path(body, 'organizations[type eq "work"].title', "T")
    set_path(body, 'organizations[type eq "work"].department', "D")
    assert body == {
        "name": {"givenName": "A"},
        "phones": [{"type": "work", "value": "1"}, {"type": "mobile", "value": "2"}],
        "organizations": [{"type": "work", "title": "T", "department": "D"}],
    }


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"subject": "admin@example.com"}, "credentials", "service account's JSON key"),
        ({"credentials": "env:K", "subject": "admin"}, "subject", "administrator"),
        ({"credentials": "env:K", "subject": "a@example.com", "auth": "bearer"}, "auth", "OAuth"),
        (
            {"credentials": "env:K", "subject": "a@example.com", "primary_email": "{X}@{domain}"},
            "primary_email",
            "unknown placeholder {X}",
        ),
        ({"credentials": "K", "subject": "a@example.com"}, "credentials", "references"),
        (
            {
                "credentials": "env:K",
                "subject": "a@example.com",
                "base_url": "https://admin.googleapis.com/admin/directory/v1",
            },
            "base_url",
            "idprov adds /admin/directory/v1 itself",
        ),
    ],
)
def test_options_are_checked_with_the_key_named(options, key, words):
    from idprov.config.schema import Locator, build
    from idprov.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        build(GoogleOptions, options, Locator("idprov.yaml"), ("options",))
    assert f"options.{key}" in info.value.message and words in info.value.message


def test_jwt_and_cryptography_are_imported_only_when_used(run_python):
    code = (
        "import sys\n"
        "from idprov.connectors import google, salesforce\n"
        "print(any(m.split('.')[0] in ('jwt', 'cryptography') for m in sys.modules))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_update_body_never_carries_create_only_fields():
    from idprov.connectors.google import GoogleConnector

    options = GoogleOptions(credentials=SecretRef("env:K"), subject="a@example.com")
    connector = GoogleConnector(None, options, None)
    account = Account("1", "zoe", {"password": "p" * 10, "name.givenName": "Zoe"})
    assert "password" not in connector.user_body(account, create=False)
    created = connector.user_body(account, create=True)
    assert created["password"] == "p" * 10 and created["primaryEmail"] == "zoe@example.com"


# ---------------------------------------------------------------- ownership, admins, passwords
def test_a_create_whose_reply_was_lost_is_adopted_by_idprovs_mark(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        google.fail_next(503, "backendError", method="POST", path="/users", after_apply=True)
        result = svc.add_user("uma", {}, roles=["staff"])
        assert result.outbound.ok, result.outbound.to_dict()
        entry = svc.state.ledger.get("google", "user", svc.get_user("uma").id)
    assert len(google.users) == 1 and len(google.api_requests("POST")) == 3  # user, group, member
    assert entry.created_by_idprov and entry.remote_id == google.user("uma@example.com")["id"]


def test_a_foreign_account_is_not_taken_over_after_a_5xx(tmp_path, google):
    google.insert_user(
        {
            "primaryEmail": "victim@example.com",
            "name": {"givenName": "V", "familyName": "T"},
            "password": "x" * 12,
        }
    )
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        google.fail_next(500, "backendError", method="POST", path="/users")
        result = svc.add_user("victim", {}, roles=["staff"])
        [op] = [o for o in result.outbound.idps["google"].operations if o.kind == "user"]
        assert op.outcome == "failed" and "nothing at the target proves it" in op.error
        assert sorted(r.kind for r in svc.outbox_rows(["google"], "failed")) == ["role", "user"]
        svc.unassign("staff", ["victim"])
    assert google.user("victim@example.com") is not None  # never deleted


def test_an_account_an_administrator_suspended_stays_suspended(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("pat", {"title": "Clerk", "phone_number": "1"}, roles=["staff"])
        google.user("pat@example.com")["suspended"] = True  # the Admin console
        google.requests.clear()
        assert svc.update_user("pat", {"title": "Manager"}).outbound.ok
    [patch] = google.api_requests("PATCH")
    assert google.user("pat@example.com")["suspended"] is True
    assert set(patch.body) == {"organizations"}  # only what changed
    assert patch.body["organizations"] == [{"type": "work", "title": "Manager"}]


def test_an_update_keeps_what_an_administrator_changed_in_the_admin_console(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("henry", {"title": "Chief", "employee_number": "E-7"}, roles=["staff"])
        henry = google.user("henry@example.com")
        henry["organizations"].append({"type": "school", "name": "MIT"})
        henry["phones"] = [{"type": "mobile", "value": "+1 555 0100"}]
        henry["externalIds"].append({"type": "custom", "customType": "badge", "value": "B-9"})
        henry["primaryEmail"] = "h.ford@example.com"
        result = svc.update_user(
            "henry", {"title": "CEO", "phone_number": "+1 555 0199", "employee_number": "E-8"}
        )
        assert result.outbound.ok, result.outbound.to_dict()
        after = google.users[henry["id"]]
        assert after["primaryEmail"] == "h.ford@example.com"  # the administrator's rename
        assert after["organizations"] == [
            {"type": "work", "title": "CEO"},
            {"type": "school", "name": "MIT"},
        ]
        assert after["phones"] == [
            {"type": "work", "value": "+1 555 0199"},
            {"type": "mobile", "value": "+1 555 0100"},
        ]
        local_id = svc.get_user("henry").id
        assert after["externalIds"] == [
            {"type": "organization", "value": "E-8"},
            {"type": "custom", "customType": "idprov", "value": local_id},
            {"type": "custom", "customType": "badge", "value": "B-9"},
        ]
        assert "primaryEmail" not in google.api_requests("PATCH")[-1].body

        assert svc.update_user("henry", {}, unset=["phone_number", "title"]).outbound.ok
        after = google.users[henry["id"]]
        assert after["phones"] == [{"type": "mobile", "value": "+1 555 0100"}]
        assert after["organizations"] == [{"type": "school", "name": "MIT"}]
        assert after["primaryEmail"] == "h.ford@example.com"


def test_an_update_of_fields_that_are_not_lists_reads_nothing_first(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("ida", {"given_name": "Ida"}, roles=["staff"])
        google.requests.clear()
        assert svc.update_user("ida", {"given_name": "Ada"}).outbound.ok
    assert [r.method for r in google.api_requests()] == ["PATCH"]
    assert google.api_requests("PATCH")[0].body == {"name": {"givenName": "Ada"}}


def test_an_account_an_administrator_suspended_stays_so_after_leaving_scope(tmp_path, google):
    with service(tmp_path, google, extra="    deprovision: disable\n    push_roles: none\n") as svc:
        svc.add_role("staff")
        svc.add_user("pam", {}, roles=["staff"])
        google.user("pam@example.com")["suspended"] = True  # the Admin console
        result = svc.unassign("staff", ["pam"])
        assert ("user", "already disabled at the target", "skipped") in outcome(result)
        assert ("user", "disable", "done") not in outcome(result)
        assert svc.assign("staff", ["pam"]).outbound.ok
    assert google.user("pam@example.com")["suspended"] is True
    assert not [r for r in google.api_requests("PATCH") if "suspended" in r.body]


def test_what_idprov_suspended_it_unsuspends(tmp_path, google):
    with service(tmp_path, google, extra="    deprovision: disable\n") as svc:
        svc.add_role("staff")
        svc.add_user("sid", {}, roles=["staff"])
        svc.unassign("staff", ["sid"])
        assert google.user("sid@example.com")["suspended"] is True
        svc.assign("staff", ["sid"])
    assert google.user("sid@example.com")["suspended"] is False


def test_passwords_go_on_create_and_passwd_with_send_password(tmp_path, google):
    with service(tmp_path, google, options="      send_password: true\n") as svc:
        svc.add_role("staff")
        svc.add_user("tess", {}, roles=["staff"], password="Correct-Horse-1")
        uid = google.user("tess@example.com")["id"]
        assert google.passwords[uid] == ["Correct-Horse-1"]
        result = svc.set_password("tess", "Battery-Staple-2")
        assert result.outbound.ok and result.outbound.idps["google"].count("done") == 1
    assert google.passwords[uid] == ["Correct-Horse-1", "Battery-Staple-2"]


def test_membership_changes_resume_after_transient_errors_without_duplicates(tmp_path, google):
    with service(tmp_path, google, extra="    push_roles: all\n    max_concurrency: 4\n") as svc:
        svc.add_role("staff")
        svc.add_role("team")
        names = [f"m{i:03d}" for i in range(100)]
        for name in names:
            svc.add_user(name, {}, roles=["staff"])
        group_id = google.group("team@example.com")["id"]
        before = len(google.api_requests("POST"))
        google.fail_next(503, count=20, method="POST", path=f"/groups/{group_id}/members")
        result = svc.assign("team", names)
        assert result.outbound.ok, result.outbound.to_dict()
        member_posts = google.api_requests("POST")[before:]
    assert len(google.member_emails("team@example.com")) == 100
    assert [r.status for r in member_posts].count(409) == 0  # resumed, never restarted
    assert len(member_posts) == 120  # 100, and the 20 that met a 503 once more


def test_already_a_member_and_not_a_member_are_done(tmp_path, google):
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("ida", {}, roles=["staff"])
        group = google.group("staff@example.com")
        conn = svc.connector("google")
        uid = google.user("ida@example.com")["id"]
        conn.change_members(group["id"], [uid], [])  # already a member: no error
        del google.members[group["id"]][uid]
        conn.change_members(group["id"], [], [uid])  # not a member: no error


def test_an_account_idprov_suspended_with_a_lost_reply_is_unsuspended_when_it_comes_back(
    tmp_path, google
):
    """A suspend whose reply was lost is tried again; the retry reads the account
    suspended by idprov's own first request, which is not an administrator's doing:
    back in scope, the user must be unsuspended (it stayed locked out)."""
    with service(tmp_path, google, extra="    deprovision: disable\n") as svc:
        svc.add_role("staff")
        svc.add_user("sid", {}, roles=["staff"])
        google.fail_next(503, method="PATCH", after_apply=True)  # made, its reply lost
        result = svc.unassign("staff", ["sid"])
        assert ("user", "disable", "done") in outcome(result)
        assert google.user("sid@example.com")["suspended"] is True
        svc.assign("staff", ["sid"])
    assert google.user("sid@example.com")["suspended"] is False


# ---------------------------------------------------------------- sync --verify
def test_verify_reports_changed_suspended_and_removed_and_repair_restores(tmp_path, google):
    """`sync --verify` found nothing at Google: no drift() (a familyName changed in
    the Admin console went unreported), no suspended account in disabled_remotely, and
    groups failed the run ("cannot read groups")."""
    from idprov.provisioning.verify import repair, verify_idp

    google.members_page_limit = 2  # members.list pages are followed
    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        for name in ("bob", "carol", "dora"):
            svc.add_user(name, {"family_name": name.title(), "title": "Clerk"}, roles=["staff"])
        assert verify_idp(svc, "google")["repairs"] == []  # no false drift
        google.user("alice@example.com")["name"]["familyName"] = "Changed"  # Admin console
        google.user("bob@example.com")["suspended"] = True
        group = google.group("staff@example.com")
        del google.members[group["id"]][google.user("carol@example.com")["id"]]

        report = verify_idp(svc, "google")
        assert report["errors"] == [] and report["checked"] == 4
        assert report["changed_remotely"] == [{"user": "alice", "attributes": ["name.familyName"]}]
        assert report["disabled_remotely"] == ["bob"]
        assert report["groups_checked"] == 1
        assert report["groups_changed_remotely"] == [
            {"group": "staff", "missing_members": ["carol"]}
        ]

        assert repair(svc, {"google": report}).ok
        assert google.user("alice@example.com")["name"]["familyName"] == "Liddell"
        assert "carol@example.com" in google.member_emails("staff@example.com")
        assert google.user("bob@example.com")["suspended"] is True  # an administrator's
        assert verify_idp(svc, "google")["repairs"] == []


def test_repair_of_an_account_suspended_and_changed_keeps_it_suspended(tmp_path, google):
    """An administrator suspended bob and changed his family name: the repair sends the
    name back and nothing else (it forgot what was sent, and the push sent the whole
    account, `suspended: false` with it)."""
    from idprov.provisioning.verify import repair, verify_idp

    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {"family_name": "Bob", "title": "Clerk"}, roles=["staff"])
        bob = google.user("bob@example.com")
        bob["suspended"] = True
        bob["name"]["familyName"] = "Changed"
        report = verify_idp(svc, "google")
        assert report["disabled_remotely"] == ["bob"]
        assert repair(svc, {"google": report}).ok
        assert bob["suspended"] is True and bob["name"]["familyName"] == "Bob"
        [patch] = [r for r in google.requests if r.method == "PATCH"]
        assert patch.body == {"name": {"familyName": "Bob"}}


def test_repair_keeps_an_administrator_s_rename(tmp_path, google):
    """bob renamed robert at Google (the id follows him) and his name changed: the
    repair sends the name back, never the old primary email."""
    from idprov.provisioning.verify import repair, verify_idp

    with service(tmp_path, google) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {"family_name": "Bob", "title": "Clerk"}, roles=["staff"])
        bob = google.user("bob@example.com")
        bob["primaryEmail"] = "robert@example.com"
        bob["name"]["familyName"] = "Changed"
        assert repair(svc, {"google": verify_idp(svc, "google")}).ok
        assert bob["primaryEmail"] == "robert@example.com"
        assert bob["name"]["familyName"] == "Bob"


def test_verify_finds_and_repair_clears_what_google_holds_where_idprov_holds_none(
    cli, tmp_path, google
):
    """dora's title is idprov's, she has no department or work phone here; in the Admin
    console someone set a department on her work organization and a work phone, and a
    home phone idprov does not map. `sync --verify` names the two mapped ones; the
    repair clears them (the lists with what else Google holds) and keeps the rest."""
    from tests.outbound_helpers import make_config_text

    idp = google_idp(google, f"file:{tmp_path / 'google-key.json'}")
    (tmp_path / "idprov.yaml").write_text(make_config_text(tmp_path, idp, ["google"]))
    cli("role", "add", "staff").ok()
    cli("user", "add", "dora", "-c", "family_name=Dee", "-c", "title=Clerk", "-r", "staff").ok()
    user = google.user("dora@example.com")
    [org] = user["organizations"]
    org["department"] = "Ops"
    user["phones"] = [{"type": "work", "value": "+1 555 0100"}, {"type": "home", "value": "+1 2"}]
    drift = cli("sync", "--verify", "--json").ok().json()["drift"]["google"]
    assert drift["changed_remotely"] == [
        {
            "user": "dora",
            "attributes": [
                'phones[type eq "work"].value',
                'organizations[type eq "work"].department',
            ],
        }
    ]
    before = len(google.api_requests("PATCH"))
    cli("sync", "--verify", "--repair").ok()
    [patch] = google.api_requests("PATCH")[before:]
    assert sorted(patch.body) == ["organizations", "phones"]
    user = google.user("dora@example.com")
    assert [(o["type"], o.get("title"), o.get("department")) for o in user["organizations"]] == [
        ("work", "Clerk", None)
    ]
    assert user["phones"] == [{"type": "home", "value": "+1 2"}]
    assert cli("sync", "--verify", "--json").ok().json()["drift"]["google"]["repairs"] == []
