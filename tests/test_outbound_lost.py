"""An account the target lost, whose re-create failed, is recorded as lost: no group
push names its dead id (a strict target refuses the whole write, a lenient one keeps a
dangling member), its own row is retried until it is made again, `sync --verify` and
`idprov explain` tell it, and its deprovision sends nothing (nothing is there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.peers.scim2 import Scim2Peer
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


def refuse(fake: FakeScim, user_name: str) -> list[bool]:
    """Make ``fake`` refuse (a 400) to create ``user_name`` while the flag returned holds."""
    refusing = [True]
    needle = f'"{user_name}"'.encode()

    def no_user(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and needle in request.content and refusing[0]:
            return httpx.Response(400, json={"detail": f"{user_name} refused"})
        return None

    fake.faults.insert(0, no_user)
    return refusing


def sandbox_reset_bob_refused(svc: Any, fake: FakeScim, refused: list[str]) -> list[bool]:
    """ann and bob in staff, pushed; the target loses every user and group and refuses
    a group naming an unknown member (into ``refused``); ann's update makes her and
    staff again, and bob's re-create is refused: his row and staff's stay."""
    svc.add_role("staff")
    svc.add_user("ann", {"title": "A"}, roles=["staff"])
    svc.add_user("bob", {}, roles=["staff"])
    fake.users.clear()
    fake.groups.clear()
    refuse_unknown_members(fake, refused)
    refusing = refuse(fake, "bob")
    assert not svc.update_user("ann", {"title": "B"}).outbound.ok
    assert members(fake, "staff") == {"ann"}
    return refusing


def bob_entry(svc: Any) -> Any:
    return svc.state.ledger.get("scim", "user", svc.get_user("bob").id)


def test_a_member_whose_re_create_failed_is_named_by_no_later_group_push(tmp_path, fake):
    """H1b: bob's re-create failed, and the next push of staff (carl joins it) sent his
    dead id: a strict target refused the whole PATCH, carl never got in, and the row
    failed forever. Now staff takes carl, bob waits (his row stays), and bob, once
    he can be made, is put in it under his new id."""
    refused: list[str] = []
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        refusing = sandbox_reset_bob_refused(svc, fake, refused)
        lost = bob_entry(svc)
        svc.add_user("carl", {}, roles=["staff"])
        assert refused == []
        assert members(fake, "staff") == {"ann", "carl"}
        assert lost.state == "lost" and lost.lost_at
        waiting = {(r.kind, r.label): r for r in svc.outbox_rows()}
        assert set(waiting) == {("user", "bob"), ("role", "staff")}
        assert "bob" in (waiting[("role", "staff")].last_error or "")
        assert bob_entry(svc).state == "lost"
        refusing[0] = False
        assert svc.retry_outbox().ok
        assert refused == []
        assert members(fake, "staff") == {"ann", "bob", "carl"}
        made = bob_entry(svc)
        assert made.state == "active" and made.lost_at is None
        assert made.remote_id != lost.remote_id and made.remote_id in fake.users
        assert svc.outbox_rows() == []


def bob_lost_at_the_target(svc: Any, fake: FakeScim, refused: list[str]) -> tuple[str, list[bool]]:
    """ann and bob in staff; bob's account deleted at the target, and his re-create
    refused (while the flag returned holds): the ledger says lost. Returns his lost
    id and that flag."""
    svc.add_role("staff")
    svc.add_user("ann", {}, roles=["staff"])
    svc.add_user("bob", {"title": "A"}, roles=["staff"])
    gone: str = bob_entry(svc).remote_id
    del fake.users[gone]
    refuse_unknown_members(fake, refused)
    refusing = refuse(fake, "bob")
    assert not svc.update_user("bob", {"title": "B"}).outbound.ok
    return gone, refusing


def test_a_lost_account_is_deprovisioned_with_nothing_sent(tmp_path, fake):
    """Nothing is there to delete: bob's delete looks him up and sends nothing else
    (it left staff with his dead id, then deleted it), forgets him, and the deletion
    guard, at 0 users, does not hold it, since it deletes nothing there."""
    guarded = idp_yaml(
        "scim",
        "https://scim.test/v2",
        extra="    provisioning_roles: [staff]\n"
        "    deletion_guard: {max_deletes: 0, min_deletes: 0}\n",
    )
    refused: list[str] = []
    with make_service(tmp_path, guarded, ["scim"], http_transport=fake.transport()) as svc:
        bob_lost_at_the_target(svc, fake, refused)
        bob_id = svc.get_user("bob").id
        fake.requests.clear()
        result = svc.delete_user("bob")
        assert result.outbound.ok and not result.outbound.held, result.outbound.to_dict()
        assert fake.requests == [("GET", "/v2/Users")]  # the look-up by userName
        assert svc.state.ledger.get("scim", "user", bob_id) is None
        assert svc.outbox_rows() == []
        assert refused == []


def test_sync_verify_tells_a_lost_account_and_repair_makes_it_again(tmp_path, fake):
    """`sync --verify` lists bob as lost (it skipped him: his entry was not active, and
    the push that found him gone had not said so); `--repair` makes him again, in
    place of his lost id in staff."""
    from idprov.provisioning.sync import run_sync

    refused: list[str] = []
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        gone, refusing = bob_lost_at_the_target(svc, fake, refused)
        svc.add_role("eng")  # a scope naming a role no userstore has is refused by sync
        report = run_sync(svc, verify=True).drift["scim"]
        assert report["lost"] == ["bob"]
        assert [(r["label"], r["how"]) for r in report["repairs"]] == [("bob", "re-create")]
        refusing[0] = False
        repaired = run_sync(svc, verify=True, repair=True)
        assert repaired.ok, repaired
        made = bob_entry(svc)
        assert made.state == "active" and made.remote_id not in (None, gone)
        assert members(fake, "staff") == {"ann", "bob"}
        assert refused == []
        assert run_sync(svc, verify=True).drift["scim"]["lost"] == []


def test_a_new_group_is_made_without_a_lost_member(tmp_path, fake):
    """bob's account was deleted at the target and his re-create refused: the ledger
    says lost, not his at the old id. A new group he is assigned to is made without
    that id (a strict target refused the create, a lenient one kept it dangling)."""
    refused: list[str] = []
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        bob_lost_at_the_target(svc, fake, refused)
        svc.add_role("eng")
        svc.assign("eng", ["ann", "bob"])
        assert refused == []
        assert members(fake, "eng") == {"ann"}  # not bob's dead id beside her
        assert bob_entry(svc).state == "lost"


def test_a_lost_member_leaves_no_dangling_id_in_a_new_group_at_scim2_server(
    cli, tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch
):
    """scim2-server takes a group naming any id. An administrator deleted bob and made
    an account named bob of their own: bob's re-create is refused (the name is not
    idprov's), his entry says lost. eng, made for ann and bob, names ann alone (it
    held bob's dead id, dangling, which verify then reported); verify says bob is
    lost (his dead id, which staff kept, is his to take back when made again: not
    reported dangling); his delete here looks him up and leaves the administrator's
    bob alone: nothing proves it idprov's (a re-create whose answer was lost may have
    made it), so the row stays, naming it, until an operator discards it."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
    push_roles: all
