"""The LDAP userstore's connection: open, secure and bind it (:mod:`ldap_wire` for a
store that only reads, ldap3 once it writes), run operations
on it (reopened once if it dropped), page through searches and send many of them in
flight (as :mod:`~idprov.userstores.ldap_bulk` BER on the same socket), and turn the
directory's errors into idprov's, each naming the store's URL and what it was doing.
"""

from __future__ import annotations

import math
import ssl
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from idprov.config.claims import ClaimDefinition
from idprov.config.ldap import CA_FILE_HINT, LdapUserstoreConfig, ca_file_problem
from idprov.errors import (
    ConfigError,
    ConflictError,
    IdprovError,
    NotFoundError,
    PolicyError,
    StoreError,
)
from idprov.sockets import idle_readable
from idprov.userstores.base import UserStore
from idprov.userstores.ldap_bulk import (
    NOT_LDAP,
    ConnectionLost,
    Pipeline,
    Reply,
    encode_search,
    paged,
)
from idprov.userstores.ldap_escape import (
    BASE,
    LEVEL,
    PERSON_CLASSES,
    SUBTREE,
    Entry,
    T,
    all_filter,
    dn_key,
    eq_filter,
    lx,
    quiet_ldap3,
)
from idprov.userstores.ldap_filters import filter_ber
from idprov.userstores.ldap_wire import (
    HandshakeFailed,
    Refused,
    WireConnection,
    is_certificate_failure,
    open_wire,
)


class Unreachable(StoreError):
    """The directory could not be reached, or stopped answering: a write in flight
    when it did may or may not have been made (a refusal, by contrast, made nothing)."""


class ServerLimit(StoreError):
    """The directory stopped a search at its size or time limit for the bind DN."""


class Unreadable(StoreError):
    """An entry came back without an attribute every such entry has (a user's or
    group's ``entryUUID``, a ``groupOfNames``' ``member``): the directory's access
    rules hide it from the bind DN. Taken for absent, it read as users deleted and
    made anew (every account deleted at the targets) or as groups emptied (their
    members deprovisioned): a read that misses it fails instead."""


MEMBER_REQUIRED = {"groupofnames": "member", "groupofuniquenames": "uniquemember"}
"""Group classes whose schema requires a member value (idprov keeps a placeholder in
an empty one: see ``empty_member``), by casefolded name: their member attribute."""


