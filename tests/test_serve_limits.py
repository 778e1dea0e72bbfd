"""`idprov serve` bounds what a client may store: an ``externalId`` follows a claim's
rules (at most 1024 characters, no control characters), and a multi-valued attribute
of a User holds at most 100 values. A 900 KB externalId with NUL and ESC in it, and
25,000 e-mail addresses on one user, were taken."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_serve_scim import (
    CRM_TOKEN,
    GROUP,
    HR_TOKEN,
    SCIM_JSON,
    USER,
    Inbound,
    new_user,
    patch,
    running,
    scim_error,
    serve_config,
)


@pytest.fixture
def inbound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path)) as served:
        yield served


@pytest.mark.parametrize(
    ("external_id", "said"),
    [
        ("e" * 1025, "1024"),
        ("a\x00b", "control"),
        ("red\x1b[31m", "control"),
        ("a\nb", "control"),
        ("ext-7\u200b", "does not show at its start or end"),
    ],
)
def test_an_external_id_is_checked_as_a_claim_is(inbound, external_id, said):
    client = inbound.client
    body = {"schemas": [USER], "userName": "ext", "externalId": external_id}
    detail = scim_error(client.post("/Users", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert "externalId" in detail and said in detail
    body = {"schemas": [GROUP], "displayName": "ext", "externalId": external_id}
    scim_error(client.post("/Groups", json=body, headers=SCIM_JSON), 400, "invalidValue")
    user = new_user(client, "ext", externalId="e" * 1024)  # the limit itself is taken
    replace = {"op": "replace", "path": "externalId", "value": external_id}
    scim_error(patch(client, f"/Users/{user['id']}", replace), 400, "invalidValue")
    assert client.get(f"/Users/{user['id']}").json()["externalId"] == "e" * 1024


def emails(count: int) -> list[dict[str, str]]:
    return [{"value": f"a{i}@example.com", "type": "other"} for i in range(count)]


def test_a_multi_valued_attribute_holds_at_most_100_values(inbound):
    client = inbound.client
    body = {"schemas": [USER], "userName": "many", "emails": emails(101)}
    detail = scim_error(client.post("/Users", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert "emails" in detail and "101" in detail and "100" in detail
    user = new_user(client, "many", emails=emails(100))
    assert len(client.get(f"/Users/{user['id']}").json()["emails"]) == 100
    one_more = {"op": "add", "path": "emails", "value": [{"value": "z@example.com"}]}
    scim_error(patch(client, f"/Users/{user['id']}", one_more), 400, "invalidValue")
    put = {"schemas": [USER], "userName": "many", "emails": emails(150)}
    response = client.put(f"/Users/{user['id']}", json=put, headers=SCIM_JSON)
    scim_error(response, 400, "invalidValue")
    assert len(inbound.local().get_user("many").claims["emails"]) == 100
