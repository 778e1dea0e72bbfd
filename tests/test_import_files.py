"""What an administrator's CSV files look like in practice: another delimiter,
another encoding, headers in their own case, standard input and output; and what
export must never do (overwrite, widen the mode, invent directories)."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

import pytest


def names(cli) -> list[str]:
    return [u["username"] for u in cli("user", "list", "--limit", "0", "--json").json()["items"]]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_the_delimiter_is_detected_from_the_header(cli, tmp_path, delimiter):
    text = delimiter.join(["username", "email", "display_name"]) + "\n"
    text += delimiter.join(["alice", "a@example.com", '"Liddell, Alice"']) + "\n"
    (tmp_path / "users.csv").write_text(text)
    cli("import", "users", "users.csv").ok()
    (alice,) = cli("user", "list", "--json").json()["items"]
    assert alice["claims"] == {"email": "a@example.com", "display_name": "Liddell, Alice"}


def test_a_wrong_delimiter_gets_a_hint_naming_the_right_one(cli, tmp_path):
    (tmp_path / "users.csv").write_text("username;email\nalice;a@example.com\n")
    error = cli("import", "users", "users.csv", "--delimiter", ",", "--json").error(2)
    assert "looks ';'-separated" in error["message"]
    assert "--delimiter ';'" in error["hint"]
    cli("import", "users", "users.csv", "--delimiter", ";").ok()
    assert names(cli) == ["alice"]


def test_headers_match_claims_in_any_case_and_a_typo_gets_a_did_you_mean(cli, tmp_path):
    (tmp_path / "ok.csv").write_text("UserName,Email,Given Name,family-name\nbob,b@x.org,Bob,B\n")
    cli("import", "users", "ok.csv").ok()
    (bob,) = cli("user", "list", "--json").json()["items"]
    assert bob["claims"] == {"email": "b@x.org", "given_name": "Bob", "family_name": "B"}
    (tmp_path / "typo.csv").write_text("username,emial,givn_name\ncarl,c@x.org,C\n")
    error = cli("import", "users", "typo.csv", "--json").error(2)
    assert "unknown column(s) 'emial', 'givn_name'" in error["message"]
    assert "'emial': did you mean 'email'?" in error["hint"]
    assert "'givn_name': did you mean 'given_name'?" in error["hint"]


def test_standard_input_imports_and_the_same_input_again_changes_nothing(cli, tmp_path):
    text = "username,email\n" + "".join(f"user{i},u{i}@x.org\n" for i in range(5))
    report = cli("import", "users", "-", "--json", input=text).json()
    assert report["created"] == 5 and report["file"] == "-"
    assert names(cli) == [f"user{i}" for i in range(5)]
    again = cli("import", "users", "-", "--mode", "upsert", "--json", input=text).json()
    assert again["unchanged"] == 5


def test_export_writes_0600_refuses_to_overwrite_and_never_makes_directories(cli, tmp_path):
    cli("user", "add", "alice", "-c", "email=a@example.com").ok()
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    out.chmod(0o644)
    error = cli("export", "users", str(out), "--json").error(4)
    assert error["message"] == f"{out} exists" and "--force" in error["hint"]
    assert out.read_text() == "precious\n"
    cli("export", "users", str(out), "--force").ok()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "alice" in out.read_text()
    nowhere = tmp_path / "nonexistent" / "dir" / "x.csv"
    error = cli("export", "users", str(nowhere), "--json").error(3)
    assert error["message"] == f"directory {nowhere.parent} does not exist"
    assert not (tmp_path / "nonexistent").exists()


def test_export_to_standard_output_round_trips_through_import_from_standard_input(cli):
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "email=a@example.com", "--role", "staff").ok()
    run = cli("export", "users", "-").ok()
    rows = list(csv.reader(io.StringIO(run.stdout)))
    assert rows == [["username", "roles", "email"], ["alice", "staff", "a@example.com"]]
    assert run.stderr == "exported 1 users\n"
    cli("user", "delete", "alice", "--yes").ok()
    cli("import", "users", "-", input=run.stdout).ok()
    (alice,) = cli("user", "list", "--json").json()["items"]
    assert alice["roles"] == ["staff"] and alice["claims"] == {"email": "a@example.com"}


def test_a_row_for_a_read_only_domain_is_rejected_alone(cli, write_config, tmp_path: Path):
    from idprov.db import open_database

    open_database(tmp_path / "legacy.db").close()
    write_config(
        "userstores:\n  - domain: PRIMARY\n  - domain: LEGACY\n    type: sqlite\n"
        "    path: legacy.db\n    read_only: true\n"
    )
    (tmp_path / "users.csv").write_text("username,email\nann,a@x.org\nLEGACY/old,o@x.org\n")
    run = cli("import", "users", "users.csv", "--json")
    assert run.exit_code == 9, run
    import json

    report = json.loads(run.stdout)
    assert report["created"] == 1 and report["rejected"] == 1
    assert report["errors"] == [
        {"line": 3, "column": "username", "message": "the LEGACY userstore is read-only"}
    ]
    assert names(cli) == ["ann"]


def test_rows_the_directory_refuses_are_rejected_alone_with_their_lines(cli, tmp_path, slapd):
    """An LDAP import: a hash the directory cannot check binds against (found before
    writing), and a name taken by an entry outside the user filter (found by the
    directory while writing: LDAP cannot roll back the rest of the batch)."""
    from idprov.userstores.passwords import hash_password, hash_ssha

    password = tmp_path / "bind.secret"
    password.write_text(slapd.root_password)
    (tmp_path / "idprov.yaml").write_text(
        "userstores:\n  - domain: PRIMARY\n  - domain: CORP\n    type: ldap\n"
        f"    url: {slapd.url}\n    bind_dn: {slapd.root_dn}\n"
        f"    bind_password: file:{password}\n"
        f"    user_search_base: {slapd.people}\n    group_search_base: {slapd.groups}\n"
    )
    slapd.add(f"dn: uid=ghost,{slapd.people}\nobjectClass: account\nuid: ghost\n")
    (tmp_path / "users.csv").write_text(
        "username,email,password_hash\n"
        "CORP/alice,a@x.org,\n"
        f'CORP/bob,b@x.org,"{hash_password("bob-secret-1")}"\n'
        "CORP/ghost,g@x.org,\n"
        f"CORP/carol,c@x.org,{hash_ssha('carol-secret')}\n"
    )
    run = cli("import", "users", "users.csv", "--rejects", "rejects.csv", "--json")
    assert run.exit_code == 9, run
    import json

    report = json.loads(run.stdout)
    assert (report["created"], report["rejected"]) == (2, 2)
    assert [(e["line"], e["column"]) for e in report["errors"]] == [(3, "password_hash"), (4, None)]
    assert "{SSHA}" in report["errors"][0]["message"]
    assert "ghost" in report["errors"][1]["message"]
    assert names(cli) == ["alice", "carol"]
    rejected = list(csv.reader(io.StringIO((tmp_path / "rejects.csv").read_text())))
    assert [r[0] for r in rejected[1:]] == ["CORP/bob", "CORP/ghost"]


def test_no_push_with_create_roles_pushes_nothing_at_all(cli, tmp_path, scim2_server, monkeypatch):
    from tests.outbound_helpers import idp_yaml, make_config_text

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    config = make_config_text(tmp_path, idp_yaml("scim", scim2_server.base_url), ["scim"])
    (tmp_path / "idprov.yaml").write_text(config)
    (tmp_path / "users.csv").write_text("username,roles\nalice,staff\nbob,staff;eng\n")
    cli("import", "users", "users.csv", "--create-roles", "--no-push").ok()
    assert scim2_server.users() == [] and scim2_server.groups() == []
    assert len(cli("outbox", "list", "--json").items()) == 4
    cli("sync").ok()
    assert len(scim2_server.users()) == 2 and len(scim2_server.groups()) == 2


def test_a_prefix_with_spaces_matches_nothing_in_a_directory_too(cli, tmp_path, slapd):
    """The embedded store and a directory answer `--prefix ' '` alike (no user's name
    begins with a space), where the directory used to fail on the filter."""
    password = tmp_path / "bind.secret"
    password.write_text(slapd.root_password)
    (tmp_path / "idprov.yaml").write_text(
        "userstores:\n  - domain: PRIMARY\n  - domain: CORP\n    type: ldap\n"
        f"    url: {slapd.url}\n    bind_dn: {slapd.root_dn}\n"
        f"    bind_password: file:{password}\n"
        f"    user_search_base: {slapd.people}\n    group_search_base: {slapd.groups}\n"
    )
    cli("user", "add", "CORP/alice").ok()
    cli("role", "add", "CORP/staff").ok()
    for prefix in (" ", " a", "a "):
        page = cli("user", "list", "--domain", "CORP", "--prefix", prefix, "--json").json()
        assert page["items"] == [] and page["total"] == 0
        assert cli("role", "list", "--domain", "CORP", "--prefix", prefix, "--json").items() == []
    assert [u["username"] for u in cli("user", "list", "--prefix", "a", "--json").items()] == [
        "alice"
    ]


def test_an_import_the_data_directory_refuses_names_the_directory(cli, tmp_path, monkeypatch):
    """The error named the random working directory it could not make
    (`.../import-host:5139:2ohq7lpc: Permission denied`)."""
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", f"{kwargs.get('dir')}/import-x:1:abc")

    csv_file = tmp_path / "u.csv"
    csv_file.write_text("username\nann\n")
    monkeypatch.setattr(tempfile, "TemporaryDirectory", refused)
    error = cli("import", "users", str(csv_file), "--json").error(1)
    assert error["message"].startswith("cannot import into the data directory ")
    assert "import-x" not in error["message"] and "owner of the data" in error["hint"]


def test_a_header_repeated_inside_the_file_is_refused_as_such(cli, tmp_path):
    """Two exports joined together: the second header is no user called 'username'."""
    path = tmp_path / "joined.csv"
    path.write_text("username,email\nann,ann@example.com\nUserName, email\nbob,bob@example.com\n")
    run = cli("import", "users", str(path), "--json")
    assert run.exit_code == 9
    [error] = json.loads(run.stdout)["errors"]
    assert error["line"] == 3 and "repeats the header row" in error["message"]
    assert cli("user", "show", "username").exit_code == 3
