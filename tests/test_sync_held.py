"""A sync whose push leaves rows held in the outbox exits 7, as every command does
whose change the deletion guard held: cron must see that something waits for an
administrator (it exited 0, the held rows named only in the report)."""

from __future__ import annotations

import json

import pytest

from idprov.config import load_config
from idprov.provisioning import sync
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import scim, seed  # noqa: F401


def test_a_sync_that_leaves_rows_held_exits_7(
    cli,
    scim: Scim2Peer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """25 deprovisions come between the sync's plan and its push (another process's
    change, made without asking): the plan did not judge them, so they stay held."""
    seed(30)
    planned = sync.compute_plan

    def plan_then_change(*args, **kwargs):
        plan = planned(*args, **kwargs)
        service = IdentityService(load_config())
        try:
            service.unassign("staff", [f"pl{i}" for i in range(1, 26)])
        finally:
            service.close()
        return plan

    monkeypatch.setattr(sync, "compute_plan", plan_then_change)
    run = cli("sync", "--json")
    assert run.exit_code == 7, run
    outbound = json.loads(run.stdout)["outbound"]
    assert outbound["held"] == {"scim": 26}
    assert "will delete 25 users at scim" in outbound["guard"][0]
    assert len(scim.users()) == 30  # nothing destructive was sent
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert len(held) == 26
