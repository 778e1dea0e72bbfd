"""The text of an import file as HR and Excel write it: a UTF-8 byte order mark under
an --encoding written for an older export, Windows-1252 read as latin-1, a line break
inside a quoted cell. Each reaches the userstore and the target as the person's name
is written, or is refused saying what it is and how to fix it."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

HEADER = "username,email,given_name,family_name,department\r\n"


def claims(cli, name: str) -> dict[str, str]:
    return cli("user", "show", name, "--json").json()["claims"]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_utf8_byte_order_mark_wins_over_an_encoding_given_for_an_older_export(
    cli, tmp_path: Path, encoding: str
):
    """Excel's "CSV UTF-8" starts with a byte order mark; a cron job written for the
    cp1252 export read it as cp1252: José became JosÃ©, exit 0, no word. The mark
    proves UTF-8: the file is read so, and the report says --encoding is not needed."""
    path = tmp_path / "hr.csv"
    row = "bm1,bm1@example.com,José,Müller,R&D\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + row).encode())
    report = cli("import", "users", str(path), "--encoding", encoding, "--json").json()
    assert report["created"] == 1
    assert claims(cli, "bm1")["given_name"] == "José"
    assert claims(cli, "bm1")["family_name"] == "Müller"
    [note] = [n for n in report["notes"] if "byte order mark" in n]
    assert "read as UTF-8" in note and "drop --encoding" in note
    # without the mark, the encoding given is the file's
    plain = tmp_path / "old.csv"
    plain.write_bytes((HEADER + "cp1,cp1@example.com,José,Lefèvre,D\r\n").encode("cp1252"))
    cli("import", "users", str(plain), "--encoding", "cp1252").ok()
    assert claims(cli, "cp1")["given_name"] == "José"


def test_windows_1252_read_as_latin1_is_refused_naming_cp1252(cli, tmp_path: Path):
    """Windows-1252's curly quotes, dashes and euro sign are C1 control characters in
    latin-1: they were stored and pushed (Café \\x93Quotes\\x94), while a C0 control
    character is refused. Refused alike, with the line, column and the fix."""
    path = tmp_path / "cp.csv"
    text = HEADER + "cpb1,cpb1@example.com,François,Lefèvre,Café “Quotes” – dash €\r\n"
    path.write_bytes(text.encode("cp1252"))
    run = cli("import", "users", str(path), "--encoding", "latin-1", "--json")
    assert run.exit_code == 10, run
    [error] = json.loads(run.stdout)["errors"]
    assert (error["line"], error["column"]) == (2, "department")
    assert "contains the control character U+0093 (character 6)" in error["message"]
    assert "Windows-1252" in error["message"] and "--encoding cp1252" in error["message"]
    cli("import", "users", str(path), "--encoding", "cp1252").ok()
    assert claims(cli, "cpb1")["department"] == "Café “Quotes” – dash €"


def test_a_line_break_in_a_one_line_claim_says_so_and_which_claims_take_lines(cli, tmp_path: Path):
    """A cell quoted over two lines was refused as "contains control characters" (in
    Excel it looks like one line: people hunted for invisible bytes); street_address
    takes it."""
    path = tmp_path / "embed.csv"
    path.write_text(
        "username,email,department,street_address\n"
        'emb1,emb1@example.com,"Dept\nline2",x\n'
        'emb2,emb2@example.com,Sales,"1 Main St\nApt 2"\n'
    )
    run = cli("import", "users", str(path), "--json")
    assert run.exit_code == 9, run
    [error] = json.loads(run.stdout)["errors"]
    assert (error["line"], error["column"]) == (2, "department")
    assert "holds a line break" in error["message"]
    assert "only street_address takes several lines" in error["message"]
    assert claims(cli, "emb2")["street_address"] == "1 Main St\nApt 2"


def test_excels_empty_trailing_columns_are_ignored_and_a_value_under_one_is_named(
    cli, tmp_path: Path
):
    """Excel writes `a,b,c,,,` and rows ending `,,,` after columns once formatted or
    cleared: exit 2 "header cell 6 is empty" until the file was edited by hand."""
    path = tmp_path / "trail.csv"
    path.write_text(
        "username,email,given_name,family_name,department,,,\n"
        "tr1,tr1@example.com,A,B,D,,,\n"
        "tr2,tr2@example.com,C,D,E,,x,\n"
        "tr3,tr3@example.com,E,F,G\n"
    )
    run = cli("import", "users", str(path), "--json")
    assert run.exit_code == 9, run
    report = json.loads(run.stdout)
    assert report["created"] == 2
    assert "the header's last 3 cells are empty: those columns are not imported" in " ".join(
        report["notes"]
    )
    [error] = report["errors"]
    assert error["line"] == 3
    assert "has the value 'x' in column 7, which the header leaves unnamed" in error["message"]
    # an empty header cell before a named one stays an error naming it
    (tmp_path / "hole.csv").write_text("username,,email\nh1,,h1@example.com\n")
    error = cli("import", "users", str(tmp_path / "hole.csv"), "--json").error(2)
    assert error["message"] == "header cell 2 is empty"


def test_an_e_mail_header_is_the_email_claim(cli, tmp_path: Path):
    """`E-Mail` (Outlook's, most HR tools') did not match `email`: a did-you-mean."""
    path = tmp_path / "outlook.csv"
    path.write_text("User Name,E-Mail,Given-Name\nol1,ol1@example.com,Olga\n")
    cli("import", "users", str(path)).ok()
    assert claims(cli, "ol1") == {"email": "ol1@example.com", "given_name": "Olga"}


def test_a_dry_run_names_each_user_and_the_claims_it_would_set_or_remove(cli, tmp_path: Path):
    """The dry run said "would be updated 2" only: an upsert whose empty cells remove
    claims could not be reviewed. It lists each user and the claims' names (all of
    them in --json), the first 20 on the terminal with the total."""
    cli("user", "add", "cp1", "-c", "email=cp1@x.com", "-c", "department=Fin").ok()
    cli("user", "add", "cp2", "-c", "email=cp2@x.com", "-c", "title=Boss").ok()
    path = tmp_path / "up.csv"
    path.write_text(
        "username,email,given_name,department,title\n"
        "cp1,cp1-new@x.com,François,,\n"
        "cp2,cp2@x.com,,,Boss\n"
        "cp3,cp3@x.com,New,,\n"
    )
    run = cli("import", "users", str(path), "--mode", "upsert", "--dry-run")
    assert run.exit_code == 0, run
    said = " ".join(run.stdout.split())
    assert "update cp1: set email, given_name; remove department" in said
    assert "update cp2" not in said  # unchanged
    assert "create cp3: set email, given_name" in said
    report = cli("import", "users", str(path), "--mode", "upsert", "--dry-run", "--json").json()
    assert report["changes"] == [
        {"user": "cp1", "action": "update", "set": ["email", "given_name"],
         "removed": ["department"]},
        {"user": "cp3", "action": "create", "set": ["email", "given_name"]},
    ]  # fmt: skip
    assert claims(cli, "cp1")["department"] == "Fin"  # nothing changed
    many = tmp_path / "many.csv"
    many.write_text("username,email\n" + "".join(f"u{i:02d},u{i}@x.com\n" for i in range(25)))
    said = " ".join(cli("import", "users", str(many), "--dry-run").stdout.split())
    assert "would change (the first 20 of 25; all with --json):" in said
    assert "create u19" in said and "create u20" not in said


def test_a_rerun_after_the_file_changed_says_the_cut_import_was_not_resumed(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Cut, then the nightly export rewrote the file, then the hint's command: a new
    import began silently, every user the cut run made "already exists", exit 9."""
    from idprov.config import load_config
    from idprov.inbound.csv_import import CsvImport, ImportOptions
    from idprov.provisioning.service import IdentityService

    path = tmp_path / "d1.csv"
    path.write_text("username,email\n" + "".join(f"d{i},d{i}@x.com\n" for i in range(6)))
    original, calls = CsvImport._write_batch, []

    def cut_after_one(self, rows):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        original(self, rows)

    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        patch.setattr(CsvImport, "_write_batch", cut_after_one)
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, ImportOptions(batch_size=3)).run()
    path.write_text(path.read_text() + "d6,d6@x.com\n")  # the export ran again
    run = cli("import", "users", str(path), "--batch-size", "3", "--json")
    assert run.exit_code == 9, run
    report = json.loads(run.stdout)
    [note] = [n for n in report["notes"] if "not resumed" in n]
    assert f"the cut import of {path} started " in note
    assert "(written through line 4) was not resumed: the file changed since" in note
    assert "--mode upsert" in note


