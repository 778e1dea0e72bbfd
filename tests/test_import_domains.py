"""`idprov import users` with several domains: a roles cell may name a role as
``DOMAIN/role`` when DOMAIN is the user's own (the README: "DOMAIN/role everywhere"),
and says clearly that a user's roles are in its own domain when it names another.
Duplicates inside a file are reported on every row that holds the name, and none of
them is imported: which row was meant is for the administrator to say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HEADER = "username,email,roles\n"


@pytest.fixture
def domains(tmp_path: Path, cli) -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: CORP
    path: {tmp_path / "data" / "corp.db"}
  - domain: HR
    path: {tmp_path / "data" / "hr.db"}
""")
    for role in ("CORP/staff", "CORP/eng", "HR/staff", "staff"):
        cli("role", "add", role).ok()


def imported(cli, tmp_path: Path, rows: str, *options: str) -> tuple[int, dict]:
    path = tmp_path / "users.csv"
    path.write_text(HEADER + rows)
    run = cli("import", "users", str(path), "--json", *options)
    return run.exit_code, json.loads(run.stdout)


def roles_of(cli, user: str) -> list[str]:
    return cli("user", "show", user, "--json").json()["roles"]


def test_a_role_named_with_the_users_own_domain_is_that_role(cli, tmp_path, domains):
    code, report = imported(
        cli,
        tmp_path,
        "CORP/dave,dave@example.com,CORP/staff;corp/eng\n"
        "PRIMARY/pat,pat@example.com,PRIMARY/staff\n"
        "CORP/dora,dora@example.com,staff\n",
    )
    assert code == 0, report
    assert (report["created"], report["rejected"]) == (3, 0)
    assert roles_of(cli, "CORP/dave") == ["eng", "staff"]
    assert roles_of(cli, "pat") == ["staff"]
    assert roles_of(cli, "CORP/dora") == ["staff"]


def test_a_role_of_another_domain_says_roles_are_in_the_users_domain(cli, tmp_path, domains):
    code, report = imported(cli, tmp_path, "CORP/erin,erin@example.com,HR/staff\n")
    assert code == 10, report
    [error] = report["errors"]
    assert error["column"] == "roles"
    assert "role 'HR/staff' is in the HR domain" in error["message"]
    assert "a user's roles are in its own domain (CORP)" in error["message"]
    assert "contains '/'" not in error["message"]
    cli("user", "show", "CORP/erin").fails(3)


@pytest.mark.parametrize("batches", [[], ["--batch-size", "1"]], ids=["one batch", "a row each"])
def test_every_row_of_a_name_given_twice_is_reported_and_none_is_imported(
    cli, tmp_path, domains, batches
):
    """The trial: the first of two rows (bad e-mail) was rejected, the second imported
    with no duplicate reported."""
    code, report = imported(
        cli,
        tmp_path,
        "HR/dup1,bad-email,\nHR/DUP1,dup1@example.com,\n"
        "HR/twice,a@example.com,\nHR/Twice,b@example.com,\nHR/once,o@example.com,\n",
        *batches,
    )
    assert code == 9, report
    assert (report["created"], report["rejected"]) == (1, 4)
    errors = {e["line"]: e["message"] for e in report["errors"]}
    assert sorted(errors) == [2, 3, 4, 5]
    assert "email" in errors[2] and "also on line 3" in errors[2]
    assert "also on line 2" in errors[3]
    assert "also on line 5" in errors[4] and "also on line 4" in errors[5]
    assert all("names are case-insensitive" in m for m in errors.values())
    for user in ("HR/dup1", "HR/twice"):
        cli("user", "show", user).fails(3)
    cli("user", "show", "HR/once").ok()


def test_a_change_names_users_and_roles_of_a_domain_alike(cli, domains):
    """The trial: 'renamed role Sales, EMEA → CORP/Sales+EMEA' and 'assigned role
    CORP/staff to bob' (bob of CORP): each name is written with its domain, as the
    command takes it."""
    cli("user", "add", "CORP/bob").ok()
    assert (
        "assigned role CORP/staff to CORP/bob"
        in cli("role", "assign", "CORP/staff", "CORP/bob").ok().stdout
    )
    assert (
        "unassigned role CORP/staff from CORP/bob"
        in cli("role", "unassign", "CORP/staff", "CORP/bob", "--yes").ok().stdout
    )
    assert (
        "renamed role CORP/staff → CORP/crew"
        in cli("role", "rename", "CORP/staff", "CORP/crew").ok().stdout
    )
    assert "renamed role staff → team" in cli("role", "rename", "staff", "team").ok().stdout
    cli("role", "add", "Internal/auditors").ok()
    assert (
        "assigned role Internal/auditors to CORP/bob"
        in cli("role", "assign", "Internal/auditors", "CORP/bob").ok().stdout
    )
