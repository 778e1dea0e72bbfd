"""The LDAP userstore: one domain's users and roles in a directory server, over ldap3.

A user is an entry ``<username_attribute>=<name>,<user_search_base>`` of the
``user_object_classes``; a role is a ``group_object_class`` entry
``<group_name_attribute>=<name>,<group_search_base>`` whose ``member_attribute``
values are user DNs. Ids are the server's ``entryUUID``, which survives renames.
The directory matches names (``uid`` and ``cn`` compare case-insensitively); they
are shown as stored. This module is imported only when an LDAP store is opened,
since ldap3 costs 200 ms to import.

What a directory administrator should know:

* Empty roles. groupOfNames requires a member, so an empty group holds a placeholder
  member: ``empty_member`` if configured, else the group's own DN. It is never shown
  or counted, and goes when a real member arrives.
* cn and sn, which person requires: ``sn`` is the family name, or the username when
  there is none (read back, an ``sn`` equal to the username is no family name);
  ``cn`` is the display name, else "given family", else the username.
* Passwords. ``userPassword`` holds an RFC 2307 value the server checks binds with:
  :meth:`LdapUserStore.hash_password` makes ``{SSHA}`` (slapd's own default)
  client-side. Other hash formats are refused, since no bind could ever match them.
  Password values never appear in messages.
* Escaping. Every value in a filter is escaped per RFC 4515 and every RDN value per
  RFC 4514, so no username widens a search or lands outside its base.
* Size. Every walk over users or groups is a paged search (RFC 2696) of
  ``page_size`` entries, and a search the server cut short at its size or time limit
  is an error, never a silently short answer. ``list_users`` keeps at most
  offset + limit names in memory while it counts the total.
* Connections. One per store, opened and bound on first use. If it drops (server
  restart, idle timeout), it is reopened once and the operation sent again; a
  second failure is a :class:`StoreError` naming the URL.
"""

from __future__ import annotations

import heapq
import math
import os
import re
import ssl
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from idprov.config.claims import ClaimDefinition
from idprov.config.ldap import LdapUserstoreConfig
from idprov.errors import (
    ConfigError,
    ConflictError,
    IdprovError,
    NotFoundError,
    PolicyError,
    StoreError,
)
from idprov.model import ClaimValue, Page, Role, User, UserQuery
from idprov.userstores.base import UserStore
from idprov.userstores.ldap_bulk import (
    ConnectionLost,
    Pipeline,
    Reply,
    all_of,
    any_of,
    encode_add,
    encode_attribute,
    encode_search,
    equality,
)
from idprov.userstores.ldap_filters import ldap_condition
from idprov.userstores.passwords import hash_ssha

if TYPE_CHECKING:
    from idprov.userstores.base import ImportedUser

with warnings.catch_warnings():
    # ldap3 2.9.1 imports pyasn1 names that pyasn1 0.6.1 deprecated (tagMap, typeMap);
    # harmless, and nothing a user of idprov can act on.
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    from ldap3 import (
        BASE,
        LEVEL,
        MODIFY_ADD,
        MODIFY_DELETE,
        MODIFY_REPLACE,
        NONE,
        SUBTREE,
        Connection,
        Server,
        Tls,
    )
    from ldap3.core import exceptions as lx
    from ldap3.core.results import RESULT_CODES
    from ldap3.protocol.rfc4527 import post_read_control
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

T = TypeVar("T")
NewUser = tuple[str, Mapping[str, ClaimValue], str | None]
"""A row of :meth:`LdapUserStore.add_users`: username, claims, password hash or None."""
DnKey = tuple[tuple[str, str], ...]
NewEntry = tuple[str, dict[str, list[str | bytes]]]
"""The DN and attributes (but objectClass) of an entry to add."""

PAGED_RESULTS = "1.2.840.113556.1.4.319"
POST_READ = "1.3.6.1.1.13.2"
STAMPS = ["entryUUID", "createTimestamp", "modifyTimestamp"]
PERSON_CLASSES = {"person", "organizationalperson", "inetorgperson"}
NAME_CLAIMS = ("display_name", "given_name", "family_name")
CHUNK = 50
"""Names or ids per OR filter when looking up several entries in one search."""

