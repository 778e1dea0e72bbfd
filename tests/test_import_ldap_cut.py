"""An import whose directory stops answering part-way (a relay in front of the real
slapd drops every connection at the first add) says that running it again resumes
after the last row written, as a Ctrl-C does; and it does."""

from __future__ import annotations

import json

import pytest

from tests.test_userstore_ldap_interrupted import (  # noqa: F401
    ADD,
    MODIFY,
    corp,
    cutoff,
    members,
    target_users,
    uid_dn,
)


def test_an_import_cut_off_by_the_directory_says_a_rerun_resumes(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    cutoff,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    cli("role", "add", "CORP/staff").ok()
    rows = "".join(f"CORP/n{i},n{i}@example.com,staff\n" for i in range(3))
    (tmp_path / "new.csv").write_text("username,email,roles\n" + rows)
    cutoff.at(MODIFY, after=ADD)  # the first batch goes through; the second's groups not
    cut = cli("import", "users", "new.csv", "--batch-size", "1", "--json")
    error = cut.error(1)
    assert "run the same import again: it resumes after the last row written" in error["hint"]
    cutoff.restore()
    result = cli("import", "users", "new.csv", "--batch-size", "1", "--json")
    assert result.exit_code == 0, result
    users = cli("user", "list", "--domain", "CORP", "--json").json()["items"]
    assert sorted(u["username"] for u in users) == ["n0", "n1", "n2"]
    assert json.loads(result.stdout)["rejected"] == 0


@pytest.mark.parametrize("made", [False, True], ids=["lost on its way", "answer lost"])
def test_a_row_whose_add_went_unanswered_is_finished_by_the_rerun(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    cutoff,  # noqa: F811 - the fixture imported above
    tmp_path,
    made,
):
    """The first add is lost on its way, or made with its answer lost (the relay then
    refuses every connection): the import stops at that batch, and the re-run adds that
    row or finishes it, once (it was counted rejected, the journal passed it, and the
    re-run skipped it as imported, never added)."""
    cli("role", "add", "CORP/staff").ok()
    rows = "".join(f"CORP/n{i},n{i}@example.com,staff\n" for i in range(3))
    (tmp_path / "new.csv").write_text("username,email,roles\n" + rows)
    cutoff.at(ADD, made=made)
    cut = cli("import", "users", "new.csv", "--batch-size", "1", "--json")
    error = cut.error(1)
    assert "answered the add of user 'n0'; whether it was made is unknown" in error["message"]
    assert "run the same import again: it resumes" in error["hint"]
    assert cutoff.drops == 1
    assert (corp.entry(uid_dn(corp, "n0"), "uid") is not None) is made
    cutoff.restore()
    result = cli("import", "users", "new.csv", "--batch-size", "1", "--json")
    assert result.exit_code == 0, result
    report = json.loads(result.stdout)
    assert (report["created"], report["skipped_already_imported"], report["rejected"]) == (3, 0, 0)
    users = cli("user", "list", "--domain", "CORP", "--json").json()["items"]
    assert sorted(u["username"] for u in users) == ["n0", "n1", "n2"]
    assert members(corp, "staff") == sorted(uid_dn(corp, f"n{i}") for i in range(3))
    imports = cli("log", "--action", "user.import", "--json").items()
    assert sorted(name for e in imports for name in e["details"]["created"]) == ["n0", "n1", "n2"]


def test_a_row_the_directory_refused_before_a_cut_off_is_rejected_by_the_rerun(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    cutoff,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    """The directory refuses the first row's add (an address that is not ASCII) and
    the second batch is cut off: the report naming that row is lost behind the error,
    so the re-run names it again (it skipped it as imported, exit 0)."""
    cli("role", "add", "CORP/staff").ok()
    rows = "CORP/n0,nö@exämple.com,staff\n" + "".join(
        f"CORP/n{i},n{i}@example.com,staff\n" for i in (1, 2)
    )
    (tmp_path / "new.csv").write_text("username,email,roles\n" + rows)
    cutoff.at(ADD, after=ADD)
    cli("import", "users", "new.csv", "--batch-size", "1", "--json").error(1)
    cutoff.restore()
    result = cli("import", "users", "new.csv", "--batch-size", "1", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 9, result  # partial
    assert (report["created"], report["skipped_already_imported"], report["rejected"]) == (2, 0, 1)
    assert [(e["line"], "invalidAttributeSyntax" in e["message"]) for e in report["errors"]] == [
        (2, True)
    ]
    users = cli("user", "list", "--domain", "CORP", "--json").json()["items"]
    assert sorted(u["username"] for u in users) == ["n1", "n2"]


def test_an_upsert_cut_off_mid_batch_keeps_the_claims_its_file_does_not_give(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    cutoff,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    """A batch updating an existing user is cut off: the re-run finishes it as an
    uninterrupted upsert would, keeping the claims the file has no column for (it
    wrote exactly the file's, taking the user's given name away)."""
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "-c", "given_name=Ann", "-c", "email=a@example.com").ok()
    rows = "CORP/ann,ann@example.com,staff\nCORP/n1,n1@example.com,staff\n"
    (tmp_path / "new.csv").write_text("username,email,roles\n" + rows)
    cutoff.at(MODIFY, after=ADD)  # n1 added, ann's update or the group's cut off
    upsert = ("import", "users", "new.csv", "--mode", "upsert", "--json")
    cli(*upsert).error(1)
    cutoff.restore()
    result = cli(*upsert)
    assert result.exit_code == 0, result
    ann = cli("user", "show", "CORP/ann", "--json").json()
    assert (ann["claims"]["given_name"], ann["claims"]["email"]) == ("Ann", "ann@example.com")
    assert ann["roles"] == ["staff"]


def test_a_create_cut_off_mid_batch_takes_over_no_user_that_was_there_before(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    cutoff,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    """A row of a user who existed before the import lies among the lines of the batch
    that was cut off: the re-run rejects it as the first run did (it took it for a user
    that batch had added, wrote the file's claims and roles over it and counted it
    created)."""
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/ann", "-c", "given_name=Ann", "-c", "email=a@example.com").ok()
    rows = "".join(f"CORP/{n},{n}@example.com,staff\n" for n in ("n0", "ann", "n2"))
    (tmp_path / "new.csv").write_text("username,email,roles\n" + rows)
    cutoff.at(MODIFY, after=ADD)  # n0 and n2 added, their group's change cut off
    assert cli("import", "users", "new.csv", "--json").exit_code == 1
    cutoff.restore()
    result = cli("import", "users", "new.csv", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 9, result
    assert (report["created"], report["rejected"]) == (2, 1)
    assert "already exists" in report["errors"][0]["message"]
    ann = cli("user", "show", "CORP/ann", "--json").json()
    assert (ann["claims"], ann["roles"]) == ({"given_name": "Ann", "email": "a@example.com"}, [])
    assert members(corp, "staff") == [uid_dn(corp, "n0"), uid_dn(corp, "n2")]


def test_an_upsert_whose_batch_was_written_whole_before_the_cut_is_audited_and_pushed(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    cutoff,  # noqa: F811 - the fixture imported above
    scim2_server,
    tmp_path,
):
    """The group change, the batch's last write, is made and its answer lost: the
    directory holds every row, nothing records them. The re-run audits and pushes them
    (they read back as unchanged, and no target heard of them until a sync)."""
    cli("role", "add", "CORP/staff").ok()
    (tmp_path / "new.csv").write_text("username,email,roles\nCORP/n1,n1@example.com,staff\n")
    cutoff.at(MODIFY, after=ADD, made=True)
    upsert = ("import", "users", "new.csv", "--mode", "upsert", "--json")
    cli(*upsert).error(1)
    assert members(corp, "staff") == [uid_dn(corp, "n1")]
    cutoff.restore()
    assert cli(*upsert).exit_code == 0
    assert target_users(scim2_server) == ["n1"]
    imports = cli("log", "--action", "user.import", "--json").items()
    written = [n for e in imports for n in (*e["details"]["created"], *e["details"]["updated"])]
    assert written == ["n1"]
