"""Many LDAP requests in flight on one connection: how the LDAP userstore talks to
the directory (its reads open the connection with these requests too: a bind, a
StartTLS; see :mod:`~idprov.userstores.ldap_wire`).

ldap3 builds every request as a tree of pyasn1 objects, about 1 ms of CPU per add (a
search filter of a few hundred names costs tens of ms), and decodes about 4,000 entries
a second, while slapd needs a few tenths of that. Searches (with RFC 2696 paging), adds
and modifies are small, fixed BER structures (RFC 4511 sections 4.5 to 4.7), so this
module encodes them directly and keeps a window of requests outstanding on a socket that
ldap_wire or ldap3 opened, bound and (for ldaps or StartTLS) encrypted. It decodes the
answers: result code, diagnostic message, controls and, for searches, the entries.
Values travel as BER octet strings, never as filter text, so there is nothing to escape
here (filter text is compiled by :func:`~idprov.userstores.ldap_filters.filter_ber`).
The rare single writes (rename, delete, a lone add) stay on ldap3.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

NOTICE_OF_DISCONNECTION = 0
FIRST_MESSAGE_ID = 1_000_000
"""Well above the ids ldap3 used for the bind on the same connection."""
SCOPES = {"base": 0, "one": 1, "sub": 2}

_SEQUENCE, _SET, _OCTETS, _INTEGER, _ENUMERATED, _BOOLEAN = 0x30, 0x31, 0x04, 0x02, 0x0A, 0x01
_SEARCH_REQUEST, _SEARCH_ENTRY, _SEARCH_DONE, _SEARCH_REFERENCE = 0x63, 0x64, 0x65, 0x73
_ADD_REQUEST, _ADD_RESPONSE, _MODIFY_REQUEST = 0x68, 0x69, 0x66
_AND, _OR, _EQUALITY = 0xA0, 0xA1, 0xA3
_CONTROLS = 0xA0
_RESPONSES = frozenset((0x61, 0x64, 0x65, 0x67, 0x69, 0x6B, 0x6D, 0x6F, 0x73, 0x78, 0x79))
"""The protocol ops a server sends (RFC 4511 4.2-4.12: bind, search entry, done and
reference, modify, add, delete, modify DN, compare, extended, intermediate)."""
PAGED_RESULTS = b"1.2.840.113556.1.4.319"
_ADD_SUCCESS = bytes((_ADD_RESPONSE, 7, _ENUMERATED, 1, 0, _OCTETS, 0, _OCTETS, 0))
"""An AddResponse of success with no matched DN, message or controls."""

Values = Sequence[str | bytes]
Attributes = dict[str, list[bytes]]


NOT_LDAP = "an answer that is not an LDAP response: is url the directory server's?"


class ConnectionLost(Exception):
    """The server closed the connection or stopped answering; outcomes are unknown."""


@dataclass
class Reply:
    """The server's answer to one request: result code 0 is success; a search's
    entries as (DN, attributes with lower-cased names)."""

    result: int
    message: str = ""
    entries: list[tuple[str, Attributes]] = field(default_factory=list)
    cookie: bytes = b""
    """A paged search's cookie (RFC 2696): empty when it was the last page."""


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _octets(value: str | bytes) -> bytes:
    return _tlv(_OCTETS, value if isinstance(value, bytes) else value.encode())


def _integer(value: int, tag: int = _INTEGER) -> bytes:
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _message(message_id: int, operation: bytes) -> bytes:
    return _tlv(_SEQUENCE, _integer(message_id) + operation)


def encode_attribute(name: str, values: Values) -> bytes:
    """One attribute of an add request (empty if it has no values: LDAP forbids that)."""
    if not values:
        return b""
    return _tlv(_SEQUENCE, _octets(name) + _tlv(_SET, b"".join(map(_octets, values))))


def encode_add(
    message_id: int,
    dn: str,
    attributes: Mapping[str, Values],
    encoded: bytes = b"",
) -> bytes:
    """An LDAPMessage holding an AddRequest of ``attributes`` and the ``encoded`` ones
    (from :func:`encode_attribute`: what every entry of a batch shares, encoded once)."""
    attribute_list = encoded + b"".join(encode_attribute(n, v) for n, v in attributes.items())
    add = _tlv(_ADD_REQUEST, _octets(dn) + _tlv(_SEQUENCE, attribute_list))
    return _message(message_id, add)


