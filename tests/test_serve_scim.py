"""`idprov serve` as SCIM clients see it: a real uvicorn server on loopback (in a
thread), real HTTP, the core service and SQLite behind it. What scim2-tester does not
check is checked here: filters, paging, sorting, Bulk, ETags, uniqueness, membership
after deletes, errors with their RFC 7644 status and scimType, tokens, the access log,
concurrency, and the outbound push to a real SCIM server before the response."""

from __future__ import annotations

import io
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from idprov.config import Config, load_text
from idprov.inbound.scim_server import InboundServer
from idprov.inbound.serve_http import base_url, bind, uvicorn_server
from idprov.provisioning.service import IdentityService

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
CRM_TOKEN = "crm-token-5f0c1d2e"
HR_TOKEN = "hr-token-9a8b7c6d"
SCIM_JSON = {"Content-Type": "application/scim+json"}


CRM_SEES_PARTNERS = """
    jit:
      - idp: partners-sso
        userstore: PARTNERS"""
"""``crm_extra`` of :func:`serve_config`: crm's JIT logins land in PARTNERS, so its
token sees and changes the users of both userstores (PARTNERS's as ``PARTNERS/x``)."""


def serve_config(
    tmp_path: Path, idps: str = "", crm_idps: str = "[]", crm_extra: str = ""
) -> Config:
    """Two applications with tokens: crm lands in PRIMARY, hr in PARTNERS (each token
    sees its own application's userstore only); the embedded default policies."""
    return load_text(
        f"""
version: 1
data_dir: {tmp_path / "data"}
claims:
  - name: badge_id
userstores:
  - domain: PRIMARY
  - domain: PARTNERS
    path: {tmp_path / "data" / "partners.db"}
identity_providers:{idps or " []"}
applications:
  - name: crm
    identity_providers: {crm_idps}
    inbound_token: env:CRM_TOKEN{crm_extra}
  - name: hr
    userstore: PARTNERS
    inbound_token: env:HR_TOKEN
""",
        "serve-test.yaml",
    )


@dataclass
class Inbound:
    """A running `idprov serve` and a client holding crm's token."""

    url: str
    server: InboundServer
    log: io.StringIO
    stack: ExitStack
    client: httpx.Client = field(init=False)

    def as_token(self, token: str, verify: Any = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=verify)
        return self.stack.enter_context(client)

    def local(self) -> IdentityService:
        """A service of the test's own on the same configuration, to look behind."""
        return self.stack.enter_context(IdentityService(self.server.config))


@contextmanager
def running(config: Config, tls: tuple[str, str] | None = None, **kwargs: Any) -> Iterator[Inbound]:
    """Serve ``config`` on a free loopback port in a thread until the block ends
    (over HTTPS with ``tls``, a certificate and key file)."""
    log = io.StringIO()
    server = InboundServer(config, access_log=log, **kwargs)
    sock = bind("127.0.0.1", 0)
    url = base_url(sock, tls=tls is not None)
    certfile, keyfile = tls or (None, None)
    uv = uvicorn_server(server, certfile=certfile, keyfile=keyfile)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert uv.started, "idprov serve did not start"
    try:
        with ExitStack() as stack:
            inbound = Inbound(url, server, log, stack)
            verify = ssl.create_default_context(cafile=tls[0]) if tls else True
            inbound.client = inbound.as_token(CRM_TOKEN, verify=verify)
            yield inbound
    finally:
        uv.should_exit = True
        thread.join(15)
        server.close()
        sock.close()


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)


@pytest.fixture
def inbound(tmp_path: Path, tokens: None) -> Iterator[Inbound]:
    with running(serve_config(tmp_path)) as served:
        yield served


def new_user(client: httpx.Client, user_name: str, **attributes: Any) -> dict[str, Any]:
    body = {"schemas": [USER], "userName": user_name, **attributes}
    response = client.post("/Users", json=body, headers=SCIM_JSON)
    assert response.status_code == 201, response.text
    return response.json()


def new_group(client: httpx.Client, name: str, members: Sequence[str] = ()) -> dict[str, Any]:
    body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
    response = client.post("/Groups", json=body, headers=SCIM_JSON)
    assert response.status_code == 201, response.text
    return response.json()


def patch(
    client: httpx.Client, path: str, *operations: dict[str, Any], **kw: Any
) -> httpx.Response:
    body = {"schemas": [PATCH_OP], "Operations": list(operations)}
    return client.patch(path, json=body, headers={**SCIM_JSON, **kw.get("headers", {})})


