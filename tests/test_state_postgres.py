"""idprov's state in PostgreSQL (``state: {url: ...}``), shared by several processes.

Against the ``postgres`` fixture's private cluster and a real SCIM 2.0 target
(scim2-server on loopback): commands write their records there; outbox workers in
several processes drain one outbox with no row pushed twice and none lost, also
when one of them is killed with SIGKILL mid-drain; the run lock of sync is an
advisory lock; faults (unreachable, wrong password, a connection cut mid-batch) are
reported by host, never with the password, and leave nothing half-written.
The state-store contract itself (both backends) is tests/test_state_contract.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from idprov.config import load_config, load_text
from idprov.provisioning.service import IdentityService
from tests.peers.postgres import Database, free_port

WORKER = """
import json, sys
from idprov.config import load_config, load_text
from idprov.provisioning.service import IdentityService
with IdentityService(load_config(sys.argv[1]), actor="worker") as svc:
    svc.outbound.batch = int(sys.argv[2])
    report = svc.outbound.work(once=True)
done = [op.label for r in report.idps.values() for op in r.operations if op.outcome == "done"]
print(json.dumps(done))
"""

STALLING_WORKER = """
import sys, threading, time
from pathlib import Path
import httpx
from idprov.config import load_config, load_text
from idprov.provisioning.service import IdentityService

class Stalling(httpx.HTTPTransport):
    '''Forwards requests; once the Nth create is answered, sends nothing more and
    never returns, and signals when every request already sent has its answer (so
    that the kill that follows leaves no reply in flight: what went out is known).'''
    creates = 0
    in_flight = 0
    stalled = False
    lock = threading.Lock()

    def handle_request(self, request):
        with self.lock:
            stop = Stalling.stalled
            Stalling.in_flight += not stop
        if stop:
            time.sleep(3600)
        response = super().handle_request(request)
        response.read()
        with self.lock:
            Stalling.in_flight -= 1
            Stalling.creates += request.method == "POST"
            Stalling.stalled = Stalling.stalled or Stalling.creates >= int(sys.argv[2])
            stop = Stalling.stalled
        while stop:
            with self.lock:
                if Stalling.in_flight == 0:
                    Path(sys.argv[3]).write_text("stalled")
            time.sleep(0.01 if Stalling.in_flight else 3600)
        return response

with IdentityService(load_config(sys.argv[1]), http_transport=Stalling()) as svc:
    svc.outbound.lease = 1.0
    svc.outbound.work(once=True)
"""


def pg_keys(url: str, secret: Path, schema: str) -> str:
    return f"url: '{url}', password: 'file:{secret}', sslmode: disable, schema: {schema}"


def shared_config(
    database: Database,
    tmp_path: Path,
    target: Any = None,
    state_url: str | None = None,
    state_secret: Path | None = None,
) -> str:
    """Users and state in ``database`` (schemas ``directory`` and ``idprov``); a
    non-blocking SCIM IdP (``target``), so changes leave their rows to the workers."""
    secret = tmp_path / "pg-password"
    secret.write_text(database.password + "\n")
    state = pg_keys(state_url or database.url, state_secret or secret, "idprov")
    text = f"""version: 1
data_dir: {tmp_path / "data"}
state: {{{state}}}
userstores:
  - {{domain: PRIMARY, type: postgres, {pg_keys(database.url, secret, "directory")}}}
"""
    if target is not None:
        text += f"""identity_providers:
  - name: scim
    connector: scim2
    blocking: false
    max_concurrency: 4
    options: {{base_url: '{target.base_url}', auth: bearer, token: env:SCIM_TOKEN, bulk: never}}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
