"""What HTTP connectors share: the client, authentication, and error translation.

Every HTTP connector gets one client from outside
(:class:`~idprov.connectors.http_client.HttpClient`, per identity provider: its
timeout, TLS verification on unless switched off, its CA bundle), so connections are
pooled and tests can inject a transport. httpx errors become
:class:`~idprov.connectors.base.TargetError`, with ``retryable`` set for timeouts,
connection failures, 408, 429 and 5xx, and ``Retry-After`` parsed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.config.urls import http_url
from idprov.connectors.base import (
    CredentialsRefused,
    RemoteConflict,
    RemoteNotFound,
    TargetError,
    Throttled,
    note_status,
)
from idprov.errors import SecretError
from idprov.secrecy import blank, hold, hold_basic, request_secrets

if TYPE_CHECKING:
    import httpx

    from idprov.connectors.http_client import HttpClient

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpOptions:
    """Options every HTTP connector takes (connectors subclass this)."""

    base_url: str = ""
    auth: Literal["none", "basic", "bearer", "header"] = "bearer"
    token: SecretRef | None = None
    """Bearer token, or the API key for ``auth: header``."""
    username: str | None = None
    password: SecretRef | None = None
    header_name: str = "Authorization"
    """Header carrying the API key for ``auth: header``."""
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", http_url(self.base_url, "base_url"))
        if self.auth in ("bearer", "header") and self.token is None:
            raise Invalid(f"auth: {self.auth} needs a token reference (env:NAME...)", "token")
        if self.auth == "basic" and (self.username is None or self.password is None):
            raise Invalid("auth: basic needs username and password", "auth")
        if self.timeout <= 0:
            raise Invalid("must be positive", "timeout")


class RateLimiter:
    """Requests per second to one identity provider, shared by its threads, and with a
    ``concurrency``, requests in flight (:meth:`call`: every request holds one of
    them until its reply is read).

    With a ``rate`` it spaces requests out; without one it only counts them. When the
    target throttles (:meth:`throttled`, fed by the engine for every
    :class:`~idprov.connectors.base.Throttled`), the pace halves (from the rate seen in
    the last second when none was set) — once per burst, however many threads saw it —
    and then doubles every :data:`RECOVERY_SECONDS` until it is back at the configured
    rate (or unlimited): a run slows down for a few seconds, not for the rest of it.
    """

    RECOVERY_SECONDS = 1.0
    """Time for a throttled pace to double."""
    BURST_SECONDS = 0.25
    """Throttling seen again within this time of a halving is the same burst."""
    FLOOR = 0.5
    UNLIMITED = 1000.0

    def __init__(
        self,
        rate: float | None,
        clock: Any = time.monotonic,
        sleep: Any = time.sleep,
        concurrency: int | None = None,
    ) -> None:

        self.limit = rate
        self._throttled_rate: float | None = None
        self._since = 0.0
        self.slowdowns = 0
        """How many times throttling halved the pace (bursts count once)."""
        self._next = 0.0
        self._recent: deque[float] = deque()
        """When the requests of the last second went, oldest first."""
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(concurrency) if concurrency else None

    @property
    def rate(self) -> float | None:
        """The pace now (None: unlimited)."""
        with self._lock:
            return self._rate(self._clock())

    def _rate(self, now: float) -> float | None:
        if self._throttled_rate is None:
            return self.limit
        rate = self._throttled_rate * 2 ** ((now - self._since) / self.RECOVERY_SECONDS)
        ceiling = self.limit if self.limit is not None else self.UNLIMITED
        if rate >= ceiling:
            self._throttled_rate = None
            return self.limit
        return rate

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one request: wait for a slot (with a ``concurrency``) and then for
        the pace; the slot is let go when the reply has been read."""
        if self._slots is None:
            self.acquire()
            yield
            return
        with self._slots:
            self.acquire()
            yield

    def acquire(self) -> None:
        """Wait for the pace (a request is about to go)."""
        with self._lock:
            now = self._clock()
            self._forget_before(now)
            self._recent.append(now)
            rate = self._rate(now)
            if rate is None:
                return
            start = max(now, self._next)
            self._next = start + 1.0 / rate
        if start > now:
            self._sleep(start - now)

    def _forget_before(self, now: float) -> None:
        """Drop the requests older than a second: each is dropped once (a list
        filtered on every request cost ~30 µs a request at 1,000 requests/s)."""
        recent = self._recent
        while recent and now - recent[0] >= 1.0:
            recent.popleft()

    def throttled(self) -> None:
        """The target asked to slow down: go at half the pace."""
        with self._lock:
            now = self._clock()
            if self._throttled_rate is not None and now - self._since < self.BURST_SECONDS:
                return
            pace = self._rate(now)
            if pace is None:
                self._forget_before(now)
                pace = float(max(len(self._recent), 2))
            self._throttled_rate = max(pace / 2, self.FLOOR)
            self._since = now
            self.slowdowns += 1
            self._next = min(self._next, now + 1.0 / self._throttled_rate)


