"""Rows a drainer on another host claimed (a command killed there: its lease runs 5
minutes) are shown with their holder and the lease's end; `outbox retry` and `outbox
work --once` say they wait for it rather than "nothing to provision", and a command's
push says so rather than "queued for the outbox worker", which cannot take them
either until the lease ends."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

HOLDER = "hostA:3:0123abcd~1a2b3c4d-4026531836-77"
UNTIL = "2999-01-01T00:00:00.000Z"
SAYS = (
    f"1 row is claimed by hostA pid 3 until {UNTIL} (a command or worker on another host, or one "
    "killed there): they are taken when the lease ends"
)


@pytest.fixture()
def leased(cli, tmp_path: Path, monkeypatch) -> Path:
    """User alice's row, pending, claimed by a command on another host."""
    monkeypatch.setenv("SCIM_TOKEN", "t")
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:SCIM_TOKEN}}
    retry: {{max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    assert cli("user", "add", "alice").exit_code == 6
    db = tmp_path / "data" / "idprov.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_at = NULL, claimed_by = ?,"
            " claimed_until = ?",
            (HOLDER, UNTIL),
        )
    finally:
        conn.close()
    return db


def test_outbox_list_shows_who_holds_a_row_and_until_when(cli, leased):
    run = cli("outbox", "list")
    assert run.exit_code == 0, run
    assert f"pending (claimed by hostA pid 3 until {UNTIL})" in run.stdout
    assert f"scim: {SAYS}" in run.stderr
    assert "due now" not in run.stderr  # a worker cannot take it
    [row] = cli("outbox", "list", "--json").items()
    assert (row["claimed_by"], row["claimed_until"]) == (HOLDER, UNTIL)


@pytest.mark.parametrize("command", [["outbox", "retry"], ["outbox", "work", "--once"]])
def test_retry_and_work_say_the_rows_wait_for_their_holder(cli, leased, command):
    run = cli(*command)
    assert run.exit_code == 0, run
    assert "nothing to provision" not in run.stdout
    assert f"scim: {SAYS}" in run.stdout
    report = cli(*command, "--json").json()
    assert report["leased"] == {
        "scim": {"rows": 1, "claimed_by": [{"holder": HOLDER, "claimed_until": UNTIL}]}
    }


@pytest.mark.parametrize("command", [["user", "update", "alice", "-c", "title=boss"], ["sync"]])
def test_a_change_to_a_held_row_says_it_waits_for_the_holder_not_for_a_worker(cli, leased, command):
    run = cli(*command)
    assert run.exit_code == 0, run
    assert "queued for the outbox worker" not in run.stdout
    assert f"scim: {SAYS}" in run.stdout


def test_serves_access_log_says_a_requests_rows_wait_for_their_holder():
    """`idprov serve`'s access log: a request whose row another host's drainer holds
    said `outbound=ok`, as if it had been pushed."""
    from idprov.inbound.scim_server import _outbound_outcome
    from idprov.provisioning.results import OutboundReport

    report = OutboundReport()
    report.leased["scim"] = 1
    assert _outbound_outcome(report) == "leased:1"


def test_a_killed_holder_on_this_machine_is_said_to_be_taken_now(cli, leased):
    """A command on this machine that held rows and no longer runs (killed): outbox
    list says `outbox retry` takes them now (it does), not to wait for the lease."""
    import socket
    import subprocess

    from idprov.provisioning.outbound import holder_gone, process_token

    proc = subprocess.Popen(["sleep", "30"])
    token = process_token(proc.pid)
    proc.kill()
    proc.wait()
    holder = f"{socket.gethostname()}:{proc.pid}:0123abcd{token}"
    assert token and holder_gone(holder)
    conn = sqlite3.connect(leased, isolation_level=None)
    conn.execute("UPDATE outbox SET claimed_by = ?", (holder,))
    conn.close()
    run = cli("outbox", "list")
    assert run.exit_code == 0, run
    assert "taken when the lease ends" not in run.stderr
    assert (
        f"scim: 1 row is claimed by {socket.gethostname()} pid {proc.pid}, which no longer runs "
        "on this machine (a killed command): `idprov outbox retry` takes them now"
    ) in " ".join(run.stderr.split())
    retry = cli("outbox", "retry", "--json")  # taken at once: sent, the target is down
    assert retry.exit_code == 6, retry
    assert "leased" not in json.loads(retry.stdout), retry.stdout


def test_a_push_meeting_rows_of_a_killed_local_command_says_the_next_pass_takes_them():
    """A worker or serve meeting rows a command killed on this machine still holds
    (before its next pass releases them) said they waited for the lease to end, as if
    another host held them."""
    import socket
    import subprocess
    import sys

    from idprov.provisioning.outbound import lease_line

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = f"{socket.gethostname()}:{child.stdout.strip()}:0123abcd"
    said = lease_line(2, {dead: UNTIL})
    assert "a command killed on this machine" in said and "next `idprov outbox retry`" in said
    assert "taken when the lease ends" not in said
    assert "taken when the lease ends" in lease_line(1, {HOLDER: UNTIL})


def test_a_process_s_many_claim_names_are_one_holder_and_few_are_named():
    """`idprov serve` claims each request's change under a name of its own: `outbox
    list` named each (a dozen `pid 7 until ...` on one line). One per process now, its
    latest lease, at most three processes named and the rest counted."""
    from idprov.provisioning.outbound import lease_line

    one = {f"hostA:7:0badc0de.{n}": f"2999-01-01T00:00:{n:02d}.000Z" for n in range(12)}
    said = lease_line(12, one)
    assert said.count("hostA pid 7") == 1 and "until 2999-01-01T00:00:11.000Z" in said, said
    many = {f"host{c}:1:0badc0de": UNTIL for c in "ABCDE"}
    said = lease_line(5, many)
    assert "hostA pid 1" in said and "hostC pid 1" in said and "hostD" not in said, said
    assert "and 2 other processes" in said and said.startswith("5 rows are claimed by"), said


def test_serves_access_log_says_a_request_pushed_in_part():
    """A request whose group row another request's push holds (or whose rows of a
    `blocking: false` IdP wait for the worker) said `outbound=ok` beside a push that
    went: now `ok+queued:N`; nothing pushed, `queued:N`."""
    from idprov.inbound.scim_server import _outbound_outcome
    from idprov.provisioning.results import IdpReport, OperationResult, OutboundReport

    report = OutboundReport()
    report.queued["scim"] = 1
    assert _outbound_outcome(report) == "queued:1"
    done = OperationResult("scim", "user", "alice", "update", "done")
    report.idps["scim"] = IdpReport("scim", 1, [done])
    assert _outbound_outcome(report) == "ok+queued:1"
    del report.queued["scim"]
    assert _outbound_outcome(report) == "ok"
