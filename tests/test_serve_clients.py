"""`idprov serve` against the requests real provisioning clients send, body for body:
Microsoft Entra ID's provisioning service ("Tutorial: Develop and plan provisioning
for a SCIM endpoint", and "Known issues and resolutions with SCIM 2.0 protocol
compliance") and Okta's ("SCIM 2.0 Protocol Reference"). Each request below is the
documented one, ids aside (the server makes its own); what a client reads back, and
what idprov stored, is checked after each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from idprov.provisioning.state import AuditQuery
from tests.test_serve_scim import (
    CRM_SEES_PARTNERS,
    CRM_TOKEN,
    HR_TOKEN,
    Inbound,
    running,
    serve_config,
)

SCIM_JSON = {"Content-Type": "application/scim+json"}
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    """`idprov serve` on the embedded default policies, crm's token in the client."""
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path)) as inbound:
        yield inbound


@pytest.fixture
def served_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    """:func:`served`, crm's token seeing PRIMARY and PARTNERS (its JIT userstore)."""
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path, crm_extra=CRM_SEES_PARTNERS)) as inbound:
        yield inbound


def send(client: httpx.Client, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """The request; asserts a 2xx and returns the JSON body (None for 204)."""
    response = client.request(method, path, json=body, headers=SCIM_JSON, **kw)
    assert response.status_code < 300, f"{method} {path}: {response.text}"
    return response.json() if response.content else None


def read(client: httpx.Client, path: str, **params: str) -> Any:
    return send(client, "GET", path, params=params)


# ---------------------------------------------------------------- Microsoft Entra ID
ENTRA_CREATE_USER = {
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ],
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
    "active": True,
    "emails": [
        {
            "primary": True,
            "type": "work",
            "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com",
        }
    ],
    "meta": {"resourceType": "User"},
    "name": {
        "formatted": "givenName familyName",
        "familyName": "familyName",
        "givenName": "givenName",
    },
    "roles": [],
}


def entra_user(client: httpx.Client, user_name: str, external_id: str) -> dict[str, Any]:
    body = {**ENTRA_CREATE_USER, "userName": user_name, "externalId": external_id}
    return send(client, "POST", "/Users", body)


def test_entra_user_lifecycle(served: Inbound) -> None:
    client = served.client
    created = send(client, "POST", "/Users", ENTRA_CREATE_USER)
    user_id = created["id"]
    assert created["userName"] == "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"
    assert created["externalId"] == "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"

    found = read(
        client, "/Users", filter='userName eq "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"'
    )
    assert [r["id"] for r in found["Resources"]] == [user_id]
    by_external = read(
        client, "/Users", filter='externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"'
    )
    assert [r["id"] for r in by_external["Resources"]] == [user_id]
    none = read(client, "/Users", filter='userName eq "non-existent user"')
    assert (none["totalResults"], none.get("Resources", [])) == (0, [])

    # Update User [Multi-valued properties]
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "Replace",
                    "path": 'emails[type eq "work"].value',
                    "value": "updatedEmail@microsoft.com",
                },
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
            ],
        },
    )
    user = read(client, f"/Users/{user_id}")
    assert user["emails"] == [{"value": "updatedEmail@microsoft.com", "type": "work"}]
    assert user["name"] == {"givenName": "givenName", "familyName": "updatedFamilyName"}

    # Update User [Single-valued properties]: a new UPN renames the user
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "Replace",
                    "path": "userName",
                    "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com",
                }
            ],
        },
    )
    user = read(client, f"/Users/{user_id}")
    assert (user["id"], user["userName"]) == (
        user_id,
        "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com",
    )
    local = served.local().get_user("5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com")
    assert local.id == user_id

    # Disable User, as the provisioning service sends it without the compliance flag
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        },
    )
    assert read(client, f"/Users/{user_id}")["active"] is False
    # ... and with it (aadOptscim062020)
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "Operations": [{"op": "Replace", "path": "active", "value": False}],
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        },
    )
    assert read(client, f"/Users/{user_id}")["active"] is False

    # Requests to add a single-value string attribute; to replace several
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Add", "path": "nickName", "value": "Babs"}],
        },
    )
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": "displayName", "value": "Pvlo"},
                {
                    "op": "Replace",
                    "path": 'emails[type eq "work"].value',
                    "value": "TestBcwqnm@test.microsoft.com",
                },
                {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
                {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
                {"op": "Replace", "path": "externalId", "value": "Eqpj"},
                {
                    "op": "Replace",
                    "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",  # noqa: E501
                    "value": "Eqpj",
                },
            ],
        },
    )
    user = read(client, f"/Users/{user_id}")
    assert (user["nickName"], user["displayName"], user["externalId"]) == ("Babs", "Pvlo", "Eqpj")
    assert user["name"] == {"givenName": "Gtfd", "familyName": "Pkqf"}
    assert user[ENTERPRISE]["employeeNumber"] == "Eqpj"
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "replace",
                    "path": 'emails[type eq "work"].value',
                    "value": "TestMhvaes@test.microsoft.com",
                },
                {
                    "op": "replace",
                    "value": {
                        "displayName": "Bjfe",
                        "name.givenName": "Kkom",
                        "name.familyName": "Unua",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq",  # noqa: E501
                    },
                },
            ],
        },
    )
    user = read(client, f"/Users/{user_id}")
    assert user["displayName"] == "Bjfe" and user["name"] == {
        "givenName": "Kkom",
        "familyName": "Unua",
    }
    assert user[ENTERPRISE]["employeeNumber"] == "Aklq"
    assert user["emails"] == [{"value": "TestMhvaes@test.microsoft.com", "type": "work"}]

    send(client, "DELETE", f"/Users/{user_id}")
    assert client.get(f"/Users/{user_id}").status_code == 404


