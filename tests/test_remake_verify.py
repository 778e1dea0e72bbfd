"""An update that finds the account gone at the target makes it again (plan_users
``_remake``); a kill during that create, or a create that failed with its reply lost,
leaves an account carrying idprov's mark that the ledger does not hold yet (it still
names the old id, as active or lost). `sync --verify` calls it a create cut off,
which the next push adopts, not "was the IdP renamed?"; `--repair` adopts it: one
account, never a second."""

from __future__ import annotations

import pytest

from tests.test_sync import scim, seed  # noqa: F401 - the fixture

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.mark.parametrize("recorded", ["active", "lost"])
def test_an_account_made_again_whose_create_was_cut_off_is_adopted_not_called_renamed(
    cli,
    scim,  # noqa: F811
    recorded,
):
    from idprov.config import load_config
    from idprov.provisioning.service import IdentityService

    seed(cli, 2)
    [old] = [u for u in scim.users() if u["userName"] == "user1"]
    service = IdentityService(load_config())
    try:
        user1 = service.store("PRIMARY").find_user("user1")
        assert user1 is not None
        if recorded == "lost":  # the update's re-create failed after making it
            with service.state.transaction():
                service.state.ledger.mark_lost("scim", {user1.id: old["id"]})
    finally:
        service.close()
    # the target lost it; the re-create made it again, and idprov was killed
    scim.client.delete(f"/Users/{old['id']}")
    body = {"schemas": [USER], "userName": "user1", "externalId": user1.id}
    made = scim.client.post("/Users", json=body).json()

    drift = cli("sync", "--verify", "--dry-run", "--json").json()["drift"]["scim"]
    assert drift["cut_off_creates"] == ["user1"] and drift["marked_unowned"] == []
    shown = cli("sync", "--verify", "--dry-run").stdout
    assert "made by a push that was cut off before it was recorded" in shown
    assert "idp rename" not in shown

    cli("sync", "--verify", "--repair").ok()
    assert [u["id"] for u in scim.users() if u["userName"] == "user1"] == [made["id"]]
    service = IdentityService(load_config())
    try:
        entry = service.state.ledger.get("scim", "user", user1.id)
        assert entry is not None and (entry.remote_id, entry.state) == (made["id"], "active")
    finally:
        service.close()
    drift = cli("sync", "--verify", "--json").json()["drift"]["scim"]
    assert drift["cut_off_creates"] == [] and drift["deleted_remotely"] == []
