"""`idprov serve --workers N` with a blocking IdP: the outbox worker makes every
worker's pushes (idprov.inbound.push_relay).

What an operator checks, against the real scim2-server behind a loopback link that
answers late and counts the requests in flight: however many workers answer, the IdP
never gets more calls at once than its ``max_concurrency``; every request still
answers after its push (``outbound=ok``); the outbox worker keeps the workers'
priority (requests wait for it); a ``kill -9`` of the outbox worker mid-push loses
nothing and duplicates nothing (the waiting requests answer with their rows queued,
the restarted worker pushes them, adopting what the killed one had created); a stop
lets the pushes of the requests in flight finish.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from idprov.inbound.push_relay import report_from_wire, report_to_wire
from idprov.provisioning.results import IdpReport, OperationResult, OutboundReport
from tests.outbound_helpers import idp_yaml
from tests.peers.slow_link import SlowLink
from tests.test_serve_workers import IDPROV, USER, config_text, create, niceness, serving
from tests.test_serve_workers import token as token  # noqa: F401 - its CRM_TOKEN
from tests.waiting import wait_until


def outbox_left(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "idprov.db") as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def test_every_worker_s_pushes_keep_the_idp_s_limits(tmp_path, scim2_server, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    with SlowLink(scim2_server.base_url, 0.2) as link:
        idps = idp_yaml("corp", link.url, extra="    max_concurrency: 2")
        with serving(tmp_path, 3, config_text(tmp_path, idps, "corp")) as served:
            outbox, workers = served.ready["outbox_worker_pid"], served.ready["workers_pids"]
            assert niceness(outbox) == niceness(workers[0])  # requests wait for its pushes

            def share(client_number: int) -> list[int]:
                with served.client() as client:
                    return [create(client, f"c{client_number}u{i}") for i in range(4)]

            with ThreadPoolExecutor(6) as pool:
                statuses = [s for batch in pool.map(share, range(6)) for s in batch]
            assert statuses == [201] * 24
            # each answered after its push: the user is at the target already
            assert len(scim2_server.users()) == 24
            code, stderr = served.stop()
    assert code == 0, stderr
    assert link.most_in_flight <= 2  # 3 workers, 6 clients: never more than the IdP allows
    log = (tmp_path / "access.log").read_text().splitlines()
    assert sum("POST /v2/Users 201" in line and "outbound=ok" in line for line in log) == 24
    assert outbox_left(tmp_path) == 0


def test_a_killed_outbox_worker_loses_no_push_and_duplicates_none(
    tmp_path, scim2_server, monkeypatch
):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    with SlowLink(scim2_server.base_url, 4.0) as link:
        idps = idp_yaml("corp", link.url)
        with serving(tmp_path, 2, config_text(tmp_path, idps, "corp")) as served:
            outbox = served.ready["outbox_worker_pid"]
            with served.client() as client:  # the workers reach the outbox worker
                assert create(client, "first") == 201

            def create_with_password(client: httpx.Client, name: str) -> int:
                user = {"schemas": [USER], "userName": name, "password": "Pa55word-only-once"}
                return client.post("/Users", json=user).status_code

            with ThreadPoolExecutor(3) as pool:
                with served.client() as client:
                    answers = pool.map(
                        lambda i: create_with_password(client, f"waiting{i}"), range(3)
                    )
                    # the outbox worker has sent creates, and waits for their answers
                    assert wait_until(lambda: link.in_flight >= 1)
                    os.kill(outbox, signal.SIGKILL)
                    assert list(answers) == [201] * 3  # answered, not left hanging
            names = {"first", "waiting0", "waiting1", "waiting2"}
            # the supervisor starts it again; it takes over the dead one's claims
            assert wait_until(lambda: {u["userName"] for u in scim2_server.users()} == names)
            assert wait_until(lambda: outbox_left(tmp_path) == 0)
            code, stderr = served.stop()
    assert code == 0, stderr
    assert sorted(u["userName"] for u in scim2_server.users()) == sorted(names)  # none twice
    assert f"the outbox worker (pid {outbox}) was killed by SIGKILL" in stderr
    # the password went only to the lost push: said, without the password
    assert "set them again (idprov user passwd)" in stderr
    assert "Pa55word" not in stderr
    log = (tmp_path / "access.log").read_text()
    assert "outbound=queued:1" in log  # the requests whose push was lost said so
    with sqlite3.connect(tmp_path / "data" / "idprov.db") as db:
        ledger = db.execute("SELECT count(*) FROM ledger WHERE remote_id IS NOT NULL").fetchone()
    assert ledger[0] == 4


@pytest.mark.parametrize("every_process", [False, True], ids=["supervisor", "group"])
def test_a_stop_lets_the_pushes_in_flight_finish(
    tmp_path, scim2_server, monkeypatch, every_process
):
    """SIGTERM to the supervisor stops the outbox worker last; to every process (as
    systemd stops a service), the outbox worker pushes on until the workers are gone.
    The workers' socket and its directory are gone with the server."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with SlowLink(scim2_server.base_url, 1.0) as link:
        idps = idp_yaml("corp", link.url)
        with serving(tmp_path, 2, config_text(tmp_path, idps, "corp")) as served:
            with served.client() as client:
                assert create(client, "first") == 201
            with ThreadPoolExecutor(1) as pool, served.client() as client:
                answer = pool.submit(create, client, "during-the-stop")
                assert wait_until(lambda: link.in_flight >= 1)
                if every_process:
                    os.killpg(served.process.pid, signal.SIGTERM)
                else:
                    served.process.send_signal(signal.SIGTERM)
                assert answer.result(timeout=30) == 201
            code, stderr = served.stop()
    assert code == 0, stderr
    assert sorted(u["userName"] for u in scim2_server.users()) == ["during-the-stop", "first"]
    assert list(tmp_path.glob("idprov-serve-*")) == []
    log = (tmp_path / "access.log").read_text().splitlines()
    assert any("201" in line and "outbound=ok" in line for line in log[1:])
    assert outbox_left(tmp_path) == 0


