"""`idprov serve`: a token sees and changes the users and groups of its own
application's userstores only. crm lands in PRIMARY and hr in PARTNERS (see
:func:`~tests.test_serve_scim.serve_config`); each is the other's stranger, and a
stranger's user, group or id is not there (404), whatever the request: a GET, a
filter, a PATCH, a PUT, a DELETE, a Bulk operation, a group's member, a manager."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_serve_scim import (
    BULK,
    CRM_SEES_PARTNERS,
    CRM_TOKEN,
    GROUP,
    HR_TOKEN,
    SCIM_JSON,
    USER,
    Inbound,
    new_group,
    new_user,
    patch,
    running,
    scim_error,
    serve_config,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def inbound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    """crm's token in the client; hr's by ``as_token(HR_TOKEN)``."""
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path)) as served:
        yield served


@pytest.fixture
def crm_user(inbound: Inbound) -> dict[str, Any]:
    """A user of crm's (PRIMARY), with an externalId, in a group of crm's."""
    user = new_user(inbound.client, "victim@contoso.com", externalId="crm-1", title="Clerk")
    new_group(inbound.client, "crm-staff", [user["id"]])
    return user


def listed(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json().get("Resources", [])]


def test_another_applications_user_is_not_found_by_any_request(inbound, crm_user):
    hr = inbound.as_token(HR_TOKEN)
    path = f"/Users/{crm_user['id']}"
    scim_error(hr.get(path), 404)
    title = {"op": "replace", "path": "title", "value": "Hijacked"}
    scim_error(patch(hr, path, title), 404)
    body = {"schemas": [USER], "userName": "victim@contoso.com", "active": False}
    scim_error(hr.put(path, json=body, headers=SCIM_JSON), 404)
    scim_error(hr.delete(path), 404)
    # crm's user is as crm left it: there, unchanged, enabled, in its group
    local = inbound.local().get_user("victim@contoso.com")
    assert local.claims.get("title") == "Clerk" and local.claims.get("active") == "true"
    assert local.roles == ["crm-staff"]
    assert inbound.client.get(path).json()["title"] == "Clerk"


@pytest.mark.parametrize(
    "scim_filter",
    [
        'userName eq "PRIMARY/victim@contoso.com"',
        'userName co "victim"',
        'userName sw "PRIMARY/"',
        'externalId eq "crm-1"',
        'id eq "{id}"',
        'title eq "Clerk"',
        'userName co "victim" or title eq "Clerk"',
    ],
)
def test_another_applications_users_are_in_no_listing_or_filter(inbound, crm_user, scim_filter):
    hr = inbound.as_token(HR_TOKEN)
    mine = new_user(hr, "victim.partner@contoso.com", title="Clerk")["id"]
    params = {"filter": scim_filter.replace("{id}", crm_user["id"])}
    assert crm_user["id"] not in listed(hr.get("/Users", params=params))
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], **params}
    assert crm_user["id"] not in listed(hr.post("/.search", json=search, headers=SCIM_JSON))
    assert listed(hr.get("/Users")) == [mine]
    assert [g["displayName"] for g in hr.get("/Groups").json().get("Resources", [])] == []


def test_another_applications_group_and_members_are_out_of_reach(inbound, crm_user):
    hr = inbound.as_token(HR_TOKEN)
    [crm_group] = inbound.client.get("/Groups").json()["Resources"]
    scim_error(hr.get(f"/Groups/{crm_group['id']}"), 404)
    remove = {"op": "remove", "path": "members"}
    scim_error(patch(hr, f"/Groups/{crm_group['id']}", remove), 404)
    scim_error(hr.delete(f"/Groups/{crm_group['id']}"), 404)
    # hr's own group cannot take crm's user in, by PATCH, PUT or POST
    own = new_group(hr, "partners")
    add = {"op": "add", "path": "members", "value": [{"value": crm_user["id"]}]}
    detail = scim_error(patch(hr, f"/Groups/{own['id']}", add), 400, "invalidValue")
    assert crm_user["id"] in detail and "PRIMARY" not in detail
    body = {"schemas": [GROUP], "displayName": "partners", "members": [{"value": crm_user["id"]}]}
    scim_error(hr.put(f"/Groups/{own['id']}", json=body, headers=SCIM_JSON), 400, "invalidValue")
    body["displayName"] = "others"
    scim_error(hr.post("/Groups", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert inbound.local().get_role("crm-staff").members == ["victim@contoso.com"]
    assert inbound.local().get_role("PARTNERS/partners").members == []


def test_another_applications_user_is_no_manager_and_no_bulk_target(inbound, crm_user):
    hr = inbound.as_token(HR_TOKEN)
    mine = new_user(hr, "worker")
    manager = {"op": "add", "path": f"{ENTERPRISE}:manager", "value": crm_user["id"]}
    scim_error(patch(hr, f"/Users/{mine['id']}", manager), 400, "invalidValue")
    bulk = {
        "schemas": [BULK],
        "Operations": [{"method": "DELETE", "path": f"/Users/{crm_user['id']}"}],
    }
    answer = hr.post("/Bulk", json=bulk, headers=SCIM_JSON).json()
    assert answer["Operations"][0]["status"] == "404"
    assert inbound.local().get_user("victim@contoso.com").id == crm_user["id"]


def test_a_token_cannot_create_in_another_applications_userstore(inbound):
    hr = inbound.as_token(HR_TOKEN)
    body = {"schemas": [USER], "userName": "PRIMARY/intruder"}
    detail = scim_error(hr.post("/Users", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert "PARTNERS" in detail  # the domains it may write: its own
    body = {"schemas": [GROUP], "displayName": "PRIMARY/intruders"}
    scim_error(hr.post("/Groups", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert inbound.local().list_roles() == []
    assert [u.username for u in inbound.local().list_users(_everyone()).items] == []


def _everyone() -> Any:
    from idprov.model import UserQuery

    return UserQuery(limit=None)


@pytest.fixture
def crm_sees_partners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path, crm_extra=CRM_SEES_PARTNERS)) as served:
        yield served


def test_an_application_sees_the_userstores_its_jit_logins_land_in(crm_sees_partners):
    served = crm_sees_partners
    hr = served.as_token(HR_TOKEN)
    partner = new_user(hr, "pat")
    crm = served.client
    assert crm.get(f"/Users/{partner['id']}").json()["userName"] == "PARTNERS/pat"
    own = new_user(crm, "alice")
    # hr still sees its own userstore only
    scim_error(hr.get(f"/Users/{own['id']}"), 404)


@pytest.fixture
def shared_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scim2_server: Any
) -> Iterator[tuple[Inbound, Any]]:
    """hr provisions PARTNERS to corp (a real SCIM server); crm has no IdPs, but its
    JIT logins land in PARTNERS, so its token changes hr's users too."""
    from idprov.config import load_text

    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    monkeypatch.setenv("CORP_TOKEN", scim2_server.token)
    config = load_text(
        f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: PARTNERS
    path: {tmp_path / "data" / "partners.db"}
identity_providers:
  - name: corp
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:CORP_TOKEN}}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.02}}
applications:
  - name: crm
    identity_providers: []
    inbound_token: env:CRM_TOKEN{CRM_SEES_PARTNERS}
  - name: hr
    userstore: PARTNERS
    identity_providers: [corp]
    inbound_token: env:HR_TOKEN
