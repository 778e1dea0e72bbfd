"""Change apart from push: the unit of work, the outbox worker, non-blocking IdPs,
orphaned rows, plugin failures, and no database lock held while a target answers."""

from __future__ import annotations

import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from idprov.config import load_text
from idprov.connectors import registry
from idprov.connectors.scim2 import Scim2Connector
from idprov.db import now
from idprov.provisioning.service import IdentityService
from idprov.provisioning.state import AuditQuery
from tests.outbound_helpers import FakeScim, idp_yaml, make_config_text, make_service
from tests.waiting import wait_until

BASE = "https://scim.example.com/scim/v2"


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScim:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    return FakeScim("secret-token")


def service(tmp_path: Path, fake: FakeScim, idps: str, app_idps: list[str], **kw: Any):
    return make_service(
        tmp_path, idps, app_idps, http_transport=fake.transport(), sleep=lambda s: None, **kw
    )


# ---------------------------------------------------------------- one unit of work
def test_several_changes_commit_together_and_are_pushed_once(tmp_path, fake):
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        with svc.unit_of_work() as uow:
            uow.add_role("staff")
            uow.add_user("alice", {"email": "alice@example.com"}, roles=["staff"])
            uow.update_user("alice", {"title": "Lead"})
            assert fake.requests == [], "nothing goes out before the commit"
        assert uow.outbound is not None and uow.outbound.ok
        posts = [r for r in fake.requests if r[0] == "POST"]
        assert posts == [("POST", "/scim/v2/Users"), ("POST", "/scim/v2/Groups")]
        [remote] = fake.users.values()
        assert remote["title"] == "Lead"
        assert svc.outbox_rows() == []


def test_a_change_is_claimed_in_its_own_transaction_so_a_worker_cannot_push_it_too(tmp_path, fake):
    """What `idprov serve` does: commit on one thread, push on another. A worker that
    runs in between (another process's, say) leaves the change to its push."""
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        with svc.unit_of_work(push=False, claim=True) as uow:
            uow.add_user("alice", {"email": "alice@example.com"})
        pending = uow.pending()
        with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as other:
            meanwhile = other.outbound.work(once=True, eager=True)
        assert meanwhile.idps == {} and fake.requests == []
        [report] = svc.push_pending([pending])
        assert report is not None and report.ok
        assert [r for r in fake.requests if r[0] != "GET"] == [("POST", "/scim/v2/Users")]
        assert svc.outbox_rows() == []


def test_a_second_change_while_the_first_is_being_pushed_is_pushed_after_it(tmp_path, fake):
    """Two requests change one user; the first's push has not finished when the second
    commits. The second leaves the row to the first's drainer, and nothing is lost:
    the row stays (its version moved) and the next drain sends the second change."""
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        svc.add_user("alice", {"email": "alice@example.com", "title": "Dev"})
        with svc.unit_of_work(push=False, claim=True) as first:
            first.update_user("alice", {"title": "Lead"})
        with svc.unit_of_work(push=False, claim=True) as second:
            second.update_user("alice", {"title": "Head"})
        one, two = first.pending(), second.pending()
        [late] = svc.push_pending([two])
        assert late is not None and late.queued == {"target": 1}  # the first holds it
        svc.push_pending([one])
        [remote] = fake.users.values()
        assert remote["title"] == "Head"  # the first push read the user as it is now
        assert [r.status for r in svc.outbox_rows()] == []


