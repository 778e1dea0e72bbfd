"""`idprov sync --verify` at Salesforce checks the roles' permission sets and public
groups: it said "not verified: the salesforce connector cannot read groups", so a
member an administrator took out of a permission set, or a permission set deleted in
Setup, went unreported. Through the CLI, against the strict org on loopback."""

from __future__ import annotations

from pathlib import Path

from tests.peers.salesforce import SalesforceOrg
from tests.test_connector_salesforce import ROLES, org, sf_idp

__all__ = ["org"]  # the fixture, used here

PUSH_ALL = "    push_roles: all\n"
ROLES_SHARED = """      roles:
        staff: {type: permission_set, name: Sales_Ops}
        crew: {type: permission_set, name: Sales_Ops}
        engineers: {type: group, name: Engineering}
"""


def write_config(tmp_path: Path, org: SalesforceOrg) -> None:
    idp = sf_idp(org, extra=PUSH_ALL)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:{idp}
applications:
  - name: resident
    identity_providers: [sf]
""")


def seeded(cli, tmp_path: Path, org: SalesforceOrg, names: tuple[str, ...]) -> None:
    write_config(tmp_path, org)
    cli("role", "add", "staff").ok()
    cli("role", "add", "engineers").ok()
    for name in names:
        cli("user", "add", name, "-c", f"family_name={name}", "-r", "staff", "-r", "engineers").ok()


def unassign(org: SalesforceOrg, sobject: str, field: str, username: str) -> None:
    """What an administrator does in Setup: one user's assignment or membership goes."""
    user = org.users()[username]["Id"]
    records = org.objects[sobject]
    [rid] = [r for r, rec in records.items() if rec[field] == user]
    del records[rid]


def test_verify_reports_members_removed_at_salesforce_and_repair_puts_them_back(cli, tmp_path, org):
    seeded(cli, tmp_path, org, ("ann", "ben", "cid"))
    clean = cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]
    assert clean["groups_checked"] == 2 and clean["repairs"] == []  # no false drift
    assert clean.get("unverifiable") is None

    unassign(org, "PermissionSetAssignment", "AssigneeId", "ben@example.com")
    unassign(org, "GroupMember", "UserOrGroupId", "cid@example.com")
    shown = cli("sync", "--verify").ok().stdout
    assert "not verified" not in shown
    drift = cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]
    assert drift["errors"] == [] and drift["groups_checked"] == 2
    assert sorted(drift["groups_changed_remotely"], key=lambda c: c["group"]) == [
        {"group": "engineers", "missing_members": ["cid"]},
        {"group": "staff", "missing_members": ["ben"]},
    ]

    cli("sync", "--verify", "--repair").ok()
    assert org.assignees("Sales_Ops") == {f"{n}@example.com" for n in ("ann", "ben", "cid")}
    assert org.group_members("Engineering") == {f"{n}@example.com" for n in ("ann", "ben", "cid")}
    assert cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]["repairs"] == []


def test_verify_reports_a_permission_set_deleted_in_setup(cli, tmp_path, org):
    seeded(cli, tmp_path, org, ("ann",))
    org.delete_container("PermissionSet", "Sales_Ops")
    drift = cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]
    assert drift["errors"] == []
    assert drift["groups_deleted_remotely"] == ["staff"]
    assert drift["groups_changed_remotely"] == []


def test_verify_reads_every_batch_of_a_large_permission_set(cli, tmp_path, org):
    """Salesforce returns a query's records in batches (nextRecordsUrl): members
    beyond the first batch are members, not drift."""
    seeded(cli, tmp_path, org, ("ann", "ben", "cid", "dot", "eve"))
    org.query_batch = 2
    unassign(org, "PermissionSetAssignment", "AssigneeId", "eve@example.com")
    drift = cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]
    assert drift["errors"] == []
    assert drift["groups_changed_remotely"] == [{"group": "staff", "missing_members": ["eve"]}]
    more = [r for r in org.api_requests("GET", "/query/") if r.status == 200]
    assert more  # the batches after the first were asked for


def test_read_group_of_an_unknown_or_other_id_is_none(tmp_path, org):
    from tests.test_connector_salesforce import service

    with service(tmp_path, org) as svc:
        conn = svc.connector("sf")
        gone = org.permission_set_id("Sales_Ops")
        org.delete_container("PermissionSet", "Sales_Ops")
        assert conn.read_group(gone) is None
        assert conn.read_group(org.integration_user_id) is None  # a user: no group
        name, members = conn.read_group(org.group_id("Engineering"))
        assert (name, set(members)) == ("engineers", set())


