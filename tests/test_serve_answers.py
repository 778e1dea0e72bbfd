"""`idprov serve`'s answers, as a client reads them: a 204 carries no Content-Type,
an unknown attribute is ``invalidSyntax`` in a PATCH value object as in a POST (as the
README says), and an error never names a CLI flag."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_serve_scim import (
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


@pytest.fixture
def inbound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path, crm_extra=CRM_SEES_PARTNERS)) as served:
        yield served


def test_a_204_has_no_content_type_nor_content(inbound):
    client = inbound.client
    user = new_user(client, "bob")
    deleted = client.delete(f"/Users/{user['id']}")
    assert deleted.status_code == 204
    assert "content-type" not in deleted.headers, deleted.headers
    assert deleted.content == b"" and deleted.headers.get("content-length") in (None, "0")
    again = client.delete(f"/Users/{user['id']}")  # an error's body is typed
    assert again.status_code == 404
    assert again.headers["content-type"].startswith("application/scim+json")


@pytest.mark.parametrize("path", ["/Users", "/Groups"])
def test_an_unknown_attribute_is_invalid_syntax_in_a_patch_value_too(inbound, path):
    client = inbound.client
    schema = USER if path == "/Users" else GROUP
    name = {"userName": "alice"} if path == "/Users" else {"displayName": "staff"}
    posted = client.post(path, json={"schemas": [schema], **name, "bogus": 1}, headers=SCIM_JSON)
    scim_error(posted, 400, "invalidSyntax")
    made = new_user(client, "alice") if path == "/Users" else new_group(client, "staff")
    for op in ("replace", "add"):
        answer = patch(client, f"{path}/{made['id']}", {"op": op, "value": {"bogus": 1}})
        assert "bogus" in scim_error(answer, 400, "invalidSyntax")


def test_a_name_with_a_slash_after_its_domain_is_refused_without_cli_words(inbound):
    client = inbound.client
    body = {"schemas": [USER], "userName": "PARTNERS/a/b"}
    detail = scim_error(client.post("/Users", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert "userName" in detail and "--" not in detail
    user = new_user(client, "PARTNERS/ab")
    rename = {"op": "replace", "path": "userName", "value": "PARTNERS/a/b"}
    detail = scim_error(patch(client, f"/Users/{user['id']}", rename), 400, "invalidValue")
    assert "userName" in detail and "--" not in detail
    body = {"schemas": [GROUP], "displayName": "PARTNERS/x/y"}
    detail = scim_error(client.post("/Groups", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert "displayName" in detail and "--" not in detail
