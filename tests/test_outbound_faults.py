"""Faults at the target, injected through httpx.MockTransport: each must end in a
correct ledger and outbox, no duplicate remote objects, and a clear report."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from idprov.provisioning.state import AuditQuery
from tests.outbound_helpers import FakeScim, idp_yaml, make_config_text, make_service

BASE = "https://scim.test/v2"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScim:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    return FakeScim("secret-token")


@pytest.fixture()
def sleeps() -> list[float]:
    return []


def service(tmp_path: Path, fake: FakeScim, sleeps: list[float], extra: str = ""):
    return make_service(
        tmp_path,
        idp_yaml("target", BASE, extra=extra),
        ["target"],
        http_transport=fake.transport(),
        sleep=sleeps.append,
    )


def ledger_entry(svc, user):
    return svc.state.ledger.get("target", "user", user.id)


def test_429_with_retry_after_is_honoured_then_succeeds(tmp_path, fake, sleeps):
    fake.fail("POST", 429, headers={"Retry-After": "0.04"})
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert result.outbound is not None and result.outbound.ok
        assert len(fake.users) == 1
        assert sleeps and sleeps[0] >= 0.04
        entry = ledger_entry(svc, result.entity)
        assert entry.remote_id in fake.users and entry.state == "active"
        assert svc.outbox_rows() == []
        attempts = svc.audit_log(AuditQuery(action="outbound.create"))
        assert [a.details["status"] for a in reversed(attempts)] == [429, 201]


def test_500_after_the_target_created_the_user_does_not_duplicate(tmp_path, fake, sleeps):
    fake.fail("POST", 500, after_apply=True)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert result.outbound.ok
        assert len(fake.users) == 1
        entry = ledger_entry(svc, result.entity)
        assert entry.remote_id == next(iter(fake.users))
        assert entry.created_by_idprov


def test_500_then_success(tmp_path, fake, sleeps):
    fake.fail("POST", 503, times=2)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert result.outbound.ok
        assert len(fake.users) == 1 and len(sleeps) == 2


def test_timeout_after_apply_adopts_instead_of_duplicating(tmp_path, fake, sleeps):
    fake.timeout("POST", after_apply=True)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert result.outbound.ok
        assert len(fake.users) == 1
        assert ledger_entry(svc, result.entity).remote_id in fake.users


def test_401_fails_at_once_with_the_targets_message(tmp_path, fake, sleeps, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", "wrong-token")
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert not result.outbound.ok
        [op] = result.outbound.idps["target"].operations
        assert op.outcome == "failed" and op.status == 401 and op.attempts == 1
        assert "bad token" in op.error
        assert sleeps == []
        [row] = svc.outbox_rows()
        assert row.status == "failed" and row.last_status == 401 and "bad token" in row.last_error
        assert ledger_entry(svc, result.entity) is None  # refused: nothing was made there
        # the local change is done all the same
        assert svc.get_user("alice").claims["email"] == "alice@example.com"
        log = svc.audit_log(AuditQuery(action="outbound."))
        assert "wrong-token" not in repr(log)


def test_409_fails_clearly_unless_adopt_is_configured(tmp_path, fake, sleeps):
    fake.users["x"] = {"id": "x", "userName": "alice"}
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        [op] = result.outbound.idps["target"].operations
        assert op.outcome == "failed" and op.status == 409
        assert "refused to create user 'alice'" in op.error and "did not create it" in op.error
        assert ledger_entry(svc, result.entity) is None  # it claims nothing there
    assert len(fake.users) == 1


def test_409_with_on_conflict_adopt_takes_the_existing_user(tmp_path, fake, sleeps):
    fake.users["x"] = {"id": "x", "userName": "alice"}
    with service(tmp_path, fake, sleeps, extra="    on_conflict: adopt\n") as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert result.outbound.ok
        entry = ledger_entry(svc, result.entity)
        assert entry.remote_id == "x" and not entry.created_by_idprov
    assert len(fake.users) == 1


def test_malformed_json_reply_uses_location_and_never_duplicates(tmp_path, fake, sleeps):
    fake.fail("POST", 201, body=b"{not json", after_apply=True)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        # a 201 with a broken body and no Location: ambiguous, looked up, adopted
        assert result.outbound.ok
        assert len(fake.users) == 1
        assert ledger_entry(svc, result.entity).remote_id in fake.users


def test_retries_exhausted_stay_in_outbox_and_retry_later(tmp_path, fake, sleeps):
    fake.fail("POST", 500, times=3)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        [op] = result.outbound.idps["target"].operations
        assert op.outcome == "failed" and op.attempts == 3
        [row] = svc.outbox_rows(status="failed")
        assert row.attempts == 3 and "injected 500" in row.last_error
        assert fake.users == {}
        report = svc.retry_outbox()
        assert report.ok
        assert svc.outbox_rows() == [] and len(fake.users) == 1


def test_every_idp_is_attempted_when_another_fails(tmp_path, fake, sleeps, monkeypatch):
    broken = FakeScim("secret-token")
    broken.fail("POST", 500, times=10)
    transport = httpx.MockTransport(
        lambda r: (broken if r.url.host == "broken.test" else fake).handle(r)
    )
    idps = idp_yaml("broken", "https://broken.test/v2") + idp_yaml("target", BASE)
    with make_service(
        tmp_path, idps, ["broken", "target"], http_transport=transport, sleep=sleeps.append
    ) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert result.outbound.idps["broken"].count("failed") == 1
        assert result.outbound.idps["target"].count("done") == 1
        assert len(fake.users) == 1 and broken.users == {}
        assert [r.idp for r in svc.outbox_rows()] == ["broken"]


def users_left_unpushed(svc, monkeypatch, names: list[str]) -> list:
    """Users committed by commands killed before their pushes (rows a dead process
    claimed): the next drain pushes them together."""
    with monkeypatch.context() as patched:
        patched.setattr(svc, "push_pending", lambda changes: [None] * len(changes))
        users = [svc.add_user(n, {"email": f"{n}@example.com"}).entity for n in names]
    held_by_the_dead(svc)
    return users


def held_by_the_dead(svc) -> None:
    """The claims of the outbox rows are a killed process's (its pid is gone), as a
    command killed between its commit and its push leaves them."""
    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    holder = f"{socket.gethostname()}:{gone.pid}:killed"
    svc.state.db.execute("UPDATE outbox SET claimed_by = ? WHERE claimed_by IS NOT NULL", [holder])


def test_a_change_left_undrained_by_a_crash_is_picked_up(tmp_path, fake, sleeps, monkeypatch):
    with service(tmp_path, fake, sleeps) as svc:
        # the command is killed after its commit, before its push
        monkeypatch.setattr(svc, "push_pending", lambda changes: [None] * len(changes))
        svc.add_user("alice", {"email": "alice@example.com"})
        assert [r.status for r in svc.outbox_rows()] == ["pending"]
        held_by_the_dead(svc)
    with service(tmp_path, fake, sleeps) as svc:
        # left by a command that stopped: old enough to be taken over by the next one
        svc.state.db.execute("UPDATE outbox SET updated_at = '2000-01-01T00:00:00.000Z'")
        svc.add_user("bob", {"email": "bob@example.com"})
        assert svc.outbox_rows() == []
    assert sorted(u["userName"] for u in fake.users.values()) == ["alice", "bob"]


def test_unchanged_update_sends_nothing_and_changed_sends_a_patch(tmp_path, fake, sleeps):
    with service(tmp_path, fake, sleeps) as svc:
        svc.add_user("alice", {"email": "alice@example.com", "title": "Dev"})
        before = len(fake.requests)
        svc.update_user("alice", {"title": "Dev"})
        assert len(fake.requests) == before
        svc.update_user("alice", {"title": "Lead"}, unset=["email"])
        patches = [r for r in fake.requests[before:] if r[0] == "PATCH"]
        assert len(patches) == 1
        [remote] = fake.users.values()
        assert remote["title"] == "Lead" and "emails" not in remote


def _killed_mid_create(svc, fake, monkeypatch, external_id: str | None):
    """A run that committed alice, marked her create and sent it, then was killed
    before the reply came back; the target made the account (with that externalId)."""
    with monkeypatch.context() as patched:
        patched.setattr(svc, "push_pending", lambda changes: [None] * len(changes))
        user = svc.add_user("alice", {"email": "alice@example.com"}).entity
    held_by_the_dead(svc)
    svc.state.ledger.mark_creating([("target", "user", user.id, "PRIMARY", "alice", None)])
    remote = {"id": "r1", "userName": "alice"}
    if external_id is not None:
        remote["externalId"] = external_id
    fake.users["r1"] = remote
    return user


def test_create_interrupted_by_a_crash_is_adopted_when_it_carries_our_external_id(
    tmp_path, fake, sleeps, monkeypatch
):
    with service(tmp_path, fake, sleeps) as svc:
        user = _killed_mid_create(svc, fake, monkeypatch, external_id=None)
        fake.users["r1"]["externalId"] = user.id  # what idprov sends as externalId
        report = svc.retry_outbox()
        assert report.ok
        entry = ledger_entry(svc, user)
        assert entry.remote_id == "r1" and entry.created_by_idprov and entry.state == "active"
        assert fake.users["r1"]["emails"][0]["value"] == "alice@example.com"  # brought up to date
    assert len(fake.users) == 1


def test_an_unproven_account_found_after_a_crash_is_not_taken_over(
    tmp_path, fake, sleeps, monkeypatch
):
    with service(tmp_path, fake, sleeps) as svc:
        user = _killed_mid_create(svc, fake, monkeypatch, external_id="someone-else")
        report = svc.retry_outbox()
        [op] = report.idps["target"].operations
        assert op.outcome == "failed"
        assert "nothing at the target proves it" in op.error and "did not create" not in op.error
        assert ledger_entry(svc, user).remote_id is None
        assert [r.status for r in svc.outbox_rows()] == ["failed"]
    assert len(fake.users) == 1 and fake.users["r1"]["externalId"] == "someone-else"


def test_on_conflict_adopt_takes_an_unproven_account_over_as_not_ours(
    tmp_path, fake, sleeps, monkeypatch
):
    with service(tmp_path, fake, sleeps, extra="    on_conflict: adopt") as svc:
        user = _killed_mid_create(svc, fake, monkeypatch, external_id=None)
        assert svc.retry_outbox().ok
        entry = ledger_entry(svc, user)
        assert entry.remote_id == "r1" and not entry.created_by_idprov
    assert len(fake.users) == 1


def test_creates_a_killed_bulk_left_unknown_are_looked_up_one_by_one_never_sent_again(
    tmp_path, sleeps, monkeypatch
):
    """kill -9 while a Bulk create was unanswered (the target made the accounts): the
    re-run does not send the creates again, in Bulk or not; it looks each one up and
    adopts what carries idprov's externalId."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token", bulk_max_operations=100)
    names = [f"user{i:02d}" for i in range(12)]  # enough for Bulk
    with service(tmp_path, fake, sleeps) as svc:
        users = users_left_unpushed(svc, monkeypatch, names)
        marks = [("target", "user", u.id, "PRIMARY", u.username, None) for u in users]
        svc.state.ledger.mark_creating(marks)
        for user in users:  # what the lost Bulk request made
            fake.users[f"r-{user.username}"] = {
                "id": f"r-{user.username}",
                "userName": user.username,
                "externalId": user.id,
            }
        report = svc.retry_outbox()
        assert report.ok
        assert not [r for r in fake.requests if r[0] == "POST"], "nothing created again"
        assert len(fake.users) == 12
        assert all(ledger_entry(svc, u).remote_id == f"r-{u.username}" for u in users)


