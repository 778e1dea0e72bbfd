"""`idprov serve --workers N`: several processes on one port, as an operator runs it.

The command runs as a real process tree (the supervisor and its forked workers) on
loopback, over one SQLite file. What an operator checks: concurrent clients lose
nothing and a name taken by two workers at once is one 201 and 409s (never a 500);
changes still reach the application's IdP, even rows committed by a worker that does
not run the outbox worker; a worker killed with SIGKILL is replaced and the server
keeps answering; SIGTERM (to the supervisor, or to every process as systemd sends it)
and a Ctrl-C typed at the terminal stop every worker gracefully, exit 0.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from idprov.config import load_text
from idprov.errors import UsageError
from idprov.inbound.serve_http import bind
from idprov.inbound.serve_workers import (
    MOST_QUICK_DEATHS,
    OUTBOX_NICENESS,
    Supervisor,
    WriterLock,
    writes_take_turns,
)
from tests.outbound_helpers import idp_yaml
from tests.terminal import run_in_terminal

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
TOKEN = "crm-token-5f0c1d2e"
IDPROV = str(Path(sys.executable).parent / "idprov")


def config_text(tmp_path: Path, idps: str = "", app_idps: str = "") -> str:
    return f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:{idps or " []"}
applications:
  - name: crm
    identity_providers: [{app_idps}]
    inbound_token: env:CRM_TOKEN
"""


def client(url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    ready: dict[str, Any]

    def client(self) -> httpx.Client:
        return client(self.url)

    def workers(self) -> list[int]:
        """The pids of the supervisor's worker processes (Linux /proc)."""
        pid = self.process.pid
        return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())

    def stop(self, every_process: bool = False) -> tuple[int, str]:
        """SIGTERM to the supervisor; or to every process of the server, as a service
        manager stopping its group does (systemd's default)."""
        if every_process:
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stderr