def test_a_push_of_many_users_counts_them_with_thousands_separators(capsys):
    """`✓ corp: 100021 done` after `created 100,021`: every other count has them."""
    from types import SimpleNamespace

    from idprov.cli.render_reports import outbound_report
    from idprov.provisioning.results import OutboundReport

    counts = {"done": 100_021, "failed": 1_200, "skipped": 3_000}
    idp = SimpleNamespace(
        name="corp",
        count=counts.__getitem__,
        total=104_221 + 5_000,
        operations=[SimpleNamespace(outcome="done")] * 104_221,
    )
    outbound_report(OutboundReport(idps={"corp": idp}))  # type: ignore[dict-item]
    said = capsys.readouterr().out
    assert (
        "corp: 100,021 done, 1,200 failed, 3,000 unchanged or out of scope, 5,000 left pending"
        in said
    )


def test_a_control_character_at_a_cells_end_is_refused_as_by_user_add(cli, tmp_path):
    """An import trimmed cells with str.strip, which takes U+0085 and U+001C-U+001F off
    a value's ends: `Ops\\x85` was imported as `Ops`, where `user add` refuses it."""
    path = tmp_path / "c.csv"
    path.write_text("username,title\nann,Ops\u0085\nbob,\u00a0Ops \n", encoding="utf-8")
    run = cli("import", "users", str(path))
    assert run.exit_code == 9, run  # ann's row rejected, bob's imported
    assert "ann" in run.stdout + run.stderr
    assert cli("user", "show", "ann").exit_code == 3
    assert cli("user", "show", "bob", "--json").json()["claims"]["title"] == "Ops"


