"""A create refused as a duplicate (409) of an object idprov did not make.

The 409 answered idprov's own create: the object was there before, so the ledger
claims nothing (no ``creating`` mark is left behind), and every later attempt says
the same true thing, with the ways out: ``on_conflict: adopt``, renaming or removing
the object at the target, or ``idprov outbox discard``. Users against the real
scim2-server (tests/peers/scim2.py), through the CLI as the trial ran it; groups
against the fault fake, since scim2-server takes two groups of one name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from idprov.config import load_text
from idprov.provisioning.results import OperationResult, OutboundReport
from idprov.provisioning.service import IdentityService
from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.peers.scim2 import Scim2Peer
from tests.test_outbound_scim2 import by_name, write_config

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server)
    return scim2_server


def administrator_creates(scim: Scim2Peer, path: str, body: dict) -> None:
    headers = {"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"}
    reply = httpx.post(f"{scim.base_url}/{path}", json=body, headers=headers, timeout=30)
    assert reply.status_code == 201, reply.text


def assert_says_the_truth_and_the_way_out(error: str, what: str) -> None:
    assert f"refused to create {what}" in error and "idprov did not create it" in error
    assert "reply was lost" not in error and "may have made it" not in error
    assert "Set on_conflict: adopt on identity provider scim to take it over" in error
    assert "rename or remove it at scim, then `idprov outbox retry`" in error
    assert "idprov outbox discard --idp scim --user" in error


def test_a_user_taken_at_the_target_is_not_claimed_and_every_retry_says_so(cli, scim, tmp_path):
    cli("role", "add", "staff").ok()
    administrator_creates(scim, "Users", {"schemas": [USER], "userName": "zed", "title": "admin"})
    run = cli("user", "add", "zed", "-c", "email=zed@example.com", "-r", "staff")
    assert run.exit_code == 6, run
    assert_says_the_truth_and_the_way_out(run.stdout.replace("\n", " "), "user 'zed'")
    assert "--user zed" in run.stdout
    explained = cli("explain", "zed", "--idp", "scim", "--json").json()
    assert explained["ledger"] is None  # idprov made nothing there
    assert "created by idprov" not in cli("explain", "zed", "--idp", "scim").ok().stdout
    for _ in range(2):
        retry = cli("outbox", "retry")
        assert retry.exit_code == 6, retry
        assert_says_the_truth_and_the_way_out(retry.stdout.replace("\n", " "), "user 'zed'")
    [row] = [r for r in cli("outbox", "list", "--json").items() if r["kind"] == "user"]
    assert_says_the_truth_and_the_way_out(row["last_error"], "user 'zed'")
    assert by_name(scim.users())["zed"]["title"] == "admin"  # left alone
    write_config(tmp_path, scim, extra="    on_conflict: adopt\n")
    cli("outbox", "retry").ok()
    ledger = cli("explain", "zed", "--idp", "scim", "--json").json()["ledger"]
    assert ledger["state"] == "active" and ledger["created_by_idprov"] is False


def test_a_group_taken_at_the_target_is_refused_the_same_way(tmp_path, monkeypatch):
    """scim2-server takes two groups of one name: a fake that enforces it answers 409."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    fake.groups["g1"] = {"id": "g1", "displayName": "staff"}
    config = idp_yaml("scim", "https://scim.test/v2")
    with make_service(tmp_path, config, ["scim"], http_transport=fake.transport()) as svc:
        role = svc.add_role("staff")
        for report in (role.outbound, svc.retry_outbox()):
            assert report is not None
            [op] = report.idps["scim"].operations
            assert op.outcome == "failed" and op.status == 409
            assert_says_the_truth_and_the_way_out(op.error or "", "group 'staff'")
            assert svc.state.ledger.get("scim", "role", role.entity.id) is None
    assert list(fake.groups) == ["g1"]


