"""What a target lost, made good in one push: a deprovision whose group an
administrator deleted is sent all the same; a group made again after a sandbox
reset names no lost account, however deep the groups made again go, and puts each
member made again in place of its lost id in every group; and the accounts it needs
to know exist are asked for once per drain, not member by member."""

from __future__ import annotations

import pytest

from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.test_outbound_repair import members

TWO = idp_yaml(
    "scim",
    "https://scim.test/v2",
    extra="    provisioning_roles: [staff, eng]\n    push_roles: all\n",
)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScim:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    return FakeScim("secret-token")


# ------------------------------------------------- deprovisions, group deleted
def test_a_delete_whose_group_an_administrator_deleted_is_sent(tmp_path, fake):
    """Leaving a group the target no longer holds is done: no one is in it."""
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {}, roles=["staff"])
        fake.groups.clear()
        result = svc.delete_user("ann")
        assert result.outbound.ok, result.outbound.to_dict()
        assert fake.users == {}
        assert svc.outbox_rows() == []


def test_a_disable_whose_group_an_administrator_deleted_is_sent(tmp_path, fake):
    """It failed on the group's 404 drain after drain: the account stayed enabled."""
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {}, roles=["staff"])
        fake.groups.clear()
        result = svc.update_user("ann", {"active": "false"})
        assert result.outbound.ok, result.outbound.to_dict()
        [ann] = fake.users.values()
        assert ann["active"] is False
        assert svc.outbox_rows() == []


def test_leaving_a_group_throttled_slows_the_idp_down(tmp_path, fake):
    """A 429 on leaving a group is fed to the IdP's rate limiter, as any other call's."""
    limited = idp_yaml(
        "scim",
        "https://scim.test/v2",
        extra="    provisioning_roles: [staff]\n    rate_limit: 1000\n",
    )
    with make_service(tmp_path, limited, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {}, roles=["staff"])
        fake.fail("PATCH", 429)
        result = svc.delete_user("ann")
        assert result.outbound.ok, result.outbound.to_dict()
        assert fake.users == {} and members(fake, "staff") == set()
        assert svc.connector("scim").limiter.slowdowns == 1
