"""Mapping expressions: the functions as an administrator uses them, the errors
`config validate` gives (file:line), safety, and unique() at a real SCIM server."""

from __future__ import annotations

import pytest

from idprov.provisioning.expressions import ExpressionError, compile_expression
from idprov.provisioning.mapping import check_template, render
from idprov.provisioning.sync import compute_plan
from tests.outbound_helpers import make_service

ALICE = {
    "given_name": "Zoë",
    "family_name": "Ørsted Müller",
    "display_name": None,
    "email": "zoe@example.com",
    "country": "DE",
    "start_date": "2024-03-01T09:30:00Z",
    "groups": ["staff", "dev"],
    "UN": "zoe",
    "ID": "u-1",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("=lower(given_name)", "zoë"),
        ("=upper(normalize(given_name))", "ZOE"),
        ("=normalize(family_name)", "Orsted Muller"),
        ("=strip_spaces(normalize(family_name))", "OrstedMuller"),
        ('=replace(email, "@example.com", "@corp.example")', "zoe@corp.example"),
        ('=join(".", lower(given_name), display_name, "x")', "zoë.x"),
        ("=coalesce(display_name, given_name, UN)", "Zoë"),
        ("=left(UN, 2)", "zo"),
        ("=mid(family_name, 3, 4)", "sted"),
        ("=right(UN, 1)", "e"),
        ('=switch(country, "Other", "DE", "Germany", "FR", "France")', "Germany"),
        ('=switch(email, "Other", "DE", "Germany")', "Other"),
        ('=if(country == "DE", "EU", "World")', "EU"),
        ('=if(display_name, display_name, "none")', "none"),
        ('=if(country != "DE", "x")', None),
        ('=format_date(start_date, "%Y-%m-%d")', "2024-03-01"),
        ('=format_date("01/02/2023", "%Y-%m-%d", "%d/%m/%Y")', "2023-02-01"),
        ('=format_date("not a date", "%Y")', None),
        ('=item(split(email, "@"), 2)', "example.com"),
        ('=item(split(email, "@"), -2)', "zoe"),
        ('=item(split(email, "@"), 3)', None),
        ("=upper(groups)", ["STAFF", "DEV"]),
        ('=lower(given_name) & "." & lower(family_name)', "zoë.ørsted müller"),
        ('=display_name & ""', None),
        ('="constant"', "constant"),
        ("=display_name", None),
        ("{given_name} {family_name}", "Zoë Ørsted Müller"),
    ],
)
def test_expression_values(template, expected):
    check_template(template, ALICE)
    assert render(template, ALICE) == expected


def test_unique_candidates_are_numbered_with_n():
    expression = compile_expression('unique(lower(UN & N) & "@example.com", "other")')
    candidates = list(expression.unique_values(ALICE))
    assert candidates[:3] == ["zoe@example.com", "zoe2@example.com", "zoe3@example.com"]
    assert candidates[-1] == "other" and len(candidates) == 100


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("lowr(given_name)", "unknown function 'lowr'", 1),
        ("lower(given_name", "expected ')', found the end", 17),
        ("lower(given_name, UN)", "lower takes 1 argument: lower(value)", 1),
        ("left(UN, given_name)", "left: argument 2 must be a whole number", 10),
        ('switch(UN, "d", "a")', "switch takes at least 4 arguments", 1),
        ("lower(UN & N)", "N (the number of a unique() try) is only allowed in unique()", 12),
        ("lower(unique(UN))", "unique() must be the whole expression", 7),
        ("UN.__class__", "unexpected '.'", 3),
        ("UN[0]", "unexpected '['", 3),
        ("", "expected a value, found the end", 1),
    ],
)
def test_malformed_expressions_say_what_and_where(text, message, column):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert message in str(caught.value)
    assert caught.value.column == column


def test_switch_arity_message():
    with pytest.raises(ExpressionError, match="switch takes key/result pairs"):
        compile_expression('switch(UN, "d", "a", "b", "c")')


def test_unknown_names_are_refused_against_the_claims():
    with pytest.raises(ExpressionError, match="unknown name 'nickname_x'"):
        check_template("=lower(nickname_x)", ["given_name"])
    check_template("=lower(given_name)", ["given_name"])


def test_no_code_runs_and_no_attribute_is_reached():
    """Python syntax is not the language: none of these compile."""
    for text in ("__import__('os')", "(lambda: 1)()", "UN + 1", "[x for x in UN]", "a.b"):
        with pytest.raises(ExpressionError):
            compile_expression(text)


