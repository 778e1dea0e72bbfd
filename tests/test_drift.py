"""`sync --verify --repair`: drift at the real SCIM server (scim2-server) is found for
users and groups, and what idprov owns is restored; `--detailed-exitcode` says 12
for drift found and not repaired."""

from __future__ import annotations

import json

from tests.test_sync import scim, seed  # noqa: F401 - the fixture

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def damage(scim) -> None:  # noqa: F811
    """Someone at the target: deletes user1, disables user2, takes user0 out of staff."""
    users = {u["userName"]: u for u in scim.users()}
    scim.client.delete(f"/Users/{users['user1']['id']}")
    scim.client.patch(
        f"/Users/{users['user2']['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "value": {"title": "X", "active": False}}],
        },
    )
    [group] = scim.groups()
    scim.client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "remove", "path": f'members[value eq "{users["user0"]["id"]}"]'}],
        },
    )


def test_drift_is_found_for_users_and_groups_and_repaired(cli, scim):  # noqa: F811
    seed(cli, 3)
    damage(scim)
    run = cli("sync", "--verify", "--detailed-exitcode", "--json")
    assert run.exit_code == 12
    drift = json.loads(run.stdout)["drift"]["scim"]
    assert drift["deleted_remotely"] == ["user1"]
    # an administrator's disable is reported, and is no drift to repair; the title they
    # set is (idprov maps it and holds none for user2)
    assert drift["disabled_remotely"] == ["user2"]
    assert drift["changed_remotely"] == [{"user": "user2", "attributes": ["title"]}]
    assert drift["groups_changed_remotely"] == [{"group": "staff", "missing_members": ["user0"]}]
    assert drift["repaired"] is None and len(drift["repairs"]) == 3

    assert cli("sync", "--verify", "--repair", "--dry-run", "--detailed-exitcode").exit_code == 12
    assert sorted(u["userName"] for u in scim.users()) == ["user0", "user2"]

    run = cli("sync", "--verify", "--repair", "--detailed-exitcode", "--json")
    assert run.exit_code == 11, run
    assert json.loads(run.stdout)["drift"]["scim"]["repaired"] == 3
    users = {u["userName"]: u for u in scim.users()}
    assert sorted(users) == ["user0", "user1", "user2"] and users["user2"]["active"] is False
    assert "title" not in users["user2"]
    [group] = scim.groups()
    assert {m["value"] for m in group["members"]} >= {u["id"] for u in users.values()}
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0


def test_a_group_deleted_remotely_is_found_and_re_created(cli, scim):  # noqa: F811
    seed(cli, 2)
    [group] = scim.groups()
    scim.client.delete(f"/Groups/{group['id']}")
    drift = cli("sync", "--verify", "--json").json()["drift"]["scim"]
    assert drift["groups_deleted_remotely"] == ["staff"]
    cli("sync", "--verify", "--repair").ok()
    [group] = scim.groups()
    assert group["displayName"] == "staff" and len(group["members"]) == 2


def test_a_group_renamed_remotely_is_renamed_back(cli, scim):  # noqa: F811
    seed(cli, 2)
    [group] = scim.groups()
    scim.client.patch(
        f"/Groups/{group['id']}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"displayName": "x"}}]},
    )
    drift = cli("sync", "--verify", "--json").json()["drift"]["scim"]
    assert drift["groups_changed_remotely"] == [
        {"group": "staff", "missing_members": [], "display_name": "x"}
    ]
    cli("sync", "--verify", "--repair").ok()
    [group] = scim.groups()
    assert group["displayName"] == "staff" and len(group["members"]) == 2
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0


USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def target_only(scim, name: str, group: dict) -> str:  # noqa: F811
    """An account an administrator made at the target and put in ``group``: its id."""
    made = scim.client.post("/Users", json={"schemas": [USER], "userName": name}).json()
    scim.client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": made["id"]}]}],
        },
    )
    return made["id"]


