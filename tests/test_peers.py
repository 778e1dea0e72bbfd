"""The SCIM peers behave as the connector tests expect: real HTTP, auth, errors, state."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.peers.scim2 import Scim2Peer
from tests.peers.scim11 import CORE_SCHEMA, Scim11Server

SCIM2_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM2_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def scim2_client(peer: Scim2Peer, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or peer.token}"}
    return httpx.Client(base_url=peer.base_url, headers=headers, timeout=10)


def test_scim2_user_lifecycle(scim2_server: Scim2Peer) -> None:
    with scim2_client(scim2_server) as client:
        created = client.post("/Users", json={"schemas": [SCIM2_USER], "userName": "ada"})
        assert created.status_code == 201
        location = created.headers["Location"]
        assert location.startswith(scim2_server.base_url)
        assert client.get(location).json()["userName"] == "ada"
        found = client.get("/Users", params={"filter": 'userName eq "ADA"'}).json()
        assert [u["id"] for u in found["Resources"]] == [created.json()["id"]]
        assert client.delete(location).status_code == 204
        assert client.delete(location).status_code == 404
    assert scim2_server.users() == []


def test_scim2_refuses_wrong_token_and_duplicates(scim2_server: Scim2Peer) -> None:
    user = {"schemas": [SCIM2_USER], "userName": "grace"}
    with scim2_client(scim2_server, token="wrong") as client:
        assert client.post("/Users", json=user).status_code == 401
    with scim2_client(scim2_server) as client:
        assert client.post("/Users", json=user).status_code == 201
        duplicate = client.post("/Users", json={**user, "userName": "GRACE"})
        assert duplicate.status_code == 409
        assert duplicate.json()["scimType"] == "uniqueness"


def test_scim2_each_test_has_an_empty_server_and_paging_helpers(scim2_server: Scim2Peer) -> None:
    assert scim2_server.users() == [] and scim2_server.groups() == []
    with scim2_client(scim2_server) as client:
        for n in range(3):
            client.post("/Users", json={"schemas": [SCIM2_USER], "userName": f"u{n}"})
        client.post("/Groups", json={"schemas": [SCIM2_GROUP], "displayName": "staff"})
    assert sorted(u["userName"] for u in scim2_server.users()) == ["u0", "u1", "u2"]
    assert [g["displayName"] for g in scim2_server.groups()] == ["staff"]
    assert scim2_server.get("/ServiceProviderConfig").json()["bulk"]["supported"] is True


def scim11_client(server: Scim11Server) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=5)


def test_scim11_user_lifecycle(scim11_server: Scim11Server) -> None:
    with scim11_client(scim11_server) as client:
        created = client.post("/Users", json={"schemas": [CORE_SCHEMA], "userName": "ada"})
        assert created.status_code == 201
        user = created.json()
        assert set(user["meta"]) == {"created", "lastModified", "location", "version"}
        assert created.headers["Location"] == user["meta"]["location"]
        assert client.get(f"/Users/{user['id']}").json()["userName"] == "ada"
        found = client.get("/Users", params={"filter": 'userName eq "ADA"'}).json()
        assert found["totalResults"] == 1 and found["Resources"][0]["id"] == user["id"]
        assert client.delete(f"/Users/{user['id']}").status_code == 200
        missing = client.get(f"/Users/{user['id']}")
        assert missing.status_code == 404
        assert missing.json()["Errors"][0]["code"] == "404"
    assert scim11_server.users() == []
    assert [r.status for r in scim11_server.requests] == [201, 200, 200, 200, 404]


def test_scim11_auth_and_uniqueness(scim11_server: Scim11Server) -> None:
    user = {"schemas": [CORE_SCHEMA], "userName": "grace"}
    with httpx.Client(base_url=scim11_server.base_url, timeout=30) as client:
        wrong = client.post("/Users", json=user, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.headers["WWW-Authenticate"]
        assert client.post("/Users", json=user, auth=scim11_server.basic).status_code == 201
        scim11_server.basic = None
        assert client.post("/Users", json=user, auth=("idprov", "x")).status_code == 401
    with scim11_client(scim11_server) as client:
        duplicate = client.post("/Users", json={**user, "userName": "GRACE"})
        assert duplicate.status_code == 409
        assert duplicate.json()["Errors"][0]["code"] == "409"


@pytest.mark.parametrize(
    "body, content_type",
    [
        ({"schemas": [CORE_SCHEMA], "userName": "a"}, "application/scim+json"),
        ({"userName": "a"}, "application/json"),
        ({"schemas": [CORE_SCHEMA], "userName": "a", "nickname2": "x"}, "application/json"),
        ({"schemas": [CORE_SCHEMA]}, "application/json"),
    ],
)
def test_scim11_is_strict(scim11_server: Scim11Server, body: dict, content_type: str) -> None:
    with scim11_client(scim11_server) as client:
        headers = {"Content-Type": content_type}
        response = client.post("/Users", content=json.dumps(body), headers=headers)
    assert response.status_code == 400
    assert scim11_server.users() == []


def test_scim11_patch_semantics(scim11_server: Scim11Server) -> None:
    with scim11_client(scim11_server) as client:
        ids = [
            client.post("/Users", json={"schemas": [CORE_SCHEMA], "userName": n}).json()["id"]
            for n in ("a", "b")
        ]
        group = {"schemas": [CORE_SCHEMA], "displayName": "staff", "members": [{"value": ids[0]}]}
        gid = client.post("/Groups", json=group).json()["id"]

        def patch(body: dict) -> httpx.Response:
            return client.patch(f"/Groups/{gid}", json={"schemas": [CORE_SCHEMA], **body})

        added = patch({"members": [{"value": ids[1]}]}).json()
        assert [m["value"] for m in added["members"]] == ids
        removed = patch({"members": [{"value": ids[0], "operation": "delete"}]}).json()
        assert [m["value"] for m in removed["members"]] == [ids[1]]
        assert "members" not in patch({"meta": {"attributes": ["members"]}}).json()
        assert patch({"members": [{"value": "no-such-id"}]}).status_code == 400
        user = client.get(f"/Users/{ids[1]}").json()
        assert "groups" not in user
    assert scim11_server.groups()[0]["displayName"] == "staff"


def test_scim11_fault_injection_and_discovery(scim11_server: Scim11Server) -> None:
    scim11_server.fail_next(503, count=2, headers={"Retry-After": "1"})
    with scim11_client(scim11_server) as client:
        first = client.get("/ServiceProviderConfigs")
        assert first.status_code == 503 and first.headers["Retry-After"] == "1"
        assert client.get("/ServiceProviderConfigs").status_code == 503
        config = client.get("/ServiceProviderConfigs").json()
    assert config["patch"]["supported"] and config["filter"]["supported"]
    assert config["bulk"]["supported"] is False
    assert [(r.method, r.path, r.status) for r in scim11_server.requests] == [
        ("GET", "/ServiceProviderConfigs", 503),
        ("GET", "/ServiceProviderConfigs", 503),
        ("GET", "/ServiceProviderConfigs", 200),
    ]
