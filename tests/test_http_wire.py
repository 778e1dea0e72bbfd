"""The HTTP/1.1 transport on http.client (idprov/connectors/http_wire.py), against
loopback servers that misbehave as real ones do: what a connector relies on is that a
request is never written into a connection the server closed while it was idle, that
compressed and chunked replies arrive whole, and that a failure after the request
went out is reported as ambiguous (it may have been applied) while one before it is
not: the engine looks before it sends a create again only in the first case."""

from __future__ import annotations

import base64
import gzip
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from idprov.connectors.base import TargetError
from idprov.connectors.http import HttpOptions, send
from idprov.connectors.http_client import ThreadClient
from tests.waiting import wait_until

Script = Callable[[socket.socket, bytes], None]
"""What the server does on one connection, given the first request's bytes."""


def read_request(conn: socket.socket) -> bytes:
    """One request's head and its Content-Length body ('' when the client closed).

    A client that closes with our reply unread resets the connection (RST) rather
    than closing it; whether the reset lands before or after this read depends on
    scheduling, so both are a close."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            return b""
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def reply(status: int = 200, body: bytes = b'{"ok":true}', headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{headers}"
    if "Transfer-Encoding" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Scripted:
    """Accepts connections and runs the next script on each; records the requests."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            # a connection more than scripted gets no answer (the test's asserts tell)
            script = self.scripts.pop(0) if self.scripts else (lambda conn, request: None)
            threading.Thread(target=self._run, args=(conn, script), daemon=True).start()

    def _run(self, conn: socket.socket, script: Script) -> None:
        with conn:
            request = read_request(conn)
            if request:
                self.requests.append(request)
                try:
                    script(conn, request)
                except (ConnectionResetError, BrokenPipeError):
                    pass  # the client went away first: what it saw is what the test checks
        self.closed += 1


@pytest.fixture
def client() -> Iterator[Callable[[str], ThreadClient]]:
    made: list[ThreadClient] = []

    def make(base_url: str) -> ThreadClient:
        made.append(ThreadClient(HttpOptions(base_url=base_url, auth="none", timeout=5), 1))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def answer_then_close(conn: socket.socket, _request: bytes) -> None:
    """Keep-alive as far as the headers say, then closed while idle (a server's
    keep-alive timeout)."""
    conn.sendall(reply())


def test_a_connection_the_server_closed_while_idle_is_not_used_again(client):
    server = Scripted([answer_then_close, answer_then_close])
    http = client(server.url)
    first = send(http, "POST", f"{server.url}/Users", what="create", json={"n": 1})
    assert first.json() == {"ok": True}
    assert wait_until(lambda: server.closed == 1)  # closed; the client has not noticed yet
    second = send(http, "POST", f"{server.url}/Users", what="create", json={"n": 2})
    assert second.json() == {"ok": True}
    assert server.connections == 2 and len(server.requests) == 2  # each sent once


def test_compressed_and_chunked_replies_arrive_whole(client):
    document = b'{"Resources": [' + b",".join([b'{"id": "x"}'] * 500) + b"]}"

    def gzipped(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(reply(body=gzip.compress(document), headers="Content-Encoding: gzip\r\n"))

    def chunked(conn: socket.socket, _request: bytes) -> None:
        chunks = [document[i : i + 1000] for i in range(0, len(document), 1000)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        conn.sendall(reply(body=body, headers="Transfer-Encoding: chunked\r\n"))

    server = Scripted([gzipped, chunked])
    for _ in range(2):
        http = client(server.url)
        response = send(http, "GET", f"{server.url}/Users", what="list users")
        assert len(response.json()["Resources"]) == 500
    assert b"accept-encoding: gzip, deflate" in server.requests[0].lower()


def close_without_answer(conn: socket.socket, _request: bytes) -> None:
    pass  # read the request, then close: did it apply it?


def reset_after_reading(conn: socket.socket, _request: bytes) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


@pytest.mark.parametrize("script", [close_without_answer, reset_after_reading])
def test_a_failure_after_the_request_went_is_ambiguous_for_a_create(client, script):
    server = Scripted([script, script])
    with pytest.raises(TargetError) as create:
        send(client(server.url), "POST", f"{server.url}/Users", what="create", json={})
    assert create.value.retryable and create.value.ambiguous
    with pytest.raises(TargetError) as read:
        send(client(server.url), "GET", f"{server.url}/Users/1", what="read")
    assert read.value.retryable and not read.value.ambiguous  # a read changes nothing


def test_a_refused_connection_is_not_ambiguous(client):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(TargetError) as caught:
        send(client(url), "POST", f"{url}/Users", what="create", json={})
    assert caught.value.retryable and not caught.value.ambiguous
    assert "create: cannot reach" in caught.value.message


def test_a_proxy_s_credentials_go_in_proxy_authorization_and_nowhere_else(client, monkeypatch):
    proxy = Scripted([answer_then_close])
    address = proxy.url.removeprefix("http://")
    monkeypatch.setenv("HTTP_PROXY", f"http://ops:s3cr%40t@{address}")
    response = send(
        client("http://scim.example.invalid"),
        "GET",
        "http://scim.example.invalid/v2/Users",
        what="list",
    )
    assert response.status_code == 200
    [request] = proxy.requests
    head = request.decode("latin-1")
    assert head.startswith("GET http://scim.example.invalid/v2/Users HTTP/1.1\r\n")
    expected = base64.b64encode(b"ops:s3cr@t").decode()
    assert f"Proxy-Authorization: Basic {expected}" in head
    assert "s3cr" not in head.replace(expected, "")


def test_an_informational_reply_where_the_answer_was_due_is_ambiguous_and_not_kept(client):
    """http.client skips only 100 Continue: a 103 Early Hints came back as the answer
    and the real one was read as the next request's."""

    def hints_first(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        conn.sendall(reply(201, b'{"id": "alice"}'))
        if read_request(conn):  # a next request on this connection would get that answer
            conn.sendall(reply(200, b'{"id": "bob"}'))

    def bob(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(reply(200, b'{"id": "bob"}'))

    server = Scripted([hints_first, bob])
    http = client(server.url)
    with pytest.raises(TargetError) as caught:
        send(http, "POST", f"{server.url}/Users", what="create alice", json={})
    assert caught.value.ambiguous and "informational reply (103)" in caught.value.message
    assert send(http, "GET", f"{server.url}/Users/bob", what="read").json() == {"id": "bob"}
    assert server.connections == 2


def test_a_reply_that_has_no_body_is_not_waited_for_whatever_its_headers_say(client):
    def no_content(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n")
        read_request(conn)  # and no chunk ever follows: reading one would wait forever

    server = Scripted([no_content])
    response = send(client(server.url), "DELETE", f"{server.url}/Users/x", what="delete")
    assert response.status_code == 204 and response.content == b""


def test_a_line_break_in_a_header_is_a_clear_error_that_does_not_show_the_value(client):
    server = Scripted([answer_then_close])
    headers = {"Authorization": "Bearer s3cret-t0ken\n"}  # a secret file's trailing newline
    with pytest.raises(TargetError) as caught:
        send(client(server.url), "GET", f"{server.url}/Users", what="list", headers=headers)
    assert "line break" in caught.value.message
    assert "s3cret" not in caught.value.message + str(caught.value.hint)
    assert server.requests == []  # nothing went out
