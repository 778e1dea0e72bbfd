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
    patch,
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


def test_a_patch_of_active_leaves_a_value_kept_with_spaces_alone(inbound: Any) -> None:  # noqa: F811
    """A title kept as ``" CTO "`` (written before idprov trimmed) was rewritten as
    ``CTO`` by Entra's disable-only PATCH: a title change pushed to every target and
    audited as Entra's. A value is trimmed when it is written again, not on a PATCH of
    something else."""
    local = inbound.local()
    local.add_user("old.user", {"active": "true"})
    local.store("PRIMARY").update_user("old.user", {"title": " CTO "}, [])  # as kept before
    client = inbound.client
    found = client.get("/Users", params={"filter": 'userName eq "old.user"'}).json()
    uid = found["Resources"][0]["id"]
    disabled = patch(client, f"/Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})
    assert disabled.status_code in (200, 204), disabled.text
    assert local.get_user("old.user").claims == {"active": "false", "title": " CTO "}
    retitled = patch(client, f"/Users/{uid}", {"op": "replace", "path": "title", "value": "CEO "})
    assert retitled.status_code in (200, 204), retitled.text
    assert local.get_user("old.user").claims["title"] == "CEO"


def test_the_library_keeps_claims_trimmed_as_every_other_way_in(inbound: Any) -> None:  # noqa: F811
    """IdentityService.add_user and update_user kept ``" CTO "`` as given, which the
    next SCIM or JIT write of the user then changed (and pushed)."""
    local = inbound.local()
    local.add_user("lib.user", {"title": " CTO ", "department": "Ops\t"})
    assert local.get_user("lib.user").claims == {"title": "CTO", "department": "Ops"}
    local.update_user("lib.user", {"title": "CEO  "})
    assert local.get_user("lib.user").claims["title"] == "CEO"


def test_a_value_is_removed_by_the_spelling_the_client_sent(inbound: Any) -> None:  # noqa: F811
    """A client that created a user with ``" g@example.com "`` (kept trimmed) removes it
    by the value it sent: the filter matched nothing, the answer was 204 and the
    e-mail stayed."""
    client = inbound.client
    created = client.post(
        "/Users",
        json={
            "schemas": [USER],
            "userName": "g.user",
            "emails": [{"value": " g@example.com ", "type": "work"}],
        },
        headers=SCIM_JSON,
    )
    assert created.status_code == 201, created.text
    path = 'emails[value eq " g@example.com "]'
    removed = patch(client, f"/Users/{created.json()['id']}", {"op": "remove", "path": path})
    assert removed.status_code in (200, 204), removed.text
    assert "email" not in inbound.local().get_user("g.user").claims


def test_a_search_finds_a_value_by_the_spelling_the_client_sent(inbound: Any) -> None:  # noqa: F811
    """``title eq " CTO "`` found nobody, while ``title eq "CTO"`` found the user the
    client created with ``" CTO "``."""
    client = inbound.client
    created = client.post("/Users", json=SPACED, headers=SCIM_JSON)
    assert created.status_code == 201, created.text
    for spelled in ('title eq " CTO "', 'emails[value eq " alice@example.com "]'):
        found = client.get("/Users", params={"filter": spelled}).json()
        assert [u["userName"] for u in found["Resources"]] == ["alice"], (spelled, found)


def _titled(client: Any, name: str, title: str) -> None:
    made = client.post(
        "/Users", json={"schemas": [USER], "userName": name, "title": title}, headers=SCIM_JSON
    )
    assert made.status_code == 201, made.text


def _found(client: Any, scim_filter: str) -> list[str]:
    found = client.get("/Users", params={"filter": scim_filter}).json()
    return sorted(r["userName"] for r in found.get("Resources", []))


def test_a_substring_filter_keeps_its_spaces(inbound: Any) -> None:  # noqa: F811
    """Only a whole value is compared trimmed: ``co " of "`` found "Officer" too, and
    ``co " "`` every user with a title, once the search trimmed every literal."""
    _titled(inbound.client, "ann", "Head of Sales")
    _titled(inbound.client, "bob", "Officer")
    assert _found(inbound.client, 'title co " of "') == ["ann"]
    assert _found(inbound.client, 'title co " "') == ["ann"]
    assert _found(inbound.client, 'title eq " Officer "') == ["bob"]


def test_a_search_by_a_value_sent_with_a_line_separator_finds_it(inbound: Any) -> None:  # noqa: F811
    """The core trims U+2028 off a value's ends (a line break), and so does a filter:
    the filter trimmed with str.strip and the core with another rule, so a client
    that created ``"Ops\\u2028"`` found nobody by that spelling, or by ``Ops`` once
    the core kept it (R7 finding 3). One trimming rule for both."""
    _titled(inbound.client, "lsep", "Ops\u2028")
    assert inbound.local().get_user("lsep").claims["title"] == "Ops"
    assert _found(inbound.client, 'title eq "Ops\\u2028"') == ["lsep"]
    assert _found(inbound.client, 'title eq "Ops"') == ["lsep"]
    # what trimming leaves alone, the filter leaves alone too: U+0085 is refused
    assert _found(inbound.client, 'title eq "Ops\\u0085"') == []


def test_an_invisible_character_at_a_values_end_is_refused(inbound: Any) -> None:  # noqa: F811
    """``"Ops\\u200b"`` was stored, looked like Ops, and ``title eq "Ops"`` found
    nobody (R7 finding 9): refused, naming the character."""
    made = inbound.client.post(
        "/Users",
        json={"schemas": [USER], "userName": "zw", "title": "Ops\u200b"},
        headers=SCIM_JSON,
    )
    detail = scim_error(made, 400, "invalidValue")
    assert "U+200B (ZERO WIDTH SPACE)" in detail, detail
    assert _found(inbound.client, 'userName eq "zw"') == []
