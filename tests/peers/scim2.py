"""The ``scim2_server`` fixture: the independent scim2-server package (SCIM 2.0) on loopback.

The server process takes about a second to start, so one process serves the whole session,
started with ``--dynamic-tenants``: each test gets a tenant of its own, an empty in-memory
store under ``http://127.0.0.1:PORT/<tenant>/v2`` (the URL prefix of RFC 7644 section 6.1),
so no test sees another's resources and no reset is needed.
"""

from __future__ import annotations

import ctypes
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

SCIM2_SERVER = Path(sys.executable).parent / "scim2-server"
STARTUP_TIMEOUT = 20.0
START_ATTEMPTS = 3
PAGE_SIZE = 500


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if pytest dies without running its teardown."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 is PR_SET_PDEATHSIG


class Scim2Process:
    """One ``scim2-server`` process, started on a free port with a random bearer token."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.token = secrets.token_urlsafe(24)
        self.root_url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server, retrying on another port if the chosen one was taken."""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            self.root_url = f"http://127.0.0.1:{port}"
            self.process = self._launch(port)
            if self._wait_until_answering():
                return
            self.stop()
        log = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"scim2-server did not start; its log ends with:\n{log}")

    def _launch(self, port: int) -> subprocess.Popen[bytes]:
        command = [str(SCIM2_SERVER), "--hostname", "127.0.0.1", "--port", str(port)]
        command += [f"--bearer-token={self.token}", "--dynamic-tenants"]  # it may start with -
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def _wait_until_answering(self) -> bool:
        """Poll the server until any HTTP answer; False if it exits or times out."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                httpx.get(f"{self.root_url}/", timeout=1.0)
                return True
            except httpx.TransportError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """SIGTERM the server (it ignores SIGINT), and SIGKILL it if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class Scim2Peer:
    """A fresh, empty scim2-server tenant, and an authenticated client to inspect it.

    ``base_url`` is the root of the SCIM endpoints (``.../<tenant>/v2``); ``client`` is an
    ``httpx.Client`` with that base URL and the bearer token, for direct checks.
    """

    base_url: str
    token: str
    client: httpx.Client
    log_path: Path | None = None
    """The server's request log (one line per request, of every tenant)."""

    def statuses(self, method: str, path: str) -> list[int]:
        """The HTTP status of every ``method`` request to ``path`` (``"/Users"``) this
        tenant answered, in order, from the server's request log."""
        wanted = f'"{method} {urlsplit(self.base_url).path}{path} HTTP/1.1" '
        assert self.log_path is not None
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [int(line.split(wanted, 1)[1].split()[0]) for line in lines if wanted in line]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET a path relative to ``base_url`` (``"/Users/ID"``), with the token."""
        return self.client.get(path, **kwargs)

    def users(self) -> list[dict[str, Any]]:
        """Return every User resource on the server, paging through the list."""
        return self._list("/Users")

    def groups(self) -> list[dict[str, Any]]:
        """Return every Group resource on the server, paging through the list."""
        return self._list("/Groups")

    def _list(self, path: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            params = {"startIndex": len(found) + 1, "count": PAGE_SIZE}
            page = self.get(path, params=params).raise_for_status().json()
            batch = page.get("Resources", [])
            found += batch
            if not batch or len(found) >= page["totalResults"]:
                return found


@pytest.fixture(scope="session")
def scim2_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scim2Process]:
    """The session's scim2-server process; tests want ``scim2_server`` instead."""
    server = Scim2Process(tmp_path_factory.mktemp("scim2-server") / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def new_tenant(process: Scim2Process) -> Iterator[Scim2Peer]:
    """A fresh, empty tenant of the session's scim2-server, with a client to inspect it."""
    base_url = f"{process.root_url}/t{uuid.uuid4().hex[:12]}/v2"
    headers = {"Authorization": f"Bearer {process.token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as client:
        yield Scim2Peer(base_url, process.token, client, process.log_path)


@pytest.fixture
def scim2_server(scim2_server_process: Scim2Process) -> Iterator[Scim2Peer]:
    """An empty SCIM 2.0 service provider (scim2-server) of this test's own."""
    with new_tenant(scim2_server_process) as peer:
        yield peer