def test_the_refusal_names_what_stops_the_push_and_discard_says_the_row_comes_back(
    cli, scim, tmp_path
):
    """`outbox discard` of a foreign account's row did not give up: the next change of
    staff (its group push brings zed along) or sync made the row again, and exited 6
    each time. The refusal names what stops it; discard says the row comes back."""
    cli("role", "add", "staff").ok()
    administrator_creates(scim, "Users", {"schemas": [USER], "userName": "zed", "title": "admin"})
    run = cli("user", "add", "zed", "-c", "email=zed@example.com", "-r", "staff")
    assert run.exit_code == 6, run
    said = run.stdout.replace("\n", " ")
    assert "`idprov role unassign staff zed`" in said
    assert "alone: the next change or sync brings it back" in said
    discard = cli("outbox", "discard", "--idp", "scim", "--user", "zed", "--yes")
    assert discard.exit_code == 0, discard
    warned = " ".join(discard.stderr.split())
    assert "zed is in the scope of scim (provisioning_roles: staff)" in warned
    assert "a later change or `idprov sync` brings its row back" in warned
    assert "`idprov role unassign staff zed`" in warned
    assert cli("sync").exit_code == 6  # as said: it came back
    cli("role", "unassign", "staff", "zed").ok()
    cli("outbox", "discard", "--idp", "scim", "--user", "zed", "--yes").ok()
    assert cli("sync").exit_code == 0
    assert by_name(scim.users())["zed"]["title"] == "admin"  # left alone


def test_a_discarded_group_row_is_said_to_come_back_while_the_role_is_pushed(tmp_path, monkeypatch):
    """A foreign group staff: its refusal names push_roles and provisioning_roles, and
    discarding the row says the next sync plans 'create role staff' again."""
    from idprov.provisioning.discard import returning
    from idprov.provisioning.sync import run_sync

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    fake.groups["g1"] = {"id": "g1", "displayName": "staff"}
    config = idp_yaml("scim", "https://scim.test/v2")
    with make_service(tmp_path, config, ["scim"], http_transport=fake.transport()) as svc:
        role = svc.add_role("staff")
        assert role.outbound is not None
        [op] = role.outbound.idps["scim"].operations
        assert "stop pushing role staff (narrow push_roles or provisioning_roles" in (
            op.error or ""
        )
        rows = svc.discard_outbox("scim", [role.entity.id])
        [back] = returning(svc, "scim", rows)
        assert back.message.startswith("role staff is pushed to scim (every role: no ")
        assert "a later change or `idprov sync` brings its row back" in back.message
        assert "push_roles" in (back.hint or "")
        [item] = run_sync(svc, dry_run=True).plan.idps[0].items
        assert (item.kind, item.label, item.action) == ("role", "staff", "create")


TWO_STORES = """
version: 1
data_dir: {data}
userstores:
  - domain: PRIMARY
  - domain: PARTNERS
    path: {partners}
identity_providers:{idps}
applications:
  - name: resident
    identity_providers: [scim]
"""


def two_store_service(tmp_path: Path, fake: FakeScim, extra: str = "") -> IdentityService:
    """PRIMARY and PARTNERS, and an IdP whose username template ({UN}, the default)
    drops the domain: PRIMARY/xdom and PARTNERS/xdom map to one target userName."""
    text = TWO_STORES.format(
        data=tmp_path / "data",
        partners=tmp_path / "partners.db",
        idps=idp_yaml("scim", "https://scim.test/v2", extra=extra),
    )
    config = load_text(text, "test.yaml")
    return IdentityService(config, http_transport=fake.transport())


def only_op(report: OutboundReport | None) -> OperationResult:
    assert report is not None
    [op] = report.idps["scim"].operations
    return op


def the_account(fake: FakeScim) -> dict:
    [account] = fake.users.values()
    return account


