"""Errors a user can cause or meet on their system: files, directories, pipes, a
read-only or full disk, a busy database. Each is a message naming the file and an
exit code from the README's table, never "internal error ... this is a bug"."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.mounts import IDPROV, needs_mounts, read_only, run_with_mounts, tiny_disk


def test_init_onto_a_directory_or_into_a_missing_one_says_which_path(cli, tmp_path):
    (tmp_path / "adir").mkdir()
    error = cli("init", "--path", "adir", "--force", "--json").error(2)
    assert error["message"] == "adir: Is a directory" and "not a directory" in error["hint"]
    error = cli("init", "--path", "/proc/x", "--json").error(3)
    assert error["message"] == "/proc/x: No such file or directory"


def test_a_missing_idp_ca_file_fails_validation_with_its_name_and_line(cli, write_config):
    path = write_config(
        textwrap.dedent("""\
        identity_providers:
          - name: partner
            connector: scim2
            options:
              base_url: https://partner.example.net/scim/v2
              token: env:T
              ca_file: /etc/idprov/partner-ca.pem
        """)
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:7:")
    assert "/etc/idprov/partner-ca.pem does not exist" in error["message"]
    assert cli("idp", "test", "partner", "--json").error(2)["message"] == error["message"]
    # a disabled IdP is not checked: it sends nothing until enabled
    write_config(path.read_text() + "    enabled: false\n")
    cli("config", "validate").ok()


def test_a_ca_file_that_is_not_pem_names_the_file(cli, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv("T", "token")
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    write_config(
        "identity_providers:\n  - name: p\n    connector: scim2\n    options:\n"
        f"      base_url: https://p.example/v2\n      token: env:T\n      ca_file: {bad}\n"
    )
    error = cli("idp", "test", "p", "--json").error(2)
    assert f"ca_file {bad}: cannot load CA certificates" in error["message"]


def test_a_read_only_store_whose_file_is_missing_is_an_error_not_an_empty_store(
    cli, write_config, tmp_path
):
    write_config(
        "userstores:\n  - domain: PRIMARY\n    type: sqlite\n"
        "  - domain: LEGACY\n    type: sqlite\n    path: legcy.db\n    read_only: true\n"
    )
    error = cli("user", "list", "--domain", "LEGACY", "--json").error(1)
    assert f"names {tmp_path / 'legcy.db'}, which does not exist" in error["message"]
    assert not (tmp_path / "legcy.db").exists()


@pytest.mark.parametrize("argv", [["user", "list"], ["user", "add", "bob"], ["log"]])
def test_a_damaged_database_says_so_and_how_to_recover(cli, data_dir, argv):
    data_dir.mkdir(parents=True)
    (data_dir / "idprov.db").write_text("garbage, not SQLite\n")
    error = cli(*argv, "--json").error(1)
    assert error["message"].startswith(f"cannot open database {data_dir / 'idprov.db'}: ")
    assert "damaged, or not an SQLite database" in error["message"]
    assert "restore it from a backup" in error["hint"] and "mv " in error["hint"]
    assert "mode" not in error["hint"]
    assert (data_dir / "idprov.db").read_text() == "garbage, not SQLite\n"


def test_a_directory_where_the_database_should_be(cli, data_dir):
    (data_dir / "idprov.db").mkdir(parents=True)
    for argv in (["user", "list"], ["user", "add", "bob"]):
        error = cli(*argv, "--json").error(2)
        assert error["message"] == (
            f"cannot open database {data_dir / 'idprov.db'}: it is a directory, not an SQLite file"
        )
        assert "move the directory away" in error["hint"]
    data_dir.joinpath("idprov.db").rmdir()
    data_dir.rmdir()
    data_dir.write_text("")
    error = cli("user", "list", "--json").error(2)
    assert f"{data_dir} is a file, not a directory" in error["message"]
    assert "set data_dir" in error["hint"]


def many_users(cli, tmp_path: Path, count: int) -> None:
    """``count`` users whose rows are long enough to fill a pipe's buffer (64 KiB)."""
    name = "A Rather Long Display Name For Filling Pipes"
    rows = "".join(f"user{i:05},u{i}@example.com,{name}\n" for i in range(count))
    (tmp_path / "many.csv").write_text("username,email,display_name\n" + rows)
    cli("import", "users", "many.csv", "-q").ok()