"""
    return text


@pytest.fixture
def shared(postgres, tmp_path, write_config):
    write_config(shared_config(postgres, tmp_path))
    return postgres


def add_users(config_path: Path, count: int) -> None:
    """``count`` users in one unit of work; their rows wait for a worker."""
    with IdentityService(load_config(str(config_path)), wait="blocking") as svc:
        with svc.unit_of_work() as uow:
            for i in range(count):
                uow.add_user(f"user{i:04d}", {"email": f"u{i}@example.com"})


def logged_creates(target: Any, users: int) -> Counter[int]:
    """``POST /Users`` by status, once the target's log shows a create for each of its
    ``users`` (the server writes a request's line just after its reply)."""
    deadline = time.monotonic() + 10
    while (found := Counter(target.statuses("POST", "/Users")))[201] < users:
        assert time.monotonic() < deadline, f"the log shows {found}"
        time.sleep(0.01)
    return found


def python(code: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    import idprov

    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(idprov.__file__).resolve().parents[1])
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, text=True, stdout=subprocess.PIPE, **popen
    )


# ---- commands on a shared state


def test_commands_write_their_records_to_the_database(cli, shared, tmp_path):
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "--role", "staff").ok()
    cli("role", "add", "Internal/auditors").ok()
    cli("role", "assign", "Internal/auditors", "alice").ok()
    token = cli("token", "create", "--app", "resident", "--json").json()
    actions = shared.rows("SELECT action, target FROM idprov.audit ORDER BY id")
    assert [a for a, _ in actions][:3] == ["role.add", "user.add", "role.add"]
    assert shared.rows("SELECT username FROM directory.users") == [("alice",)]
    assert shared.rows("SELECT name FROM idprov.internal_roles") == [("auditors",)]
    assert shared.rows("SELECT id FROM idprov.inbound_tokens") == [(token["id"],)]
    log = cli("log", "--json").items()
    assert {e["target"] for e in log} >= {"alice", "staff"}
    assert not (tmp_path / "data" / "idprov.db").exists(), "nothing in the SQLite default"


