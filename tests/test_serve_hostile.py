"""What a client can send that must never be a 5xx: JSON nested a thousand deep, page
numbers past any integer, domain prefixes that name no userstore, discovery once every
token is revoked. Each answers 4xx with RFC 7644's scimType, and nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_serve_scim import (
    CRM_TOKEN,
    GROUP,
    HR_TOKEN,
    PATCH_OP,
    SCIM_JSON,
    SEARCH,
    USER,
    Inbound,
    new_user,
    running,
    scim_error,
    serve_config,
)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path)) as inbound:
        yield inbound


def deep(depth: int = 1000) -> bytes:
    return b"[" * depth + b"]" * depth


def test_json_nested_a_thousand_deep_is_invalid_syntax(served):
    client = served.client
    alice = new_user(client, "alice", title="Dev")
    bodies = {
        ("PATCH", f"/Users/{alice['id']}"): b'{"schemas": ["%s"], "Operations": [{"op": "add",'
        b' "path": "title", "value": %s}]}' % (PATCH_OP.encode(), deep()),
        ("POST", "/Users"): b'{"schemas": ["%s"], "userName": "bob", "x": %s}'
        % (USER.encode(), deep()),
        ("PUT", f"/Users/{alice['id']}"): b'{"schemas": ["%s"], "userName": "alice", "x": %s}'
        % (USER.encode(), deep()),
        ("POST", "/.search"): b'{"filter": %s}' % deep(),
    }
    for (method, path), body in bodies.items():
        response = client.request(method, path, content=body, headers=SCIM_JSON)
        assert response.status_code == 400, (method, path, response.text)
        assert response.json().get("scimType") in ("invalidSyntax", "invalidValue")
    assert client.get(f"/Users/{alice['id']}").json()["title"] == "Dev"
    assert client.get("/Users").json()["totalResults"] == 1


@pytest.mark.parametrize("start", ["99999999999999999999999", "9223372036854775808", "-5"])
def test_page_numbers_past_any_integer_are_an_empty_page_or_refused(served, start):
    new_user(served.client, "alice")
    for path in ("/Users", "/Groups"):
        response = served.client.get(path, params={"startIndex": start, "count": "10"})
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert response.json().get("Resources", []) == [] or start == "-5"
    huge = served.client.get("/Users", params={"count": "99999999999999999999999"})
    assert huge.status_code in (200, 400), huge.text


def test_domain_prefixes_that_name_no_userstore_are_invalid_value(served):
    client = served.client
    body = {"schemas": [USER], "userName": "NOPE/alice"}
    detail = scim_error(client.post("/Users", json=body, headers=SCIM_JSON), 400, "invalidValue")
    assert "NOPE" in detail
    body = {"schemas": [GROUP], "displayName": "NOPE/staff"}
    scim_error(client.post("/Groups", json=body, headers=SCIM_JSON), 400, "invalidValue")
    found = client.get("/Users", params={"filter": 'userName eq "NOPE/alice"'})
    assert found.status_code == 200 and found.json()["totalResults"] == 0
    assert client.get("/Users").json()["totalResults"] == 0


def test_discovery_answers_after_every_token_is_revoked(tmp_path, monkeypatch, cli, write_config):
    text = f"version: 1\ndata_dir: {tmp_path / 'data'}\n"
    path = write_config(text)
    token = cli("--config", str(path), "token", "create", "--app", "resident", "--json").json()
    from idprov.config import load_config

    with running(load_config(str(path)), applications=None) as inbound:
        client = inbound.as_token(token["token"])
        assert client.get("/Users").status_code == 200
        cli("--config", str(path), "token", "revoke", token["id"]).ok()
        assert client.get("/Users").status_code == 401
        config = client.get("/ServiceProviderConfig")
        assert config.status_code == 200, config.text


@pytest.mark.parametrize(
    "path,attribute", [("/Users", "userName"), ("/Groups", "displayName"), ("/Users", "externalId")]
)
def test_a_lone_surrogate_in_a_filter_value_is_an_invalid_filter(served, path, attribute):
    """A filter's string escapes can spell a lone UTF-16 surrogate, which no store can
    hold: a 400 naming it (it was a 500 with a UnicodeEncodeError in the log)."""
    new_user(served.client, "alice")
    for value in ("\\ud800", "a\\udfffb"):
        query = f'{attribute} eq "{value}"'
        response = served.client.get(path, params={"filter": query})
        assert "surrogate" in scim_error(response, 400, "invalidFilter")
        response = served.client.post(
            "/.search", json={"schemas": [SEARCH], "filter": query}, headers=SCIM_JSON
        )
        assert "surrogate" in scim_error(response, 400, "invalidFilter")
    pair = served.client.get(path, params={"filter": f'{attribute} eq "\\ud83d\\ude00"'})
    assert pair.status_code == 200 and pair.json()["totalResults"] == 0


def test_a_filter_of_a_thousand_comparisons_is_refused_and_two_hundred_answered(served):
    """A flat ``or`` chain is not limited by the parser's nesting bound; past 200
    comparisons it is a 400 (a thousand was a 500: SQLite's expression tree too deep),
    and 200 are answered exactly."""
    client = served.client
    new_user(client, "alice", title="Dev")
    new_user(client, "bob", title="Ops")
    chain = " or ".join(['title eq "x"'] * 999 + ['title eq "Dev"'])
    detail = scim_error(client.get("/Users", params={"filter": chain}), 400, "invalidFilter")
    assert "1000 comparisons" in detail and "200" in detail
    names = " or ".join([f'userName eq "u{i}"' for i in range(199)] + ['userName eq "bob"'])
    found = client.get("/Users", params={"filter": names})
    assert found.status_code == 200, found.text
    assert [u["userName"] for u in found.json()["Resources"]] == ["bob"]


def test_errors_speak_of_the_request_not_of_the_validation_library(served):
    """Details named pydantic's model classes, its error types and a URL to its
    documentation, and query parameters by their Python names."""
    client = served.client
    alice = new_user(client, "alice")
    wrong = {"op": "replace", "path": "title", "value": {"a": 1}}
    body = {"schemas": [PATCH_OP], "Operations": [wrong]}
    response = client.patch(f"/Users/{alice['id']}", json=body, headers=SCIM_JSON)
    assert scim_error(response, 400, "invalidValue") == "title: Input should be a valid string"
    pathless = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": "Lead"}]}
    response = client.patch(f"/Users/{alice['id']}", json=pathless, headers=SCIM_JSON)
    detail = scim_error(response, 400, "invalidValue")  # was: "... written to '' must be ..."
    assert detail.startswith("an operation without a path writes attributes: its value must")
    both = {"attributes": "userName", "excludedAttributes": "userName"}
    detail = scim_error(client.get("/Users", params=both), 400, "invalidValue")
    assert detail == "'attributes' and 'excludedAttributes' are mutually exclusive"
    text = {"Content-Type": "text/plain; charset=utf-8"}
    detail = scim_error(client.post("/Users", content=b"userName=bob", headers=text), 415)
    assert "'text/plain'" in detail and "application/scim+json" in detail
    assert client.get("/Users").json()["totalResults"] == 1


def test_a_report_of_several_validation_errors_reads_as_one_line():
    from idprov.inbound.scim.protocol import readable

    report = (
        "2 validation errors for User\nuserName\n  Input should be a valid string "
        "[type=string_type, input_value=5, input_type=int]\n    For further information "
        "visit https://errors.pydantic.dev/2.14/v/string_type\nemails.0.value\n  Field "
        "required [type=missing]\n    For further information visit https://x"
    )
    assert readable(report) == (
        "userName: Input should be a valid string; emails.0.value: Field required"
    )
    assert readable("no user with id 'x'") == "no user with id 'x'"


def test_a_name_that_would_look_like_another_is_invalid_value(served):
    client = served.client
    alice = new_user(client, "alice")
    for name in ("al\u200bice", "alice\u00ad"):
        body = {"schemas": [USER], "userName": name}
        detail = scim_error(
            client.post("/Users", json=body, headers=SCIM_JSON), 400, "invalidValue"
        )
        assert "does not show" in detail
    rename = {"op": "replace", "path": "userName", "value": "ali\u200dce"}
    body = {"schemas": [PATCH_OP], "Operations": [rename]}
    response = client.patch(f"/Users/{alice['id']}", json=body, headers=SCIM_JSON)
    assert "U+200D" in scim_error(response, 400, "invalidValue")
    assert [u["userName"] for u in client.get("/Users").json()["Resources"]] == ["alice"]


def test_the_outbox_worker_logs_a_database_outage_in_one_line(tmp_path, monkeypatch, caplog):
    """A state database that went away (PostgreSQL restarting) made the outbox worker
    log a full traceback every time it tried again, under a one-line message that
    said it all."""
    from idprov.errors import StoreError
    from idprov.inbound.scim_server import InboundServer
    from idprov.provisioning.outbound import Outbound

    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    server = InboundServer(serve_config(tmp_path))
    tries: list[int] = []

    def work(self, stop):
        tries.append(1)
        if len(tries) == 2:
            stop.set()
            return
        raise StoreError("the state database cannot be reached", hint="is PostgreSQL running?")

    monkeypatch.setattr(Outbound, "work", work)
    monkeypatch.setattr(server._stop, "wait", lambda seconds: None)
    try:
        with caplog.at_level("ERROR", logger="idprov.serve"):
            server._work()
    finally:
        server.close()
    [record] = caplog.records
    assert not record.exc_info and "cannot be reached (is PostgreSQL running?)" in record.message


def test_a_group_rename_that_would_deprovision_its_members_is_a_409_not_a_500(
    tmp_path, monkeypatch, scim2_server
):
    """Renaming (displayName) a group that is an identity provider's provisioning role
    takes its members out of that IdP's scope: the deletion guard refuses it, and a
    client gets a 409 saying why (a GuardError was a 500)."""
    from tests.outbound_helpers import idp_yaml

    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    idps = idp_yaml("out", scim2_server.base_url, extra="    provisioning_roles: [staff]\n")
    with running(serve_config(tmp_path, idps, "[out]")) as inbound:
        client = inbound.client
        alice = new_user(client, "alice")
        group = client.post(
            "/Groups",
            json={"schemas": [GROUP], "displayName": "staff", "members": [{"value": alice["id"]}]},
            headers=SCIM_JSON,
        ).json()
        rename = {"op": "replace", "path": "displayName", "value": "employees"}
        body = {"schemas": [PATCH_OP], "Operations": [rename]}
        response = client.patch(f"/Groups/{group['id']}", json=body, headers=SCIM_JSON)
        assert response.status_code == 409 and "scope of out" in response.json()["detail"]
        assert "--yes" not in response.json()["detail"]  # CLI flags mean nothing to a client
        assert client.get(f"/Groups/{group['id']}").json()["displayName"] == "staff"
        assert [u["userName"] for u in scim2_server.users()] == ["alice"]