MODIFY_OPERATIONS = {"add": 0, "delete": 1, "replace": 2}
Change = tuple[str, str, Values]
"""One change of a modify: operation (add, delete, replace), attribute, values."""


def encode_modify(message_id: int, dn: str, changes: Sequence[Change]) -> bytes:
    """An LDAPMessage holding a ModifyRequest (RFC 4511 section 4.6)."""
    items = b"".join(
        _tlv(
            _SEQUENCE,
            _integer(MODIFY_OPERATIONS[operation], _ENUMERATED)
            + _tlv(_SEQUENCE, _octets(name) + _tlv(_SET, b"".join(map(_octets, values)))),
        )
        for operation, name, values in changes
    )
    return _message(message_id, _tlv(_MODIFY_REQUEST, _octets(dn) + _tlv(_SEQUENCE, items)))


def equality(attribute: str, value: str | bytes) -> bytes:
    """The filter ``(attribute=value)``; the value is sent as is, needing no escape."""
    return _tlv(_EQUALITY, _octets(attribute) + _octets(value))


def comparison(operator: str, attribute: str, value: str | bytes) -> bytes:
    """``(attribute=value)``, ``>=``, ``<=`` or ``~=`` (approximate)."""
    tag = {"=": _EQUALITY, ">=": 0xA5, "<=": 0xA6, "~=": 0xA8}[operator]
    return _tlv(tag, _octets(attribute) + _octets(value))


def present(attribute: str) -> bytes:
    """``(attribute=*)``."""
    return _tlv(0x87, attribute.encode())


def substrings(attribute: str, parts: Sequence[bytes]) -> bytes:
    """``(attribute=initial*any*...*final)`` from the values between the stars (the
    first and last may be empty: no initial, no final)."""
    pieces = [
        _tlv(0x80 if i == 0 else 0x82 if i == len(parts) - 1 else 0x81, part)
        for i, part in enumerate(parts)
        if part
    ]
    return _tlv(0xA4, _octets(attribute) + _tlv(_SEQUENCE, b"".join(pieces)))


def none_of(search_filter: bytes) -> bytes:
    """``(!filter)``."""
    return _tlv(0xA2, search_filter)


def all_of(filters: Sequence[bytes]) -> bytes:
    return _tlv(_AND, b"".join(filters))


def any_of(filters: Sequence[bytes]) -> bytes:
    return _tlv(_OR, b"".join(filters))


def paged(size: int, cookie: bytes = b"") -> bytes:
    """The controls of a message asking for a page of ``size`` entries (RFC 2696),
    after the page whose reply carried ``cookie``."""
    value = _tlv(_SEQUENCE, _integer(size) + _octets(cookie))
    return _tlv(_CONTROLS, _tlv(_SEQUENCE, _octets(PAGED_RESULTS) + _octets(value)))


def encode_search(
    message_id: int,
    base: str,
    scope: str,
    search_filter: bytes,
    attributes: Sequence[str],
    controls: bytes = b"",
) -> bytes:
    """An LDAPMessage holding a SearchRequest (no size or time limit of its own) and
    ``controls`` (from :func:`paged`)."""
    request = (
        _octets(base)
        + _integer(SCOPES[scope], _ENUMERATED)
        + _integer(0, _ENUMERATED)  # derefAliases: never
        + _integer(0)
        + _integer(0)
        + _tlv(_BOOLEAN, b"\x00")
        + search_filter
        + _tlv(_SEQUENCE, b"".join(_octets(a) for a in attributes))
    )
    return _message(message_id, _tlv(_SEARCH_REQUEST, request) + controls)


def encode_bind(message_id: int, dn: str, password: str) -> bytes:
    """An LDAPMessage holding a simple BindRequest, LDAP version 3 (RFC 4511 section
    4.2); an empty DN and password bind anonymously."""
    request = _integer(3) + _octets(dn) + _tlv(0x80, password.encode())
    return _message(message_id, _tlv(_BIND_REQUEST, request))


START_TLS = b"1.3.6.1.4.1.1466.20037"


def encode_start_tls(message_id: int) -> bytes:
    """An LDAPMessage holding the StartTLS ExtendedRequest (RFC 4511 section 4.14)."""
    return _message(message_id, _tlv(_EXTENDED_REQUEST, _tlv(0x80, START_TLS)))


