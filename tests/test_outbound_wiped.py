"""What a target lost, made good in one push: a deprovision whose group an
administrator deleted is sent all the same; a group made again after a sandbox
reset names no lost account, however deep the groups made again go, and puts each
member made again in place of its lost id in every group; and the accounts it needs
to know exist are asked for once per drain, not member by member."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.test_outbound_repair import members, refuse_unknown_members

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


# ------------------------------------------------- sandbox reset, groups made again
def two_groups_then_wiped(svc: Any, fake: FakeScim, refused: list[str]) -> None:
    """ann in staff, bob in staff and eng, dave in eng, all pushed; then the target
    loses every user and group, and refuses a group naming an unknown member (into
    ``refused``), as Entra, Okta and IAM Identity Center do."""
    svc.add_role("staff")
    svc.add_role("eng")
    svc.add_user("ann", {"title": "A"}, roles=["staff"])
    svc.add_user("bob", {}, roles=["staff", "eng"])
    svc.add_user("dave", {}, roles=["eng"])
    fake.users.clear()
    fake.groups.clear()
    refuse_unknown_members(fake, refused)


def test_a_group_made_again_in_a_later_round_makes_its_own_lost_members_again(tmp_path, fake):
    """ann in staff; bob in staff and eng; dave in eng only. The target lost them all:
    staff made again finds bob lost, bob made again brings eng, eng made again finds
    dave lost: dave is made again too and put in it (he was forgotten, the push said
    done, and dave had no account, no ledger entry, no row)."""
    from idprov.provisioning.sync import compute_plan

    refused: list[str] = []
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        two_groups_then_wiped(svc, fake, refused)
        result = svc.update_user("ann", {"title": "B"})
        assert result.outbound.ok, result.outbound.to_dict()
        assert refused == []
        assert sorted(u["userName"] for u in fake.users.values()) == ["ann", "bob", "dave"]
        assert members(fake, "staff") == {"ann", "bob"}
        assert members(fake, "eng") == {"bob", "dave"}
        dave = svc.state.ledger.get("scim", "user", svc.get_user("dave").id)
        assert dave is not None and dave.remote_id in fake.users
        assert compute_plan(svc).empty and svc.outbox_rows() == []


def test_a_member_made_again_takes_its_lost_ids_place_in_its_other_groups(tmp_path, fake):
    """staff and every account lost; eng still there, holding bob's lost id (as
    scim2-server does). bob, made again for staff, replaces that id in eng: he was
    added to eng anew, his lost id left dangling beside him."""
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_role("eng")
        svc.add_user("ann", {"title": "A"}, roles=["staff"])
        svc.add_user("bob", {}, roles=["staff", "eng"])
        fake.users.clear()
        [staff] = [g for g, v in fake.groups.items() if v["displayName"] == "staff"]
        del fake.groups[staff]
        result = svc.update_user("ann", {"title": "B"})
        assert result.outbound.ok, result.outbound.to_dict()
        assert members(fake, "staff") == {"ann", "bob"}
        assert members(fake, "eng") == {"bob"}  # no lost id beside him


def test_a_member_that_cannot_be_made_again_keeps_the_group_waiting(tmp_path, fake):
    """bob's account is lost and the target refuses to make it again: staff is made
    with ann alone, its row stays in the outbox naming bob (never his lost id, which
    a strict target refuses), and the next push, once bob can be made, puts him in."""
    refused: list[str] = []
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {"title": "A"}, roles=["staff"])
        svc.add_user("bob", {}, roles=["staff"])
        fake.users.clear()
        fake.groups.clear()
        refuse_unknown_members(fake, refused)
        refuse_bob = [True]

        def no_bob(request: httpx.Request) -> httpx.Response | None:
            if request.method == "POST" and b'"bob"' in request.content and refuse_bob[0]:
                return httpx.Response(400, json={"detail": "bob refused"})
            return None

        fake.faults.insert(0, no_bob)
        result = svc.update_user("ann", {"title": "B"})
        assert not result.outbound.ok
        assert refused == []
        assert members(fake, "staff") == {"ann"}
        waiting = {(r.kind, r.label): r for r in svc.outbox_rows()}
        assert set(waiting) == {("user", "bob"), ("role", "staff")}
        assert "bob" in (waiting[("role", "staff")].last_error or "")
        refuse_bob[0] = False
        assert svc.retry_outbox().ok
        assert refused == []
        assert members(fake, "staff") == {"ann", "bob"}
        assert svc.outbox_rows() == []


def test_rounds_past_the_limit_are_left_pending_not_done(tmp_path, fake, monkeypatch):
    """With one round allowed, eng (made again in it) leaves dave, lost, to the next
    push: his row and eng's stay in the outbox, and nothing says they were done."""
    from idprov.provisioning import engine

    monkeypatch.setattr(engine, "MAX_ROUNDS", 1)
    refused: list[str] = []
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        two_groups_then_wiped(svc, fake, refused)
        report = svc.update_user("ann", {"title": "B"}).outbound.to_dict()
        [scim] = report["idps"]
        assert scim["pending"] == 2
        assert ("dave", "done") not in {(o["label"], o["outcome"]) for o in scim["operations"]}
        assert sorted((r.kind, r.label, r.claimed_by) for r in svc.outbox_rows()) == [
            ("role", "eng", None),
            ("user", "dave", None),
        ]
        assert members(fake, "eng") == {"bob"}
        assert svc.retry_outbox().ok
        assert refused == []
        assert members(fake, "eng") == {"bob", "dave"}
        assert svc.outbox_rows() == []


