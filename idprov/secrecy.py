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
- **in flight** (:func:`note_request`, per thread): the headers, form and body of the
  last requests idprov's HTTP client sent, read only when an error is built.

Holding costs two dictionary entries (the secret, and its index by what every spelling
of it keeps: its longest run of ASCII letters and digits; for a secret without a run of
4, like ``Xy!7#kQ2$m9&``, how each of its spellings begins, computed then), noting a
request a reference kept: nothing else is computed on the success path. :func:`blank` runs only
when an error is built, and looks only at the secrets its text may hold.

**How an echo spells a secret.** A target rarely echoes a request as it was sent: it
quotes the JSON it received (``"`` as ``\\"``, ``\\`` as ``\\\\``, ``ä`` as ``\\u00e4``,
once or twice; PHP's ``/`` as ``\\/``; Jackson's and .NET's upper-case ``\\u00E4``,
.NET's ``+`` as ``\\u002B``), the form it received (percent-encoded, ``%2B`` or
``%2b``), the XML (``&quot;``, ``&amp;``), or a Python ``repr``. Every such spelling of
a secret is blanked (:func:`spellings`). They are computed only when an error is built,
and only for a secret whose index the text holds and whose longest run of ASCII letters
and digits (which every spelling keeps; noted when the secret is held) is in the text.

**Short secrets.** A secret of 8 characters or more is blanked wherever it occurs. A
held secret of 1 to 7 characters (``admin``, ``true``, ``400``, a user name used as
a password) would rewrite ordinary words of unrelated errors if blanked process-wide,
so it is blanked only in an error built by the thread that sent a request carrying
it (one of its last :data:`RECENT_REQUESTS`, or the reply's own request: in a header,
a form field, or a string value of its JSON or XML body), and there only where it
stands as a value: right after a quote, ``=``, ``:`` or ``>`` (or ``=``/``:`` and one
space), and before a quote, a backslash, ``&``, ``,``, ``;``, ``<``, a closing
bracket, a space or the end: ``"password": "ab1"``, ``'X-Api-Key': 'k3Yq9'``,
``svc:ab1``, ``password=ab1``, ``<password>ab1</password>``. Anywhere else it would
be a word or part of one (a 3-letter password blanking every "the" of a message).
Values read from a request's headers and form that idprov does not hold (which may be
no secret: an ETag, a client id) are blanked only from 8 characters on.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

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
_held: dict[tuple[int, str], tuple[Callable[[], object], str | None, tuple[str, ...]]] = {}
"""(id of the holder, secret) -> (the holder, weakly; the secret's longest run of
ASCII letters and digits, None when it has nothing else: what every spelling of it
keeps, looked for before its spellings are computed; its keys in :data:`_index`)."""
_index: dict[str, set[tuple[int, str]]] = {}
"""The first :data:`_KEY` characters of what every spelling of a held secret keeps (or
of each of its spellings: :func:`_keys`) -> its entries in :data:`_held`: an error looks
up only the secrets its text may hold, however many are held (thousands of accounts'
passwords in a long import)."""
_always: set[tuple[int, str]] = set()
"""Entries whose secret is shorter than :data:`_KEY` characters: looked for in every
error."""
_KEY = 4
_prune_at = 256
_local = threading.local()
_PLAIN = re.compile(r"[A-Za-z0-9._~-]*")
"""Characters no spelling changes (JSON, URL, XML escaping and repr keep them)."""
_RUN = re.compile(r"[A-Za-z0-9]+")


def hold(owner: object, *values: str | None) -> None:
    """Blank ``values`` in every error while ``owner`` exists (a secret reference, a
    token, an account carrying a password)."""
    global _prune_at
    try:
        ref: Callable[[], object] = weakref.ref(owner)
    except TypeError:  # an object without weak references (slots): held for good
        ref = itertools.repeat(owner).__next__
    entries = [
        (value, core, _keys(value, core)) for value in values if value for core in [_core(value)]
    ]
    with _lock:
        for value, core, windows in entries:
            key = (id(owner), value)
            _held[key] = (ref, core, windows)
            for window in windows:
                _index.setdefault(window, set()).add(key)
            if not windows:
                _always.add(key)
        if len(_held) >= _prune_at:  # amortised: the entries of holders gone
            for key, (_, _, windows) in [(k, e) for k, e in _held.items() if e[0]() is None]:
                del _held[key]
                _always.discard(key)
                for window in windows:
                    entries_of = _index.get(window)
                    if entries_of is not None:
                        entries_of.discard(key)
                        if not entries_of:
                            del _index[window]
            _prune_at = max(256, 2 * len(_held))