""",
        "shared-store.yaml",
    )
    with running(config) as served:
        yield served, scim2_server


def at_corp(target: Any, name: str) -> list[Any]:
    """corp's ``active`` of each account named ``name`` (none: not there)."""
    return [u.get("active") for u in target.users() if u["userName"] == name]


def test_a_delete_by_another_application_reaches_the_users_targets(shared_store):
    served, corp = shared_store
    pat = new_user(served.as_token(HR_TOKEN), "pat")
    assert at_corp(corp, "pat") == [True]
    answer = served.client.delete(f"/Users/{pat['id']}")  # crm, which has no IdPs
    assert answer.status_code == 204, answer.text
    assert at_corp(corp, "pat") == []
    assert served.local().outbox_rows() == []


def test_a_disable_by_another_application_reaches_the_users_targets(shared_store):
    served, corp = shared_store
    pat = new_user(served.as_token(HR_TOKEN), "pat")
    off = {"op": "replace", "path": "active", "value": False}
    assert patch(served.client, f"/Users/{pat['id']}", off).status_code in (200, 204)
    assert at_corp(corp, "pat") == [False]
    assert served.local().outbox_rows() == []


def shared_store_cli(write_config: Any, tmp_path: Path, target: Any, guard: str = "") -> str:
    """The configuration of :func:`shared_store` for the CLI (corp's ``guard``)."""
    path = write_config(
        f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: PARTNERS
    path: {tmp_path / "data" / "partners.db"}
identity_providers:
  - name: corp
    connector: scim2
    options: {{base_url: "{target.base_url}", auth: bearer, token: env:CORP_TOKEN}}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.02}}{guard}
