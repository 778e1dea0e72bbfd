"""The secrets idprov holds, blanked in every error built from what a target said.

A target may echo the request it refused (a validation error quoting the submitted
object, a debugging endpoint a base_url names by mistake, a SOAP fault quoting the
envelope, a Bulk reply per operation), and errors go to the terminal, the outbox, the
audit log and the health table. So :class:`~idprov.connectors.base.TargetError`
blanks, when it is built, every secret idprov knows of (:func:`blank`):

- **held** (:func:`hold`), from any thread, for as long as what holds it exists:
  the value a secret reference resolves to (``env:``, ``file:``, ``keyring:``, for
  the life of the :class:`~idprov.config.secrets.SecretRef`, that is of the
  configuration), an access token a connector obtained (while it is cached), a Basic
  ``user:password`` and its encoding, a user's plaintext password (while the account
  carrying it to a connector exists: the engine plans in one thread and pushes in
  another);
- **in flight** (:func:`note_request`, per thread): the headers and form of the last
  requests :func:`idprov.connectors.http.send` sent, read only when an error is built.

Holding costs a dictionary entry, noting a request a reference kept: nothing is
computed on the success path. :func:`blank` runs only when an error is built.

**Short secrets.** A secret of 8 characters or more is blanked wherever it occurs. A
held secret of 1 to 7 characters is blanked only where it stands as a value: right
after a quote, ``=``, ``:`` or ``>`` (or ``=``/``:`` and one space), and before a
quote, ``&``, ``,``, ``;``, ``<``, a closing bracket, a space or the end:
``"password": "ab1"``, ``'X-Api-Key': 'k3Yq9'``, ``svc:ab1``, ``password=ab1``,
``<password>ab1</password>``. Anywhere else it would be a word or part of one (a
3-letter password blanking every "the" of a message). Values read from a request's
headers and form that idprov does not hold (which may be no secret: an ETag, a client
id) are blanked only from 8 characters on.
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MASK = "***"
LONG = 8
"""From this length a secret is blanked wherever it occurs."""
RECENT_REQUESTS = 4
"""Requests per thread whose headers and form are kept for :func:`blank`."""

PLAIN_HEADERS = frozenset(
    ("accept", "accept-encoding", "connection", "content-length", "content-type", "host")
    + ("user-agent",)
)
"""Request headers that carry no credentials: every other value is blanked in what a
reply says."""

_lock = threading.Lock()
_held: dict[tuple[int, str], Callable[[], object]] = {}
"""(id of the holder, secret) -> the holder, weakly."""
_prune_at = 256
_local = threading.local()


def hold(owner: object, *values: str | None) -> None:
    """Blank ``values`` in every error while ``owner`` exists (a secret reference, a
    token, an account carrying a password)."""
    global _prune_at
    try:
        ref: Callable[[], object] = weakref.ref(owner)
    except TypeError:  # an object without weak references (slots): held for good
        ref = itertools.repeat(owner).__next__
    with _lock:
        for value in values:
            if value:
                _held[(id(owner), value)] = ref
        if len(_held) >= _prune_at:  # amortised: the entries of holders gone
            for key in [k for k, ref in _held.items() if ref() is None]:
                del _held[key]
            _prune_at = max(256, 2 * len(_held))


def hold_basic(owner: object, username: str | None, password: str, encoded: str) -> None:
    """A Basic credential: the password, ``user:password`` and its base64 form."""
    hold(owner, password, f"{username}:{password}", encoded)


def note_request(headers: Mapping[str, str] | None, form: Any = None) -> None:
    """The headers and form of a request this thread is sending (kept by reference,
    read only if an error is built)."""
    recent = getattr(_local, "requests", None)
    if recent is None:
        recent = _local.requests = deque(maxlen=RECENT_REQUESTS)
    recent.append((headers, form))


def request_secrets(
    headers: Iterable[tuple[str, str]], form: Iterable[tuple[str, str]]
) -> set[str]:
    """What a request carried that may be a credential: the values of headers other
    than :data:`PLAIN_HEADERS` (and their credentials after the scheme, ``Bearer X``;
    a Basic one decoded, ``user:password``), the values of its form but its grant type
    and scope."""
    found: set[str] = set()
    for name, value in headers:
        if name.lower() in PLAIN_HEADERS:
            continue
        found.add(value)
        scheme, _, credentials = value.partition(" ")
        found.add(credentials)
        if scheme.lower() == "basic" and credentials:
            found.update(_decoded_basic(credentials))
    found.update(value for key, value in form if key not in ("grant_type", "scope"))
    found.discard("")
    return found


def _decoded_basic(credentials: str) -> list[str]:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except ValueError:
        return []
    return [decoded, decoded.partition(":")[2]]


def blank(text: str, sent: Iterable[str] = ()) -> str:
    """``text`` with every secret idprov holds blanked, and with ``sent`` (values a
    request carried: blanked from :data:`LONG` characters on)."""
    if not text:
        return text
    with _lock:
        exact = {value for (_, value), ref in _held.items() if ref() is not None}
    loose = {v for v in sent if len(v) >= LONG}
    recent = getattr(_local, "requests", None)
    if recent:
        for headers, form in list(recent):
            loose.update(
                v for v in request_secrets(_items(headers), _items(form)) if len(v) >= LONG
            )
    for secret in sorted(exact | loose, key=len, reverse=True):
        if len(secret) >= LONG:
            if secret in text:
                text = text.replace(secret, MASK)
        elif secret in text:
            text = _short(secret).sub(MASK, text)
    return text


_SHORT = "(?:(?<=[^\\w][\"'])|(?<=^[\"'])|(?<=[=:>])|(?<=[=:] ))(?:{})(?=[\"'&,;<)\\]}}\\s]|$)"
"""A short secret standing as a value: after a quote that no letter or digit precedes
(an apostrophe in a word, "hasn't", opens no value), ``=``, ``:`` or ``>`` (or ``=``
or ``:`` and a space), and before a quote, ``&``, ``,``, ``;``, ``<``, a closing
bracket, a space or the end."""


def _short(secret: str) -> re.Pattern[str]:
    return re.compile(_SHORT.format(re.escape(secret)))


def _items(pairs: Any) -> list[tuple[str, str]]:
    """(name, value) pairs of headers or a form (a mapping, pairs, or nothing)."""
    if not pairs:
        return []
    if isinstance(pairs, bytes | str):
        return []
    items = pairs.items() if hasattr(pairs, "items") else pairs
    return [(str(k), v) for k, v in items if isinstance(v, str)]
