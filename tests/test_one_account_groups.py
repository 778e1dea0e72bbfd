"""One remote group, one local role, as one account is one local user's
(tests/test_outbound_conflict.py): a group create that finds its name taken never
adopts the group the ledger maps to another role, ``on_conflict: adopt`` or not, and
deleting one of two roles that a ledger of an earlier version maps to one group
keeps the group for the other."""

from __future__ import annotations

import dataclasses

from idprov.provisioning.results import OperationResult, OutboundReport
from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.peers.google import GoogleWorkspace
from tests.test_connector_google import key_file, service  # noqa: F401 (fixture)
from tests.test_connector_salesforce import org  # noqa: F401 (fixture)


def ops(report: OutboundReport | None, idp: str) -> list[OperationResult]:
    assert report is not None
    return report.idps[idp].operations


def test_two_roles_of_one_google_group_email_never_share_the_group(
    tmp_path,
    google_workspace: GoogleWorkspace,
    key_file,  # noqa: F811
):
    """'R&D Ops' and 'r-d-ops' both make the group r-d-ops@example.com. With
    on_conflict: adopt the second took the first's group (the ledger mapped both to
    it), and deleting the second deleted the first's group."""
    google = google_workspace
    adopt = "    push_roles: all\n    on_conflict: adopt\n"
    with service(tmp_path, google, extra=adopt) as svc:
        svc.add_role("R&D Ops")
        group = google.group("r-d-ops@example.com")
        assert group is not None
        second = svc.add_role("r-d-ops")
        [op] = ops(second.outbound, "google")
        assert op.outcome == "failed"
        error = op.error or ""
        assert "google's group 'r-d-ops' belongs to role R&D Ops, not to role r-d-ops" in error
        assert "Rename one of the roles R&D Ops and r-d-ops (`idprov role rename`)" in error
        assert "adopt" not in error
        assert svc.state.ledger.get("google", "role", second.entity.id) is None
        svc.delete_role("r-d-ops")
        assert google.group("r-d-ops@example.com") == group  # R&D Ops keeps its group


def test_a_deleted_roles_pending_delete_never_takes_the_group_a_newcomer_adopted(
    tmp_path, monkeypatch
):
    """Role staff deleted while the target refused the delete, a new role staff
    added with on_conflict: adopt: the newcomer adopted the group the old role's
    ledger entry still held, and the old role's delete, retried, deleted it. Now the
    old entry is let go first (the role is gone here), and the newcomer takes the
    group over at the next try; the old delete has nothing left to delete."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    config = idp_yaml("scim", "https://scim.test/v2", extra="    on_conflict: adopt\n")
    with make_service(tmp_path, config, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        [group_id] = list(fake.groups)
        fake.fail("DELETE", 400)
        gone = svc.delete_role("staff")
        assert [op.outcome for op in ops(gone.outbound, "scim")] == ["failed"]
        new = svc.add_role("staff")
        [op] = ops(new.outbound, "scim")
        assert op.outcome == "failed" and "since deleted here" in (op.error or "")
        for op in ops(svc.retry_outbox(), "scim"):
            assert op.outcome in ("done", "skipped"), op
        assert list(fake.groups) == [group_id]  # never deleted
        entries = svc.state.ledger.for_idp("scim", "role")
        assert [(e.local_id, e.remote_id) for e in entries.values()] == [(new.entity.id, group_id)]


def test_a_merged_group_is_kept_with_one_of_its_two_roles_and_loses_only_its_members(
    tmp_path, monkeypatch
):
    """A ledger an adoption of the old rule left mapping roles staff and crew to one
    group: deleting crew deleted staff's group. It is kept; the member only crew put in
    it is taken out, staff's stays."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    config = idp_yaml("scim", "https://scim.test/v2")
    with make_service(tmp_path, config, ["scim"], http_transport=fake.transport()) as svc:
        staff = svc.add_role("staff")
        crew = svc.add_role("crew")
        ann = svc.add_user("ann", {}, roles=["staff"])
        bob = svc.add_user("bob", {}, roles=["crew"])
        held = svc.state.ledger.get("scim", "role", staff.entity.id)
        assert held is not None and held.remote_id is not None
        group_id = held.remote_id
        with svc.state.transaction():  # crew's record merged into staff's group
            svc.state.ledger.forget("scim", "role", crew.entity.id)
            svc.state.ledger.record(
                dataclasses.replace(held, local_id=crew.entity.id, label="crew")
            )
            svc.state.ledger.set_members("scim", crew.entity.id, [bob.entity.id], [])
        bob_id = svc.state.ledger.remote_ids("scim", [bob.entity.id])[bob.entity.id]
        fake.groups[group_id]["members"].append({"value": bob_id})
        gone = svc.delete_role("crew")
        [op] = [o for o in ops(gone.outbound, "scim") if o.kind == "role"]
        assert op.outcome == "done" and "the group is role staff's" in op.operation, op
        assert group_id in fake.groups
        members = {m["value"] for m in fake.groups[group_id]["members"]}
        ann_id = svc.state.ledger.remote_ids("scim", [ann.entity.id])[ann.entity.id]
        assert members == {ann_id}
        assert svc.state.ledger.get("scim", "role", crew.entity.id) is None
        assert svc.state.ledger.members("scim", staff.entity.id) == {ann.entity.id}


SHARED_SET = """      roles:
        staff: {type: permission_set, name: Sales_Ops}
        sales: {type: permission_set, name: Sales_Ops}
"""


def test_two_roles_given_one_permission_set_take_away_only_what_neither_gives(
    tmp_path,
    org,  # noqa: F811
):
    """options.roles gives staff and sales one Salesforce permission set (a group the
    configuration names: roles may share it). p1 holds both: taking sales from p1, or
    deleting sales, took the permission set away from p1, whom staff still gives it."""
    from tests.test_connector_salesforce import NO_SLEEP, ROLES, sf_idp

    idps = sf_idp(org, extra="    push_roles: all\n").replace(ROLES, SHARED_SET)
    with make_service(tmp_path, idps, ["sf"], **NO_SLEEP) as svc:
        svc.add_role("staff")
        svc.add_role("sales")
        svc.add_user("p1", {}, roles=["staff", "sales"])
        svc.add_user("p2", {}, roles=["staff", "sales"])
        svc.add_user("p3", {}, roles=["staff"])
        assert org.assignees("Sales_Ops") == {f"p{n}@example.com" for n in (1, 2, 3)}
        assert svc.unassign("sales", ["p1"]).outbound.ok
        assert org.assignees("Sales_Ops") == {f"p{n}@example.com" for n in (1, 2, 3)}
        assert svc.delete_role("sales").outbound.ok
        assert org.assignees("Sales_Ops") == {f"p{n}@example.com" for n in (1, 2, 3)}
        assert svc.unassign("staff", ["p3"]).outbound.ok  # only staff gave it: taken away
        assert org.assignees("Sales_Ops") == {"p1@example.com", "p2@example.com"}
