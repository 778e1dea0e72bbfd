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
