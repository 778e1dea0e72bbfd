"""Pure helpers of the LDAP userstore: DNs (RFC 4514), filters (RFC 4515), values.

What every part of the LDAP userstore shares and nothing here sends a request: DN
comparison and escaping, filter building, the GeneralizedTime conversion, the
:class:`Entry` an answer becomes, and :func:`quiet_ldap3`, which each LDAP module
imports ldap3 under.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from idprov.model import ClaimValue
from idprov.userstores.ldap_filters import escape_filter_chars


@contextmanager
def quiet_ldap3() -> Iterator[None]:
    """Import ldap3 inside this: ldap3 2.9.1 imports pyasn1 names that pyasn1 0.6.1
    deprecated (tagMap, typeMap); harmless, and nothing a user of idprov can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
        yield


class _Ldap3Exceptions:
    """``ldap3.core.exceptions``, imported when a name of it is first looked up: the
    ``except lx.X`` clauses that name them run only once something was raised, so a
    store that only reads never imports ldap3 (see :mod:`~idprov.userstores.ldap_wire`)."""

    def __getattr__(self, name: str) -> Any:
        with quiet_ldap3():
            from ldap3.core import exceptions
        return getattr(exceptions, name)


if TYPE_CHECKING:
    from ldap3.core import exceptions as lx
else:
    lx = _Ldap3Exceptions()

BASE, LEVEL, SUBTREE = "BASE", "LEVEL", "SUBTREE"
"""The search scopes as ldap3 names them."""


def parse_dn(dn: str) -> list[tuple[str, str, str]]:
    """ldap3's RFC 4514 parser (imported on first use: DNs without escapes or
    multi-valued RDNs, nearly all, are split without it)."""
    with quiet_ldap3():
        from ldap3.utils.dn import parse_dn as parse

    return list(parse(dn))


T = TypeVar("T")
NewUser = tuple[str, Mapping[str, ClaimValue], str | None]
"""A row of :meth:`LdapUserStore.add_users`: username, claims, password hash or None."""
DnKey = tuple[tuple[str, str], ...]

PAGED_RESULTS = "1.2.840.113556.1.4.319"
POST_READ = "1.3.6.1.1.13.2"
STAMPS = ["entryUUID", "createTimestamp", "modifyTimestamp"]
PERSON_CLASSES = {"person", "organizationalperson", "inetorgperson"}
NAME_CLAIMS = ("display_name", "given_name", "family_name")
CHUNK = 50
"""Names or ids per OR filter when looking up several entries in one search."""