def scim_error(response: httpx.Response, status: int, scim_type: str | None = None) -> str:
    """Assert an RFC 7644 error body with this status and scimType; returns the detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    return body.get("detail", "")


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["userName"] for r in response.json().get("Resources", [])]


# ---------------------------------------------------------------- discovery, tokens
def test_discovery_is_open_and_announces_what_idprov_keeps(inbound):
    spc = httpx.get(f"{inbound.url}/ServiceProviderConfig", timeout=30)
    assert spc.status_code == 200
    config = spc.json()
    assert config["bulk"] == {"supported": True, "maxOperations": 1000, "maxPayloadSize": 1048576}
    assert all(config[k]["supported"] for k in ("patch", "filter", "sort", "etag"))
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    schema = inbound.client.get(f"/Schemas/{USER}").json()
    attrs = {a["name"]: a for a in schema["attributes"]}
    assert attrs["userName"]["mutability"] == "readWrite"
    assert attrs["emails"]["mutability"] == "readWrite"
    assert (attrs["ims"]["mutability"], attrs["ims"]["returned"]) == ("readOnly", "never")
    types = inbound.client.get("/ResourceTypes").json()["Resources"]
    assert {t["name"] for t in types} == {"User", "Group"}


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {CRM_TOKEN}", f"Bearer {CRM_TOKEN}x"]
)
def test_missing_or_wrong_token_is_401_with_a_challenge(inbound, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{inbound.url}/Users", headers=headers, timeout=30)
    scim_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = httpx.post(
        f"{inbound.url}/Users", json={"userName": "x"}, headers=headers, timeout=30
    )
    assert response.status_code == 401
    assert inbound.local().list_users(query()).total == 0


def query() -> Any:
    from idprov.model import UserQuery

    return UserQuery(limit=None)


def test_the_token_decides_the_application_and_its_userstore(inbound):
    hr = inbound.as_token(HR_TOKEN)
    created = new_user(hr, "bob")
    assert created["userName"] == "bob"
    local = inbound.local()
    assert local.get_user("PARTNERS/bob").id == created["id"]
    # crm's userstore is PRIMARY: bob of PARTNERS is not there for its token
    assert inbound.client.get(f"/Users/{created['id']}").status_code == 404
    found = inbound.client.get("/Users", params={"filter": 'userName eq "PARTNERS/bob"'})
    assert names(found) == []
    entries = local.audit_log(audit_query("user.add"))
    assert [(e.application, e.target) for e in entries] == [("hr", "PARTNERS/bob")]


def audit_query(action: str) -> Any:
    from idprov.provisioning.state import AuditQuery

    return AuditQuery(action=action)


# ---------------------------------------------------------------- mapping
def test_user_attributes_map_to_claims_both_ways(inbound):
    created = new_user(
        inbound.client,
        "alice",
        externalId="hr-42",
        name={"givenName": "Alice", "familyName": "Liddell", "middleName": "P"},
        displayName="Alice L.",
        title="CTO",
        emails=[
            {"value": "alice@example.com", "type": "work", "primary": True},
            {"value": "al@home.example", "type": "home"},
        ],
        phoneNumbers=[{"value": "+1 555 0100", "type": "work"}, {"value": "+1 555 0199"}],
        addresses=[{"type": "work", "locality": "Oxford", "country": "UK", "formatted": "x"}],
        password="correct-horse",
        **{
            "schemas": [USER, ENTERPRISE],
            ENTERPRISE: {"employeeNumber": "42", "department": "R&D", "costCenter": "CC1"},
        },
    )
    user = inbound.local().get_user("alice")
    assert user.claims == {
        "active": "true",
        "given_name": "Alice",
        "family_name": "Liddell",
        "middle_name": "P",
        "display_name": "Alice L.",
        "title": "CTO",
        "email": "alice@example.com",
        "home_email": "al@home.example",
        "phone_number": "+1 555 0100",
        "mobile": "+1 555 0199",
        "locality": "Oxford",
        "country": "UK",
        "employee_number": "42",
        "department": "R&D",
        "cost_center": "CC1",
    }
    assert inbound.local().verify_password("alice", "correct-horse")
    assert "password" not in created
    assert created["externalId"] == "hr-42"
    assert created["emails"] == [
        {"value": "alice@example.com", "type": "work"},
        {"value": "al@home.example", "type": "home"},
    ]
    assert created["phoneNumbers"][1] == {"value": "+1 555 0199", "type": "mobile"}
    assert created[ENTERPRISE] == {"employeeNumber": "42", "department": "R&D", "costCenter": "CC1"}
    assert created["active"] is True


def test_a_home_email_is_kept_as_home_and_a_patch_of_it_changes_that_one(inbound):
    """A ``home`` address has a claim of its own (``home_email``): a filter or a PATCH
    path on ``type eq "home"`` finds it, and changes only it (kept as ``other``, a
    PATCH of it matched nothing and, with the unmatched-filter rule, added another
    address each time). A type with no claim is refused, as a phone's is."""
    alice = new_user(
        inbound.client,
        "alice",
        emails=[
            {"value": "a@x.example", "type": "work"},
            {"value": "h@x.example", "type": "home"},
            {"value": "o@x.example", "type": "other"},
        ],
    )
    path = f"/Users/{alice['id']}"
    for value in ("h2@x.example", "h3@x.example"):
        home = {"op": "replace", "path": 'emails[type eq "home"].value', "value": value}
        assert patch(inbound.client, path, home).status_code in (200, 204)
    claims = inbound.local().get_user("alice").claims
    assert (claims["home_email"], claims["emails"]) == ("h3@x.example", ["o@x.example"])
    assert inbound.client.get(path).json()["emails"] == [
        {"value": "a@x.example", "type": "work"},
        {"value": "h3@x.example", "type": "home"},
        {"value": "o@x.example", "type": "other"},
    ]
    found = inbound.client.get(
        "/Users", params={"filter": 'emails[type eq "home" and value eq "h3@x.example"]'}
    )
    assert [u["id"] for u in found.json()["Resources"]] == [alice["id"]]
    gone = {"op": "remove", "path": 'emails[type eq "home"]'}
    assert patch(inbound.client, path, gone).status_code in (200, 204)
    claims = inbound.local().get_user("alice").claims
    assert "home_email" not in claims and claims["emails"] == ["o@x.example"]
    body = {"schemas": [USER], "userName": "bob", "emails": [{"value": "b@x", "type": "pager"}]}
    response = inbound.client.post("/Users", json=body, headers=SCIM_JSON)
    assert "'pager'" in scim_error(response, 400, "invalidValue")


def test_put_replaces_mapped_claims_and_keeps_the_others(inbound, cli):
    alice = new_user(inbound.client, "alice", title="CTO", nickName="Al")
    local = inbound.local()
    local.update_user("alice", {"badge_id": "b-1"})  # not a SCIM attribute: PUT keeps it
    body = {"schemas": [USER], "userName": "alice", "displayName": "A"}
    response = inbound.client.put(f"/Users/{alice['id']}", json=body, headers=SCIM_JSON)
    assert response.status_code == 200, response.text
    claims = local.get_user("alice").claims
    assert claims == {"display_name": "A", "badge_id": "b-1", "active": "true"}
    assert "title" not in response.json() and response.json()["active"] is True


