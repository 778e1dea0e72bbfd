"""A role mapped to another Salesforce permission set (options.roles: staff from
Sales_Ops to Support_Agent): the members idprov gave the old one are moved to the new
one, through the deletion guard; a misspelt new name takes nothing away. The ledger
kept the old permission set's id, and new members got the old (maybe privileged) set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from idprov.errors import GuardError
from idprov.provisioning.guard import scope_key
from idprov.provisioning.sync import run_sync
from tests.outbound_helpers import make_service
from tests.peers.salesforce import SalesforceOrg
from tests.test_connector_salesforce import NO_SLEEP, org, sf_idp

__all__ = ["org"]  # the fixture, used here

STAFF = "staff: {type: permission_set, name: Sales_Ops}"


def service(tmp_path: Path, org: SalesforceOrg, permission_set: str = "Sales_Ops", extra: str = ""):
    idps = sf_idp(org, extra=extra).replace(
        STAFF, f"staff: {{type: permission_set, name: {permission_set}}}"
    )
    return make_service(tmp_path, idps, ["sf"], **NO_SLEEP)


def staff_given_sales_ops(tmp_path: Path, org: SalesforceOrg) -> None:
    with service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_user("p1", {}, roles=["staff"])
        svc.add_user("p2", {}, roles=["staff"])
    assert org.assignees("Sales_Ops") == {"p1@example.com", "p2@example.com"}


def items(plan: Any) -> list[tuple[str, str, str, list[str]]]:
    [idp] = plan.idps
    return [(i.kind, i.label, i.action, i.changed) for i in idp.items]


def test_a_role_mapped_to_another_permission_set_moves_its_members(tmp_path, org):
    staff_given_sales_ops(tmp_path, org)
    with service(tmp_path, org, "Support_Agent") as svc:
        plan = run_sync(svc, dry_run=True).plan
        [(kind, label, action, changed)] = items(plan)
        assert (kind, label, action) == ("role", "staff", "update")
        assert changed[0] == "move from permission_set Sales_Ops to permission_set Support_Agent"
        assert plan.idps[0].effects.memberships == ["staff: p1", "staff: p2"]
        result = run_sync(svc)
        assert result.outbound.ok, result.outbound.to_dict()
        assert org.assignees("Sales_Ops") == set()
        assert org.assignees("Support_Agent") == {"p1@example.com", "p2@example.com"}
        svc.add_user("ps2", {}, roles=["staff"])
        assert run_sync(svc, dry_run=True).plan.idps[0].items == []
    assert org.assignees("Support_Agent") == {"p1@example.com", "p2@example.com", "ps2@example.com"}
    assert org.assignees("Sales_Ops") == set()


def test_a_new_member_after_the_mapping_changed_moves_the_role_not_just_itself(tmp_path, org):
    """The push of a role assign, not only a sync, sees the new mapping."""
    staff_given_sales_ops(tmp_path, org)
    with service(tmp_path, org, "Support_Agent") as svc:
        result = svc.add_user("ps2", {}, roles=["staff"])
        assert result.outbound.ok, result.outbound.to_dict()
    assert org.assignees("Sales_Ops") == set()
    assert org.assignees("Support_Agent") == {"p1@example.com", "p2@example.com", "ps2@example.com"}


def test_moving_a_role_is_judged_by_the_deletion_guard(tmp_path, org):
    staff_given_sales_ops(tmp_path, org)
    guard = "    deletion_guard: {memberships: {max_deletes: 1, min_deletes: 0}}\n"
    with service(tmp_path, org, "Support_Agent", extra=guard) as svc:
        with pytest.raises(GuardError) as refused:
            run_sync(svc)
        assert "will remove 2 members from groups at sf" in refused.value.message
    assert org.assignees("Sales_Ops") == {"p1@example.com", "p2@example.com"}
    assert org.assignees("Support_Agent") == set()


def test_a_misspelt_new_permission_set_fails_clearly_and_takes_nothing_away(tmp_path, org):
    staff_given_sales_ops(tmp_path, org)
    with service(tmp_path, org, "Support_Agnet") as svc:
        result = run_sync(svc)
        [op] = result.outbound.idps["sf"].operations
        assert op.outcome == "failed"
        assert op.error.startswith(
            "role 'staff' is now mapped to permission_set Support_Agnet at sf, which is not "
            "there: its members keep permission_set Sales_Ops until it is (check options.roles "
            "of identity provider sf"
        )
    assert org.assignees("Sales_Ops") == {"p1@example.com", "p2@example.com"}


def test_a_role_recorded_before_idprov_kept_the_mapping_is_checked_at_its_push(tmp_path, org):
    """A ledger of an earlier version holds the permission set's id alone: the role's
    next push asks Salesforce, says the role was mapped elsewhere, and the next sync
    moves the members (judged by the guard)."""
    staff_given_sales_ops(tmp_path, org)
    with service(tmp_path, org) as svc:
        svc.state.db.execute("UPDATE ledger SET sent = NULL WHERE kind = 'role'")
        assert svc.add_user("p0", {}, roles=["staff"]).outbound.ok  # same mapping: fine
        role = svc.state.ledger.get("sf", "role", svc.get_role("staff").id)
        scope = scope_key(svc.outbound.idp("sf"))  # compared whole, under this scope
        assert role.sent == {"target": "permission_set Sales_Ops", "scope": scope}
        svc.state.db.execute("UPDATE ledger SET sent = NULL WHERE kind = 'role'")
    with service(tmp_path, org, "Support_Agent") as svc:
        result = svc.add_user("ps2", {}, roles=["staff"])
        [op] = [o for o in result.outbound.idps["sf"].operations if o.kind == "role"]
        assert op.outcome == "failed" and "`idprov sync` moves them" in op.error
        assert org.assignees("Support_Agent") == set()
        assert run_sync(svc).outbound.ok
    assert org.assignees("Sales_Ops") == set()
    assert org.assignees("Support_Agent") == {
        "p0@example.com",
        "p1@example.com",
        "p2@example.com",
        "ps2@example.com",
    }