def test_a_report_crosses_to_the_worker_whole():
    ops = [
        OperationResult("corp", "user", "ann", "create", "done", "r-1", row=7, attempts=1),
        OperationResult("corp", "user", "bob", "update", "failed", None, "HTTP 500", 500, 3, 8),
    ]
    report = OutboundReport(idps={"corp": IdpReport("corp", 3, ops)})
    report.note("pending", "corp", 9)
    report.note("held", "hr", 10)
    report.note("queued", "later", 11)
    report.guard = ["would delete 80% of corp's users"]
    back = report_from_wire(report_to_wire(report))
    assert back == report
    assert back is not None and back.to_dict() == report.to_dict()


def test_a_tmpdir_too_long_for_the_workers_socket_is_a_clear_error(tmp_path, monkeypatch):
    long = tmp_path / ("d" * 60) / ("e" * 60)
    long.mkdir(parents=True)
    idps = idp_yaml("corp", "http://127.0.0.1:9/v2")
    (tmp_path / "idprov.yaml").write_text(config_text(tmp_path, idps, "corp"))
    monkeypatch.setenv("SCIM_TOKEN", "scim-token-1234")
    run = subprocess.run(
        [IDPROV, "--config", "idprov.yaml", "serve", "--port", "0", "--workers", "2"],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(long)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "cannot make the workers' socket" in run.stderr
    assert "TMPDIR" in run.stderr and "Traceback" not in run.stderr
    assert list(long.iterdir()) == []  # nothing left behind


def test_a_jit_login_at_a_worker_answers_with_the_outbox_worker_s_report(
    tmp_path, scim2_server, monkeypatch
):
    """The reply of a JIT login carries the push's whole report: through the outbox
    worker, the same as from a single process."""
    from tests.test_jit import ALICE, PORTAL_TOKEN
    from tests.test_jit import config_text as jit_config

    monkeypatch.setenv("PORTAL_TOKEN", PORTAL_TOKEN)
    monkeypatch.setenv("OUT_TOKEN", scim2_server.token)
    idps = f"""
  - name: target
    connector: scim2
    jit: true
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:OUT_TOKEN}}"""
    with serving(tmp_path, 2, jit_config(tmp_path, idps, "[target]")) as served:
        headers = {"Authorization": f"Bearer {PORTAL_TOKEN}"}
        with httpx.Client(base_url=served.url, headers=headers, timeout=30) as client:
            created = client.post("/jit/login", json={"idp": "mail", "claims": ALICE})
        code, stderr = served.stop()
    assert created.status_code == 201, created.text
    outbound = created.json()["outbound"]
    assert outbound["ok"] is True
    [target] = outbound["idps"]
    assert (target["idp"], target["done"], target["failed"]) == ("target", 1, 0)
    [operation] = target["operations"]
    assert operation["operation"] == "create" and operation["outcome"] == "done"
    [remote] = scim2_server.users()
    assert operation["remote_id"] == remote["id"]
    assert remote["userName"] == "alice@example.com"
    assert code == 0, stderr


def test_an_idp_whose_ca_file_cannot_be_loaded_does_not_stop_the_server(
    tmp_path, monkeypatch, caplog
):
    """The server loads each IdP's TLS context before its first push; one that cannot
    be loaded is logged, and only that IdP's pushes fail (each with the error)."""
    from idprov.config import load_text
    from idprov.inbound.scim_server import InboundServer

    (tmp_path / "ca.pem").write_text("not a certificate\n")
    monkeypatch.setenv("SCIM_TOKEN", "scim-token-1234")
    idps = f"""
  - name: corp
    connector: scim2
    options:
      base_url: https://scim.example.invalid/v2
      auth: bearer
      token: env:SCIM_TOKEN
      ca_file: {tmp_path / "ca.pem"}"""
    server = InboundServer(load_text(config_text(tmp_path, idps, "corp"), "idprov.yaml"))
    try:
        server.start_worker()  # what `idprov serve` runs as it starts
    finally:
        server.close()
    assert f"identity provider corp: ca_file {tmp_path / 'ca.pem'}" in caplog.text


def test_a_closed_connection_s_unsent_claims_are_given_back_but_not_those_in_flight(
    monkeypatch,
):
    """A worker killed between its commit and the send leaves rows claimed for the
    outbox worker, which never hears of them: when the worker's connection closes, the
    outbox worker gives back what was claimed under that connection's name, but the
    claims of the changes it received and is still pushing (not after the 5-minute
    lease); and again later, for a claim committed under the name after the close (a
    worker stopped mid-change, then resumed)."""
    import socket as sockets
    from concurrent.futures import Future

    from idprov.inbound import push_relay
    from idprov.inbound.push_relay import RelayServer, _frame, _read_frame

    monkeypatch.setattr(push_relay, "SWEEP_SECONDS", 0.05)

    folder = Path(tempfile.mkdtemp(prefix="relay-"))
    listener = sockets.socket(sockets.AF_UNIX)
    listener.bind(str(folder / "s"))
    listener.listen()
    never: Future = Future()  # a push still running when the worker goes
    released: list[tuple[str, set[str]]] = []
    server = RelayServer(
        listener, lambda key, change: never, lambda p, k: released.append((p, set(k)))
    )
    server.start()
    try:
        worker = sockets.socket(sockets.AF_UNIX)
        worker.connect(str(folder / "s"))
        drainer = _read_frame(worker)["drainer"]
        sent = f"{drainer}.4242-1"
        change = {"id": 1, "key": ["crm", "scim", "t1"], "rows": [7], "passwords": {},
                  "claims": [sent], "fresh": [7]}  # fmt: skip
        worker.sendall(_frame(change))
        worker.close()  # killed: its change 4242-2 was committed, never sent
        assert wait_until(lambda: len(released) >= 2)  # at once, and again later
    finally:
        listener.close()
        shutil.rmtree(folder)
    assert released[:2] == [(f"{drainer}.", {sent})] * 2
    assert "relay-" in drainer and drainer.split(":")[1] == str(os.getpid())


def test_release_by_prefix_gives_back_only_that_connection_s_claims(tmp_path):
    from tests.outbound_helpers import idp_yaml as idp
    from tests.outbound_helpers import make_service

    service = make_service(tmp_path, idp("corp", "https://scim.example.invalid/v2"), ["corp"])
    try:
        check_release_by_prefix(service)
    finally:
        service.close()


def check_release_by_prefix(service: Any) -> None:
    """Also run on a PostgreSQL state (tests/test_state_postgres.py)."""
    outbox = service.state.outbox
    with service.state.transaction():
        rows = outbox.enqueue_many(
            ["corp"], "user", [(f"u{i}", "PRIMARY", f"u{i}") for i in range(4)]
        )
        ids = [r.id for r in rows]
        outbox.claim_ids(ids[:1], "h:1:relay-a.9-1", 300)
        outbox.claim_ids(ids[1:2], "h:1:relay-a.9-2", 300)
        outbox.claim_ids(ids[2:3], "h:1:relay-b.9-1", 300)  # another connection's
    with service.state.transaction():
        released = outbox.release_prefix("h:1:relay-a.", {"h:1:relay-a.9-2"})
    assert released == ids[:1]
    holders = {r.id: r.claimed_by for r in outbox.rows(ids)}
    assert holders == {
        ids[0]: None,
        ids[1]: "h:1:relay-a.9-2",
        ids[2]: "h:1:relay-b.9-1",
        ids[3]: None,
    }


def test_an_answer_a_worker_does_not_take_is_given_up_and_the_connection_closed(
    monkeypatch,
):
    """A worker that stops reading (SIGSTOP, a debugger) must not hold a pusher
    thread of the outbox worker: past SEND_SECONDS without progress it hangs up."""
    import socket as sockets

    from idprov.inbound import push_relay

    monkeypatch.setattr(push_relay, "SEND_SECONDS", 0.2)
    ours, theirs = sockets.socketpair()
    ours.setsockopt(sockets.SOL_SOCKET, sockets.SO_SNDBUF, 4096)
    try:
        with pytest.raises(TimeoutError):
            for _ in range(10_000):  # far more than the buffers hold; never read
                push_relay._send_within(ours, b"x" * 65536, push_relay.SEND_SECONDS)
    finally:
        ours.close()
        theirs.close()


def test_a_change_claimed_on_a_connection_that_is_gone_is_given_back_and_pushed_here(
    tmp_path, scim2_server, monkeypatch
):
    """A Bulk request's operations each claim as they commit: one under a connection
    that was then lost, the next under the new one. Such a change cannot go to the
    outbox worker whole: the worker gives its claims back and pushes it itself (before,
    it answered queued and the new connection's claim held its row for 5 minutes)."""
    import asyncio

    from idprov.config import load_text
    from idprov.inbound.push_relay import NotSent, RelayClient
    from idprov.inbound.scim_server import InboundServer

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    text = config_text(tmp_path, idp_yaml("corp", scim2_server.base_url), "corp")
    server = InboundServer(load_text(text, "idprov.yaml"))

    class Reconnected:  # connection A was lost; B took its place
        carries = staticmethod(RelayClient.carries)

        def claim_name(self) -> None:
            return None  # not connected now: a change pushed here claims its own

        async def push(self, key: Any, pending: Any) -> Any:
            assert pending.claims == ["h:1:relay-a.7-1", "h:1:relay-b.7-2"]
            raise NotSent

    names = iter(["h:1:relay-a.7-1", "h:1:relay-b.7-2"])
    service = server.backends.get("crm", "scim").service
    service.outbound.pushed_by = lambda: next(names)
    pending = None
    for name in ("ann", "bob"):  # two operations, two units of work
        with service.unit_of_work(push=False, claim=True) as uow:
            uow.add_user(name, {"email": f"{name}@example.com"})
        if pending is None:
            pending = uow.pending(waited_only=True)
        else:
            pending.add(uow.pending(waited_only=True))
    assert pending is not None
    server.relay = Reconnected()  # type: ignore[assignment]
    try:
        report = asyncio.run(server._push_here_or_there(("crm", "scim", "t1"), pending))
    finally:
        server.close()
    assert report is not None and report.ok
    assert sorted(u["userName"] for u in scim2_server.users()) == ["ann", "bob"]
    assert outbox_left(tmp_path) == 0