def test_the_sqlite_default_never_imports_psycopg(run_python, tmp_path):
    code = f"""
import sys
from idprov.config import load_text
from idprov.provisioning.service import IdentityService
with IdentityService(load_text("data_dir: {tmp_path / "d"}", "t.yaml")) as svc:
    svc.add_user("alice")
    print(svc.state.db.dialect, "psycopg" in sys.modules)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["sqlite", "False"]


def test_an_unreachable_state_database_is_named_by_host_without_the_password(
    cli, postgres, tmp_path, write_config
):
    port = free_port()
    down = postgres.url.replace(f":{postgres.port}/", f":{port}/")
    write_config(shared_config(postgres, tmp_path, state_url=down))
    run = cli("user", "add", "bob", "--json")
    error = run.error(1)
    assert error["message"].startswith(f"the state (PostgreSQL at 127.0.0.1:{port}/")
    assert "pg_hba.conf" in error["hint"]
    assert postgres.password not in run.stdout + run.stderr


def test_a_wrong_state_password_names_the_secret_not_the_password(
    cli, postgres, tmp_path, write_config
):
    wrong = tmp_path / "wrong-pw"
    wrong.write_text("not-the-password-4711\n")
    write_config(shared_config(postgres, tmp_path, state_secret=wrong))
    run = cli("user", "add", "bob", "--json")
    error = run.error(1)
    assert "the state" in error["message"] and "password authentication failed" in error["message"]
    assert f"file:{wrong}" in error["hint"] and "of state" in error["hint"]
    assert "not-the-password-4711" not in run.stdout + run.stderr


def test_a_connection_cut_mid_import_rolls_back_and_a_rerun_finishes_exactly(cli, shared, tmp_path):
    lines = [f"user{i:03d},u{i}@example.com" for i in range(30)]
    path = tmp_path / "users.csv"
    path.write_text("username,email\n" + "\n".join(lines) + "\n")
    cli("user", "list").ok()  # creates the directory's tables
    cli("log").ok()  # and the state's
    # The server ends the state's session while it records the second batch.
    shared.execute(
        "CREATE FUNCTION idprov.cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF strpos(NEW.details, 'user015') > 0 THEN"
        " PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$"
    )
    shared.execute(
        "CREATE TRIGGER cut BEFORE INSERT ON idprov.audit FOR EACH ROW"
        " EXECUTE FUNCTION idprov.cut()"
    )
    run = cli("import", "users", str(path), "--batch-size", "10", "--json")
    error = run.error(1)
    assert "the state" in error["message"] and "connection was lost" in error["message"]
    assert shared.rows("SELECT count(*) FROM directory.users") == [(10,)]
    assert shared.rows("SELECT lines_done FROM idprov.imports") == [(11,)]

    shared.execute("DROP TRIGGER cut ON idprov.audit")
    report = cli("import", "users", str(path), "--batch-size", "10", "--json").json()
    assert (report["created"], report["skipped_already_imported"]) == (20, 10)
    names = shared.rows("SELECT username FROM directory.users ORDER BY 1")
    assert [n for (n,) in names] == [f"user{i:03d}" for i in range(30)]
    imported = [
        json.loads(d)
        for (d,) in shared.rows("SELECT details FROM idprov.audit WHERE action = 'user.import'")
    ]
    assert sorted(n for d in imported for n in d["created"]) == [f"user{i:03d}" for i in range(30)]


# ---- the run lock


def test_sync_holds_an_advisory_lock_that_a_killed_holder_gives_back(cli, shared, tmp_path):
    holder = python(
        "import sys, time\n"
        "from idprov.config import load_config\n"
        "from idprov.provisioning.service import IdentityService\n"
        "svc = IdentityService(load_config(sys.argv[1]))\n"
        "with svc.state.run_lock('sync'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(3600)\n",
        str(tmp_path / "idprov.yaml"),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        error = cli("sync", "--json").error(8)
        assert f"pid {holder.pid}" in error["message"] and "another idprov sync" in error["message"]
    finally:
        holder.kill()  # SIGKILL: no cleanup in the holder
        holder.communicate()
    # The server ends the killed holder's session, and with it the lock.
    cli("sync", "--wait", "--json").ok()


# ---- several workers


def test_a_locked_claim_is_skipped_by_other_workers_not_waited_for(shared, tmp_path):
    config = tmp_path / "idprov.yaml"
    with (
        IdentityService(load_config(str(config))) as one,
        IdentityService(load_config(str(config))) as two,
    ):
        with one.state.transaction():
            one.state.outbox.enqueue(["a"], "user", "u1", "PRIMARY", "u1")
            one.state.outbox.enqueue(["a"], "user", "u2", "PRIMARY", "u2")
            one.state.outbox.enqueue(["a"], "user", "u3", "PRIMARY", "u3")
        with one.state.transaction():
            first = one.state.outbox.due(["a"], "w1", lease=60, limit=1)
            # w1's claim is not committed yet: w2 skips the locked row at once
            with two.state.transaction():
                second = two.state.outbox.due(["a"], "w2", lease=60, limit=1)
        with two.state.transaction():
            third = two.state.outbox.due(["a"], "w2", lease=60, limit=5)
    assert [r.local_id for r in first + second + third] == ["u1", "u2", "u3"]
    claims = shared.rows("SELECT local_id, claimed_by FROM idprov.outbox ORDER BY id")
    assert claims == [("u1", "w1"), ("u2", "w2"), ("u3", "w2")]


def test_a_closed_relay_connection_s_claims_are_given_back_by_prefix(shared, tmp_path):
    from tests.test_serve_push_relay import check_release_by_prefix

    with IdentityService(load_config(str(tmp_path / "idprov.yaml"))) as service:
        check_release_by_prefix(service)


@pytest.fixture
def drained(postgres, tmp_path, write_config, scim2_server, monkeypatch):
    """A shared state and directory, a scim2-server tenant as the IdP."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    return write_config(shared_config(postgres, tmp_path, scim2_server))