_ESCAPED = re.compile(rb"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)
_TIME = re.compile(r"^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:[.,](\d+))?Z$")
_PLAIN_RDN = r"[A-Za-z][A-Za-z0-9-]*=[^\\,+\"<>;=#\s](?:[^\\,+\"<>;=]*[^\\,+\"<>;=\s])?"
_PLAIN_VALUE = re.compile(
    r"[^\\,+\"<>;=#\s\x00-\x1f\x7f](?:[^\\,+\"<>;=\x00-\x1f\x7f]*[^\\,+\"<>;=\s\x00-\x1f\x7f])?"
)
_PLAIN_DN = re.compile(rf"{_PLAIN_RDN}(?:,{_PLAIN_RDN})*")
_RDN_SPECIALS = set('\\,+"<>;=')


def unescape_value(value: str) -> str:
    """An RFC 4514 attribute value with its ``\\XX`` and ``\\c`` escapes undone."""

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        return bytes.fromhex(code.decode()) if len(code) == 2 else code

    return _ESCAPED.sub(one, value.encode()).decode("utf-8", "replace")


@functools.lru_cache(maxsize=1 << 15)
def dn_key(dn: str) -> DnKey:
    """A DN in comparable form: types lower-cased, values unescaped and casefolded, so
    ``uid=a\\,b`` and ``UID=A\\2CB`` compare equal."""
    if _PLAIN_DN.fullmatch(dn):  # no escapes, no multi-valued RDNs: split it (5x faster)
        rdns = dn.casefold().split(",")  # the types are ASCII: casefold lower-cases them
        return tuple([tuple(rdn.split("=", 1)) for rdn in rdns])  # type: ignore[misc]
    try:
        parts = parse_dn(dn)
    except lx.LDAPInvalidDnError:
        return (("", dn.casefold()),) if dn else ()
    return tuple((name.lower(), unescape_value(value).casefold()) for name, value, _ in parts)


def rdn_value(dn: str, attribute: str) -> str | None:
    """The unescaped value of ``attribute`` in the DN's first RDN, if it has one."""
    if _PLAIN_DN.fullmatch(dn):  # no escapes, no multi-valued RDNs
        name, value = dn.split(",", 1)[0].split("=", 1)
        return value if name.lower() == attribute.lower() else None
    try:
        parts = parse_dn(dn)
    except lx.LDAPInvalidDnError:
        return None
    for name, value, separator in parts:
        if name.lower() == attribute.lower():
            return unescape_value(value)
        if separator != "+":
            return None
    return None


def with_rdn_value(dn: str, attribute: str, value: str) -> str | None:
    """``dn`` with ``value`` for ``attribute`` in its first RDN, whose other parts (of a
    multi-valued RDN, ``uid=x+cn=Full Name``) stay as they are; None if that RDN has no
    ``attribute``."""
    if _PLAIN_DN.fullmatch(dn):  # no escapes, no multi-valued RDNs
        name = dn.split("=", 1)[0]
        parts = [(name, escape_rdn_value(value))] if name.lower() == attribute.lower() else []
    else:
        parts = []
        for name, escaped, separator in parse_dn(dn):
            same = name.lower() == attribute.lower()
            parts.append((name, escape_rdn_value(value) if same else escaped))
            if separator != "+":
                break
        if not any(name.lower() == attribute.lower() for name, _ in parts):
            parts = []
    if not parts:
        return None
    rdn = "+".join(f"{name}={escaped}" for name, escaped in parts)
    parent = parent_dn(dn)
    return f"{rdn},{parent}" if parent else rdn


def escape_rdn_value(value: str) -> str:
    """``value`` as an RFC 4514 attribute value: the specials ``\\ , + " < > ; =``
    backslash-escaped, a leading ``#`` or space and a trailing space too, and control
    characters as ``\\XX`` (ldap3's escape_rdn would put a raw NUL in the DN)."""
    if _PLAIN_VALUE.fullmatch(value):
        return value
    last = len(value) - 1

    def one(index: int, char: str) -> str:
        if ord(char) < 0x20 or char == "\x7f":
            return f"\\{ord(char):02X}"
        edge = (index == 0 and char in "# ") or (index == last and char == " ")
        return "\\" + char if edge or char in _RDN_SPECIALS else char

    return "".join(one(i, c) for i, c in enumerate(value))


def parent_dn(dn: str) -> str:
    """The DN above ``dn``: what follows its first RDN's unescaped comma."""
    escaped = False
    for index, char in enumerate(dn):
        if char == "," and not escaped:
            return dn[index + 1 :]
        escaped = char == "\\" and not escaped
    return ""


def eq_filter(attribute: str, value: str) -> str:
    return f"({attribute}={escape_filter_chars(value)})"


def all_filter(*parts: str) -> str:
    return parts[0] if len(parts) == 1 else "(&" + "".join(parts) + ")"


def any_filter(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"


@functools.lru_cache(maxsize=4096)
def iso_stamp(value: str | None) -> str:
    """GeneralizedTime (``20240102030405Z``) as idprov writes times (ISO 8601, ms, Z).
    Kept for repeats: entries added together share their stamps' seconds."""
    if value is not None and len(value) == 15 and value[14] == "Z" and value[:14].isdecimal():
        day, time = value[:8], value[8:14]  # the common form, without the regex
        return f"{day[:4]}-{day[4:6]}-{day[6:]}T{time[:2]}:{time[2:4]}:{time[4:]}.000Z"
    match = _TIME.match(value or "")
    if not match:
        return value or ""
    year, month, day, hour, minute, second, fraction = match.groups()
    millis = (fraction or "").ljust(3, "0")[:3]
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{millis}Z"


def is_uuid(value: str) -> bool:
    import uuid  # here: its import (platform's too) costs every LDAP command 2 ms

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def claim_values(value: ClaimValue) -> list[str]:
    """A claim's values as LDAP values; an empty string is no value (LDAP has none)."""
    return [v for v in (value if isinstance(value, list) else [value]) if v != ""]


class Entry:
    """An entry as read: its DN and its values (bytes) by lower-cased attribute name."""

    __slots__ = ("dn", "attributes")

    def __init__(self, dn: str, attributes: Mapping[str, Sequence[bytes | str]]) -> None:
        self.dn = dn
        self.attributes = {
            name.lower(): [v if isinstance(v, bytes) else str(v).encode() for v in values]
            for name, values in attributes.items()
        }

    @classmethod
    def decoded(cls, dn: str, attributes: dict[str, list[bytes]]) -> Entry:
        """An entry from :mod:`~idprov.userstores.ldap_bulk`'s decoder, whose names are
        lower-cased and values bytes already."""
        entry = cls.__new__(cls)
        entry.dn, entry.attributes = dn, attributes
        return entry

    def texts(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.attributes.get(name.lower(), [])]

    def text(self, name: str) -> str | None:
        values = self.attributes.get(name.lower())
        return values[0].decode("utf-8", "replace") if values else None


def is_spaced(prefix: str | None) -> bool:
    """A prefix with space at either end matches no name literally, but a directory's
    matching rules drop such spaces (or fail on a blank value): answer it here."""
    return prefix is not None and prefix != prefix.strip()
