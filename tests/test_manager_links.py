"""The ``manager`` claim names a user; a rename of that user carries the name to its
reports, and a delete removes it from them (as a directory keeps a manager link), from
the command line as from SCIM (tests/test_serve_clients.py)."""

from __future__ import annotations

import sqlite3

import pytest

from idprov.provisioning.state import AuditQuery


def test_reports_follow_a_rename_and_lose_the_manager_with_a_delete(cli):
    cli("user", "add", "jos\u00e9").ok()
    cli("user", "add", "eve", "-c", "manager=JOS\u00c9").ok()
    cli("user", "rename", "jos\u00e9", "jos\u00e9e").ok()
    assert cli("user", "show", "eve", "--json").json()["claims"]["manager"] == "jos\u00e9e"
    cli("user", "add", "boss").ok()
    cli("user", "add", "ann", "-c", "manager=boss").ok()
    cli("user", "add", "bob", "-c", "manager=BOSS").ok()  # names compare case-insensitively
    cli("user", "add", "bossy").ok()
    cli("user", "add", "cat", "-c", "manager=bossy").ok()
    renamed = cli("user", "rename", "boss", "chief").ok().stdout
    assert "the manager claim of ann, bob follows the new name" in renamed
    claims = {u: cli("user", "show", u, "--json").json()["claims"] for u in ("ann", "bob", "cat")}
    assert [claims[u].get("manager") for u in ("ann", "bob", "cat")] == ["chief", "chief", "bossy"]

    deleted = cli("user", "delete", "chief", "--yes", "--json").ok().json()
    assert deleted["details"]["reports"] == ["ann", "bob"]
    cli("user", "add", "chief").ok()  # a newcomer of the same name manages nobody
    claims = {u: cli("user", "show", u, "--json").json()["claims"] for u in ("ann", "bob", "cat")}
    assert [claims[u].get("manager") for u in ("ann", "bob", "cat")] == [None, None, "bossy"]


def test_each_report_is_a_change_of_its_own_in_the_audit_log(cli):
    from idprov import open_service

    cli("user", "add", "boss").ok()
    cli("user", "add", "ann", "-c", "manager=boss").ok()
    cli("user", "delete", "boss", "--yes").ok()
    with open_service() as service:
        [entry] = service.audit_log(AuditQuery(action="user.update"))
    assert entry.target == "ann" and entry.details == {"claims": ["manager"]}


@pytest.mark.parametrize("name", ["boss", "jos\u00e9"])
def test_the_reports_are_found_by_an_index_not_a_scan(cli, data_dir, name):
    """The condition a rename or delete asks the store (a scan of 100,000 users'
    claims took 0.1 s each time; for a name that is not all ASCII it still did)."""
    from idprov import open_service
    from idprov.model import Condition

    cli("user", "add", "boss").ok()
    with open_service() as service:
        store = service.store("PRIMARY")
        sql, params = store._condition_sql().sql(Condition("eq", "claim:manager", name))
    db = sqlite3.connect(data_dir / "idprov.db")
    plan = " ".join(
        r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN SELECT id FROM users WHERE {sql}", params)
    )
    assert "USING INDEX users_claim_manager" in plan, plan


def test_a_user_who_is_its_own_manager_is_renamed_and_deleted(cli):
    """A self-managed head of an organisation (common in HR exports): the rename
    failed with 'no user' (its own claim was updated under the old name)."""
    cli("user", "add", "ceo", "-c", "manager=ceo").ok()
    cli("user", "add", "bob", "-c", "manager=ceo").ok()
    cli("user", "rename", "ceo", "chief").ok()
    assert cli("user", "show", "chief", "--json").json()["claims"]["manager"] == "chief"
    assert cli("user", "show", "bob", "--json").json()["claims"]["manager"] == "chief"
    cli("user", "delete", "chief", "--yes").ok()
    assert "manager" not in cli("user", "show", "bob", "--json").json()["claims"]