def test_workers_in_four_processes_push_every_row_once(drained, postgres, scim2_server):
    add_users(drained, 120)
    workers = [python(WORKER, str(drained), "5") for _ in range(4)]
    done: list[str] = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        done += json.loads(out)
    expected = [f"user{i:04d}" for i in range(120)]
    assert sorted(done) == expected, "each row pushed by exactly one worker"
    assert sorted(u["userName"] for u in scim2_server.users()) == expected
    assert logged_creates(scim2_server, 120) == {201: 120}
    assert postgres.rows("SELECT count(*) FROM idprov.outbox") == [(0,)]
    assert postgres.rows(
        "SELECT count(*) FROM idprov.ledger WHERE state = 'active' AND remote_id IS NOT NULL"
    ) == [(120,)]


def test_a_worker_killed_mid_drain_loses_nothing_and_pushes_nothing_twice(
    drained, postgres, scim2_server, tmp_path
):
    add_users(drained, 40)
    signal_file = tmp_path / "stalled"
    stalling = python(STALLING_WORKER, str(drained), "10", str(signal_file))
    try:
        deadline = time.monotonic() + 60
        while not signal_file.exists():
            assert stalling.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        stalling.send_signal(signal.SIGKILL)
        stalling.communicate()
    # Killed mid-drain: creates went out that it never recorded; its claims run out
    # after its 1 s lease.
    assert len(scim2_server.users()) >= 10
    assert postgres.rows("SELECT count(*) FROM idprov.outbox")[0][0] > 0
    while postgres.rows(
        "SELECT count(*) FROM idprov.outbox WHERE claimed_until > to_char(now() AT TIME ZONE"
        " 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    ) != [(0,)]:
        assert time.monotonic() < deadline + 30, "the killed worker's leases never ran out"
        time.sleep(0.05)
    finisher = python(WORKER, str(drained), "500")
    out, _ = finisher.communicate(timeout=120)
    assert finisher.returncode == 0
    expected = [f"user{i:04d}" for i in range(40)]
    assert sorted(u["userName"] for u in scim2_server.users()) == expected
    assert logged_creates(scim2_server, 40) == {201: 40}, "no create twice"
    assert postgres.rows("SELECT count(*) FROM idprov.outbox") == [(0,)]
    assert postgres.rows(
        "SELECT count(*) FROM idprov.ledger WHERE state = 'active' AND remote_id IS NOT NULL"
    ) == [(40,)]


# ---- a group pushed while its members' own pushes run elsewhere


@pytest.fixture
def staffed(postgres, tmp_path, write_config, scim2_server, monkeypatch):
    """A shared state and directory; a blocking scim2-server IdP scoped to ``staff``,
    whose group is there already."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    text = shared_config(postgres, tmp_path, scim2_server)
    path = write_config(text.replace("    blocking: false\n", "    provisioning_roles: [staff]\n"))
    with IdentityService(load_config(str(path))) as service:
        added = service.add_role("staff")
        assert added.outbound is not None and added.outbound.ok
    return path


def group_members(target: Any) -> list[str]:
    """The userNames of the members of the one group at ``target``."""
    names = {u["id"]: u["userName"] for u in target.users()}
    [group] = target.groups()
    return sorted(names[m["value"]] for m in group.get("members") or [])


def judged(service: IdentityService) -> None:
    """The first command's push has judged its change (the deletion guard clears its
    rows' marks before anything is sent): its rows carry no change left to judge, as
    while its create is under way. (Rows still marked, held by another drainer, are a
    change no guard judged whole, split between drainers: left to the worker.)"""
    service.state.db.execute("UPDATE outbox SET unjudged = 0")


def test_a_group_waits_for_a_member_whose_create_another_process_is_making(
    staffed, scim2_server, postgres
):
    """Two `user add --role staff` at once: ann's create is under way in the first
    command's push (its row claimed there) when the second pushes the group. The
    group's push waits for it, then goes out with both: the second command succeeds,
    and nothing is left for a retry or a sync (it failed, naming ann, until the next
    `outbox retry`)."""
    config = load_config(str(staffed))
    first = IdentityService(config, actor="first")
    # the first command is another process: its claims carry a running process's pid
    # (a change of this very process is not waited for: see _held_elsewhere)
    stand_in = subprocess.Popen(["sleep", "120"])
    first.outbound.owner = f"{socket.gethostname()}:{stand_in.pid}:first"
    with first.unit_of_work(push=False) as uow:
        uow.add_user("ann", {"email": "ann@example.com"}, roles=["staff"])
    [ann] = [r.id for r in first.outbox_rows() if r.kind == "user"]
    change = first.outbound.change_owner()  # as a command claims its change's rows
    with first.state.transaction():
        [held] = first.state.outbox.claim_ids([ann], change, 300)
        judged(first)
    waited: list[float] = []

    def meanwhile(seconds: float) -> None:
        """The second's push waiting: the first's push of ann finishes meanwhile."""
        waited.append(seconds)
        if len(waited) == 1:
            assert first.outbound.drain([held], claims=[change]).ok

    try:
        with first, IdentityService(config, actor="second", sleep=meanwhile) as second:
            added = second.add_user("bob", {"email": "bob@example.com"}, roles=["staff"])
    finally:
        stand_in.kill()
        stand_in.wait()
    assert added.outbound is not None and added.outbound.ok, added.outbound.to_dict()
    assert group_members(scim2_server) == ["ann", "bob"]
    assert waited, "the group's push waited for ann's"
    assert logged_creates(scim2_server, 2) == {201: 2}, "ann created once, by the first"
    assert postgres.rows("SELECT count(*) FROM idprov.outbox") == [(0,)]


def test_a_group_does_not_wait_for_a_member_this_very_process_holds(staffed, scim2_server):
    """In `idprov serve`, a change's push may be queued behind the one that would wait
    for it: a member claimed by this process is not waited for (two such waits filled
    both push slots for a minute); the group's row is left for its retry."""
    config = load_config(str(staffed))
    first = IdentityService(config, actor="first")
    with first.unit_of_work(push=False) as uow:
        uow.add_user("ann", {"email": "ann@example.com"}, roles=["staff"])
    [ann] = [r.id for r in first.outbox_rows() if r.kind == "user"]
    with first.state.transaction():  # as a command claims its change's rows
        first.state.outbox.claim_ids([ann], first.outbound.change_owner(), 300)
        judged(first)
    waited: list[float] = []
    with first, IdentityService(config, actor="second", sleep=waited.append) as second:
        added = second.add_user("bob", {"email": "bob@example.com"}, roles=["staff"])
    assert waited == []
    [refused] = [op for op in added.outbound.idps["scim"].operations if op.kind == "role"]
    assert "ann" in (refused.error or "")


def test_a_member_added_while_the_group_is_pushed_is_pushed_by_the_same_command(
    staffed, scim2_server, postgres
):
    """While one command pushes the group (its row claimed), another adds cy to the
    role: that command's push leaves the group's row to the one pushing it, which read
    the members before cy. Once done, it pushes the row again, so the group gets cy at
    once (both commands said ok, and cy waited for a worker, a retry or a sync)."""
    config = load_config(str(staffed))
    other = IdentityService(config, actor="other")
    during: list[Any] = []

    class Meanwhile(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if "/Groups" in request.url.path and not during:
                during.append(other.add_user("cy", {"email": "cy@example.com"}, roles=["staff"]))
            return super().handle_request(request)

    with other, IdentityService(config, actor="first", http_transport=Meanwhile()) as first:
        added = first.add_user("bob", {"email": "bob@example.com"}, roles=["staff"])
    [cy] = during
    assert cy.outbound is not None and cy.outbound.queued == {"scim": 1}  # the group's row
    assert added.outbound is not None and added.outbound.ok, added.outbound.to_dict()
    assert group_members(scim2_server) == ["bob", "cy"]
    assert postgres.rows("SELECT count(*) FROM idprov.outbox") == [(0,)]


def test_a_removal_another_command_allowed_is_not_held_by_the_push_that_pushes_it(
    postgres, tmp_path, write_config, scim2_server, monkeypatch
):
    """While one command pushes eng's group (its row claimed), another takes 10 members
    out of eng with --allow-deletes 10: its push leaves the group's row to the first,
    which pushes it again once done. That push judged it without the other's
    allowance, and held the 10 removals its operator had allowed (the group kept its
    members, the row stayed held until `idprov outbox release`)."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    text = shared_config(postgres, tmp_path, scim2_server).replace(
        "    blocking: false\n",
        "    provisioning_roles: [staff]\n    push_roles: all\n"
        "    deletion_guard: {memberships: {min_deletes: 5}}\n",
    )
    config = load_config(str(write_config(text)))
    names = [f"e{i:02d}" for i in range(12)]
    with IdentityService(config) as admin, admin.unit_of_work() as uow:
        uow.add_role("staff")
        uow.add_role("eng")
        for name in names:
            uow.add_user(name, {"email": f"{name}@example.com"}, roles=["staff", "eng"])
    [eng] = [g["id"] for g in scim2_server.groups() if g["displayName"] == "eng"]
    other = IdentityService(config, actor="other")
    other.allow_deletes = 10  # `role unassign eng ... --yes --allow-deletes 10`
    during: list[Any] = []

    class Meanwhile(httpx.HTTPTransport):
        """The other command runs while the first's request to eng's group is out."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith(f"/Groups/{eng}") and not during:
                during.append(other.unassign("eng", names[:10]))
            return super().handle_request(request)

    with other, IdentityService(config, actor="first", http_transport=Meanwhile()) as first:
        added = first.add_user("newbie", {"email": "n@example.com"}, roles=["staff", "eng"])
    [unassigned] = during
    assert unassigned.outbound is not None and unassigned.outbound.queued == {"scim": 1}
    assert added.outbound is not None and added.outbound.held == {}, added.outbound.to_dict()
    assert added.outbound.ok
    [group] = [g for g in scim2_server.groups() if g["id"] == eng]
    by_id = {u["id"]: u["userName"] for u in scim2_server.users()}
    assert sorted(by_id[m["value"]] for m in group["members"]) == ["e10", "e11", "newbie"]
    assert postgres.rows("SELECT count(*) FROM idprov.outbox") == [(0,)]


# ---- several `idprov serve` processes


@contextmanager
def two_servers(postgres: Database, tmp_path: Path) -> Iterator[tuple[Any, Any, list[Any]]]:
    """Two `idprov serve` on the users and state in ``postgres``, each with its own
    data directory (nothing shared on disk); their clients hold one token."""
    from tests.test_serve_scim import running

    text = shared_config(postgres, tmp_path)
    data = str(tmp_path / "data")
    configs = [load_text(text.replace(data, str(tmp_path / name)), "t") for name in "ab"]
    with IdentityService(configs[0]) as admin:
        token = admin.create_token("resident", "both servers").token
    with running(configs[0]) as one, running(configs[1]) as two:
        yield one.as_token(token), two.as_token(token), configs


def new_alice(client: Any, **attributes: Any) -> str:
    """Create alice through ``client``; her id."""
    from tests.test_serve_scim import SCIM_JSON

    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"}
    created = client.post("/Users", json={**body, **attributes}, headers=SCIM_JSON)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_two_servers_share_tokens_users_and_external_ids(postgres, tmp_path):
    with two_servers(postgres, tmp_path) as (a, b, configs):
        alice = new_alice(a, externalId="hr-4711")
        found = b.get("/Users", params={"filter": 'externalId eq "hr-4711"'}).json()
        assert [u["userName"] for u in found["Resources"]] == ["alice"]
        assert b.get(f"/Users/{alice}").json()["externalId"] == "hr-4711"
        with IdentityService(configs[1]) as admin:
            admin.revoke_token(admin.tokens.all()[0].id)
        assert a.get("/Users").status_code == 401 and b.get("/Users").status_code == 401


def test_two_servers_on_one_postgresql_store_never_lose_a_raced_patch(
    postgres, tmp_path, monkeypatch
):
    from tests.test_serve_scim import a_patch_raced_by_b_keeps_both

    with two_servers(postgres, tmp_path) as (a, b, _):
        alice = new_alice(a, title="Dev", displayName="Alice")
        a_patch_raced_by_b_keeps_both(a, b, alice, monkeypatch)


# ---- configuration


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ("url: mysql://u@h/db", "url", "postgresql://USER@HOST"),
        ("url: 'postgresql://u:hunter2@h/db'", "url", "secret reference of its own"),
        ("url: postgresql://u@h/db\n  password: hunter2", "password", "are references"),
        ("url: postgresql://u@h/db\n  schema: 'x; DROP'", "schema", "lower-case"),
        ("url: postgresql://u@h/db\n  colour: blue", "colour", "unknown key"),
        ("type: mysql", "type", "unknown type 'mysql' (known: postgres)"),
    ],
)
def test_state_keys_are_checked_when_the_config_loads(extra, key, says):
    from idprov.errors import ConfigError

    text = f"state:\n  {extra}\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "t.yaml")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith(f"{key}:"))
    assert info.value.message.startswith(f"t.yaml:{line}:3: state.{key}: ")
    assert says in info.value.message and "hunter2" not in info.value.message