def refuse_connections(fake: FakeScim, method: str, path: str, times: int) -> None:
    """The next ``times`` requests with ``method`` to ``path`` find no one listening:
    the connection is refused before anything is sent."""
    remaining = [times]

    def fault(request: httpx.Request) -> httpx.Response | None:
        if request.method != method or request.url.path != path or remaining[0] == 0:
            return None
        remaining[0] -= 1
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    fake.faults.append(fault)


def test_a_create_whose_connection_was_refused_claims_nothing_and_is_sent_plainly_next(
    tmp_path, fake, sleeps
):
    """Nothing was sent, so nothing can have been made: no `creating` mark is kept
    (explain would say a create was sent), and the retry creates without looking."""
    from idprov.provisioning.explain import explain

    refuse_connections(fake, "POST", "/v2/Users", times=3)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        [op] = result.outbound.idps["target"].operations
        assert op.outcome == "failed" and op.attempts == 3 and "Connection refused" in op.error
        assert ledger_entry(svc, result.entity) is None
        explained = explain(svc, "alice", "target")
        assert explained["ledger"] is None and explained["decision"]["action"] == "create"
        assert [r["status"] for r in explained["outbox"]] == ["failed"]
        fake.requests.clear()
        assert svc.retry_outbox().ok
        assert fake.requests == [("POST", "/v2/Users")]  # no look-up first
        entry = ledger_entry(svc, result.entity)
        assert entry.remote_id in fake.users and entry.created_by_idprov
    assert len(fake.users) == 1