def test_entra_adds_a_first_email_phone_and_address_through_a_filtered_path(served: Inbound):
    """When a mapped attribute first gets a value, Entra sends an ``Add`` (or
    ``Replace``) to ``emails[type eq "work"].value``: with no work email yet, the
    value is added as one (it was a 400 noTarget that failed every update of the
    user; Microsoft's reference code had the same bug). Two sub-attributes of one
    address in one PATCH make one address."""
    client = served.client
    body = {**ENTRA_CREATE_USER, "userName": "first@contoso.com", "externalId": "e-first"}
    del body["emails"]
    user = send(client, "POST", "/Users", body)
    operations = [
        {"op": "Add", "path": 'emails[type eq "work"].value', "value": "first@contoso.com"},
        {"op": "Replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555 0100"},
        {"op": "Add", "path": 'addresses[type eq "work"].streetAddress', "value": "1 Main St"},
        {"op": "Add", "path": 'addresses[type eq "work"].locality', "value": "Redmond"},
    ]
    send(client, "PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": operations})
    got = read(client, f"/Users/{user['id']}")
    assert got["emails"] == [{"type": "work", "value": "first@contoso.com"}]
    assert got["phoneNumbers"] == [{"type": "mobile", "value": "+1 555 0100"}]
    [address] = got["addresses"]
    assert (address["type"], address["streetAddress"], address["locality"]) == (
        "work",
        "1 Main St",
        "Redmond",
    )
    claims = served.local().get_user("first@contoso.com").claims
    assert claims["email"] == "first@contoso.com" and claims["mobile"] == "+1 555 0100"
    # the second time the value is replaced in the entry the filter now matches
    again = [{"op": "Replace", "path": 'emails[type eq "work"].value', "value": "f@contoso.com"}]
    send(client, "PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": again})
    assert read(client, f"/Users/{user['id']}")["emails"] == [
        {"type": "work", "value": "f@contoso.com"}
    ]
    # a filter that describes no value to add still matches nothing
    vague = [{"op": "Add", "path": 'emails[value co "x"].type', "value": "work"}]
    response = client.patch(
        f"/Users/{user['id']}", json={"schemas": [PATCH_OP], "Operations": vague}, headers=SCIM_JSON
    )
    assert response.status_code == 400 and response.json()["scimType"] == "noTarget"