@pytest.mark.parametrize("relayed", [False, True], ids=["serve", "serve-workers"])
@pytest.mark.parametrize("first", ["add", "remove"])
def test_concurrent_requests_sharing_a_group_both_go_out_and_none_is_left_claimed(
    tmp_path, fake, relayed: bool, first: str
):
    """What `idprov serve` does with two concurrent requests that touch one group:
    both commit on the writer thread (each claims its rows under a name of its own),
    then each is pushed by another pusher thread's service (`--workers`: under names
    of the outbox worker's relay). One adds alice to staff; the other deactivates
    carol and removes her from it, and meets the group row the first holds. Both
    pushes used to see the other's claims as another drainer's part of a change,
    send nothing, say nothing (the access log said outbound=ok) and leave the rows
    claimed until their lease ended 5 minutes later. Now what one leaves is queued
    in its report and sent by the other push, in either order: nothing is left."""
    idps = idp_yaml("target", BASE)
    with (
        service(tmp_path, fake, idps, ["target"]) as writer,
        service(tmp_path, fake, idps, ["target"]) as pusher_a,
        service(tmp_path, fake, idps, ["target"]) as pusher_b,
    ):
        writer.add_role("staff")
        for name in ("alice", "bob", "carol"):
            writer.add_user(name, {"email": f"{name}@example.com"})
        writer.assign("staff", ["bob", "carol"])
        if relayed:
            names = iter(range(1, 10))
            relay = f"{socket.gethostname()}:{os.getpid()}:relay-0badc0de"  # this process
            writer.outbound.pushed_by = lambda: f"{relay}.{os.getpid()}-{next(names)}"
        with writer.unit_of_work(push=False, claim=True) as add:
            add.assign("staff", ["alice"])
        with writer.unit_of_work(push=False, claim=True) as remove:
            remove.update_user("carol", {"active": "false"})
            remove.unassign("staff", ["carol"])
        assert {r.claimed_by for r in writer.outbox_rows()} == {add.claimed_by, remove.claimed_by}
        changes = {"add": (pusher_a, add.pending()), "remove": (pusher_b, remove.pending())}
        order = ["add", "remove"] if first == "add" else ["remove", "add"]
        reports = {}
        for name in order:
            pusher, pending = changes[name]
            [reports[name]] = pusher.push_pending([pending])
        assert writer.outbox_rows() == []  # nothing left claimed, nothing left at all
        [staff] = fake.groups.values()
        ids = {u["userName"]: i for i, u in fake.users.items()}
        assert sorted(m["value"] for m in staff["members"]) == sorted([ids["alice"], ids["bob"]])
        assert fake.users[ids["carol"]]["active"] is False
        early, late = reports[order[0]], reports[order[1]]
        assert early is not None and late is not None
        assert early.failed == late.failed == 0 and not early.leased and not late.leased
        assert early.queued == {"target": 1}  # the group: the other push sends it
        assert late.queued == {}
        sent = [
            (r.kind, r.label)
            for i in late.idps.values()
            for r in i.operations
            if r.outcome == "done"
        ]
        assert ("role", "staff") in sent


def test_a_change_in_the_same_millisecond_as_the_one_being_pushed_is_not_lost(
    tmp_path, fake, monkeypatch
):
    import idprov.provisioning.outbox as outbox

    monkeypatch.setattr(outbox, "now", lambda: "2026-11-30T09:00:00.000Z")
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        with svc.unit_of_work(push=False) as uow:
            uow.add_user("alice", {"email": "alice@example.com"})
        [read] = svc.state.outbox.rows(uow.rows)  # a drainer read the row, then ...
        with svc.unit_of_work(push=False) as later:  # ... a change in the same millisecond
            later.update_user("alice", {"title": "Lead"})
        with svc.state.transaction():
            svc.state.outbox.done(read)  # the first push finished
        assert [r.status for r in svc.outbox_rows()] == ["pending"]


def test_a_change_left_unclaimed_is_taken_by_whoever_drains_first(tmp_path, fake):
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        with svc.unit_of_work(push=False) as uow:  # no claim: `import --no-push`
            uow.add_user("alice", {"email": "alice@example.com"})
        assert [r.claimed_by for r in svc.outbox_rows()] == [None]
        assert svc.outbound.work(once=True).ok
        assert [r for r in fake.requests if r[0] != "GET"] == [("POST", "/scim/v2/Users")]