def test_the_state_section_names_its_database_and_files_relative_to_the_config(tmp_path):
    config = load_text(
        "state: {url: 'postgresql://svc@db.example.com:6432/identity', password: env:PG_PW,"
        " ca_file: ca.pem, schema: idprov}\n",
        "t.yaml",
        tmp_path,
    )
    state = config.state
    assert (state.host, state.port, state.database, state.user, state.schema) == (
        "db.example.com",
        6432,
        "identity",
        "svc",
        "idprov",
    )
    assert (state.sslmode, state.ca_file) == ("verify-full", str(tmp_path / "ca.pem"))
    assert [ref.ref for ref in config.secret_refs()] == ["env:PG_PW"]


def test_a_no_op_sync_on_postgres_renders_nobody_and_finds_a_change(
    drained, postgres, scim2_server, monkeypatch
):
    """Users in PostgreSQL (claims as jsonb) and the state there: the digests the
    pushes recorded are the ones the sync computes, and a change made in the database
    directly is found and sent alone."""
    from idprov.provisioning.mapping import UserMapping
    from idprov.provisioning.sync import run_sync

    add_users(drained, 5)
    rendered: list[str] = []
    real = UserMapping.account

    def counted(self, user, idp_name, previous):  # type: ignore[no-untyped-def]
        rendered.append(user.username)
        return real(self, user, idp_name, previous)

    monkeypatch.setattr(UserMapping, "account", counted)
    with IdentityService(load_config(str(drained))) as svc:
        assert run_sync(svc).outbound.ok
        assert postgres.rows("SELECT count(*) FROM idprov.ledger_inputs") == [(5,)]
        rendered.clear()
        assert run_sync(svc).plan.empty and rendered == []
        postgres.execute(
            "UPDATE directory.users SET claims = jsonb_set(claims, '{title}', '\"Boss\"')"
            " WHERE username = 'user0002'"
        )
        [item] = run_sync(svc).plan.idps[0].items
        assert (item.label, item.action, item.changed) == ("user0002", "update", ["title"])
        rendered.clear()
        assert run_sync(svc).plan.empty and rendered == []
    titles = {u["userName"]: u.get("title") for u in scim2_server.users()}
    assert titles == {f"user{i:04d}": "Boss" if i == 2 else None for i in range(5)}


def test_what_psycopg_logs_while_a_connection_is_lost_stays_off_stderr(run_python):
    """psycopg's "error ignored in rollback of <psycopg.Transaction ...>" came on
    stderr ahead of idprov's own error: a cron job's stderr holds one JSON line per
    error. (A fresh interpreter: pytest's own log capture would hide it here.)"""
    done = run_python(
        "import logging, idprov.pg; "
        "logging.getLogger('psycopg').warning('error ignored in rollback of %s', '<tx>')"
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