def auth_headers(options: HttpOptions) -> dict[str, str]:
    """Request headers that authenticate; reads the secret (never logs it, and holds
    it for :func:`idprov.secrecy.blank`). A secret HTTP cannot carry (a character
    beyond ASCII) is a :class:`SecretError` naming the option and its reference."""
    if options.auth == "bearer" and options.token is not None:
        token = _header_safe(options.token.reveal(), "token", options.token)
        return {"Authorization": f"Bearer {token}"}
    if options.auth == "header" and options.token is not None:
        return {options.header_name: _header_safe(options.token.reveal(), "token", options.token)}
    if options.auth == "basic" and options.password is not None:
        import base64

        password = options.password.reveal()
        raw = f"{options.username}:{password}".encode()
        encoded = base64.b64encode(raw).decode()
        hold_basic(options, options.username, password, encoded)
        return {"Authorization": "Basic " + encoded}
    return {}


def _header_safe(value: str, key: str, ref: SecretRef) -> str:
    """``value`` if an HTTP header can carry it (ASCII, as httpx sends headers);
    else a SecretError naming ``options.key`` and its reference, never the value."""
    hold(ref, value)
    if value.isascii():
        return value
    at = next(i for i, c in enumerate(value) if not c.isascii()) + 1
    raise SecretError(
        f"the secret options.{key} names ({ref}) holds a character that is not ASCII "
        f"(character {at} of {len(value)}): HTTP headers carry ASCII only",
        hint=f"check the value {ref} names: a token or API key is ASCII (a typographic "
        "quote or a non-breaking space pasted with it is not)",
    )