def test_reports_in_a_read_only_store_keep_their_claim(cli, tmp_path, write_config):
    """idprov cannot write a read-only userstore: its users keep the name, and the
    delete or rename of their manager goes on (it failed: 'the HR userstore is
    read-only')."""
    hr = tmp_path / "hr.db"
    stores = "userstores:\n  - domain: PRIMARY\n  - domain: HR\n    path: {}\n{}"
    write_config(f"version: 1\n{stores.format(hr, '')}")
    cli("user", "add", "alice").ok()
    cli("user", "add", "boss").ok()
    cli("user", "add", "HR/bob", "-c", "manager=PRIMARY/alice").ok()
    write_config(f"version: 1\n{stores.format(hr, '    read_only: true')}")
    cli("user", "rename", "alice", "alicia").ok()
    cli("user", "delete", "alicia", "--yes").ok()
    assert cli("user", "show", "HR/bob", "--json").json()["claims"]["manager"] == "PRIMARY/alice"


def test_the_delete_question_counts_the_reports_that_lose_their_manager(cli, state):
    """Declining changes nothing; the question said what the delete's line says after."""
    cli("user", "add", "boss").ok()
    for name, manager in [("bob", "boss"), ("carol", "BOSS"), ("dave", "PRIMARY/boss")]:
        cli("user", "add", name, "-c", f"manager={manager}").ok()
    cli("user", "add", "eve").ok()
    before = state.dump()
    asked = cli("user", "delete", "boss", input="n\n").fails(1)
    question = "Delete user boss and remove the manager claim of 3 users (bob, carol, dave)?"
    assert question in asked
    assert state.dump() == before
    assert "Delete user eve? [y/N]" in cli("user", "delete", "eve", input="n\n").fails(1)
    cli("user", "update", "carol", "--unset", "manager").ok()
    cli("user", "update", "dave", "--unset", "manager").ok()
    one = cli("user", "delete", "boss", input="y\n").ok()
    assert "remove the manager claim of 1 user (bob)?" in one.stderr
    assert "the manager claim of bob is removed" in one.stdout


def test_list_by_manager_finds_the_reports_a_rename_would_change(cli, tmp_path, write_config):
    """`--claim manager=NAME` compares as the rename and delete do (it was exact:
    `manager=boss` missed carol, whose claim says Boss)."""
    hr = tmp_path / "hr.db"
    write_config(f"version: 1\nuserstores:\n  - domain: PRIMARY\n  - domain: HR\n    path: {hr}\n")
    cli("user", "add", "boss").ok()
    cli("user", "add", "HR/boss").ok()
    for name, manager in [("bob", "boss"), ("carol", "Boss"), ("dave", "PRIMARY/BOSS")]:
        cli("user", "add", name, "-c", f"manager={manager}").ok()
    cli("user", "add", "HR/erin", "-c", "manager=PRIMARY/boss").ok()
    cli("user", "add", "HR/finn", "-c", "manager=boss").ok()  # HR's boss
    cli("user", "add", "bossy").ok()
    cli("user", "add", "gail", "-c", "manager=bossy").ok()

    def listed(*args: str) -> list[str]:
        items = cli("user", "list", "--json", *args).items()
        return [f"{u['domain']}/{u['username']}" for u in items]

    bosses = ["PRIMARY/bob", "PRIMARY/carol", "PRIMARY/dave", "HR/erin"]
    for spelling in ("boss", "BOSS", "primary/Boss"):
        assert listed("--claim", f"manager={spelling}") == bosses
    assert listed("--claim", "manager=HR/BOSS") == ["HR/finn"]
    assert listed("--claim", "manager=boss", "--domain", "HR") == ["HR/finn"]
    page = cli("user", "list", "--json", "--claim", "manager=boss", "--limit", "2", "--offset", "1")
    assert [u["username"] for u in page.items()] == ["carol", "dave"]
    assert page.json()["total"] == 4
    renamed = cli("user", "rename", "boss", "chief").ok().stdout
    assert "the manager claim of HR/erin, bob, carol, dave follows the new name" in renamed


