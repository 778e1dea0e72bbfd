"""`idprov import users` and `idprov export users`: the format, the bad input it must
survive, modes, dry runs, rejects, resuming a killed import, passwords, pushing."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.inbound.csv_import import CsvImport, ImportOptions
from idprov.provisioning.service import IdentityService

HEADER = "username,email,given_name,family_name,roles\n"


def write(tmp_path: Path, text: str | bytes, name: str = "users.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def users(cli) -> dict[str, dict]:
    return {u["username"]: u for u in cli("user", "list", "--limit", "0", "--json").json()["items"]}


@pytest.fixture()
def roles(cli):
    cli("role", "add", "staff").ok()
    cli("role", "add", "eng").ok()


def test_a_clean_file_imports_every_row(cli, tmp_path, roles):
    path = write(
        tmp_path,
        "\ufeff" + HEADER + "alice,alice@example.com,Alice,Smith,staff;eng\r\n"
        "bob,bob@example.com, Bob ,Builder,staff\n",
    )
    report = cli("import", "users", str(path), "--json").json()
    assert (report["rows"], report["created"], report["rejected"]) == (2, 2, 0)
    found = users(cli)
    assert found["alice"]["roles"] == ["eng", "staff"]
    assert found["bob"]["claims"]["given_name"] == "Bob"  # whitespace trimmed


def test_quoted_newlines_commas_and_formulas_are_plain_text(cli, tmp_path, roles):
    path = write(
        tmp_path,
        'username,street_address,title\ncarol,"1 Main St,\nSpringfield","=cmd|\' /C calc\'!A0"\n',
    )
    cli("import", "users", str(path)).ok()
    claims = users(cli)["carol"]["claims"]
    assert claims["street_address"] == "1 Main St,\nSpringfield"
    assert claims["title"] == "=cmd|' /C calc'!A0"


BAD_ROWS = [
    ("x y,a@example.com,A,B,\n", "username", "does not match"),
    ("dave,not-an-email,D,E,\n", "email", "does not match"),
    ("erin,e@example.com,E\n", None, "has 3 fields; the header has 5"),
    ("frank,f@example.com,F,G,H,I\n", None, "has 6 fields"),
    ("gina,g@example.com,G\x01,H,\n", "given_name", "control characters"),
    ("hank,h@example.com," + "x" * 2000 + ",H,\n", "given_name", "limit is 1024"),
    ("ivan,i@example.com,I,J,nosuchrole\n", "roles", "unknown role"),
]


@pytest.mark.parametrize(("row", "column", "message"), BAD_ROWS)
def test_each_bad_row_is_rejected_with_its_line_and_column(
    cli, tmp_path, roles, state, row, column, message
):
    path = write(tmp_path, HEADER + "good,good@example.com,G,H,staff\n" + row)
    run = cli("import", "users", str(path), "--json")
    assert run.exit_code == 9, run
    report = json.loads(run.stdout)
    [error] = report["errors"]
    assert error["line"] == 3 and error["column"] == column and message in error["message"]
    assert set(users(cli)) == {"good"}


def test_latin1_bytes_reject_their_row_and_name_the_fix(cli, tmp_path, roles):
    path = write(
        tmp_path,
        (HEADER + "good,g@example.com,G,H,\n").encode()
        + "zoe,z@example.com,Zoë,Z,\n".encode("latin-1"),
    )
    run = cli("import", "users", str(path), "--json")
    assert run.exit_code == 9
    [error] = json.loads(run.stdout)["errors"]
    assert error["line"] == 3 and error["message"].startswith("is not utf-8 text")
    assert '--encoding (Excel\'s "CSV" on Windows is cp1252)' in error["message"]
    # with the file's encoding named, every row imports, the accent intact
    path.write_bytes((HEADER + "zoe,z@example.com,Zoë,Z,\n").encode("latin-1"))
    cli("import", "users", str(path), "--encoding", "latin-1").ok()
    assert users(cli)["zoe"]["claims"]["given_name"] == "Zoë"


def test_utf16_files_are_file_errors(cli, tmp_path, state):
    utf16 = write(tmp_path, HEADER.encode("utf-16"), "u16.csv")
    error = cli("import", "users", str(utf16), "--json").error(10)
    assert "UTF-16" in error["message"] and "--encoding utf-16" in error["hint"]
    utf16.write_bytes((HEADER + "zoë,z@example.com,Zoë,Z,\n").encode("utf-16"))
    cli("import", "users", str(utf16), "--encoding", "UTF-16").ok()
    assert users(cli)["zoë"]["claims"]["given_name"] == "Zoë"
    unknown = cli("import", "users", str(utf16), "--encoding", "klingon", "--json").error(2)
    assert "'klingon' is not an encoding" in unknown["message"]
    assert state.counts()["users"] == 1


def test_header_only_imports_nothing_and_says_so(cli, tmp_path):
    path = write(tmp_path, HEADER)
    error = cli("import", "users", str(path), "--json").error(10)
    assert error["message"] == f"{path} has a header but no rows: nothing to import"
    text = cli("import", "users", str(path)).fails(10)
    assert "nothing to import" in text and "✗" not in text


def test_header_errors(cli, tmp_path):
    dup = write(tmp_path, "username,email,email\n", "dup.csv")
    assert "appears twice" in cli("import", "users", str(dup), "--json").error(2)["message"]
    unknown = write(tmp_path, "username,mail,shoe_size\na,b,c\n", "unknown.csv")
    error = cli("import", "users", str(unknown), "--json").error(2)
    assert "'mail'" in error["message"] and "--map" in error["hint"]
    path = write(tmp_path, "User Name , mail ,shoe_size\nalice,a@example.com,44\n", "map.csv")
    cli(
        "import",
        "users",
        str(path),
        "--map",
        "User Name=username",
        "--map",
        "mail=email",
        "--ignore-column",
        "shoe_size",
    ).ok()
    assert users(cli)["alice"]["claims"] == {"email": "a@example.com"}


def test_duplicates_differing_in_case_are_both_rejected(cli, tmp_path):
    """Which of the two rows was meant is for the administrator to say: neither is
    imported, both are reported (the first was imported, the second rejected)."""
    path = write(
        tmp_path,
        HEADER + "alice,a@example.com,A,B,\nALICE,b@example.com,A,B,\nbob,b@example.com,,,\n",
    )
    run = cli("import", "users", str(path), "--json")
    assert run.exit_code == 9
    errors = json.loads(run.stdout)["errors"]
    assert [e["line"] for e in errors] == [2, 3]
    assert "'alice' is also on line 3" in errors[0]["message"]
    assert "'ALICE' is also on line 2" in errors[1]["message"]
    assert sorted(users(cli)) == ["bob"]


def test_dry_run_reports_everything_and_changes_nothing(cli, tmp_path, roles, state):
    cli("user", "add", "bob", "-c", "email=bob@example.com").ok()
    before = state.dump() if hasattr(state, "dump") else state.counts()
    path = write(
        tmp_path, HEADER + "alice,a@example.com,A,B,staff\nbob,bob@example.com,,,\nbad,x,,,\n"
    )
    report = cli("import", "users", str(path), "--mode", "upsert", "--dry-run", "--json")
    data = json.loads(report.stdout)
    assert (data["created"], data["updated"], data["rejected"]) == (1, 0, 1)
    assert data["unchanged"] == 1
    after = state.dump() if hasattr(state, "dump") else state.counts()
    assert before == after


def test_on_error_stop_imports_nothing(cli, tmp_path, state):
    path = write(tmp_path, HEADER + "alice,a@example.com,A,B,\nx,bad,,,\n")
    run = cli("import", "users", str(path), "--on-error", "stop", "--json")
    assert run.exit_code == 10
    assert state.counts()["users"] == 0


def test_modes(cli, tmp_path):
    cli("user", "add", "alice", "-c", "email=old@example.com", "-c", "title=Dev").ok()
    path = write(tmp_path, "username,email\nalice,new@example.com\nbob,b@example.com\n")
    run = cli("import", "users", str(path), "--json")  # create: alice exists -> error
    assert run.exit_code == 9 and "already exists" in run.stdout
    assert set(users(cli)) == {"alice", "bob"}
    update = write(
        tmp_path, "username,email\nalice,new@example.com\ncarl,c@example.com\n", "update.csv"
    )
    run = cli("import", "users", str(update), "--mode", "update", "--json")
    assert run.exit_code == 9 and "no user 'carl'" in run.stdout
    assert users(cli)["alice"]["claims"] == {"email": "new@example.com", "title": "Dev"}
    assert "carl" not in users(cli)
    cli("import", "users", str(update), "--mode", "upsert").ok()
    report = cli("import", "users", str(update), "--mode", "upsert", "--json").json()
    assert report["unchanged"] == 2 and report["created"] == report["updated"] == 0


def test_rejects_file_can_be_fixed_and_imported(cli, tmp_path, roles):
    path = write(
        tmp_path,
        HEADER
        + "alice,a@example.com,A,B,staff\nb o,b@example.com,B,C,eng\ncarol,c@example.com,C\n",
    )
    rejects = tmp_path / "rejects.csv"
    assert cli("import", "users", str(path), "--rejects", str(rejects)).exit_code == 9
    rows = list(csv.reader(io.StringIO(rejects.read_text())))
    assert rows[0] == ["username", "email", "given_name", "family_name", "roles", "line", "error"]
    assert [r[5] for r in rows[1:]] == ["3", "4"]
    assert rejects.stat().st_mode & 0o777 == 0o600
    fixed = "\n".join(
        ",".join(r[:5])
        for r in [rows[0], ["bob", *rows[1][1:5]], ["carol", "c@example.com", "C", "D", ""]]
    )
    cli("import", "users", str(write(tmp_path, fixed + "\n", "fixed.csv"))).ok()
    assert set(users(cli)) == {"alice", "bob", "carol"}


def test_a_killed_import_resumes_to_the_same_users(tmp_path, monkeypatch, cli):
    lines = [f"user{i:03d},u{i}@example.com,G,F{i},staff" for i in range(50)]
    path = write(tmp_path, HEADER + "\n".join(lines) + "\n")
    svc = IdentityService(load_config())
    svc.add_role("staff")
    calls = {"n": 0}
    original = CsvImport._write_batch

    def dies_after_two(self, rows):
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process is killed mid-import
        calls["n"] += 1
        original(self, rows)

    monkeypatch.setattr(CsvImport, "_write_batch", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        CsvImport(svc, path, ImportOptions(batch_size=10)).run()
    assert cli("user", "list", "--json").json()["total"] == 20
    monkeypatch.setattr(CsvImport, "_write_batch", original)
    report = CsvImport(svc, path, ImportOptions(batch_size=10)).run()
    svc.close()
    assert report.skipped_done == 20 and report.created == 30 and report.rejected == 0
    found = users(cli)
    assert len(found) == 50 and found["user049"]["roles"] == ["staff"]
    # and a third run of the finished import is a fresh one: all exist now
    again = cli("import", "users", str(path), "--json")
    assert again.exit_code == 10 and "already exists" in again.stdout


def test_passwords_are_hashed_and_verifiable_and_hashes_are_kept(tmp_path, cli):
    from idprov.userstores.passwords import hash_password

    known = hash_password("migrated-1")
    path = write(
        tmp_path, f'username,password,password_hash\nalice,s3cret-pw,\nbob,,"{known}"\ncarl,shrt,\n'
    )
    run = cli("import", "users", str(path), "--json")
    assert run.exit_code == 9 and "password pattern" in run.stdout
    assert "shrt" not in run.stdout + run.stderr
    with IdentityService(load_config()) as svc:
        assert svc.verify_password("alice", "s3cret-pw")
        assert svc.verify_password("bob", "migrated-1")
        raw = (svc.data_dir / "idprov.db").read_bytes()
    assert b"s3cret-pw" not in raw


def test_export_then_import_gives_the_same_state(cli, tmp_path, roles):
    cli(
        "user",
        "add",
        "alice",
        "-c",
        "email=a@example.com",
        "-c",
        "emails=x@example.com",
        "-c",
        "emails=y@example.com",
        "-r",
        "staff",
        "-r",
        "eng",
    ).ok()
    cli("user", "add", "bob", "-c", "title=Dev, Ops").ok()
    out = tmp_path / "export.csv"
    assert cli("export", "users", str(out), "--json").json()["users"] == 2
    assert out.stat().st_mode & 0o777 == 0o600
    before = users(cli)
    cli("user", "update", "alice", "--unset", "email").ok()
    cli("role", "unassign", "eng", "alice").ok()
    cli("import", "users", str(out), "--mode", "upsert").ok()
    after = users(cli)
    for name in before:
        assert after[name]["claims"] == before[name]["claims"]
        assert after[name]["roles"] == before[name]["roles"]


def test_export_of_more_users_than_one_read_batch_writes_each_once(cli, tmp_path):
    names = [f"user{i:04d}" for i in range(1234)]  # the store reads 500 at a time
    source = write(tmp_path, HEADER + "".join(f"{n},{n}@example.com,A,B,\n" for n in names))
    cli("import", "users", str(source)).ok()
    out = tmp_path / "export.csv"
    assert cli("export", "users", str(out), "--json").json()["users"] == 1234
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert sorted(r["username"] for r in rows) == names
    assert {r["email"] for r in rows} == {f"{n}@example.com" for n in names}


def test_imported_users_are_pushed_and_no_push_leaves_them_queued(tmp_path, monkeypatch):
    from tests.outbound_helpers import FakeScim, idp_yaml, make_config_text

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    text = make_config_text(tmp_path, idp_yaml("target", "https://scim.test/v2"), ["target"])
    from idprov.config import load_text

    path = write(tmp_path, HEADER + "alice,a@example.com,A,B,\nbob,b@example.com,B,C,\n")
    with IdentityService(load_text(text, "t.yaml"), http_transport=fake.transport()) as svc:
        report = CsvImport(svc, path, ImportOptions(push=False)).run()
        assert report.outbound is None and len(svc.outbox_rows()) == 2 and not fake.users
        more = write(tmp_path, HEADER + "carol,c@example.com,C,D,\n", "more.csv")
        report = CsvImport(svc, more, ImportOptions()).run()
        assert report.outbound is not None and report.outbound.ok
    assert [u["userName"] for u in fake.users.values()] == ["carol"]


def test_the_sample_file_imports(cli):
    sample = Path(__file__).parents[1] / "sample-configs" / "users.csv"
    report = cli("import", "users", str(sample), "--create-roles", "--json").json()
    assert report["rejected"] == 0 and report["created"] == 3
    assert users(cli)["carol"]["claims"]["family_name"] == "Jones, Jr."


def test_an_import_waits_for_no_one_while_a_sync_runs(cli, tmp_path, data_dir):
    from idprov.provisioning.lock import RunLock

    path = write(tmp_path, HEADER + "alice,a@example.com,A,B,\n")
    with RunLock(data_dir, "sync"):
        error = cli("import", "users", str(path), "--json").error(8)
        assert "sync" in error["message"]
        assert cli("import", "users", str(path), "--dry-run").exit_code == 0
    cli("import", "users", str(path)).ok()


def test_the_rejects_file_is_private_replaced_on_a_rerun_and_never_makes_directories(
    cli, tmp_path, roles
):
    path = write(tmp_path, HEADER + "bad user,b@example.com,G,F,staff\n")
    rejects = tmp_path / "rejects.csv"
    rejects.write_text("old report\n")
    rejects.chmod(0o644)
    assert cli("import", "users", str(path), "--rejects", str(rejects)).exit_code == 10
    assert "old report" not in rejects.read_text() and "bad user" in rejects.read_text()
    assert rejects.stat().st_mode & 0o777 == 0o600
    missing = tmp_path / "no" / "such" / "dir" / "rejects.csv"
    good = write(tmp_path, HEADER + "gooduser,g@example.com,G,F,staff\n", "good.csv")
    run = cli("import", "users", str(good), "--rejects", str(missing))
    assert run.exit_code == 3 and "does not exist" in run.stderr
    assert not (tmp_path / "no").exists()
    assert "gooduser" not in users(cli), "refused before anything was written"


# -- a file the reader cannot follow to its end: nothing of it is imported


def long_note_file(tmp_path: Path) -> Path:
    """Valid CSV whose second row holds a quoted cell over the 1 MiB cell limit, with
    lines inside it that look like rows."""
    lines = ["username,display_name", 'victim,"start of a long note']
    lines += ["y" * 1000] * 1100
    lines += ["mallory,text-inside-the-quoted-note", 'end of note"', "real,ok"]
    return write(tmp_path, "\n".join(lines) + "\n", "long-note.csv")


def test_a_cell_over_the_limit_stops_the_import_and_its_lines_never_become_users(
    cli, tmp_path, state
):
    path = long_note_file(tmp_path)
    error = cli("import", "users", str(path), "--json").error(10)
    assert error["message"] == (
        f"{path}:2: a cell is longer than 1,048,576 characters, the most one may hold; "
        "nothing was imported"
    )
    assert "quote" in error["hint"]
    assert state.counts()["users"] == 0
    assert cli("import", "users", str(path), "--dry-run").exit_code == 10


def test_a_bad_quote_in_a_multi_line_cell_stops_the_import_naming_its_line(cli, tmp_path, state):
    path = write(
        tmp_path,
        "username,street_address\nq1,ok\n"
        'q2,"Note "bad" quote\nmallory,text-inside-the-cell\nend of note"\nreal,ok\n',
    )
    rejects = tmp_path / "rejects.csv"
    run = cli("import", "users", str(path), "--rejects", str(rejects), "--json")
    error = run.error(10)
    assert error["message"] == (
        f'{path}:3: a quote (") inside a quoted cell is not doubled; nothing was imported'
    )
    assert '""' in error["hint"]
    assert state.counts()["users"] == 0
    assert not rejects.exists(), "a failed import leaves no rejects file behind"
    path.write_text(path.read_text().replace('"bad"', '""bad""'))
    report = cli("import", "users", str(path), "--json").json()
    assert (report["rows"], report["created"]) == (3, 3)
    assert "text-inside-the-cell" in users(cli)["q2"]["claims"]["street_address"]
    assert set(users(cli)) == {"q1", "q2", "real"}


def test_an_unclosed_quote_stops_the_import_naming_the_row_it_opens_in(cli, tmp_path, state):
    path = write(tmp_path, 'username,display_name\nq1,ok\nq2,"unterminated\nq3,ok\n')
    error = cli("import", "users", str(path), "--json").error(10)
    assert error["message"] == (
        f"{path}:3: a quoted cell that starts in this row is never closed: the file ends "
        "inside it (line 4); nothing was imported"
    )
    assert state.counts()["users"] == 0


def test_the_counts_of_an_import_add_up(cli, tmp_path, roles):
    cli("user", "add", "old", "-c", "email=old@example.com").ok()
    cli("user", "add", "same", "-c", "email=same@example.com").ok()
    path = write(
        tmp_path,
        "username,email,roles\nnew,n@example.com,staff\nold,new@example.com,\n"
        "same,same@example.com,\nbad user,b@example.com,\nNEW,d@example.com,\n"
        "x,x@example.com,nosuchrole\ny,y@example.com\n\n",
    )
    run = cli("import", "users", str(path), "--mode", "upsert", "--json")
    assert run.exit_code == 9, run
    report = json.loads(run.stdout)
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 1, 1)
    assert report["rejected"] == 5  # new and NEW: neither imported
    assert (
        report["rows"]
        == 7
        == sum(report[k] for k in ("created", "updated", "unchanged", "rejected"))
    )


def test_bare_carriage_return_line_endings_are_named_with_the_fix(cli, tmp_path, state):
    path = write(tmp_path, "username,title\rcr1,a\rcr2,b\r", "mac.csv")
    error = cli("import", "users", str(path), "--json").error(10)
    assert error["message"].startswith(f"{path}:1: a carriage return (CR) that does not end")
    assert "old Mac line endings" in error["message"]
    assert f"tr '\\r' '\\n' < {path} > fixed.csv" in error["hint"]
    assert state.counts()["users"] == 0
    write(tmp_path, path.read_bytes().replace(b"\r", b"\n"), "mac.csv")
    cli("import", "users", str(path)).ok()
    assert set(users(cli)) == {"cr1", "cr2"}


# -- files that are not there, not files, or empty (README: Exit codes)


def test_a_missing_file_a_directory_and_an_empty_file_exit_as_the_readme_says(cli, tmp_path):
    missing = cli("import", "users", "nonexist.csv", "--json").error(3)
    assert missing["message"] == "nonexist.csv does not exist"
    (tmp_path / "d").mkdir()
    directory = cli("import", "users", "d/", "--json").error(2)
    assert directory["message"] == "d is a directory"
    write(tmp_path, b"", "empty.csv")
    empty = cli("import", "users", "empty.csv", "--json").error(10)
    assert empty["message"] == "empty.csv is empty: no header, no rows: nothing to import"
    assert "the first row names the columns" in empty["hint"]
    assert cli("import", "users", "-", "--json", input="").error(10)["code"] == "nothing_to_import"


# -- options that name nothing


def test_a_map_to_an_unknown_claim_says_so(cli, tmp_path):
    write(tmp_path, "username,email,title\na,a@example.com,T\n")
    error = cli("import", "users", "users.csv", "--map", "title=nope", "--json").error(2)
    assert error["message"] == "--map title=nope: unknown claim 'nope'"
    assert "did you mean" not in error["hint"] and "title" in error["hint"]
    error = cli("import", "users", "users.csv", "--map", "title=titel", "--json").error(2)
    assert error["hint"].startswith("did you mean 'title'?")


def test_a_map_or_ignore_column_naming_no_column_of_the_header_says_so(cli, tmp_path, state):
    write(tmp_path, "username,Work Email\na,a@example.com\n")
    error = cli("import", "users", "users.csv", "--map", "Work Emial=email", "--json").error(2)
    assert error["message"] == "--map Work Emial=email: the header has no column 'Work Emial'"
    assert error["hint"].startswith("did you mean 'Work Email'?")
    assert "'username', 'Work Email'" in error["hint"]
    error = cli(
        "import",
        "users",
        "users.csv",
        "--map",
        "Work Email=email",
        "--ignore-column",
        "shoe",
        "--json",
    ).error(2)
    assert error["message"] == "--ignore-column shoe: the header has no column 'shoe'"
    assert state.counts()["users"] == 0
    cli("import", "users", "users.csv", "--map", "work email=email").ok()
    assert users(cli)["a"]["claims"] == {"email": "a@example.com"}


def test_an_empty_separator_is_a_usage_error_before_the_file_is_read(cli, tmp_path, state, roles):
    write(tmp_path, "username,roles\na,staff\n")
    error = cli("import", "users", "users.csv", "--separator", "", "--json").error(2)
    assert error["message"] == "--separator must be one character"
    assert state.counts()["users"] == 0
    error = cli("export", "users", "out.csv", "--separator", "", "--json").error(2)
    assert error["message"] == "--separator must be one character"
    assert not (tmp_path / "out.csv").exists()


def test_on_error_stop_creates_no_roles_and_does_not_say_it_did(cli, tmp_path):
    write(tmp_path, "username,email,roles\nalice,a@example.com,staff;eng\nx y,bad,\n")
    args = ["import", "users", "users.csv", "--on-error", "stop", "--create-roles"]
    run = cli(*args, "--json")
    assert run.exit_code == 10, run
    report = json.loads(run.stdout)
    assert report["stopped"] and report["roles_created"] == []
    assert report["notes"] == ["roles to create (none were created: --on-error stop): eng, staff"]
    text = cli(*args)
    assert "roles created" not in text.stdout + text.stderr
    assert "roles to create (none were created" in text.stdout + text.stderr
    assert cli("role", "list", "--json").items() == []


# -- the rejects file


def test_a_rejects_path_that_cannot_be_written_stops_the_import_before_it_writes(
    cli, tmp_path, state
):
    write(tmp_path, "username,email,roles\nalice,a@example.com,staff\nx y,bad,\n")
    (tmp_path / "adir").mkdir()
    args = ["import", "users", "users.csv", "--create-roles", "--json"]
    error = cli(*args, "--rejects", "adir").error(2)
    assert error["message"] == "cannot open the rejects file (--rejects): adir: Is a directory"
    error = cli(*args, "--rejects", "/proc/rejects.csv").error(3)
    assert error["message"].startswith("cannot create the rejects file (--rejects)")
    assert state.counts()["users"] == 0 and state.counts()["roles"] == 0
    run = cli(*args, "--rejects", "rejects.csv")
    assert run.exit_code == 9 and json.loads(run.stdout)["created"] == 1, run


def test_a_rejects_file_is_created_private_and_kept_intact_when_the_import_fails(cli, tmp_path):
    import os

    write(tmp_path, "username,shoe_size\nalice,44\n")
    rejects = tmp_path / "rejects.csv"
    old = os.umask(0)
    try:
        cli("import", "users", "users.csv", "--rejects", str(rejects), "--json").error(2)
        assert not rejects.exists(), "a new rejects file goes again when the import fails"
        cli("import", "users", "users.csv", "--ignore-column", "shoe_size", "--rejects", "r.csv")
    finally:
        os.umask(old)
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o600
    rejects.write_text("last run's report\n")
    cli("import", "users", "users.csv", "--rejects", str(rejects), "--json").error(2)
    assert rejects.read_text() == "last run's report\n"


def test_a_rejects_path_naming_the_input_file_is_refused_and_the_input_kept(cli, tmp_path, state):
    import os

    text = "username,email,roles\nu1,u1@x.org,\nu2,u2@x.org,nosuchrole\nu4,u4@x.org,\n"
    path = write(tmp_path, text)
    os.link(path, tmp_path / "same.csv")
    for rejects in ("users.csv", "./users.csv", "same.csv"):
        error = cli("import", "users", str(path), "--rejects", rejects, "--json").error(2)
        assert error["message"] == (
            f"--rejects {rejects.removeprefix('./')} is the file being imported: writing the "
            "rejects there would destroy it"
        )
    assert path.read_text() == text
    assert state.counts()["users"] == 0


def test_the_rejects_file_fixed_imports_as_the_readme_says(cli, tmp_path):
    """README: "--rejects FILE writes the bad rows with the same header plus line and
    error columns: fix them there and import that file"."""
    write(tmp_path, "username,email\nok1,a@example.com\nbad,b\x01x\nb c,c@example.com\n")
    run = cli("import", "users", "users.csv", "--rejects", "rejects.csv")
    assert run.exit_code == 9, run
    rejects = tmp_path / "rejects.csv"
    assert rejects.read_text().splitlines()[0] == "username,email,line,error"
    rejects.write_text(rejects.read_text().replace("b\x01x", "b@example.com").replace("b c", "bc"))
    report = cli("import", "users", "rejects.csv", "--json").json()
    assert (report["created"], report["rejected"]) == (2, 0)
    assert report["notes"] == [
        "the last columns, 'line' and 'error', are a rejects file's: not imported"
    ]
    assert set(users(cli)) == {"ok1", "bad", "bc"}
    assert users(cli)["bad"]["claims"] == {"email": "b@example.com"}
    text = cli("import", "users", "rejects.csv", "--mode", "upsert")
    assert "note: the last columns, 'line' and 'error'" in text.stderr