def test_a_put_that_leaves_active_out_keeps_a_disabled_user_disabled(inbound):
    """A PUT without ``active`` removed the claim, and a user without it is enabled:
    a disabled account came back. Left out, ``active`` is kept as it is."""
    bob = new_user(inbound.client, "bob", active=False)
    body = {"schemas": [USER], "userName": "bob", "title": "Ex"}
    response = inbound.client.put(f"/Users/{bob['id']}", json=body, headers=SCIM_JSON)
    assert response.status_code == 200 and response.json()["active"] is False
    assert inbound.local().get_user("bob").claims["active"] == "false"


def test_a_put_without_active_applied_again_keeps_the_active_of_the_new_version(
    inbound, monkeypatch
):
    """Re-applied after another request disabled the user between its read and its
    write, a PUT without ``active`` wrote back the ``active`` of its first read."""
    from idprov.inbound.scim.storage import IdprovStorage

    bob = new_user(inbound.client, "bob", title="A")
    local = inbound.local()
    original = IdprovStorage._update_user
    calls: list[int] = []

    def disabled_meanwhile(self, user_id, given, version):
        calls.append(1)
        if len(calls) == 1:
            local.update_user("bob", {"active": "false"})
        return original(self, user_id, given, version)

    monkeypatch.setattr(IdprovStorage, "_update_user", disabled_meanwhile)
    body = {"schemas": [USER], "userName": "bob", "title": "B"}
    response = inbound.client.put(f"/Users/{bob['id']}", json=body, headers=SCIM_JSON)
    assert response.status_code == 200 and len(calls) == 2
    claims = inbound.local().get_user("bob").claims
    assert (claims["title"], claims["active"]) == ("B", "false")


def test_phone_types_without_a_claim_are_refused_not_dropped(inbound):
    body = {"schemas": [USER], "userName": "x1", "phoneNumbers": [{"value": "1", "type": "fax"}]}
    detail = scim_error(inbound.client.post("/Users", json=body), 400, "invalidValue")
    assert "fax" in detail


def test_policy_refusals_are_invalid_value(inbound):
    body = {"schemas": [USER], "userName": "x1", "password": "short"}
    scim_error(inbound.client.post("/Users", json=body), 400, "invalidValue")
    body = {"schemas": [USER], "userName": "has space"}
    scim_error(inbound.client.post("/Users", json=body), 400, "invalidValue")
    body = {"schemas": [USER], "userName": "x2", "emails": [{"value": "not-an-email"}]}
    scim_error(inbound.client.post("/Users", json=body), 400, "invalidValue")