_ESCAPED = re.compile(rb"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)
_TIME = re.compile(r"^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:[.,](\d+))?Z$")
_SCHEME = re.compile(r"^\{([A-Za-z0-9.-]+)\}.")
_RDN_SPECIALS = set('\\,+"<>;=')


# ---- DNs, filters and values


def _unescape(value: str) -> str:
    """An RFC 4514 attribute value with its ``\\XX`` and ``\\c`` escapes undone."""

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        return bytes.fromhex(code.decode()) if len(code) == 2 else code

    return _ESCAPED.sub(one, value.encode()).decode("utf-8", "replace")


def dn_key(dn: str) -> DnKey:
    """A DN in comparable form: types lower-cased, values unescaped and casefolded, so
    ``uid=a\\,b`` and ``UID=A\\2CB`` compare equal."""
    try:
        parts = parse_dn(dn)
    except lx.LDAPInvalidDnError:
        return (("", dn.casefold()),) if dn else ()
    return tuple((name.lower(), _unescape(value).casefold()) for name, value, _ in parts)


def rdn_value(dn: str, attribute: str) -> str | None:
    """The unescaped value of ``attribute`` in the DN's first RDN, if it has one."""
    try:
        parts = parse_dn(dn)
    except lx.LDAPInvalidDnError:
        return None
    for name, value, separator in parts:
        if name.lower() == attribute.lower():
            return _unescape(value)
        if separator != "+":
            return None
    return None


def escape_rdn_value(value: str) -> str:
    """``value`` as an RFC 4514 attribute value: the specials ``\\ , + " < > ; =``
    backslash-escaped, a leading ``#`` or space and a trailing space too, and control
    characters as ``\\XX`` (ldap3's escape_rdn would put a raw NUL in the DN)."""
    last = len(value) - 1

    def one(index: int, char: str) -> str:
        if ord(char) < 0x20 or char == "\x7f":
            return f"\\{ord(char):02X}"
        edge = (index == 0 and char in "# ") or (index == last and char == " ")
        return "\\" + char if edge or char in _RDN_SPECIALS else char

    return "".join(one(i, c) for i, c in enumerate(value))


def _parent(dn: str) -> str:
    """The DN above ``dn``: what follows its first RDN's unescaped comma."""
    escaped = False
    for index, char in enumerate(dn):
        if char == "," and not escaped:
            return dn[index + 1 :]
        escaped = char == "\\" and not escaped
    return ""


def _eq(attribute: str, value: str) -> str:
    return f"({attribute}={escape_filter_chars(value)})"


def _all(*parts: str) -> str:
    return parts[0] if len(parts) == 1 else "(&" + "".join(parts) + ")"


def _any(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"


def _stamp(value: str | None) -> str:
    """GeneralizedTime (``20240102030405Z``) as idprov writes times (ISO 8601, ms, Z)."""
    match = _TIME.match(value or "")
    if not match:
        return value or ""
    year, month, day, hour, minute, second, fraction = match.groups()
    millis = (fraction or "").ljust(3, "0")[:3]
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{millis}Z"


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _values(value: ClaimValue) -> list[str]:
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

    def texts(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.attributes.get(name.lower(), [])]

    def text(self, name: str) -> str | None:
        values = self.texts(name)
        return values[0] if values else None


class LdapUserStore(UserStore):
    """Users and roles of one domain in an LDAP directory (see the module docstring)."""

    type: ClassVar[str] = "ldap"
    transactional: ClassVar[bool] = False
    config: LdapUserstoreConfig

    def __init__(self, config: LdapUserstoreConfig, claims: Mapping[str, ClaimDefinition]) -> None:
        super().__init__(config, claims)
        self.claim_attributes = self._mapping(config, claims)
        self._conn: Any = None
        self._user_base = dn_key(config.user_search_base)
        self._empty_key = dn_key(config.empty_member) if config.empty_member is not None else None
        self._person = any(c.lower() in PERSON_CLASSES for c in config.user_object_classes)
        self._user_filter = _all(*(_eq("objectClass", c) for c in config.user_object_classes))
        self._group_filter = _eq("objectClass", config.group_object_class)
        self._scope = LEVEL if config.user_search_scope == "one" else SUBTREE

    def _mapping(
        self, config: LdapUserstoreConfig, claims: Mapping[str, ClaimDefinition]
    ) -> dict[str, str]:
        mapping = config.ldap_claims()
        unknown = sorted(set(mapping) - set(claims))
        if unknown:
            raise ConfigError(
                f"userstore {config.domain}: claim_attributes maps unknown claim {unknown[0]!r}",
                hint="declare the claim under claims:, or remove it from claim_attributes",
            )
        return mapping

    # ---- connection and errors
    def _where(self) -> str:
        return f"the {self.domain} userstore ({self.config.url})"

    def _server(self) -> Any:
        url = urlsplit(self.config.url)
        secure = url.scheme.lower() == "ldaps"
        tls = None
        if secure or self.config.start_tls:
            ca_file = self.config.ca_file
            if ca_file and not os.path.isfile(ca_file):
                raise ConfigError(
                    f"{self._where()}: ca_file {ca_file} does not exist or is not a file",
                    hint="give the PEM file of the CA that signs the directory's certificate, "
                    "or remove ca_file to trust the system's CAs",
                )
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        return Server(
            url.hostname,
            port=url.port or (636 if secure else 389),
            use_ssl=secure,
            tls=tls,
            connect_timeout=self.config.connect_timeout,
            get_info=NONE,
        )

    def _open(self) -> Any:
        """A new connection, opened, secured and bound (ldap3 raises if not)."""
        password = self.config.bind_password.reveal() if self.config.bind_password else None
        conn = None
        try:
            conn = Connection(
                self._server(),
                user=self.config.bind_dn,
                password=password,
                raise_exceptions=True,
                receive_timeout=max(1, math.ceil(self.config.timeout)),
                auto_referrals=False,
                read_only=self.config.read_only,
            )
            with warnings.catch_warnings():
                # ldap3 checks the certificate's names with ssl.match_hostname, which
                # Python 3.7-3.11 deprecate (3.12 removed it; ldap3 then uses a copy).
                warnings.filterwarnings("ignore", "ssl.match_hostname", DeprecationWarning)
                conn.open(read_server_info=False)
                if self.config.start_tls:
                    conn.start_tls(read_server_info=False)
            conn.bind(read_server_info=False)
        except BaseException:
            _discard(conn)
            raise
        return conn

    def _bound(self) -> Any:
        """:meth:`_open`'s connection, or the idprov error saying why there is none."""
        try:
            return self._open()
        except lx.LDAPOperationResult as exc:
            raise self._translate(exc, "bind") from exc
        except lx.LDAPException as exc:
            if _is_tls_failure(exc):
                raise ConfigError(
                    f"{self._where()}: TLS failed, the server's certificate was not "
                    f"accepted: {exc}",
                    hint=f"check ca_file ({self.config.ca_file or 'none: the system CAs'}) "
                    "and that the certificate names the host in url",
                ) from exc
            raise self._unreachable(exc, "connect") from exc

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._bound()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        _discard(conn)

    def _run(self, doing: str, op: Callable[[Any], T]) -> T:
        """``op(connection)``, with ldap3's errors made idprov's. A connection that was
        open but has dropped is reopened once and ``op`` run again."""
        reused = self._conn is not None
        try:
            return self._attempt(doing, op)
        except lx.LDAPCommunicationError as exc:
            self.close()
            if not reused:
                raise self._unreachable(exc, doing) from exc
        try:
            return self._attempt(doing, op)
        except lx.LDAPCommunicationError as exc:
            self.close()
            raise self._unreachable(exc, doing) from exc

    def _attempt(self, doing: str, op: Callable[[Any], T]) -> T:
        conn = self._connection()
        try:
            return op(conn)
        except lx.LDAPOperationResult as exc:
            raise self._translate(exc, doing) from exc
        except lx.LDAPCommunicationError:
            raise
        except lx.LDAPException as exc:
            raise StoreError(f"{self._where()}: cannot {doing}: {exc}") from exc

    def _unreachable(self, exc: Exception, doing: str) -> StoreError:
        return StoreError(
            f"{self._where()}: cannot {doing}: the directory server cannot be reached ({exc})",
            hint=f"check that the server at {self.config.url} is up, and userstore "
            f"{self.domain}'s url, start_tls and ca_file",
        )

    def _translate(self, exc: lx.LDAPOperationResult, doing: str) -> IdprovError:
        """An LDAP result code as the idprov error it means, with the server's message."""
        said = str(exc.description or RESULT_CODES.get(exc.result, exc.result))
        said += f": {exc.message}" if exc.message else ""
        text = f"{self._where()}: cannot {doing}: {said}"
        code = exc.result
        if code == 32:
            return NotFoundError(text)
        if code == 68:
            return ConflictError(text)
        if code == 49:
            return ConfigError(
                text,
                hint=f"check bind_dn and the secret bind_password names for userstore "
                f"{self.domain}",
            )
        if code == 50:
            return PolicyError(
                text,
                hint=f"grant {self.config.bind_dn or 'the anonymous user'} access in the "
                "directory, or set read_only: true",
            )
        if code in (19, 21):
            return PolicyError(text, hint="the directory's rules refused this value")
        if code in (17, 64, 65, 69):
            return ConfigError(
                text,
                hint="check user_object_classes, claim_attributes and the group settings "
                "against the directory's schema",
            )
        return StoreError(text)

    # ---- searching
    def _search(
        self, conn: Any, base: str, flt: str, attrs: Sequence[str], scope: Any
    ) -> list[Entry]:
        """Every match, as a list (for lookups by names or ids: a few entries). Paged
        too, since a server's size limit for the bind DN may be below ``CHUNK``."""
        return list(self._paged(conn, base, flt, attrs, scope))

    def _lookup(
        self, doing: str, base: str, flt: str, attrs: Sequence[str], scope: Any = SUBTREE
    ) -> list[Entry]:
        """:meth:`_search` on the store's connection, for lookups made in a loop."""
        return self._run(doing, lambda c: self._search(c, base, flt, attrs, scope))

    def _read_member(self, dn: str) -> Entry | None:
        return self._run("read a member", lambda c: self._base_entry(c, dn))

    def _paged(
        self, conn: Any, base: str, flt: str, attrs: Sequence[str], scope: Any = SUBTREE
    ) -> Iterator[Entry]:
        """Every match, ``page_size`` at a time. Consume it fully before another search."""
        cookie = None
        while True:
            try:
                conn.search(
                    base,
                    flt,
                    scope,
                    attributes=list(attrs),
                    paged_size=self.config.page_size,
                    paged_cookie=cookie,
                )
            except lx.LDAPNoSuchObjectResult as exc:
                raise self._no_base(base) from exc
            self._complete(conn.result, base)
            yield from [Entry(r["dn"], r["raw_attributes"]) for r in conn.response if _is_entry(r)]
            controls = conn.result.get("controls") or {}
            cookie = controls.get(PAGED_RESULTS, {}).get("value", {}).get("cookie")
            if not cookie:
                return

    def _complete(self, result: Mapping[str, Any], base: str) -> None:
        if result.get("result") in (3, 4, 11):
            raise StoreError(
                f"{self._where()}: the search under {base} stopped at a server limit "
                f"({result.get('description')}: {result.get('message')})",
                hint=f"raise the size and time limits of {self.config.bind_dn or 'anonymous'}"
                " for paged searches (OpenLDAP: limits dn.exact=... size.prtotal=unlimited)",
            )

    def _no_base(self, base: str) -> ConfigError:
        return ConfigError(
            f"{self._where()}: the search base {base} does not exist",
            hint=f"create it, or fix user_search_base / group_search_base of userstore "
            f"{self.domain}",
        )

    # ---- users: reading
    def _user_attrs(self) -> list[str]:
        names = [self.config.username_attribute, *self.claim_attributes.values()]
        return [*dict.fromkeys(names), "userPassword", *STAMPS]

    def _username(self, entry: Entry) -> str:
        """The username attribute's value; of several, the one that names the entry."""
        attribute = self.config.username_attribute
        values = entry.texts(attribute)
        if len(values) == 1:
            return values[0]
        return rdn_value(entry.dn, attribute) or (values[0] if values else "")

    def _user_entries(self, usernames: Sequence[str], attrs: Sequence[str]) -> list[Entry]:
        """Entries of these usernames, found with one search per ``CHUNK`` names."""
        found: list[Entry] = []
        for start in range(0, len(usernames), CHUNK):
            terms = [
                _eq(self.config.username_attribute, n) for n in usernames[start : start + CHUNK]
            ]
            flt = _all(self._user_filter, _any(terms))
            found += self._lookup(
                "look up users", self.config.user_search_base, flt, attrs, self._scope
            )
        return found

    def _user_entry(self, username: str, attrs: Sequence[str] | None = None) -> Entry | None:
        matches = [
            e
            for e in self._user_entries([username], attrs or self._user_attrs())
            if self._username(e).casefold() == username.casefold()
        ]
        if len(matches) > 1:
            raise StoreError(
                f"{self._where()}: {len(matches)} entries have "
                f"{self.config.username_attribute}={username!r}: "
                + "; ".join(e.dn for e in matches),
                hint="make usernames unique in the directory, or narrow user_search_base "
                "or user_search_scope",
            )
        return matches[0] if matches else None

    def _required_user(self, username: str, attrs: Sequence[str] | None = None) -> Entry:
        entry = self._user_entry(username, attrs)
        if entry is None:
            raise NotFoundError(
                f"no user {username!r} in the {self.domain} userstore",
                hint="list users with `idprov user list`",
            )
        return entry

    def _claims_of(self, entry: Entry, username: str) -> dict[str, ClaimValue]:
        claims: dict[str, ClaimValue] = {}
        for claim, attribute in self.claim_attributes.items():
            values = entry.texts(attribute)
            if not values or (self._person and attribute.lower() == "sn" and values == [username]):
                continue
            claims[claim] = values if self.claims[claim].multi_valued else values[0]
        return claims

    def _to_user(self, entry: Entry, roles: list[str]) -> User:
        username = self._username(entry)
        return User(
            id=entry.text("entryUUID") or "",
            domain=self.domain,
            username=username,
            claims=self._claims_of(entry, username),
            roles=roles,
            has_password=bool(entry.attributes.get("userpassword")),
            created=_stamp(entry.text("createTimestamp")),
            modified=_stamp(entry.text("modifyTimestamp")),
        )

    def _roles_of(self, user_dn: str) -> list[str]:
        flt = _all(self._group_filter, _eq(self.config.member_attribute, user_dn))
        attrs = [self.config.group_name_attribute]
        groups = self._run(
            "read roles",
            lambda c: list(self._paged(c, self.config.group_search_base, flt, attrs)),
        )
        return sorted((self._role_name(g) for g in groups), key=str.casefold)

    def find_user(self, username: str) -> User | None:
        entry = self._user_entry(username)
        return None if entry is None else self._to_user(entry, self._roles_of(entry.dn))

    def find_user_by_id(self, user_id: str) -> User | None:
        return self.find_users_by_id([user_id]).get(user_id)

    def find_users_by_id(self, user_ids: Sequence[str]) -> dict[str, User]:
        wanted = {i.lower(): i for i in user_ids if _is_uuid(i)}
        found: dict[str, User] = {}
        ids = list(wanted)
        for start in range(0, len(ids), CHUNK):
            flt = _all(
                self._user_filter, _any([_eq("entryUUID", i) for i in ids[start : start + CHUNK]])
            )
            base, attrs = self.config.user_search_base, self._user_attrs()
            entries = self._lookup("find users by id", base, flt, attrs, self._scope)
            for entry in entries:
                key = (entry.text("entryUUID") or "").lower()
                if key in wanted:
                    found[wanted[key]] = self._to_user(entry, self._roles_of(entry.dn))
        return found

    def find_users(self, usernames: Sequence[str]) -> dict[str, User]:
        """The users among ``usernames`` that exist, by casefolded name: one search per
        ``CHUNK`` names (and one for each user's roles)."""
        wanted = {name.casefold() for name in usernames}
        found: dict[str, User] = {}
        for entry in self._user_entries(list(dict.fromkeys(usernames)), self._user_attrs()):
            key = self._username(entry).casefold()
            if key in wanted and key not in found:
                found[key] = self._to_user(entry, self._roles_of(entry.dn))
        return found

    def list_users(self, query: UserQuery) -> Page:
        if _spaced(query.username_prefix):
            return Page([], 0, query.offset, query.limit)
        flt = self._list_filter(query)
        members: set[DnKey] | None = None
        if query.role is not None:
            group = self._group_entry(query.role, [self.config.member_attribute])
            if group is None:
                return Page([], 0, query.offset, query.limit)
            members = {dn_key(dn) for dn in self._real_members(group)}
        keep = None if query.limit is None else query.offset + query.limit
        total, picked = self._run("list users", lambda c: self._pick(c, flt, members, keep))
        chosen = picked[query.offset :]
        entries = {
            dn_key(e.dn): e
            for e in self._user_entries([n for _, n, _ in chosen], self._user_attrs())
        }
        users = [
            self._to_user(entries[dn_key(dn)], self._roles_of(dn))
            for _, _, dn in chosen
            if dn_key(dn) in entries
        ]
        return Page(users, total, query.offset, query.limit)

    def _list_filter(self, query: UserQuery) -> str:
        terms = [self._user_filter]
        if query.where is not None:
            attribute = self.config.username_attribute
            found = ldap_condition(query.where, attribute, self.claim_attributes)
            terms += [found] if found else []
        for claim, value in query.claims.items():
            terms.append(_eq(self._attribute(claim), value))
        if query.username_prefix:
            prefix = escape_filter_chars(query.username_prefix)
            terms.append(f"({self.config.username_attribute}={prefix}*)")
        return _all(*terms)

    def _pick(
        self, conn: Any, flt: str, members: set[DnKey] | None, keep: int | None
    ) -> tuple[int, list[tuple[str, str, str]]]:
        """The total of matches, and the first ``keep`` of them by name (all if None):
        (casefolded name, name, DN), holding no more than ``keep`` at a time."""
        total = 0

        def matches() -> Iterator[tuple[str, str, str]]:
            nonlocal total
            base, attrs = self.config.user_search_base, [self.config.username_attribute]
            for entry in self._paged(conn, base, flt, attrs, self._scope):
                if members is None or dn_key(entry.dn) in members:
                    total += 1
                    name = self._username(entry)
                    yield name.casefold(), name, entry.dn

        picked = sorted(matches()) if keep is None else heapq.nsmallest(keep, matches())
        return total, picked

    def password_hash(self, username: str) -> str | None:
        entry = self._required_user(username, [self.config.username_attribute, "userPassword"])
        return entry.text("userPassword")

    # ---- roles: reading
    def _group_attrs(self) -> list[str]:
        return [self.config.group_name_attribute, self.config.member_attribute, *STAMPS]

    def _role_name(self, group: Entry) -> str:
        attribute = self.config.group_name_attribute
        return rdn_value(group.dn, attribute) or group.text(attribute) or ""

    def _group_entry(self, name: str, attrs: Sequence[str] | None = None) -> Entry | None:
        flt = _all(self._group_filter, _eq(self.config.group_name_attribute, name))
        base, attrs = self.config.group_search_base, attrs or self._group_attrs()
        found = self._lookup(f"find role {name!r}", base, flt, attrs)
        exact = [g for g in found if self._role_name(g).casefold() == name.casefold()]
        return (exact or found)[0] if found else None

    def _required_group(self, name: str, attrs: Sequence[str] | None = None) -> Entry:
        group = self._group_entry(name, attrs)
        if group is None:
            raise NotFoundError(
                f"no role {name!r} in the {self.domain} userstore",
                hint=f"create it with `idprov role add {self.domain}/{name}`, or list roles "
                "with `idprov role list`",
            )
        return group

    def _is_placeholder(self, member: str, group_dn: str) -> bool:
        key = dn_key(member)
        return key == dn_key(group_dn) or (self._empty_key is not None and key == self._empty_key)

    def _placeholder(self, group_dn: str) -> str:
        return self.config.empty_member if self.config.empty_member is not None else group_dn

    def _real_members(self, group: Entry) -> list[str]:
        """Member DNs, without the placeholder of an empty group."""
        values = group.texts(self.config.member_attribute)
        return [dn for dn in values if not self._is_placeholder(dn, group.dn)]

    def _is_user_dn(self, dn: str) -> bool:
        """Whether ``dn`` is in this store's user subtree (members elsewhere are not users
        of this domain: they are neither shown nor counted)."""
        key, size = dn_key(dn), len(self._user_base)
        inside = len(key) > size and key[len(key) - size :] == self._user_base
        return inside and (self._scope != LEVEL or len(key) == size + 1)

    def _member_names(self, dns: Sequence[str]) -> list[str]:
        names = []
        for dn in dns:
            name = rdn_value(dn, self.config.username_attribute)
            if name is None:
                found = self._read_member(dn)
                name = self._username(found) if found else None
            if name is not None:
                names.append(name)
        return sorted(names, key=str.casefold)

    def _base_entry(self, conn: Any, dn: str) -> Entry | None:
        attrs = [self.config.username_attribute, "entryUUID"]
        try:
            found = self._search(conn, dn, self._user_filter, attrs, BASE)
        except ConfigError:  # the member's entry is gone
            return None
        return found[0] if found else None

    def _to_role(self, group: Entry, with_members: bool) -> Role:
        members = [dn for dn in self._real_members(group) if self._is_user_dn(dn)]
        return Role(
            id=group.text("entryUUID") or "",
            domain=self.domain,
            name=self._role_name(group),
            member_count=len(members),
            members=self._member_names(members) if with_members else None,
            created=_stamp(group.text("createTimestamp")),
            modified=_stamp(group.text("modifyTimestamp")),
        )

    def find_role(self, name: str, with_members: bool = False) -> Role | None:
        group = self._group_entry(name)
        return None if group is None else self._to_role(group, with_members)

    def _group_by_id(self, role_id: str) -> Entry | None:
        if not _is_uuid(role_id):
            return None
        flt = _all(self._group_filter, _eq("entryUUID", role_id))
        base, attrs = self.config.group_search_base, self._group_attrs()
        found = self._run("find a role by id", lambda c: self._search(c, base, flt, attrs, SUBTREE))
        return found[0] if found else None

    def find_role_by_id(self, role_id: str) -> Role | None:
        group = self._group_by_id(role_id)
        return None if group is None else self._to_role(group, False)

    def role_member_ids(self, role_id: str) -> list[str]:
        group = self._group_by_id(role_id)
        if group is None:
            return []
        dns = [dn for dn in self._real_members(group) if self._is_user_dn(dn)]
        if len(dns) <= CHUNK:
            found = [self._read_member(dn) for dn in dns]
            return [e.text("entryUUID") or "" for e in found if e is not None]
        return self._run("read member ids", lambda c: self._ids_by_walk(c, dns))

    def _ids_by_walk(self, conn: Any, dns: Sequence[str]) -> list[str]:
        """Ids of many member DNs: one paged walk of the users beats a search per member."""
        wanted = {dn_key(dn) for dn in dns}
        base, flt = self.config.user_search_base, self._user_filter
        return [
            e.text("entryUUID") or ""
            for e in self._paged(conn, base, flt, ["entryUUID"], self._scope)
            if dn_key(e.dn) in wanted
        ]

    def list_roles(self, prefix: str | None = None) -> list[Role]:
        if _spaced(prefix):
            return []
        flt = self._group_filter
        if prefix:
            name = self.config.group_name_attribute
            flt = _all(flt, f"({name}={escape_filter_chars(prefix)}*)")
        base, attrs = self.config.group_search_base, self._group_attrs()
        roles = self._run(
            "list roles",
            lambda c: [self._to_role(g, False) for g in self._paged(c, base, flt, attrs)],
        )
        return sorted(roles, key=lambda r: (r.name.casefold(), r.name))

    # ---- users: writing
    password_scheme: ClassVar[str] = "ssha"

    def hash_password(self, password: str) -> str:
        """The ``userPassword`` value for ``password``: ``{SSHA}``, which the directory
        checks binds against and :func:`~idprov.userstores.passwords.verify_password`
        verifies."""
        return hash_ssha(password)

    def _attribute(self, claim: str) -> str:
        attribute = self.claim_attributes.get(claim)
        if attribute is None:
            raise PolicyError(
                f"claim {claim!r} has no LDAP attribute in the {self.domain} userstore",
                hint=f"map it under userstores[].claim_attributes, e.g. {claim}: ATTRIBUTE",
            )
        return attribute

    def check_password_hash(self, encoded: str) -> None:
        """Only RFC 2307 values ({SSHA}...) that the directory checks binds against."""
        self._user_password(encoded)

    def _user_password(self, password_hash: str) -> bytes:
        scheme = _SCHEME.match(password_hash)
        if scheme is None or scheme.group(1).upper() in ("CLEARTEXT", "PLAIN"):
            raise PolicyError(
                f"the {self.domain} userstore keeps passwords as userPassword values the "
                "directory checks binds against ({SSHA} and other RFC 2307 schemes); "
                "this password hash is in another format",
                hint="set the password again (LDAP userstores hash it as {SSHA})",
            )
        return password_hash.encode()

    def _common_name(self, username: str, claims: Mapping[str, ClaimValue]) -> str:
        def first(claim: str) -> str:
            values = _values(claims.get(claim, ""))
            return values[0] if values else ""

        given_family = f"{first('given_name')} {first('family_name')}".strip()
        return first("display_name") or given_family or username

    def _entry_attributes(
        self, username: str, claims: Mapping[str, ClaimValue], password_hash: str | None
    ) -> dict[str, list[str | bytes]]:
        """The attributes of a user entry, with the cn and sn that person requires."""
        attrs: dict[str, list[str | bytes]] = {self.config.username_attribute: [username]}
        for claim, value in claims.items():
            values = _values(value)
            if values:
                attrs[self._attribute(claim)] = list(values)
        present = {name.lower() for name in attrs}
        if self._person and "sn" not in present:
            attrs["sn"] = [username]
        if self._person and "cn" not in present:
            attrs["cn"] = [self._common_name(username, claims)]
        if password_hash is not None:
            attrs["userPassword"] = [self._user_password(password_hash)]
        return attrs

    def _new_user_dn(self, username: str) -> str:
        if not username:
            raise PolicyError("a username cannot be empty")
        rdn = f"{self.config.username_attribute}={escape_rdn_value(username)}"
        return f"{rdn},{self.config.user_search_base}"

    def _refuse_existing(self, username: str) -> None:
        existing = self._user_entry(username, [self.config.username_attribute])
        if existing is not None:
            raise ConflictError(
                f"user {self._username(existing)!r} already exists in the {self.domain} "
                f"userstore ({existing.dn})",
                hint="choose another name, or change it with `idprov user update`",
            )

    def _add(self, conn: Any, dn: str, classes: Sequence[str], attrs: Mapping[str, Any]) -> Entry:
        """Add an entry; returns its id and timestamps (RFC 4527 post-read, else a read)."""
        conn.add(dn, list(classes), dict(attrs), controls=[post_read_control(STAMPS)])
        read = (conn.result.get("controls") or {}).get(POST_READ, {}).get("value", {})
        if read.get("result"):
            return Entry(dn, read["result"])
        found = self._search(conn, dn, "(objectClass=*)", STAMPS, BASE)
        return found[0] if found else Entry(dn, {})

    def add_user(
        self, username: str, claims: Mapping[str, ClaimValue], password_hash: str | None
    ) -> User:
        self.ensure_writable()
        attrs = self._entry_attributes(username, claims, password_hash)
        self._refuse_existing(username)
        dn, classes = self._new_user_dn(username), self.config.user_object_classes
        added = self._run(f"add user {username!r}", lambda c: self._add(c, dn, classes, attrs))
        return self._new_user(username, claims, password_hash, added)

    def _new_user(
        self,
        username: str,
        claims: Mapping[str, ClaimValue],
        password_hash: str | None,
        added: Entry,
    ) -> User:
        stamp = _stamp(added.text("createTimestamp"))
        return User(
            added.text("entryUUID") or "",
            self.domain,
            username,
            {k: v for k, v in claims.items() if v and _values(v)},
            [],
            password_hash is not None,
            stamp,
            stamp,
        )

    def add_users(self, rows: Sequence[NewUser], window: int = 16) -> list[User | IdprovError]:
        """Create many users on one connection of its own, with up to ``window``
        requests in flight (see :mod:`~idprov.userstores.ldap_bulk`; slapd queues up to
        100 per connection): about as fast as ``ldapadd``. One outcome per row, in
        order: the :class:`User`, or the error that refused it (ConflictError when the
        name exists). Not idempotent: a repeat reports conflicts."""
        self.ensure_writable()
        outcomes: list[User | IdprovError | None] = [None] * len(rows)
        entries: dict[int, NewEntry] = {}
        for index, (username, claims, password_hash) in enumerate(rows):
            try:
                attrs = self._entry_attributes(username, claims, password_hash)
                entries[index] = (self._new_user_dn(username), attrs)
            except IdprovError as exc:
                outcomes[index] = exc
        if entries:
            conn = self._bound()
            try:
                batch = Pipeline(conn.socket, window, self.config.timeout)
                self._add_batch(batch, rows, entries, outcomes)
            finally:
                _discard(conn)
        return [o if o is not None else StoreError("not attempted") for o in outcomes]

    def import_users(self, users: Sequence[ImportedUser]) -> None:
        """New users go through :meth:`add_users` (each ``user.id`` becomes its
        entryUUID, the id the caller then records); updates and roles as the base class
        does them, new users' roles with one modify per role. LDAP has no rollback: a
        user the directory refuses gets ``refused`` set, and the others are written."""
        self.ensure_writable()
        new = [u for u in users if not u.existing]
        outcomes = self.add_users([(u.username, u.claims, u.password_hash) for u in new])
        for user, outcome in zip(new, outcomes, strict=True):
            if isinstance(outcome, IdprovError):
                user.refused = outcome
            else:
                user.id = outcome.id
        for user in users:
            if user.existing:
                try:
                    super().import_users([user])
                except IdprovError as exc:
                    user.refused = exc
        members: dict[str, list[str]] = {}
        for user in (u for u in new if u.refused is None):
            for role in user.roles or []:
                members.setdefault(role, []).append(user.username)
        for role, names in members.items():
            self.assign(role, names)

    def _add_batch(
        self,
        batch: Pipeline,
        rows: Sequence[NewUser],
        entries: Mapping[int, NewEntry],
        outcomes: list[User | IdprovError | None],
    ) -> None:
        """Refuse names that exist, add the rest, then read the new entries' ids."""
        todo = list(entries)
        if self._scope != LEVEL:  # with scope one, the server's DN check is the name check
            existing = self._named_entries(batch, [rows[i][0] for i in todo], ["1.1"])
            for index in [i for i in todo if rows[i][0].casefold() in existing]:
                outcomes[index] = ConflictError(
                    f"user {rows[index][0]!r} already exists in the {self.domain} userstore"
                )
            todo = [i for i in todo if outcomes[i] is None]
        replies = self._send_adds(batch, [entries[i] for i in todo])
        added = [i for i, reply in zip(todo, replies, strict=True) if reply and not reply.result]
        stamps = ["entryUUID", "createTimestamp"]
        created = self._named_entries(batch, [rows[i][0] for i in added], stamps)
        for index, reply in zip(todo, replies, strict=True):
            outcomes[index] = self._bulk_outcome(rows[index], reply, created)

    def _named_entries(
        self, batch: Pipeline, usernames: Sequence[str], attrs: Sequence[str]
    ) -> dict[str, list[Entry]]:
        """Entries by casefolded username, found with one search per ``CHUNK``
        names on the batch's connection (through ldap3, paged, for a chunk the server
        cut short at a size limit)."""
        chunks = [usernames[i : i + CHUNK] for i in range(0, len(usernames), CHUNK)]
        classes = [equality("objectClass", c) for c in self.config.user_object_classes]
        name, base = self.config.username_attribute, self.config.user_search_base
        scope = "one" if self._scope == LEVEL else "sub"

        def encode(index: int, message_id: int) -> bytes:
            names = any_of([equality(name, n) for n in chunks[index]])
            return encode_search(message_id, base, scope, all_of([*classes, names]), [name, *attrs])

        try:
            replies = batch.run(len(chunks), encode)
        except ConnectionLost as exc:
            raise self._unreachable(exc, "look up users") from exc
        found: dict[str, list[Entry]] = {}
        for chunk, reply in zip(chunks, replies, strict=True):
            if reply is not None and reply.result == 0:
                entries = [Entry(dn, attributes) for dn, attributes in reply.entries]
            else:
                entries = self._user_entries(chunk, [name, *attrs])
            for entry in entries:
                found.setdefault(self._username(entry).casefold(), []).append(entry)
        return found

    def _send_adds(self, batch: Pipeline, entries: Sequence[NewEntry]) -> list[Reply | None]:
        classes = encode_attribute("objectClass", self.config.user_object_classes)

        def encode(index: int, message_id: int) -> bytes:
            dn, attrs = entries[index]
            return encode_add(message_id, dn, attrs, classes)

        try:
            return batch.run(len(entries), encode)
        except ConnectionLost as exc:
            return list(exc.args[1])

    def _bulk_outcome(
        self, row: NewUser, reply: Reply | None, created: Mapping[str, list[Entry]]
    ) -> User | IdprovError:
        username, claims, password_hash = row
        if reply is None:
            return StoreError(
                f"{self._where()}: the connection dropped before the directory answered; "
                f"whether user {username!r} was added is unknown",
                hint="run it again: users that were added are then reported as conflicts",
            )
        if reply.result != 0:
            failure = lx.LDAPOperationResult(
                result=reply.result,
                description=RESULT_CODES.get(reply.result, str(reply.result)),
                message=reply.message,
            )
            return self._translate(failure, f"add user {username!r}")
        found = created.get(username.casefold(), [])
        if len(found) > 1:  # the same name elsewhere in the subtree (added since the check)
            key = dn_key(self._new_user_dn(username))
            found = [e for e in found if dn_key(e.dn) == key]
        return self._new_user(username, claims, password_hash, found[0] if found else Entry("", {}))

    def update_user(
        self, username: str, set_claims: Mapping[str, ClaimValue], unset: Sequence[str]
    ) -> User:
        self.ensure_writable()
        entry = self._required_user(username)
        name = self._username(entry)
        before = self._claims_of(entry, name)
        after = {**before, **set_claims}
        for claim in unset:
            after.pop(claim, None)
        changes = self._claim_changes(name, before, after)
        if changes:
            self._run(f"update user {name!r}", lambda c: c.modify(entry.dn, changes))
        user = self.find_user(name)
        assert user is not None
        return user

    def _claim_changes(
        self, username: str, before: Mapping[str, ClaimValue], after: Mapping[str, ClaimValue]
    ) -> dict[str, list[tuple[Any, list[str | bytes]]]]:
        """Replace operations for every attribute whose claim changed (and a derived cn
        or sn that follows the name claims)."""
        changed = {
            c for c in {*before, *after} if _values(before.get(c, "")) != _values(after.get(c, ""))
        }
        desired = {k.lower(): v for k, v in self._entry_attributes(username, after, None).items()}
        touched = {self._attribute(c) for c in changed}
        mapped = {a.lower() for a in self.claim_attributes.values()}
        if self._person and "cn" not in mapped and changed & set(NAME_CLAIMS):
            touched.add("cn")
        return {a: [(MODIFY_REPLACE, desired.get(a.lower(), []))] for a in touched}

    def rename_user(self, username: str, new_name: str) -> User:
        """A modify-DN when the username names the entry (else a modify of the
        attribute); an ``sn``/``cn`` made from the old name follows, and so does every
        group's ``member`` value (no referential-integrity overlay is assumed)."""
        self.ensure_writable()
        entry = self._required_user(username, [*self._user_attrs(), "cn", "sn"])
        old = self._username(entry)
        clash = self._user_entry(new_name, [self.config.username_attribute])
        if clash is not None and dn_key(clash.dn) != dn_key(entry.dn):
            raise ConflictError(
                f"user {self._username(clash)!r} already exists in the {self.domain} "
                f"userstore ({clash.dn})",
                hint="choose another name",
            )
        groups = self._groups_holding(entry.dn)
        new_dn = self._rename_entry(entry, new_name)
        derived = self._derived_names(entry, old, new_name)
        if derived:
            self._run(f"rename user {old!r}", lambda c: c.modify(new_dn, derived))
        for group in groups:
            self._replace_member(group.dn, entry.dn, new_dn)
        user = self.find_user(new_name)
        if user is None:
            raise StoreError(f"{self._where()}: user {new_name!r} vanished while renamed")
        return user

    def _replace_member(self, group_dn: str, old_dn: str, new_dn: str) -> None:
        change = {self.config.member_attribute: [(MODIFY_DELETE, [old_dn]), (MODIFY_ADD, [new_dn])]}
        self._run(f"rename member {new_dn} in {group_dn}", lambda c: c.modify(group_dn, change))

    def _groups_holding(self, dn: str) -> list[Entry]:
        flt = _all(self._group_filter, _eq(self.config.member_attribute, dn))
        base = self.config.group_search_base
        return self._run("read roles", lambda c: list(self._paged(c, base, flt, ["1.1"])))

    def _rename_entry(self, entry: Entry, new_name: str) -> str:
        """Rename ``entry`` to ``new_name``; returns its DN afterwards."""
        attribute = self.config.username_attribute
        if rdn_value(entry.dn, attribute) is None:
            change = {attribute: [(MODIFY_REPLACE, [new_name])]}
            self._run(f"rename user {new_name!r}", lambda c: c.modify(entry.dn, change))
            return entry.dn
        rdn = f"{attribute}={escape_rdn_value(new_name)}"
        self._run(f"rename user {new_name!r}", lambda c: c.modify_dn(entry.dn, rdn))
        return f"{rdn},{_parent(entry.dn)}"

    def _derived_names(
        self, entry: Entry, old: str, new: str
    ) -> dict[str, list[tuple[Any, list[str]]]]:
        """Replace ``sn`` and ``cn`` that idprov made from the old username."""
        changes: dict[str, list[tuple[Any, list[str]]]] = {}
        mapped = {a.lower() for a in self.claim_attributes.values()}
        for attribute in ("sn", "cn") if self._person else ():
            if attribute in mapped and attribute != "sn":
                continue
            if entry.texts(attribute) == [old]:
                changes[attribute] = [(MODIFY_REPLACE, [new])]
        return changes

    def set_password_hash(self, username: str, password_hash: str) -> None:
        self.ensure_writable()
        value = self._user_password(password_hash)
        entry = self._required_user(username, [self.config.username_attribute])
        change = {"userPassword": [(MODIFY_REPLACE, [value])]}
        self._run(f"set the password of {username!r}", lambda c: c.modify(entry.dn, change))

    def delete_user(self, username: str) -> User:
        """Remove the user from its groups, then delete its entry."""
        self.ensure_writable()
        entry = self._required_user(username)
        user = self._to_user(entry, self._roles_of(entry.dn))
        flt = _all(self._group_filter, _eq(self.config.member_attribute, entry.dn))
        base = self.config.group_search_base
        groups = self._run("read roles", lambda c: list(self._paged(c, base, flt, ["1.1"])))
        for group in groups:
            self._remove_member(group.dn, entry.dn)
        self._run(f"delete user {user.username!r}", lambda c: c.delete(entry.dn))
        return user

    def _remove_member(self, group_dn: str, member_dn: str) -> None:
        """Delete one member value; the last one gives way to the placeholder."""
        member = self.config.member_attribute

        def remove(conn: Any) -> None:
            try:
                conn.modify(group_dn, {member: [(MODIFY_DELETE, [member_dn])]})
            except lx.LDAPObjectClassViolationResult:
                placeholder = self._placeholder(group_dn)
                conn.modify(group_dn, {member: [(MODIFY_REPLACE, [placeholder])]})
            except lx.LDAPNoSuchAttributeResult:
                pass

        self._run(f"remove a member from {group_dn}", remove)

    # ---- roles: writing
    def add_role(self, name: str) -> Role:
        self.ensure_writable()
        if not name:
            raise PolicyError("a role name cannot be empty")
        existing = self._group_entry(name, [self.config.group_name_attribute])
        if existing is not None:
            raise ConflictError(
                f"role {self._role_name(existing)!r} already exists in the {self.domain} "
                f"userstore ({existing.dn})"
            )
        attribute = self.config.group_name_attribute
        dn = f"{attribute}={escape_rdn_value(name)},{self.config.group_search_base}"
        attrs = {attribute: [name], self.config.member_attribute: [self._placeholder(dn)]}
        classes = [self.config.group_object_class]
        added = self._run(f"add role {name!r}", lambda c: self._add(c, dn, classes, attrs))
        stamp = _stamp(added.text("createTimestamp"))
        return Role(added.text("entryUUID") or "", self.domain, name, 0, [], stamp, stamp)

    def delete_role(self, name: str) -> Role:
        self.ensure_writable()
        group = self._required_group(name)
        role = self._to_role(group, True)
        self._run(f"delete role {role.name!r}", lambda c: c.delete(group.dn))
        return role

    def rename_role(self, name: str, new_name: str) -> Role:
        """A modify-DN: the entry, its entryUUID and its members stay."""
        self.ensure_writable()
        group = self._required_group(name)
        clash = self._group_entry(new_name, [self.config.group_name_attribute])
        if clash is not None and dn_key(clash.dn) != dn_key(group.dn):
            raise ConflictError(f"role {self._role_name(clash)!r} already exists ({clash.dn})")
        rdn = f"{self.config.group_name_attribute}={escape_rdn_value(new_name)}"
        self._run(f"rename role {name!r}", lambda c: c.modify_dn(group.dn, rdn))
        moved = self._group_by_id(group.text("entryUUID") or "")
        if moved is None:
            raise StoreError(f"{self._where()}: role {new_name!r} vanished while renamed")
        if not self._real_members(group) and self.config.empty_member is None:
            self._move_placeholder(moved)
            moved = self._group_by_id(group.text("entryUUID") or "") or moved
        return self._to_role(moved, True)

    def _move_placeholder(self, new: Entry) -> None:
        """An empty group named itself as its member: name the new DN instead."""
        member = self.config.member_attribute
        change = {member: [(MODIFY_REPLACE, [new.dn])]}
        self._run(f"rename role {self._role_name(new)!r}", lambda c: c.modify(new.dn, change))

    def _user_dns(self, usernames: Sequence[str]) -> dict[str, str]:
        """DN of every username (by casefolded name); NotFoundError for the first missing."""
        entries = self._user_entries(
            list(dict.fromkeys(usernames)), [self.config.username_attribute]
        )
        dns = {self._username(e).casefold(): e.dn for e in entries}
        for username in usernames:
            if username.casefold() not in dns:
                raise NotFoundError(
                    f"no user {username!r} in the {self.domain} userstore",
                    hint="list users with `idprov user list`",
                )
        return dns

    def assign(self, role: str, usernames: Sequence[str]) -> list[str]:
        """One modify adding every new member (and dropping the placeholder)."""
        self.ensure_writable()
        member = self.config.member_attribute
        group = self._required_group(role, [member])
        dns = self._user_dns(usernames)
        present = {dn_key(v) for v in group.texts(member)}
        added: dict[DnKey, tuple[str, str]] = {}
        for username in usernames:
            dn = dns[username.casefold()]
            if dn_key(dn) not in present:
                added.setdefault(dn_key(dn), (username, dn))
        if not added:
            return []
        changes: list[tuple[Any, list[str]]] = [(MODIFY_ADD, [dn for _, dn in added.values()])]
        stale = [v for v in group.texts(member) if self._is_placeholder(v, group.dn)]
        if stale:
            changes.append((MODIFY_DELETE, stale))
        self._run(f"assign role {role!r}", lambda c: c.modify(group.dn, {member: changes}))
        return [name for name, _ in added.values()]

    def unassign(self, role: str, usernames: Sequence[str]) -> list[str]:
        """One modify removing the members (the last one gives way to the placeholder)."""
        self.ensure_writable()
        member = self.config.member_attribute
        group = self._required_group(role, [member])
        dns = self._user_dns(usernames)
        values = {dn_key(v): v for v in group.texts(member)}
        removed: dict[DnKey, tuple[str, str]] = {}
        for username in usernames:
            key = dn_key(dns[username.casefold()])
            if key in values:
                removed.setdefault(key, (username, values[key]))
        if not removed:
            return []
        changes: list[tuple[Any, list[str]]] = [(MODIFY_DELETE, [v for _, v in removed.values()])]
        left = [v for k, v in values.items() if k not in removed]
        if not left:
            changes.insert(0, (MODIFY_ADD, [self._placeholder(group.dn)]))
        self._run(f"unassign role {role!r}", lambda c: c.modify(group.dn, {member: changes}))
        return [name for name, _ in removed.values()]


def _discard(conn: Any) -> None:
    """Unbind and close ``conn`` (None, half-open or dead alike), raising nothing."""
    if conn is None:
        return
    sock = conn.socket
    try:
        conn.unbind()
    except (lx.LDAPException, OSError):
        pass
    if sock is not None:
        sock.close()


def _is_tls_failure(exc: Exception) -> bool:
    """Whether ldap3 failed on TLS itself (a certificate, a CA file), not the network."""
    if isinstance(exc, lx.LDAPSSLConfigurationError | lx.LDAPCertificateError):
        return True
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "doesn't match" in text


def _is_entry(response: Mapping[str, Any]) -> bool:
    return response.get("type") == "searchResEntry"


def _spaced(prefix: str | None) -> bool:
    """A prefix with space at either end matches no name literally, but a directory's
    matching rules drop such spaces (or fail on a blank value): answer it here."""
    return prefix is not None and prefix != prefix.strip()