# -- encodings


def test_wide_encodings_are_named_right_and_a_truncated_file_names_its_offset(cli, tmp_path, state):
    text = "username,title\nz1,a\n"
    write(tmp_path, text.encode("utf-32"), "u32.csv")
    error = cli("import", "users", "u32.csv", "--json").error(10)
    assert error["message"] == "u32.csv is UTF-32 text"
    assert error["hint"] == "import it with --encoding utf-32"
    write(tmp_path, text.encode("utf-16-le"), "u16le.csv")
    error = cli("import", "users", "u16le.csv", "--json").error(10)
    assert error["message"] == (
        "u16le.csv looks like UTF-16 (little-endian) text without a byte order mark"
    )
    assert error["hint"] == "import it with --encoding utf-16-le"
    write(tmp_path, text.encode("utf-16")[:-1], "cut.csv")
    error = cli("import", "users", "cut.csv", "--encoding", "utf-16", "--json").error(10)
    assert error["message"] == (
        "cut.csv: byte 40 (line 2): the file ends inside a utf-16 character: it was cut short"
    )
    assert state.counts()["users"] == 0
    cli("import", "users", "u16le.csv", "--encoding", "utf-16-le").ok()
    cli("import", "users", "u32.csv", "--encoding", "utf-32", "--mode", "upsert").ok()
    assert set(users(cli)) == {"z1"}