applications:
  - name: crm
    identity_providers: []{CRM_SEES_PARTNERS}
  - name: hr
    userstore: PARTNERS
    identity_providers: [corp]
"""
    )
    return str(path)


def test_a_cli_delete_as_another_application_reaches_the_users_targets(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    monkeypatch.setenv("CORP_TOKEN", scim2_server.token)
    config = shared_store_cli(write_config, tmp_path, scim2_server)
    cli("--config", config, "user", "add", "PARTNERS/pat", "--app", "hr").ok()
    assert at_corp(scim2_server, "pat") == [True]
    deleted = cli("--config", config, "user", "delete", "PARTNERS/pat", "--yes", "--app", "crm")
    deleted.ok()
    assert "corp" in deleted.stdout
    assert at_corp(scim2_server, "pat") == []


def test_the_deletion_guard_judges_an_offboarding_sent_to_the_users_targets(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    monkeypatch.setenv("CORP_TOKEN", scim2_server.token)
    guard = "\n    deletion_guard: {max_deletes: 0, min_deletes: 0}"
    config = shared_store_cli(write_config, tmp_path, scim2_server, guard)
    cli("--config", config, "user", "add", "PARTNERS/pat", "--app", "hr").ok()
    held = cli("--config", config, "user", "delete", "PARTNERS/pat", "--yes", "--app", "crm")
    assert held.exit_code == 7, held
    assert "deletion guard: will delete 1 user at corp" in held.stdout + held.stderr
    assert at_corp(scim2_server, "pat") == [True]
    [row] = cli("--config", config, "outbox", "list", "--json").items()
    assert (row["idp"], row["status"]) == ("corp", "held")


def test_an_import_disabling_as_another_application_reaches_the_users_targets(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    monkeypatch.setenv("CORP_TOKEN", scim2_server.token)
    config = shared_store_cli(write_config, tmp_path, scim2_server)
    cli("--config", config, "user", "add", "PARTNERS/pat", "--app", "hr").ok()
    cli("--config", config, "user", "add", "PARTNERS/kim", "--app", "hr").ok()
    feed = tmp_path / "leavers.csv"
    feed.write_text("username,active\nPARTNERS/pat,false\nPARTNERS/kim,true\n")
    cli("--config", config, "import", "users", str(feed), "--mode", "update", "--app", "crm").ok()
    assert at_corp(scim2_server, "pat") == [False]
    assert at_corp(scim2_server, "kim") == [True]
    assert cli("--config", config, "outbox", "list", "--json").items() == []


def test_a_role_taken_as_another_application_reaches_the_users_targets(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    monkeypatch.setenv("CORP_TOKEN", scim2_server.token)
    scoped = "\n    provisioning_roles: [partners]"
    config = shared_store_cli(write_config, tmp_path, scim2_server, scoped)
    cli("--config", config, "role", "add", "PARTNERS/partners", "--app", "hr").ok()
    cli("--config", config, "user", "add", "PARTNERS/pat", "--app", "hr").ok()
    cli("--config", config, "role", "assign", "PARTNERS/partners", "pat", "--app", "hr").ok()
    assert at_corp(scim2_server, "pat") == [True]
    cli(
        "--config", config, "role", "unassign", "PARTNERS/partners", "pat", "--app", "crm", "--yes"
    ).ok()
    assert at_corp(scim2_server, "pat") == []
