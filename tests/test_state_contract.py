"""The state-store contract, run against both backends: an SQLite file and a real
PostgreSQL database (the ``postgres`` fixture's private cluster).

Every test goes through :class:`~idprov.provisioning.state.StateStore` and the tables
it leads to (audit, outbox, IdP health, ledger, imports, tokens, internal roles,
externalIds, the run lock), as the service does, and checks what a caller sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idprov.config import Config
from idprov.config.postgres import PostgresStateConfig
from idprov.config.secrets import SecretRef
from idprov.db import DatabasePool
from idprov.errors import ConflictError, LockedError, NotFoundError
from idprov.model import User
from idprov.provisioning.external_ids import ExternalIds
from idprov.provisioning.internal_roles import InternalRoles
from idprov.provisioning.ledger import LedgerEntry
from idprov.provisioning.outbox import DrainHealth, stamp_in
from idprov.provisioning.state import AuditQuery, StateStore
from idprov.provisioning.tokens import InboundTokens


def state_config(database: Any, tmp_path: Path) -> PostgresStateConfig:
    """``state:`` pointing at ``database``, its password in a file: secret."""
    secret = tmp_path / "pg-password"
    secret.write_text(database.password + "\n")
    return PostgresStateConfig(
        url=database.url, password=SecretRef(f"file:{secret}"), sslmode="disable"
    )


class Backend:
    """Opens StateStores on one database; closes them all at the end."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pools: list[DatabasePool] = []
        self.opened: list[StateStore] = []

    def open(self) -> StateStore:
        pool = DatabasePool()
        self.pools.append(pool)
        state = StateStore.open(self.config, pool)
        self.opened.append(state)
        return state

    def close(self) -> None:
        for state in self.opened:
            state.close()
        for pool in self.pools:
            pool.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    config = Config(data_dir=str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    if request.param == "postgres":
        config.state = state_config(request.getfixturevalue("postgres"), tmp_path)
    chosen = Backend(config)
    try:
        yield chosen
    finally:
        chosen.close()


@pytest.fixture
def state(backend: Backend) -> StateStore:
    return backend.open()


def user(name: str, domain: str = "PRIMARY") -> User:
    return User(id=f"id-{name}", domain=domain, username=name)


# ---- schema


def test_a_second_open_finds_the_tables_and_keeps_their_rows(backend, state):
    with state.transaction():
        state.audit(actor="ann", application="resident", action="user.add", target="alice")
    again = backend.open()
    assert [e.target for e in again.audit_entries(AuditQuery())] == ["alice"]
    assert backend.config.state is None or again.db.dialect == "postgresql"


def test_processes_opening_a_new_state_together_migrate_it_once(backend):
    opened: list[StateStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(backend.open())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(opened) == 4
    rows = (
        opened[0]
        .db.execute("SELECT name FROM idprov_migrations WHERE namespace = 'state' ORDER BY name")
        .fetchall()
    )
    assert len(rows) == len({r[0] for r in rows}) >= 1


# ---- transactions


def test_an_error_inside_a_transaction_leaves_nothing_written(state):
    with pytest.raises(RuntimeError), state.transaction():
        state.audit(actor="ann", application="resident", action="user.add", target="alice")
        state.outbox.enqueue(["scim"], "user", "id-alice", "PRIMARY", "alice")
        raise RuntimeError("boom")
    assert state.audit_entries(AuditQuery()) == []
    assert state.outbox.rows() == []


def test_a_nested_transaction_rolls_back_alone(state):
    with state.transaction():
        state.audit(actor="ann", application="resident", action="user.add", target="alice")
        with pytest.raises(RuntimeError), state.transaction():
            state.audit(actor="ann", application="resident", action="user.add", target="bob")
            raise RuntimeError("boom")
    assert [e.target for e in state.audit_entries(AuditQuery())] == ["alice"]


# ---- audit


def test_audit_entries_are_newest_first_and_filtered(state):
    with state.transaction():
        for target, action in [
            ("alice", "user.add"),
            ("bob", "user.add"),
            ("alice", "role.assign"),
        ]:
            state.audit(
                actor="ann",
                application="resident",
                action=action,
                target=target,
                details={"n": "ü"},
                run="r1" if target == "bob" else None,
            )
    entries = state.audit_entries(AuditQuery())
    assert [(e.target, e.action) for e in entries] == [
        ("alice", "role.assign"),
        ("bob", "user.add"),
        ("alice", "user.add"),
    ]
    assert entries[0].details == {"n": "ü"} and entries[0].id > entries[1].id
    assert [e.action for e in state.audit_entries(AuditQuery(action="user"))] == ["user.add"] * 2
    assert [e.target for e in state.audit_entries(AuditQuery(target="ali", limit=1))] == ["alice"]
    assert [e.target for e in state.audit_entries(AuditQuery(run="r1"))] == ["bob"]
    assert state.audit_entries(AuditQuery(since=stamp_in(60))) == []
    assert len(state.audit_entries(AuditQuery(until=stamp_in(60), actor="ann"))) == 3


# ---- outbox


def test_audit_entries_before_a_time_are_removed_oldest_first(state):
    """What the retention (``audit.keep_days``) removes: entries made before the
    cutoff, the oldest first, at most ``limit`` at a time; none after it."""
    with state.transaction():
        state.audit_many(
            [
                (f"2020-{month}-01T00:00:00.000Z", "ann", "app", "user.add", name, "ok", "{}", None)
                for month, name in (("01", "old1"), ("06", "old2"), ("12", "old3"))
            ]
        )
        state.audit(actor="ann", application="resident", action="user.add", target="new")
    with state.transaction():
        assert state.remove_audit_before("2021-01-01T00:00:00.000Z", 2) == 2
    assert [e.target for e in state.audit_entries(AuditQuery())] == ["new", "old3"]
    with state.transaction():
        assert state.remove_audit_before("2021-01-01T00:00:00.000Z", 2) == 1
        assert state.remove_audit_before("2021-01-01T00:00:00.000Z", 2) == 0
    assert [e.target for e in state.audit_entries(AuditQuery())] == ["new"]


def test_enqueue_coalesces_per_entity_and_idp(state):
    with state.transaction():
        first = state.outbox.enqueue(["a", "b"], "user", "id-1", "PRIMARY", "alice")
        again = state.outbox.enqueue(["a"], "user", "id-1", "PRIMARY", "Alice")
    assert again == first[:1]
    rows = state.outbox.rows()
    assert [(r.idp, r.label, r.status) for r in rows] == [
        ("a", "Alice", "pending"),
        ("b", "alice", "pending"),
    ]
    assert state.outbox.count() == {"pending": 2}
    assert state.outbox.idps() == ["a", "b"]
    assert [r.idp for r in state.outbox.rows(idps=["b"], local_ids=["id-1"])] == ["b"]


def test_a_row_enqueued_again_keeps_when_it_first_waited(state):
    """Each sync enqueues a row that is still waiting again: its age (what an alert on
    the oldest row watches) must count from the first time, not restart."""
    with state.transaction():
        [row_id] = state.outbox.enqueue(["a"], "user", "id-1", "PRIMARY", "alice")
        state.db.execute(
            "UPDATE outbox SET enqueued_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", [row_id]
        )
    with state.transaction():
        state.outbox.enqueue(["a"], "user", "id-1", "PRIMARY", "alice")
    [row] = state.outbox.rows()
    assert row.enqueued_at == "2020-01-01T00:00:00.000Z" and row.updated_at > row.enqueued_at


def test_a_claimed_row_is_nobody_elses_until_its_lease_runs_out(state):
    with state.transaction():
        ids = state.outbox.enqueue(["a"], "user", "id-1", "PRIMARY", "alice")
        ids += state.outbox.enqueue(["a"], "user", "id-2", "PRIMARY", "bob")
    with state.transaction():
        mine = state.outbox.due(["a"], "w1", lease=60, limit=1)
    assert [r.id for r in mine] == ids[:1] and mine[0].claimed_by == "w1"
    with state.transaction():
        other = state.outbox.due(["a"], "w2", lease=60, limit=10)
        taken = state.outbox.claim_ids(ids, "w2", lease=60)
    assert [r.id for r in other] == ids[1:] and [r.id for r in taken] == ids[1:]
    with state.transaction():
        state.outbox.release("w1")
        assert [r.id for r in state.outbox.claim_ids(ids, "w3", lease=-1)] == ids[:1]
    with state.transaction():  # w3's lease has run out already: w1 takes the row again
        assert [r.id for r in state.outbox.claim_ids(ids, "w1", lease=60)] == ids[:1]


def test_a_claimed_row_takes_a_later_allowance_only_while_its_holder_runs(state):
    """A row claimed by a drainer that runs takes the allowance of a change coalescing
    into it as it is (the change it carried is being pushed); one whose holder was
    killed, or runs on another machine (nothing can be known of it), keeps the
    smaller: the killed change, not pushed, is in it still."""
    import os
    import socket
    import subprocess
    import sys

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    here = socket.gethostname()
    holders = {
        "id-1": f"{here}:{os.getpid()}:cafe0001.1",  # this very process: it runs
        "id-2": f"{here}:{killed.pid}:cafe0002.1",
        "id-3": "another-host.example:4242:cafe0003.1",
    }
    with state.transaction():
        for local_id, holder in holders.items():
            ids = state.outbox.enqueue(["a"], "user", local_id, "PRIMARY", local_id)
            state.outbox.claim_ids(ids, holder, lease=300)
    with state.transaction():
        for local_id in holders:
            state.outbox.enqueue(["a"], "user", local_id, "PRIMARY", local_id, allowed=5)
    allowed = {r.local_id: r.allowed for r in state.outbox.rows()}
    assert allowed == {"id-1": 5, "id-2": None, "id-3": None}


def _process_of(pid: int) -> tuple[str, str, str]:
    """Boot, pid namespace and start time of process ``pid``, as Linux's /proc says."""
    import os

    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot_id:
        boot = boot_id.read().strip()[:8]
    space = os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]")
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        start = stat.read().rsplit(")", 1)[1].split()[19]
    return boot, space, start


def test_a_drainers_name_is_of_its_process_not_of_a_pid_another_may_hold():
    """A drainer was named by hostname and pid: in another container sharing the
    hostname (host networking), whose pids overlap this one's, a drainer that runs
    looked gone (its claims released under it, its rows pushed twice), and a killed
    one whose pid another process took looked running (lent a later change's
    allowance). Its name carries its process's boot, pid namespace and start time."""
    import os
    import socket
    import subprocess
    import sys

    from idprov.provisioning.outbound import holder_gone, holder_running

    here, pid = socket.gethostname(), os.getpid()
    boot, space, start = _process_of(pid)
    me = f"{here}:{pid}:cafe0001~{boot}-{space}-{start}"
    assert holder_running(me) and holder_running(f"{me}.3") and not holder_gone(me)
    reused = f"{here}:{pid}:cafe0002~{boot}-{space}-{int(start) - 1}"  # an earlier process
    assert holder_gone(reused) and not holder_running(reused)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    for elsewhere in (pid, ended.pid):  # another container's drainer, running there
        name = f"{here}:{elsewhere}:cafe0003~{boot}-{int(space) + 1}-{start}"
        assert not holder_gone(name) and not holder_running(name)


def test_a_held_row_a_change_takes_out_of_its_hold_takes_its_allowance(state):
    """A held row has no allowance (its change lost it); a change that joins it waits
    with it, lending nothing; one that takes it out (an offboarding where its user
    leaves, whose push sends nothing of the held change) gives it its own."""
    with state.transaction():
        ids = state.outbox.enqueue(["a"], "user", "id-1", "PRIMARY", "alice", allowed=3)
        ids += state.outbox.enqueue(["a"], "user", "id-2", "PRIMARY", "bob", allowed=3)
        state.outbox.hold(state.outbox.rows(ids), "over the guard")
    with state.transaction():
        state.outbox.enqueue_many(["a"], "user", [("id-1", "PRIMARY", "alice")], allowed=12)
        entity = [("id-2", "PRIMARY", "bob")]
        state.outbox.enqueue_many(["a"], "user", entity, allowed=12, keep_held=False)
    rows = {r.local_id: (r.status, r.allowed) for r in state.outbox.rows()}
    assert rows == {"id-1": ("held", None), "id-2": ("pending", 12)}


def test_a_change_no_guard_judged_marks_its_rows_until_they_are_judged_together(state):
    """A change committed without its push (`import --no-push`) marks its rows; a later
    change coalescing into one keeps the mark (and the upsert says whether a row stays
    held, as it finds it); a push carrying one claims every marked pending row of its
    IdP that no other drainer holds, to judge them together; a hold is a judgement."""
    with state.transaction():
        made = state.outbox.enqueue_many(
            ["a", "b"],
            "user",
            [(f"id-{i}", "PRIMARY", f"u{i}") for i in range(1, 5)],
            unjudged=True,
        )
        plain = state.outbox.enqueue(["a"], "user", "id-9", "PRIMARY", "u9")
    assert all(r.unjudged for r in made) and not state.outbox.rows(plain)[0].unjudged
    by = {(r.idp, r.local_id): r for r in made}
    with state.transaction():
        state.outbox.hold([by["a", "id-4"]], "over the guard")
        state.outbox.claim_ids([by["a", "id-3"].id], "another", lease=300)
        later = state.outbox.enqueue_many(
            ["a"], "user", [("id-1", "PRIMARY", "u1"), ("id-4", "PRIMARY", "u4")]
        )
    assert [(r.local_id, r.status, bool(r.unjudged)) for r in later] == [
        ("id-1", "pending", True),
        ("id-4", "held", False),
    ]
    with state.transaction():
        taken = state.outbox.claim_unjudged(["a"], "me", lease=300)
    assert [(r.local_id, r.claimed_by) for r in taken] == [("id-1", "me"), ("id-2", "me")]


def test_done_removes_a_row_unless_it_was_enqueued_again(state):
    with state.transaction():
        state.outbox.enqueue(["a"], "user", "id-1", "PRIMARY", "alice")
        state.outbox.enqueue(["a"], "user", "id-2", "PRIMARY", "bob")
        first, second = state.outbox.due(["a"], "w1", lease=60, limit=10)
    time.sleep(0.002)  # enqueued_at has milliseconds: the newer change is a later one
    with state.transaction():
        state.outbox.enqueue(["a"], "user", "id-2", "PRIMARY", "bob")
        state.outbox.done(first)
        state.outbox.done(second)
    (left,) = state.outbox.rows()
    assert (left.local_id, left.status, left.claimed_by) == ("id-2", "pending", None)


def test_a_failed_row_waits_for_its_schedule_unless_retried_eagerly(state):
    with state.transaction():
        state.outbox.enqueue(["a"], "user", "id-1", "PRIMARY", "alice")
        (row,) = state.outbox.due(["a"], "w1", lease=60, limit=10)
        state.outbox.failed(row, "HTTP 503", 503, attempts=3, retry_in=600)
    (failed,) = state.outbox.rows(status="failed")
    assert (failed.attempts, failed.failures, failed.last_status) == (3, 1, 503)
    assert failed.claimed_by is None and failed.next_attempt_at > stamp_in(500)
    assert state.outbox.due_ids(["a"]) == [] and state.outbox.due_ids(["a"], eager=True) == [row.id]
    assert state.outbox.next_due(["a"]) == failed.next_attempt_at
    with state.transaction():
        assert state.outbox.due(["a"], "w2", lease=60, limit=10) == []
        assert [r.id for r in state.outbox.due(["a"], "w2", 60, 10, eager=["a"])] == [row.id]
        state.outbox.renew(["w2"], 120)
    assert state.outbox.rows()[0].claimed_until > stamp_in(100)


def test_a_role_row_names_the_members_its_changes_touched_while_every_change_did(state):
    """A role assign names the users it changed, so the push compares the group for
    them alone; a change that names none (a rename, a sync), a failed push or a hold
    makes the next push compare every member."""
    ann, bob, cid = ("PRIMARY", "u-ann"), ("PRIMARY", "u-bob"), ("PRIMARY", "u-cid")
    outbox = state.outbox
    with state.transaction():
        outbox.enqueue_many(["a", "b"], "role", [("r-1", "PRIMARY", "eng")], members={"r-1": [ann]})
        outbox.enqueue_many(["a"], "role", [("r-1", "PRIMARY", "eng")], members={"r-1": [bob]})
    first, second = outbox.rows()
    assert (first.idp, first.members_delta, second.idp, second.members_delta) == ("a", 1, "b", 1)
    touched = outbox.touched([first.id, second.id])
    assert sorted(touched[first.id]) == [ann, bob] and touched[second.id] == [ann]
    assert "members_delta" not in first.to_dict()  # internal: not in `outbox list --json`

    with state.transaction():  # a change naming none: the next push compares everyone
        outbox.enqueue(["a"], "role", "r-1", "PRIMARY", "staff")
        outbox.enqueue_many(["a"], "role", [("r-1", "PRIMARY", "eng")], members={"r-1": [cid]})
    assert [(r.idp, r.members_delta) for r in outbox.rows()] == [("a", 0), ("b", 1)]

    with state.transaction():  # a failed push: its retry compares everyone
        (row,) = outbox.due(["b"], "w1", lease=60, limit=10)
        outbox.failed(row, "HTTP 503", 503, attempts=1, retry_in=0)
    assert [(r.idp, r.members_delta) for r in outbox.rows()] == [("a", 0), ("b", 0)]

    with state.transaction():  # done: the row and the members it named go
        outbox.done_many(outbox.due(["a", "b"], "w2", lease=60, limit=10))
    assert outbox.rows() == [] and outbox.touched([first.id, second.id]) == {
        first.id: [],
        second.id: [],
    }

    with state.transaction():  # a held row's release compares everyone
        (held,) = outbox.enqueue_many(
            ["a"], "role", [("r-2", "PRIMARY", "ops")], members={"r-2": [ann]}
        )
        outbox.hold([held], "over the deletion guard")
    assert outbox.rows()[0].members_delta == 0
    with state.transaction():
        outbox.discard("a")
    assert outbox.touched([held.id]) == {held.id: []}


def test_discard_drops_the_rows_of_one_idp(state):
    with state.transaction():
        state.outbox.enqueue(["a", "b"], "user", "id-1", "PRIMARY", "alice")
        state.outbox.enqueue(["a"], "role", "id-r", "PRIMARY", "staff")
        dropped = state.outbox.discard("a", ["id-1"])
    assert [r.local_id for r in dropped] == ["id-1"]
    assert sorted((r.idp, r.local_id) for r in state.outbox.rows()) == [
        ("a", "id-r"),
        ("b", "id-1"),
    ]


def test_idp_health_keeps_the_start_of_a_failing_streak(state):
    def note(**drained: str) -> None:
        with state.transaction():
            state.outbox.note_health("a", DrainHealth(**drained))

    note(failing_since="T1", failed_at="T2", error="HTTP 500")
    note(failing_since="T3", failed_at="T3", error="HTTP 502")
    health = state.outbox.health()["a"]
    assert (health.failing_since, health.last_failure_at, health.last_error) == (
        "T1",
        "T3",
        "HTTP 502",
    )
    note(succeeded_at="T4")
    health = state.outbox.health()["a"]
    assert (health.failing_since, health.last_success_at, health.last_error) == (
        None,
        "T4",
        "HTTP 502",
    )
    # a drain whose failures came after its last success starts a streak there
    note(succeeded_at="T5", failing_since="T6", failed_at="T7", error="HTTP 503")
    assert state.outbox.health()["a"].failing_since == "T6"
    note(succeeded_at="T9", failed_at="T8", error="HTTP 504")  # it failed, then succeeded
    health = state.outbox.health()["a"]
    assert (health.failing_since, health.last_failure_at) == (None, "T8")


# ---- ledger


def entry(local_id: str, remote: str | None, state: str = "active") -> LedgerEntry:
    sent = {"userName": local_id}
    return LedgerEntry(
        "a", "user", local_id, "PRIMARY", local_id, remote, state, "h", sent, True, ""
    )


def test_the_ledger_records_replaces_and_forgets(state):
    ledger = state.ledger
    with state.transaction():
        sent = '{"userName": "u2"}'
        ledger.mark_creating(
            [("a", "user", "u1", "PRIMARY", "u1", None), ("a", "user", "u2", "PRIMARY", "u2", sent)]
        )
        ledger.mark_creating([("a", "user", "u1", "PRIMARY", "u1", None)])  # no second row
        ledger.mark_accepted("a", "user", "u2")
        ledger.record(entry("u1", "r1"))
    creating = ledger.get("a", "user", "u2")
    assert (creating.state, creating.sent) == ("accepted", {"userName": "u2"})
    got = ledger.get("a", "user", "u1")
    assert (got.remote_id, got.state, got.sent, got.created_by_idprov) == (
        "r1",
        "active",
        {"userName": "u1"},
        True,
    )
    before = ledger.digest(["a"])
    with state.transaction():
        ledger.record(entry("u1", "r1-new"))
    assert ledger.get("a", "user", "u1").remote_id == "r1-new" and ledger.digest(["a"]) != before
    assert ledger.remote_ids("a", ["u1", "u2", "u3"]) == {"u1": "r1-new"}
    assert sorted(ledger.for_idp("a", "user")) == ["u1", "u2"]
    assert [e.local_id for e in ledger.get_many("a", "user", ["u2", "nope"])] == ["u2"]
    group = LedgerEntry("a", "role", "role1", "PRIMARY", "staff", "g1", "active", "h", {}, True, "")
    with state.transaction():
        ledger.record(group)
        ledger.set_members("a", "role1", ["u1", "u2"], [])
        ledger.set_members("a", "role1", ["u1"], ["u2"])  # u1 twice: one membership
        ledger.forget("a", "user", "u2")
        ledger.relabel("a", "role", "role1", "Staff")
        ledger.invalidate("a", "user", "u1")
    assert ledger.members("a", "role1") == {"u1"}
    assert ledger.groups_with_ids("a", "u1") == [("role1", "g1")]
    assert ledger.all_members("a") == {"role1": {"u1"}}
    assert ledger.counts("a") == {"users": 1, "groups": 1, "memberships": 1, "attributes": 1}
    assert ledger.get("a", "role", "role1").label == "Staff"
    assert (ledger.get("a", "user", "u1").hash, ledger.get("a", "user", "u1").sent) == (None, None)
    with state.transaction():
        ledger.forget("a", "user", "u1")
    assert ledger.get("a", "user", "u1") is None and ledger.members("a", "role1") == set()


def test_the_ledger_keeps_the_inputs_a_user_was_pushed_from(state):
    ledger = state.ledger
    pushed = [entry("u1", "r1"), entry("u2", "r2"), entry("u3", "r3", "disabled")]
    pushed.append(entry("u4", None))
    for e in pushed:
        e.inputs = f"in-{e.local_id}"
    with state.transaction():
        ledger.record_many(pushed)
    assert ledger.get("a", "user", "u1").inputs == "in-u1"
    ids = ["u1", "u2", "u3", "u4", "u5"]
    assert ledger.inputs_of(["a", "b"], ids) == {"a": {"u1": "in-u1", "u2": "in-u2"}}
    assert [ledger.get("a", "user", u).inputs for u in ("u3", "u4")] == [None, None]
    with state.transaction():  # noted only where the hash compared is still there
        ledger.note_inputs("a", [("u2", "moved", "h"), ("u1", "other", "not-h")])
        ledger.note_inputs("a", [("u3", "in-u3", "h")])  # not active: not noted
    assert ledger.inputs_of(["a"], ids) == {"a": {"u1": "in-u1", "u2": "moved"}}
    assert ledger.get("a", "user", "u2").inputs == "moved"
    with state.transaction():
        ledger.invalidate("a", "user", "u1")
        ledger.forget("a", "user", "u2")
        ledger.record(entry("u2", "r2"))  # pushed again, inputs unknown
    assert ledger.inputs_of(["a"], ids) == {}
    assert sorted(ledger.user_ids("a")) == ["u1", "u2", "u3", "u4"]


def test_a_ledger_from_before_the_inputs_is_migrated_with_its_rows(backend, state):
    with state.transaction():
        state.ledger.record(entry("u1", "r1"))
    step = "0010_ledger_inputs" if state.db.dialect == "sqlite" else "0003_ledger_inputs"
    with state.transaction():
        state.db.execute("DROP TABLE ledger_inputs")
        state.db.execute("DROP INDEX ledger_state")
        state.db.execute("DELETE FROM idprov_migrations WHERE name = ?", [step])
    again = backend.open()
    got = again.ledger.get("a", "user", "u1")
    assert (got.remote_id, got.inputs) == ("r1", None)
    assert again.ledger.inputs_of(["a"], ["u1"]) == {}


# ---- imports journal


def test_the_import_journal_resumes_where_a_run_stopped(state):
    journal = state.imports
    with state.transaction():
        first = journal.start("users.csv", "sha", "opts", "ann", "resident")
        journal.finish(first)
        second = journal.start("users.csv", "sha", "opts", "ann", "resident")
        journal.written(second, 200)
        journal.writing(second, 201, 300)
    assert second > first
    run = journal.unfinished("sha", "opts")
    assert (run.id, run.lines_done, run.batch) == (second, 200, (201, 300))
    assert journal.unfinished("sha", "other") is None


# ---- tokens, internal roles, externalIds


def test_tokens_are_stored_as_digests_and_revoked_at_once(state):
    tokens = InboundTokens(state.db)
    with state.transaction():
        new = tokens.create("portal", "for the portal", "ann")
    caller = tokens.caller(new.token)
    assert caller is not None and (caller.application, caller.scope) == ("portal", "write")
    assert caller.token_id == new.record.id and tokens.applications() == {"portal"}
    stored = state.db.execute("SELECT digest FROM inbound_tokens").fetchall()
    assert new.token not in str(stored)
    with state.transaction():
        assert tokens.revoke(new.record.id).id == new.record.id
    assert tokens.caller(new.token) is None and tokens.applications() == set()
    with pytest.raises(NotFoundError):
        tokens.revoke("nope")


def test_internal_roles_hold_users_of_every_domain(state):
    roles = InternalRoles(state.db)
    with state.transaction():
        roles.add("auditors")
        roles.add("Zeta")
        assert roles.assign("auditors", [user("bob"), user("amy", "LDAP")]) == ["bob", "LDAP/amy"]
        assert roles.assign("auditors", [user("bob")]) == []
        roles.assign("Zeta", [user("bob")])
    with pytest.raises(ConflictError):
        roles.add("AUDITORS")
    assert [r.name for r in roles.all()] == ["auditors", "Zeta"]
    assert roles.get("auditors", with_members=True).members == ["LDAP/amy", "bob"]
    assert roles.roles_of(["id-bob"]) == {"id-bob": ["Internal/auditors", "Internal/Zeta"]}
    with state.transaction():
        roles.rename("auditors", "reviewers")
        roles.delete("Zeta")
        assert roles.unassign("reviewers", [user("amy", "LDAP")]) == ["LDAP/amy"]
    assert [r.name for r in roles.roles_of_user("id-bob")] == ["reviewers"]
    assert roles.find("Zeta") is None


def test_external_ids_are_per_application(backend, state):
    ids = ExternalIds(state.db)
    with state.transaction():
        ids.set("portal", "user", "u1", "ext-1")
        ids.set("portal", "user", "u1", "ext-2")  # replaces
        ids.set("hr", "user", "u1", "hr-1")
        ids.set("portal", "user", "u2", "ext-2")
    assert ids.get_many("portal", "user", ["u1", "u2", "u3"]) == {"u1": "ext-2", "u2": "ext-2"}
    assert sorted(ids.find("portal", "user", "ext-2")) == ["u1", "u2"]
    with state.transaction():
        ids.set("portal", "user", "u2", None)
        ids.forget("user", "u1")
    assert (
        ids.get_many("portal", "user", ["u1", "u2"]) == {} and ids.find("hr", "user", "hr-1") == []
    )
    assert ExternalIds(backend.open().db).find("portal", "user", "ext-2") == []


# ---- the run lock


def test_the_run_lock_names_its_holder_and_is_free_again_after(backend, state):
    other = backend.open()
    with state.run_lock("sync"):
        with pytest.raises(LockedError) as info, other.run_lock("import"):
            pass
        assert "another idprov sync holds the lock" in info.value.message
        assert "--wait" in (info.value.hint or "")
    with other.run_lock("import"):
        pass


def test_directory_writes_are_found_by_user_until_done(state):
    writes = state.directory_writes
    with state.transaction():
        first = writes.start("CORP", "rename", "Ann", "annb", "uuid-1", owner="h:1:a")
        writes.start("CORP", "add", "bo", "bo", roles=("staff", "admins"), digest="d1")
        taken = writes.start("corp", "rename", "ann", "annc", "uuid-1", owner="h:2:b")
    assert first is not None and taken is None  # one record per user and kind
    with state.transaction():
        again = writes.start("corp", "rename", "ann", "annc", "uuid-1", replacing=first)
    assert again is not None and again.id != first.id
    found = writes.find("CORP", "rename", "ANN")
    assert (found.name, found.new_name, found.entry_id) == ("ann", "annc", "uuid-1")
    added = writes.find("CORP", "add", "bo")
    assert (added.roles, added.digest) == (("staff", "admins"), "d1")
    assert writes.find("CORP", "add", "ann") is None
    assert writes.find("PRIMARY", "add", "bo") is None
    with state.transaction():
        writes.done(found.id)
    assert writes.find("CORP", "rename", "ann") is None


def test_directory_writes_of_members_are_found_by_their_key_with_their_details(state):
    """A change of members is recorded under its role and users (changes of other users
    of the role go on beside it), with what finishing it needs."""
    writes = state.directory_writes
    with state.transaction():
        first = writes.start(
            "CORP",
            "assign",
            "staff",
            "staff",
            "uuid-r",
            key="staff\nann",
            details={"users": ["ann"]},
        )
        other = writes.start("CORP", "assign", "staff", "staff", "uuid-r", key="staff\nbo")
    assert first is not None and other is not None and first.id != other.id
    found = writes.find("corp", "assign", "STAFF\nAnn")
    assert (found.name, found.entry_id, found.details) == ("staff", "uuid-r", {"users": ["ann"]})
    assert writes.find("CORP", "assign", "staff") is None
    assert writes.find("CORP", "assign", "staff\nbo").details == {}


def test_a_directory_write_is_taken_over_once_and_keeps_its_start(state):
    writes = state.directory_writes
    with state.transaction():
        first = writes.start("CORP", "add", "bo", "bo", owner="h:1:a", origin="jit:proxy:bo")
    with state.transaction():
        taken = writes.take_over(first, "h:2:b")
        late = writes.take_over(first, "h:3:c")  # read before the other took it over
    assert taken is not None and late is None
    found = writes.find("CORP", "add", "bo")
    assert (found.owner, found.started_at, found.origin) == (
        "h:2:b",
        first.started_at,
        "jit:proxy:bo",
    )


def test_a_state_with_directory_writes_of_the_version_before_opens(backend, monkeypatch):
    """A database that today's earlier code created (directory_writes without owners)
    opens, and its records read as owned by no one."""
    from idprov.provisioning import state as state_module

    current = state_module.MIGRATIONS

    def upto(steps: list) -> list:
        names = [name for name, _ in steps]
        [owners] = [i for i, name in enumerate(names) if name.endswith("_directory_write_owners")]
        return steps[:owners]

    before = {dialect: upto(steps) for dialect, steps in current.items()}
    monkeypatch.setattr(state_module, "MIGRATIONS", before)
    old = backend.open()
    with old.transaction():
        old.db.execute(
            "INSERT INTO directory_writes (domain, kind, name_key, name, new_name, entry_id,"
            " roles, started_at) VALUES ('corp', 'add', 'bo', 'bo', 'bo', NULL, '[]', 'x')"
        )
    monkeypatch.setattr(state_module, "MIGRATIONS", current)
    found = backend.open().directory_writes.find("CORP", "add", "bo")
    assert found is not None and (found.owner, found.digest, found.origin) == ("", "", "")