def test_a_file_unreadable_in_its_encoding_exits_10_as_a_bad_file_does(cli, tmp_path, state):
    """Whatever shows it (a byte order mark, NULs of wide text, a header that does
    not decode, a wide file cut short), a file that cannot be read as given imported
    nothing: exit 10 with the --encoding to give (UTF-32 and BOM-less UTF-16 exited 2,
    a usage error, while a UTF-16 file cut short exited 10)."""
    text = "username,title\nz1,a\n"
    write(tmp_path, text.encode("utf-32"), "u32.csv")
    write(tmp_path, text.encode("utf-16-be"), "u16be.csv")
    write(tmp_path, "username,titl\u00e9\nz1,a\n".encode("latin-1"), "head.csv")
    write(tmp_path, text.encode("utf-16")[:-1], "cut.csv")
    for name, encoding in [("u32.csv", "utf-32"), ("u16be.csv", "utf-16-be"), ("head.csv", "")]:
        for dry_run in ([], ["--dry-run"]):
            error = cli("import", "users", name, *dry_run, "--json").error(10)
            assert f"--encoding {encoding}" in error["hint"], error
    assert cli("import", "users", "cut.csv", "--encoding", "utf-16").fails(10)
    assert state.counts()["users"] == 0


# -- staging copies left by killed imports