# ---------------------------------------------------------------- errors
def test_bad_requests_get_the_rfc_status_and_scim_type(inbound):
    client = inbound.client
    scim_error(
        client.post("/Users", content=b'{"userName": ', headers=SCIM_JSON), 400, "invalidSyntax"
    )
    body = {"schemas": [USER], "userName": "x", "favouriteColour": "blue"}
    scim_error(client.post("/Users", json=body), 400, "invalidSyntax")
    body = {"schemas": [USER], "userName": "x", "emails": [{"value": "a@b.c", "bogus": 1}]}
    scim_error(client.post("/Users", json=body), 400, "invalidSyntax")
    body = {"schemas": [USER]}
    assert client.post("/Users", json=body).status_code == 400
    response = client.post("/Users", content=b"userName=x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    scim_error(client.get("/Users/no-such-id"), 404)
    scim_error(client.get("/Nothing"), 404)
    assert client.put("/Schemas", json={}).status_code == 405
    scim_error(client.get("/Users", params={"filter": 'userName lk "x"'}), 400, "invalidFilter")
    scim_error(client.get("/Users", params={"filter": 'shoeSize eq "9"'}), 400, "invalidFilter")
    assert inbound.local().list_users(query()).total == 0


def test_oversized_bodies_are_413_whether_announced_or_streamed(tmp_path, tokens):
    with running(serve_config(tmp_path), max_body=4096) as inbound:
        big = {"schemas": [USER], "userName": "x", "title": "t" * 5000}
        response = inbound.client.post("/Users", json=big)
        assert response.status_code == 413
        assert response.json()["schemas"] == [ERROR]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield json.dumps(big).encode()

        response = inbound.client.post("/Users", content=chunks(), headers=SCIM_JSON)
        assert response.status_code == 413
        assert inbound.local().list_users(query()).total == 0


def test_patch_errors(inbound):
    alice = new_user(inbound.client, "alice")
    path = f"/Users/{alice['id']}"
    scim_error(
        patch(inbound.client, path, {"op": "add", "path": "shoeSize", "value": 9}),
        400,
        "invalidPath",
    )
    scim_error(
        patch(inbound.client, path, {"op": "replace", "path": "id", "value": "x"}),
        400,
        "mutability",
    )
    new_user(inbound.client, "bob")
    scim_error(
        patch(inbound.client, path, {"op": "replace", "path": "userName", "value": "BOB"}),
        409,
        "uniqueness",
    )
    scim_error(
        patch(inbound.client, path, {"op": "replace", "path": "userName", "value": "a b"}),
        400,
        "invalidValue",
    )
    scim_error(
        patch(inbound.client, path, {"op": "replace", "path": "userName", "value": "HR/alice"}),
        400,
        "invalidValue",
    )
    scim_error(
        patch(inbound.client, path, {"op": "jump", "path": "title", "value": "x"}),
        400,
        "invalidValue",
    )
    response = patch(inbound.client, path, {"op": "replace", "path": "userName", "value": "alice"})
    assert response.status_code in (200, 204)


# ---------------------------------------------------------------- uniqueness, ETags
def test_user_and_group_names_are_unique_case_insensitively(inbound):
    new_user(inbound.client, "alice")
    body = {"schemas": [USER], "userName": "ALICE"}
    detail = scim_error(inbound.client.post("/Users", json=body), 409, "uniqueness")
    assert "already exists" in detail and "change it with PUT or PATCH" in detail
    assert "idprov user update" not in detail  # the CLI is the administrator's, not the client's
    new_group(inbound.client, "staff")
    body = {"schemas": [GROUP], "displayName": "Staff"}
    scim_error(inbound.client.post("/Groups", json=body), 409, "uniqueness")


def test_a_name_that_collides_is_found_by_the_filter_a_client_matches_with(inbound):
    """Entra and Okta look a name up (``userName eq``) before they create it: whatever
    a create would collide with (409), that lookup finds, or the client would POST,
    get a 409, and fail the same way every cycle."""
    client = inbound.client
    strauss = new_user(client, "strauß@example.com")
    body = {"schemas": [USER], "userName": "STRAUSS@example.com"}
    scim_error(client.post("/Users", json=body, headers=SCIM_JSON), 409, "uniqueness")
    found = client.get("/Users", params={"filter": 'userName eq "STRAUSS@example.com"'}).json()
    assert [u["id"] for u in found["Resources"]] == [strauss["id"]]
    staff = new_group(client, "Sales EMEA")
    found = client.get("/Groups", params={"filter": 'displayName eq "sales emea"'}).json()
    assert [g["id"] for g in found["Resources"]] == [staff["id"]]
    both = 'userName eq "STRAUSS@example.com" and userName eq "nobody"'
    assert client.get("/Users", params={"filter": both}).json()["totalResults"] == 0


def test_names_are_kept_as_sent_or_refused_never_trimmed(inbound):
    """A name with spaces around it was trimmed: the client's own lookup of what it
    sent then found nothing while a create of it was a 409, for ever. The store's name
    policy now answers, as for a name typed at the command line."""
    client = inbound.client
    for path, body in [
        ("/Users", {"schemas": [USER], "userName": "jane.doe@example.com "}),
        ("/Groups", {"schemas": [GROUP], "displayName": " Sales EMEA"}),
    ]:
        detail = scim_error(client.post(path, json=body, headers=SCIM_JSON), 400, "invalidValue")
        assert "pattern" in detail
    assert client.get("/Users").json()["totalResults"] == 0
    assert client.get("/Groups").json()["totalResults"] == 0


def test_etags_and_if_match(inbound):
    alice = new_user(inbound.client, "alice")
    path = f"/Users/{alice['id']}"
    got = inbound.client.get(path)
    etag = got.headers["ETag"]
    assert etag == alice["meta"]["version"] and etag.startswith('W/"')
    assert inbound.client.get(path, headers={"If-None-Match": etag}).status_code == 304
    ok = patch(
        inbound.client,
        path,
        {"op": "add", "path": "title", "value": "CTO"},
        headers={"If-Match": etag},
    )
    assert ok.status_code in (200, 204)
    newer = inbound.client.get(path).headers["ETag"]
    assert newer != etag
    stale = patch(
        inbound.client,
        path,
        {"op": "add", "path": "title", "value": "CEO"},
        headers={"If-Match": etag},
    )
    scim_error(stale, 412)
    body = {"schemas": [USER], "userName": "alice"}
    scim_error(inbound.client.put(path, json=body, headers={"If-Match": etag}), 412)
    scim_error(inbound.client.delete(path, headers={"If-Match": etag}), 412)
    assert inbound.local().get_user("alice").claims["title"] == "CTO"
    assert inbound.client.delete(path, headers={"If-Match": newer}).status_code == 204


def test_the_version_follows_what_is_read_not_when(inbound):
    alice = new_user(inbound.client, "alice")
    path = f"/Users/{alice['id']}"
    before = inbound.client.get(path).headers["ETag"]
    assert inbound.client.get(path).headers["ETag"] == before
    new_group(inbound.client, "staff", [alice["id"]])  # groups is part of the user
    assert inbound.client.get(path).headers["ETag"] != before


# ---------------------------------------------------------------- search
@pytest.fixture
def people(inbound) -> Inbound:
    for name, title, email in [
        ("alice", "CTO", "alice@example.com"),
        ("bob", "Engineer", "bob@example.org"),
        ("carol", "Engineer", "carol@example.com"),
        ("dave", None, "dave@example.net"),
        ("erin", "Designer", None),
    ]:
        extra: dict[str, Any] = {"title": title} if title else {}
        if email:
            extra["emails"] = [{"value": email, "type": "work"}]
        new_user(inbound.client, name, **extra)
    return inbound


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('userName eq "BOB"', ["bob"]),
        ('userName ne "bob"', ["alice", "carol", "dave", "erin"]),
        ('title co "gine"', ["bob", "carol"]),
        ('userName sw "c"', ["carol"]),
        ('emails.value ew ".com"', ["alice", "carol"]),
        ("title pr", ["alice", "bob", "carol", "erin"]),
        ('userName gt "carol"', ["dave", "erin"]),
        ('userName ge "carol"', ["carol", "dave", "erin"]),
        ('userName lt "bob"', ["alice"]),
        ('userName le "bob"', ["alice", "bob"]),
        ('title eq "Engineer" and emails.value ew ".org"', ["bob"]),
        ('title eq "CTO" or title eq "Designer"', ["alice", "erin"]),
        ("not (title pr)", ["dave"]),
        ('emails[type eq "work" and value co "example.net"]', ["dave"]),
        ('emails[type eq "work"].value sw "carol"', ["carol"]),
        ('meta.resourceType eq "User" and userName eq "alice"', ["alice"]),
    ],
)
def test_filters(people, expression, expected):
    response = people.client.get("/Users", params={"filter": expression, "sortBy": "userName"})
    assert names(response) == expected
    assert response.json()["totalResults"] == len(expected)


def test_pagination_and_sorting(people):
    get = people.client.get
    page = get("/Users", params={"startIndex": 2, "count": 2, "sortBy": "userName"}).json()
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 2, 2)
    assert [r["userName"] for r in page["Resources"]] == ["bob", "carol"]
    plain = get("/Users", params={"startIndex": 4, "count": 10}).json()
    assert [r["userName"] for r in plain["Resources"]] == ["dave", "erin"]
    assert plain["totalResults"] == 5
    assert get("/Users", params={"count": 0}).json()["totalResults"] == 5
    down = get("/Users", params={"sortBy": "userName", "sortOrder": "descending"})
    assert names(down) == ["erin", "dave", "carol", "bob", "alice"]
    by_title = get("/Users", params={"sortBy": "title"})
    assert names(by_title)[:2] == ["alice", "erin"] and names(by_title)[-1] == "dave"