@contextmanager
def serving(tmp_path: Path, workers: int, config: str) -> Iterator[Served]:
    (tmp_path / "idprov.yaml").write_text(config)
    command = [IDPROV, "--config", "idprov.yaml", "serve", "--port", "0", "--json"]
    command += ["--workers", str(workers), "--access-log", "access.log"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(
        command, cwd=tmp_path, text=True, start_new_session=True, **pipes
    ) as process:
        try:
            ready = read_json(process.stdout)
            assert ready.get("workers") == workers, process.stderr.read()
            yield Served(process, ready["url"], ready)
        finally:
            if process.poll() is None:
                process.kill()


def read_json(stream: IO[str]) -> dict[str, Any]:
    """The one JSON document (indented over several lines) a command prints first."""
    text = ""
    for line in stream:
        text += line
        if line.startswith("}"):
            break
    return json.loads(text or "{}")


def create(client: httpx.Client, name: str) -> int:
    return client.post("/Users", json={"schemas": [USER], "userName": name}).status_code


def refused(url: str) -> bool:
    """Whether nothing listens at ``url`` any more."""
    try:
        httpx.get(f"{url}/ServiceProviderConfig", timeout=30)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:  # something listens: slow to answer, or starting
        return False
    return False


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", TOKEN)


def postgres_config(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Users and state in a PostgreSQL database of the test's own; crm serves them."""
    from tests.test_state_postgres import shared_config

    database = request.getfixturevalue("postgres")
    applications = "applications:\n  - name: crm\n    inbound_token: env:CRM_TOKEN\n"
    return shared_config(database, tmp_path) + applications


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_workers_share_the_port_and_lose_nothing(tmp_path, store, request):
    text = config_text(tmp_path) if store == "sqlite" else postgres_config(request, tmp_path)
    with serving(tmp_path, 2, text) as served:
        assert len(served.workers()) == 2

        def share(worker: int) -> list[int]:
            with served.client() as client:
                return [create(client, f"w{worker}u{i}") for i in range(25)]

        def same_name(_: int) -> int:
            with served.client() as client:
                return create(client, "Shared.Name")

        with ThreadPoolExecutor(8) as pool:
            statuses = [s for batch in pool.map(share, range(4)) for s in batch]
            raced = sorted(pool.map(same_name, range(8)))
        assert set(statuses) == {201}
        assert raced == [201] + [409] * 7  # one name, one owner: never two, never a 500
        with served.client() as client:
            assert client.get("/Users", params={"count": 0}).json()["totalResults"] == 101
        code, stderr = served.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert refused(served.url)
    log = (tmp_path / "access.log").read_text().splitlines()
    assert sum(" POST /v2/Users 201 " in line for line in log) == 101  # every worker's lines


def test_changes_reach_a_non_blocking_idp_from_every_worker(tmp_path, scim2_server, monkeypatch):
    """The outbox worker is a process of its own, niced below the workers that answer
    (replies come first on a busy machine): the rows every worker commits reach the
    IdP, and each request's log line says it left its row to that worker."""
    idps = idp_yaml("later", scim2_server.base_url, extra="    blocking: false")
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    with serving(tmp_path, 2, config_text(tmp_path, idps, "later")) as served:
        assert served.ready["outbox_worker_process"] is True
        outbox, workers = served.ready["outbox_worker_pid"], served.ready["workers_pids"]
        assert sorted(served.workers()) == sorted([outbox, *workers]) and len(workers) == 2
        base = niceness(served.process.pid)
        assert [niceness(pid) for pid in workers] == [base, base]
        assert niceness(outbox) == min(base + OUTBOX_NICENESS, 19)

        def share(worker: int) -> list[int]:
            with served.client() as client:
                return [create(client, f"w{worker}u{i}") for i in range(10)]

        with ThreadPoolExecutor(4) as pool:
            assert {s for batch in pool.map(share, range(4)) for s in batch} == {201}
        deadline = time.monotonic() + 60
        while len(scim2_server.users()) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        code, stderr = served.stop()
    assert code == 0, stderr
    names = sorted(u["userName"] for u in scim2_server.users())
    assert names == sorted(f"w{w}u{i}" for w in range(4) for i in range(10))
    log = (tmp_path / "access.log").read_text().splitlines()
    assert sum("POST /v2/Users 201" in line and "outbound=queued:1" in line for line in log) == 40


GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_on_one_group_leave_the_target_as_the_store(
    tmp_path, scim2_server, monkeypatch, workers
):
    """Clients at once: new users, members added to one group and others removed, some
    members deactivated. Whatever order they come in, every row is pushed (none left
    claimed: it waited 5 minutes for its lease, every request saying outbound=ok) and
    the target's group holds the active members the store's does. Checked on the
    state they converge to, not on an order."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    idps = idp_yaml("target", scim2_server.base_url)
    with serving(tmp_path, workers, config_text(tmp_path, idps, "target")) as served:
        with served.client() as client:
            ids = [
                client.post("/Users", json={"schemas": [USER], "userName": f"m{i}"}).json()["id"]
                for i in range(12)
            ]
            body = {"schemas": [GROUP], "displayName": "crew"}
            group = client.post("/Groups", json={**body, "members": [{"value": i} for i in ids]})
            crew = group.json()["id"]

        def one(i: int) -> list[int]:
            def op(path: str, value: Any = None, kind: str = "add") -> dict[str, Any]:
                change = {"op": kind, "path": path} | ({} if value is None else {"value": value})
                return {"schemas": [PATCH], "Operations": [change]}

            with served.client() as c:
                calls = [
                    c.post("/Users", json={"schemas": [USER], "userName": f"n{i}"}),
                    c.patch(f"/Groups/{crew}", json=op("members", [{"value": ids[i]}])),
                    c.patch(
                        f"/Groups/{crew}",
                        json=op(f'members[value eq "{ids[(i + 6) % 12]}"]', kind="remove"),
                    ),
                ]
                if i % 4 == 0:
                    calls.append(c.patch(f"/Users/{ids[i]}", json=op("active", False, "replace")))
                return [r.status_code for r in calls]

        with ThreadPoolExecutor(8) as pool:
            statuses = {s for batch in pool.map(one, range(6)) for s in batch}
        assert statuses <= {200, 201, 204}, statuses

        def outbox_empty() -> bool:
            run = subprocess.run(
                [IDPROV, "--config", "idprov.yaml", "outbox", "list", "--json"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
            )
            return json.loads(run.stdout)["items"] == []

        deadline = time.monotonic() + 30  # a row left to the outbox worker: its next look
        while not outbox_empty() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox_empty()
        with served.client() as client:
            users = client.get("/Users", params={"count": 100}).json()["Resources"]
            members = client.get(f"/Groups/{crew}").json().get("members", [])
        code, stderr = served.stop()
    assert code == 0, stderr
    active = {u["id"]: u["userName"] for u in users if u.get("active", True)}
    wanted = sorted(active[m["value"]] for m in members if m["value"] in active)
    names = {u["id"]: u["userName"] for u in scim2_server.users()}
    [target] = scim2_server.groups()
    assert sorted(names[m["value"]] for m in target.get("members", [])) == wanted


def test_a_killed_outbox_worker_is_started_again_and_pushes(tmp_path, scim2_server, monkeypatch):
    idps = idp_yaml("later", scim2_server.base_url, extra="    blocking: false")
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    with serving(tmp_path, 2, config_text(tmp_path, idps, "later")) as served:
        outbox, workers = served.ready["outbox_worker_pid"], served.ready["workers_pids"]
        os.kill(outbox, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not set(served.workers()) - {outbox, *workers}:
            time.sleep(0.05)
        with served.client() as client:
            assert [create(client, f"later{i}") for i in range(5)] == [201] * 5
        while len(scim2_server.users()) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        code, stderr = served.stop()
    assert code == 0, stderr
    assert sorted(u["userName"] for u in scim2_server.users()) == [f"later{i}" for i in range(5)]
    assert f"the outbox worker (pid {outbox}) was killed by SIGKILL; started it again" in stderr


def niceness(pid: int) -> int:
    """A process's nice value (Linux /proc: the 19th field of its stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_killed_worker_is_started_again(tmp_path):
    with serving(tmp_path, 2, config_text(tmp_path)) as served:
        first = served.workers()
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (set(served.workers()) == set(first) or len(served.workers()) < 2) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        now = served.workers()
        assert len(now) == 2 and first[0] not in now and first[1] in now
        with served.client() as client:
            assert [create(client, f"after{i}") for i in range(10)] == [201] * 10
        code, stderr = served.stop(every_process=True)
    assert code == 0, stderr
    assert "Traceback" not in stderr  # a worker's second SIGTERM does not cut it short
    replaced = (set(now) - set(first)).pop()
    assert f"(pid {first[0]}) was killed by SIGKILL; started it again (pid {replaced})" in stderr


def test_ctrl_c_at_the_terminal_stops_every_worker(tmp_path):
    (tmp_path / "idprov.yaml").write_text(config_text(tmp_path))
    with socket.socket() as probe:  # a free port, told to the server (it prints to a tty)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v2"
    created: list[int] = []
    failed: list[BaseException] = []  # raised here, they would fail the next test

    def clients() -> None:
        try:
            deadline = time.monotonic() + 60
            while refused(url) and time.monotonic() < deadline:
                time.sleep(0.05)
            with ThreadPoolExecutor(4) as pool, client(url) as http:
                created.extend(pool.map(lambda i: create(http, f"tty{i}"), range(12)))
        except Exception as exc:
            failed.append(exc)

    thread = threading.Thread(target=clients, daemon=True)
    thread.start()
    args = ["--config", "idprov.yaml", "serve", "--port", str(port), "--workers", "2"]
    created_all = r"(?s)(POST /v2/Users 201.*){12}"
    run = run_in_terminal(args, cwd=tmp_path, env=dict(os.environ), interrupt_after=created_all)
    thread.join(30)
    assert not failed, failed
    assert created == [201] * 12
    assert run.exit_code == 0, run.text
    assert "in 2 processes (Ctrl-C stops)" in run.text
    assert "Traceback" not in run.text
    assert run.stop_seconds is not None and run.stop_seconds < 30
    assert refused(url)


def test_the_port_check_takes_no_connection_it_would_reset():
    """Before forking, the supervisor proves the port free and learns it; a client
    that connects then is refused (it retries), not queued on a socket that closes
    under it with a reset (a CI run saw exactly that). A port something listens on is
    still a clear error."""
    checked = bind("127.0.0.1", 0, listen=False)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(checked.getsockname(), timeout=5)
    finally:
        checked.close()
    taken = bind("127.0.0.1", 0, own=True)
    try:
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1:"):
            bind("127.0.0.1", taken.getsockname()[1], listen=False)
    finally:
        taken.close()


def test_a_worker_count_the_machine_cannot_run_is_refused(cli, tmp_path, write_config):
    write_config(config_text(tmp_path))
    error = cli("--config", "idprov.yaml", "serve", "--workers", "0", "--json").error(2)
    assert "--workers is between 1 and 64, not 0" in error["message"]
    assert "two per core" in error["hint"]


def test_workers_that_keep_dying_at_start_stop_the_server():
    said = io.StringIO()
    supervisor = Supervisor(2, lambda index, listening: 3, say=said)
    assert supervisor.run() == 1
    text = said.getvalue()
    assert text.count("exited with status 3; started it again") == MOST_QUICK_DEATHS - 1
    assert f"exited with status 3 {MOST_QUICK_DEATHS} times in a row" in text
    assert "stopping the server" in text
    assert supervisor.workers == {}  # every worker waited for: none left behind


# ---------------------------------------------------------------- writes over a directory
def _hold_in_child(lock: WriterLock) -> tuple[int, int, int]:
    """Fork a process that takes ``lock``, says so, and holds it until told to let go
    (or is killed): (pid, its "held" pipe, its "let go" pipe)."""
    held_r, held_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder
        try:
            with lock.held():
                os.write(held_w, b"h")
                os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(held_w)
    os.close(go_r)
    return pid, held_r, go_w


def test_the_writer_lock_excludes_other_processes_until_let_go_or_killed(tmp_path):
    import fcntl

    lock = WriterLock(tmp_path / "serve-writes.lock")
    for ending in ("let go", "kill -9"):
        pid, held, go = _hold_in_child(lock)
        assert os.read(held, 1) == b"h"
        with open(lock.path, "rb") as other:  # another process's descriptor
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if ending == "let go":
            os.write(go, b"g")
        else:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with lock.held():  # free again: the system let go of a killed holder's lock
            pass
        os.close(held)
        os.close(go)
    assert lock.path.stat().st_mode & 0o777 == 0o600


def test_workers_over_a_directory_apply_every_patch_of_one_user(tmp_path, slapd):
    """LDAP has no row locks: the workers' writes take turns, so concurrent PATCHes of
    one user (each adding its own phone number type and title) are each applied to
    what the one before wrote, and none is lost."""
    from tests.test_userstore_ldap import service_yaml

    directory = service_yaml(slapd, tmp_path).replace("data_dir: state", "version: 1")
    text = f"""{directory}    claim_attributes: {{active: businessCategory, emails: description}}
data_dir: {tmp_path / "data"}
applications:
  - name: crm
    userstore: CORP
    inbound_token: env:CRM_TOKEN
"""
    assert writes_take_turns(load_text(text, "t.yaml", tmp_path))
    with serving(tmp_path, 2, text) as served:
        with served.client() as http:
            created = http.post("/Users", json={"schemas": [USER], "userName": "alice"})
            assert created.status_code == 201, created.text
            alice = created.json()["id"]
            # a 201 is what a GET returns, ETag included, though the directory makes up
            # an sn from the name (a family name equal to the username is not read back)
            bob = {"schemas": [USER], "userName": "bob", "name": {"familyName": "bob"}}
            made = http.post("/Users", json=bob)
            got = http.get(f"/Users/{made.json()['id']}")
            assert (made.json(), made.headers["ETag"]) == (got.json(), got.headers["ETag"])

        def patch(value: str) -> int:
            body = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "add", "path": "emails", "value": [{"value": value, "type": "other"}]}
                ],
            }
            with served.client() as http:
                return http.patch(f"/Users/{alice}", json=body).status_code

        values = [f"a{i}@example.com" for i in range(12)]
        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(patch, values)) == {204}
        with served.client() as http:
            emails = http.get(f"/Users/{alice}").json()["emails"]
        code, stderr = served.stop()
    assert code == 0, stderr
    assert sorted(e["value"] for e in emails) == sorted(values)