def test_a_closed_pipe_ends_the_command_quietly(cli, tmp_path):
    many_users(cli, tmp_path, 3000)
    for args in (["user", "list", "--limit", "0"], ["user", "list", "--limit", "0", "--json"]):
        proc = subprocess.Popen(
            [sys.executable, "-c", IDPROV, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # `| head -1`
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.wait(timeout=60) == 1
        assert stderr == ""


@needs_mounts
def test_read_commands_work_on_a_read_only_data_directory(cli, tmp_path, data_dir):
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "email=a@example.com", "--role", "staff").ok()
    env = dict(os.environ)
    for args in (["user", "list"], ["user", "show", "alice"], ["log"], ["role", "list"]):
        run = run_with_mounts(read_only(data_dir), args, env, tmp_path)
        assert run.returncode == 0, run.stderr
        assert "alice" in run.stdout or "staff" in run.stdout
    run = run_with_mounts(read_only(data_dir), ["user", "add", "bob"], env, tmp_path)
    assert run.returncode == 1, run
    assert f"cannot open database {data_dir / 'idprov.db'} for writing" in run.stderr
    assert "read-only" in run.stderr and "Traceback" not in run.stderr


@needs_mounts
def test_a_full_disk_is_said_plainly(cli, tmp_path, data_dir):
    data_dir.mkdir(parents=True)
    rows = "".join(f"user{i:05},u{i}@example.com,{'x' * 200}\n" for i in range(5000))
    (tmp_path / "big.csv").write_text("username,email,title\n" + rows)
    args = ["import", "users", "big.csv", "-q"]
    run = run_with_mounts(tiny_disk(data_dir), args, dict(os.environ), tmp_path)
    assert run.returncode == 1, run
    assert "disk is full" in run.stderr and "internal error" not in run.stderr


@pytest.mark.parametrize("holding", ["idprov sync", "idprov state copy --to new.yaml"])
def test_a_busy_database_names_the_process_holding_it(tmp_path, holding):
    """And, held by `idprov state copy`, says to run the command on the new
    configuration once the copy is done (waiting and running it again here would
    write to the file left behind)."""
    from idprov.db import open_database, write_transaction
    from idprov.errors import StoreError

    path = tmp_path / "state.db"
    open_database(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(path), *holding.split()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        db = open_database(path)
        db.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StoreError) as info, write_transaction(db):
            pass
        db.close()
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert f"database {path} is busy" in info.value.message
    assert f"held by pid {holder.pid} (" in info.value.message
    copying = "state copy" in holding
    assert ("with the new configuration" in (info.value.hint or "")) is copying


HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
time.sleep(60)
"""


def test_a_write_to_a_read_only_database_says_read_only(tmp_path):
    """What the CLI reports for SQLite's own refusal of a write (a file this user may
    only read: tests run as root, for whom a mode-0400 file is still writable)."""
    import sqlite3

    from idprov.db import open_database, open_database_read_only, write_transaction
    from idprov.errors import from_sqlite_error

    path = tmp_path / "state.db"
    open_database(path).close()
    db = open_database_read_only(path)
    with pytest.raises(sqlite3.OperationalError) as info, write_transaction(db):
        db.execute("CREATE TABLE t (a)")
    db.close()
    error = from_sqlite_error(info.value, [str(path)])
    assert error is not None and error.exit_code == 1
    assert error.message.startswith(f"the database {path} is read-only")
    assert "writable" in (error.hint or "")


@pytest.mark.parametrize(
    ("argv", "cut", "says"),
    [
        (
            ["user", "add", "hank"],
            {"committed": True, "unpushed": True},
            "do not run it again); push what it left to the identity providers with: "
            "idprov outbox retry",
        ),
        (["role", "assign", "staff", "hank"], {"committed": True, "unpushed": True}, "retry"),
        (["user", "delete", "hank"], {}, "run the command again: idprov user delete hank"),
        (["user", "delete", "hank"], None, "run the command again: idprov user delete hank"),
        (
            ["user", "add", "CORP/hank"],
            {"recorded": ("add of user CORP/hank",)},
            "run the same command again, it finishes only what it recorded: "
            "idprov user add CORP/hank",
        ),
        (
            ["role", "assign", "CORP/staff", "CORP/hank"],
            {"unanswered": ("CORP",)},
            "run the command again (idprov role assign CORP/staff CORP/hank); if it finds the "
            "change made already, push it to the identity providers with: idprov sync",
        ),
        (
            ["import", "users", "people.csv"],
            None,
            "run the same command again to finish (an import resumes after the last row "
            "written): idprov import users people.csv",
        ),
        (["sync"], None, "run the same command again to finish (a sync plans again from what is"),
    ],
)
def test_an_interrupted_command_says_what_finishes_the_job(monkeypatch, argv, cut, says):
    """Ctrl-C: the hint follows what the change left. Committed but not pushed:
    `outbox retry` (run again, `user add` would only say the user exists, exit 4).
    Nothing committed: run it again (`outbox retry` would do nothing). A directory
    write recorded: the same command finishes it. An import or a sync finishes by
    running again."""
    from idprov.cli.common import interrupted
    from idprov.provisioning.unit_of_work import CutOff

    monkeypatch.setattr(sys, "argv", ["idprov", *argv])
    error = interrupted(argv[0], None if cut is None else CutOff(**cut))
    assert error.exit_code == 130
    assert says in (error.hint or "")
    if cut is not None and not cut.get("unpushed"):
        assert "outbox retry" not in (error.hint or "")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["outbox", "release", "--idp", "crm", "--yes", "--allow-deletes", "12", "--json"],
            "push them with idprov outbox retry --idp crm --json",
        ),
        (
            ["--config", "a.yaml", "outbox", "release", "-y", "--allow-deletes=3"],
            "push them with idprov --config a.yaml outbox retry",
        ),
    ],
)
def test_an_interrupted_release_names_the_retry_that_pushes_what_it_released(
    monkeypatch, argv, says
):
    """Cut after it released the held rows, `outbox release` run again finds none
    held: `outbox retry` of the same IdPs pushes them (its confirmation options are
    not retry's). Cut before (at its question), nothing was released: run it again."""
    from idprov.cli.common import interrupted
    from idprov.provisioning.unit_of_work import CutOff

    monkeypatch.setattr(sys, "argv", ["idprov", *argv])
    released = interrupted("outbox", CutOff(committed=True, unpushed=True))
    assert says in (released.hint or "") and released.exit_code == 130
    before = interrupted("outbox", None)
    assert "run the same command again" in (before.hint or "")