def forget_all() -> None:
    """Hold no secret any more, and forget this thread's recent requests: for a test
    that must not see another's secrets (a token "t" held by an earlier test blanked
    words of a later one's messages)."""
    global _prune_at
    with _lock:
        _held.clear()
        _index.clear()
        _always.clear()
        _prune_at = 256
    _local.__dict__.clear()


def _core(secret: str) -> str | None:
    """What every spelling of ``secret`` keeps: its longest run of ASCII letters and
    digits; None when it has no other character (every spelling is the secret)."""
    if _PLAIN.fullmatch(secret):
        return None
    return max(_RUN.findall(secret), key=len, default="")


def _keys(secret: str, core: str | None) -> tuple[str, ...]:
    """Where :data:`_index` files ``secret``: the first :data:`_KEY` characters of
    what every spelling of it keeps (``core``, or the secret when every spelling is
    the secret); for a secret whose core is shorter (``Xy!7#kQ2$m9&``: no run of
    4 letters or digits), the first :data:`_KEY` characters of each of its spellings
    (computed once, when it is held). Empty: it is shorter than that, looked for in
    every error (:data:`_always`)."""
    kept = secret if core is None else core
    if len(kept) >= _KEY:
        return (kept[:_KEY],)
    if len(secret) < _KEY:
        return ()
    return tuple({spelling[:_KEY] for spelling in spellings(secret)})


def hold_basic(owner: object, username: str | None, password: str, encoded: str) -> None:
    """A Basic credential: the password, ``user:password`` and its base64 form."""
    hold(owner, password, f"{username}:{password}", encoded)


def note_request(headers: Mapping[str, str] | None, form: Any = None, body: Any = None) -> None:
    """The headers, form and body (bytes, text or a JSON value) of a request this
    thread is sending (kept by reference, read only if an error is built)."""
    recent = getattr(_local, "requests", None)
    if recent is None:
        recent = _local.requests = deque(maxlen=RECENT_REQUESTS)
    recent.append((headers, form, body))


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


def spellings(secret: str) -> set[str]:
    """How an echo may spell ``secret``: as is, JSON-escaped (with and without
    ``\\u`` escapes, and escaped twice: JSON quoted in JSON; PHP's ``\\/``, upper-case
    ``\\u00E4``, .NET's ``\\u002B``), percent-encoded (a form or a query; ``%2B`` and
    ``%2b``), XML-escaped, and in a Python ``repr``. A form only adds a spelling for a
    secret holding what it escapes."""
    ascii_json = json.dumps(secret)[1:-1]
    utf8_json = json.dumps(secret, ensure_ascii=False)[1:-1]
    found = {
        secret,
        ascii_json,
        utf8_json,
        json.dumps(ascii_json)[1:-1],
        json.dumps(utf8_json, ensure_ascii=False)[1:-1],
        ascii_json.replace("/", "\\/"),  # PHP's json_encode
        utf8_json.replace("/", "\\/"),
        _HEX.sub(_upper, ascii_json),  # Jackson, .NET: \u00E4
        _dotnet_json(secret),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        _PERCENT.sub(_lower, quote(secret, safe="")),  # %2b%2f
        _PERCENT.sub(_lower, quote(secret)),
        _PERCENT.sub(_lower, quote_plus(secret)),
        _markup(secret),
        _markup(secret, {'"': "&quot;", "'": "&apos;"}),
        _markup(secret, {'"': "&quot;", "'": "&#x27;"}),  # Python's html.escape
        repr(secret)[1:-1],
    }
    found.discard("")
    return found


def _markup(text: str, quotes: Mapping[str, str] | None = None) -> str:
    """``text`` escaped as XML and HTML write it (``&``, ``<``, ``>``, and ``quotes``):
    xml.sax.saxutils' escape would cost every command ~19 ms of start-up (it imports
    urllib.request, http.client and ssl)."""
    out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char, entity in (quotes or {}).items():
        out = out.replace(char, entity)
    return out


_HEX = re.compile(r"(?<=\\u)[0-9a-f]{4}")
_PERCENT = re.compile(r"(?<=%)[0-9A-F]{2}")
_DOTNET_ESCAPED = frozenset("\"&'+<>`")
"""What .NET's System.Text.Json escapes beyond JSON's own, as ``\\u0022``."""


