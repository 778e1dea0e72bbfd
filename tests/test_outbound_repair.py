"""Repair after deletions at the target: a 404 for a user or group the ledger knows
re-creates it (with its members, in its groups); `sync --verify --repair` re-creates
users deleted at the target on demand. Also: a deprovision after an uncertain create
is never lost, and `idp test` tells a wrong base path from wrong credentials."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.peers.scim2 import Scim2Peer

IDP = idp_yaml("scim", "https://scim.test/v2", extra="    provisioning_roles: [staff]\n")


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScim:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    return FakeScim("secret-token")


def members(fake: FakeScim, group: str) -> set[str]:
    [found] = [g for g in fake.groups.values() if g["displayName"] == group]
    by_id = {uid: u["userName"] for uid, u in fake.users.items()}
    return {by_id.get(m["value"], m["value"]) for m in found.get("members", [])}


def scoped_by(role: str) -> str:
    """The IdP, in scope through ``role``, where every role becomes a group."""
    extra = f"    provisioning_roles: [{role}]\n    push_roles: all\n"
    return idp_yaml("scim", "https://scim.test/v2", extra=extra)


def test_a_group_deleted_at_the_target_is_made_again_with_its_members(tmp_path, fake):
    with make_service(tmp_path, IDP, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {}, roles=["staff"])
        fake.groups.clear()  # deleted by an administrator
        result = svc.add_user("bob", {}, roles=["staff"])
        assert result.outbound.ok, result.outbound.to_dict()
        assert members(fake, "staff") == {"ann", "bob"}
        entry = svc.state.ledger.get("scim", "role", svc.get_role("staff").id)
        assert entry.remote_id in fake.groups
        fake.requests.clear()
        svc.add_user("cyd", {}, roles=["staff"])  # and it is used from then on
    assert members(fake, "staff") == {"ann", "bob", "cyd"}
    assert ("POST", "/v2/Groups") not in fake.requests


def test_a_user_deleted_at_the_target_is_made_again_and_put_back_in_its_groups(tmp_path, fake):
    with make_service(tmp_path, IDP, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {"title": "A"}, roles=["staff"])
        [gone] = list(fake.users)
        del fake.users[gone]
        result = svc.update_user("ann", {"title": "B"})
        assert result.outbound.ok, result.outbound.to_dict()
    [ann] = fake.users.values()
    assert ann["title"] == "B" and ann["id"] != gone
    # in place of the lost account, whose id the target kept (one more after each loss)
    assert members(fake, "staff") == {"ann"}


def test_a_user_made_again_whose_group_is_gone_too_is_put_in_it_made_again(tmp_path, fake):
    """A target that lost both (a sandbox reset): the update failed on the group's 404,
    and every sync after it, until sync --verify --repair."""
    from idprov.provisioning.sync import compute_plan

    with make_service(tmp_path, IDP, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {"title": "A"}, roles=["staff"])
        svc.add_user("bob", {}, roles=["staff"])
        [ann] = [i for i, u in fake.users.items() if u["userName"] == "ann"]
        del fake.users[ann]
        fake.groups.clear()
        result = svc.update_user("ann", {"title": "B"})
        assert result.outbound.ok, result.outbound.to_dict()
        assert members(fake, "staff") == {"ann", "bob"}
        assert compute_plan(svc).empty


def refuse_unknown_members(fake: FakeScim, refused: list[str]) -> None:
    """Make ``fake`` refuse, as Entra, Okta or IAM Identity Center do (a 400), a group
    created or changed with a member that is no account there; ``refused`` collects
    the unknown ids it was sent."""

    def strict(request: httpx.Request) -> httpx.Response | None:
        if "/Groups" not in request.url.path or request.method not in ("POST", "PATCH"):
            return None
        body = json.loads(request.content)
        values = body.get("members") or [
            m for op in body.get("Operations", []) if op["op"] == "add" for m in op["value"]
        ]
        unknown = [m["value"] for m in values if m["value"] not in fake.users]
        if not unknown:
            return None
        refused.extend(unknown)
        return httpx.Response(400, json={"detail": f"no such member {unknown[0]}"})

    fake.faults.append(strict)


def test_a_group_made_again_after_a_sandbox_reset_names_no_lost_account(tmp_path, fake):
    """The target lost every user and group: ann's update makes her again and brings
    staff along; bob and cyd, lost too, are made again before they are put in it (the
    group named their lost ids, which a strict target refuses), in one push."""
    from idprov.provisioning.sync import compute_plan

    refused: list[str] = []
    with make_service(tmp_path, IDP, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        for name in ("ann", "bob", "cyd"):
            svc.add_user(name, {"title": "A"}, roles=["staff"])
        fake.users.clear()
        fake.groups.clear()
        refuse_unknown_members(fake, refused)
        result = svc.update_user("ann", {"title": "B"})
        assert result.outbound.ok, result.outbound.to_dict()
        assert refused == []
        assert sorted(u["userName"] for u in fake.users.values()) == ["ann", "bob", "cyd"]
        assert members(fake, "staff") == {"ann", "bob", "cyd"}
        assert compute_plan(svc).empty and svc.outbox_rows() == []


def test_a_user_made_again_that_its_group_refuses_for_now_keeps_its_new_account(tmp_path, fake):
    """The user's row is done (the account it made is recorded); the group's row puts
    it back (the row failed, and the account's id was lost: every retry made it
    again, adopted it, and failed on the group again)."""
    with make_service(tmp_path, IDP, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {"title": "A"}, roles=["staff"])
        [gone] = list(fake.users)
        del fake.users[gone]
        refused = [3]  # the group refuses its next three changes (one push's retries)

        def group_down(request: httpx.Request) -> httpx.Response | None:
            if request.method != "PATCH" or "/Groups/" not in request.url.path or not refused[0]:
                return None
            refused[0] -= 1
            return httpx.Response(503, json={"detail": "busy", "status": "503"})

        fake.faults.append(group_down)
        result = svc.update_user("ann", {"title": "B"})
        [ann] = [u for u in fake.users.values() if u["userName"] == "ann"]
        entry = svc.state.ledger.get("scim", "user", svc.get_user("ann").id)
        assert entry.remote_id == ann["id"]
        assert refused == [0] and result.outbound.ok, result.outbound.to_dict()
        assert "ann" in members(fake, "staff")  # (beside the lost account's id: the fake's)


def test_a_user_a_role_brings_into_scope_joins_its_other_groups_there(tmp_path, fake):
    """alice holds staff; admins takes her to the IdP: she is created, in both groups
    (she was in admins only, until a sync)."""
    from idprov.provisioning.sync import compute_plan

    idp = scoped_by("admins")
    with make_service(tmp_path, idp, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("admins")
        svc.add_role("staff")
        svc.add_user("bob", {}, roles=["admins", "staff"])
        svc.add_user("alice", {}, roles=["staff"])
        assert {u["userName"] for u in fake.users.values()} == {"bob"}
        result = svc.assign("admins", ["alice"])
        assert result.outbound.ok, result.outbound.to_dict()
        assert members(fake, "staff") == members(fake, "admins") == {"alice", "bob"}
        assert compute_plan(svc).empty


def test_a_sync_whose_repair_did_what_its_push_failed_to_do_is_a_success(tmp_path, fake):
    """The push of a user the target lost fails; the verify finds it deleted, the
    repair makes it again: nothing is left failed, so the run is ok (it exited 6
    while the outbox was empty, and alerts fired on a target in line)."""
    from idprov.provisioning.sync import run_sync

    with make_service(tmp_path, IDP, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        svc.add_user("ann", {"title": "A"}, roles=["staff"])
        fake.fail("PATCH", 503, times=3)  # the target is down for the change
        assert not svc.update_user("ann", {"title": "B"}).outbound.ok
        [gone] = list(fake.users)
        del fake.users[gone]  # and it lost ann
        fake.fail("POST", 400)  # the sync's push cannot make her again
        result = run_sync(svc, verify=True, repair=True)
        assert not result.outbound.ok and result.repaired.ok
        assert result.ok and svc.outbox_rows() == []
    [ann] = fake.users.values()
    assert ann["title"] == "B"


def test_a_group_brought_along_is_judged_by_the_deletion_guard(tmp_path, fake):
    """dave, in scope through sales, brings staff's row along; five members left staff
    in the store behind idprov's back: that removal is over the guard, and is held
    (it was sent, unjudged, with dave's push)."""
    extra = (
        "    provisioning_roles: [sales]\n    push_roles: all\n"
        "    deletion_guard: {memberships: {max_deletes: 2, min_deletes: 0}}\n"
    )
    idp = idp_yaml("scim", "https://scim.test/v2", extra=extra)
    with make_service(tmp_path, idp, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("sales")
        svc.add_role("staff")
        names = [f"u{i}" for i in range(10)]
        for name in names:
            svc.add_user(name, {}, roles=["sales", "staff"])
        svc.add_user("dave", {}, roles=["staff"])
        store, _ = svc.resolve("u0")
        store.unassign("staff", names[:5])  # out of band: an administrator, a feed
        result = svc.assign("sales", ["dave"])
        assert result.outbound.held and "deletion_guard.memberships" in result.outbound.guard[0]
    assert members(fake, "staff") == set(names)


def test_a_role_that_cannot_be_read_now_is_left_to_its_own_row(tmp_path, fake, monkeypatch):
    """Bringing a created user's groups along reads its roles; a read that fails
    leaves that group to its own row or a sync, and fails nothing else (the push
    raised, leaving the change's own role row pending)."""
    from idprov.errors import IdprovError

    idp = scoped_by("sales")
    with make_service(tmp_path, idp, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("sales")
        svc.add_role("staff")
        svc.add_user("dave", {}, roles=["staff"])

        def unreadable(domain: str, name: str) -> None:
            raise IdprovError("the directory went away")

        monkeypatch.setattr(svc.outbound.directory, "role_by_name", unreadable)
        result = svc.assign("sales", ["dave"])
        assert result.outbound.ok, result.outbound.to_dict()
        assert members(fake, "sales") == {"dave"} and svc.outbox_rows() == []


def test_users_created_in_bulk_are_not_read_again_one_by_one(tmp_path, fake, monkeypatch):
    """What brings a created user's groups along reuses the user its push read (it
    read each user again, one query each: an LDAP round trip per user)."""
    idp = idp_yaml("scim", "https://scim.test/v2", extra="    provisioning_roles: [scoped]\n")
    with make_service(tmp_path, idp, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("scoped")
        svc.add_role("other")
        names = [f"u{i:04d}" for i in range(1000)]
        for name in names:
            svc.add_user(name, {}, roles=["other"])
        reads: list[int] = []
        real = svc.outbound.directory.users_by_id

        def counted(refs):
            refs = list(refs)
            reads.append(len(refs))
            return real(refs)

        monkeypatch.setattr(svc.outbound.directory, "users_by_id", counted)
        assert svc.assign("scoped", names).outbound.ok
        assert len(fake.users) == 1000 and reads.count(1) == 0, reads


def test_sync_verify_repair_recreates_users_deleted_at_the_target(
    cli, tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
applications:
  - name: resident
    identity_providers: [scim]
""")
    cli("role", "add", "staff").ok()
    cli("user", "add", "dora", "-c", "email=d@example.com", "-r", "staff").ok()
    [dora] = scim2_server.users()
    headers = {"Authorization": f"Bearer {scim2_server.token}"}
    assert httpx.delete(
        f"{scim2_server.base_url}/Users/{dora['id']}", headers=headers, timeout=30
    ).is_success
    plain = cli("sync", "--verify", "--json")
    assert plain.exit_code == 0 and plain.json()["drift"]["scim"]["deleted_remotely"] == ["dora"]
    assert scim2_server.users() == []  # verify alone only reports
    run = cli("sync", "--verify", "--repair", "--idp", "scim", "--json")
    assert run.exit_code == 0, run
    report = run.json()["drift"]["scim"]
    assert report["deleted_remotely"] == ["dora"]
    # dora re-created (and put back in her group): one entity repaired of one, where the
    # report said "repaired 2 of 1", counting each operation it took
    assert (report["repaired"], len(report["repairs"])) == (1, 1)
    [again] = scim2_server.users()
    assert again["userName"] == "dora" and again["id"] != dora["id"]
    [staff] = scim2_server.groups()
    # in place of the lost account, whose id scim2-server keeps in its groups (the repair
    # added her as a new member, leaving that id dangling there)
    assert [m["value"] for m in staff.get("members", [])] == [again["id"]]
    # the repair is part of the run: log --run shows its operations, the run counts it
    logged = cli("log", "--run", run.json()["run"], "--json").ok().json()["items"]
    actions = [(e["action"], e["target"]) for e in logged]
    assert {("sync.repair", "scim"), ("outbound.update", "dora")} <= set(actions)
    [record] = [e for e in logged if e["action"] == "sync.run"]
    assert record["outcome"] == "ok"
    assert (
        record["details"]["scim"] | {"drift": 1, "repair_done": 1, "repair_failed": 0}
        == (record["details"]["scim"])
    )


def test_a_deprovision_after_an_uncertain_create_is_not_lost(tmp_path, fake):
    with make_service(tmp_path, IDP, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        fake.fail("POST", 500, after_apply=True)  # made, but the reply is lost
        fake.fail("GET", 500, times=10)  # and every look-up fails, for now
        result = svc.add_user("eve", {}, roles=["staff"])
        assert not result.outbound.ok and len(fake.users) == 1
        result = svc.unassign("staff", ["eve"])
        assert not result.outbound.ok  # still cannot look: failed, kept, visible
        assert [r.kind for r in svc.outbox_rows(["scim"])].count("user") == 1
        fake.faults.clear()
        report = svc.retry_outbox(["scim"])
        assert report.ok, report.to_dict()
        assert svc.outbox_rows(["scim"]) == []
    assert fake.users == {}  # it was idprov's (its externalId): deleted


def test_an_unprovable_account_after_an_uncertain_create_is_left_alone(tmp_path, fake):
    idp = IDP + "    attributes: {externalId: null}\n"
    with make_service(tmp_path, idp, ["scim"], http_transport=fake.transport()) as svc:
        svc.add_role("staff")
        fake.fail("POST", 500, after_apply=True)
        fake.fail("GET", 500, times=3)
        svc.add_user("fay", {}, roles=["staff"])
        result = svc.unassign("staff", ["fay"])
        [op] = [o for o in result.outbound.idps["scim"].operations if o.kind == "user"]
        assert op.outcome == "failed" and "nothing there proves it" in op.error
    assert len(fake.users) == 1


def test_idp_test_says_a_wrong_base_path_is_not_an_authentication_failure(
    tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    wrong = scim2_server.base_url.rsplit("/v2", 1)[0] + "/nowhere/v2"
    idp = idp_yaml("scim", wrong)
    with make_service(tmp_path, idp, ["scim"]) as svc:
        report = svc.test_idp("scim")
    assert report.reachable and report.authenticated is None and not report.ok
    assert any("check the path of base_url" in m for m in report.messages)


def _spml_legacy(tmp_path: Path, spml_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPML_TOKEN", spml_server.token or "")
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: legacy
    connector: spml
    options:
      base_url: {spml_server.url}
      auth: bearer
      token: env:SPML_TOKEN
      pso_id: 'uid={{username_dn}},ou=people,dc=example,dc=com'
    push_roles: none
applications:
  - name: resident
    identity_providers: [legacy]
""")


def test_sync_verify_exits_6_when_it_could_not_read_the_target(
    cli, tmp_path: Path, spml_server, monkeypatch: pytest.MonkeyPatch
):
    _spml_legacy(tmp_path, spml_server, monkeypatch)
    cli("user", "add", "gus", "-c", "given_name=Gus", "-c", "family_name=G").ok()
    spml_server.fail_next("unsupportedOperation", "search is off today", operation="searchRequest")
    run = cli("sync", "--verify")
    assert run.exit_code == 6, run
    assert "listing users" in run.stdout and "unsupportedOperation" in run.stdout


def test_sync_verify_says_what_it_did_not_look_for_at_a_target_without_search(
    cli, tmp_path: Path, spml_server, monkeypatch: pytest.MonkeyPatch
):
    """A target whose listTargets offers no search cannot list its accounts: verify
    checks the ledger's accounts, sends no search, and says that accounts outside the
    ledger were not looked for (it said nothing: a clean report that was not one)."""
    from tests.peers.spml import PASSWORD, SUSPEND

    spml_server.capabilities = {SUSPEND, PASSWORD}
    _spml_legacy(tmp_path, spml_server, monkeypatch)
    cli("user", "add", "gus", "-c", "given_name=Gus", "-c", "family_name=G").ok()
    run = cli("sync", "--verify")
    assert run.exit_code == 0, run
    assert "drift at legacy: 1 checked" in run.stdout
    assert "accounts outside idprov's ledger were not looked for" in run.stdout
    assert not any("searchRequest" in op for op in spml_server.operations())