def test_a_create_that_timed_out_before_a_refused_connection_keeps_its_mark(tmp_path, fake, sleeps):
    """The first attempt's request went out (its reply timed out): it may have made the
    account, whatever the later attempts (look-ups) met, so the retry looks first."""
    fake.timeout("POST", after_apply=True)
    refuse_connections(fake, "GET", "/v2/Users", times=2)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        [op] = result.outbound.idps["target"].operations
        assert op.outcome == "failed" and "Connection refused" in op.error
        assert ledger_entry(svc, result.entity).state == "creating"
        fake.requests.clear()
        assert svc.retry_outbox().ok
        assert fake.requests[0] == ("GET", "/v2/Users")  # looked first, and adopted
        assert ("POST", "/v2/Users") not in fake.requests
        assert ledger_entry(svc, result.entity).created_by_idprov
    assert len(fake.users) == 1


def test_a_group_create_whose_connection_was_refused_is_looked_up_before_it_is_sent_again(
    tmp_path, fake, sleeps
):
    """A group's create can be several requests (a POST, then its other members): the
    last one's refusal proves nothing about the first, so its mark stays, whatever
    the connector (see the next tests); the retry looks first, and makes one group."""
    refuse_connections(fake, "POST", "/v2/Groups", times=3)
    with service(tmp_path, fake, sleeps) as svc:
        role = svc.add_role("staff")
        [op] = role.outbound.idps["target"].operations
        assert op.outcome == "failed" and "Connection refused" in op.error
        assert svc.state.ledger.get("target", "role", role.entity.id).state == "creating"
        fake.requests.clear()
        assert svc.retry_outbox().ok
        assert fake.requests == [("GET", "/v2/Groups"), ("POST", "/v2/Groups")]
    assert len(fake.groups) == 1