applications:
  - name: resident
    identity_providers: [scim]
""")
    cli("role", "add", "staff").ok()
    cli("role", "add", "eng").ok()
    cli("user", "add", "ann", "-r", "staff").ok()
    cli("user", "add", "bob", "-r", "staff").ok()
    by_name = {u["userName"]: u["id"] for u in scim2_server.users()}
    assert scim2_server.client.delete(f"/Users/{by_name['bob']}").is_success
    theirs = scim2_server.client.post(
        "/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob"},
    )
    assert theirs.is_success, theirs.text
    assert cli("user", "update", "bob", "-c", "given_name=Bob").exit_code == 6
    cli("role", "assign", "eng", "ann", "bob")
    [eng] = [g for g in scim2_server.groups() if g["displayName"] == "eng"]
    assert [m["value"] for m in eng.get("members", [])] == [by_name["ann"]]
    verified = cli("sync", "--verify", "--json")
    assert verified.exit_code == 6  # bob's push, retried, is refused again
    drift = json.loads(verified.stdout)["drift"]["scim"]
    assert drift["lost"] == ["bob"]
    assert drift["groups_changed_remotely"] == []  # eng named bob's dead id: dangling
    deleted = cli("user", "delete", "bob", "--yes")
    assert deleted.exit_code == 6 and "nothing there proves it" in deleted.stdout, deleted
    assert sorted(u["id"] for u in scim2_server.users()) == sorted(
        [by_name["ann"], theirs.json()["id"]]
    )
    cli("outbox", "discard", "--idp", "scim", "--user", "bob", "--yes").ok()
    assert cli("outbox", "list", "--json").items() == []


def test_a_lost_member_whose_row_was_discarded_is_made_again_by_its_groups_push(tmp_path, fake):
    """An operator discarded bob's failing row: the next push of staff puts it back and
    makes bob again first, then puts him in staff (he was left out of it for good)."""
    refused: list[str] = []
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        refusing = sandbox_reset_bob_refused(svc, fake, refused)
        svc.discard_outbox("scim", [svc.get_user("bob").id])
        refusing[0] = False
        assert svc.add_user("carl", {}, roles=["staff"]).outbound.ok
        assert refused == []
        assert members(fake, "staff") == {"ann", "bob", "carl"}
        assert bob_entry(svc).state == "active"
        assert svc.outbox_rows() == []


def test_a_disable_of_an_account_the_target_lost_forgets_it(tmp_path, fake):
    """ann disabled here, her account deleted at the target: the disable's PATCH got a
    404 at every retry and the row never left the outbox. Nothing is there to
    disable: the entry is forgotten; enabled again, she is made anew."""
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {}, roles=["staff"])
        ann_id = svc.get_user("ann").id
        fake.users.clear()
        result = svc.update_user("ann", {"active": "false"})
        assert result.outbound.ok, result.outbound.to_dict()
        assert svc.outbox_rows() == []
        assert svc.state.ledger.get("scim", "user", ann_id) is None
        assert svc.update_user("ann", {"active": "true"}).outbound.ok
        [ann] = fake.users.values()
        assert ann["userName"] == "ann" and ann["active"] is True
        assert members(fake, "staff") == {"ann"}


def bob_lost_in_staff_and_eng(svc: Any, fake: FakeScim) -> None:
    """bob in staff and eng, pushed; his account deleted at the target, his re-create
    refused: the ledger says lost, and still has him in both groups."""
    svc.add_role("staff")
    svc.add_role("eng")
    svc.add_user("ann", {}, roles=["staff", "eng"])
    svc.add_user("bob", {"title": "A"}, roles=["staff", "eng"])
    del fake.users[bob_entry(svc).remote_id]
    refuse_unknown_members(fake, [])
    refuse(fake, "bob")
    assert not svc.update_user("bob", {"title": "B"}).outbound.ok
    assert bob_entry(svc).state == "lost"


GUARD_MEMBERSHIPS = "    deletion_guard: {memberships: {max_deletes: 0, min_deletes: 0}}\n"


def test_a_lost_member_leaving_a_role_is_no_membership_removed_for_the_guard(tmp_path, fake):
    """bob, lost, leaves eng: nothing is sent (his dead id is named in no push), yet
    the deletion guard counted one membership removed, and held the change."""
    idps = TWO + GUARD_MEMBERSHIPS
    with make_service(tmp_path, idps, ["scim"], http_transport=fake.transport()) as svc:
        bob_lost_in_staff_and_eng(svc, fake)
        result = svc.unassign("eng", ["bob"])
        assert not result.outbound.held, result.outbound.to_dict()
        eng = svc.get_role("eng").id
        assert bob_entry(svc).local_id not in svc.state.ledger.members("scim", eng)


def test_a_sync_plan_counts_no_membership_removed_for_a_lost_member_leaving(tmp_path, fake):
    from idprov.provisioning.sync import run_sync

    idps = TWO + GUARD_MEMBERSHIPS + "    blocking: false\n"
    with make_service(tmp_path, idps, ["scim"], http_transport=fake.transport()) as svc:
        bob_lost_in_staff_and_eng(svc, fake)
        svc.retry_outbox()
        svc.unassign("eng", ["bob"])  # queued: the worker, or the sync, pushes it
        plan = run_sync(svc, dry_run=True).plan
        [scim] = plan.idps
        assert scim.effects is not None and scim.effects.memberships == []
        assert scim.guard is None and not scim.trips


def answer_404_to_everything(fake: FakeScim) -> None:
    """Every request answered by a web server's HTML 404, as a wrong base_url or a dead
    ingress in front of the target answers: the target still holds every account."""

    def nginx(request: httpx.Request) -> httpx.Response:
        page = "<html><body><h1>404 Not Found</h1><hr>nginx</body></html>"
        return httpx.Response(404, text=page, headers={"content-type": "text/html"})

    fake.faults.append(nginx)


def test_a_disable_answered_by_a_proxys_404_fails_and_keeps_the_account(tmp_path, fake):
    """bob disabled here while every request gets an nginx 404: nothing proves his
    account gone (no SCIM error), so the disable fails, saying why, and stays in the
    outbox; the ledger keeps him (it forgot him, reported the offboarding done, and
    his account stayed active)."""
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {}, roles=["staff"])
        answer_404_to_everything(fake)
        result = svc.update_user("bob", {"active": "false"})
        assert not result.outbound.ok
        [op] = [o for o in result.outbound.idps["scim"].operations if o.kind == "user"]
        assert op.outcome == "failed" and "not the target's own answer" in (op.error or "")
        assert [r.kind for r in svc.outbox_rows()] == ["user"]
        assert bob_entry(svc).state == "active"
        fake.faults.clear()
        assert svc.retry_outbox().ok
        [bob] = fake.users.values()
        assert bob["active"] is False


def test_an_update_answered_by_a_proxys_404_makes_nothing_again(tmp_path, fake):
    """An update's nginx 404 is no account gone: nothing is created, the ledger does
    not say lost (a later delete then sent nothing, and the account lived on)."""
    with make_service(tmp_path, TWO, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("bob", {"title": "A"}, roles=["staff"])
        answer_404_to_everything(fake)
        fake.requests.clear()
        assert not svc.update_user("bob", {"title": "B"}).outbound.ok
        assert [m for m, *_ in fake.requests if m == "POST"] == []
        assert bob_entry(svc).state == "active"
        fake.faults.clear()
        assert svc.delete_user("bob").outbound.ok
        assert fake.users == {}


NGINX_404 = httpx.Response(
    404,
    text="<html><body><h1>404 Not Found</h1>nginx</body></html>",
    headers={"content-type": "text/html"},
    request=httpx.Request("GET", "https://target.test/x"),
)


def test_a_404_proves_an_object_gone_only_in_the_target_s_own_terms():
    """One rule for every HTTP connector: its own error JSON (SCIM's, Google's,
    Salesforce's; a plugin's JSON) is gone, a web server's page is a plain failure."""
    from idprov.connectors.base import RemoteNotFound, TargetError
    from idprov.connectors.google_api import raise_google_error
    from idprov.connectors.http import raise_for_status
    from idprov.connectors.salesforce_api import raise_salesforce_error
    from idprov.connectors.scim_wire import scim_error_reply

    def reply(body: Any) -> httpx.Response:
        return httpx.Response(404, json=body, request=NGINX_404.request)

    google = {"error": {"code": 404, "message": "Resource Not Found: userKey"}}
    salesforce = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
    for raising, own in (
        (raise_google_error, reply(google)),
        (raise_salesforce_error, reply(salesforce)),
        (lambda r, what: raise_for_status(r, what, None), reply({"error": "no user"})),
    ):
        with pytest.raises(RemoteNotFound):
            raising(own, "read user")
        with pytest.raises(TargetError) as caught:
            raising(NGINX_404, "read user")
        assert not isinstance(caught.value, RemoteNotFound)
        assert "base_url" in (caught.value.hint or "")
    assert scim_error_reply(reply({"schemas": [ERROR_SCHEMA], "status": "404"}))
    assert not scim_error_reply(reply({"message": "no Route matched with those values"}))
    assert not scim_error_reply(NGINX_404)


ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def bob_made_again_answer_lost(svc: Any, fake: FakeScim) -> str:
    """bob's account deleted at the target; his update's re-create is carried out
    but its answer times out, and every look-up after it answers 503: the ledger
    says lost while the target holds bob again. Returns his user id."""
    svc.add_user("bob", {"title": "A"})
    bob = svc.get_user("bob").id
    del fake.users[bob_entry(svc).remote_id]
    posted: list[bool] = []

    def lose(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and not posted:
            posted.append(True)
            fake.apply(request)
            raise httpx.ReadTimeout("injected timeout", request=request)
        if posted and request.method == "GET" and "filter" in str(request.url):
            return httpx.Response(503, json={"detail": "down", "status": "503"})
        return None

    fake.faults.append(lose)
    assert not svc.update_user("bob", {"title": "B"}).outbound.ok
    assert bob_entry(svc).state == "lost"
    assert [u["userName"] for u in fake.users.values()] == ["bob"]
    return bob


def test_a_lost_account_made_again_with_its_answer_lost_is_deleted_by_its_delete(tmp_path, fake):
    """bob's delete looks before it forgets: while the look-up fails, his row stays
    and the ledger keeps him; once it answers, his account (idprov's mark on it) is
    deleted. It was forgotten with nothing sent, and bob stayed active there."""
    one = idp_yaml("scim", "https://scim.test/v2")
    with make_service(tmp_path, one, ["scim"], http_transport=fake.transport()) as svc:
        bob = bob_made_again_answer_lost(svc, fake)
        result = svc.delete_user("bob")
        assert not result.outbound.ok
        assert svc.state.ledger.get("scim", "user", bob) is not None
        assert [r.kind for r in svc.outbox_rows()] == ["user"]
        fake.faults.clear()
        assert svc.retry_outbox().ok
        assert fake.users == {}
        assert svc.state.ledger.get("scim", "user", bob) is None
        assert svc.outbox_rows() == []


def test_a_lost_account_made_again_is_disabled_when_its_user_is(tmp_path, fake):
    """bob disabled here while the ledger says lost and the target holds him again:
    the look-up finds him (idprov's) and disables him, whatever deprovision says."""
    one = idp_yaml("scim", "https://scim.test/v2")
    with make_service(tmp_path, one, ["scim"], http_transport=fake.transport()) as svc:
        bob_made_again_answer_lost(svc, fake)
        fake.faults.clear()
        assert svc.update_user("bob", {"active": "false"}).outbound.ok
        [account] = fake.users.values()
        assert account["active"] is False
        assert bob_entry(svc).state == "disabled"
