"""The HTTP client connectors use (idprov/connectors/http_client.py), against real
loopback servers: what an operator relies on from the environment (an HTTP proxy
named by HTTP_PROXY, hosts NO_PROXY exempts), what a target sees (idprov's
User-Agent), and a transport failure as idprov reports it."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from idprov.connectors.base import TargetError
from idprov.connectors.http import HttpOptions, send
from idprov.connectors.http_client import ThreadClient
from tests.peers.slapd import make_certificates


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


def client_for(base_url: str) -> ThreadClient:
    return ThreadClient(HttpOptions(base_url=base_url, auth="none", timeout=5), 1)


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


def test_a_proxy_that_cannot_be_reached_is_a_retryable_error_naming_it(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    client = client_for("http://scim.example.invalid/v2")
    try:
        with pytest.raises(TargetError) as caught:
            send(client, "GET", "http://scim.example.invalid/v2/Users", what="list users")
    finally:
        client.close()
    assert caught.value.retryable
    assert (
        "list users: cannot reach the proxy http://127.0.0.1:9 (HTTP_PROXY) on the way to "
        "http://scim.example.invalid"
    ) in str(caught.value)


# ---------------------------------------------------------------- HTTPS through a proxy
class Tunnel:
    """A forward proxy for HTTPS (RFC 9110 CONNECT): it sees only where a client goes,
    then relays the encrypted bytes both ways."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            self._tunnel(client)
        except OSError:  # the client went away (reset) before the tunnel stood
            client.close()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return client.close()
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        self.targets.append(f"{method} {target}")
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_relay, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self.server.close()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:  # one side is done: the tunnel is (the other relay's recv then fails)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@pytest.fixture
def https_target(tmp_path: Path) -> Iterator[tuple[str, Path, list[tuple[str, str, dict]]]]:
    make_certificates(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls" / "server.pem", tmp_path / "tls" / "server.key")
    seen: list[tuple[str, str, dict[str, str]]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Recorder,), {"seen": seen}))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/v2", tmp_path / "tls" / "ca.pem", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "ALL_PROXY", "https_proxy"])
def test_https_goes_through_the_proxys_tunnel_with_the_certificate_verified(
    https_target, monkeypatch, variable
):
    url, ca_file, seen = https_target
    tunnel = Tunnel()
    monkeypatch.setenv(variable, tunnel.url)
    options = HttpOptions(base_url=url, auth="none", ca_file=str(ca_file), timeout=5)
    client = ThreadClient(options, 1)
    try:
        response = send(client, "POST", f"{url}/Users", what="create", json={})
    finally:
        client.close()
        tunnel.close()
    assert response.status_code == 201
    assert tunnel.targets == [f"CONNECT {url.split('/')[2]}"]
    assert [(method, path) for method, path, _ in seen] == [("POST", "/v2/Users")]


def test_through_a_proxy_a_certificate_no_trusted_ca_signed_is_refused(https_target, monkeypatch):
    url, _, seen = https_target
    tunnel = Tunnel()
    monkeypatch.setenv("HTTPS_PROXY", tunnel.url)
    client = ThreadClient(HttpOptions(base_url=url, auth="none", timeout=5), 1)
    try:
        with pytest.raises(TargetError) as caught:
            send(client, "POST", f"{url}/Users", what="create", json={})
    finally:
        client.close()
        tunnel.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert tunnel.targets and seen == []  # the tunnel was opened; nothing reached the target


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    """RFC 9110 §10.2.3: a number of seconds, or an HTTP date (when to come back)."""
    import email.utils
    import time

    import httpx

    from idprov.connectors.http import retry_after

    def after(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"Retry-After": value}))

    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert after("120") == 120.0
    assert 25 <= (after(soon) or 0) <= 31
    assert after("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0  # past: at once
    assert after("in a while") is None


def test_a_target_that_echoes_the_credentials_never_puts_them_in_a_message(tmp_path, monkeypatch):
    """A base_url naming a debugging endpoint by mistake gets the request sent back:
    the error shown, audited and kept in the outbox has the token blanked."""
    import httpx

    from idprov.provisioning.state import AuditQuery
    from tests.outbound_helpers import idp_yaml, make_service

    token = "tok-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("SCIM_TOKEN", token)

    def echo(request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        if request.url.path.endswith("/Users") and request.method == "POST":
            return httpx.Response(400, json={"detail": f"bad request {headers}"})
        return httpx.Response(404, text=f"no such thing; you sent {headers}")

    idps = idp_yaml("echo", "https://echo.example.com/v2")
    with make_service(tmp_path, idps, ["echo"], http_transport=httpx.MockTransport(echo)) as svc:
        report = svc.add_user("alice", {"email": "alice@example.com"}).outbound
        [row] = svc.outbox_rows()
        audit = json.dumps([e.to_dict() for e in svc.audit_log(AuditQuery())])
    [failed] = report.idps["echo"].operations
    assert failed.outcome == "failed" and "***" in (failed.error or "")
    for said in (failed.error or "", row.last_error or "", audit):
        assert token not in said


def test_an_oauth_token_requests_form_values_are_blanked_in_what_its_reply_says():
    import httpx

    from idprov.connectors.http import redact

    form = {"grant_type": "client_credentials", "client_secret": "s3cr3t-value-42"}
    request = httpx.Request("POST", "https://login.example.com/token", data=form)
    reply = httpx.Response(400, text=f"invalid_client: got {form}", request=request)
    said = redact(reply.text, reply)
    assert "s3cr3t-value-42" not in said and "client_credentials" in said


@pytest.mark.parametrize(
    "proxy",
    [
        "http://ops:pr0xy-pa55word@proxy.corp:notaport",
        "http://ops:pr0xy/pa55word@proxy.corp:3128",  # an unencoded "/": parsed as a port
    ],
)
def test_a_proxy_setting_that_cannot_be_used_is_a_clear_error_without_its_password(
    monkeypatch, proxy
):
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    client = client_for("https://scim.example.invalid/v2")
    try:
        with pytest.raises(TargetError) as caught:
            send(client, "GET", "https://scim.example.invalid/v2/Users", what="list users")
    finally:
        client.close()
    said = caught.value.message + str(caught.value.hint)
    assert "cannot use the proxy the environment names for https://scim.example.invalid" in said
    assert "HTTPS_PROXY" in str(caught.value.hint)
    assert "pr0xy" not in said and "pa55word" not in said