def test_config_validate_names_file_line_and_column(cli, write_config):
    path = write_config(
        "identity_providers:\n"
        "  - name: target\n"
        "    connector: scim2\n"
        "    options: {base_url: 'https://scim.example.com/v2', auth: bearer,"
        " token: env:T}\n"
        "    attributes:\n"
        "      displayName: '=lower(given_name'\n"
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:6:")
    assert "identity_providers[0].attributes.displayName" in error["message"]
    assert "expected ')', found the end (at column 18 of the expression)" in error["message"]


def test_unique_user_names_at_a_real_scim_server(tmp_path, scim2_server, monkeypatch):
    """Two Zoë Müllers: the second gets the next free user name, asked of the target,
    and keeps it on later syncs (no lookup, no change)."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    idp = f"""
  - name: target
    connector: scim2
    username: '=unique(lower(normalize(given_name & "." & family_name)) & N)'
    attributes:
      displayName: '=join(" ", given_name, upper(family_name))'
    options: {{base_url: '{scim2_server.base_url}', auth: bearer, token: env:SCIM_TOKEN}}
"""
    claims = {"given_name": "Zoë", "family_name": "Müller"}
    with make_service(tmp_path, idp, ["target"]) as svc:
        svc.add_user("zoe1", claims)
        svc.add_user("zoe2", claims)
        svc.update_user("zoe1", {"title": "Boss"})
        assert compute_plan(svc).empty  # the names chosen are kept: nothing to do
    users = {u["userName"]: u for u in scim2_server.users()}
    assert sorted(users) == ["zoe.muller", "zoe.muller2"]
    assert users["zoe.muller"]["displayName"] == "Zoë MÜLLER"
    assert users["zoe.muller"]["title"] == "Boss"


def test_unique_email_is_asked_of_the_target_by_its_attribute(tmp_path, scim2_server, monkeypatch):
    """A value already held at the target by a user idprov does not know is skipped."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    scim2_server.client.post(
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "someone-else",
            "emails": [{"type": "work", "value": "ann.lee@example.com"}],
        },
    ).raise_for_status()
    email = '=unique(lower(given_name & "." & family_name & N) & "@example.com")'
    idp = f"""
  - name: target
    connector: scim2
    attributes:
      'emails[type eq "work"].value': '{email}'
    options: {{base_url: '{scim2_server.base_url}', auth: bearer, token: env:SCIM_TOKEN}}
"""
    with make_service(tmp_path, idp, ["target"]) as svc:
        svc.add_user("annlee", {"given_name": "Ann", "family_name": "Lee"})
    ann = next(u for u in scim2_server.users() if u["userName"] == "annlee")
    assert ann["emails"][0]["value"] == "ann.lee2@example.com"


def test_every_candidate_taken_fails_that_user_with_a_hint(tmp_path, scim2_server, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    idp = f"""
  - name: target
    connector: scim2
    username: '=unique(lower(family_name))'
    options: {{base_url: '{scim2_server.base_url}', auth: bearer, token: env:SCIM_TOKEN}}
"""
    with make_service(tmp_path, idp, ["target"]) as svc:
        svc.add_user("first", {"family_name": "Lee"})
        result = svc.add_user("second", {"family_name": "Lee"})
    [report] = result.outbound.idps.values()
    [failure] = [o for o in report.operations if o.outcome == "failed"]
    assert "every candidate for userName is taken at target (lee)" in failure.error
    assert [u["userName"] for u in scim2_server.users()] == ["lee"]


def test_a_unique_attribute_added_later_is_chosen_once(tmp_path, scim2_server, monkeypatch):
    from idprov.provisioning.sync import run_sync

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    base = f"""
  - name: target
    connector: scim2
    options: {{base_url: '{scim2_server.base_url}', auth: bearer, token: env:SCIM_TOKEN}}
"""
    with make_service(tmp_path, base, ["target"]) as svc:
        svc.add_user("annlee", {"given_name": "Ann", "family_name": "Lee"})
    scim2_server.client.post(  # someone else holds the first candidate already
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "other",
            "emails": [{"type": "work", "value": "ann.lee@example.com"}],
        },
    ).raise_for_status()
    email = '=unique(lower(given_name & "." & family_name & N) & "@example.com")'
    with_email = (
        base
        + f"""    attributes:
      'emails[type eq "work"].value': '{email}'
"""
    )
    with make_service(tmp_path, with_email, ["target"]) as svc:
        plan = compute_plan(svc)
        assert [i.action for p in plan.idps for i in p.items] == ["update"]
        assert run_sync(svc).outbound.ok
        assert compute_plan(svc).empty
    ann = next(u for u in scim2_server.users() if u["userName"] == "annlee")
    assert ann["emails"][0]["value"] == "ann.lee2@example.com"


def test_unique_on_an_attribute_needs_a_connector_that_can_check_it(cli, write_config):
    path = write_config(
        "identity_providers:\n"
        "  - name: legacy\n"
        "    connector: spml\n"
        "    options: {base_url: 'https://spml.example.com', auth: bearer, token: env:T}\n"
        "    attributes:\n"
        "      mail: '= unique(lower(UN & N) & \"@example.com\")'\n"
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:5:")
    assert "mail: the spml connector can check only user names for unique()" in error["message"]
    assert error["hint"] == "use unique() in the IdP's username template only"


def test_a_unique_name_held_by_the_users_own_account_is_found_again(
    tmp_path, scim2_server, monkeypatch
):
    """The ledger lost the user (as after a crash between the create and its record):
    the name the target holds with this user's externalId is this user's, so it is
    adopted, not taken as someone else's and duplicated under the next name."""
    from idprov.provisioning.sync import run_sync

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    idp = f"""
  - name: target
    connector: scim2
    username: '=unique(lower(given_name & "." & family_name & N))'
    options: {{base_url: '{scim2_server.base_url}', auth: bearer, token: env:SCIM_TOKEN}}
"""
    with make_service(tmp_path, idp, ["target"]) as svc:
        user = svc.add_user("annlee", {"given_name": "Ann", "family_name": "Lee"}).entity
        [remote] = scim2_server.users()
        svc.state.ledger.forget("target", "user", user.id)
        assert run_sync(svc).outbound.ok
        entry = svc.state.ledger.get("target", "user", user.id)
    assert [u["userName"] for u in scim2_server.users()] == ["ann.lee"]
    assert entry is not None and entry.remote_id == remote["id"]
