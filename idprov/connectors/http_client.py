"""The HTTP client idprov gives every HTTP connector: one per identity provider.

It sends through a transport of its own on ``http.client``
(:mod:`~idprov.connectors.http_wire`: a third of httpcore's CPU per request; httpx's
transport for ``socks5://`` and ``https://`` proxies) directly. ``httpx.Client``'s
layers above the transport — cookie jars, auth flows, redirect handling, base-URL and
header merging — cost about 135 µs of CPU per request (measured against a loopback
server: 500 µs per POST through ``httpx.Client``, 365 µs through its transport) and
idprov uses none of them: connectors send absolute URLs with their own
authentication headers, keep no cookies and never follow redirects (a redirect is
the target's answer).

What ``httpx.Client`` does from the environment is kept: ``HTTPS_PROXY``,
``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` choose a proxy per origin, and
TLS verification is on (against the IdP's ``ca_file`` or the default CA bundle)
unless the IdP says ``verify_tls: false``. Tests inject a transport
(``httpx.MockTransport``), which then serves every URL: the same code path.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from idprov.secrecy import note_request

if TYPE_CHECKING:
    import ssl

    import httpx

    from idprov.connectors.http import HttpOptions, RateLimiter


def _user_agent() -> str:
    from idprov import __version__

    return f"idprov/{__version__}"


class HttpClient:
    """The client interface connectors use: :meth:`request` and its verbs, and
    :meth:`close`."""

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def proxy_for(self, url: str) -> tuple[str, str] | None:
        """(proxy URL, the environment variable naming it) that requests to ``url`` go
        through; None: straight to the target."""
        return None

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


class ThreadClient(HttpClient):
    """Requests to one identity provider from one thread (see the module docstring)."""

    def __init__(
        self,
        options: HttpOptions,
        max_connections: int,
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        import httpx

        self._seconds = options.timeout
        self._timeout = httpx.Timeout(options.timeout).as_dict()
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._tls = tls if tls is not None else tls_context(options)
        self._injected = transport
        self._limiter = limiter
        self._transports: dict[tuple[str, str, int | None], httpx.BaseTransport] = {}
        self._defaults = httpx.Headers(
            {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "User-Agent": _user_agent()}
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send ``method`` to the absolute ``url`` and read the whole reply.
        ``kwargs``: what :class:`httpx.Request` takes (``params``, ``headers``,
        ``json``, ``content``, ``data``). Transport failures raise httpx's errors."""
        import httpx

        headers = self._defaults.copy()
        headers.update(kwargs.pop("headers", None) or {})
        # blanked in any error built from the reply
        note_request(headers, kwargs.get("data"), kwargs.get("content", kwargs.get("json")))
        request = httpx.Request(
            method, url, headers=headers, extensions={"timeout": self._timeout}, **kwargs
        )
        if self._limiter is None:
            return self._send(request)
        with self._limiter.call():
            return self._send(request)

    def _send(self, request: httpx.Request) -> httpx.Response:
        response = self._transport_for(request.url).handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        response.request = request
        return response

    def proxy_for(self, url: str) -> tuple[str, str] | None:
        import httpx

        return None if self._injected is not None else named_proxy(httpx.URL(url))

    def close(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()

    def _transport_for(self, url: httpx.URL) -> httpx.BaseTransport:
        if self._injected is not None:
            return self._injected
        origin = (url.scheme, url.host, url.port)
        transport = self._transports.get(origin)
        if transport is None:
            transport = self._transports[origin] = self._new_transport(url)
        return transport

    def _new_transport(self, url: httpx.URL) -> httpx.BaseTransport:
        import httpx

        proxy = environment_proxy(url)
        try:
            if url.scheme in ("http", "https") and (
                not proxy or (proxy.startswith("http://") and ":" not in url.host)
            ):  # http.client's CONNECT writes an IPv6 target without its brackets
                from idprov.connectors.http_wire import StdlibTransport

                return StdlibTransport(url, self._tls, self._seconds, proxy)
            return httpx.HTTPTransport(verify=self._tls, limits=self._limits, proxy=proxy)
        except (httpx.InvalidURL, ValueError, ImportError) as exc:  # ImportError: SOCKS
            from idprov.connectors.base import TargetError

            # the proxy URL is not shown: it may hold a user and password, and what the
            # parser says of a URL it cannot read may quote any part of it
            said = (
                "its URL holds credentials, so it is not shown"
                if proxy and "@" in proxy
                else str(exc)
            )
            raise TargetError(
                f"cannot use the proxy the environment names for {url.scheme}://{url.host}"
                f" ({type(exc).__name__}: {said})",
                hint="fix or unset HTTPS_PROXY, HTTP_PROXY and ALL_PROXY (an http:// "
                "proxy URL), or list the host in NO_PROXY",
            ) from exc


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url``: ``HTTPS_PROXY``/``HTTP_PROXY`` by
    scheme, else ``ALL_PROXY``; none for a host ``NO_PROXY`` lists (as curl and
    ``httpx.Client`` read them)."""
    named = named_proxy(url)
    return None if named is None else named[0]


def named_proxy(url: httpx.URL) -> tuple[str, str] | None:
    """(proxy URL, the variable that names it) for ``url`` (see :func:`environment_proxy`)."""
    import urllib.request

    proxies = urllib.request.getproxies()
    key = url.scheme if proxies.get(url.scheme) else "all"
    proxy = proxies.get(key)
    host = f"{url.host}:{url.port}" if url.port else url.host  # NO_PROXY may name a port
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return (proxy if "://" in proxy else f"http://{proxy}"), f"{key.upper()}_PROXY"


class PerThreadClient(HttpClient):
    """A :class:`ThreadClient` per thread, all made alike by ``factory``, behind the
    one client interface connectors use. The engine calls a target from up to
    ``max_concurrency`` threads at once; on one shared client they queue on its
    connection pool's lock (measured: 0.71x of a plain loop's throughput, against
    0.8x and more with a client per thread). Each thread's client keeps its own
    keep-alive connection."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
            with self._lock:
                self._all.append(client)
        return client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return cast(ThreadClient, self._client()).request(method, url, **kwargs)

    def proxy_for(self, url: str) -> tuple[str, str] | None:
        return cast(ThreadClient, self._client()).proxy_for(url)

    def close(self) -> None:
        with self._lock:
            clients, self._all = self._all, []
        for client in clients:
            client.close()


