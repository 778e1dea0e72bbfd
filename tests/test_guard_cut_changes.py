"""The deletion guard on a change whose command was cut after its commit, before its
own push judged it (Ctrl-C, ``kill -9``, a crash, on this host or another sharing the
state), and on the retry of a push that failed: whoever meets its rows later judges
the change whole, never a few users at a time under the guard's minimum."""

from __future__ import annotations

from pathlib import Path

from idprov.config import load_config
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import _lease_runs_out, edit_config, scim, seed  # noqa: F401 - fixture


def _killed_after_its_commit(users: list[str], where: str) -> None:
    """`role unassign staff USERS` committed by a command whose own push would judge
    it, killed (``kill -9``) after its commit and before that push: its rows stay
    claimed under the killed process's name. ``where``: the command ran on this
    machine (a process that no longer runs) or on another."""
    import socket
    import subprocess
    import sys

    if where == "this machine":
        killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        killed.kill()
        killed.wait()
        owner = f"{socket.gethostname()}:{killed.pid}:0badc0de.1"
    else:
        owner = "another-host.example:4242:0badc0de.1"
    service = IdentityService(load_config())
    try:
        with service.unit_of_work(push=False, claim=True) as uow:
            uow.unassign("staff", users)
        assert uow.claimed_by is not None
        with service.state.transaction():  # the claims as the killed process left them
            service.state.db.execute(
                "UPDATE outbox SET claimed_by = ? WHERE claimed_by = ?", [owner, uow.claimed_by]
            )
    finally:
        service.close()
    if where == "another machine":
        _lease_runs_out(owner)


def _held_users(cli) -> list[str]:
    held = cli("outbox", "list", "--status", "held", "--json").items()
    return sorted(r["label"] for r in held if r["kind"] == "user")


TWELVE = [f"pl{i}" for i in range(1, 13)]


def test_a_cut_unassign_is_not_let_out_by_a_later_edit_of_one_of_its_users(
    cli,
    scim: Scim2Peer,  # noqa: F811
):
    """`role unassign staff pl1..pl12` (12 of 30: over the guard) cut after its
    commit on another host sharing the state, before its push judged it: once its
    claims' lease ran out, its rows were plain pending rows. A later
    harmless `user update pl1 -c title=x` coalesced into pl1's row and its push judged
    "1 deprovision", under the guard: pl1 deleted, and each later edit one more. The
    edit meets the cut change and judges it whole: all 12 held, none deleted."""
    seed(30)
    _killed_after_its_commit(TWELVE, "another machine")
    edit = cli("user", "update", "pl1", "-c", "title=x")
    assert edit.exit_code == 7, edit
    said = " ".join((edit.stdout + edit.stderr).split())
    assert "will delete 12 users at scim" in said
    assert (  # whose change the edit waits with: 11 users and the group
        "this change to scim waits with an earlier change no deletion guard judged whole yet"
        " (a command cut after its commit, before its push judged it: 12 more row(s)"
    ) in said
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert len(scim.users()) == 18


def test_the_worker_judges_a_cut_change_whole_before_its_first_batch(
    cli,
    scim: Scim2Peer,  # noqa: F811
    monkeypatch,
):
    """The worker claims rows a batch at a time (500; 3 here): a cut `role unassign`
    of 12 of 30 users had its first batches judged as they came (3, 6, then 9: under
    the guard's minimum of 10) and pushed: 9 users deleted that nobody allowed. The
    cut change is judged whole before its first batch goes: all 12 held."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    seed(30)
    _killed_after_its_commit(TWELVE, "this machine")
    work = cli("outbox", "work", "--once")
    assert work.exit_code == 7, work
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)


def test_a_cut_change_that_passed_the_guard_goes_out_and_leaves_no_mark(
    cli,
    scim: Scim2Peer,  # noqa: F811
):
    """A cut unassign of 2 users (under the guard) is judged whole by the next push
    that meets it and goes; nothing is left waiting, and the next edit is judged alone."""
    seed(30)
    _killed_after_its_commit(["pl1", "pl2"], "this machine")
    cli("user", "update", "pl1", "-c", "title=x").ok()
    cli("outbox", "work", "--once").ok()
    assert len(scim.users()) == 28
    assert cli("outbox", "list", "--json").items() == []


def test_a_failed_retry_that_lost_its_allowance_is_judged_whole_not_a_user_at_a_time(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
):
    """`role unassign staff pl1..pl12 --allow-deletes 12`, its push failed (the target
    down): the rows lose the allowance, their retry judged afresh. A later `user
    update pl1 -c title=x` coalesced into pl1's failed row and judged its retry with
    the edit alone ("1 deprovision"): pl1 deleted, then the next, nobody having
    allowed the retry. The edit meets a retry that lost its allowance and judges it
    whole: the 12 held, for `outbox release --allow-deletes 12`."""
    from tests.peers.scim2 import free_port

    seed(30)
    closed = f"http://127.0.0.1:{free_port()}/v2"
    edit_config(tmp_path, scim.base_url, closed)  # the target is down
    down = cli("role", "unassign", "staff", *TWELVE, "--yes", "--allow-deletes", "12")
    assert down.exit_code == 6, down
    failed = cli("outbox", "list", "--json").items()
    assert len(failed) == 13 and {r["status"] for r in failed} == {"failed"}
    edit_config(tmp_path, closed, scim.base_url)
    edit = cli("user", "update", "pl1", "-c", "title=x")
    assert edit.exit_code == 7, edit
    said = " ".join((edit.stdout + edit.stderr).split())
    assert "will delete 12 users at scim" in said
    assert "(the retry of a failed push, which lost its --allow-deletes: 12 more row(s)" in said
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert len(scim.users()) == 18