def _upper(match: re.Match[str]) -> str:
    return match.group().upper()


def _lower(match: re.Match[str]) -> str:
    return match.group().lower()


def _dotnet_json(secret: str) -> str:
    """``secret`` as System.Text.Json's default encoder writes it: JSON's escapes, and
    ``"&'+<>``` and every character beyond ASCII as ``\\u`` and upper-case hex."""
    return "".join(
        f"\\u{ord(c):04X}" if c in _DOTNET_ESCAPED else _HEX.sub(_upper, json.dumps(c)[1:-1])
        for c in secret
    )


def blank(text: str, sent: Iterable[str] = (), bodies: Iterable[Any] = ()) -> str:
    """``text`` with every secret idprov holds blanked (in any of its
    :func:`spellings`), and with ``sent`` (values a request carried: blanked from
    :data:`LONG` characters on). A held secret shorter than :data:`LONG` is blanked
    only if a request this thread sent carried it (``sent``, the ``bodies`` of the
    reply's request, or :func:`note_request`'s)."""
    if not text:
        return text
    windows = {text[i : i + _KEY] for i in range(len(text) - _KEY + 1)}
    with _lock:
        keys = set(_always)
        for window in windows & _index.keys():
            keys |= _index[window]
        held = [(key, _held[key]) for key in keys if key in _held]
    sent = set(sent)
    bodies = list(bodies)
    recent = getattr(_local, "requests", None)
    for headers, form, body in list(recent or ()):
        sent.update(request_secrets(_items(headers), _items(form)))
        bodies.append(body)
    found: dict[str, str] = {}  # a secret in the text -> how it is blanked
    for (_, secret), (ref, core, _) in held:
        if secret in found:
            continue
        if (secret in text or (core is not None and core in text)) and ref() is not None:
            found[secret] = "held"
    for secret in sent:
        if len(secret) >= LONG and secret not in found and secret in text:
            found[secret] = "sent"  # no spellings: a value the request carried as is
    short = [s for s, how in found.items() if len(s) < LONG]
    if short:
        carried = _carried(short, sent, bodies)
        for secret in short:
            if secret not in carried:
                del found[secret]
    masks: list[tuple[str, bool]] = []
    for secret, how in found.items():
        for spelling in spellings(secret) if how == "held" else (secret,):
            if spelling in text:
                masks.append((spelling, len(secret) >= LONG))
    for spelling, anywhere in sorted(masks, key=lambda m: len(m[0]), reverse=True):
        if not anywhere:
            text = _short(spelling).sub(MASK, text)
        elif spelling in text:
            text = text.replace(spelling, MASK)
    return text


def _carried(secrets: list[str], sent: set[str], bodies: list[Any]) -> set[str]:
    """Those of the short ``secrets`` a request carried: a header's or a form's value
    (``sent``), or a string value of a JSON or XML body."""
    carried = {s for s in secrets if s in sent}
    texts = [_text(body) for body in bodies]
    for secret in secrets:
        if secret in carried:
            continue
        values = [f'"{json.dumps(secret, ensure_ascii=a)[1:-1]}"' for a in (True, False)] + [
            f">{_markup(secret)}<",
            f"={quote_plus(secret)}",
        ]
        if any(value in text for text in texts for value in values):
            carried.add(secret)
    return carried


def _text(body: Any) -> str:
    if isinstance(body, bytes | bytearray):
        return bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        return body
    if body is None:
        return ""
    try:
        return json.dumps(body, ensure_ascii=False, default=str)
    except ValueError:
        return ""


_SHORT = (
    "(?:(?<=[^\\w][\"'])|(?<=^[\"'])|(?<=[^\\w]b[\"'])|(?<=^b[\"'])|(?<=[=:>])|(?<=[=:] ))"
    "(?:{})(?=[\"'&,;<)\\]}}\\s\\\\]|$)"
)
"""A short secret standing as a value: after a quote that no letter or digit precedes
(an apostrophe in a word, "hasn't", opens no value; Python's bytes, ``b'...'``, as an
HTTP library quotes a refused header value), ``=``, ``:`` or ``>`` (or ``=``
or ``:`` and a space), and before a quote, a backslash (a quote escaped in JSON quoted
again), ``&``, ``,``, ``;``, ``<``, a closing bracket, a space or the end."""


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