class LdapSession(UserStore):
    """The connection half of :class:`~idprov.userstores.ldap.LdapUserStore`: its
    settings, its one connection and the searches and errors on it."""

    type: ClassVar[str] = "ldap"
    transactional: ClassVar[bool] = False
    config: LdapUserstoreConfig

    def __init__(self, config: LdapUserstoreConfig, claims: Mapping[str, ClaimDefinition]) -> None:
        super().__init__(config, claims)
        self.claim_attributes = self._mapping(config, claims)
        self._claim_columns = [
            (claim, attribute.lower(), claims[claim].multi_valued)
            for claim, attribute in self.claim_attributes.items()
        ]
        """(claim, lower-cased attribute, multi-valued) in the mapping's order."""
        self._conn: Any = None
        self._user_base = dn_key(config.user_search_base)
        self._empty_key = dn_key(config.empty_member) if config.empty_member is not None else None
        self._person = any(c.lower() in PERSON_CLASSES for c in config.user_object_classes)
        self._user_filter = all_filter(
            *(eq_filter("objectClass", c) for c in config.user_object_classes)
        )
        self._group_filter = eq_filter("objectClass", config.group_object_class)
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

    def _entry_id(self, entry: Entry) -> str:
        """The entry's ``entryUUID``, idprov's id of a user or role (every entry of
        OpenLDAP, 389 DS and others has one); :class:`Unreadable` if it came back
        without it."""
        found = entry.text("entryUUID")
        if not found:
            raise self._unreadable(entry.dn, "entryUUID", "which idprov uses as its id")
        return found

    def _member_values(self, group: Entry) -> list[str]:
        """The values of the group's member attribute as read (an empty group's
        placeholder included); :class:`Unreadable` for none in a group whose class
        requires one (``groupOfNames``: a group read so would have lost every member)."""
        config = self.config
        values = group.texts(config.member_attribute)
        required = MEMBER_REQUIRED.get(config.group_object_class.casefold())
        if not values and required == config.member_attribute.casefold():
            why = f"which every {config.group_object_class} has (an empty one, a placeholder)"
            raise self._unreadable(group.dn, config.member_attribute, why)
        return values

    def _unreadable(self, dn: str, attribute: str, why: str) -> Unreadable:
        who = self.config.bind_dn or "anonymous"
        rule = f'dn.exact="{who}"' if self.config.bind_dn else "anonymous"
        return Unreadable(
            f"{self._where()}: {dn} was read without its {attribute}, {why}: the directory's"
            f" access rules hide it from {who}, so its users and roles cannot be read whole",
            hint=f"grant {who} read access to {attribute} (OpenLDAP: access to"
            f" attrs={attribute} by {rule} read), then run the command again",
        )

    def _address(self) -> tuple[str, int, bool]:
        """Host, port, and whether the URL is ldaps:// (TLS from the start)."""
        url = urlsplit(self.config.url)
        secure = url.scheme.lower() == "ldaps"
        return url.hostname or "", url.port or (636 if secure else 389), secure

    def _ca_file(self) -> str | None:
        """``ca_file``, checked as `config validate` checks it (:func:`ca_file_problem`)."""
        ca_file = self.config.ca_file
        problem = ca_file_problem(ca_file) if ca_file else None
        if problem:
            raise ConfigError(f"{self._where()}: ca_file {ca_file} {problem}", hint=CA_FILE_HINT)
        return ca_file

    def _server(self) -> Any:

        with quiet_ldap3():
            from ldap3 import NONE, Server, Tls

        host, port, secure = self._address()
        tls = None
        if secure or self.config.start_tls:
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self._ca_file())
        return Server(
            host,
            port=port,
            use_ssl=secure,
            tls=tls,
            connect_timeout=self.config.connect_timeout,
            get_info=NONE,
        )

    def _open(self) -> Any:
        """A new ldap3 connection, opened, secured and bound (ldap3 raises if not)."""
        with quiet_ldap3():
            from ldap3 import Connection

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
            discard(conn)
            raise
        return conn

    def _open_wire(self) -> WireConnection:
        """A new connection for reading, opened without ldap3 (:mod:`ldap_wire`)."""
        host, port, secure = self._address()
        tls = secure or self.config.start_tls
        password = self.config.bind_password.reveal() if self.config.bind_password else ""
        if self.config.bind_dn and not password:
            # a simple bind with a DN and no password is an "unauthenticated bind" (RFC
            # 4513 5.1.2), which some servers take as anonymous: a read that sees less
            raise ConfigError(
                f"{self._where()}: bind_password is empty",
                hint="store the bind DN's password in the secret bind_password names",
            )
        return open_wire(
            (host, port),
            (secure, self.config.start_tls, self._ca_file() if tls else None),
            (self.config.bind_dn or "", password),
            (self.config.connect_timeout, self.config.timeout),
        )

    _writer = False
    """Whether this store has made a write of ldap3's: its connection is then ldap3's."""

    def _run_ldap3(self, doing: str, op: Callable[[Any], T], resend: bool = True) -> T:
        """:meth:`_run` for a write ldap3 makes (a rename, a delete, a lone add or
        modify): a store that read on a connection of :mod:`ldap_wire` goes on with one
        of ldap3. (The bulk adds and modifies of an import are BER on either: checking
        a file and importing it never needs ldap3.)"""
        if not self._writer:
            self._writer = True
            if self._conn is not None:
                self.close()
        return self._run(doing, lambda conn: op(self._sending(conn)), resend)

    def _write_once(
        self, doing: str, op: Callable[[Any], object], made: Callable[[], bool]
    ) -> None:
        """A write that must not be made twice (a delete, a modify-DN), sent once. If
        its answer is lost (the connection dropped while it was out), the directory is
        read back on a new connection, ``made()`` saying whether the write is there:
        then it is done; if not, it is sent once more. Sent again unseen, a delete that
        went through was refused as noSuchObject and the command reported a failure
        with the directory changed. When the read back fails too, the write's lost
        :class:`Unreachable` says so (:meth:`_maybe_made`)."""
        sent = self.writes_sent
        try:
            self._run_ldap3(doing, op, resend=False)
            return
        except Unreachable as exc:
            if self.writes_sent == sent:  # never sent: the directory was not reached
                raise
            lost = exc
        try:
            there = made()
        except Unreachable:
            there = None
        if there is None:
            raise self._maybe_made(lost) from lost
        if not there:
            self._run_ldap3(doing, op, resend=False)

    def _maybe_made(self, lost: Unreachable) -> Unreachable:
        """The error of a write whose answer was lost, the directory unreachable since:
        it may have been made, and the same command run again looks before it writes
        (the unit of work recorded the change it was making)."""
        return Unreachable(
            f"{lost.message}; the write was sent, and may have been made",
            hint=f"once the server at {self.config.url} answers, run the same command "
            "again: it looks at the directory first, then finishes the change or makes it",
        )

    def _sending(self, conn: T) -> T:
        """``conn``, a write about to go out on it counted (:attr:`writes_sent`)."""
        self.writes_sent += 1
        return conn

    def _bound(self) -> Any:
        """A new connection (:meth:`_open`'s once the store writes, else
        :meth:`_open_wire`'s), or the idprov error saying why there is none."""
        if not self._writer:
            return self._bound_wire()
        try:
            return self._open()
        except lx.LDAPOperationResult as exc:
            raise self._translate(exc, "bind") from exc
        except lx.LDAPException as exc:
            if is_tls_failure(exc):
                raise self._tls_failed(exc) from exc
            if SSL_WRAPPING in str(exc):
                why = str(exc).split(SSL_WRAPPING, 1)[1].split("'")[0].strip()
                raise self._handshake_failed(why) from exc
            raise self._unreachable(exc, "connect") from exc
        except (KeyError, IndexError, ValueError, TypeError) as exc:  # ldap3's decoder
            raise self._unreachable(ConnectionLost(NOT_LDAP), "connect") from exc

    def _bound_wire(self) -> WireConnection:
        try:
            return self._open_wire()
        except Refused as exc:
            if exc.doing == "start TLS":
                raise ConfigError(
                    f"{self._where()}: the server refused StartTLS ({exc.message})",
                    hint="enable TLS on the server, or use an ldaps:// url, or set "
                    "start_tls: false to send the password in the clear",
                ) from exc
            raise self._translate(exc, exc.doing) from exc
        except HandshakeFailed as exc:
            raise self._handshake_failed(exc.args[0]) from exc
        except (OSError, ConnectionLost) as exc:
            if is_certificate_failure(exc):
                raise self._tls_failed(exc) from exc
            raise self._unreachable(exc, "connect") from exc

    def _tls_failed(self, exc: Exception) -> ConfigError:
        return ConfigError(
            f"{self._where()}: TLS failed, the server's certificate was not accepted: {exc}",
            hint=f"check ca_file ({self.config.ca_file or 'none: the system CAs'}) "
            "and that the certificate names the host in url",
        )

    def _handshake_failed(self, why: str) -> ConfigError:
        """A server that answered, with which TLS could not be set up."""
        host, port, secure = self._address()
        if secure:
            hint = (
                f"is {host}:{port} the directory's ldaps port (usually 636)? A plain LDAP "
                "port (389) takes an ldap:// url, with start_tls: true if the server speaks "
                "StartTLS"
            )
        else:
            hint = (
                "the server accepted StartTLS but not the TLS that followed: check its TLS "
                "settings (certificate and key), or use its ldaps:// port"
            )
        return ConfigError(
            f"{self._where()}: cannot connect: the TLS handshake failed ({why})",
            hint=hint,
        )

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._bound()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        discard(conn)

    def _run(self, doing: str, op: Callable[[Any], T], resend: bool = True) -> T:
        """``op(connection)``, with ldap3's errors made idprov's. A connection that was
        open but has dropped is reopened once and ``op`` run again, unless ``resend``
        is False (an add or a modify-DN: made twice, the second is refused as if the
        first were someone else's): then a connection the server has closed is
        replaced before ``op`` goes out, and a drop while it is out is
        :class:`Unreachable` (the write may have been made)."""
        reused = self._conn is not None
        if reused and not resend and closed_by_peer(self._conn):
            self.close()
            reused = False
        try:
            return self._attempt(doing, op)
        except lx.LDAPCommunicationError as exc:
            self.close()
            if not reused or not resend:
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

    def _unreachable(self, exc: Exception, doing: str) -> Unreachable:
        why = exc.args[0] if isinstance(exc, ConnectionLost) and exc.args else exc
        return Unreachable(
            f"{self._where()}: cannot {doing}: the directory server cannot be reached ({why})",
            hint=f"check that the server at {self.config.url} is up, and userstore "
            f"{self.domain}'s url, start_tls and ca_file",
        )

    def _translate(self, exc: lx.LDAPOperationResult | Refused, doing: str) -> IdprovError:
        """An LDAP result code as the idprov error it means, with the server's message."""
        said = str(exc.description or result_codes().get(exc.result, exc.result))
        said += f": {exc.message}" if exc.message else ""
        text = f"{self._where()}: cannot {doing}: {said}"
        code = exc.result
        if code == 32:
            return NotFoundError(text)
        if code == 68:
            return ConflictError(text)
        if code == 49:  # as PostgreSQL's refusal: a store that cannot be used, exit 1
            secret = self.config.bind_password.ref if self.config.bind_password else "none set"
            return StoreError(
                text,
                hint=f"check bind_dn and the password secret ({secret}) of userstore {self.domain}",
            )
        if code == 8:  # strongerAuthRequired
            return ConfigError(
                text,
                hint=f"bind userstore {self.domain} with bind_dn and bind_password (the "
                "directory refuses this to an anonymous or unencrypted bind), or use "
                "ldaps:// or start_tls: true",
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

    def _paged(
        self, conn: Any, base: str, flt: str, attrs: Sequence[str], scope: Any = SUBTREE
    ) -> Iterator[Entry]:
        """Every match, ``page_size`` at a time. Consume it fully before another search.
        Sent and decoded by :mod:`~idprov.userstores.ldap_bulk` on ``conn``'s socket:
        ldap3 decodes about 4,000 entries a second, a tenth of what slapd sends."""
        pipeline = Pipeline(conn.socket, 1, self.config.timeout)
        request = (base, SCOPES[scope], filter_ber(flt), attrs)
        cookie = b""
        while True:
            reply = self._page(pipeline, request, cookie)
            yield from (Entry.decoded(dn, attributes) for dn, attributes in reply.entries)
            cookie = reply.cookie
            if not cookie:
                return

    def _page(
        self, pipeline: Pipeline, request: tuple[str, str, bytes, Sequence[str]], cookie: bytes
    ) -> Reply:
        """One page of a paged search, after the page that gave ``cookie``."""
        controls = paged(self.config.page_size, cookie)
        try:
            (reply,) = pipeline.run(1, lambda _, mid: encode_search(mid, *request, controls))
        except ConnectionLost as exc:
            raise lx.LDAPSocketReceiveError(str(exc.args[0])) from exc
        assert reply is not None
        self._complete(reply, request[0])
        return reply

    def _searches(
        self, conn: Any, base: str, filters: Sequence[str], attrs: Sequence[str], scope: Any
    ) -> list[Entry]:
        """Every match of each filter (for lookups of a few entries each): the searches
        ``WINDOW`` in flight on ``conn``'s socket, unpaged; one that the server cut
        short at a size limit is sent again, paged."""
        pipeline = Pipeline(conn.socket, WINDOW, self.config.timeout)
        encoded = [filter_ber(f) for f in filters]

        def encode(index: int, message_id: int) -> bytes:
            return encode_search(message_id, base, SCOPES[scope], encoded[index], attrs)

        try:
            replies = pipeline.run(len(filters), encode)
        except ConnectionLost as exc:
            raise lx.LDAPSocketReceiveError(str(exc.args[0])) from exc
        found: list[Entry] = []
        for flt, reply in zip(filters, replies, strict=True):
            assert reply is not None
            if reply.result in LIMITS:
                found += self._paged(conn, base, flt, attrs, scope)
                continue
            self._complete(reply, base)
            found += [Entry.decoded(dn, attributes) for dn, attributes in reply.entries]
        return found

    def _entries_at(
        self, conn: Any, dns: Sequence[str], flt: str, attrs: Sequence[str]
    ) -> list[Entry | None]:
        """The entry at each DN if it matches ``flt`` (None if not, or if it is gone):
        base searches, ``WINDOW`` in flight on ``conn``'s socket."""
        pipeline, search_filter = (
            Pipeline(conn.socket, WINDOW, self.config.timeout),
            filter_ber(flt),
        )

        def encode(index: int, message_id: int) -> bytes:
            return encode_search(message_id, dns[index], "base", search_filter, attrs)

        try:
            replies = pipeline.run(len(dns), encode)
        except ConnectionLost as exc:
            raise lx.LDAPSocketReceiveError(str(exc.args[0])) from exc
        return [self._base_reply(dn, reply) for dn, reply in zip(dns, replies, strict=True)]

    def _base_reply(self, dn: str, reply: Reply | None) -> Entry | None:
        assert reply is not None
        if reply.result == 32:  # noSuchObject: the entry is gone
            return None
        self._complete(reply, dn)
        return Entry.decoded(*reply.entries[0]) if reply.entries else None

    def _complete(self, reply: Reply, base: str) -> None:
        """Raise unless the search succeeded (a server limit is an error, never a
        silently short answer)."""
        if reply.result == 0:
            return
        if reply.result == 32:
            raise self._no_base(base)
        described = result_codes().get(reply.result, str(reply.result))
        if reply.result in LIMITS:
            raise ServerLimit(
                f"{self._where()}: the search under {base} stopped at a server limit "
                f"({described}: {reply.message})",
                hint=f"raise the size and time limits of {self.config.bind_dn or 'anonymous'}"
                " for paged searches (OpenLDAP: limits dn.exact=... size.prtotal=unlimited)",
            )
        raise lx.LDAPOperationResult(
            result=reply.result, description=described, message=reply.message
        )

    def _no_base(self, base: str) -> ConfigError:
        who = self.config.bind_dn or "an anonymous bind"
        return ConfigError(  # noSuchObject: also what a directory says of what it hides
            f"{self._where()}: the search base {base} does not exist, or {who} may not see it",
            hint=f"create it, fix user_search_base / group_search_base of userstore "
            f"{self.domain}, or grant {who} read access to it (OpenLDAP: an access rule"
            f' \'to dn.subtree="{base}" by dn="..." read\')',
        )


def result_codes() -> dict[int, str]:
    """ldap3's names of the LDAP result codes (imported when an error needs one)."""
    with quiet_ldap3():
        from ldap3.core.results import RESULT_CODES

    return dict(RESULT_CODES)


def discard(conn: Any) -> None:
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


def closed_by_peer(conn: Any) -> bool:
    """Whether an idle connection has something to read (the end of the stream, a
    notice of disconnection): the server closed it, and a request sent on it is lost.
    ``poll``, not ``select``: select refuses a descriptor of 1,024 or more, which a
    busy process (a serve with many clients) has, and every add or rename would
    reconnect (as the HTTP connectors' stale-connection check does it)."""
    sock = getattr(conn, "socket", None)
    return sock is None or idle_readable(sock)


def is_tls_failure(exc: Exception) -> bool:
    """Whether ldap3 failed on TLS itself (a certificate, a CA file), not the network."""
    if isinstance(exc, lx.LDAPSSLConfigurationError | lx.LDAPCertificateError):
        return True
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "doesn't match" in text


SSL_WRAPPING = "socket ssl wrapping error:"
"""How ldap3 words a TLS handshake that failed (its exception holds only text)."""
LIMITS = (3, 4, 11)
"""timeLimitExceeded, sizeLimitExceeded, adminLimitExceeded"""
WINDOW = 32
"""Requests in flight on one connection (slapd queues up to 100 for an anonymous one)."""
SCOPES = {BASE: "base", LEVEL: "one", SUBTREE: "sub"}