def test_staging_copies_of_killed_imports_are_removed_and_no_other(cli, tmp_path, data_dir):
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(gone.stdout)
    host = socket.gethostname()
    kept = [f"import-{host}:{os.getpid()}:running", f"import-elsewhere:{dead}:x", "import-8ted9xri"]
    left = [f"import-{host}:{dead}:killed"]
    for name in kept + left:
        (data_dir / name).mkdir(parents=True)
        (data_dir / name / "staging.db").write_bytes(b"user data")
    write(tmp_path, "username\nalice\n")
    cli("import", "users", "users.csv").ok()
    assert sorted(p.name for p in data_dir.glob("import-*")) == sorted(kept)


def test_internal_roles_go_through_export_and_import(cli, tmp_path, roles):
    """`export users` writes internal roles as ``Internal/NAME``; an import takes them
    back (as `user add --role` does): an upsert of the export changes nothing, a row
    that no longer names one takes the user out of it, and a new row puts its user in.
    They were refused ("role name contains '/'")."""
    cli("role", "add", "Internal/auditors").ok()
    cli("user", "add", "alice", "--role", "staff", "--role", "Internal/auditors").ok()
    assert sorted(cli("user", "show", "alice", "--json").json()["roles"]) == [
        "Internal/auditors",
        "staff",
    ]
    export = tmp_path / "all.csv"
    cli("export", "users", str(export)).ok()
    assert "staff;Internal/auditors" in export.read_text()
    report = cli("import", "users", str(export), "--mode", "upsert", "--json").ok().json()
    assert (report["updated"], report["unchanged"]) == (0, 1)

    path = write(tmp_path, "username,roles\nalice,staff\nbob,Internal/auditors;eng\n")
    report = cli("import", "users", str(path), "--mode", "upsert", "--json").ok().json()
    assert (report["created"], report["updated"]) == (1, 1)
    assert users(cli)["alice"]["roles"] == ["staff"]
    assert sorted(users(cli)["bob"]["roles"]) == ["Internal/auditors", "eng"]
    assert cli("role", "show", "Internal/auditors", "--json").json()["members"] == ["bob"]
    actions = [e["action"] for e in cli("log", "--json").items()[:3]]
    assert "role.unassign" in actions and "role.assign" in actions