def test_bulk_items_whose_outcome_is_unknown_keep_their_marks_after_a_refused_retry(
    tmp_path, sleeps, monkeypatch
):
    """A Bulk reply that says 500 for each item (maybe made), then single creates that
    cannot connect: each item's first outcome is still unknown, so its mark stays."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token", bulk_max_operations=100)
    names = [f"user{i:02d}" for i in range(12)]
    with service(tmp_path, fake, sleeps) as svc:
        users = users_left_unpushed(svc, monkeypatch, names)

        def every_item_500(request: httpx.Request) -> httpx.Response | None:
            if request.url.path != "/v2/Bulk":
                return None
            replies = [
                {"method": "POST", "bulkId": op["bulkId"], "status": "500"}
                for op in json.loads(request.content)["Operations"]
            ]
            body = {"schemas": [BULK_RESPONSE], "Operations": replies}
            return httpx.Response(200, json=body)

        fake.faults.append(every_item_500)
        refuse_connections(fake, "POST", "/v2/Users", times=len(names) * 3)
        report = svc.retry_outbox()
        assert report.idps["target"].count("failed") == 12
        assert ("POST", "/v2/Bulk") in fake.requests
        assert [ledger_entry(svc, u).state for u in users] == ["creating"] * 12


def test_explain_after_a_refused_connection_says_nothing_was_sent(cli, tmp_path, monkeypatch):
    """As the trial ran it: the target's port is closed, `user add`, `explain`."""
    from tests.peers.scim2 import free_port

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    closed = f"http://127.0.0.1:{free_port()}/v2"
    (tmp_path / "idprov.yaml").write_text(
        make_config_text(tmp_path, idp_yaml("scim", closed), ["scim"])
    )
    assert cli("user", "add", "alice", "-c", "email=alice@example.com").exit_code == 6
    shown = cli("explain", "alice", "--idp", "scim").ok().stdout
    assert "ledger: never provisioned there" in shown and "a create" not in shown
    assert "outbox: failed" in shown and "Connection refused" in shown
    assert cli("explain", "alice", "--idp", "scim", "--json").json()["ledger"] is None