def test_a_manager_given_by_name_must_exist(cli, state, tmp_path, write_config):
    """`user add`/`user update` (and the library's add_user/update_user) refuse a
    manager claim that names no user, changing nothing (it was accepted silently)."""
    hr = tmp_path / "hr.db"
    write_config(f"version: 1\nuserstores:\n  - domain: PRIMARY\n  - domain: HR\n    path: {hr}\n")
    cli("user", "add", "boss").ok()
    cli("user", "add", "HR/hrboss").ok()
    before = state.dump()
    refused = cli("user", "add", "alice", "-c", "manager=nobody").fails(3)
    assert "claim 'manager' of user alice: no user 'nobody' in the PRIMARY userstore" in refused
    assert "idprov user add nobody" in refused
    error = cli("user", "add", "alice", "-c", "manager=hrboss", "--json").error(3)
    assert "no user 'hrboss' in the PRIMARY userstore" in error["message"]
    assert "DOMAIN/username" in error["hint"]
    assert "names domain CORP, which no userstore has" in (
        cli("user", "add", "alice", "-c", "manager=CORP/boss").fails(3)
    )
    assert state.dump() == before
    cli("user", "show", "alice").fails(3)

    cli("user", "add", "alice", "-c", "manager=BOSS").ok()  # any case, as names are
    cli("user", "add", "HR/hank", "-c", "manager=hrboss").ok()  # bare: the user's own store
    cli("user", "add", "carl", "-c", "manager=HR/HRBoss").ok()
    cli("user", "add", "ceo", "-c", "manager=ceo").ok()  # the head manages itself
    before = state.dump()
    assert "no user 'ghost'" in cli("user", "update", "alice", "-c", "manager=ghost").fails(3)
    assert state.dump() == before
    cli("user", "update", "alice", "-c", "manager=ceo").ok()
    cli("user", "update", "alice", "-c", "title=Engineer").ok()  # no manager given: no check
    assert cli("user", "show", "alice", "--json").json()["claims"]["manager"] == "ceo"


def test_an_import_names_the_managers_no_user_has(cli, tmp_path, write_config):
    """A CSV import keeps a manager claim as written (a later row, or a later import,
    may add the manager), but names the managers that no user has — in the file or in
    its userstore — with their lines, so a typo does not pass unseen."""
    hr = tmp_path / "hr.db"
    write_config(f"version: 1\nuserstores:\n  - domain: PRIMARY\n  - domain: HR\n    path: {hr}\n")
    cli("user", "add", "HR/hrboss").ok()
    rows = tmp_path / "staff.csv"
    rows.write_text(
        "username,email,manager\n"
        "bob,bob@example.com,carol\n"  # carol: a later row of the file
        "dave,dave@example.com,nobody\n"
        "carol,carol@example.com,\n"
        "erin,erin@example.com,NOBODY\n"  # the same name, in another case
        "fay,fay@example.com,HR/HRBOSS\n"  # a user of another userstore
        "gus,gus@example.com,SALES/x\n",  # a domain no userstore has
        encoding="utf-8",
    )
    result = cli("import", "users", str(rows)).ok()
    assert (
        "3 rows name a manager that no user has, in this file or its userstore: "
        "nobody (lines 3, 5); SALES/x (no userstore SALES) (line 7)"
    ) in result.stderr
    assert "idprov user list --claim manager=NAME" in result.stderr
    assert cli("user", "show", "dave", "--json").json()["claims"]["manager"] == "nobody"

    fixed = tmp_path / "fixed.csv"
    fixed.write_text("username,manager\ndave,carol\nerin,bob\n", encoding="utf-8")
    report = cli("import", "users", str(fixed), "--mode", "update", "--json").json()
    assert report["updated"] == 2
    assert report["notes"] == []