def per_thread_client(
    options: HttpOptions,
    transport: httpx.BaseTransport | None,
    limiter: RateLimiter | None,
    tls: ssl.SSLContext | None = None,
) -> HttpClient:
    """A :class:`PerThreadClient` of :class:`ThreadClient`; they share one TLS context
    (``tls``, or one made for them)."""
    tls = tls if tls is not None else tls_context(options)
    return PerThreadClient(lambda: ThreadClient(options, 1, transport, limiter, tls))


def tls_context(options: HttpOptions) -> ssl.SSLContext:
    """The TLS settings of an IdP's clients: verification on (against ``ca_file``, or
    the CA certificates httpx trusts by default) unless ``verify_tls: false``. Made
    once per IdP and shared by its clients: making one reads every CA certificate
    (measured: 10–20 ms, in each of the dozens of clients `idprov serve` makes)."""
    import httpx

    if options.verify_tls and options.ca_file:
        return httpx.create_ssl_context(verify=_ca_context(options.ca_file))
    return httpx.create_ssl_context(verify=options.verify_tls)


def _ca_context(ca_file: str) -> Any:
    """A TLS context trusting the CA certificates in ``ca_file``."""
    import ssl

    from idprov.errors import ConfigError

    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ca_file {ca_file}: cannot load CA certificates: "
            f"{getattr(exc, 'strerror', None) or exc}",
            hint="give a readable PEM file of the CA certificate(s) that sign the target's "
            "certificate",
        ) from exc