def test_entra_app_roles_are_ignored_in_a_patch_as_in_a_post(served: Inbound) -> None:
    """With an application's roles mapped, Entra sends ``roles`` in its POST and its
    PATCHes. idprov keeps no ``roles`` (its roles are Groups): the POST ignored them,
    and the PATCH was refused whole (400 mutability), its other changes with it."""
    client = served.client
    role = {"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}
    body = {**ENTRA_CREATE_USER, "userName": "roles@contoso.com", "roles": [role]}
    user = send(client, "POST", "/Users", body)
    operations = [
        {"op": "Add", "path": "roles", "value": [role]},
        {"op": "Replace", "path": "title", "value": "Admin"},
        {"op": "Add", "path": "name.formatted", "value": "Roles User"},
    ]
    send(client, "PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": operations})
    got = read(client, f"/Users/{user['id']}")
    assert got["title"] == "Admin" and "roles" not in got and "formatted" not in got["name"]
    assert served.local().get_user("roles@contoso.com").claims["title"] == "Admin"
    before = read(client, f"/Users/{user['id']}")["meta"]
    only = {"schemas": [PATCH_OP], "Operations": [{"op": "Add", "path": "roles", "value": [role]}]}
    send(client, "PATCH", f"/Users/{user['id']}", only)  # nothing idprov keeps: no change
    assert read(client, f"/Users/{user['id']}")["meta"] == before
    groups = [{"op": "Add", "path": "groups", "value": [{"value": user["id"]}]}]
    response = client.patch(
        f"/Users/{user['id']}",
        json={"schemas": [PATCH_OP], "Operations": groups},
        headers=SCIM_JSON,
    )
    assert response.status_code == 400 and response.json()["scimType"] == "mutability"


def test_entra_adds_the_manager_by_id(served_both: Inbound) -> None:
    served = served_both  # the partner is in PARTNERS, which crm's token sees
    client = served.client
    boss = entra_user(client, "boss@contoso.com", "e-boss")
    worker = entra_user(client, "worker@contoso.com", "e-worker")
    send(
        client,
        "PATCH",
        f"/Users/{worker['id']}",
        {
            "Operations": [
                {
                    "op": "Add",
                    "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                    "value": boss["id"],
                }
            ],
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        },
    )
    manager = read(client, f"/Users/{worker['id']}")[ENTERPRISE]["manager"]
    assert manager["value"] == boss["id"]
    assert served.local().get_user("worker@contoso.com").claims["manager"] == "boss@contoso.com"
    # a user of another userstore keeps its manager's name relative to its own domain
    partner = entra_user(client, "PARTNERS/partner@fabrikam.com", "e-partner")
    add = {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": boss["id"]}
    send(client, "PATCH", f"/Users/{partner['id']}", {"schemas": [PATCH_OP], "Operations": [add]})
    assert read(client, f"/Users/{partner['id']}")[ENTERPRISE]["manager"]["value"] == boss["id"]
    stored = served.local().get_user("PARTNERS/partner@fabrikam.com").claims["manager"]
    assert stored == "PRIMARY/boss@contoso.com"


def test_a_manager_link_follows_a_rename_and_ends_with_a_delete(served_both: Inbound) -> None:
    """The manager is kept by name: a rename of the manager left the name behind (the
    link broke), and after a delete a new user of the same name became the manager.
    Now the reports follow the rename, lose the link on the delete, and each is a change
    of theirs (lastModified moves, so delta readers see it)."""
    served = served_both  # the partner is in PARTNERS, which crm's token sees
    client = served.client
    boss = entra_user(client, "boss@contoso.com", "e-boss")
    worker = entra_user(client, "worker@contoso.com", "e-worker")
    partner = entra_user(client, "PARTNERS/partner@fabrikam.com", "e-partner")
    for report in (worker, partner):
        add = {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": boss["id"]}
        ops = {"schemas": [PATCH_OP], "Operations": [add]}
        send(client, "PATCH", f"/Users/{report['id']}", ops)
    before = read(client, f"/Users/{worker['id']}")["meta"]["lastModified"]
    rename = {"op": "Replace", "path": "userName", "value": "chief@contoso.com"}
    send(client, "PATCH", f"/Users/{boss['id']}", {"schemas": [PATCH_OP], "Operations": [rename]})
    for report in (worker, partner):
        assert read(client, f"/Users/{report['id']}")[ENTERPRISE]["manager"]["value"] == boss["id"]
    local = served.local()
    assert local.get_user("worker@contoso.com").claims["manager"] == "chief@contoso.com"
    stored = local.get_user("PARTNERS/partner@fabrikam.com").claims["manager"]
    assert stored == "PRIMARY/chief@contoso.com"
    after = read(client, f"/Users/{worker['id']}")["meta"]["lastModified"]
    assert after > before

    send(client, "DELETE", f"/Users/{boss['id']}")
    newcomer = entra_user(client, "chief@contoso.com", "e-newcomer")
    for report in (worker, partner):
        got = read(client, f"/Users/{report['id']}")
        assert "manager" not in got.get(ENTERPRISE, {}), got
    assert "manager" not in served.local().get_user("worker@contoso.com").claims
    assert newcomer["id"] != boss["id"]
    updates = [e.target for e in served.local().audit_log(AuditQuery(action="user.update"))]
    assert "worker@contoso.com" in updates and "PARTNERS/partner@fabrikam.com" in updates


def test_entra_group_lifecycle(served: Inbound) -> None:
    client = served.client
    member = entra_user(client, "member@contoso.com", "e-member")
    group = send(
        client,
        "POST",
        "/Groups",
        {
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:Group",
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
            ],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName",
            "meta": {"resourceType": "Group"},
        },
    )
    group_id = group["id"]
    got = read(client, f"/Groups/{group_id}", excludedAttributes="members")
    assert got["displayName"] == "displayName" and "members" not in got
    found = read(
        client, "/Groups", excludedAttributes="members", filter='displayName eq "displayName"'
    )
    assert [g["id"] for g in found["Resources"]] == [group_id]

    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "Replace",
                    "path": "displayName",
                    "value": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName",
                }
            ],
        },
    )
    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Add", "path": "members", "value": [{"$ref": None, "value": member["id"]}]}
            ],
        },
    )
    got = read(client, f"/Groups/{group_id}")
    assert got["displayName"] == "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
    assert [m["value"] for m in got["members"]] == [member["id"]]
    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "Remove",
                    "path": "members",
                    "value": [{"$ref": None, "value": member["id"]}],
                }
            ],
        },
    )
    assert read(client, f"/Groups/{group_id}").get("members", []) == []
    # the compliant removal (aadOptscim062020), after adding back
    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "Add", "path": "members", "value": [{"value": member["id"]}]}],
        },
    )
    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": f'members[value eq "{member["id"]}"]'}],
        },
    )
    assert read(client, f"/Groups/{group_id}").get("members", []) == []
    send(client, "DELETE", f"/Groups/{group_id}")
    assert client.get(f"/Groups/{group_id}").status_code == 404


