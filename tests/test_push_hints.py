"""A push that Salesforce or Google refuses tells the user what to do, not only the
target's own words: the documented error codes (Salesforce's ``errorCode`` /
``statusCode``, the Directory API's ``reason``) get the fix in the operation's error
and as the error's hint."""

from __future__ import annotations

import httpx
import pytest

from idprov.connectors.base import CredentialsRefused, RemoteConflict, TargetError, Throttled
from idprov.connectors.google import raise_google_error
from idprov.connectors.salesforce_api import raise_salesforce_error, record_error
from tests.peers.salesforce import SalesforceOrg
from tests.test_connector_google import google, key_file
from tests.test_connector_google import service as google_service
from tests.test_connector_salesforce import org, push_many
from tests.test_connector_salesforce import service as sf_service

__all__ = ["google", "key_file", "org"]  # the fixtures, used here


def failed(result, idp: str, kind: str = "user"):
    [op] = [o for o in result.outbound.idps[idp].operations if o.kind == kind]
    assert op.outcome == "failed", op
    return op


# ---------------------------------------------------------------- Salesforce
def test_no_license_left_says_how_to_free_one(tmp_path, org: SalesforceOrg):
    org.licenses = 2  # the integration user holds one
    with sf_service(tmp_path, org) as svc:
        svc.add_role("staff")
        assert svc.add_user("ann", {}, roles=["staff"]).outbound.ok
        op = failed(svc.add_user("ben", {}, roles=["staff"]), "sf")
    assert "LICENSE_LIMIT_EXCEEDED" in op.error  # Salesforce's words stay
    assert "Setup > Company Information" in op.error and "options.profile" in op.error
    assert "ben@example.com" not in org.users()


def test_no_license_left_inside_a_collection_says_it_too(tmp_path, org: SalesforceOrg):
    org.licenses = 11  # the integration user and 10 of the 20
    result, _ = push_many(tmp_path, org, 20)
    failed = [o for o in result.outbound.idps["sf"].operations if o.outcome == "failed"]
    users = [o for o in failed if o.kind == "user"]
    assert len(users) == 10 and len(org.users()) == 10
    assert all('"statusCode": "LICENSE_LIMIT_EXCEEDED"' in o.error for o in users)
    assert all("Setup > Company Information" in o.error for o in users)


@pytest.mark.parametrize(
    ("status", "code", "words", "kind"),
    [
        (400, "LICENSE_LIMIT_EXCEEDED", "Company Information", TargetError),
        (400, "INVALID_CROSS_REFERENCE_KEY", "options.roles", TargetError),
        (400, "FIELD_INTEGRITY_EXCEPTION", "options.profile", TargetError),
        (400, "INSUFFICIENT_ACCESS_OR_READONLY", "Assign Permission Sets", TargetError),
        (403, "INSUFFICIENT_ACCESS_OR_READONLY", "Assign Permission Sets", CredentialsRefused),
        (403, "REQUEST_LIMIT_EXCEEDED", "System Overview", Throttled),
    ],
)
def test_each_documented_salesforce_code_gets_its_fix(status, code, words, kind):
    reply = httpx.Response(status, json=[{"message": "m", "errorCode": code, "fields": []}])
    with pytest.raises(TargetError) as info:
        raise_salesforce_error(reply, "create user x")
    assert type(info.value) is kind
    assert words in info.value.hint and info.value.message.endswith(info.value.hint)
    assert f'"errorCode": "{code}"' in info.value.message
    one = record_error({"errors": [{"statusCode": code, "message": "m"}]}, "add x to y")
    assert words in (one.hint or "") and one.message.endswith(one.hint)


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        # the 24-hour allowance: retries and a lower rate_limit cannot help
        (403, "REQUEST_LIMIT_EXCEEDED", "24 hours"),
        (403, "REQUEST_LIMIT_EXCEEDED", "Setup > Company Information"),
        # the same code for too many long requests at once
        (403, "REQUEST_LIMIT_EXCEEDED", "max_concurrency"),
        # no permission lets the integration user edit an administrator or a user above it
        (403, "INSUFFICIENT_ACCESS_OR_READONLY", "role hierarchy"),
        (400, "INSUFFICIENT_ACCESS_OR_READONLY", "System Administrator"),
    ],
)
def test_a_salesforce_hint_names_each_cause_of_its_code(status, code, words):
    """REQUEST_LIMIT_EXCEEDED said only "idprov tries again by itself; if it lasts,
    lower rate_limit", which cannot help once the org's 24-hour allowance is used up;
    INSUFFICIENT_ACCESS_OR_READONLY named only permissions, which do not help when the
    user changed is an administrator or above the integration user's role."""
    reply = httpx.Response(status, json=[{"message": "m", "errorCode": code, "fields": []}])
    with pytest.raises(TargetError) as info:
        raise_salesforce_error(reply, "update user x")
    assert words in (info.value.hint or "")


def test_a_code_without_a_documented_fix_and_a_conflict_keep_their_words():
    reply = httpx.Response(400, json=[{"message": "m", "errorCode": "INVALID_FIELD"}])
    with pytest.raises(TargetError) as info:
        raise_salesforce_error(reply, "x")
    assert info.value.hint is None and info.value.message.endswith("]")
    taken = httpx.Response(400, json=[{"message": "m", "errorCode": "DUPLICATE_USERNAME"}])
    with pytest.raises(RemoteConflict) as conflict:
        raise_salesforce_error(taken, "x")
    assert conflict.value.hint is None


# ---------------------------------------------------------------- Google
def test_a_domain_google_does_not_know_says_to_check_options_domain(tmp_path, google):
    with google_service(tmp_path, google, options="      domain: elsewhere.example\n") as svc:
        svc.add_role("staff")
        op = failed(svc.add_user("ida", {"family_name": "I"}, roles=["staff"]), "google")
    assert "Domain not found." in op.error
    assert "check options.domain" in op.error and "Account > Domains" in op.error


@pytest.mark.parametrize(
    ("status", "reason", "words", "kind"),
    [
        (400, "invalid", "check what the identity provider maps", TargetError),
        (400, "notFound", "options.domain", TargetError),
        (403, "accessNotConfigured", "enable the Admin SDK API", CredentialsRefused),
        (403, "rateLimitExceeded", "Quotas", Throttled),
        (403, "userRateLimitExceeded", "Quotas", Throttled),
    ],
)
def test_each_documented_google_reason_gets_its_fix(tmp_path, google, status, reason, words, kind):
    with google_service(tmp_path, google) as svc:
        conn = svc.connector("google")
        google.fail_next(status, reason, path="/users/x%40example.com")
        with pytest.raises(TargetError) as info:
            conn.read_user("x@example.com")
    assert type(info.value) is kind
    assert words in (info.value.hint or "") and info.value.message.endswith(info.value.hint)


def test_a_duplicate_and_a_plain_forbidden_keep_their_handling():
    def reply(status: int, reason: str) -> httpx.Response:
        body = {"error": {"code": status, "message": "m", "errors": [{"reason": reason}]}}
        return httpx.Response(status, json=body)

    with pytest.raises(RemoteConflict):
        raise_google_error(reply(409, "duplicate"), "x")