def test_a_name_held_by_another_local_user_names_that_user_and_never_says_adopt(
    tmp_path, monkeypatch
):
    """Trial: PRIMARY/xdom's account was said to be made 'for an earlier user of that
    name, since deleted or renamed', with on_conflict: adopt as the way out; adopting it
    merged the two people (both ledger entries held one account)."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    with two_store_service(tmp_path, fake) as svc:
        first = svc.add_user("xdom", {"email": "primary.person@contoso.com"})
        assert only_op(first.outbound).outcome == "done"
        second = svc.add_user("xdom", {"email": "partner.person@partner.com"}, domain="PARTNERS")
        op = only_op(second.outbound)
        assert op.outcome == "failed"
        error = op.error or ""
        assert "scim's account 'xdom' belongs to PRIMARY/xdom" in error, error
        assert "the username template of identity provider scim to keep the domain" in error
        assert "{UD}" in error
        assert "earlier user" not in error and "adopt" not in error
        assert the_account(fake)["emails"][0]["value"] == "primary.person@contoso.com"
        assert svc.state.ledger.get("scim", "user", second.entity.id) is None


def test_on_conflict_adopt_never_takes_an_account_another_local_user_holds(tmp_path, monkeypatch):
    """Following the old advice (on_conflict: adopt, outbox retry) gave the PRIMARY
    person's account the PARTNERS person's e-mail and externalId, and the ledger mapped
    both users to it: deleting either deleted it."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    with two_store_service(tmp_path, fake, extra="    on_conflict: adopt\n") as svc:
        first = svc.add_user("xdom", {"email": "primary.person@contoso.com"})
        second = svc.add_user("xdom", {"email": "partner.person@partner.com"}, domain="PARTNERS")
        assert "belongs to PRIMARY/xdom" in (only_op(second.outbound).error or "")
        report = svc.retry_outbox()
        assert "belongs to PRIMARY/xdom" in (only_op(report).error or "")
        account = the_account(fake)
        assert account["emails"][0]["value"] == "primary.person@contoso.com"
        assert account.get("externalId") != second.entity.id
        assert svc.state.ledger.get("scim", "user", second.entity.id) is None
        held = svc.state.ledger.get("scim", "user", first.entity.id)
        assert held is not None and held.remote_id == account["id"]
        svc.delete_user("xdom", domain="PARTNERS")
        assert fake.users  # the PRIMARY person keeps the account


def test_two_users_of_one_name_pushed_in_one_drain_get_one_account_between_them(
    tmp_path, monkeypatch
):
    """Both rows in one drain (the target refused them when they were added): the first
    create makes the account, the second's conflict finds it held by the first, even
    with on_conflict: adopt, before any ledger record of the first is written."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    down = "    on_conflict: adopt\n    max_concurrency: 1\n"
    with two_store_service(tmp_path, fake, extra=down) as svc:
        fake.fail("POST", 400, times=2)  # refused: nothing made
        svc.add_user("xdom", {"email": "primary.person@contoso.com"})
        svc.add_user("xdom", {"email": "partner.person@partner.com"}, domain="PARTNERS")
        fake.faults = []
        ops = sorted(svc.retry_outbox().idps["scim"].operations, key=lambda o: o.outcome)
        assert [o.outcome for o in ops] == ["done", "failed"]
        done, failed = ops
        primary = done.label == "xdom"
        owner = "PRIMARY/xdom" if primary else "PARTNERS/xdom"
        assert f"belongs to {owner}" in (failed.error or "")
        email = "primary.person@contoso.com" if primary else "partner.person@partner.com"
        assert the_account(fake)["emails"][0]["value"] == email  # nothing sent over it
        holders = [e for e in svc.state.ledger.for_idp("scim", "user").values() if e.remote_id]
        assert [e.remote_id for e in holders] == [the_account(fake)["id"]]


def test_an_account_made_for_a_user_deleted_here_is_given_to_a_newcomer_only_with_adopt(
    tmp_path, monkeypatch
):
    """A deleted user's account kept at the target (deprovision: disable): the
    newcomer of its name is refused (the account was made for an earlier user), and
    with on_conflict: adopt it takes the account over, the old entry released: the
    ledger maps the account to one user."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    keep = "    deprovision: disable\n"
    with two_store_service(tmp_path, fake, extra=keep) as svc:
        old = svc.add_user("bob", {"email": "old.bob@contoso.com"})
        svc.delete_user("bob")
        new = svc.add_user("bob", {"email": "new.bob@contoso.com"})
        error = only_op(new.outbound).error or ""
        assert "that idprov made for an earlier user of that name" in error, error
        assert "set on_conflict: adopt" in error
    with two_store_service(tmp_path, fake, extra=keep + "    on_conflict: adopt\n") as svc:
        for _ in range(2):  # the first try releases the old entry, the next adopts
            report = svc.retry_outbox()
            if only_op(report).outcome == "done":
                break
        assert only_op(report).outcome == "done", only_op(report).error
        assert the_account(fake)["emails"][0]["value"] == "new.bob@contoso.com"
        assert svc.state.ledger.get("scim", "user", old.entity.id) is None
        entry = svc.state.ledger.get("scim", "user", new.entity.id)
        assert entry is not None and entry.remote_id == the_account(fake)["id"]