def encode_unbind(message_id: int) -> bytes:
    """An LDAPMessage holding an UnbindRequest (no answer comes)."""
    return _message(message_id, bytes((_UNBIND_REQUEST, 0)))


_BIND_REQUEST, _UNBIND_REQUEST, _EXTENDED_REQUEST = 0x60, 0x42, 0x77


def _read(data: bytes, pos: int) -> tuple[int, int, int]:
    """The element at ``pos``: its tag and where its content starts and ends."""
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        return tag, pos, pos + first
    count = first & 0x7F
    size = int.from_bytes(data[pos : pos + count], "big")
    return tag, pos + count, pos + count + size


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    pos = start
    while pos < end:
        tag, begin, stop = _read(data, pos)
        yield tag, begin, stop
        pos = stop


def message_size(buffer: bytes | bytearray) -> int | None:
    """The size of the complete BER message at the start of ``buffer``; None if unknown yet."""
    if len(buffer) < 2:
        return None
    first = buffer[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if len(buffer) < 2 + count:
        return None
    return 2 + count + int.from_bytes(buffer[2 : 2 + count], "big")


def decode_message(message: bytes) -> tuple[int, int, int, int]:
    """(message id, protocol op tag, op start, op end) of one LDAPMessage (read inline:
    every entry of a search passes here)."""
    size = message[1]
    pos = 2 if size < 0x80 else 2 + (size & 0x7F)
    id_end = pos + 2 + message[pos + 1]
    message_id = int.from_bytes(message[pos + 2 : id_end], "big", signed=True)
    op_tag, op_start, op_end = _read(message, id_end)
    return message_id, op_tag, op_start, op_end


def decode_result(message: bytes, start: int, end: int) -> Reply:
    """An LDAPResult: result code, matched DN (ignored), diagnostic message."""
    (_, c_start, c_end), _, (_, m_start, m_end) = list(_children(message, start, end))[:3]
    text = message[m_start:m_end].decode("utf-8", "replace")
    return Reply(int.from_bytes(message[c_start:c_end], "big"), text)


def decode_controls(message: bytes, op_end: int) -> dict[bytes, bytes]:
    """The controls after the protocol op: each one's value by its OID."""
    if op_end >= len(message) or message[op_end] != _CONTROLS:
        return {}
    _, start, end = _read(message, op_end)
    found = {}
    for _, c_start, c_end in _children(message, start, end):
        (_, o_start, o_end), *rest = _children(message, c_start, c_end)
        values = [message[v_start:v_end] for tag, v_start, v_end in rest if tag == _OCTETS]
        found[message[o_start:o_end]] = values[0] if values else b""  # (not criticality)
    return found


def decode_cookie(value: bytes) -> bytes:
    """The cookie of a paged-results control's value (RFC 2696)."""
    if not value:
        return b""
    _, start, end = _read(value, 0)
    _, k_start, k_end = list(_children(value, start, end))[1]
    return value[k_start:k_end]


def decode_entry(message: bytes, start: int, end: int) -> tuple[str, Attributes]:
    """A SearchResultEntry: its DN and its attributes (names lower-cased). One loop,
    with the short form of lengths read inline and each name decoded once per process:
    a listing decodes every value here (10,000 users, 13 attributes: 30% less time
    than with :func:`_read` for each element)."""
    size = message[start + 1]
    if size < 0x80:
        pos = start + 2 + size
        dn = message[start + 2 : pos]
    else:
        _, d_start, pos = _read(message, start)
        dn = message[d_start:pos]
    size = message[pos + 1]  # the attribute list, to the end of the entry
    pos += 2 if size < 0x80 else 2 + (size & 0x7F)
    found: Attributes = {}
    names = _NAMES
    while pos < end:
        size = message[pos + 1]  # one attribute: skip its header
        pos += 2 if size < 0x80 else 2 + (size & 0x7F)
        size = message[pos + 1]
        if size < 0x80:
            raw = message[pos + 2 : pos + 2 + size]
            pos += 2 + size
        else:
            _, n_start, pos = _read(message, pos)
            raw = message[n_start:pos]
        name = names.get(raw)
        if name is None:
            name = raw.decode("utf-8", "replace").lower()
            if len(names) < 1024:  # a server cannot grow it without bound
                names[raw] = name
        size = message[pos + 1]  # the set of values
        if size < 0x80:
            v_end = pos + 2 + size
            pos += 2
        else:
            _, pos, v_end = _read(message, pos)
        values = []
        while pos < v_end:
            size = message[pos + 1]
            if size < 0x80:
                pos += 2 + size
                values.append(message[pos - size : pos])
            else:
                _, v_start, pos = _read(message, pos)
                values.append(message[v_start:pos])
        found[name] = values
    return dn.decode("utf-8", "replace"), found


_NAMES: dict[bytes, str] = {}
"""Attribute names as sent, decoded and lower-cased (a directory has few names)."""


class Pipeline:
    """Sends requests on ``sock`` keeping up to ``window`` of them unanswered, and
    gathers each one's :class:`Reply`."""

    def __init__(self, sock: socket.socket, window: int = 16, timeout: float = 30.0) -> None:
        self.sock = sock
        self.window = window
        self.timeout = timeout
        self.buffer = bytearray()
        self.replies: list[Reply | None] = []
        self.entries: dict[int, list[tuple[str, Attributes]]] = {}

    def run(self, count: int, encode: Callable[[int, int], bytes | None]) -> list[Reply | None]:
        """Send ``encode(index, message_id)`` for each index below ``count``; one reply
        per request, in order. Requests are encoded as the window opens, so the server
        starts on the first while the rest are made; an index whose ``encode`` gives
        None is not sent (its reply stays None). Raises :class:`ConnectionLost` with the
        replies so far in ``args[1]`` (None where unknown) if the connection drops."""
        self.sock.settimeout(self.timeout)
        # Requests are batched here already; Nagle's algorithm would only hold the tail
        # of a batch back until the server acknowledges the previous one.
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.replies = [None] * count
        sent = answered = 0
        try:
            while answered < count:
                # Refill only once half the window is answered: fewer, larger writes (a
                # syscall costs more than encoding a request), and the server stays busy.
                if sent - answered <= self.window // 2:
                    batch = []
                    while sent < count and sent - answered < self.window:
                        message = encode(sent, FIRST_MESSAGE_ID + sent)
                        sent += 1
                        if message is None:
                            answered += 1  # nothing to send: nothing to wait for
                        else:
                            batch.append(message)
                    if batch:
                        self.sock.sendall(b"".join(batch))
                if sent > answered:
                    answered += self._receive()
        except (OSError, ConnectionLost) as exc:
            raise ConnectionLost(str(exc), self.replies) from exc
        except (IndexError, ValueError, StopIteration) as exc:
            raise ConnectionLost(f"an answer that is not LDAP ({exc!r})", self.replies) from exc
        return self.replies

    def _receive(self) -> int:
        """Read until at least one request is answered; returns how many were."""
        done = 0
        while not done:
            while (size := message_size(self.buffer)) is not None and len(self.buffer) >= size:
                message = bytes(self.buffer[:size])
                del self.buffer[:size]
                done += self._take(message)
            if not done:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionLost("the server closed the connection")
                self.buffer += chunk
        return done

    def _take(self, message: bytes) -> int:
        """File one message; 1 if it ended a request, else 0."""
        message_id, op, start, end = decode_message(message)
        if op not in _RESPONSES:  # never read on: a request sent back carries the password
            raise ConnectionLost(NOT_LDAP)
        index = message_id - FIRST_MESSAGE_ID
        if message_id == NOTICE_OF_DISCONNECTION:
            text = decode_result(message, start, end).message
            raise ConnectionLost(f"the server ended the session: {text}")
        if not 0 <= index < len(self.replies):
            raise ConnectionLost(f"an answer to a request never sent ({message_id})")
        if op == _SEARCH_ENTRY:
            self.entries.setdefault(index, []).append(decode_entry(message, start, end))
            return 0
        if op == _SEARCH_REFERENCE:
            return 0
        if message.endswith(_ADD_SUCCESS):  # the common answer, without a full decode
            self.replies[index] = Reply(0)
            return 1
        reply = decode_result(message, start, end)
        reply.entries = self.entries.pop(index, [])
        controls = decode_controls(message, end)
        if PAGED_RESULTS in controls:
            reply.cookie = decode_cookie(controls[PAGED_RESULTS])
        self.replies[index] = reply
        return 1