def test_a_member_that_is_no_account_at_the_target_is_reported_and_only_it_removed(
    cli,
    scim,  # noqa: F811
):
    """temp was deleted at the target, which kept its id in staff: that reference
    dangles, and the repair removes it; contractor, a target-only account an
    administrator put in staff, is never idprov's to remove."""
    seed(cli, 2)
    [staff] = scim.groups()
    contractor = target_only(scim, "contractor", staff)
    temp = target_only(scim, "temp", staff)
    scim.client.delete(f"/Users/{temp}")
    run = cli("sync", "--verify", "--detailed-exitcode", "--json")
    assert run.exit_code == 12, run
    drift = json.loads(run.stdout)["drift"]["scim"]
    assert drift["groups_changed_remotely"] == [
        {"group": "staff", "missing_members": [], "dangling_members": [temp]}
    ]
    assert drift["unowned"] == ["contractor"] and drift["marked_unowned"] == []
    text = cli("sync", "--verify").stdout
    assert f"member {temp} does not exist at the target" in text
    assert "group changed remotely staff: 1 member(s) that are no account there" in text
    assert "members missing" not in text  # none are: it said "members missing: none"

    repaired = cli("sync", "--verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired
    assert json.loads(repaired.stdout)["drift"]["scim"]["repaired"] == 1
    [staff] = scim.groups()
    users = {u["userName"]: u["id"] for u in scim.users()}
    assert {m["value"] for m in staff["members"]} == {
        users["user0"],
        users["user1"],
        contractor,
    }
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0


def test_dangling_members_are_removed_only_within_the_deletion_guard(cli, scim, tmp_path):  # noqa: F811
    from tests.test_sync import write_config

    guard = "    deletion_guard: {memberships: {max_deletes: 1, min_deletes: 0}}\n"
    write_config(tmp_path, scim.base_url, guard)
    seed(cli, 2)
    [staff] = scim.groups()
    gone = [target_only(scim, name, staff) for name in ("temp1", "temp2")]
    for member in gone:
        scim.client.delete(f"/Users/{member}")
    run = cli("sync", "--verify", "--repair", "--json")
    assert run.exit_code == 6, run
    [op] = [o for i in json.loads(run.stdout)["repair"]["idps"] for o in i["operations"]]
    assert op["outcome"] == "failed" and "deletion_guard.memberships.max_deletes" in op["error"]
    [staff] = scim.groups()
    assert set(gone) <= {m["value"] for m in staff["members"]}  # nothing was removed
    assert "--allow-deletes 2" in op["error"]

    accepted = cli("sync", "--verify", "--repair", "--allow-deletes", "2", "--json")
    assert accepted.exit_code == 0, accepted
    [staff] = scim.groups()
    assert not set(gone) & {m["value"] for m in staff["members"]}


def test_accounts_with_idprovs_mark_outside_the_ledger_are_reported_apart(cli, scim, tmp_path):  # noqa: F811
    """The IdP was renamed in the configuration: its ledger stays under the old name,
    so the accounts idprov made are in none of the new name's. Verify says so, and
    neither adopts nor deletes them."""
    seed(cli, 2)
    scim.client.post("/Users", json={"schemas": [USER], "userName": "contractor"})
    config = tmp_path / "idprov.yaml"
    text = config.read_text().replace("name: scim\n", "name: scim-new\n")
    config.write_text(text.replace("identity_providers: [scim]", "identity_providers: [scim-new]"))
    before = scim.users()
    run = cli("sync", "--verify", "--dry-run", "--json")
    drift = json.loads(run.stdout)["drift"]["scim-new"]
    assert drift["marked_unowned"] == ["user0", "user1"]
    assert drift["unowned"] == ["contractor"]
    shown = cli("sync", "--verify", "--dry-run").stdout
    assert "carry idprov's mark but are not in this IdP's ledger" in shown
    assert "idprov idp rename OLD NEW" in shown
    assert scim.users() == before


def test_after_a_sandbox_reset_one_push_leaves_every_group_naming_live_accounts(cli, scim):  # noqa: F811
    """The target lost every user and group: user0's update makes it again, its group,
    and the other members before they are put in it (the group was made with their
    lost ids: scim2-server takes them, a stricter target refuses the group)."""
    seed(cli, 3)
    for user in scim.users():
        scim.client.delete(f"/Users/{user['id']}")
    [staff] = scim.groups()
    scim.client.delete(f"/Groups/{staff['id']}")
    cli("user", "update", "user0", "-c", "title=B").ok()
    [staff] = scim.groups()
    assert {m["value"] for m in staff["members"]} == {u["id"] for u in scim.users()}
    assert len(scim.users()) == 3
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0


def test_an_account_idprov_disabled_is_idprovs_not_an_unowned_one(cli, scim, tmp_path):  # noqa: F811
    from tests.test_sync import write_config

    write_config(tmp_path, scim.base_url, "    deprovision: disable\n")
    seed(cli, 2)
    cli("role", "unassign", "staff", "user1").ok()  # out of scope: disabled there
    drift = cli("sync", "--verify", "--json").json()["drift"]["scim"]
    assert drift["unowned"] == [] and drift["marked_unowned"] == []


def test_what_verify_reports_comes_by_name(cli, scim):  # noqa: F811
    """Users deleted at the target are listed by name (the ledger's order, by id,
    looked random to a reader)."""
    seed(cli, 12)
    users = {u["userName"]: u["id"] for u in scim.users()}
    for name in ("user9", "user10", "user1", "user11", "user4"):
        scim.client.delete(f"/Users/{users[name]}")
    drift = cli("sync", "--verify", "--dry-run", "--json").json()["drift"]["scim"]
    assert drift["deleted_remotely"] == ["user1", "user10", "user11", "user4", "user9"]


def test_an_account_whose_create_was_cut_off_is_not_called_a_renamed_idps(cli, scim):  # noqa: F811
    """A push killed (or its reply lost) after the target made the account, before the
    ledger recorded it: the account carries idprov's mark and the ledger its
    ``creating`` mark. Verify says the next push adopts it, not "was the IdP renamed?"."""
    from idprov.config import load_config
    from idprov.provisioning.service import IdentityService

    seed(cli, 2)
    service = IdentityService(load_config())
    try:
        ledger = service.state.ledger
        user1 = service.store("PRIMARY").find_user("user1")
        assert user1 is not None
        with service.state.transaction():  # as a kill between the create and its record
            ledger.forget("scim", "user", user1.id)
            ledger.mark_creating([("scim", "user", user1.id, "PRIMARY", "user1", None)])
    finally:
        service.close()
    drift = cli("sync", "--verify", "--dry-run", "--json").json()["drift"]["scim"]
    assert drift["cut_off_creates"] == ["user1"] and drift["marked_unowned"] == []
    shown = cli("sync", "--verify", "--dry-run").stdout
    assert "made by a push that was cut off before it was recorded" in shown
    assert "idp rename" not in shown


def test_the_allowance_covers_the_plan_and_its_repair_together(cli, scim, tmp_path):  # noqa: F811
    """`--allow-deletes 2` is for the whole command: the plan's 2 deprovisions use it,
    and the repair's 2 dangling members wait (it gave the repair all 2 again)."""
    from tests.test_sync import db, write_config

    guard = "    deletion_guard: {min_deletes: 0, memberships: {max_deletes: 1, min_deletes: 0}}\n"
    write_config(tmp_path, scim.base_url, guard)
    seed(cli, 4)
    [staff] = scim.groups()
    gone = [target_only(scim, name, staff) for name in ("temp1", "temp2")]
    for member in gone:
        scim.client.delete(f"/Users/{member}")
    with db(tmp_path) as conn:  # two users leave staff in the store: the plan's deletes
        conn.execute(
            "DELETE FROM user_roles WHERE user_id IN"
            " (SELECT id FROM users WHERE username IN ('user0', 'user1'))"
        )
    run = cli("sync", "--verify", "--repair", "--allow-deletes", "2", "--json")
    assert run.exit_code == 6, run
    [staff] = scim.groups()
    members = {m["value"] for m in staff["members"]}
    users = {u["userName"]: u["id"] for u in scim.users()}
    assert "user0" not in users and "user1" not in users  # the plan's deletes went
    assert set(gone) <= members  # the repair's wait: the allowance was used
    again = cli("sync", "--verify", "--repair", "--allow-deletes", "2", "--json")
    assert again.exit_code == 0, again
    [staff] = scim.groups()
    assert not set(gone) & {m["value"] for m in staff["members"]}


def test_repair_of_a_user_disabled_and_changed_keeps_it_disabled(cli, scim):  # noqa: F811
    """An administrator disabled user2 and changed its e-mail: the repair sends the
    e-mail back and leaves it disabled (it forgot what was sent, and the push sent
    the whole account, active: true with it)."""
    seed(cli, 3)
    users = {u["userName"]: u for u in scim.users()}
    changed = {"emails": [{"type": "work", "value": "x@example.com", "primary": True}]}
    scim.client.patch(
        f"/Users/{users['user2']['id']}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "value": {**changed}}]},
    )
    scim.client.patch(
        f"/Users/{users['user2']['id']}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]},
    )
    drift = cli("sync", "--verify", "--json").json()["drift"]["scim"]
    assert drift["disabled_remotely"] == ["user2"]
    assert drift["changed_remotely"] == [{"user": "user2", "attributes": ["emails"]}]
    cli("sync", "--verify", "--repair").ok()
    user2 = {u["userName"]: u for u in scim.users()}["user2"]
    assert user2["active"] is False
    assert [e["value"] for e in user2["emails"]] == ["user2@example.com"]
    assert cli("sync", "--verify", "--json").json()["drift"]["scim"]["repairs"] == []


ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def test_a_value_added_at_the_target_where_idprov_holds_none_is_drift_and_removed(cli, scim):  # noqa: F811
    """user0 has no title, and its department was removed here: at the target an
    administrator sets a title and puts the department back (what a target that
    ignored idprov's removal holds), and adds a mobile number and a nickName, which
    idprov does not map. Verify names the two idprov maps; the repair removes them
    alone (a PATCH: nothing else is sent) and leaves the administrator's own."""
    seed(cli, 2)
    cli("user", "update", "user0", "-c", "department=Sales").ok()
    cli("user", "update", "user0", "--unset", "department").ok()
    [user0] = [u for u in scim.users() if u["userName"] == "user0"]
    assert ENTERPRISE not in user0 or "department" not in user0[ENTERPRISE]
    added = {
        "title": "Boss",
        "nickName": "evil",
        "phoneNumbers": [{"type": "mobile", "value": "+1 555 0100"}],
        f"{ENTERPRISE}:department": "Sales",
    }
    for path, value in added.items():
        scim.client.patch(
            f"/Users/{user0['id']}",
            json={"schemas": [PATCH], "Operations": [{"op": "add", "path": path, "value": value}]},
        ).raise_for_status()
    run = cli("sync", "--verify", "--detailed-exitcode", "--json")
    assert run.exit_code == 12, run
    drift = json.loads(run.stdout)["drift"]["scim"]
    assert drift["changed_remotely"] == [
        {"user": "user0", "attributes": ["title", f"{ENTERPRISE}.department"]}
    ]
    patches = len(scim.statuses("PATCH", f"/Users/{user0['id']}"))
    cli("sync", "--verify", "--repair").ok()
    user0 = scim.get(f"/Users/{user0['id']}").json()
    assert "title" not in user0 and "department" not in user0.get(ENTERPRISE, {})
    assert user0["nickName"] == "evil" and user0["phoneNumbers"][0]["value"] == "+1 555 0100"
    assert [e["value"] for e in user0["emails"]] == ["user0@example.com"]
    assert len(scim.statuses("PATCH", f"/Users/{user0['id']}")) == patches + 1
    assert scim.statuses("PUT", f"/Users/{user0['id']}") == []
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0


def test_repair_removing_values_the_target_added_passes_the_deletion_guard(
    cli,
    scim,  # noqa: F811
    tmp_path,
):
    """A target (or a script there) that fills a mapped attribute idprov holds no value
    in, for every account: `--repair` removes those values, an attribute removal for
    each user, judged by the deletion guard as any other (it counted only attributes
    sent with a value, so one repair cleared them everywhere without a trip)."""
    from tests.test_sync import write_config

    guard = "    deletion_guard: {attributes: {max_deletes: 2, min_deletes: 0}}\n"
    write_config(tmp_path, scim.base_url, guard)
    seed(cli, 4)
    for user in scim.users():
        scim.client.patch(
            f"/Users/{user['id']}",
            json={"schemas": [PATCH], "Operations": [{"op": "add", "value": {"title": "Temp"}}]},
        )
    run = cli("sync", "--verify", "--repair", "--json")
    assert run.exit_code == 7, run
    assert all(u.get("title") == "Temp" for u in scim.users())  # nothing was removed
    repair = json.loads(run.stdout)["repair"]
    assert repair["held"] == {"scim": 4}
    assert repair["guard"] == [
        "will remove attributes (title) of 4 users at scim (100% of its 4 users): over "
        "deletion_guard.attributes.max_deletes (2)"
    ]

    released = cli("outbox", "release", "--yes", "--allow-deletes", "4")
    assert released.exit_code == 0, released
    assert not any("title" in u for u in scim.users())
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0


def test_a_user_renamed_at_the_target_is_reported_left_so_and_no_repair_is_claimed(
    cli,
    scim,  # noqa: F811
):
    """An administrator renamed user1 at the target. A repair never sends the user
    name: it was reported as drift to repair, "repaired 1 of 1" (exit 11) on every
    run, with an audit entry of an update no request made."""
    seed(cli, 3)
    users = {u["userName"]: u for u in scim.users()}
    scim.client.patch(
        f"/Users/{users['user1']['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "userName", "value": "user1-by-admin"}],
        },
    )
    before = len(cli("log", "--json", "--limit", "0").json()["items"])
    assert cli("sync", "--verify", "--detailed-exitcode").exit_code == 0  # no drift to repair
    run = cli("sync", "--verify", "--repair", "--json")
    assert run.exit_code == 0, run
    drift = run.json()["drift"]["scim"]
    assert run.json()["repair"]["idps"] == []
    assert drift["kept_remotely"] == [{"user": "user1", "attributes": ["userName"]}]
    assert drift["changed_remotely"] == [] and drift["repairs"] == []
    assert "user1-by-admin" in {u["userName"] for u in scim.users()}
    entries = cli("log", "--json", "--limit", "0").json()["items"]
    assert not [e for e in entries[: len(entries) - before] if e["action"] == "outbound.update"]
    shown = cli("sync", "--verify").ok().stdout
    assert "changed at the target, left so" in shown and "user1: userName" in shown
