"""Creating users in the directory: the entry a user becomes (cn, sn, userPassword),
and the bulk path of imports: adds pipelined on a connection of its own (see
:mod:`~idprov.userstores.ldap_bulk`), existing users read at once and changed with a
modify each, in flight, and then one modify per role that gains or loses members.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from idprov.errors import ConflictError, IdprovError, PolicyError
from idprov.model import ClaimValue, User
from idprov.userstores.ldap_bulk import (
    Change,
    ConnectionLost,
    Pipeline,
    Reply,
    encode_add,
    encode_attribute,
)
from idprov.userstores.ldap_escape import (
    BASE,
    LEVEL,
    NAME_CLAIMS,
    POST_READ,
    STAMPS,
    DnKey,
    Entry,
    NewUser,
    claim_values,
    dn_key,
    escape_rdn_value,
    iso_stamp,
    quiet_ldap3,
)
from idprov.userstores.ldap_members import LdapMembership, Modify
from idprov.userstores.ldap_session import Unreachable, discard
from idprov.userstores.passwords import hash_ssha

if TYPE_CHECKING:
    from idprov.userstores.base import ImportedUser

NEW_STAMPS = ["entryUUID", "createTimestamp"]
RoleChanges = dict[str, tuple[str, list[str], list[str]]]
"""By casefolded role name: the role's name, member DNs to add, member DNs to remove."""
_SCHEME = re.compile(r"^\{([A-Za-z0-9.-]+)\}.")


