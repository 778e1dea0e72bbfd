"""Two drainers (two `idprov outbox work` workers, a worker and a command, on one host
or two sharing a PostgreSQL state) that each hold part of a change no guard judged
whole (a command cut after its commit): neither judges its part alone. Judged so,
each part was under the guard's minimum and all of it went. The one holding the
change's lowest row waits for the rest; the other gives its part back."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.provisioning.guard import GuardWindow
from idprov.provisioning.results import OutboundReport
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import edit_config, pg_scim, scim, seed  # noqa: F401 - fixture
from tests.test_guard_cut_changes import TWELVE, _held_users, _killed_after_its_commit


def _claims(tmp_path: Path) -> dict[str, str | None]:
    """User row -> the drainer holding it (whatever the state's backend)."""
    service = IdentityService(load_config())
    try:
        return {r.label: r.claimed_by for r in service.state.outbox.rows() if r.kind == "user"}
    finally:
        service.close()


def _first_three_held_on_another_host(tmp_path: Path) -> tuple[sqlite3.Connection, list[int]]:
    """30 users, `role unassign staff` of twelve cut after its commit, and its first 3
    user rows held by a worker on another host (a live lease): the state's connection
    (committed) and those rows' ids."""
    seed(30)
    _killed_after_its_commit(TWELVE, "another machine")
    db = sqlite3.connect(tmp_path / "data" / "idprov.db")
    first = [
        r[0] for r in db.execute("SELECT id FROM outbox WHERE kind='user' ORDER BY id LIMIT 3")
    ]
    db.execute(
        "UPDATE outbox SET claimed_by = 'host-b.example:77:feedbeef', claimed_until ="
        " '2999-01-01T00:00:00.000Z' WHERE id IN (?, ?, ?)",
        first,
    )
    db.commit()
    return db, first


def test_two_workers_each_judge_part_of_a_cut_change(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """`role unassign staff pl1..pl12` (over the guard) cut after its commit; another
    host's worker holds the first batch (3 of its rows) while this one's pass meets
    the other 9: it judged the 9 alone (under the guard's minimum of 10) and they
    went; then the other worker judged its 3 alone, and they went too: 12 of 30
    deleted. Now the pass leaves the 9 (pending, marked) to whoever can claim all
    12, and that judges them whole: held."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    db, first = _first_three_held_on_another_host(tmp_path)
    a = cli("outbox", "work", "--once")
    assert len(scim.users()) == 30, a
    assert "claimed by host-b.example pid 77" in " ".join((a.stdout + a.stderr).split()), a
    assert set(_claims(tmp_path).values()) == {None, "host-b.example:77:feedbeef"}
    db.execute(
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE id IN (?, ?, ?)", first
    )
    db.commit()
    db.close()
    b = cli("outbox", "work", "--once")
    assert b.exit_code == 7, b
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)


def _drainers() -> tuple[IdentityService, IdentityService]:
    return IdentityService(load_config()), IdentityService(load_config())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_workers_meeting_a_cut_change_neither_gives_way_forever(
    cli, backend: str, tmp_path: Path, monkeypatch, request
):
    """Two workers, step by step, in the order that would have them give way to each
    other forever: B takes the first batch, A the second; A looks (B holds the
    lowest row: A gives its part back), takes its batch again, B looks (it holds the
    lowest: it keeps its part and waits), A looks (gives back again), B's next look
    claims the rest and judges the 12 whole: held, nothing sent, no row lost. On
    SQLite and on PostgreSQL (hosts sharing a state)."""
    peer: Scim2Peer = request.getfixturevalue("scim" if backend == "sqlite" else "pg_scim")
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    seed(30)
    _killed_after_its_commit(TWELVE, "another machine")
    a, b = _drainers()
    try:
        ra, rb = OutboundReport(), OutboundReport()
        wa: set[int] = set()
        wb: set[int] = set()
        batch_b = b.outbound._due_batch(None, rb)
        batch_a = a.outbound._due_batch(None, ra)
        assert len(batch_b) == len(batch_a) == 3
        a.outbound._drain_judged(batch_a, None, GuardWindow(), withheld=wa)
        marked = len(wa) + 3  # 12 users and the group they leave
        assert marked == 13 and not a.outbound._waiting  # gave back: B holds the lowest
        assert sum(1 for v in _claims(tmp_path).values() if v == b.outbound.owner) == 3
        batch_a = a.outbound._due_batch(None, ra)  # takes part of it again
        assert {r.id for r in batch_a} <= wa
        b.outbound._drain_judged(batch_b, None, GuardWindow(), withheld=wb)
        assert len(wb) == len(b.outbound._waiting) == marked - 3  # waits, keeping its part
        wa.clear()
        a.outbound._drain_judged(batch_a, None, GuardWindow(), withheld=wa)
        assert len(wa) == 3  # gave back again
        assert len(peer.users()) == 30 and not _held_users(cli)
        batch_b = b.outbound._due_batch(None, rb)  # its next look
        wb.clear()
        report = b.outbound._drain_judged(batch_b, None, GuardWindow(), withheld=wb)
        assert not wb and not b.outbound._waiting
        assert sum(report.held.values()) >= 12, report
        assert _held_users(cli) == sorted(TWELVE)
        assert len(peer.users()) == 30
        assert set(_claims(tmp_path).values()) == {None}
    finally:
        a.close()
        b.close()


def test_two_workers_let_a_cut_change_the_guard_allows_go_once(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """Under a guard that allows the 12: A gives its part back, B claims it with the
    rest, judges the change whole and deletes each of the 12 once; A sends nothing
    of them."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    seed(30)
    edit_config(tmp_path, "    retry:", "    deletion_guard: {max_percent: 100}\n    retry:")
    _killed_after_its_commit(TWELVE, "another machine")
    a, b = _drainers()
    try:
        ra, rb = OutboundReport(), OutboundReport()
        batch_b = b.outbound._due_batch(None, rb)
        batch_a = a.outbound._due_batch(None, ra)
        sent_a = a.outbound._drain_judged(batch_a, None, GuardWindow(), withheld=set())
        sent_b = b.outbound._drain_judged(batch_b, None, GuardWindow(), withheld=set())
        assert not b.outbound._waiting  # A gave its part back: B claimed all of it
        assert not sent_a.idps or not sent_a.idps["scim"].operations
        deleted = [op.label for op in sent_b.idps["scim"].operations if op.operation == "delete"]
        assert sent_b.ok and sorted(deleted) == sorted(TWELVE), sent_b
        assert len(scim.users()) == 18
        assert not [r for r in cli("outbox", "list", "--json").items() if r["kind"] == "user"]
    finally:
        a.close()
        b.close()


def test_a_worker_that_stops_while_it_waits_gives_its_part_back(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """B looks while A still holds part of the change: B holds its lowest row, so it
    keeps its part and waits; then B is stopped (`outbox work` interrupted): its
    part is given back, pending and marked, and the next pass judges the 12 whole."""
    import threading

    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    seed(30)
    _killed_after_its_commit(TWELVE, "another machine")
    a, b = _drainers()
    try:
        batch_b = b.outbound._due_batch(None, OutboundReport())
        a.outbound._due_batch(None, OutboundReport())  # A holds its batch, not looked yet
        b.outbound._drain_judged(batch_b, None, GuardWindow(), withheld=set())
        assert b.outbound._waiting and len(scim.users()) == 30
        stop = threading.Event()
        stop.set()
        b.outbound.work(stop=stop)
        assert not b.outbound._waiting
        assert b.outbound.owner not in set(_claims(tmp_path).values())
    finally:
        a.close()
        b.close()
    db = sqlite3.connect(tmp_path / "data" / "idprov.db")  # A was killed: its lease ran out
    db.execute("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL")
    db.commit()
    db.close()
    work = cli("outbox", "work", "--once")
    assert work.exit_code == 7, work
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)


def test_a_command_meeting_a_part_of_a_split_change_says_it_waits_for_the_worker(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
):
    """A command whose user's row is part of a change another drainer holds part of:
    its row is left to the worker with the rest (nothing is deleted), and it says so;
    it printed "nothing to provision"."""
    db, first = _first_three_held_on_another_host(tmp_path)
    mine = db.execute(
        "SELECT label FROM outbox WHERE kind='user' AND id NOT IN (?, ?, ?) ORDER BY id LIMIT 1",
        first,
    ).fetchone()[0]
    db.close()
    run = cli("user", "update", mine, "-c", "title=Temp")
    assert len(scim.users()) == 30, run
    assert "nothing to provision" not in run.stdout, run
    assert "queued for the outbox worker" in " ".join(run.stdout.split()), run


class _Looks(threading.Event):
    """A worker's stop event set after ``n`` of its waits: the worker looks ``n``
    times, with no sleeping."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def wait(self, timeout: float | None = None) -> bool:
        self.left -= 1
        if self.left <= 0:
            self.set()
        return self.is_set()


def test_a_running_worker_waiting_on_another_hosts_lease_says_so_once(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """Another host's worker held the cut change's first rows and was killed: its lease
    runs 5 minutes, and a running `outbox work` here gave its part back and took it
    again every 2 s for all that time, saying nothing (R7 finding 4; `--once` said
    it). It says once, per IdP and holder, whose lease it waits for and until when."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    db, first = _first_three_held_on_another_host(tmp_path)
    db.close()
    said: list[str] = []
    service = IdentityService(load_config())
    try:
        service.outbound.say = said.append
        service.outbound.work(stop=_Looks(4))
    finally:
        service.close()
    assert len(scim.users()) == 30
    assert len(said) == 1, said
    line = " ".join(said[0].split())
    assert line.startswith("scim: outbox rows of a change no guard judged whole wait"), line
    assert "3 rows are claimed by host-b.example pid 77 until 2999-01-01T00:00:00.000Z" in line
    assert "they are taken when the lease ends" in line


def test_a_command_killed_on_another_host_and_a_worker_here_do_not_split_its_change(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """A worker here holds pl1..pl3's rows (earlier title edits) when a command on
    another host commits `role unassign staff pl1..pl12` and is killed before its push:
    its claim, under the change's own name, covers the other 9 until its lease ends.
    The worker may not judge its 3 alone, nor may the 9 go alone later: each part was
    under the guard's minimum (a rule that took a change's own claim for its push in
    flight let 12 of 30 go)."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    seed(30)
    cut = "another-host.example:4242:0badc0de.1"
    worker = IdentityService(load_config())
    try:
        with worker.unit_of_work(push=False) as uow:
            for name in ("pl1", "pl2", "pl3"):
                uow.update_user(name, {"title": "X"})
        batch = worker.outbound._due_batch(None, OutboundReport())
        command = IdentityService(load_config())
        try:
            with command.unit_of_work(push=False, claim=True) as uow:
                uow.unassign("staff", TWELVE)
            with command.state.transaction():
                command.state.db.execute(
                    "UPDATE outbox SET claimed_by = ? WHERE claimed_by = ?", [cut, uow.claimed_by]
                )
        finally:
            command.close()
        worker.outbound._drain_judged(batch, None, GuardWindow(), withheld=set())
    finally:
        worker.close()
    assert len(scim.users()) == 30
    cli("outbox", "work", "--once")
    assert len(scim.users()) == 30
    db = sqlite3.connect(tmp_path / "data" / "idprov.db")
    db.execute(
        "UPDATE outbox SET claimed_until = '2000-01-01T00:00:00.000Z' WHERE claimed_by = ?", [cut]
    )
    db.commit()
    cli("outbox", "work", "--once")  # the command's lease ran out; the worker holds 3
    assert len(scim.users()) == 30
    db.execute("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL")  # it stopped
    db.commit()
    db.close()
    cli("outbox", "work", "--once")  # every part in one hand: judged whole, held
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)