def test_attributes_and_excluded_attributes(people):
    only = people.client.get(
        "/Users", params={"attributes": "userName", "filter": 'userName eq "bob"'}
    )
    [bob] = only.json()["Resources"]
    assert set(bob) == {"schemas", "id", "userName"}
    less = people.client.get(f"/Users/{bob['id']}", params={"excludedAttributes": "emails,title"})
    assert "emails" not in less.json() and "title" not in less.json()
    assert less.json()["userName"] == "bob"


def test_search_with_post_at_the_root_and_per_type(people):
    new_group(people.client, "engineers")
    body = {"schemas": [SEARCH], "filter": 'title eq "Engineer"', "sortBy": "userName"}
    response = people.client.post("/Users/.search", json=body)
    assert names(response) == ["bob", "carol"]
    root = people.client.post("/.search", json={"schemas": [SEARCH], "count": 100}).json()
    kinds = sorted(r["meta"]["resourceType"] for r in root["Resources"])
    assert kinds == ["Group"] + ["User"] * 5
    by_id = people.client.post(
        "/.search", json={"schemas": [SEARCH], "filter": 'displayName eq "engineers"'}
    )
    assert [r["displayName"] for r in by_id.json()["Resources"]] == ["engineers"]


def test_external_ids_belong_to_the_application_that_set_them(inbound):
    alice = new_user(inbound.client, "alice", externalId="crm-1")
    found = inbound.client.get("/Users", params={"filter": 'externalId eq "crm-1"'})
    assert [r["id"] for r in found.json()["Resources"]] == [alice["id"]]
    hr = inbound.as_token(HR_TOKEN)
    seen = hr.get(f"/Users/{alice['id']}").json()
    assert "externalId" not in seen
    assert hr.get("/Users", params={"filter": 'externalId eq "crm-1"'}).json()["totalResults"] == 0


# ---------------------------------------------------------------- groups
def test_group_membership_follows_patches_and_user_deletes(inbound):
    client = inbound.client
    alice, bob, carol = (new_user(client, n)["id"] for n in ("alice", "bob", "carol"))
    staff = new_group(client, "staff", [alice, bob])
    path = f"/Groups/{staff['id']}"
    # Okta sends display with members: read-only, ignored
    added = patch(
        client,
        path,
        {"op": "add", "path": "members", "value": [{"value": carol, "display": "carol"}]},
    )
    assert added.status_code in (200, 204), added.text
    removed = patch(client, path, {"op": "remove", "path": f'members[value eq "{bob}"]'})
    assert removed.status_code in (200, 204), removed.text
    assert sorted(m["value"] for m in client.get(path).json()["members"]) == sorted([alice, carol])
    assert sorted(inbound.local().get_role("staff").members) == ["alice", "carol"]
    user = client.get(f"/Users/{alice}").json()
    assert user["groups"] == [
        {
            "value": staff["id"],
            "$ref": f"{inbound.url}/Groups/{staff['id']}",
            "display": "staff",
            "type": "direct",
        }
    ]
    assert client.delete(f"/Users/{alice}").status_code == 204
    assert [m["value"] for m in client.get(path).json()["members"]] == [carol]
    found = client.get("/Groups", params={"filter": f'members[value eq "{alice}"]'})
    assert found.json()["totalResults"] == 0
    assert client.delete(f"/Users/{alice}").status_code == 404


def test_group_rename_and_bad_members(inbound):
    client = inbound.client
    alice = new_user(client, "alice")["id"]
    staff = new_group(client, "staff", [alice])
    body = {"schemas": [GROUP], "displayName": "crew", "members": [{"value": alice}]}
    renamed = client.put(f"/Groups/{staff['id']}", json=body)
    assert renamed.status_code == 200 and renamed.json()["displayName"] == "crew"
    assert inbound.local().get_role("crew").members == ["alice"]
    body = {"schemas": [GROUP], "displayName": "ghosts", "members": [{"value": "no-such-user"}]}
    assert "no-such-user" in scim_error(client.post("/Groups", json=body), 400, "invalidValue")
    body = {
        "schemas": [GROUP],
        "displayName": "nested",
        "members": [{"value": staff["id"], "type": "Group"}],
    }
    scim_error(client.post("/Groups", json=body), 400, "invalidValue")
    assert [r.name for r in inbound.local().list_roles()] == ["crew"]
    partner = new_user(inbound.as_token(HR_TOKEN), "pat")["id"]
    body = {"schemas": [GROUP], "displayName": "mixed", "members": [{"value": partner}]}
    # a user of another application's userstore is not found: not named, not revealed
    refused = scim_error(client.post("/Groups", json=body), 400, "invalidValue")
    assert partner in refused and "PARTNERS" not in refused


# ---------------------------------------------------------------- bulk
def test_bulk_with_bulk_id_references(inbound):
    body = {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u1",
                "data": {"schemas": [USER], "userName": "alice"},
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u2",
                "data": {"schemas": [USER], "userName": "bob"},
            },
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g1",
                "data": {
                    "schemas": [GROUP],
                    "displayName": "staff",
                    "members": [{"value": "bulkId:u1"}, {"value": "bulkId:u2"}],
                },
            },
            {
                "method": "PATCH",
                "path": "/Users/bulkId:u1",
                "data": {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "add", "path": "title", "value": "CTO"}],
                },
            },
            {"method": "DELETE", "path": "/Users/bulkId:u2"},
        ],
    }
    response = inbound.client.post("/Bulk", json=body)
    assert response.status_code == 200, response.text
    statuses = [op["status"] for op in response.json()["Operations"]]
    assert statuses == ["201", "201", "201", "200", "204"]
    local = inbound.local()
    assert local.get_role("staff").members == ["alice"]
    assert local.get_user("alice").claims["title"] == "CTO"


