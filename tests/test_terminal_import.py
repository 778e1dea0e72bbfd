"""`idprov import users` at a terminal: one live display, and Ctrl-C.

Run in a pseudo-terminal (see tests/terminal.py) against a real scim2-server, as an
administrator runs it: the display must hold for the whole command (checking,
hashing, writing, pushing), and a Ctrl-C must stop the import within 2 seconds,
leave whole batches behind, and print the command that resumes it.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
from pathlib import Path

import pytest

from tests.outbound_helpers import idp_yaml, make_config_text
from tests.terminal import run_in_terminal

BATCH = 100


LONG = 600.0
"""Seconds a run of thousands of users may take on a loaded machine (one took 100 s)."""


@pytest.fixture
def setup(tmp_path: Path, scim2_server) -> tuple[Path, dict[str, str]]:
    config = tmp_path / "idprov.yaml"
    # Bulk requests of 1,000 creates, several at once, take scim2-server 5-6 s to answer
    # on a loaded machine: past the default 10 s, they would be retried, not awaited
    idp = idp_yaml("scim-main", scim2_server.base_url).replace(
        "auth: bearer\n", "auth: bearer\n      timeout: 120\n"
    )
    config.write_text(make_config_text(tmp_path, idp, ["scim-main"]))
    env = {**os.environ, "SCIM_TOKEN": scim2_server.token, "IDPROV_CONFIG": str(config)}
    return config, env


def users_file(tmp_path: Path, count: int, passwords: bool = False) -> Path:
    lines = ["username,email,roles" + (",password" if passwords else "")]
    for i in range(count):
        lines.append(
            f"user{i:05},u{i}@example.com,staff" + (f",Pw-{i:05}-long" if passwords else "")
        )
    path = tmp_path / "users.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def counts(tmp_path: Path) -> tuple[int, int]:
    """(users in the store, lines the import journal says are written)."""
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    try:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        journal = conn.execute("SELECT max(lines_done) FROM imports").fetchone()[0] or 1
        return users, journal
    finally:
        conn.close()


def test_an_interactive_import_shows_every_phase_and_pushes_everything(
    tmp_path, setup, scim2_server
):
    _, env = setup
    path = users_file(tmp_path, 250, passwords=True)
    args = ["import", "users", str(path), "--create-roles", "--batch-size", str(BATCH)]
    run = run_in_terminal(args, cwd=tmp_path, env=env)
    assert run.exit_code == 0, run.text
    for phase in (
        "checking the file",
        "hashing passwords",
        "writing users",
        "pushing to scim-main",
    ):
        assert phase in run.text, run.text
    assert "internal error" not in run.text and "Traceback" not in run.text
    # the push position is the command's, not the batch's: it reaches 250 users + the role
    assert re.search(r"pushing to scim-main.* 2\d\d/2\d\d", run.text), run.text
    assert re.search(r"created\s+250", run.text)
    assert len(scim2_server.users()) == 250


def test_ctrl_c_while_pushing_stops_promptly_and_the_printed_command_resumes(
    tmp_path, setup, scim2_server
):
    _, env = setup
    path = users_file(tmp_path, 2000)
    args = ["import", "users", str(path), "--create-roles", "--batch-size", str(BATCH)]
    run = run_in_terminal(
        args, cwd=tmp_path, env=env, interrupt_after=r"writing users.* [1-9][\d,]*/", timeout=LONG
    )
    assert run.exit_code == 130, run.text
    assert run.stop_seconds is not None and run.stop_seconds < 2, run.stop_seconds
    assert "Traceback" not in run.text
    written, journal = counts(tmp_path)
    assert 0 < written < 2000
    assert written == journal - 1  # whole batches only, and the journal knows them
    resume = re.search(r"run the same command again.*?: (idprov .*)", run.text)
    assert resume is not None, run.text
    command = shlex.split(resume.group(1).strip())
    assert command[1:] == args
    again = run_in_terminal(command[1:], cwd=tmp_path, env=env, timeout=LONG)
    assert again.exit_code == 0, again.text
    assert re.search(rf"already imported \(resumed\)\s+{written:,}", again.text), again.text
    assert counts(tmp_path)[0] == 2000
    names = sorted(u["userName"] for u in scim2_server.users())
    assert names == [f"user{i:05}" for i in range(2000)]


def test_ctrl_c_while_hashing_stops_promptly_and_writes_nothing(tmp_path, setup):
    _, env = setup
    path = users_file(tmp_path, 400, passwords=True)
    args = ["import", "users", str(path), "--create-roles"]
    run = run_in_terminal(
        args, cwd=tmp_path, env=env, interrupt_after=r"hashing passwords.* [1-9]\d*/"
    )
    assert run.exit_code == 130, run.text
    assert run.stop_seconds is not None and run.stop_seconds < 2, run.stop_seconds
    assert "Traceback" not in run.text
    assert "run the same command again" in run.text
    assert counts(tmp_path)[0] == 0


def test_ctrl_c_during_a_sync_stops_at_once_and_the_next_sync_finishes(
    tmp_path, setup, scim2_server
):
    """The pushes in flight are abandoned, as a crash would abandon them; the outbox
    and the ledger make the next run finish without duplicates."""
    _, env = setup
    path = users_file(tmp_path, 2000)  # a push of seconds: Ctrl-C lands mid-way
    args = ["import", "users", str(path), "--create-roles", "--no-push", "-q"]
    assert run_in_terminal(args, cwd=tmp_path, env=env, timeout=LONG).exit_code == 0
    run = run_in_terminal(
        ["sync"],
        cwd=tmp_path,
        env=env,
        interrupt_after=r"pushing to scim-main.* [1-9][\d,]*/",
        timeout=LONG,
    )
    assert run.exit_code == 130, run.text
    assert run.stop_seconds is not None and run.stop_seconds < 2, run.stop_seconds
    assert "run the same command again to finish" in run.text and ": idprov sync" in run.text
    assert "Traceback" not in run.text
    # requests already sent may still land; the next sync adopts them (scim2-server
    # refuses a second user of the same name: a duplicate create would fail it)
    again = run_in_terminal(["sync"], cwd=tmp_path, env=env, timeout=LONG)
    assert again.exit_code == 0, again.text
    names = sorted(u["userName"] for u in scim2_server.users())
    assert names == [f"user{i:05}" for i in range(2000)]


def test_standard_input_at_a_terminal_says_so_and_ends_at_one_ctrl_d(tmp_path, monkeypatch):
    """`idprov import users -` typed at a terminal: a line on stderr says what to type
    and how to end; one Ctrl-D at the start of a line ends the input, as for cat."""
    import pty

    fork = pty.fork

    def fork_and_type() -> tuple[int, int]:
        pid, fd = fork()
        if pid:  # the terminal keeps what is typed until the command reads it
            os.write(fd, b"username,email\nty1,t@example.com\n\x04")
        return pid, fd

    monkeypatch.setattr(pty, "fork", fork_and_type)
    run = run_in_terminal(["import", "users", "-"], cwd=tmp_path, env=dict(os.environ), timeout=60)
    assert run.exit_code == 0, run.text
    assert "reading CSV from the terminal" in run.text and "Ctrl-D" in run.text
    assert re.search(r"created\s+1", run.text), run.text
    assert "rows/s" not in run.text  # the rate of the typing, not of the import
    conn = sqlite3.connect(tmp_path / "xdg-data" / "idprov" / "idprov.db")
    try:
        assert conn.execute("SELECT username FROM users").fetchall() == [("ty1",)]
    finally:
        conn.close()


def test_ctrl_c_while_typing_says_nothing_was_changed_and_the_prompt_fits(tmp_path):
    """Ctrl-C while rows were being typed, before Ctrl-D: it said "every change
    committed so far is kept ... an import resumes after the last row written", while
    nothing was written and typed rows cannot be resumed. At 60 columns the prompt
    broke mid-word ("a row p|er user")."""
    run = run_in_terminal(
        ["import", "users", "-"],
        cwd=tmp_path,
        env=dict(os.environ),
        interrupt_after="ends it",
        columns=60,
        timeout=60,
    )
    assert run.exit_code == 130, run.text
    said = " ".join(run.text.split())
    assert "stopped before anything was changed (nothing typed was imported)" in said
    assert "committed so far" not in said and "resumes after the last row" not in said
    prompt = run.text[run.text.index("reading CSV") : run.text.index("ends it") + 7]
    assert all(len(line) < 60 for line in prompt.splitlines()), prompt
    assert "a row per user" in " ".join(prompt.split())
