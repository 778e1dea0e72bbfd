"""`idprov serve`: a User's attribute values are trimmed as the CLI's ``--claim``
values and an import's cells are. They were taken as sent: ``"title": " CTO "`` kept
its spaces (the CLI's ``--claim "title= CTO "`` is ``CTO``: one value, two spellings,
each a change pushed to every target), and ``"alice@example.com "`` or a given name
after a tab refused the whole user (the e-mail pattern, a control character), where
the CLI takes them. A value that is only spaces is no value.
Names are not trimmed: a ``userName`` with spaces around it is refused by the
userstore's name policy, as at the command line, so ``alice`` and ``alice `` are
never two users (tests/test_serve_scim.py has the refusal)."""

from __future__ import annotations

from typing import Any

from tests.test_serve_scim import (
    ENTERPRISE,
    SCIM_JSON,
    USER,
    inbound,  # noqa: F401
    scim_error,
    tokens,  # noqa: F401
)

SPACED = {
    "schemas": [USER, ENTERPRISE],
    "userName": "alice",
    "title": " CTO ",
    "nickName": "   ",
    "name": {"givenName": "\tAlice ", "familyName": "Liddell "},
    "emails": [{"value": " alice@example.com ", "type": "work", "primary": True}],
    "phoneNumbers": [{"value": "+1 555 0100 ", "type": "mobile"}],
    ENTERPRISE: {"department": " Ops"},
}
TRIMMED = {
    "title": "CTO",
    "given_name": "Alice",
    "family_name": "Liddell",
    "email": "alice@example.com",
    "mobile": "+1 555 0100",
    "department": "Ops",
    "active": "true",
}


def test_attribute_values_are_trimmed_as_the_cli_trims_claims(
    inbound: Any,  # noqa: F811
) -> None:
    client = inbound.client
    created = client.post("/Users", json=SPACED, headers=SCIM_JSON)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["title"], body["name"]["givenName"]) == ("CTO", "Alice")
    assert body["emails"][0]["value"] == "alice@example.com" and "nickName" not in body
    local = inbound.local()
    assert local.get_user("alice").claims == TRIMMED
    version = body["meta"]["version"]
    again = client.put(f"/Users/{body['id']}", json=SPACED, headers=SCIM_JSON)
    assert again.status_code == 200 and again.json()["meta"]["version"] == version
    patched = client.patch(
        f"/Users/{body['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "title", "value": "CTO  "}],
        },
        headers=SCIM_JSON,
    )
    assert patched.status_code in (200, 204), patched.text
    assert local.get_user("alice").claims == TRIMMED
    local.update_user("alice", {"title": "CTO"})  # as `user update --claim "title= CTO "`
    assert client.get(f"/Users/{body['id']}").json()["meta"]["version"] == version


def test_a_user_name_with_spaces_is_not_a_second_user(inbound: Any) -> None:  # noqa: F811
    client = inbound.client
    assert client.post("/Users", json={**SPACED}, headers=SCIM_JSON).status_code == 201
    for name in ("alice ", " alice", "ALICE"):
        body = {"schemas": [USER], "userName": name}
        scim_error(client.post("/Users", json=body, headers=SCIM_JSON), *_refusal(name))
    assert [u["userName"] for u in client.get("/Users").json()["Resources"]] == ["alice"]


def _refusal(name: str) -> tuple[int, str]:
    """A name with spaces breaks the name policy; one that differs in case collides."""
    return (400, "invalidValue") if name != name.strip() else (409, "uniqueness")
