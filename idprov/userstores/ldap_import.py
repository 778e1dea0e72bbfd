"""Creating users in the directory: the entry a user becomes (cn, sn, userPassword),
and the bulk path of imports, which pipelines adds on a connection of its own (see
:mod:`~idprov.userstores.ldap_bulk`) and writes new members with one modify per role.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from idprov.errors import ConflictError, IdprovError, PolicyError, StoreError
from idprov.model import ClaimValue, User
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
from idprov.userstores.ldap_escape import (
    CHUNK,
    POST_READ,
    STAMPS,
    Entry,
    NewEntry,
    NewUser,
    claim_values,
    dn_key,
    escape_rdn_value,
    iso_stamp,
    quiet_ldap3,
)
from idprov.userstores.ldap_read import LdapReader
from idprov.userstores.ldap_session import discard
from idprov.userstores.passwords import hash_ssha

if TYPE_CHECKING:
    from idprov.userstores.base import ImportedUser

with quiet_ldap3():
    from ldap3 import BASE, LEVEL
    from ldap3.core import exceptions as lx
    from ldap3.core.results import RESULT_CODES
    from ldap3.protocol.rfc4527 import post_read_control

_SCHEME = re.compile(r"^\{([A-Za-z0-9.-]+)\}.")


class LdapImporter(LdapReader):
    """Entries for new users, and the bulk writes of imports."""

    # ---- users: writing
    password_scheme: ClassVar[str] = "ssha"

    def hash_password(self, password: str) -> str:
        """The ``userPassword`` value for ``password``: ``{SSHA}``, which the directory
        checks binds against and :func:`~idprov.userstores.passwords.verify_password`
        verifies."""
        return hash_ssha(password)

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
            values = claim_values(claims.get(claim, ""))
            return values[0] if values else ""

        given_family = f"{first('given_name')} {first('family_name')}".strip()
        return first("display_name") or given_family or username

    def _entry_attributes(
        self, username: str, claims: Mapping[str, ClaimValue], password_hash: str | None
    ) -> dict[str, list[str | bytes]]:
        """The attributes of a user entry, with the cn and sn that person requires."""
        attrs: dict[str, list[str | bytes]] = {self.config.username_attribute: [username]}
        for claim, value in claims.items():
            values = claim_values(value)
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

    def _add(self, conn: Any, dn: str, classes: Sequence[str], attrs: Mapping[str, Any]) -> Entry:
        """Add an entry; returns its id and timestamps (RFC 4527 post-read, else a read)."""
        conn.add(dn, list(classes), dict(attrs), controls=[post_read_control(STAMPS)])
        read = (conn.result.get("controls") or {}).get(POST_READ, {}).get("value", {})
        if read.get("result"):
            return Entry(dn, read["result"])
        found = self._search(conn, dn, "(objectClass=*)", STAMPS, BASE)
        return found[0] if found else Entry(dn, {})

    def _new_user(
        self,
        username: str,
        claims: Mapping[str, ClaimValue],
        password_hash: str | None,
        added: Entry,
    ) -> User:
        stamp = iso_stamp(added.text("createTimestamp"))
        return User(
            added.text("entryUUID") or "",
            self.domain,
            username,
            {k: v for k, v in claims.items() if v and claim_values(v)},
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
                discard(conn)
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