def test_a_create_that_timed_out_connecting_claims_nothing(tmp_path, fake, sleeps):
    """A connect timeout (a firewall that drops the packets) is before anything was
    sent, as a refused connection is: no mark, and the retry creates without looking."""

    remaining = [3]  # every attempt of the first push

    def connect_timeout(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST" or remaining[0] == 0:
            return None
        remaining[0] -= 1
        raise httpx.ConnectTimeout("timed out", request=request)

    fake.faults.append(connect_timeout)
    with service(tmp_path, fake, sleeps) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        [op] = result.outbound.idps["target"].operations
        assert op.outcome == "failed" and "timed out (ConnectTimeout)" in op.error
        assert ledger_entry(svc, result.entity) is None
        fake.requests.clear()
        assert svc.retry_outbox().ok
        assert fake.requests == [("POST", "/v2/Users")]


def test_a_bulk_split_in_several_requests_keeps_the_marks_when_a_later_one_fails(
    tmp_path, sleeps, monkeypatch
):
    """Twelve creates in Bulk requests of six: the first request made six users, the
    second could not connect. The six made are looked up, not created again (their
    marks went with the refusal, and the retry created them twice)."""
    import idprov.connectors.scim2 as scim2
    from idprov.connectors.scim_wire import bulk_batches

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token", bulk_max_operations=100)
    # one create_users call, split by size (maxPayloadSize) in requests of six
    monkeypatch.setattr(scim2, "bulk_batches", lambda bodies, ops, size: bulk_batches(bodies, 6, 0))
    names = [f"user{i:02d}" for i in range(12)]
    with service(tmp_path, fake, sleeps) as svc:
        users = users_left_unpushed(svc, monkeypatch, names)
        posts = [0]

        def second_refused(request: httpx.Request) -> httpx.Response | None:
            if request.url.path == "/v2/Bulk":
                posts[0] += 1
                if posts[0] >= 2:
                    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
            return None

        fake.faults.append(second_refused)
        svc.retry_outbox()
        assert len(fake.users) == 6
        assert all(ledger_entry(svc, u) is not None for u in users)
        fake.faults.clear()
        assert svc.retry_outbox().ok
    assert sorted(u["userName"] for u in fake.users.values()) == names


def test_a_group_made_whose_members_were_then_refused_keeps_its_mark(
    tmp_path, sleeps, fake, monkeypatch
):
    """A group create is a POST, then member changes past member_batch_size: a 400 on
    those leaves the group made. The retry looks it up and adopts it (its mark went,
    and the retry made a second group: displayName need not be unique)."""
    idp = idp_yaml("target", BASE).replace(
        "      auth: bearer", "      member_batch_size: 1\n      auth: bearer"
    )
    with make_service(
        tmp_path, idp, ["target"], http_transport=fake.transport(), sleep=sleeps.append
    ) as svc:
        with monkeypatch.context() as patched:  # a group made with both members at once
            patched.setattr(svc, "push_pending", lambda changes: [None] * len(changes))
            svc.add_user("alice", {"email": "a@example.com"})
            svc.add_user("bob", {"email": "b@example.com"})
            role = svc.add_role("staff").entity
            svc.assign("staff", ["alice", "bob"])
        held_by_the_dead(svc)
        fake.fail("PATCH", 400)  # the members past the first are refused
        assert not svc.retry_outbox().ok
        assert len(fake.groups) == 1
        assert svc.state.ledger.get("target", "role", role.id) is not None
        assert svc.retry_outbox().ok
    assert len(fake.groups) == 1


def test_a_delete_that_fails_leaving_its_groups_counts_every_attempt(tmp_path, fake, sleeps):
    """A deprovisioned user leaves its groups first, in one request per group for all
    its leavers; when that request fails, the user's row failed on those attempts (it
    showed `attempts 0` in `outbox list` after failing drain after drain)."""
    with service(tmp_path, fake, sleeps) as svc:
        svc.add_role("staff")
        svc.add_user("alice", {"email": "a@example.com"}, roles=["staff"])
        svc.add_user("bob", {"email": "b@example.com"}, roles=["staff"])
        fake.fail("PATCH", 503, times=100)
        result = svc.delete_user("alice")
        deleted = [op for op in result.outbound.idps["target"].operations if op.kind == "user"]
        assert [(op.outcome, op.attempts) for op in deleted] == [("failed", 3)]
        [row] = svc.state.outbox.rows(local_ids=[result.entity.id])
        assert (row.status, row.attempts) == ("failed", 3)
        assert not svc.retry_outbox().ok
        [row] = svc.state.outbox.rows(local_ids=[result.entity.id])
        assert row.attempts == 6
        log = svc.audit_log(AuditQuery(action="outbound.delete", target="alice", limit=100))
        assert [e.details["status"] for e in log] == [503] * 6
        fake.faults.clear()
        assert svc.retry_outbox().ok
    assert sorted(u["userName"] for u in fake.users.values()) == ["bob"]
