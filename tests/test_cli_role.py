"""`idprov role ...` through the CLI: add, list, show, delete, rename, assign, unassign."""

from __future__ import annotations

import pytest


@pytest.fixture
def team(cli):
    """Role staff with alice and bob; role admins, empty; carol in no role."""
    for name in ("alice", "bob", "carol"):
        cli("user", "add", name).ok()
    cli("role", "add", "staff").ok()
    cli("role", "add", "admins").ok()
    cli("role", "assign", "staff", "alice", "bob").ok()


def members(cli, role: str) -> list[str]:
    return cli("role", "show", role, "--json").json()["members"]


def roles_of(cli, user: str) -> list[str]:
    return cli("user", "show", user, "--json").json()["roles"]


# ---- add, list, show


def test_add_list_show(cli):
    assert cli("role", "add", "Engineering").ok().stdout.strip() == "✓ added role Engineering"
    cli("role", "add", "admins").ok()
    roles = cli("role", "list", "--json").items()
    assert [(r["name"], r["domain"], r["member_count"]) for r in roles] == [
        ("admins", "PRIMARY", 0),
        ("Engineering", "PRIMARY", 0),
    ]
    role = cli("role", "show", "engineering", "--json").json()
    assert role["name"] == "Engineering"
    assert role["members"] == []


def test_add_json_is_the_change_result(cli):
    result = cli("role", "add", "staff", "--json").json()
    assert (result["action"], result["target"], result["changed"]) == ("role.add", "staff", True)
    assert result["entity"]["name"] == "staff"


