"""TLS verification is on by default (a CA file opts a private CA in); API-key header
and basic authentication reach the target as configured."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.outbound_helpers import FakeScim, make_service
from tests.peers.slapd import make_certificates


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps(
            {"patch": {"supported": True}, "Resources": [], "totalResults": 0}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def https_server(tmp_path: Path):
    make_certificates(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls" / "server.pem", tmp_path / "tls" / "server.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/v2", tmp_path / "tls" / "ca.pem"
    server.shutdown()
    server.server_close()


def tls_idp(url: str, extra: str = "") -> str:
    return f"""
  - name: secure
    connector: scim2
    options:
      base_url: {url}
      auth: bearer
      token: env:SCIM_TOKEN
{extra}"""


def test_an_unknown_ca_is_refused_by_default_and_a_ca_file_trusts_it(
    tmp_path, https_server, monkeypatch
):
    url, ca = https_server
    monkeypatch.setenv("SCIM_TOKEN", "t")
    with make_service(tmp_path / "a", tls_idp(url), ["secure"]) as svc:
        report = svc.test_idp("secure")
        assert not report.reachable or not report.authenticated
        assert any(
            "CERTIFICATE_VERIFY_FAILED" in m or "certificate" in m.lower() for m in report.messages
        )
    with make_service(tmp_path / "b", tls_idp(url, f"      ca_file: {ca}\n"), ["secure"]) as svc:
        assert svc.test_idp("secure").ok


def test_api_key_header_and_basic_auth_are_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("API_KEY", "k-123")
    monkeypatch.setenv("BASIC_PW", "pw-456")
    seen: list[httpx.Headers] = []
    fakes = {"a.test": FakeScim("unused"), "b.test": FakeScim("unused")}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.copy())
        request.headers["Authorization"] = "Bearer unused"
        return fakes[request.url.host].handle(request)

    idps = """
  - name: keyed
    connector: scim2
    options: {base_url: "https://a.test/v2", auth: header, header_name: X-API-Key,
              token: env:API_KEY}
  - name: basic
    connector: scim2
    options: {base_url: "https://b.test/v2", auth: basic, username: idprov,
              password: env:BASIC_PW}
"""
    with make_service(
        tmp_path, idps, ["keyed", "basic"], http_transport=httpx.MockTransport(handle)
    ) as svc:
        assert svc.add_user("alice", {"email": "a@example.com"}).outbound.ok
    keyed = [h for h in seen if "x-api-key" in h]
    basic = [h for h in seen if h.get("authorization", "").startswith("Basic ")]
    assert keyed and all(h["x-api-key"] == "k-123" for h in keyed)
    assert basic and basic[0]["authorization"] == "Basic aWRwcm92OnB3LTQ1Ng=="
