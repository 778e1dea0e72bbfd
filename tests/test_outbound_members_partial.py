"""A group push that fails part way: the members the target took in are recorded, so
that a later unassign or role delete takes them out again (they kept the role's access
at the target, reported done), and a repeat sends only the rest."""

from __future__ import annotations

from typing import Any

from idprov.provisioning.sync import run_sync
from tests.peers.google import GoogleWorkspace
from tests.peers.salesforce import SalesforceOrg
from tests.test_connector_google import google, key_file
from tests.test_connector_google import service as google_service
from tests.test_connector_salesforce import ops, org
from tests.test_connector_salesforce import service as sf_service

__all__ = ["google", "key_file", "org"]  # the fixtures, used here

ALL = "    push_roles: all\n"


def engineers_refusing_p2(svc: Any, org: SalesforceOrg) -> None:
    """p1 and p2 in staff; p2 deactivated at Salesforce by an administrator; both
    assigned engineers: Salesforce adds p1 to the public group and refuses p2."""
    svc.add_role("staff")
    svc.add_role("engineers")
    svc.add_user("p1", {}, roles=["staff"])
    svc.add_user("p2", {}, roles=["staff"])
    org.users()["p2@example.com"]["IsActive"] = False  # Setup > Users > Deactivate
    [role] = ops(svc.assign("engineers", ["p1", "p2"]), "role")
    assert role.outcome == "failed" and "p2@example.com" in role.error
    assert org.group_members("Engineering") == {"p1@example.com"}


def test_salesforce_a_member_added_before_another_was_refused_is_removed_by_unassign(tmp_path, org):
    with sf_service(tmp_path, org, extra=ALL) as svc:
        engineers_refusing_p2(svc, org)
        svc.unassign("engineers", ["p1"])
        assert org.group_members("Engineering") == set()
        role_id = svc.get_role("engineers").id
        assert svc.state.ledger.members("sf", role_id) == set()


def test_salesforce_deleting_the_role_removes_a_member_added_by_a_push_that_failed(tmp_path, org):
    with sf_service(tmp_path, org, extra=ALL) as svc:
        engineers_refusing_p2(svc, org)
        result = svc.delete_role("engineers")
        assert result.outbound.ok, result.outbound.to_dict()
    assert org.group_members("Engineering") == set()


def test_salesforce_the_repeat_of_a_refused_push_sends_only_the_refused_member(tmp_path, org):
    with sf_service(tmp_path, org, extra=ALL) as svc:
        engineers_refusing_p2(svc, org)
        org.users()["p2@example.com"]["IsActive"] = True  # the administrator's fix
        before = len(org.api_requests("POST"))
        assert svc.retry_outbox(["sf"]).ok
        posts = org.api_requests("POST")[before:]
        assert org.group_members("Engineering") == {"p1@example.com", "p2@example.com"}
    [collection] = [p for p in posts if p.path.endswith("/composite/sobjects")]
    assert len(collection.body["records"]) == 1


def test_google_a_member_added_while_another_was_refused_is_removed_by_unassign(
    tmp_path, google: GoogleWorkspace
):
    with google_service(tmp_path, google, extra=ALL) as svc:
        svc.add_role("staff")
        svc.add_role("geng")
        svc.add_user("zed", {}, roles=["staff"])
        svc.add_user("slowg", {}, roles=["staff"])
        group = google.group("geng@example.com")["id"]
        google.fail_next(400, "invalid", method="POST", path=f"/groups/{group}/members")
        result = svc.assign("geng", ["zed", "slowg"])
        assert not result.outbound.ok
        [added] = google.member_emails("geng@example.com")  # one of them went in
        name = added.partition("@")[0]
        other = ({"zed", "slowg"} - {name}).pop()
        role_id = svc.get_role("geng").id
        assert svc.state.ledger.members("google", role_id) == {svc.get_user(name).id}
        assert svc.unassign("geng", [name]).outbound.ok
        assert google.member_emails("geng@example.com") == {f"{other}@example.com"}


def test_salesforce_a_group_create_that_failed_part_way_records_the_members_it_added(tmp_path, org):
    """engineers becomes pushed (push_roles: all) when p1 and p2 hold it already: the
    first push of its group adds p1 and is refused p2. Deleting the role removes p1."""
    with sf_service(tmp_path, org) as svc:
        svc.add_role("staff")
        svc.add_role("engineers")
        svc.add_user("p1", {}, roles=["staff", "engineers"])
        svc.add_user("p2", {}, roles=["staff", "engineers"])
    assert org.group_members("Engineering") == set()  # not pushed yet
    org.users()["p2@example.com"]["IsActive"] = False
    with sf_service(tmp_path, org, extra=ALL) as svc:
        result = run_sync(svc)
        assert not result.outbound.ok
        assert org.group_members("Engineering") == {"p1@example.com"}
        role_id = svc.get_role("engineers").id
        assert svc.state.ledger.get("sf", "role", role_id).remote_id == org.group_id("Engineering")
        assert svc.state.ledger.members("sf", role_id) == {svc.get_user("p1").id}
        assert svc.delete_role("engineers").outbound.ok
    assert org.group_members("Engineering") == set()
