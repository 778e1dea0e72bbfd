"""What every command prints, for a person and for a program: help with examples
and human placeholders, one JSON shape for lists, usage errors as JSON under
--json, choices that are checked, and plain tab-separated rows when the output is
not a terminal (a terminal gets the rich table: tested in a pseudo-terminal)."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.terminal import run_in_terminal
from tests.test_cli_misc import COMMANDS

LEAVES = [(p, c) for p, c in COMMANDS if not hasattr(c, "list_commands")]


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_has_examples_human_placeholders_and_dash_h(cli, path, command):
    text = cli(*path, "-h").ok().stdout
    assert "\n  Examples:\n    idprov " in text or "| idprov " in text, text
    for bad in ("{", "<str>", "<int", "--no-no-", "[default: no-"):
        assert bad not in text, f"idprov {' '.join(path)} -h shows {bad!r}:\n{text}"
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: idprov {' '.join(path)}"), usage


def test_push_reads_as_push_or_no_push(cli):
    text = cli("import", "users", "-h").ok().stdout
    assert "--push / --no-push" in text and "[default: push]" in text


@pytest.mark.parametrize(
    "args",
    [
        ["user", "list", "--limt", "3"],
        ["user", "lst"],
        ["--bogus"],
        ["outbox", "list", "--status", "bogus"],
        ["user", "add"],
    ],
)
def test_usage_errors_are_json_under_json(cli, args):
    error = cli(*args, "--json").error(2)
    assert error["code"] == "usage" and error["message"]
    assert error["hint"].startswith("Usage: idprov")


def test_choices_are_checked_not_read_as_no_match(cli, write_config):
    write_config("identity_providers: []\n")
    assert "'bogus' is not one of 'pending', 'failed'" in cli(
        "outbox", "list", "--status", "bogus"
    ).fails(2)
    error = cli("outbox", "list", "--idp", "typo", "--json").error(3)
    assert error["message"] == "no identity provider named 'typo'"
    error = cli("log", "--since", "last week", "--json").error(2)
    assert error["message"] == "--since 'last week' is not a time"
    assert "7d" in error["hint"] and "2026-11-28" in error["hint"]


@pytest.mark.parametrize("since", ["99999999d", "99999999999999999999w", "0001-01-01T00:00+01:00"])
def test_log_since_before_the_year_one_is_a_usage_error(cli, since):
    error = cli("log", "--since", since, "--json").error(2)
    assert error["message"] == f"--since {since!r} is out of range"
    assert "an age" in error["hint"]


def test_log_since_takes_ages_dates_and_yesterday(cli):
    cli("role", "add", "staff").ok()
    for since in ("10m", "1h", "yesterday", "today", "2020-01-01", "2020-01-01T10:00"):
        assert len(cli("log", "--since", since, "--json").items()) == 1, since
    assert cli("log", "--since", "2999-01-01", "--json").items() == []
    assert cli("log", "--until", "2020-01-01", "--json").items() == []


@pytest.mark.parametrize(
    "args",
    [
        ["role", "list"],
        ["token", "list"],
        ["outbox", "list"],
        ["idp", "list"],
        ["connector", "list"],
    ],
)
def test_every_list_is_one_json_shape(cli, args):
    cli("role", "add", "staff").ok()
    document = cli(*args, "--json").json()
    assert set(document) == {"items"} and isinstance(document["items"], list)


@pytest.mark.parametrize("args", [["user", "list"], ["log"]])
def test_user_list_and_log_json_have_items_and_paging(cli, args):
    cli("user", "add", "alice").ok()
    document = cli(*args, "--json").json()
    assert set(document) == {"items", "total", "offset", "limit"}
    assert isinstance(document["items"], list)


def test_not_on_a_terminal_rows_are_tab_separated_and_never_truncated(cli):
    description = "Nightly HR feed from the payroll system; owner: identity team " * 3
    cli("token", "create", "--app", "resident", "--description", description).ok()
    run = cli("token", "list").ok()
    header, row = run.stdout.splitlines()
    assert header.split("\t") == [
        "id",
        "application",
        "scope",
        "created",
        "by",
        "state",
        "description",
    ]
    assert row.split("\t")[-1] == description and "…" not in run.stdout
    assert "  " not in header  # not padded


def test_on_a_terminal_a_list_is_a_table_with_its_position(cli, tmp_path):
    for name in ("alice", "bob"):
        cli("user", "add", name, "-c", f"email={name}@example.com").ok()
    run = run_in_terminal(["user", "list"], cwd=tmp_path, env=dict(os.environ))
    assert run.exit_code == 0, run.text
    lines = [line.rstrip() for line in run.text.splitlines() if line.strip()]
    assert re.fullmatch(r"username\s{2,}email\s{2,}display name\s{2,}roles\s{2,}state", lines[0]), (
        lines
    )
    assert re.fullmatch(r"alice\s{2,}alice@example\.com\s{2,}active", lines[1]), lines
    assert lines[-1] == "1–2 of 2"


def test_on_a_terminal_values_show_as_stored(cli, tmp_path):
    """Backslashes before brackets, markup and emoji codes are text, in a table and
    in a message."""
    values = ["\\[x", "a\\\\[y", "[bold]b[/]", "c :smile: d", "\\[bold]e"]
    for i, value in enumerate(values):
        cli("user", "add", f"u{i}", "-c", f"title={value}", "-c", f"display_name={value}").ok()
    for i, value in enumerate(values):
        run = run_in_terminal(["user", "show", f"u{i}"], cwd=tmp_path, env=dict(os.environ))
        assert run.exit_code == 0, run.text
        assert re.search(r"^title\s+" + re.escape(value) + r"\s*$", run.text, re.M), run.text
    run = run_in_terminal(["role", "add", "\\[r :smile:"], cwd=tmp_path, env=dict(os.environ))
    assert run.exit_code == 0 and "added role \\[r :smile:" in run.text, run.text


def test_many_failed_pushes_are_summed_up_not_a_wall(cli, tmp_path, monkeypatch):
    """A target that refuses every connection: 30 users fail, in 3 batches that each
    fail the role too; the report shows each failure once, ten at most."""
    from tests.outbound_helpers import idp_yaml, make_config_text

    monkeypatch.setenv("SCIM_TOKEN", "t")
    config = make_config_text(tmp_path, idp_yaml("down", "http://127.0.0.1:9/v2"), ["down"])
    (tmp_path / "idprov.yaml").write_text(config.replace("max_attempts: 3", "max_attempts: 1"))
    rows = "".join(f"user{i:02},staff\n" for i in range(30))
    (tmp_path / "users.csv").write_text("username,roles\n" + rows)
    run = cli("import", "users", "users.csv", "--create-roles", "--batch-size", "10")
    assert run.exit_code == 6, run
    failures = [line for line in run.stdout.splitlines() if " failed: " in line]
    assert len(failures) == 10 and len(set(failures)) == 10
    more = re.search(
        r"… and (\d+) more: `idprov outbox list --idp down --status failed`", run.stdout
    )
    assert more is not None
    failed_rows = len(cli("outbox", "list", "--status", "failed", "--json").items())
    assert failed_rows == 31  # the 30 users and the role
    # every distinct failure counted once: the users', and the role's (its create, and
    # its members per batch, which repeat with the same message)
    assert failed_rows <= 10 + int(more.group(1)) <= failed_rows + 3


def test_choices_and_identity_providers_complete_in_the_shell(tmp_path, write_config):
    import subprocess
    import sys

    from tests.mounts import IDPROV

    write_config(
        "identity_providers:\n  - name: scim-main\n    connector: scim2\n    options:\n"
        "      base_url: https://scim.example.com/v2\n      token: env:T\n"
    )

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_IDPROV_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        proc = subprocess.run(
            [sys.executable, "-c", IDPROV], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        return proc.stdout.split()

    assert complete("idprov outbox list --idp sc") == ["scim-main"]
    assert complete("idprov outbox list --status ") == ["pending", "failed", "held"]
    assert complete("idprov import users x.csv --mode u") == ["upsert", "update"]


def test_a_plan_shortens_a_long_member_list(cli, tmp_path, scim2_server, monkeypatch):
    from tests.outbound_helpers import idp_yaml, make_config_text

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    config = make_config_text(tmp_path, idp_yaml("scim", scim2_server.base_url), ["scim"])
    (tmp_path / "idprov.yaml").write_text(config)
    cli("role", "add", "staff").ok()
    rows = "".join(f"user{i:02},staff\n" for i in range(25))
    (tmp_path / "users.csv").write_text("username,roles\n" + rows)
    cli("import", "users", "users.csv", "--no-push").ok()
    plan = cli("plan").ok().stdout
    (members,) = [line for line in plan.splitlines() if line.startswith("update\trole\tstaff")]
    assert members.endswith(", … and 15 more") and members.count("+user") == 10
    document = cli("plan", "--json").json()  # the data keeps every name
    assert "+user24" in str(document)


def test_the_log_in_a_pipe_keeps_every_detail(cli, tmp_path):
    rows = "".join(f"user{i:02}\n" for i in range(30))
    (tmp_path / "users.csv").write_text("username\n" + rows)
    cli("import", "users", "users.csv").ok()
    (line,) = cli("log").ok().stdout.splitlines()[1:]
    details = line.split("\t")[-1]
    assert "created=" + ",".join(f"user{i:02}" for i in range(30)) in details
    assert "..." not in details


@pytest.mark.parametrize("answer", [None, "n\n", "maybe"])
def test_a_declined_prompt_under_json_leaves_stdout_empty_and_the_error_on_its_line(cli, answer):
    cli("role", "add", "tmp1").ok()
    run = cli("role", "delete", "tmp1", "--json", input=answer)
    error = json.loads(run.stderr.splitlines()[-1])["error"]
    said = (
        "aborted" if answer else "cannot ask for confirmation (stdin is not a terminal): pass --yes"
    )
    assert (run.exit_code, run.stdout, error["message"]) == (1, "", said)
    assert run.stderr.splitlines()[0] == "Delete role tmp1 (0 members)? [y/N]: "
    assert cli("role", "show", "tmp1").ok()


def test_an_accepted_prompt_under_json_prints_only_the_document(cli):
    cli("role", "add", "tmp1").ok()
    run = cli("role", "delete", "tmp1", "--json", input="y\n").ok()
    assert run.stdout.startswith("{") and json.loads(run.stdout)
    cli("role", "show", "tmp1").fails(3)


def test_outbox_discard_of_an_unknown_idp_is_an_error_as_in_list(cli, write_config):
    write_config(
        "identity_providers:\n  - name: corp\n    connector: scim2\n"
        "    options: {base_url: 'https://scim.example.com', auth: none}\n"
    )
    for argv in (["outbox", "list"], ["outbox", "discard", "--yes"]):
        error = cli(*argv, "--idp", "typo", "--json").error(3)
        assert error["message"] == "no identity provider named 'typo'"
        assert "corp" in error["hint"]
