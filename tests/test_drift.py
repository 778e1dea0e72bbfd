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
    # an administrator's disable is reported, and is no drift to repair
    assert drift["changed_remotely"] == [] and drift["disabled_remotely"] == ["user2"]
    assert drift["groups_changed_remotely"] == [{"group": "staff", "missing_members": ["user0"]}]
    assert drift["repaired"] is None and len(drift["repairs"]) == 2

    assert cli("sync", "--verify", "--repair", "--dry-run", "--detailed-exitcode").exit_code == 12
    assert sorted(u["userName"] for u in scim.users()) == ["user0", "user2"]

    run = cli("sync", "--verify", "--repair", "--detailed-exitcode", "--json")
    assert run.exit_code == 11, run
    assert json.loads(run.stdout)["drift"]["scim"]["repaired"] == 2
    users = {u["userName"]: u for u in scim.users()}
    assert sorted(users) == ["user0", "user1", "user2"] and users["user2"]["active"] is False
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