def test_verify_reports_no_rename_of_a_permission_set_two_roles_share(cli, tmp_path, org):
    """Two roles given one permission set (options.roles): the set is not idprov's and
    idprov renames nothing at Salesforce, so verify has no name to compare. It reported
    the second role's set as renamed to the first role, a "rename back" --repair could
    never do."""
    roles = ROLES_SHARED
    idp = sf_idp(org, extra=PUSH_ALL).replace(ROLES, roles)
    assert roles in idp
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:{idp}
applications:
  - name: resident
    identity_providers: [sf]
""")
    cli("role", "add", "staff").ok()
    cli("role", "add", "crew").ok()
    cli("user", "add", "ann", "-c", "family_name=A", "-r", "staff", "-r", "crew").ok()
    drift = cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]
    assert drift["groups_checked"] == 2 and drift["errors"] == []
    assert drift["groups_changed_remotely"] == [] and drift["repairs"] == []


def test_verify_finds_and_repair_clears_fields_salesforce_holds_where_idprov_holds_none(
    cli, tmp_path, org
):
    """ann has no title or department here; an administrator set both in Setup (or
    Salesforce kept what idprov cleared), and a nickname idprov does not map. Verify
    names the two; the repair PATCHes them null, and nothing else."""
    seeded(cli, tmp_path, org, ("ann",))
    record = org.users()["ann@example.com"]
    record.update(Title="Boss", Department="Sales", CommunityNickname="annie")
    drift = cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]
    assert drift["changed_remotely"] == [{"user": "ann", "attributes": ["Title", "Department"]}]
    before = len(org.api_requests("PATCH", "/sobjects/User/"))
    cli("sync", "--verify", "--repair").ok()
    [patch] = org.api_requests("PATCH", "/sobjects/User/")[before:]
    assert patch.body == {"Title": None, "Department": None}
    record = org.users()["ann@example.com"]
    assert "Title" not in record and "Department" not in record
    assert record["CommunityNickname"] == "annie"
    assert cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]["repairs"] == []


def _assign_to_others(org: SalesforceOrg, count: int) -> None:
    """What an org holds: users idprov never made, given the role's permission set in
    Setup, and a public group nested in the role's group."""
    ps = org.permission_set_id("Sales_Ops")
    for i in range(count):
        uid = org._insert(
            "User",
            {
                "Username": f"other{i}@corp.example",
                "LastName": "Other",
                "Email": f"other{i}@corp.example",
                "Alias": f"o{i}",
                "ProfileId": org.profile_id("Standard User"),
                "IsActive": True,
            },
        )
        org._insert("PermissionSetAssignment", {"PermissionSetId": ps, "AssigneeId": uid})


def test_verify_of_a_permission_set_with_many_other_assignees_costs_no_call_per_assignee(
    cli, tmp_path, org
):
    """A permission set held by 200 users idprov does not own: verify read each of them
    (one GET /sobjects/User per assignee, every run, from the org's daily API allowance)
    to look for members that cannot exist at Salesforce."""
    seeded(cli, tmp_path, org, ("ann",))
    before = len(org.requests)
    cli("sync", "--verify", "--json").ok()
    alone = len(org.requests) - before
    _assign_to_others(org, 200)
    eng = org.group_id("Engineering")
    org._insert("GroupMember", {"GroupId": eng, "UserOrGroupId": org.group_id("All_Staff")})
    before = len(org.requests)
    drift = cli("sync", "--verify", "--json").ok().json()["drift"]["sf"]
    sent = org.requests[before:]
    assert drift["repairs"] == [] and drift["errors"] == [] and drift["groups_checked"] == 2
    assert len(sent) <= alone + 2, [r.path for r in sent]  # a page more at most


def test_a_group_that_could_not_be_read_does_not_hide_that_other_accounts_were_not_looked_for(
    cli, tmp_path, org
):
    """One failed group read hid "accounts outside idprov's ledger were not looked
    for", though the connector still cannot list accounts: the report read as if it had."""
    seeded(cli, tmp_path, org, ("ann",))
    org.fail_next(400, "INVALID_QUERY_FILTER_OPERATOR", "unreadable", method="GET", path="/query")
    run = cli("sync", "--verify")
    shown = " ".join(run.stdout.split())
    assert "group " in shown and "unreadable" in shown, shown  # the failed read is reported
    assert "accounts outside idprov's ledger were not looked for" in shown, shown
