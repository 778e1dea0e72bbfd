"""The HTTP client connectors use (idprov/connectors/http_client.py), against real
loopback servers: what an operator relies on from the environment (an HTTP proxy
named by HTTP_PROXY, hosts NO_PROXY exempts), what a target sees (idprov's
User-Agent), and a transport failure as idprov reports it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from idprov.connectors.base import TargetError
from idprov.connectors.http import HttpOptions, send
from idprov.connectors.http_client import HttpClient


class Recorder(BaseHTTPRequestHandler):
    """A forward proxy's view: the request line (absolute-form for a proxy) and the
    headers of each request, answered with a SCIM-like 201."""

    seen: list[tuple[str, str, dict[str, str]]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self.seen.append((self.command, self.path, dict(self.headers.items())))
        body = json.dumps({"id": "remote-1"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    seen: list[tuple[str, str, dict[str, str]]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test names its own; a runner's (either case) must not leak in."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def client_for(base_url: str) -> HttpClient:
    return HttpClient(HttpOptions(base_url=base_url, auth="none", timeout=5), 1)


def test_requests_go_through_the_proxy_the_environment_names(recorder, monkeypatch):
    proxy, seen = recorder
    monkeypatch.setenv("HTTP_PROXY", proxy)
    client = client_for("http://scim.example.invalid/v2")
    try:
        response = client.post("http://scim.example.invalid/v2/Users", json={})
    finally:
        client.close()
    assert response.status_code == 201 and response.json() == {"id": "remote-1"}
    [(method, target, headers)] = seen
    assert (method, target) == ("POST", "http://scim.example.invalid/v2/Users")
    assert headers["User-Agent"].startswith("idprov/")


@pytest.mark.parametrize("listed", ["127.0.0.1", "127.0.0.1:{port}", "localhost,127.0.0.1"])
def test_a_host_no_proxy_lists_is_reached_directly(recorder, monkeypatch, listed):
    direct, seen = recorder
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would refuse: never used
    monkeypatch.setenv("NO_PROXY", listed.format(port=direct.rsplit(":", 1)[1]))
    client = client_for(direct)
    try:
        response = send(client, "POST", f"{direct}/v2/Users", what="create", json={})
    finally:
        client.close()
    assert response.status_code == 201
    assert [target for _, target, _ in seen] == ["/v2/Users"]  # origin-form: no proxy


def test_a_proxy_that_cannot_be_reached_is_a_retryable_error_naming_the_target(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    client = client_for("http://scim.example.invalid/v2")
    try:
        with pytest.raises(TargetError) as caught:
            send(client, "GET", "http://scim.example.invalid/v2/Users", what="list users")
    finally:
        client.close()
    assert caught.value.retryable
    assert "list users: cannot reach http://scim.example.invalid" in str(caught.value)