def test_bulk_fail_on_errors_stops_after_that_many_errors(inbound):
    def create(bulk_id: str, name: str) -> dict[str, Any]:
        data = {"schemas": [USER], "userName": name}
        return {"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": data}

    operations = [create("1", "ann"), create("2", "ANN"), create("3", "ben")]
    body = {"schemas": [BULK], "failOnErrors": 1, "Operations": operations}
    response = inbound.client.post("/Bulk", json=body)
    assert response.status_code == 200, response.text
    operations = response.json()["Operations"]
    assert [op["status"] for op in operations] == ["201", "409"]
    assert operations[1]["response"]["scimType"] == "uniqueness"
    assert [u.username for u in inbound.local().list_users(query()).items] == ["ann"]


# ---------------------------------------------------------------- outbound, log, load
def test_inbound_create_reaches_the_outbound_scim_target_before_the_response(
    tmp_path, tokens, scim2_server, monkeypatch
):
    monkeypatch.setenv("OUT_TOKEN", scim2_server.token)
    idps = f"""
  - name: target
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:OUT_TOKEN}}
    push_roles: all
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.02}}"""
    with running(serve_config(tmp_path, idps, "[target]")) as inbound:
        alice = new_user(
            inbound.client, "alice", emails=[{"value": "alice@example.com", "type": "work"}]
        )
        [remote] = scim2_server.users()  # no waiting: it is there when the 201 is
        assert remote["userName"] == "alice"
        assert remote["emails"][0]["value"] == "alice@example.com"
        new_group(inbound.client, "staff", [alice["id"]])
        [group] = scim2_server.groups()
        assert [m["value"] for m in group["members"]] == [remote["id"]]
        assert inbound.client.delete(f"/Users/{alice['id']}").status_code == 204
        assert scim2_server.users() == []
        assert "outbound=ok" in inbound.log.getvalue()
        hr_user = new_user(inbound.as_token(HR_TOKEN), "pat")  # hr provisions nowhere
        assert hr_user["userName"] == "pat" and scim2_server.users() == []


def test_an_outbound_failure_does_not_fail_the_scim_request(tmp_path, tokens, monkeypatch):
    monkeypatch.setenv("OUT_TOKEN", "x")
    idps = """
  - name: down
    connector: scim2
    options: {base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:OUT_TOKEN}
    retry: {max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.01}"""
    with running(serve_config(tmp_path, idps, "[down]")) as inbound:
        new_user(inbound.client, "alice")
        assert inbound.local().outbox_rows(status="failed")[0].label == "alice"
        assert "outbound=failed:1" in inbound.log.getvalue()


def test_access_log_has_a_line_per_request_and_no_secrets(inbound):
    new_user(inbound.client, "alice", password="s3cret-pass-1")
    inbound.client.get("/Users", params={"filter": 'userName eq "alice"'})
    httpx.get(f"{inbound.url}/Users", headers={"Authorization": "Bearer nope-nope"}, timeout=30)
    lines = inbound.log.getvalue().splitlines()
    assert len(lines) == 3
    assert " POST /v2/Users 201 " in lines[0] and lines[0].endswith(
        "app=crm token=config outbound=-"
    )
    assert " GET /v2/Users 200 " in lines[1]
    assert " GET /v2/Users 401 " in lines[2] and "app=- token=-" in lines[2]
    for secret in (CRM_TOKEN, "s3cret-pass-1", "nope-nope", "alice"):
        assert secret not in inbound.log.getvalue()


def test_concurrent_clients_lose_nothing(inbound):
    staff = new_group(inbound.client, "staff")["id"]

    def work(worker: int) -> list[int]:
        statuses = []
        client = inbound.as_token(CRM_TOKEN)
        for i in range(10):
            user = client.post("/Users", json={"schemas": [USER], "userName": f"w{worker}u{i}"})
            statuses.append(user.status_code)
            add = {"op": "add", "path": "members", "value": [{"value": user.json()["id"]}]}
            statuses.append(patch(client, f"/Groups/{staff}", add).status_code)
            statuses.append(client.get("/Users", params={"count": 5}).status_code)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for batch in pool.map(work, range(8)) for s in batch]
    assert set(statuses) <= {200, 201, 204}, sorted(set(statuses))
    local = inbound.local()
    assert local.list_users(query()).total == 80
    assert len(local.get_role("staff").members) == 80
    members = inbound.client.get(f"/Groups/{staff}").json()["members"]
    assert len(members) == 80


def test_idprov_serve_command_runs_until_terminated(tmp_path, tokens, write_config):
    write_config(serve_config_text(tmp_path))
    idprov = str(Path(sys.executable).parent / "idprov")
    command = [idprov, "--config", "idprov.yaml", "serve", "--port", "0"]
    command += ["--access-log", "access.log"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, cwd=tmp_path, text=True, **pipes) as process:
        try:
            line = process.stdout.readline()
            assert "SCIM 2.0 at http://127.0.0.1:" in line, line
            url = line.split(" at ", 1)[1].split(" ", 1)[0]
            headers = {"Authorization": f"Bearer {CRM_TOKEN}"}
            body = {"schemas": [USER], "userName": "zed"}
            assert (
                httpx.post(f"{url}/Users", json=body, headers=headers, timeout=30).status_code
                == 201
            )
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert " POST /v2/Users 201 " in (tmp_path / "access.log").read_text()
    assert (tmp_path / "access.log").stat().st_mode & 0o777 == 0o600
    assert "warning" not in stderr  # loopback: plain HTTP stays on this machine


def test_plain_http_beyond_loopback_is_warned_about(tmp_path, tokens, write_config):
    write_config(serve_config_text(tmp_path))
    idprov = str(Path(sys.executable).parent / "idprov")
    command = [idprov, "--config", "idprov.yaml", "serve", "--host", "0.0.0.0", "--port", "0"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, cwd=tmp_path, text=True, **pipes) as process:
        try:
            assert "SCIM 2.0 at http://0.0.0.0:" in process.stdout.readline()
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=15)
    assert "warning: serving plain HTTP on 0.0.0.0" in stderr and "--certfile" in stderr


