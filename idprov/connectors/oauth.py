"""OAuth 2.0 for the SaaS connectors: signed assertions, token requests, a token cache.

Google Workspace and Salesforce both exchange credentials for an access token at a
token endpoint, then send plain bearer requests until the token expires or is refused.
This module is what they share, so that neither repeats it:

- :func:`read_key_text` and :func:`load_private_key`: key material from a secret
  reference (the whole of a key file: a ``file:`` reference otherwise gives one line).
- :func:`sign_assertion`: a JWT signed with RS256 for the JWT bearer grant (RFC 7523),
  with PyJWT and cryptography, imported only when a connector signs.
- :func:`request_token`: a form POST to a token endpoint; an OAuth error (RFC 6749
  5.2: ``error``, ``error_description``) becomes a TargetError carrying the endpoint's
  own JSON.
- :class:`TokenCache`: one token per connector, shared by the engine's threads,
  fetched again when it expires or when the target refuses it.
- :func:`send_authorized`: a request with the cached token; on 401 the token is
  fetched again and the request sent once more. A second 401 is returned to the
  caller, who reports it.

Private keys, client secrets, passwords, assertions and access tokens never appear in
a message or a ``repr``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.config.secrets import SecretRef
from idprov.connectors.base import CredentialsRefused, TargetError, Throttled
from idprov.connectors.http import RETRYABLE_STATUS, reply_detail, reply_json, retry_after, send
from idprov.errors import IdprovError, SecretError
from idprov.secrecy import hold

if TYPE_CHECKING:
    import httpx

    from idprov.connectors.http_client import HttpClient

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
EXPIRY_MARGIN = 60.0
"""Seconds before its expiry that a token is no longer used (clocks and slow requests)."""


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and what the token endpoint said with it."""

    value: str = field(repr=False)
    expires_in: float | None = None
    """Seconds the token is valid for, as issued; None: until the target refuses it."""
    details: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The token response without its tokens (Salesforce's ``instance_url``...)."""


def token_from_response(data: Mapping[str, Any], what: str) -> AccessToken:
    """An :class:`AccessToken` from a successful token response (RFC 6749 5.1)."""
    value = data.get("access_token")
    if not isinstance(value, str) or not value:
        raise TargetError(f"{what}: the token endpoint's reply has no access_token")
    expires_in = data.get("expires_in")
    try:
        lifetime = float(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        lifetime = None
    details = {k: v for k, v in data.items() if k not in ("access_token", "refresh_token")}
    token = AccessToken(value, lifetime, details)
    refresh = data.get("refresh_token")  # blanked in any error while the token is kept
    hold(token, value, refresh if isinstance(refresh, str) else None)
    return token


# ---------------------------------------------------------------- keys and assertions
def read_key_text(ref: SecretRef) -> str:
    """The whole secret behind ``ref``: key files span many lines. A PEM pasted into
    one line with ``\\n`` escapes (common in environment variables) is unescaped."""
    if ref.scheme == "file":
        path = ref.ref.partition(":")[2]
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretError(
                f"key file {path} cannot be read: {exc.strerror}",
                hint="check the path of the file: reference, and that idprov may read it "
                "(keep it mode 0600)",
            ) from exc
    else:
        text = ref.reveal()
    text = text.strip()
    if text.startswith("-----BEGIN") and "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    if not text:
        raise SecretError(f"secret {ref} is empty", hint="put the key material there")
    hold(ref, text)
    return text


def load_private_key(pem: str, source: str) -> Any:
    """The RSA private key in ``pem`` (unencrypted PKCS#8 or PKCS#1), for signing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise SecretError(
            f"{source} does not hold an unencrypted PEM private key "
            f"({type(exc).__name__} while reading it)",
            hint="give the key as '-----BEGIN PRIVATE KEY-----...' text without a "
            "passphrase (openssl pkcs8 -topk8 -nocrypt -in key.pem)",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecretError(
            f"{source} holds a {type(key).__name__}, not an RSA key",
            hint="JWT bearer assertions are signed with RS256: use an RSA key",
        )
    return key


def sign_assertion(key: Any, claims: Mapping[str, Any], key_id: str | None = None) -> str:
    """A JWT (RS256) with ``claims``, signed with ``key``; ``key_id`` goes in ``kid``."""
    import jwt

    headers = {"kid": key_id} if key_id else None
    return jwt.encode(dict(claims), key, algorithm="RS256", headers=headers)


def with_hint(exc: TargetError) -> str:
    """What `idp test` says of a failed sign-in or request: the message, then the hint
    in parentheses unless the message gives that advice already (a certificate that
    fails verification names ``options.ca_file`` in both)."""
    hint = exc.hint
    if not hint:
        return exc.message
    named = set(re.findall(r"options\.\w+", hint))
    if hint in exc.message or (named and named <= set(re.findall(r"options\.\w+", exc.message))):
        return exc.message
    return f"{exc.message} ({hint})"


# ---------------------------------------------------------------- token requests
def request_token(
    client: HttpClient,
    url: str,
    form: Mapping[str, str],
    what: str,
    hint: str,
) -> AccessToken:
    """POST ``form`` to the token endpoint ``url``. A refusal becomes a TargetError
    with the endpoint's JSON (never the form, which holds secrets) and ``hint``."""
    response = send(
        client,
        "POST",
        url,
        what=what,
        data=dict(form),
        headers={"Accept": "application/json"},
    )
    status = response.status_code
    data = reply_json(response)
    if status >= 400 or not isinstance(data, dict):
        detail = reply_detail(response, data)
        message = f"{what}: HTTP {status}: {detail}"
        if status == 429:
            raise Throttled(message, status=status, retry_after=retry_after(response))
        if 400 <= status < 500 and status != 408:  # invalid_grant, invalid_client...
            raise CredentialsRefused(message, status=status, hint=hint)
        raise TargetError(
            message,
            status=status,
            retryable=status in RETRYABLE_STATUS,
            retry_after=retry_after(response),
        )
    return token_from_response(data, what)


# ---------------------------------------------------------------- cache and requests
REFUSAL_MEMORY = 30.0
"""Seconds a refused token request is not repeated (the credentials are wrong)."""


class TokenCache:
    """One access token, shared by threads: fetched on first use, again when less than
    :data:`EXPIRY_MARGIN` of its life is left, and again after the target refused it.
    ``fetch`` errors that are not TargetErrors (a missing secret, a bad key) become
    TargetErrors, so that the engine records them as this operation's failure."""

    def __init__(
        self, fetch: Callable[[], AccessToken], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._token: AccessToken | None = None
        self._deadline: float | None = None
        self._lock = threading.Lock()
        self._refusal: tuple[float, CredentialsRefused] | None = None
        self.fetches = 0
        """How many tokens were fetched (for `idp test` and tests)."""

    def get(self) -> AccessToken:
        with self._lock:
            now = self._clock()
            if self._token is None or (self._deadline is not None and now >= self._deadline):
                self._token = self._fetch_now()
                lifetime = self._token.expires_in
                margin = min(EXPIRY_MARGIN, lifetime / 10) if lifetime else 0.0
                self._deadline = now + lifetime - margin if lifetime is not None else None
            return self._token

    def _fetch_now(self) -> AccessToken:
        """A new token. A refusal of the credentials is remembered for
        :data:`REFUSAL_MEMORY` seconds and raised again without asking: threads waiting
        for a token do not each send the same hopeless request."""
        now = self._clock()
        if self._refusal is not None and now - self._refusal[0] < REFUSAL_MEMORY:
            raise self._refusal[1]
        self.fetches += 1
        try:
            return self._fetch()
        except CredentialsRefused as exc:
            self._refusal = (now, exc)
            raise
        except TargetError:
            raise
        except IdprovError as exc:  # a secret that cannot be read, a key that is no key
            refused = CredentialsRefused(exc.message, hint=exc.hint)
            self._refusal = (now, refused)
            raise refused from exc

    def refused(self, token: AccessToken) -> None:
        """The target refused ``token``: the next :meth:`get` fetches a new one (once,
        however many threads saw the refusal)."""
        with self._lock:
            if self._token is token:
                self._token = None


def send_authorized(
    client: HttpClient,
    tokens: TokenCache,
    method: str,
    url: str | Callable[[AccessToken], str],
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send with the cached bearer token; on 401 fetch a new token and send once more.
    ``url`` may depend on the token (Salesforce's instance URL comes with it)."""
    token = tokens.get()
    response = _send_with(client, token, method, url, what, headers, kwargs)
    if response.status_code == 401:
        tokens.refused(token)
        token = tokens.get()
        response = _send_with(client, token, method, url, what, headers, kwargs)
    return response


def _send_with(
    client: HttpClient,
    token: AccessToken,
    method: str,
    url: str | Callable[[AccessToken], str],
    what: str,
    headers: Mapping[str, str] | None,
    kwargs: dict[str, Any],
) -> httpx.Response:
    target = url(token) if callable(url) else url
    merged = {**(headers or {}), "Authorization": f"Bearer {token.value}"}
    return send(client, method, target, what=what, headers=merged, **kwargs)


def check_no_http_auth(options: Any, connector: str, how: str) -> None:
    """Refuse HttpOptions' own authentication keys on an OAuth connector (``how``
    says where its credentials go instead). Raises ValueError for the config loader."""
    from idprov.config.schema import Invalid

    if options.auth != "none":
        raise Invalid(f"the {connector} connector signs in with OAuth ({how}); remove auth", "auth")
    if options.token is not None:
        raise Invalid(f"not used by the {connector} connector ({how})", "token")