def test_an_unknown_internal_role_is_rejected_or_created(cli, tmp_path, roles):
    path = write(tmp_path, "username,roles\ncarol,Internal/nobody\n")
    r = cli("import", "users", str(path), "--json")
    assert r.exit_code == 10 and "unknown role(s) Internal/nobody" in r.stdout
    report = cli("import", "users", str(path), "--create-roles", "--json").ok().json()
    assert report["roles_created"] == ["Internal/nobody"]
    assert cli("role", "show", "Internal/nobody", "--json").json()["members"] == ["carol"]
    r = cli("user", "add", "dave", "--role", "Internal/ghosts")
    assert r.exit_code == 3 and "no internal role 'ghosts'" in r.stderr
    assert "dave" not in users(cli)


def test_an_import_killed_between_its_userstores_commit_and_idprovs_resumes_exactly(
    tmp_path, monkeypatch, cli, write_config
):
    """A userstore in a file of its own commits a batch just before idprov's database
    records it (journal, audit, outbox): killed between the two, the re-run finishes
    that batch as an uninterrupted run would (it rejected its users as existing, and
    they were never audited nor pushed)."""
    from contextlib import contextmanager

    from idprov.provisioning.state import ImportJournal, StateStore

    write_config("userstores:\n  - domain: PRIMARY\n    path: users.db\n")
    cli("role", "add", "staff").ok()
    lines = [f"user{i:02d},u{i}@example.com,G,F{i},staff" for i in range(30)]
    path = write(tmp_path, HEADER + "\n".join(lines) + "\n")
    batches = {"written": 0, "depth": 0}
    original_written, original_transaction = ImportJournal.written, StateStore.transaction

    def written(self, import_id, last_line):
        batches["written"] += 1
        original_written(self, import_id, last_line)

    @contextmanager
    def transaction(self):
        batches["depth"] += 1
        try:
            with original_transaction(self):
                yield
                if batches["depth"] == 1 and batches["written"] == 2:
                    batches["written"] += 1
                    raise KeyboardInterrupt  # kill -9: users.db committed, idprov.db not
        finally:
            batches["depth"] -= 1

    monkeypatch.setattr(ImportJournal, "written", written)
    monkeypatch.setattr(StateStore, "transaction", transaction)
    with IdentityService(load_config()) as svc, pytest.raises(KeyboardInterrupt):
        CsvImport(svc, path, ImportOptions(batch_size=10)).run()
    monkeypatch.setattr(ImportJournal, "written", original_written)
    monkeypatch.setattr(StateStore, "transaction", original_transaction)
    assert cli("user", "list", "--json").json()["total"] == 20
    with IdentityService(load_config()) as svc:
        report = CsvImport(svc, path, ImportOptions(batch_size=10)).run()
    assert (report.skipped_done, report.created, report.rejected) == (10, 20, 0), report.errors
    found = users(cli)
    assert len(found) == 30 and all(u["roles"] == ["staff"] for u in found.values())
    audited = cli("log", "--action", "user.import", "--json").items()
    assert sorted(n for e in audited for n in e["details"]["created"]) == sorted(found)