def json_payload(
    body: Any, media_type: str = "application/json", accept: str | None = None
) -> tuple[dict[str, str], bytes | None]:
    """The headers (``Accept``; ``Content-Type`` with a body) and the UTF-8 content of
    a request that sends ``body`` as JSON (None: no body) and reads JSON back."""
    headers = {"Accept": accept or media_type}
    if body is None:
        return headers, None
    headers["Content-Type"] = media_type
    return headers, json.dumps(body, ensure_ascii=False).encode()


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the target asked us to wait (Retry-After: seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    import email.utils  # 4.6 ms, for this rare form only (every command with IdPs imports us)

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def send(client: HttpClient, method: str, url: str, *, what: str, **kwargs: Any) -> httpx.Response:
    """Send a request; transport failures become retryable TargetErrors."""
    import httpx

    try:
        response = client.request(method, url, **kwargs)
        note_status(response.status_code)
        return response
    except httpx.TimeoutException as exc:  # connecting, or waiting for a slot: not sent
        sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        raise TargetError(
            f"{what}: timed out ({type(exc).__name__})",
            retryable=True,
            ambiguous=sent and method != "GET",
        ) from exc
    except httpx.TransportError as exc:  # after the request went: it may have been applied
        if _certificate_refused(exc):
            raise TargetError(
                f"{what}: the TLS certificate of {_origin(url)} cannot be verified ({exc}); "
                "if a private CA signed it, set options.ca_file to that CA's certificate "
                "(a PEM file)",
                hint="set options.ca_file of the identity provider to the PEM file of the CA "
                "that signed the target's certificate (TLS verification stays on)",
            ) from exc
        sent = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError)
        raise TargetError(
            _unreachable(what, url, exc, client.proxy_for(url)),
            retryable=True,
            ambiguous=sent and method != "GET",
        ) from exc


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a transport error is the target's certificate failing verification:
    not temporary, so never retried."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _unreachable(what: str, url: str, exc: BaseException, proxy: tuple[str, str] | None) -> str:
    """What a connection failure says: the target, or the proxy it went through (by
    its address and the variable that names it, never its credentials)."""
    import httpx

    if proxy is None:
        return f"{what}: cannot reach {_origin(url)}: {exc}"
    from urllib.parse import urlsplit

    parts, variable = urlsplit(proxy[0]), proxy[1]
    address = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # no user, no password
    fix = f"fix or unset {variable}, or list the host in NO_PROXY"
    if isinstance(exc, httpx.ConnectError):
        return (
            f"{what}: cannot reach the proxy {address} ({variable}) on the way to "
            f"{_origin(url)}: {exc}; {fix}"
        )
    return f"{what}: cannot reach {_origin(url)} through the proxy {address} ({variable}): {exc}"


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def raise_for_status(
    response: httpx.Response,
    what: str,
    detail: str | None,
    credentials: str | None = None,
    *,
    gone: bool | None = None,
) -> None:
    """Turn a non-2xx response into the right TargetError, with the target's message;
    a refusal of idprov's credentials names ``credentials`` (:func:`credentials_named`).
    ``gone``: whether a 404 is the target's own word that the object is gone (see
    :func:`status_error`)."""
    if response.status_code >= 400:
        message = f"{what}: HTTP {response.status_code}" + (f": {detail}" if detail else "")
        error = status_error(response, message, gone=gone)
        if credentials and isinstance(error, CredentialsRefused):
            fix = f"check {credentials} and its permissions at the target"
            error = CredentialsRefused(f"{error.message}; {fix}", status=error.status, hint=fix)
        raise error


CREDENTIALS_HINT = "check the identity provider's credentials and their permissions"
NOT_THE_TARGET = (
    "the reply is not the target's own answer (no error of its API), so it proves "
    "nothing gone there"
)
NOT_THE_TARGET_HINT = (
    "check that base_url names the target's API, and that a proxy or ingress in front of "
    "it routes there"
)


def api_answer(response: httpx.Response) -> bool:
    """Whether an error reply is an HTTP API's own answer: a JSON body. A web server's
    or proxy's page (HTML, text, nothing) is not: every path of a wrong base_url, or of
    a dead ingress, answers 404 with one."""
    return reply_json(response) is not None


def credentials_named(options: HttpOptions) -> str | None:
    """The credentials an IdP's options give, by the secret references they name
    (``the secret options.token names (env:SCIM_TOKEN)``), never by their values."""
    if options.auth in ("bearer", "header") and options.token is not None:
        return f"the secret options.token names ({options.token})"
    if options.auth == "basic" and options.password is not None:
        return (
            f"options.username ({options.username}) and the secret options.password names "
            f"({options.password})"
        )
    return None