# ------------------------------------------------- asking what accounts exist
def user_gets(fake: FakeScim) -> tuple[int, int]:
    """(listings, single reads) of accounts the target was asked for."""
    listings = sum(1 for m, p in fake.requests if m == "GET" and p == "/v2/Users")
    reads = sum(1 for m, p in fake.requests if m == "GET" and p.startswith("/v2/Users/"))
    return listings, reads


def test_a_big_group_an_administrator_deleted_is_made_again_after_one_listing(tmp_path, fake):
    """Its 150 members were read back one by one, and again on every retry (5,000
    members outlived the row's claim): one listing per push answers for them all."""
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        for i in range(150):
            svc.add_user(f"u{i}", {}, roles=["staff"])
        fake.groups.clear()
        busy = [3]

        def groups_busy(request: httpx.Request) -> httpx.Response | None:
            if request.method == "POST" and request.url.path == "/v2/Groups" and busy[0]:
                busy[0] -= 1
                return httpx.Response(503, json={"detail": "busy"})
            return None

        fake.faults.append(groups_busy)
        fake.requests.clear()
        assert not svc.add_user("new", {}, roles=["staff"]).outbound.ok
        assert user_gets(fake) == (1, 0)
        fake.requests.clear()
        assert svc.retry_outbox().ok
        assert user_gets(fake) == (1, 0)
        assert len(members(fake, "staff")) == 151


def test_a_target_that_cannot_list_has_each_account_read_once_per_push(tmp_path, fake, monkeypatch):
    """Two groups made again share their 25 members: each is read once, not once per
    group."""
    from idprov.connectors.scim2 import Scim2Connector

    def cannot_list(self: Scim2Connector) -> list[tuple[str, str]]:
        raise NotImplementedError

    monkeypatch.setattr(Scim2Connector, "list_users", cannot_list)
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_role("eng")
        for i in range(25):
            svc.add_user(f"u{i}", {}, roles=["staff", "eng"])
        fake.groups.clear()
        fake.requests.clear()
        assert svc.add_user("new", {}, roles=["staff", "eng"]).outbound.ok
        assert user_gets(fake) == (0, 25)
        assert len(members(fake, "staff")) == len(members(fake, "eng")) == 26


def test_a_push_renews_its_claims_while_a_long_call_runs(tmp_path, fake, monkeypatch):
    """A group made again waits on its members' reads (5,000 of them outlived the
    300 s claim): the drain renews its claims meanwhile, not only between results."""
    import threading

    from idprov.provisioning import engine
    from idprov.provisioning.outbox import Outbox

    renewed = threading.Event()
    renew = Outbox.renew

    def noted(self: Outbox, owners: list[str], lease: float) -> None:
        renew(self, owners, lease)
        renewed.set()

    monkeypatch.setattr(Outbox, "renew", noted)
    monkeypatch.setattr(engine, "RENEW_SECONDS", 0.01)
    during: list[bool] = []

    def slow_group(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path == "/v2/Groups" and not during:
            renewed.clear()
            during.append(renewed.wait(timeout=10))  # set by the drain, not by time
        return None

    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {}, roles=["staff"])
        fake.groups.clear()
        fake.faults.append(slow_group)
        assert svc.add_user("bob", {}, roles=["staff"]).outbound.ok
        assert during == [True]
        assert members(fake, "staff") == {"ann", "bob"}