class LdapImporter(LdapMembership):
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

    def _claim_changes(
        self, entry: Entry, before: Mapping[str, ClaimValue], after: Mapping[str, ClaimValue]
    ) -> list[Change]:
        """Replace operations for every attribute of ``entry`` (read with its ``cn``)
        whose claim changed (and a derived cn or sn that follows the name claims)."""
        username = self._username(entry)
        changed = {
            c
            for c in {*before, *after}
            if claim_values(before.get(c, "")) != claim_values(after.get(c, ""))
        }
        desired = {k.lower(): v for k, v in self._entry_attributes(username, after, None).items()}
        touched = {self._attribute(c) for c in changed}
        if changed & set(NAME_CLAIMS) and self._made_cn(entry, username, before):
            touched.add("cn")
        return [("replace", a, desired.get(a.lower(), [])) for a in sorted(touched)]

    def _made_cn(self, entry: Entry, username: str, before: Mapping[str, ClaimValue]) -> bool:
        """Whether the ``cn`` of ``entry`` (a person, cn mapped to no claim) is the one
        idprov made from the names ``before`` (display, else "given family", else the
        username): only that one follows a change of the names. A cn an administrator
        set ("Dr. Ann Smith-Custom"), or several, is theirs and left as it is."""
        mapped = {a.lower() for a in self.claim_attributes.values()}
        if not self._person or "cn" in mapped or self.config.username_attribute.lower() == "cn":
            return False
        return entry.texts("cn") == [self._common_name(username, before)]

    def _new_user_dn(self, username: str) -> str:
        if not username:
            raise PolicyError("a username cannot be empty")
        rdn = f"{self.config.username_attribute}={escape_rdn_value(username)}"
        return f"{rdn},{self.config.user_search_base}"

    def _add(self, conn: Any, dn: str, classes: Sequence[str], attrs: Mapping[str, Any]) -> Entry:
        """Add an entry; returns its id and timestamps (RFC 4527 post-read, else a read)."""
        with quiet_ldap3():
            from ldap3.protocol.rfc4527 import post_read_control

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
            self._entry_id(added),
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
        name exists). :class:`Unreachable` if the connection drops before every add is
        answered: those adds may or may not have been made, so none is a refusal, and
        the adds answered before are not reported either (see :meth:`_unanswered`). Not
        idempotent: a repeat reports conflicts."""
        self.ensure_writable()
        outcomes: list[User | IdprovError | None] = [None] * len(rows)
        dns: dict[int, str] = {}
        for index, (username, _, _) in enumerate(rows):
            try:
                dns[index] = self._new_user_dn(username)
            except IdprovError as exc:
                outcomes[index] = exc
        if dns:
            conn = self._bound()
            try:
                batch = Pipeline(self._sending(conn).socket, window, self.config.timeout)
                self._add_batch(batch, rows, dns, outcomes)
            finally:
                discard(conn)
        decided = [o for o in outcomes if o is not None]
        assert len(decided) == len(rows), "every row is added, refused, or Unreachable"
        return decided

    def import_users(self, users: Sequence[ImportedUser]) -> None:
        """New users go through :meth:`add_users` (each ``user.id`` becomes its
        entryUUID, the id the caller then records), existing ones through
        :meth:`_update_users`; then every role that gains or loses members is one
        modify. LDAP has no rollback: a user the directory refuses gets ``refused``
        set, and the others are written. A connection that drops before every add is
        answered is :class:`Unreachable`, for the whole batch (see :meth:`_unanswered`)."""
        self.ensure_writable()
        new = [u for u in users if not u.existing]
        outcomes = self.add_users([(u.username, u.claims, u.password_hash) for u in new])
        for user, outcome in zip(new, outcomes, strict=True):
            if isinstance(outcome, IdprovError):
                user.refused = outcome
            else:
                user.id = outcome.id
        changes = self._update_users([u for u in users if u.existing])
        for user in (u for u in new if u.refused is None):
            for role in user.roles or []:
                changes.setdefault(role.casefold(), (role, [], []))[1].append(
                    self._new_user_dn(user.username)
                )
        if changes:
            self._change_members({role: (add, remove) for role, add, remove in changes.values()})

    def _update_users(self, users: Sequence[ImportedUser]) -> RoleChanges:
        """Existing users to exactly their claims (and password): the entries read at
        once, a modify per changed user, all in flight. Returns the member changes that
        give them exactly their roles (when given). A user that is not there, or that
        the directory refuses, gets ``refused``."""
        entries = self._named_entries([u.username for u in users], [*self._user_attrs(), "cn"])
        found = {name: matches[0] for name, matches in entries.items() if len(matches) == 1}
        for user in (u for u in users if u.username.casefold() not in found):
            matches = entries.get(user.username.casefold(), [])
            user.refused = self._ambiguous(user.username, matches) if matches else None
            user.refused = user.refused or self._no_user(user.username)
        kept = [(u, found[u.username.casefold()]) for u in users if u.refused is None]
        held = self._roles_by_member([entry.dn for _, entry in kept])
        modifies = [(u, self._user_modify(u, entry)) for u, entry in kept]
        sent = [(u, m) for u, m in modifies if m is not None and m[2]]
        for (user, _), error in zip(sent, self._modify_all([m for _, m in sent]), strict=True):
            user.refused = error
        return self._role_changes([(u, e) for u, e in kept if u.refused is None], held)

    def _user_modify(self, user: ImportedUser, entry: Entry) -> Modify | None:
        """The modify that gives ``entry`` exactly the user's claims (and password);
        None after setting ``refused`` if a claim cannot be stored."""
        name = self._username(entry)
        try:
            changes = self._claim_changes(entry, self._claims_of(entry, name), user.claims)
            if user.password_hash:
                changes.append(
                    ("replace", "userPassword", [self._user_password(user.password_hash)])
                )
        except IdprovError as exc:
            user.refused = exc
            return None
        return (f"update user {name!r}", entry.dn, changes)

    def _role_changes(
        self, users: Sequence[tuple[ImportedUser, Entry]], held: Mapping[DnKey, list[str]]
    ) -> RoleChanges:
        """What puts each user (whose ``roles`` is not None) in exactly those roles."""
        changes: RoleChanges = {}
        for user, entry in (pair for pair in users if pair[0].roles is not None):
            wanted = {r.casefold(): r for r in user.roles or []}
            has = {r.casefold(): r for r in held.get(dn_key(entry.dn), [])}
            for key in wanted.keys() - has.keys():
                changes.setdefault(key, (wanted[key], [], []))[1].append(entry.dn)
            for key in has.keys() - wanted.keys():
                changes.setdefault(key, (has[key], [], []))[2].append(entry.dn)
        return changes

    def _add_batch(
        self,
        batch: Pipeline,
        rows: Sequence[NewUser],
        dns: Mapping[int, str],
        outcomes: list[User | IdprovError | None],
    ) -> None:
        """Refuse names that exist, take the DNs of the rest out of the groups that
        list them still (stale values), add them, and read the new entries' ids and
        stamps back, a few hundred names a search. (Asking for them with each add, an
        RFC 4527 post-read, cost slapd and idprov more than these searches: 10,000
        adds took 0.15-0.35 s longer, measured with bench/ldap_import.py's data.)"""
        todo = list(dns)
        if self._scope != LEVEL:  # with scope one, the server's DN check is the name check
            existing = self._named_entries([rows[i][0] for i in todo], ["1.1"])
            for index in [i for i in todo if rows[i][0].casefold() in existing]:
                outcomes[index] = ConflictError(
                    f"user {rows[index][0]!r} already exists in the {self.domain} userstore"
                )
            todo = [i for i in todo if outcomes[i] is None]
        if todo:  # a DN with no entry is no one's member: see _drop_unowned
            self._drop_unowned([dns[i] for i in todo])
        replies = self._send_adds(batch, rows, dns, todo, outcomes)
        sent = [(i, reply) for i, reply in zip(todo, replies, strict=True) if reply is not None]
        added = [i for i, reply in sent if not reply.result]
        created = self._named_entries([rows[i][0] for i in added], NEW_STAMPS)
        for index, reply in sent:
            outcomes[index] = self._bulk_outcome(rows[index], reply, created)

    def _named_entries(
        self, usernames: Sequence[str], attrs: Sequence[str]
    ) -> dict[str, list[Entry]]:
        """Entries by casefolded username (:meth:`_user_entries`)."""
        found: dict[str, list[Entry]] = {}
        for entry in self._user_entries(usernames, [self.config.username_attribute, *attrs]):
            found.setdefault(self._username(entry).casefold(), []).append(entry)
        return found

    def _send_adds(
        self,
        batch: Pipeline,
        rows: Sequence[NewUser],
        dns: Mapping[int, str],
        todo: Sequence[int],
        outcomes: list[User | IdprovError | None],
    ) -> list[Reply | None]:
        """Add the users of ``todo``, each entry made as the window opens for it (so
        the directory works on the first adds while the rest are made); a row whose
        entry cannot be made gets that error in ``outcomes`` and is not sent (its reply
        is None). :class:`Unreachable` if the connection drops before every add sent
        is answered."""
        classes = encode_attribute("objectClass", self.config.user_object_classes)

        def encode(position: int, message_id: int) -> bytes | None:
            index = todo[position]
            username, claims, password_hash = rows[index]
            try:
                attrs = self._entry_attributes(username, claims, password_hash)
            except IdprovError as exc:
                outcomes[index] = exc
                return None
            return encode_add(message_id, dns[index], attrs, classes)

        try:
            return batch.run(len(todo), encode)
        except ConnectionLost as exc:
            unanswered = [
                rows[todo[position]][0]
                for position, reply in enumerate(exc.args[1])
                if reply is None and outcomes[todo[position]] is None
            ]
            raise self._unanswered(unanswered, str(exc.args[0])) from exc

    def _unanswered(self, usernames: Sequence[str], reason: str) -> Unreachable:
        """The error of a batch whose connection dropped before the adds of
        ``usernames`` were answered. Each may have been made or not (lost on its way,
        or never sent), so none is refused: a row counted rejected would pass the
        import's journal, and its re-run would skip it as imported. The batch fails
        whole, its records with it; the import's journal holds its lines, so the re-run
        reads each user back and finishes those the directory has and adds the others."""
        names = ", ".join(repr(name) for name in usernames[:3])
        more = f" and {len(usernames) - 3} more" if len(usernames) > 3 else ""
        adds = "add of user" if len(usernames) == 1 else "adds of users"
        made = "it was" if len(usernames) == 1 else "they were"
        return Unreachable(
            f"{self._where()}: the connection dropped before the directory answered the "
            f"{adds} {names}{more}; whether {made} made is unknown ({reason})",
            hint=f"once the server at {self.config.url} answers, run the same command "
            "again: it reads those users back, finishes the ones made and adds the others",
        )

    def _bulk_outcome(
        self, row: NewUser, reply: Reply, created: Mapping[str, list[Entry]]
    ) -> User | IdprovError:
        username, claims, password_hash = row
        if reply.result != 0:
            return self._failure(f"add user {username!r}", reply.result, reply.message)
        found = created.get(username.casefold(), [])
        if len(found) > 1:  # the same name elsewhere in the subtree (added since the check)
            key = dn_key(self._new_user_dn(username))
            found = [e for e in found if dn_key(e.dn) == key]
        return self._new_user(username, claims, password_hash, found[0] if found else Entry("", {}))