def status_error(
    response: httpx.Response,
    message: str,
    *,
    conflict: bool = False,
    gone: bool | None = None,
    throttled: bool = False,
    retryable: bool = False,
    refused_hint: str = CREDENTIALS_HINT,
) -> TargetError:
    """The error of an HTTP error reply, by its status or by what the target's error
    body says (``conflict``, ``gone``, ``throttled``, ``retryable``): conflict, not
    found, throttled, credentials refused (401; 403 unless retryable), or another
    failure, retryable for 408, 425, 429 and 5xx, ambiguous for 5xx. What the reply
    says is shown without the request's credentials (:func:`redact`).

    **A 404 proves an object gone only in the target's own terms**: ``gone``, which
    the connector reads from the reply in its protocol's terms (a SCIM error, Google's
    or Salesforce's error JSON); None: the reply is JSON (:func:`api_answer`). A 404
    without that proof (an HTML page: a wrong base_url, a proxy or ingress in front of
    a target that is down) is a failure, never :class:`RemoteNotFound`, on which the
    engine would forget or re-create an account that is still there."""
    status = response.status_code
    message = redact(message, response)
    if conflict or status == 409:
        return RemoteConflict(message, status=status)
    if gone is None:
        gone = status == 404 and api_answer(response)
    if gone:
        return RemoteNotFound(message, status=status)
    if status == 404:
        return TargetError(f"{message}; {NOT_THE_TARGET}", status=status, hint=NOT_THE_TARGET_HINT)
    if throttled or status == 429:
        return Throttled(message, status=status, retry_after=retry_after(response))
    retryable = retryable or status in RETRYABLE_STATUS
    if status == 401 or (status == 403 and not retryable):
        return CredentialsRefused(message, status=status, hint=refused_hint)
    return TargetError(
        message,
        status=status,
        retryable=retryable,
        retry_after=retry_after(response),
        ambiguous=status >= 500,
    )


def redact(text: str, response: httpx.Response) -> str:
    """``text`` (from a reply) with the credentials its request sent blanked (and every
    secret idprov holds: :func:`idprov.secrecy.blank`): a target may echo them in an
    error (a debugging endpoint a base_url names by mistake does), and messages go to
    the terminal, the audit log and the outbox."""
    import httpx

    try:
        request = response.request
    except RuntimeError:  # a response made without a request: nothing was sent
        return blank(text)
    try:
        bodies = [request.content]
    except httpx.RequestNotRead:  # a streamed body (idprov sends none)
        bodies = []
    return blank(text, request_secrets(request.headers.items(), _form_pairs(request)), bodies)


def _form_pairs(request: httpx.Request) -> list[tuple[str, str]]:
    """The fields of a form a request sent (an OAuth token request's client secret or
    signed assertion)."""
    from urllib.parse import parse_qsl

    import httpx

    if not request.headers.get("content-type", "").startswith("application/x-www-form"):
        return []
    try:
        body = request.content
    except httpx.RequestNotRead:  # a streamed body (idprov sends none)
        return []
    return parse_qsl(body.decode("utf-8", "replace"))


def reply_json(response: httpx.Response) -> Any:
    """The reply's JSON, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def reply_detail(response: httpx.Response, data: Any) -> str:
    """An error reply's detail for a message: its JSON ``data`` as sent, else the start
    of its text (credentials blanked before either is cut short)."""
    if isinstance(data, dict | list):
        return redact(json.dumps(data, ensure_ascii=False), response)[:2000]
    return reply_text(response) or "(empty reply)"


def reply_text(response: httpx.Response, limit: int = 300) -> str:
    """The start of a reply's text for a message, its request's credentials blanked."""
    return redact(response.text.strip(), response)[:limit]


def json_reply(response: httpx.Response, what: str, object_only: bool = True) -> Any:
    """The reply's JSON (an object, unless ``object_only`` is off). A reply that is not
    is an ambiguous, retryable failure: the target may have done the work anyway."""
    try:
        data = response.json()
    except ValueError:
        data = _INVALID
    if data is _INVALID or (object_only and not isinstance(data, dict)):
        raise TargetError(
            f"{what}: the reply is not {'a JSON object' if object_only else 'JSON'} "
            f"({reply_text(response, 80)!r})",
            status=response.status_code,
            retryable=True,
            ambiguous=True,
        )
    return data


_INVALID = object()