def test_list_rich_view_says_what_json_says(cli, team):
    roles = cli("role", "list", "--json").items()
    lines = cli("role", "list").ok().stdout.strip().splitlines()
    assert lines[0].split() == ["role", "domain", "members", "created"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [[r["name"], r["domain"], str(r["member_count"]), r["created"]] for r in roles]
    assert [r[0] for r in rows] == ["admins", "staff"]
    assert [r[2] for r in rows] == ["0", "2"]


def test_show_rich_view_says_what_json_says(cli, team):
    role = cli("role", "show", "staff", "--json").json()
    lines = cli("role", "show", "staff").ok().stdout.strip().splitlines()
    assert lines[0].split() == ["staff", "id", role["id"], "2", "members"]
    assert [line.strip() for line in lines[1:]] == role["members"] == ["alice", "bob"]


def test_list_prefix_and_domain(cli, team):
    cli("role", "add", "Straßenbau").ok()
    names = [r["name"] for r in cli("role", "list", "--prefix", "ST", "--json").items()]
    assert names == ["staff", "Straßenbau"]
    names = [r["name"] for r in cli("role", "list", "--prefix", "straß", "--json").items()]
    assert names == ["Straßenbau"]
    names = [r["name"] for r in cli("role", "list", "--prefix", "STRASS", "--json").items()]
    assert names == ["Straßenbau"]
    empty = cli("role", "list", "--prefix", "zz").ok()
    assert (empty.stdout, empty.stderr.strip()) == ("", "no roles")
    assert len(cli("role", "list", "--domain", "primary", "--json").items()) == 3
    cli("role", "list", "--domain", "NOPE").fails(3)


def test_show_unknown_role_exits_3(cli):
    assert "no role 'nope'" in cli("role", "show", "nope").fails(3)
    assert cli("role", "show", "nope", "--json").error(3)["code"] == "not_found"


# ---- refusals change nothing


@pytest.mark.parametrize(
    ("args", "exit_code", "says"),
    [
        (["add", "staff"], 4, "already exists"),
        (["add", "STAFF"], 4, "'staff' already exists"),
        (["add", "ab"], 5, r"^[\S]{3,30}$"),
        (["add", "x" * 31], 5, r"^[\S]{3,30}$"),
        (["add", "two words"], 5, r"^[\S]{3,30}$"),
        (["add", "bell\x07role"], 5, r"^[\S]{3,30}$"),
        (["add", "NOPE/role"], 3, "no userstore with domain 'NOPE'"),
        (["rename", "staff", "admins"], 4, "already exists"),
        (["rename", "staff", "ADMINS"], 4, "already exists"),
        (["rename", "staff", "ab"], 5, r"^[\S]{3,30}$"),
        (["rename", "nope", "other"], 3, "no role 'nope'"),
        (["assign", "nope", "carol"], 3, "no role 'nope'"),
        (["assign", "admins", "carol", "nobody"], 3, "no user 'nobody'"),
        (["unassign", "staff", "alice", "nobody"], 3, "no user 'nobody'"),
        (["unassign", "nope", "alice"], 3, "no role 'nope'"),
        (["delete", "nope", "--yes"], 3, "no role 'nope'"),
    ],
)
def test_refusals_change_nothing(cli, state, wso2, team, args, exit_code, says):
    before = state.dump()
    assert says in cli("role", *args).fails(exit_code)
    assert state.dump() == before


def test_refusals_in_json_mode(cli, wso2, team):
    assert cli("role", "add", "Staff", "--json").error(4)["code"] == "conflict"
    error = cli("role", "add", "ab", "--json").error(5)
    assert error["code"] == "policy"
    assert r"^[\S]{3,30}$" in error["message"]
    assert cli("role", "assign", "staff", "nobody", "--json").error(3)["code"] == "not_found"


def test_custom_role_name_pattern_is_named(cli, state, write_config):
    pattern = "^[a-z][a-z-]{2,20}$"
    write_config(
        f"userstores:\n  - domain: PRIMARY\n    policy:\n      role_name_pattern: '{pattern}'\n"
    )
    assert pattern in cli("role", "add", "Staff").fails(5)
    assert state.counts()["roles"] == 0
    cli("role", "add", "staff-all").ok()


@pytest.mark.parametrize("name", ["Équipe", "開発チーム", "o'reilly;--", '"quoted"', "%_*"])
def test_unusual_role_names_round_trip(cli, name):
    cli("user", "add", "alice").ok()
    cli("role", "add", name).ok()
    cli("role", "assign", name, "alice").ok()
    role = cli("role", "show", name.upper(), "--json").json()
    assert (role["name"], role["members"]) == (name, ["alice"])
    assert roles_of(cli, "alice") == [name]
    assert name in cli("role", "list").ok().stdout
    page = cli("user", "list", "--role", name, "--json").json()
    assert [u["username"] for u in page["items"]] == ["alice"]


# ---- delete


def test_delete_asks_and_no_aborts(cli, state, team):
    before = state.dump()
    r = cli("role", "delete", "staff", input="n\n")
    assert r.exit_code == 1
    assert "Delete role staff (2 members)? [y/N]" in r.stderr
    assert "aborted" in r.stderr
    assert state.dump() == before


def test_delete_keeps_the_members(cli, state, team):
    r = cli("role", "delete", "STAFF", input="y\n").ok()
    assert "deleted role staff" in r.stdout
    cli("role", "show", "staff").fails(3)
    assert roles_of(cli, "alice") == []
    assert state.counts()["users"] == 3
    entry = cli("log", "--json").items()[0]
    assert (entry["action"], entry["target"]) == ("role.delete", "staff")
    assert entry["details"] == {"members": ["alice", "bob"]}


def test_delete_with_yes_does_not_ask(cli, team):
    r = cli("role", "delete", "admins", "--yes", "--json").json()
    assert (r["action"], r["target"]) == ("role.delete", "admins")
    assert [x["name"] for x in cli("role", "list", "--json").items()] == ["staff"]


# ---- rename


def test_rename_keeps_id_and_members(cli, team):
    before = cli("role", "show", "staff", "--json").json()
    r = cli("role", "rename", "staff", "Employees").ok()
    assert r.stdout.strip() == "✓ renamed role staff → Employees"
    after = cli("role", "show", "employees", "--json").json()
    assert (after["id"], after["name"], after["members"]) == (
        before["id"],
        "Employees",
        before["members"],
    )
    cli("role", "show", "staff").fails(3)
    assert roles_of(cli, "alice") == ["Employees"]
    entry = cli("log", "--json").items()[0]
    assert (entry["action"], entry["target"], entry["details"]) == (
        "role.rename",
        "Employees",
        {"from": "staff"},
    )


def test_rename_can_change_only_the_case(cli, team):
    cli("role", "rename", "staff", "Staff").ok()
    assert [r["name"] for r in cli("role", "list", "--json").items()] == ["admins", "Staff"]


# ---- assign, unassign


def test_assign_and_unassign(cli, team):
    r = cli("role", "assign", "admins", "alice", "CAROL").ok()
    assert r.stdout.strip() == "✓ assigned role admins to alice, CAROL"
    assert members(cli, "admins") == ["alice", "carol"]
    assert roles_of(cli, "alice") == ["admins", "staff"]
    r = cli("role", "unassign", "admins", "alice").ok()
    assert r.stdout.strip() == "✓ unassigned role admins from alice"
    assert members(cli, "admins") == ["carol"]
    assert cli("role", "list", "--json").items()[0]["member_count"] == 1


def test_assign_skips_members_already_there(cli, state, team):
    result = cli("role", "assign", "staff", "alice", "carol", "--json").json()
    assert result["details"] == {"added": ["carol"]}
    assert result["entity"]["members"] == ["alice", "bob", "carol"]
    before = state.dump()
    r = cli("role", "assign", "staff", "alice").ok()
    assert "unchanged" in r.stdout
    assert cli("role", "assign", "staff", "Alice", "--json").json()["changed"] is False
    assert state.dump() == before


def test_unassign_non_member_changes_nothing(cli, state, team):
    before = state.dump()
    assert "unchanged" in cli("role", "unassign", "staff", "carol").ok().stdout
    result = cli("role", "unassign", "staff", "carol", "--json").json()
    assert (result["changed"], result["details"]) == (False, {"removed": []})
    assert state.dump() == before


def test_membership_changes_are_audited(cli, team):
    cli("role", "unassign", "staff", "bob").ok()
    entries = cli("log", "--action", "role.", "--json").items()
    assert [(e["action"], e["target"], e["details"]) for e in entries[:2]] == [
        ("role.unassign", "staff", {"users": ["bob"]}),
        ("role.assign", "staff", {"users": ["alice", "bob"]}),
    ]
