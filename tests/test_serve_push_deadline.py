"""`idprov serve` answers within its push deadline however slow the target: Okta gives
up on a request after 30 s and Entra ID after 60 s, and a client that gave up sends
its POST again (409). Past the deadline the request answers with its change
committed and its rows left to the outbox (``outbound=queued:N``); the drain stops
sending, the call under way finishes and is recorded, the rows not started stay
pending for the outbox worker; nothing is lost and nothing is sent twice.

The target is the real scim2-server behind a loopback link that holds every answer
until the test lets it go: no sleep decides what happens first."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from idprov.inbound.push_queue import PushQueue
from idprov.provisioning.halting import current_halt
from idprov.provisioning.results import OutboundReport
from idprov.provisioning.unit_of_work import PendingPush
from tests.peers.slow_link import SlowLink
from tests.test_serve_scim import CRM_TOKEN, HR_TOKEN, running, serve_config
from tests.waiting import wait_until

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


class GatedLink(SlowLink):
    """A loopback link to the target that holds every answer until :attr:`gate` is
    set, and keeps the request line of every request it carried."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, 0.0)
        self.gate = threading.Event()
        self.arrived = threading.Event()
        self.lines: list[str] = []

    def _pump(
        self, source: socket.socket, sink: socket.socket, asked: list[float], back: bool
    ) -> None:
        try:
            while chunk := source.recv(65536):
                if back:
                    self.gate.wait(60)
                    self._answered(asked)
                else:
                    if chunk.split(b" ", 1)[0] in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"):
                        self.lines.append(chunk.split(b"\r\n", 1)[0].decode())
                        self.arrived.set()
                    self._asked(asked)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)
            sink.close()


def claimed(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "idprov.db") as db:
        return int(
            db.execute("SELECT count(*) FROM outbox WHERE claimed_by IS NOT NULL").fetchone()[0]
        )


def test_a_slow_target_answers_at_the_deadline_and_the_rest_goes_to_the_outbox(
    tmp_path, scim2_server, monkeypatch, cli, write_config
):
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    with GatedLink(scim2_server.base_url) as link:
        idps = f"""
  - name: corp
    connector: scim2
    max_concurrency: 1
    retry: {{max_attempts: 1}}
    options: {{base_url: "{link.url}", auth: bearer, token: env:SCIM_TOKEN, bulk: never}}"""
        with running(serve_config(tmp_path, idps, "[corp]")) as inbound:
            inbound.server.push_queue.deadline = 0.5
            operations = [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": n,
                    "data": {"schemas": [USER], "userName": n},
                }
                for n in ("ann", "bob")
            ]
            answer = inbound.client.post(
                "/Bulk", json={"schemas": [BULK], "Operations": operations}
            )
            assert answer.status_code == 200, answer.text
            assert [op["status"] for op in answer.json()["Operations"]] == ["201", "201"]
            assert link.arrived.is_set() and not link.gate.is_set()  # answered while held
            assert "POST /v2/Bulk 200" in inbound.log.getvalue()
            assert "outbound=queued:2" in inbound.log.getvalue()
            link.gate.set()  # the call under way finishes; nothing more is sent
            assert wait_until(lambda: claimed(tmp_path) == 0 and link.in_flight == 0, 30)
    posts = [line for line in link.lines if line.startswith("POST ")]
    assert len(posts) == 1  # the second create was never started
    config = write_config(serve_config_yaml(tmp_path, idps_for(scim2_server.base_url)))
    rows = cli("--config", str(config), "outbox", "list", "--json").items()
    assert [(r["label"], r["status"], r["attempts"]) for r in rows] == [("bob", "pending", 0)]
    cli("--config", str(config), "outbox", "retry", "--json").ok()
    assert cli("--config", str(config), "outbox", "list", "--json").items() == []
    assert sorted(u["userName"] for u in scim2_server.users()) == ["ann", "bob"]


def idps_for(url: str) -> str:
    return f"""
  - name: corp
    connector: scim2
    options: {{base_url: "{url}", auth: bearer, token: env:SCIM_TOKEN, bulk: never}}"""


