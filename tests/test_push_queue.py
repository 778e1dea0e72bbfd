"""`idprov serve` pushes the changes of concurrent requests together: the queue that
batches them, and each change's own report out of the batch's drain."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from idprov.inbound.push_queue import PushQueue
from idprov.provisioning.results import OutboundReport
from idprov.provisioning.unit_of_work import PendingPush
from tests.outbound_helpers import FakeScim, idp_yaml, make_service

BASE = "https://scim.example.com/scim/v2"


class Recorder:
    """A push that records its batches; the first waits until ``go`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.started = threading.Event()
        self.go = threading.Event()

    def __call__(self, caller: Any, changes: list[PendingPush]) -> list[OutboundReport | None]:
        self.batches.append([c.rows for c in changes])
        if len(self.batches) == 1:
            self.started.set()
            assert self.go.wait(10)
        if any(c.rows == [666] for c in changes):
            raise RuntimeError("the state database went away")
        return [OutboundReport(queued={"x": len(c.rows)}) for c in changes]


def test_changes_committed_while_a_drain_runs_go_out_together_in_the_next():
    push = Recorder()
    with ThreadPoolExecutor(4) as pool:
        queue = PushQueue(pool, push, parallel=1)
        first = queue.submit("app", PendingPush([1]))
        assert push.started.wait(10)
        later = [queue.submit("app", PendingPush([n, n + 1])) for n in (2, 4, 6)]
        push.go.set()
        assert first.result(10).queued == {"x": 1}
        assert [f.result(10).queued for f in later] == [{"x": 2}] * 3
    assert push.batches == [[[1]], [[2, 3], [4, 5], [6, 7]]]


def test_while_pushes_are_quick_a_second_drain_does_not_start():
    """Two drains may run, but a change committed while the latest batch has pushed
    for less than the patience waits to go out with the next batch."""
    push = Recorder()
    with ThreadPoolExecutor(4) as pool:
        queue = PushQueue(pool, push, parallel=2, patience=60.0, clock=lambda: 100.0)
        first = queue.submit("app", PendingPush([1]))
        assert push.started.wait(10)
        later = [queue.submit("app", PendingPush([n])) for n in (2, 3)]
        push.go.set()
        assert [f.result(10).queued for f in (first, *later)] == [{"x": 1}] * 3
    assert push.batches == [[[1]], [[2], [3]]]


def test_a_slow_push_holds_up_the_next_changes_only_for_the_patience():
    push = Recorder()  # its first batch waits until told: a target that does not answer
    with ThreadPoolExecutor(4) as pool:
        queue = PushQueue(pool, push, parallel=2, patience=0.05)
        first = queue.submit("app", PendingPush([1]))
        assert push.started.wait(10)
        second = queue.submit("app", PendingPush([2]))
        assert second.result(10).queued == {"x": 1}  # pushed beside the stuck one
        assert not first.done()
        push.go.set()
        assert first.result(10).queued == {"x": 1}
    assert push.batches == [[[1]], [[2]]]


def test_callers_are_drained_apart_and_an_error_reaches_only_its_batch():
    push = Recorder()
    with ThreadPoolExecutor(4) as pool:
        queue = PushQueue(pool, push, parallel=1)
        first = queue.submit("app", PendingPush([1]))
        assert push.started.wait(10)
        broken = queue.submit("other", PendingPush([666]))  # not behind "app"'s drain
        with pytest.raises(RuntimeError, match="went away"):
            broken.result(10)
        push.go.set()
        assert first.result(10) is not None
        assert queue.submit("app", PendingPush([9])).result(10).queued == {"x": 1}


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScim:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    return FakeScim("secret-token")


def test_each_change_drained_together_gets_the_report_of_its_own_rows(tmp_path: Path, fake):
    with make_service(
        tmp_path,
        idp_yaml("target", BASE),
        ["target"],
        http_transport=fake.transport(),
        sleep=lambda s: None,
    ) as svc:
        changes = []
        for name in ("alice", "bob"):
            with svc.unit_of_work(push=False, claim=True) as uow:
                uow.add_user(name, {"email": f"{name}@example.com"})
            changes.append(uow.pending())
        # someone else's bob is at the target already: bob's create conflicts
        fake.users["x"] = {"id": "x", "userName": "bob", "externalId": "someone else"}
        alice, bob = svc.push_pending(changes)
        assert alice is not None and bob is not None
        assert alice.ok and [op.label for op in alice.idps["target"].operations] == ["alice"]
        assert bob.failed == 1 and [op.label for op in bob.idps["target"].operations] == ["bob"]
        assert "idprov did not create it" in (bob.idps["target"].operations[0].error or "")


def test_a_change_whose_request_gave_up_does_not_stop_the_drain():
    """A request cancelled while its change waits (a server stopping cancels its
    tasks) cancels the change's future; the others drained with it still answer, and
    the caller's later changes are drained."""
    push = Recorder()
    with ThreadPoolExecutor(4) as pool:
        queue = PushQueue(pool, push, parallel=1)
        first = queue.submit("app", PendingPush([1]))
        assert push.started.wait(10)
        gave_up, waiting = (
            queue.submit("app", PendingPush([2])),
            queue.submit("app", PendingPush([3])),
        )
        assert gave_up.cancel()
        push.go.set()
        assert first.result(10) is not None and waiting.result(10).queued == {"x": 1}
        assert queue.submit("app", PendingPush([4])).result(10).queued == {"x": 1}