def serve_config_text(tmp_path: Path) -> str:
    return f"""
version: 1
data_dir: {tmp_path / "data"}
applications:
  - name: crm
    inbound_token: env:CRM_TOKEN
"""


def test_serve_refuses_to_start_without_tokens(cli, tmp_path, write_config):
    write_config(f"version: 1\ndata_dir: {tmp_path / 'data'}\n")
    error = cli("--config", "idprov.yaml", "serve", "--json").error(2)
    assert "no application has an inbound token" in error["message"]
    assert "idprov token create" in error["hint"] and "inbound_token: env:" in error["hint"]


def test_serve_refuses_an_application_without_a_token(cli, tmp_path, write_config, tokens):
    write_config(serve_config_text(tmp_path) + "  - name: erp\n")
    error = cli("--config", "idprov.yaml", "serve", "--app", "erp", "--json").error(2)
    assert "'erp' has no inbound_token" in error["message"]
    error = cli("--config", "idprov.yaml", "serve", "--app", "nope", "--json").error(3)
    assert "no application named 'nope'" in error["message"]


def test_only_the_applications_asked_for_are_served(tmp_path, tokens):
    with running(serve_config(tmp_path), applications=["hr"]) as inbound:
        assert inbound.server.applications == ["hr"]
        scim_error(inbound.client.get("/Users"), 401)  # crm's token
        assert inbound.as_token(HR_TOKEN).get("/Users").status_code == 200


def test_https_with_a_certificate(tmp_path, tokens):
    cert, key = self_signed(tmp_path)
    with running(serve_config(tmp_path), tls=(cert, key)) as inbound:
        assert inbound.url.startswith("https://127.0.0.1:")
        assert new_user(inbound.client, "alice")["userName"] == "alice"
        with pytest.raises(httpx.TransportError):  # plain HTTP is not answered
            httpx.get(inbound.url.replace("https:", "http:") + "/Users", timeout=5)


def self_signed(tmp_path: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_issued_tokens_act_as_their_application_until_revoked(tmp_path, tokens, cli):
    config = serve_config(tmp_path)
    (tmp_path / "idprov.yaml").write_text(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\napplications:\n  - name: crm\n"
    )
    made = cli("token", "create", "--app", "crm", "--description", "CRM sync", "--json").json()
    token = made["token"]
    assert made["application"] == "crm" and token.startswith(f"idprov_{made['id']}_")
    listed = cli("token", "list", "--json").items()
    assert [(t["id"], t["revoked_at"]) for t in listed] == [(made["id"], None)]
    assert token not in json.dumps(listed) and token not in cli("log", "--json").stdout
    raw = (tmp_path / "data" / "idprov.db").read_bytes()
    assert token.encode() not in raw
    with running(config) as served:
        client = served.as_token(token)
        created = client.post(
            "/Users",
            json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "tok"},
        )
        assert created.status_code == 201, created.text
        assert "crm" in served.log.getvalue().splitlines()[-1]
        cli("token", "revoke", made["id"]).ok()
        refused = client.get("/Users")
        assert refused.status_code == 401
    assert cli("token", "list", "--json").items()[0]["revoked_at"]
    assert "no token with id" in cli("token", "revoke", "nope", "--json").error(3)["message"]
    # revoked again: said so, not audited twice (it said "revoked" and audited again)
    again = cli("token", "revoke", made["id"]).ok().stdout
    assert "was revoked already, at" in again
    assert len(cli("log", "--action", "token.revoke", "--json").items()) == 1


def test_a_read_token_reads_and_the_token_id_is_in_the_audit_and_the_log(tmp_path, tokens, cli):
    config = serve_config(tmp_path)
    (tmp_path / "idprov.yaml").write_text(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\napplications:\n  - name: crm\n"
    )
    reader = cli("token", "create", "--app", "crm", "--scope", "read", "--json").json()
    writer = cli("token", "create", "--app", "crm", "--json").json()
    assert (reader["scope"], writer["scope"]) == ("read", "write")
    with running(config) as served:
        as_writer, as_reader = served.as_token(writer["token"]), served.as_token(reader["token"])
        alice = new_user(as_writer, "alice")
        assert as_reader.get(f"/Users/{alice['id']}").status_code == 200
        search = {"schemas": [SEARCH], "filter": 'userName eq "alice"'}
        assert as_reader.post("/.search", json=search, headers=SCIM_JSON).status_code == 200
        body = {"schemas": [USER], "userName": "bob"}
        scim_error(as_reader.post("/Users", json=body, headers=SCIM_JSON), 403)
        scim_error(as_reader.delete(f"/Users/{alice['id']}"), 403)
        jit = as_reader.post("/jit/login", json={"idp": "x", "claims": {}})
        assert jit.status_code == 403 and "scope is read" in jit.json()["error"]["message"]
        lines = served.log.getvalue().splitlines()
        assert f"token={writer['id']}" in lines[0] and " 201 " in lines[0]
        assert all(f"token={reader['id']}" in line for line in lines[1:])
        assert reader["token"] not in served.log.getvalue()
        as_config = served.as_token(CRM_TOKEN)
        new_user(as_config, "carol")
        assert "token=config" in served.log.getvalue().splitlines()[-1]
    entries = {e["target"]: e for e in cli("log", "--action", "user.add", "--json").items()}
    assert entries["alice"]["actor"] == f"scim:{writer['id']}"
    assert entries["carol"]["actor"] == "scim:config"
    assert "bob" not in entries


def test_a_token_scope_that_does_not_exist_is_refused(cli, tmp_path, write_config):
    write_config(f"version: 1\ndata_dir: {tmp_path / 'data'}\n")
    error = cli("token", "create", "--app", "resident", "--scope", "admin", "--json").error(2)
    assert "no token scope 'admin'" in error["message"] and "read, write" in error["hint"]
    assert cli("token", "list", "--json").items() == []
    made = cli("token", "create", "--app", "resident", "--scope", "read").ok()
    assert "read token" in made.stdout
    assert "read" in cli("token", "list").ok().stdout


