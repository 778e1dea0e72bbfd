"""The HTTP plumbing of `idprov serve`, below :mod:`idprov.inbound.scim_server`.

The ASGI side (a request's path and the base URL its client sees, a body read up
to a limit, a JSON response sent with its length) and the listening side: a TCP
socket bound before the server starts (so a busy port is a clear error and port 0
gives a free one), its SCIM root URL, and the uvicorn server that runs the
application.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from idprov.errors import UsageError

if TYPE_CHECKING:
    from scim2_server.requests import ScimRequest

    from idprov.inbound.scim_server import InboundServer

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def request_path(scope: Scope) -> str:
    """The request's path below the application's root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path.removeprefix(root) if root else path


def client_base_url(scope: Scope, headers: Iterable[tuple[str, str]]) -> str:
    """The root of the SCIM endpoints as the client sees it (``.../v2``)."""
    host = next((v for k, v in headers if k.lower() == "host"), "")
    if not host and scope.get("server"):
        host = "{}:{}".format(*scope["server"])
    return f"{scope['scheme']}://{host}{scope.get('root_path', '')}/v2"


async def read_body(receive: Receive, request: ScimRequest, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes (refused from Content-Length
    before reading, when the client sends one)."""
    length = request.header("Content-Length")
    if length and length.strip().isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


NO_CONTENT = (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED)
"""Statuses whose responses carry no content, and so no Content-Type."""


async def send_json(
    send: Send, status: HTTPStatus | int, headers: dict[str, str], body: dict[str, Any] | None
) -> None:
    """Send a response with a JSON ``body`` (None: an empty one). A 204 or 304 has
    no content at all: no Content-Type and no Content-Length (RFC 9110 8.6, 15.3.5)."""
    payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if int(status) in NO_CONTENT:
        payload = b""
        raw = [(k, v) for k, v in raw if k.lower() not in (b"content-type", b"content-length")]
    else:
        raw.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": int(status), "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def bind(host: str, port: int, own: bool = False, listen: bool = True) -> Any:
    """A listening TCP socket on ``host``:``port`` (0: a free port). ``own``: one of
    the sockets of `serve --workers` on the same port (``SO_REUSEPORT``). Not
    ``listen``: only bound, which proves the port free (Linux refuses the bind where a
    socket listens) and names it, while a client that connects is refused; one that
    a listening socket queued would be reset when it closed."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if own:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit it: without, each response (head, then body) waits
    # for the client's delayed ACK, some 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(2048)  # clients told the URL queue until uvicorn accepts
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="choose another --port, or stop what listens there",
        ) from exc
    return sock


def base_url(sock: Any, tls: bool = False) -> str:
    """The SCIM root URL of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/v2"


def uvicorn_server(
    server: InboundServer,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    supervised: bool = False,
) -> Any:
    """A uvicorn server for ``server``: uvicorn, because it is the maintained ASGI
    server with the fewest dependencies (h11 and click, which idprov has already),
    serves TLS from a certificate file, and shuts down gracefully on SIGTERM/SIGINT
    (here it then returns, instead of dying of the signal, so `serve` exits 0); a
    second SIGINT stops it at once.

    ``supervised``: a worker of `serve --workers` (see
    :mod:`~idprov.inbound.serve_workers`) ignores SIGINT, which a Ctrl-C sends to the
    whole process group, and stops gracefully on SIGTERM, however many come: its
    supervisor passes a stop on as SIGTERM, and a service manager may send SIGTERM
    to every process of the group as well (systemd does). Two signals must not cut
    the requests in flight short; the supervisor kills what is still busy after a
    while."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    getattr(self, "_captured_signals", []).clear()

        def handle_exit(self, sig: int, frame: Any) -> None:
            if not supervised:
                super().handle_exit(sig, frame)
            elif sig == signal.SIGTERM:
                self.should_exit = True

    config = uvicorn.Config(
        server,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=10,
    )
    return Server(config)