def test_workers_stop_when_their_supervisor_is_killed(tmp_path):
    """kill -9 of the supervisor: its workers stop on their own instead of serving on
    as orphans that keep the port from the next start."""
    with serving(tmp_path, 2, config_text(tmp_path)) as served:
        workers = served.workers()
        served.process.kill()
        served.process.wait(30)
        deadline = time.monotonic() + 30
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(alive, workers))
        assert refused(served.url)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie no one has reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reopens_the_access_log_and_stops_nothing(tmp_path, workers):
    """logrotate moves the access log away and sends SIGHUP (its usual postrotate):
    the server killed itself at once (exit 129, no message). Every process now opens
    the file again at its next line, and keeps serving."""
    from tests.waiting import wait_until

    log = tmp_path / "access.log"
    with serving(tmp_path, workers, config_text(tmp_path)) as served:
        with served.client() as http:
            assert http.get("/Users").status_code == 200
            assert wait_until(lambda: log.exists() and "GET /v2/Users" in log.read_text())
            log.rename(tmp_path / "access.log.1")
            served.process.send_signal(signal.SIGHUP)

            def logged_again() -> bool:
                http.get("/Users")  # each process reopens at its next line
                return log.exists() and "GET /v2/Users" in log.read_text()

            assert wait_until(logged_again)
        assert served.process.poll() is None
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        code, _ = served.stop()
    assert code == 0