def test_adopting_an_account_an_administrator_disabled_leaves_it_disabled(tmp_path, monkeypatch):
    """on_conflict: adopt takes over another system's bob, disabled there: the update
    that follows sends what idprov maps, never active: true (it sent the whole
    account, enabling him)."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    fake.users["theirs"] = {"id": "theirs", "userName": "bob", "active": False}
    config = idp_yaml("scim", "https://scim.test/v2", extra="    on_conflict: adopt\n")
    with make_service(tmp_path, config, ["scim"], http_transport=fake.transport()) as svc:
        assert svc.add_user("bob", {"title": "Clerk"}).outbound.ok
    assert fake.users["theirs"]["active"] is False
    assert fake.users["theirs"]["title"] == "Clerk"


def test_a_lost_create_never_adopts_by_mark_an_account_another_local_user_holds(
    tmp_path, monkeypatch
):
    """After a create whose reply was lost, the look-up adopts an account carrying the
    user's mark as its own: not one the ledger maps to another local user (a merge
    made earlier left PARTNERS/xdom's mark on PRIMARY/xdom's account)."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    with two_store_service(tmp_path, fake) as svc:
        first = svc.add_user("xdom", {"email": "primary.person@contoso.com"})
        fake.fail("POST", 503, times=3)  # the create's outcome is never known
        second = svc.add_user("xdom", {"email": "partner.person@partner.com"}, domain="PARTNERS")
        assert only_op(second.outbound).outcome == "failed"
        account = the_account(fake)
        account["externalId"] = second.entity.id
        report = svc.retry_outbox()
        assert "belongs to PRIMARY/xdom" in (only_op(report).error or "")
        assert the_account(fake)["emails"][0]["value"] == "primary.person@contoso.com"
        entries = svc.state.ledger.for_idp("scim", "user")
        assert entries[first.entity.id].remote_id == account["id"]
        assert entries[second.entity.id].remote_id is None