def test_rows_of_a_killed_drainer_its_parent_has_not_collected_are_taken_over(tmp_path, fake):
    """kill -9 leaves a zombie until the parent collects it (a process reparented to
    init waits longer). A re-run at once must push the rows it held, not wait for
    their 5-minute lease (`outbox retry` said "nothing to provision")."""
    import socket

    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        with svc.unit_of_work(push=False) as uow:
            uow.add_user("alice", {"email": "alice@example.com"})
        killed = os.fork()
        if killed == 0:  # the drainer: gone at once, not collected yet
            os._exit(0)
        try:
            stat = Path(f"/proc/{killed}/stat")
            assert wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")
            with svc.state.transaction():
                ids = [r.id for r in svc.outbox_rows()]
                svc.state.outbox.claim_ids(ids, f"{socket.gethostname()}:{killed}:x.1", 300)
            assert svc.outbound.retry().ok  # `idprov outbox retry`
        finally:
            os.waitpid(killed, 0)
        assert svc.outbox_rows() == []
        assert [r for r in fake.requests if r[0] != "GET"] == [("POST", "/scim/v2/Users")]


def test_a_failed_unit_of_work_changes_nothing_and_sends_nothing(tmp_path, fake):
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        with pytest.raises(Exception, match="no role"):
            with svc.unit_of_work() as uow:
                uow.add_user("alice", {"email": "alice@example.com"})
                uow.assign("nosuchrole", ["alice"])
        assert svc.list_users(_query()).total == 0
        assert svc.outbox_rows() == [] and fake.requests == []
        assert svc.audit_log(AuditQuery(action="user.add")) == []


def _query() -> Any:
    from idprov.model import UserQuery

    return UserQuery(limit=None)


# ---------------------------------------------------------------- plugin failures
class BuggyConnector(Scim2Connector):
    """A third-party connector with a bug: every create raises KeyError."""

    name = "buggy"

    def create_user(self, account: Any) -> str:
        raise KeyError("department")