def test_a_group_that_fails_in_every_batch_counts_once(tmp_path, monkeypatch):
    """25 users of one role in 5 batches; the target refuses the group every time
    (each batch's push sends it again, with its new members). The report counted a
    failure per batch ("5 failed") for one group; it is one row, failed once."""
    import httpx

    from idprov.config import load_text
    from tests.outbound_helpers import FakeScim, idp_yaml, make_config_text

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")

    def no_groups(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path.endswith("/Groups"):
            body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400"}
            return httpx.Response(400, json={**body, "detail": "groups are read-only here"})
        return None

    fake.faults.append(no_groups)
    text = make_config_text(tmp_path, idp_yaml("target", "https://scim.test/v2"), ["target"])
    rows = "".join(f"u{i},u{i}@example.com,U,{i},staff\n" for i in range(25))
    path = write(tmp_path, HEADER + rows)
    with IdentityService(load_text(text, "t.yaml"), http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        report = CsvImport(svc, path, ImportOptions(batch_size=5)).run()
        outbound = report.outbound
        assert outbound is not None and outbound.failed == 1, outbound
        [target] = outbound.idps.values()
        assert target.count("done") == 25 and target.total - len(target.operations) == 0
        [failed] = [op for op in target.operations if op.outcome == "failed"]
        assert (failed.kind, failed.label) == ("role", "staff")
        assert [r.status for r in svc.outbox_rows()] == ["failed"]
    assert len(fake.users) == 25 and not fake.groups


def test_a_batch_counts_as_written_while_its_push_waits_for_the_target(tmp_path, monkeypatch):
    """The live display said "writing users 0%" until the first batch's push ended
    (a slow target: minutes). A batch counts once committed, before its push."""
    import httpx

    from idprov.config import load_text
    from tests.outbound_helpers import FakeScim, idp_yaml, make_config_text

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    progress: list[tuple[str, int, int]] = []
    seen_at_first_post: list[list[tuple[str, int, int]]] = []

    def look(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and not seen_at_first_post:
            seen_at_first_post.append(list(progress))
        return None

    fake.faults.append(look)
    text = make_config_text(tmp_path, idp_yaml("target", "https://scim.test/v2"), ["target"])
    path = write(tmp_path, HEADER + "".join(f"u{i},u{i}@example.com,U,{i},\n" for i in range(10)))
    with IdentityService(load_text(text, "t.yaml"), http_transport=fake.transport()) as svc:
        run = CsvImport(
            svc, path, ImportOptions(batch_size=5), progress=lambda *a: progress.append(a)
        )
        assert run.run().outbound.ok
    [before] = seen_at_first_post
    assert ("importing", 5, 10) in before, before
    assert [p for p in progress if p[0] == "importing"][-1] == ("importing", 10, 10)