def serve_config_yaml(tmp_path: Path, idps: str) -> str:
    return f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: PARTNERS
    path: {tmp_path / "data" / "partners.db"}
identity_providers:{idps}
applications:
  - name: resident
    identity_providers: [corp]
  - name: crm
    identity_providers: [corp]
    inbound_token: env:CRM_TOKEN
"""


class Blocked:
    """A push that blocks until :attr:`go`, noting whether its drain was halted."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.started = threading.Event()
        self.halted: list[bool] = []
        self.batches: list[list[list[int]]] = []

    def __call__(self, caller: Any, changes: list[PendingPush]) -> list[OutboundReport | None]:
        self.batches.append([c.rows for c in changes])
        halt = current_halt()
        assert halt is not None
        self.started.set()
        assert self.go.wait(30)
        self.halted.append(halt.is_set())
        return [OutboundReport() for _ in changes]


def test_at_the_deadline_the_batch_answers_queued_and_its_drain_is_halted():
    push = Blocked()
    with ThreadPoolExecutor(2) as pool:
        queue = PushQueue(pool, push, parallel=1, deadline=0.2)
        first = queue.submit("app", PendingPush([1, 2], idps={1: "corp", 2: "hr"}))
        assert push.started.wait(10)
        report = first.result(30)  # the push still blocks: the deadline answered
        assert report is not None and report.queued == {"corp": 1, "hr": 1}
        assert not first.pushed.done()  # the drain goes on with what it has under way
        push.go.set()
        assert first.pushed.result(30) is None
    assert push.halted == [True]


def test_without_a_deadline_a_request_waits_for_its_push():
    push = Blocked()
    with ThreadPoolExecutor(2) as pool:
        queue = PushQueue(pool, push, parallel=1, deadline=None)
        first = queue.submit("app", PendingPush([1], idps={1: "corp"}))
        assert push.started.wait(10)
        assert not first.done()
        push.go.set()
        assert first.result(30) == OutboundReport()
    assert push.halted == [False]


def test_push_deadline_is_checked(cli):
    error = cli("serve", "--push-deadline", "-1", "--json").error(2)
    assert "--push-deadline -1 is not between 0 and 3600 seconds" in error["message"]


def test_with_workers_a_request_answers_at_the_deadline_of_the_outbox_worker_s_push(
    tmp_path, scim2_server, monkeypatch
):
    """`serve --workers`: the outbox worker pushes the workers' changes; a request
    still answers at the deadline, its row named with its IdP, and the halted drain's
    call under way finishes (the user is at the target once)."""
    import subprocess

    from tests.test_serve_workers import IDPROV, TOKEN, client, config_text, read_json

    monkeypatch.setenv("CRM_TOKEN", TOKEN)
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    with GatedLink(scim2_server.base_url) as link:
        (tmp_path / "idprov.yaml").write_text(config_text(tmp_path, idps_for(link.url), "corp"))
        command = [IDPROV, "--config", "idprov.yaml", "serve", "--port", "0", "--json"]
        command += ["--workers", "2", "--access-log", "access.log", "--push-deadline", "0.5"]
        with subprocess.Popen(
            command, cwd=tmp_path, text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ) as process:  # fmt: skip
            try:
                ready = read_json(process.stdout)
                with client(ready["url"]) as http:
                    body = {"schemas": [USER], "userName": "ann"}
                    assert http.post("/Users", json=body).status_code == 201
                assert link.arrived.is_set() and not link.gate.is_set()
                link.gate.set()
                assert wait_until(lambda: claimed(tmp_path) == 0 and link.in_flight == 0, 30)
                process.terminate()
                assert process.wait(30) == 0
            finally:
                if process.poll() is None:
                    process.kill()
    log = (tmp_path / "access.log").read_text()
    assert "POST /v2/Users 201" in log and "outbound=queued:1" in log
    assert [u["userName"] for u in scim2_server.users()] == ["ann"]
    assert len([line for line in link.lines if line.startswith("POST ")]) == 1