def test_entra_member_changes_named_add_member_and_remove_member(served: Inbound) -> None:
    """Entra's group member changes as its SCIM guide shows them, with a ``name``
    ("addMember", "removeMember") that is no member of an RFC 7644 operation: taken,
    not refused as invalid syntax."""
    client = served.client
    member = entra_user(client, "named@contoso.com", "e-named")
    group = send(
        client,
        "POST",
        "/Groups",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "named"},
    )
    for name, op in (("addMember", "Add"), ("removeMember", "Remove")):
        send(
            client,
            "PATCH",
            f"/Groups/{group['id']}",
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {
                        "name": name,
                        "op": op,
                        "path": "members",
                        "value": [{"$ref": None, "value": member["id"]}],
                    }
                ],
            },
        )
        members = [m["value"] for m in read(client, f"/Groups/{group['id']}").get("members", [])]
        assert members == ([member["id"]] if op == "Add" else [])


# ---------------------------------------------------------------- Okta
OKTA_CREATE_USER = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "userName": "test.user@okta.local",
    "name": {"givenName": "Test", "familyName": "User"},
    "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
    "displayName": "Test User",
    "locale": "en-US",
    "externalId": "00ujl29u0le5T6Aj10h7",
    "groups": [],
    "password": "1mz050nq",
    "active": True,
}


def test_okta_user_lifecycle(served: Inbound) -> None:
    client = served.client
    none = read(
        client, "/Users", filter='userName eq "test.user@okta.local"', startIndex="1", count="100"
    )
    assert none["totalResults"] == 0
    created = send(client, "POST", "/Users", OKTA_CREATE_USER)
    user_id = created["id"]
    assert served.local().verify_password("test.user@okta.local", "1mz050nq")
    page = read(client, "/Users", startIndex="1", count="100")
    assert [r["id"] for r in page["Resources"]] == [user_id]

    current = read(client, f"/Users/{user_id}")
    put = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": user_id,
        "userName": "test.user@okta.local",
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [
            {
                "primary": True,
                "value": "test.user@okta.local",
                "type": "work",
                "display": "test.user@okta.local",
            }
        ],
        "active": True,
        "groups": [],
        "meta": {"resourceType": "User"},
    }
    updated = send(client, "PUT", f"/Users/{user_id}", put)
    assert updated["name"] == {
        "givenName": "Another",
        "middleName": "Excited",
        "familyName": "User",
    }
    assert current["id"] == updated["id"]

    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": False}}],
        },
    )
    assert read(client, f"/Users/{user_id}")["active"] is False
    send(
        client,
        "PATCH",
        f"/Users/{user_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"password": "t0ps3cret-sync"}}],
        },
    )
    assert served.local().verify_password("test.user@okta.local", "t0ps3cret-sync")