UNICODE_TEXT = "username\tgiven_name\tfamily_name\r\nut1\tJosé\tMüller\r\nut2\tZoë\tŁódź\r\n"


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF16_LE + UNICODE_TEXT.encode("utf-16-le"),  # Excel's "Unicode Text"
        codecs.BOM_UTF16_BE + UNICODE_TEXT.encode("utf-16-be"),
        UNICODE_TEXT.encode("utf-16-le"),
        UNICODE_TEXT.encode("utf-16-be"),
    ],
    ids=["le-bom", "be-bom", "le", "be"],
)
def test_utf16_files_import_with_encoding_utf16_with_or_without_a_byte_order_mark(
    cli, tmp_path: Path, data: bytes
):
    """--encoding utf-16 on a file without a byte order mark was 'internal error:
    UnicodeError: UTF-16 stream does not start with BOM ... this is a bug in idprov'.
    The byte order is read off the header's NUL bytes: the names arrive as written."""
    path = tmp_path / "hr.txt"
    path.write_bytes(data)
    assert (
        cli("import", "users", str(path), "--encoding", "utf-16", "--json").json()["created"] == 2
    )
    assert claims(cli, "ut1")["given_name"] == "José"
    assert claims(cli, "ut2")["family_name"] == "Łódź"


def test_encoding_utf16_on_a_file_that_is_not_utf16_names_the_file_and_the_fix(cli, tmp_path: Path):
    """A UTF-8 file (with its mark, or without) given --encoding utf-16 crashed as a bug
    in idprov; it is refused naming the file and what to give, and nothing is imported."""
    marked = tmp_path / "b.csv"
    marked.write_bytes(codecs.BOM_UTF8 + "username,given_name\nann,José\n".encode())
    error = cli("import", "users", str(marked), "--encoding", "utf-16", "--json").error(10)
    assert "b.csv" in error["message"] and "UTF-8" in error["message"], error
    assert "internal" not in error["message"] and "drop --encoding" in error["hint"]
    plain = tmp_path / "p.csv"
    plain.write_bytes(b"username,given_name\nann,Jos\xc3\xa9\n")
    error = cli("import", "users", str(plain), "--encoding", "utf-16", "--json").error(10)
    assert "p.csv" in error["message"] and "byte order" in error["message"], error
    assert "--encoding utf-16-le" in error["hint"], error
    assert cli("user", "list", "--json").items() == []


def test_two_header_cells_that_name_one_claim_are_named_as_written(cli, tmp_path: Path):
    """`email` and `e_mail` both fold to the claim email: the error said "column
    'email' appears twice (cells 2 and 3)", and the one to look for in a 60-column
    HR export was spelt otherwise."""
    path = tmp_path / "h1.csv"
    path.write_text("username,email,E_Mail\nann,a@example.com,b@example.com\n")
    error = cli("import", "users", str(path), "--json").error(2)
    assert "'email' and 'E_Mail' are both 'email' (cells 2 and 3)" in error["message"], error


@pytest.mark.parametrize(
    ("codec", "given", "said"),
    [
        ("utf-32", "utf-16", "UTF-32 byte order mark"),
        ("utf-16", "utf-32", "UTF-16 byte order mark"),
    ],
)
def test_a_file_whose_byte_order_mark_is_another_wide_encodings_says_which(
    cli, tmp_path, codec, given, said
):
    """A UTF-32 LE file given --encoding utf-16 was read as UTF-16 (UTF-32 LE's mark
    begins with UTF-16 LE's), and the error then called it UTF-16 big-endian without a
    mark; a UTF-16 file given utf-32 got a hint naming Excel's "Unicode Text"."""
    path = tmp_path / "wide.csv"
    path.write_bytes("username,email\nann,ann@example.com\n".encode(codec))
    run = cli("import", "users", str(path), "--encoding", given)
    assert run.exit_code == 10, run
    shown = " ".join(run.stderr.split())
    assert said in shown and f"--encoding {codec}" in shown, shown
    assert cli("import", "users", str(path), "--encoding", codec).exit_code == 0
