"""HTTP/1.1 on the standard library's ``http.client``: the transport under
:class:`~idprov.connectors.http_client.ThreadClient` for ``http://`` and ``https://``
origins, direct or through an ``http://`` proxy.

Why: httpcore's HTTP/1.1 (its pool and h11, a pure-Python protocol state machine)
cost 340 µs of CPU per request against a loopback SCIM server, ``http.client`` 110
(3,000 POSTs each, alternating, same process). A push is mostly requests: in `idprov
serve`'s outbox worker the HTTP client was half of a create's CPU.

What is kept of httpx: the transport interface (``handle_request`` takes an
``httpx.Request`` and returns an ``httpx.Response`` whose stream is the raw body, so
``gzip``/``deflate`` replies are decoded by httpx as before, and tests inject their own
transport in its place); httpx's exceptions, raised where httpcore raised them, so
:func:`~idprov.connectors.http.send` tells a failure before the request was sent
(``ConnectError``, ``ConnectTimeout``, ``WriteError``, ``ProxyError``: nothing
happened at the target) from one after it (``ReadTimeout``, ``ReadError``,
``RemoteProtocolError``: it may have been applied).

One connection, kept alive, used by one thread (a ThreadClient is per thread). A kept
connection whose socket is readable before a request (the server closed it while it
was idle, or sent something unasked) is dropped and a new one opened: a request is
never written to a connection the server has already closed. Through an ``http://``
proxy, ``http://`` requests go to the proxy in absolute form and ``https://`` ones
through a ``CONNECT`` tunnel, the certificate checked against the target's name;
``user:password@`` in the proxy URL is sent as ``Proxy-Authorization``. Proxies of
other schemes (``socks5://``, ``https://``), and an IPv6 address through a proxy
(Python 3.11's ``CONNECT`` drops its brackets), stay with httpx's transport.

Replies as a server may give them: an informational one (``102``, ``103``; http.client
skips only ``100``) where the answer was due is an ambiguous failure and the
connection is dropped (the answer that follows would be read as the next request's);
``204``, ``304`` and a ``HEAD``'s reply have no body whatever their headers say.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from urllib.parse import SplitResult, unquote, urlsplit

import httpx

from idprov.sockets import idle_readable


class StdlibTransport(httpx.BaseTransport):
    """Requests to one origin (scheme, host, port) over one kept-alive connection."""

    def __init__(
        self, url: httpx.URL, tls: ssl.SSLContext, timeout: float | None, proxy: str | None
    ) -> None:
        self._https = url.scheme == "https"
        self._host = url.raw_host.decode("ascii")  # an IDN in its ASCII (punycode) form
        self._port = url.port or (443 if self._https else 80)
        self._tls = tls
        self._timeout = timeout
        self._proxy: SplitResult | None = urlsplit(proxy) if proxy else None
        if self._proxy is not None and not (self._proxy.hostname and _port_of(self._proxy)):
            raise ValueError("the proxy URL names no host")
        self._conn: http.client.HTTPConnection | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        conn = self._connection()
        body = request.read()
        target = request.url.raw_path.decode("ascii")
        if self._proxy is not None and not self._https:
            target = str(request.url)  # absolute form, to the proxy
        try:
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
            if self._proxy is not None and not self._https:
                for header, text in _proxy_authorization(self._proxy).items():
                    conn.putheader(header, text)
            conn.endheaders(body or None)
        except TimeoutError as exc:
            self._drop()
            raise httpx.WriteTimeout(str(exc) or "timed out", request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise httpx.WriteError(_said(exc), request=request) from exc
        except ValueError:  # a line break in a header: its value (a token?) unsaid
            self._drop()
            message = "a request header holds a line break (check the IdP's token or secret)"
            raise httpx.LocalProtocolError(message, request=request) from None
        except BaseException:  # a Ctrl-C mid-request: the connection is not reusable
            self._drop()
            raise
        try:
            reply = conn.getresponse()
            if 100 <= reply.status < 200:  # http.client skips only 100 Continue
                raise _Informational(reply.status)
            if reply.status in (204, 304) or request.method == "HEAD":
                content = b""  # no body, whatever the headers say (a chunked 204 hangs)
                reply.close()
                self._drop()
            else:
                content = reply.read()
        except _Informational as exc:
            self._drop()  # the final answer follows on this connection: not ours to read
            message = f"an informational reply ({exc.status}) came where the answer was due"
            raise httpx.RemoteProtocolError(message, request=request) from None
        except TimeoutError as exc:
            self._drop()
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except http.client.RemoteDisconnected as exc:
            self._drop()
            message = "Server disconnected without sending a response."
            raise httpx.RemoteProtocolError(message, request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise httpx.ReadError(_said(exc), request=request) from exc
        except BaseException:
            self._drop()
            raise
        if reply.will_close:
            self._drop()
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.getheaders()]
        return httpx.Response(
            reply.status,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reply.reason.encode()},
            request=request,
        )

    def close(self) -> None:
        self._drop()

    # ---- the connection
    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None and not idle_readable(conn.sock):
            return conn
        self._drop()
        conn = self._new()
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, OSError | http.client.HTTPException):
                raise
            if self._proxy is not None and (
                isinstance(exc, http.client.HTTPException)
                or str(exc).startswith("Tunnel connection failed")
            ):
                raise httpx.ProxyError(_said(exc)) from exc
            raise httpx.ConnectError(_said(exc)) from exc
        self._conn = conn
        return conn

    def _new(self) -> http.client.HTTPConnection:
        timeout = self._timeout
        proxy = self._proxy
        if proxy is None:
            if self._https:
                return http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._tls
                )
            return http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        host, port = proxy.hostname or "", _port_of(proxy)
        if not self._https:
            return http.client.HTTPConnection(host, port, timeout=timeout)
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        conn.set_tunnel(self._host, self._port, headers=_proxy_authorization(proxy))
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Informational(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _port_of(url: SplitResult) -> int:
    """The URL's port (80 when it gives none); ValueError when it is not a number."""
    return url.port or 80


def _proxy_authorization(proxy: SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}


def _said(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