def test_okta_group_lifecycle(served: Inbound) -> None:
    client = served.client
    one = send(client, "POST", "/Users", OKTA_CREATE_USER)
    two = send(client, "POST", "/Users", {**OKTA_CREATE_USER, "userName": "two@okta.local"})
    group = send(
        client,
        "POST",
        "/Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Test SCIMv2",
            "members": [],
        },
    )
    group_id = group["id"]
    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "replace",
                    "value": {"id": group_id, "displayName": "Test SCIMv20"},
                }
            ],
        },
    )
    assert read(client, f"/Groups/{group_id}")["displayName"] == "Test SCIMv20"
    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "replace",
                    "path": "members",
                    "value": [
                        {"value": one["id"], "display": "test.user@okta.local"},
                        {"value": two["id"], "display": "test.user@okta.local"},
                    ],
                }
            ],
        },
    )
    members = read(client, f"/Groups/{group_id}")["members"]
    assert sorted(m["value"] for m in members) == sorted([one["id"], two["id"]])
    send(
        client,
        "PATCH",
        f"/Groups/{group_id}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "remove", "path": f'members[value eq "{two["id"]}"]'},
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": one["id"], "display": "test.user@okta.local"}],
                },
            ],
        },
    )
    members = read(client, f"/Groups/{group_id}")["members"]
    assert [m["value"] for m in members] == [one["id"]]
    assert served.local().get_role("Test SCIMv20").member_count == 1
    send(client, "DELETE", f"/Groups/{group_id}")


# ---------------------------------------------------------------- incremental readers
def test_last_modified_moves_on_both_sides_of_a_membership(served, monkeypatch):
    """Clients that read ``meta.lastModified gt T`` see a group whose members changed,
    and the users whose groups changed (a ticking clock: no two writes share a stamp)."""
    import itertools

    ticks = itertools.count(1)
    monkeypatch.setattr(
        "idprov.userstores.sql.now", lambda: f"2030-01-01T00:00:{next(ticks):02d}.000Z"
    )
    client = served.client
    alice = send(client, "POST", "/Users", {**OKTA_CREATE_USER, "userName": "alice"})
    bob = send(client, "POST", "/Users", {**OKTA_CREATE_USER, "userName": "bob"})
    group = send(client, "POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "crew"})
    mark = read(client, f"/Groups/{group['id']}")["meta"]["lastModified"]
    add = {"op": "add", "path": "members", "value": [{"value": alice["id"]}]}
    send(client, "PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH_OP], "Operations": [add]})
    since = f'meta.lastModified gt "{mark}"'
    changed_users = read(client, "/Users", filter=since)
    assert [u["userName"] for u in changed_users["Resources"]] == ["alice"]
    changed_groups = read(client, "/Groups", filter=since)
    assert [g["id"] for g in changed_groups["Resources"]] == [group["id"]]
    assert bob["meta"]["lastModified"] <= mark


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("2030-01-01T00:00:01", ["bob"]),  # no zone: UTC, as idprov keeps every time
        ("2030-01-01T00:00:01Z", ["bob"]),
        ("2030-01-01T01:00:01+01:00", ["bob"]),
        ("2030-01-01", ["alice", "bob"]),  # a date: its midnight, UTC
        ("2030-01-02", []),
    ],
)
def test_a_time_in_a_filter_without_a_zone_is_utc(served, monkeypatch, since, expected):
    """``meta.lastModified gt "2030-01-01T00:00:01"`` (no zone, as a script writes
    it) compared with the users' zoned times as never after: it found nobody, with a
    200, and an incremental reader missed every change. Users and Groups alike."""
    import itertools

    ticks = itertools.count(1)
    monkeypatch.setattr(
        "idprov.userstores.sql.now", lambda: f"2030-01-01T00:00:{next(ticks):02d}.000Z"
    )
    client = served.client
    send(client, "POST", "/Users", {**OKTA_CREATE_USER, "userName": "alice"})
    send(client, "POST", "/Users", {**OKTA_CREATE_USER, "userName": "bob"})
    found = read(client, "/Users", filter=f'meta.lastModified gt "{since}"')
    assert sorted(u["userName"] for u in found.get("Resources", [])) == expected
    send(client, "POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "crew"})
    groups = read(client, "/Groups", filter=f'meta.created ge "{since}" and displayName pr')
    assert [g["displayName"] for g in groups.get("Resources", [])] == (["crew"] if expected else [])
    wrong = client.get("/Users", params={"filter": 'meta.lastModified gt "yesterday"'})
    assert wrong.status_code == 400 and wrong.json()["scimType"] == "invalidFilter", wrong.text


# ---------------------------------------------------------------- a create's reply
RICH_CREATE_USER = {
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ],
    "externalId": "ext-0042",
    "userName": "grace@example.com",
    "name": {"givenName": "Grace", "familyName": "Hopper"},
    "displayName": "Grace Hopper",
    "title": "Rear Admiral",
    "active": False,
    "emails": [{"value": "grace@example.com", "type": "work", "primary": True}],
    "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
    "addresses": [{"type": "work", "locality": "Arlington", "country": "US"}],
    ENTERPRISE: {"employeeNumber": "42", "department": "Navy"},
}