@pytest.fixture()
def buggy_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = dict(registry._entry_points())
    eps["buggy"] = EntryPoint("buggy", f"{__name__}:BuggyConnector", registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    registry.load.cache_clear()
    yield
    registry.load.cache_clear()


def test_a_plugin_exception_fails_its_row_and_every_other_result_is_recorded(
    tmp_path, fake, buggy_plugin
):
    idps = idp_yaml("good", BASE) + idp_yaml("bad", BASE, connector="buggy")
    with service(tmp_path, fake, idps, ["good", "bad"]) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        report = result.outbound
        [good] = report.idps["good"].operations
        [bad] = report.idps["bad"].operations
        assert good.outcome == "done" and good.remote_id in fake.users
        assert bad.outcome == "failed" and "KeyError: 'department'" in bad.error
        assert "a bug in the connector buggy" in bad.error and "not in idprov" in bad.error
        user = svc.get_user("alice")
        entry = svc.state.ledger.get("good", "user", user.id)
        assert entry.state == "active" and entry.remote_id == good.remote_id
        [row] = svc.outbox_rows()
        assert (row.idp, row.status, row.last_error) == ("bad", "failed", bad.error)


def test_the_cli_reports_a_plugin_failure_as_an_outbound_failure_not_a_bug(
    tmp_path, fake, buggy_plugin, cli
):
    config = tmp_path / "idprov.yaml"
    idps = idp_yaml("bad", BASE, connector="buggy")
    config.write_text(make_config_text(tmp_path, idps, ["bad"]))
    # the CLI cannot take an injected transport: the buggy create never sends anything
    result = cli("--config", str(config), "user", "add", "alice")
    assert result.exit_code == 6, result
    output = result.stdout + result.stderr
    assert "KeyError: 'department'" in output and "a bug in the connector buggy" in output
    assert "internal error" not in output and "bug in idprov" not in output


# ---------------------------------------------------------------- non-blocking IdPs
def test_a_non_blocking_idp_is_left_to_the_worker_when_not_waiting(tmp_path, fake):
    idps = idp_yaml("sync", BASE) + idp_yaml("later", BASE, extra="    blocking: false")
    with service(tmp_path, fake, idps, ["sync", "later"], wait="blocking") as svc:
        report = svc.add_user("alice", {"email": "alice@example.com"}).outbound
        assert report.idps["sync"].count("done") == 1
        assert "later" not in report.idps and report.queued == {"later": 1}
        assert [(r.idp, r.status) for r in svc.outbox_rows()] == [("later", "pending")]
        drained = svc.outbound.work(once=True)
        assert drained.idps["later"].count("done") == 1
        assert svc.outbox_rows() == []


def test_a_push_takes_up_left_pending_rows_only_at_the_idps_it_pushes_to(tmp_path, fake):
    """Rows a stopped command left pending are pushed by the next change's push, at
    the IdPs it pushes to; a non-blocking IdP's are the worker's: a backlog there is
    not read and judged again by every request of `idprov serve`."""
    idps = idp_yaml("sync", BASE) + idp_yaml("later", BASE, extra="    blocking: false")
    with service(tmp_path, fake, idps, ["sync", "later"], wait="blocking") as svc:
        with svc.unit_of_work(push=False) as uow:
            for name in ("ann", "ben", "cat"):
                uow.add_user(name, {"email": f"{name}@example.com"})
        svc.state.db.execute("UPDATE outbox SET updated_at = '2000-01-01T00:00:00.000Z'")
        report = svc.add_user("dave", {"email": "dave@example.com"}).outbound
        assert report.idps["sync"].count("done") == 4  # the leftovers went along
        assert report.queued == {"later": 1}  # dave's row only
        left = sorted((r.idp, r.label) for r in svc.outbox_rows())
        assert left == [("later", n) for n in ("ann", "ben", "cat", "dave")]


def test_the_cli_waits_for_non_blocking_idps_unless_no_wait(
    tmp_path, cli, monkeypatch, scim2_server
):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    config = tmp_path / "idprov.yaml"
    idps = idp_yaml("later", scim2_server.base_url, extra="    blocking: false")
    config.write_text(make_config_text(tmp_path, idps, ["later"]))
    base = ("--config", str(config))
    waited = cli(*base, "user", "add", "alice", "--json").json()
    assert waited["outbound"]["idps"][0]["done"] == 1
    queued = cli(*base, "--no-wait", "user", "add", "bob", "--json").json()
    assert queued["outbound"]["queued"] == {"later": 1}
    listed = cli(*base, "outbox", "list", "--json").items()
    assert [r["label"] for r in listed] == ["bob"]
    worked = cli(*base, "outbox", "work", "--once", "--json").json()
    assert worked["idps"][0]["done"] == 1
    assert cli(*base, "outbox", "list", "--json").items() == []
    assert sorted(u["userName"] for u in scim2_server.users()) == ["alice", "bob"]


# ---------------------------------------------------------------- the worker
def test_the_worker_retries_a_failed_row_when_its_time_comes(tmp_path, fake):
    extra = "    retry: {max_attempts: 1, row_initial_backoff: 0.05, row_max_backoff: 0.05}"
    idps = idp_yaml("target", BASE).replace(
        "    retry: {max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}\n", extra + "\n"
    )
    with service(tmp_path, fake, idps, ["target"]) as svc:
        fake.fail("POST", 503, times=2)
        assert not svc.add_user("alice", {"email": "alice@example.com"}).outbound.ok
        [row] = svc.outbox_rows()
        assert row.status == "failed" and row.next_attempt_at is not None
        stop = threading.Event()
        # the worker gets its own service: a service is one thread's
        svc2 = IdentityService(svc.config, http_transport=fake.transport(), sleep=lambda s: None)
        worker = threading.Thread(target=lambda: svc2.outbound.work(stop=stop))
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while svc.outbox_rows() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
            svc2.close()
        assert svc.outbox_rows() == []
        assert len(fake.users) == 1
        assert [r[0] for r in fake.requests].count("POST") == 3


def test_an_idp_failing_everything_is_quarantined_and_shown(tmp_path, fake, cli):
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        fake.fail("POST", 503, times=100)
        svc.add_user("alice", {"email": "alice@example.com"})
        stamp = "2000-01-01T00:00:00.000Z"
        svc.state.db.execute("UPDATE idp_health SET failing_since = ?", [stamp])
        assert svc.idp_health()["target"].startswith("quarantined since 2000")
        # a quarantined IdP rests: the worker leaves it until row_max_backoff has passed
        assert svc.outbound.work(once=True).idps == {}
        # a manual retry is always tried, and one success ends the quarantine
        fake.faults.clear()
        assert svc.retry_outbox().ok
        assert svc.idp_health() == {}


def test_an_idp_is_failing_since_its_first_failure_after_its_last_success(tmp_path, fake):
    """bob's account is made, then his group's PATCH fails: the IdP has been failing
    since that failure (`idprov status` said so only from the second one, the drain's
    success having cleared it), and a retry that fails again keeps that start."""
    with service(tmp_path, fake, idp_yaml("target", BASE), ["target"]) as svc:
        svc.add_role("staff")
        svc.add_user("alice", {"email": "alice@example.com"}, roles=["staff"])
        fake.fail("PATCH", 503, times=100)
        before = now()
        result = svc.add_user("bob", {"email": "bob@example.com"}, roles=["staff"])
        ops = result.outbound.idps["target"].operations
        assert [(op.kind, op.outcome) for op in ops] == [("user", "done"), ("role", "failed")]
        first = svc.state.outbox.health()["target"]
        assert first.failing_since is not None and first.failing_since >= before
        assert first.last_success_at is not None and first.last_success_at <= first.failing_since
        assert svc.idp_health()["target"] == (
            f"failing since {first.failing_since}: {first.last_error}"
        )
        assert not svc.retry_outbox().ok
        again = svc.state.outbox.health()["target"]
        assert again.failing_since == first.failing_since
        assert again.last_failure_at is not None and again.last_failure_at > first.failing_since
        fake.faults.clear()
        assert svc.retry_outbox().ok and svc.idp_health() == {}


# ---------------------------------------------------------------- orphaned rows
def test_rows_of_a_removed_idp_are_orphaned_skipped_and_can_be_discarded(tmp_path, fake, cli):
    with service(tmp_path, fake, idp_yaml("old", BASE), ["old"]) as svc:
        fake.fail("POST", 400)
        svc.add_user("alice", {"email": "alice@example.com"})
        assert [r.idp for r in svc.outbox_rows()] == ["old"]
    config = tmp_path / "idprov.yaml"
    config.write_text(make_config_text(tmp_path, "", []).replace("identity_providers:", ""))
    base = ("--config", str(config))
    retried = cli(*base, "outbox", "retry").ok()
    assert "identity provider 'old', which is not in the configuration" in retried.stderr
    assert "orphaned" in cli(*base, "outbox", "list").ok().stdout
    cli(*base, "sync").ok()
    discarded = cli(*base, "outbox", "discard", "--idp", "old", "--yes").ok()
    assert "discarded 1 outbox row(s): alice" in discarded.stdout
    assert cli(*base, "outbox", "list", "--json").items() == []
    log = cli(*base, "log", "--action", "outbox.discard", "--json").items()
    assert log[0]["target"] == "old" and log[0]["details"] == {"rows": ["alice"]}


# ---------------------------------------------------------------- no lock across the network
class _HeldTarget(http.server.ThreadingHTTPServer):
    """A SCIM target that holds every POST until the test releases it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HeldHandler)
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.requests: list[str] = []


class _HeldHandler(http.server.BaseHTTPRequestHandler):
    server: _HeldTarget

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append(f"GET {self.path}")
        self._reply(200, {"Resources": [], "totalResults": 0})

    def do_POST(self) -> None:  # noqa: N802
        self.server.requests.append(f"POST {self.path}")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.arrived.set()
        self.server.release.wait(60)
        self._reply(201, {**body, "id": "r-" + body["userName"]})

    def _reply(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:
            pass  # the client was killed while its request was held

    def log_message(self, *args: Any) -> None:
        pass


def test_no_database_lock_is_held_while_a_push_waits_on_a_target(tmp_path):
    target = _HeldTarget()
    threading.Thread(target=target.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{target.server_address[1]}/v2"
    config = tmp_path / "idprov.yaml"
    idp = f"""
  - name: slow
    connector: scim2
    options: {{base_url: "{url}", auth: none, timeout: 120}}"""
    text = make_config_text(tmp_path, idp, ["slow"])
    config.write_text(text + "  - name: offline\n    identity_providers: []\n")
    env = {**os.environ, "IDPROV_CONFIG": str(config)}
    idprov = [sys.executable, "-m", "idprov"]
    subprocess.run([*idprov, "role", "add", "staff", "--app", "offline"], env=env, check=True)
    pushing = subprocess.Popen([*idprov, "user", "add", "alice"], env=env)
    try:
        assert target.arrived.wait(30), "the first command's push reached the target"
        start = time.monotonic()
        other = subprocess.run(
            [*idprov, "user", "add", "bob", "--app", "offline", "--role", "staff"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        seconds = time.monotonic() - start
        assert other.returncode == 0, other.stderr
        # the push is still held at the target: the second command did not wait for it
        assert pushing.poll() is None and not target.release.is_set()
        print(f"user add while another process pushes: {seconds:.2f}s")
    finally:
        target.release.set()
        assert pushing.wait(60) == 0
        target.shutdown()
        target.server_close()
    check = IdentityService(load_text(config.read_text(), str(config)))
    with check:
        assert {u.username for u in check.list_users(_query()).items} == {"alice", "bob"}
        assert check.state.ledger.get("slow", "user", check.get_user("alice").id).remote_id == (
            "r-alice"
        )


# ---------------------------------------------------------------- kill -9, then re-run
def test_serve_killed_while_a_push_waits_pushes_the_change_once_started_again(tmp_path):
    """kill -9 of `idprov serve` while a request's push waits on its target: the
    change was committed and claimed for that push; started again, the server's
    worker takes over the dead server's claim at once, looks before creating (the
    create's outcome is unknown), creates, and the outbox empties."""
    target = _HeldTarget()
    threading.Thread(target=target.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{target.server_address[1]}/v2"
    config = tmp_path / "idprov.yaml"
    config.write_text(
        f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: slow
    connector: scim2
    options: {{base_url: "{url}", auth: none, timeout: 120, bulk: never}}
applications:
  - name: crm
    identity_providers: [slow]
    inbound_token: env:CRM_TOKEN
"""
    )
    env = {**os.environ, "IDPROV_CONFIG": str(config), "CRM_TOKEN": "crm-token-0123456789"}
    serve = [sys.executable, "-m", "idprov", "serve", "--port", "0"]
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"}
    headers = {"Authorization": "Bearer crm-token-0123456789"}
    first = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        base = first.stdout.readline().split(" at ", 1)[1].split(" ", 1)[0]
        waiting = threading.Thread(
            target=lambda: _quietly(lambda: httpx_post(f"{base}/Users", body, headers)),
            daemon=True,
        )
        waiting.start()
        assert target.arrived.wait(30), "the request's push reached the target"
    finally:
        first.kill()
        first.communicate(timeout=30)
    target.release.set()  # the held create is answered to no one
    second = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL)
    try:
        state = sqlite3.connect(tmp_path / "data" / "idprov.db")
        deadline = time.monotonic() + 60
        while state.execute("SELECT count(*) FROM outbox").fetchone()[0]:
            assert time.monotonic() < deadline, "the restarted server did not push the change"
            time.sleep(0.05)
        [(remote_id,)] = state.execute("SELECT remote_id FROM ledger WHERE idp = 'slow'")
        state.close()
    finally:
        second.terminate()
        second.wait(30)
    assert remote_id == "r-alice"
    # the unanswered create, then a look (nothing there: this target keeps nothing),
    # then the create again; never a second create without the look
    asked = [r.split("?", 1)[0] for r in target.requests]
    assert asked == ["POST /v2/Users", "GET /v2/Users", "POST /v2/Users"]


def httpx_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    import httpx

    httpx.post(url, json=body, headers=headers, timeout=120)


def _quietly(call: Callable[[], None]) -> None:
    """Run ``call``; the error of a connection the test cuts is expected."""
    try:
        call()
    except Exception:
        pass


@pytest.mark.parametrize("held", [15, 35], ids=["a-middle-batch", "the-last-batch"])
def test_an_import_killed_while_a_create_is_unanswered_reruns_to_exactly_one_account_each(
    tmp_path, held
):
    """kill -9 of `idprov import users` while the target has applied a create whose
    reply never came, at a target that does not refuse duplicate userNames: the
    re-run ends with every user provisioned exactly once, the unanswered one adopted
    by its externalId, and nothing left in the outbox. In the last batch, every line
    is committed already: the re-run has nothing to import, and still pushes."""
    import signal

    from tests.peers.loose_scim import LooseScim

    target = LooseScim().start()
    try:
        config = tmp_path / "idprov.yaml"
        idp = f"""
  - name: loose
    connector: scim2
    options: {{base_url: "{target.base_url}", auth: none, timeout: 120}}
    max_concurrency: 1"""
        config.write_text(make_config_text(tmp_path, idp, ["loose"]))
        names = [f"user{i:02d}" for i in range(40)]
        csv = tmp_path / "people.csv"
        csv.write_text("username,email\n" + "".join(f"{n},{n}@example.com\n" for n in names))
        env = {**os.environ, "IDPROV_CONFIG": str(config)}
        command = [
            sys.executable,
            "-m",
            "idprov",
            "import",
            "users",
            str(csv),
            "--batch-size",
            "10",
        ]
        target.hold_post(held)
        killed = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        assert target.held.wait(60), f"create number {held} reached the target"
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        target.release()
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert target.user_names() == names, "each user exactly once at the target"
        with IdentityService(load_text(config.read_text(), str(config))) as check:
            assert check.outbox_rows() == []
            local = check.list_users(_query()).items
            assert sorted(u.username for u in local) == names
            remote = {u["externalId"]: u["id"] for u in target.users.values()}
            for user in local:
                entry = check.state.ledger.get("loose", "user", user.id)
                assert entry.remote_id == remote[user.id] and entry.created_by_idprov
    finally:
        target.stop()


def test_a_running_outbox_worker_waits_for_a_state_database_that_went_away(
    cli, monkeypatch, data_dir
):
    """`idprov outbox work` (a service's worker) exited 1 when its state database
    could not be reached for a moment; like serve's worker it says so in one line and
    starts again after a pause."""
    from idprov.errors import StoreError
    from idprov.provisioning.outbound import Outbound
    from idprov.provisioning.results import OutboundReport

    calls: list[int] = []

    def work(self, idps=None, *, once=False, eager=False, stop=None, progress=None):
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("the state database cannot be reached", hint="is it running?")
        assert stop is not None
        stop.set()  # as SIGTERM does
        return OutboundReport()

    monkeypatch.setattr(Outbound, "work", work)
    run = cli("outbox", "work")
    assert run.exit_code == 0 and len(calls) == 2
    assert (
        "the outbox worker cannot go on for now: the state database cannot be reached (is it"
        " running?); it keeps running and tries again in 1 s" in run.stderr
    )
    assert "stopped" not in run.stderr  # it did not: it waited, and went on
    assert "Traceback" not in run.stderr


def test_outbox_list_of_a_status_with_none_says_what_else_waits(cli, tmp_path, monkeypatch):
    """`outbox list --status held` with failed rows in the outbox said "the outbox is
    empty: everything has been provisioned"."""
    monkeypatch.setenv("SCIM_TOKEN", "t")
    config = tmp_path / "idprov.yaml"
    idps = idp_yaml("down", "http://127.0.0.1:9/v2")
    config.write_text(make_config_text(tmp_path, idps, ["down"]))
    assert cli("--config", str(config), "user", "add", "alice").exit_code == 6  # failed row
    held = cli("--config", str(config), "outbox", "list", "--status", "held")
    assert held.exit_code == 0
    said = held.stdout + held.stderr
    assert "no held rows; the outbox holds 1 other rows" in said and "is empty" not in said