def test_two_users_of_one_userstore_mapped_to_one_name_are_named_with_the_way_out(
    tmp_path, monkeypatch
):
    """A username template of a claim two users share (username: '{email}')."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    with two_store_service(tmp_path, fake, extra="    username: '{email}'\n") as svc:
        svc.add_user("ann", {"email": "desk@contoso.com"})
        bob = svc.add_user("bob", {"email": "desk@contoso.com"})
        error = only_op(bob.outbound).error or ""
        assert "scim's account 'desk@contoso.com' belongs to PRIMARY/ann, not to" in error
        assert "PRIMARY/bob: both map to that name" in error
        assert "Change the username template of identity provider scim" in error
        assert "adopt" not in error


def test_two_directory_entries_of_one_name_are_told_apart_by_id():
    """The LDAP trial: two entries with uid=alice, both CORP/alice here."""
    from idprov.provisioning.ledger import LedgerEntry, RefusedCreate

    holder = LedgerEntry(
        "scim", "user", "id-1", "CORP", "CORP/alice", "r1", "active", None, None, True, ""
    )
    refusal = RefusedCreate.name_taken("scim", "user", "alice", None, "r1", "id-1")
    error = refusal.held_by(holder, "CORP/alice").error("CORP/alice")
    said = " ".join(error.message.split())
    assert "scim's account 'alice' belongs to another user named CORP/alice (id id-1)" in said
    assert "two directory entries with one uid" in said
    assert "Remove or rename one of the two users named CORP/alice" in said
    assert "adopt" not in said


def test_a_merged_account_is_not_deprovisioned_with_one_of_its_two_users(tmp_path, monkeypatch):
    """A ledger an adoption of the old rule left mapping PRIMARY/xdom and PARTNERS/xdom
    to one account: deleting PARTNERS/xdom deleted PRIMARY/xdom's account. It is kept,
    PARTNERS/xdom's record of it forgotten, and the next sync gives it back the
    PRIMARY person's attributes."""
    from idprov.provisioning.sync import run_sync

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    with two_store_service(tmp_path, fake) as svc:
        first = svc.add_user("xdom", {"email": "primary.person@contoso.com"})
        second = svc.add_user("xdom", {"email": "partner.person@partner.com"}, domain="PARTNERS")
        account = the_account(fake)
        account["emails"] = [{"value": "partner.person@partner.com", "primary": True}]
        held = svc.state.ledger.get("scim", "user", first.entity.id)
        assert held is not None
        merged = dataclasses.replace(
            held, local_id=second.entity.id, domain="PARTNERS", label="PARTNERS/xdom"
        )
        with svc.state.transaction():
            svc.state.ledger.record(merged)
        gone = svc.delete_user("xdom", domain="PARTNERS")
        [op] = gone.outbound.idps["scim"].operations if gone.outbound else []
        assert op.outcome == "skipped" and "the account is PRIMARY/xdom's" in op.operation
        assert the_account(fake)["id"] == account["id"]  # not deleted
        assert svc.state.ledger.get("scim", "user", second.entity.id) is None
        run_sync(svc)
        assert the_account(fake)["emails"][0]["value"] == "primary.person@contoso.com"


def test_of_two_users_merged_into_one_account_the_one_that_adopted_it_yields(tmp_path, monkeypatch):
    """The same merged ledger, PARTNERS/xdom having adopted PRIMARY/xdom's account:
    PARTNERS/xdom's next update is not sent over it; its row fails naming PRIMARY/xdom
    and the next sync gives the account back the PRIMARY person's attributes. An
    update of PRIMARY/xdom goes through."""
    from idprov.provisioning.sync import run_sync

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    with two_store_service(tmp_path, fake) as svc:
        first = svc.add_user("xdom", {"email": "primary.person@contoso.com"})
        second = svc.add_user("xdom", {"email": "partner.person@partner.com"}, domain="PARTNERS")
        held = svc.state.ledger.get("scim", "user", first.entity.id)
        assert held is not None
        merged = dataclasses.replace(
            held,
            local_id=second.entity.id,
            domain="PARTNERS",
            label="PARTNERS/xdom",
            created_by_idprov=False,  # what on_conflict: adopt recorded
        )
        with svc.state.transaction():
            svc.state.ledger.record(merged)
        changed = svc.update_user("xdom", {"email": "partner.new@partner.com"}, domain="PARTNERS")
        op = only_op(changed.outbound)
        assert op.outcome == "failed"
        assert "scim's account 'xdom' belongs to PRIMARY/xdom, not to PARTNERS/xdom" in (
            op.error or ""
        )
        assert svc.state.ledger.get("scim", "user", second.entity.id) is None
        assert the_account(fake)["emails"][0]["value"] == "primary.person@contoso.com"
        ours = svc.update_user("xdom", {"email": "primary.new@contoso.com"})
        assert only_op(ours.outbound).outcome == "done"
        run_sync(svc)
        assert the_account(fake)["emails"][0]["value"] == "primary.new@contoso.com"