@pytest.mark.parametrize(
    "body", [ENTRA_CREATE_USER, OKTA_CREATE_USER, RICH_CREATE_USER], ids=["entra", "okta", "rich"]
)
def test_a_201_is_what_a_get_of_the_new_user_returns(served: Inbound, body: dict) -> None:
    """idprov answers a User's creation from the document it stored (not through
    scim2-server's model, copy and dump: see inbound/scim/protocol.py); a client must
    read exactly what a GET of the user returns, headers included."""
    client = served.client
    if body is RICH_CREATE_USER:  # with a manager, whose reference becomes a URL
        boss = send(client, "POST", "/Users", {**ENTRA_CREATE_USER, "userName": "boss"})
        body = {**body, ENTERPRISE: {**body[ENTERPRISE], "manager": {"value": boss["id"]}}}
    created = client.post("/Users", json=body, headers=SCIM_JSON)
    assert created.status_code == 201, created.text
    got = client.get(f"/Users/{created.json()['id']}")
    assert created.json() == got.json()
    assert created.headers["Location"] == got.json()["meta"]["location"]
    assert created.headers["ETag"] == got.headers["ETag"]
    assert created.headers["Content-Location"] == got.headers["Content-Location"]
    if "manager" in body.get(ENTERPRISE, {}):
        assert created.json()[ENTERPRISE]["manager"]["$ref"].startswith("http://127.0.0.1:")


def test_entra_provisions_into_a_directory_that_maps_no_active_claim(tmp_path, monkeypatch, slapd):
    """A directory keeps no ``active`` unless it is mapped: Entra's create (which always
    says ``"active": true``) was refused whole ("claim 'active' has no LDAP attribute"),
    so no user could be provisioned into a default LDAP userstore. ``true`` is what
    such a store holds already; a disable it cannot keep is refused, saying how to map
    the claim."""
    from idprov.config import load_text
    from tests.test_userstore_ldap import service_yaml

    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    text = service_yaml(slapd, tmp_path).replace("data_dir: state", "version: 1")
    text += f"data_dir: {tmp_path / 'data'}\napplications:\n  - name: crm\n"
    text += "    userstore: CORP\n    inbound_token: env:CRM_TOKEN\n"
    with running(load_text(text, "t.yaml", tmp_path)) as inbound:
        client = inbound.client
        user = entra_user(client, "entra.one", "e-one")
        assert user["active"] is True
        disable = {"op": "Replace", "path": "active", "value": "False"}
        response = client.patch(
            f"/Users/{user['id']}",
            json={"schemas": [PATCH_OP], "Operations": [disable]},
            headers=SCIM_JSON,
        )
        assert response.status_code == 400 and "claim_attributes" in response.json()["detail"]
        title = {"op": "Replace", "path": "title", "value": "Engineer"}
        send(
            client, "PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": [title]}
        )
        got = read(client, f"/Users/{user['id']}")
        assert (got["title"], got["active"]) == ("Engineer", True)
        assert "active" not in inbound.local().get_user("CORP/entra.one").claims
