"""A :class:`~idprov.model.Condition` as an LDAP filter (RFC 4515), for searches the
directory answers with its own indexes (eq and sub indexes on uid, mail, cn...).

As in SQL, what cannot be said is left out, so the filter finds at least the users
that match, and the caller checks each exactly: ``id`` is ``entryUUID``, the times
are ``createTimestamp``/``modifyTimestamp`` (GeneralizedTime, to the second), a claim
is its mapped attribute, compared with that attribute's own matching rule.

:func:`filter_ber` compiles filter text (these, and the store's own) to the BER a
search request carries, byte for byte what ldap3 would send, without pyasn1.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from idprov.errors import UsageError
from idprov.model import Condition
from idprov.userstores import ldap_bulk

STAMPS = {"created": "createTimestamp", "modified": "modifyTimestamp"}


def escape_filter_chars(value: str) -> str:
    """RFC 4515: ``*``, ``(``, ``)``, ``\\`` and NUL as ``\\XX``."""
    return "".join(f"\\{ord(c):02x}" if c in "*()\\\x00" else c for c in value)


NOTHING = "(!(objectClass=*))"
"""A condition on a claim this directory does not map: no entry holds it."""


def ldap_condition(
    condition: Condition, username_attribute: str, claim_attributes: Mapping[str, str]
) -> str | None:
    """An LDAP filter true for at least the entries matching ``condition`` (None: all)."""
    if condition.op in ("and", "or"):
        parts = [ldap_condition(t, username_attribute, claim_attributes) for t in condition.terms]
        return _joined(condition.op, parts)
    if condition.attribute.startswith("claim:"):
        if condition.attribute.removeprefix("claim:") not in claim_attributes:
            return NOTHING
    attribute = _attribute(condition.attribute, username_attribute, claim_attributes)
    if attribute is None:
        return None
    if condition.attribute in STAMPS:
        return _time(attribute, condition)
    if condition.attribute == "id" and condition.op == "in":
        terms = [f"(entryUUID={escape_filter_chars(v)})" for v in condition.values]
        return "(|" + "".join(terms) + ")" if terms else NOTHING
    return _text(attribute, condition)


def _joined(op: str, parts: list[str | None]) -> str | None:
    if op == "and":
        if NOTHING in parts:
            return NOTHING
        kept = [p for p in parts if p is not None]
    else:
        if None in parts:
            return None
        kept = [p for p in parts if p is not None and p != NOTHING] or [NOTHING]
    if not kept:
        return None
    joiner = "&" if op == "and" else "|"
    return kept[0] if len(kept) == 1 else f"({joiner}{''.join(kept)})"


def _attribute(name: str, username: str, claims: Mapping[str, str]) -> str | None:
    if name == "username":
        return username
    if name == "id":
        return "entryUUID"
    if name in STAMPS:
        return STAMPS[name]
    return claims.get(name.removeprefix("claim:")) if name.startswith("claim:") else None


def _text(attribute: str, c: Condition) -> str | None:
    value = escape_filter_chars(c.value)
    forms = {
        "eq": f"({attribute}={value})",
        "sw": f"({attribute}={value}*)",
        "ew": f"({attribute}=*{value})",
        "co": f"({attribute}=*{value}*)",
        "pr": f"({attribute}=*)",
    }
    if attribute == "entryUUID" and c.op != "eq":
        return None
    return forms.get(c.op)


def _time(attribute: str, c: Condition) -> str | None:
    """To the second, widened: ``ge`` from the second holding the time, ``le`` through
    the next one."""
    try:
        moment = datetime.fromisoformat(c.value.replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    floor = moment.strftime("%Y%m%d%H%M%SZ")
    ceil = datetime.fromtimestamp(int(moment.timestamp()) + 1, UTC).strftime("%Y%m%d%H%M%SZ")
    if c.op == "ge":
        return f"({attribute}>={floor})"
    if c.op == "le":
        return f"({attribute}<={ceil})"
    if c.op == "eq":
        return f"(&({attribute}>={floor})({attribute}<={ceil}))"
    return None


_ITEM = re.compile(r"([A-Za-z0-9;.-]+)(=|>=|<=|~=)((?:[^()\\]|\\[0-9A-Fa-f]{2})*)\)")
_HEX = re.compile(rb"\\([0-9A-Fa-f]{2})")


@functools.lru_cache(maxsize=256)
def filter_ber(text: str) -> bytes:
    """An RFC 4515 filter (as this module and the store write them) as the BER of a
    SearchRequest. UsageError if it is not one."""
    encoded, end = _parse(text, 0)
    if end != len(text):
        raise UsageError(f"not an LDAP filter: {text!r} (extra text at {end})")
    return encoded


def _parse(text: str, pos: int) -> tuple[bytes, int]:
    """The filter starting at ``pos`` (an opening parenthesis), and where it ends."""
    if text[pos : pos + 1] != "(":
        raise UsageError(f"not an LDAP filter: {text!r} (expected '(' at {pos})")
    kind = text[pos + 1 : pos + 2]
    if kind in ("&", "|"):
        parts, pos = [], pos + 2
        while text[pos : pos + 1] == "(":
            part, pos = _parse(text, pos)
            parts.append(part)
        joined = ldap_bulk.all_of(parts) if kind == "&" else ldap_bulk.any_of(parts)
        return joined, _close(text, pos)
    if kind == "!":
        inner, pos = _parse(text, pos + 2)
        return ldap_bulk.none_of(inner), _close(text, pos)
    return _item(text, pos + 1)


def _close(text: str, pos: int) -> int:
    if text[pos : pos + 1] != ")":
        raise UsageError(f"not an LDAP filter: {text!r} (expected ')' at {pos})")
    return pos + 1


def _item(text: str, pos: int) -> tuple[bytes, int]:
    match = _ITEM.match(text, pos)
    if match is None:
        raise UsageError(f"not an LDAP filter: {text!r} (at {pos})")
    attribute, operator, value = match.groups()
    if operator != "=" or "*" not in value:
        return ldap_bulk.comparison(operator, attribute, _unescaped(value)), match.end()
    if value == "*":
        return ldap_bulk.present(attribute), match.end()
    parts = [_unescaped(part) for part in value.split("*")]
    return ldap_bulk.substrings(attribute, parts), match.end()


def _unescaped(value: str) -> bytes:
    return _HEX.sub(lambda m: bytes.fromhex(m.group(1).decode()), value.encode())