# ---- two servers on one store
def test_a_patch_raced_by_another_server_is_applied_again(tmp_path, tokens, monkeypatch):
    config = serve_config(tmp_path)
    with running(config) as a, running(config) as b:
        user = new_user(a.client, "alice", title="Dev", displayName="Alice")
        a_patch_raced_by_b_keeps_both(a.client, b.client, user["id"], monkeypatch)


def a_patch_raced_by_b_keeps_both(
    a: httpx.Client, b: httpx.Client, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `idprov serve` on one store: server B changes a user (title "Dev") after
    server A read it for a PATCH and before A writes. A PATCH without If-Match is
    applied again to B's version: both changes are kept, and the client gets its 204
    (before the version check, A's write silently undid B's; then it was a 412 that
    Entra and Okta do not send again). With If-Match, A answers 412 and writes
    nothing."""
    raced = b_changes_alice_first(b, user_id, monkeypatch)
    late = {"op": "replace", "path": "title", "value": "Lead"}
    response = patch(a, f"/Users/{user_id}", late)
    assert response.status_code in (200, 204), response.text
    after = a.get(f"/Users/{user_id}").json()
    assert raced == [1, 204] and (after["displayName"], after["title"]) == ("Alice B", "Lead")

    monkeypatch.undo()
    etag = a.get(f"/Users/{user_id}").headers["ETag"]
    raced = b_changes_alice_first(b, user_id, monkeypatch, "Alice C")
    late = {"op": "replace", "path": "title", "value": "CTO"}
    detail = scim_error(patch(a, f"/Users/{user_id}", late, headers={"If-Match": etag}), 412)
    assert raced == [1, 204] and "another request changed" in detail
    after = a.get(f"/Users/{user_id}").json()
    assert (after["displayName"], after["title"]) == ("Alice C", "Lead")


def test_a_put_and_a_group_patch_raced_by_another_server_are_applied_again(
    tmp_path, tokens, monkeypatch
):
    config = serve_config(tmp_path)
    with running(config) as a, running(config) as b:
        user = new_user(a.client, "alice", title="Dev", displayName="Alice")
        raced = b_changes_alice_first(b.client, user["id"], monkeypatch)
        body = {"schemas": [USER], "userName": "alice", "title": "CEO"}
        put = a.client.put(f"/Users/{user['id']}", json=body, headers=SCIM_JSON)
        assert put.status_code == 200, put.text
        after = a.client.get(f"/Users/{user['id']}").json()
        assert raced == [1, 204] and after["title"] == "CEO" and "displayName" not in after

        monkeypatch.undo()
        bob = new_user(a.client, "bob")
        staff = new_group(a.client, "staff", [user["id"]])
        raced = b_changes_alice_first(b.client, user["id"], monkeypatch)
        add_bob = {"op": "add", "path": "members", "value": [{"value": bob["id"]}]}
        added = patch(a.client, f"/Groups/{staff['id']}", add_bob)
        assert added.status_code in (200, 204), added.text
        members = a.client.get(f"/Groups/{staff['id']}").json()["members"]
        assert raced == [1, 204]
        assert sorted(m["value"] for m in members) == sorted([user["id"], bob["id"]])


def b_changes_alice_first(
    b: httpx.Client, user_id: str, monkeypatch: pytest.MonkeyPatch, display: str = "Alice B"
) -> list[int]:
    """Make the next change a server makes wait until server B has set alice's
    displayName to ``display`` (once); the list gets 1 and B's status."""
    from idprov.inbound.scim.acting import Acting

    changing = Acting.changing
    raced: list[int] = []

    @contextmanager
    def b_first(self):  # A has read alice and is about to write
        if not raced:
            raced.append(1)  # B's own PATCH comes through here too: once
            replace = {"op": "replace", "path": "displayName", "value": display}
            raced.append(patch(b, f"/Users/{user_id}", replace).status_code)
        with changing(self) as uow:
            yield uow

    monkeypatch.setattr(Acting, "changing", b_first)
    return raced


def test_a_delete_raced_by_another_server(tmp_path, tokens, monkeypatch):
    """Without If-Match the client asked to delete whatever the version: the user is
    deleted after B's change. With If-Match of the version before B's change: 412,
    and the user stays with B's change."""
    config = serve_config(tmp_path)
    with running(config) as a, running(config) as b:
        user = new_user(a.client, "alice", displayName="Alice")
        bob = new_user(a.client, "bob", displayName="Bob")
        raced = b_changes_alice_first(b.client, bob["id"], monkeypatch)
        assert a.client.delete(f"/Users/{bob['id']}").status_code == 204
        assert raced == [1, 204]
        assert a.client.get(f"/Users/{bob['id']}").status_code == 404
        monkeypatch.undo()
        etag = a.client.get(f"/Users/{user['id']}").headers["ETag"]
        raced = b_changes_alice_first(b.client, user["id"], monkeypatch)
        detail = scim_error(
            a.client.delete(f"/Users/{user['id']}", headers={"If-Match": etag}), 412
        )
        assert raced == [1, 204] and "another request changed" in detail
        assert a.client.get(f"/Users/{user['id']}").json()["displayName"] == "Alice B"


def test_tls_files_that_cannot_be_used_are_clear_errors(tmp_path, tokens, cli, write_config):
    """A key with a passphrase was asked for on the terminal (twice, even with none),
    then failed as "[Errno 22] Invalid argument"; a certificate without its key said
    "[SSL] PEM lib"; a missing file was a usage error, not exit 3."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    write_config(serve_config_text(tmp_path))
    cert, _ = self_signed(tmp_path)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    serve = ("serve", "--port", "0", "--certfile", cert)
    error = cli(*serve, "--keyfile", str(locked), "--json", input="").error(2)
    assert "encrypted with a passphrase" in error["message"]
    error = cli(*serve, "--json").error(2)
    assert "the key does not match the certificate, or is missing" in error["message"]
    missing = cli("serve", "--port", "0", "--certfile", str(tmp_path / "no.pem"), "--json")
    assert "does not exist" in missing.error(3)["message"]
