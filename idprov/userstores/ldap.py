"""The LDAP userstore: one domain's users and roles in a directory server.

A user is an entry ``<username_attribute>=<name>,<user_search_base>`` of the
``user_object_classes``; a role is a ``group_object_class`` entry
``<group_name_attribute>=<name>,<group_search_base>`` whose ``member_attribute``
values are user DNs. Ids are the server's ``entryUUID``, which survives renames.
The directory matches names (``uid`` and ``cn`` compare case-insensitively); they
are shown as stored. This module is imported only when an LDAP store is opened;
ldap3 (which opens the connection of a store that writes, and sends its single
writes) only at a store's first write, since it costs 65 ms to import.

The store is built in layers, one module each: ``ldap_escape`` (DNs, filters, values),
``ldap_session`` and ``ldap_wire`` (the connection, paged and pipelined searches,
errors), ``ldap_read``
(users and roles read), ``ldap_members`` (member changes, one modify per group),
``ldap_import`` (new entries and the bulk path) and this module (the other writes).
Searches, adds and modifies travel as BER that ``ldap_bulk`` encodes and decodes,
many in flight on the store's connection (ldap3 decodes ten times slower).

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
  offset + limit entries in memory while it counts the total. Users' roles come
  from a search per user for a few users, from one walk of the groups for more.
* Connections. One per store, opened and bound on first use. If it drops (server
  restart, idle timeout), it is reopened once and the operation sent again; a
  second failure is a :class:`StoreError` naming the URL. Modifies in flight are not
  sent again once some were answered (a member change applied twice fails): that
  is a :class:`StoreError` saying how far it got, and running it again is safe. An
  add or a modify-DN is never sent twice (the second would be refused as if the
  first were someone else's): a drop while it is out is :class:`Unreachable`. A
  delete, a role's modify-DN and a change of members whose answer was lost are not
  sent again unseen either: the entry (a group's member values) is read back on a
  new connection; a change that is there is done, one that is not is sent once more.
* Stale members. Without a referential-integrity overlay a group may list the DN of
  a deleted user. A DN with no entry is no one's member: before a user is added (or
  renamed) to it, every group that is not one of its roles stops listing it.
* Writes of several steps (a rename, an add with roles) cannot be rolled back, so
  their steps are ordered for a cut-off at any point to leave the user holding its
  roles: groups list a new DN before the entry takes it, and drop an old one after.
  The error says what was written; the same command run again finishes the job.

The journal of directory writes. The unit of work keeps it, in idprov's state
(``directory_writes``, :class:`~idprov.provisioning.state.DirectoryWrites`); this
store answers its questions (:meth:`LdapUserStore.unfinished_rename`,
:meth:`LdapUserStore.made_by_idprov`, :meth:`LdapUserStore.finish_rename`,
:meth:`LdapUserStore.finish_role_rename`). A user's update or delete, a role's
rename or delete and a change of a role's members are recorded the same way, for a
re-run to find the change made (the entry of the recorded entryUUID gone or renamed,
the members or claims as asked) and write its records, or make it.

* What is recorded. A user add or rename is recorded, and committed, before its
  first write to the directory: the username, a rename's new name and the
  ``entryUUID`` of the user it moves, an add's roles, when it started, its *owner*
  and an add's *digest* and *origin*. The owner is the unit of work that makes it,
  ``host:pid:nonce``. The origin is who asked beside the actor: a JIT login's
  ``jit:<idp>:<subject>``, else empty. The digest is a SHA-256 of what the add asked
  for: claims, roles, whether a password (never the password itself), origin. One
  record per user and kind. It goes in the transaction that audits and enqueues the
  finished change; a refusal, which leaves nothing (see above), removes it, and so
  does a store error before this run sent any write to a record it made itself.
  Anything else (the directory gone with a write out, a later step failed) keeps it.
* Whose it is. A record is its owner's while the owner runs: a re-run takes it over
  (becoming its owner, its start kept) only when the owner is gone, that is: a record
  of an earlier version, which names none; a unit of work of this process that has
  ended; a process of this machine that no longer runs (a zombie counts as gone);
  or, for any other (a process of another machine, or one here that still runs, as
  ``idprov serve`` after a request was cut off), 15 minutes after it took the write
  on (``owned_at``). Until then the command fails with a :class:`LockedError`
  (exit 8) naming the owner.
* What a re-run finishes. Only what is recorded: a directory's leftovers alone (a
  member value with no entry, an entry under the new name) prove nothing about who
  made them. A rename is finished (names made from the old username, then the
  groups' member values) when no user has the old name any more, the re-run asks for
  the recorded new name, and the user of that name has the recorded ``entryUUID``;
  a user still under the old name is renamed from the start. An add asking for the
  same (the same digest) adopts the user its lost answer made only with proof: the
  entry's ``creatorsName`` is the store's ``bind_dn``; its ``createTimestamp``, to
  the second on the directory's clock, is not before the record's start on idprov's
  (a directory clock that is behind refuses the proof, never grants it); and it holds
  exactly the roles, every claim and the password (or no password) asked for.
  Where people or other tools bind as idprov's DN, ``creatorsName`` proves less:
  hence the comparison of what the entry holds. Without that proof the add carries
  on under its record when there is no entry yet, and is refused, saying nothing
  proves the earlier add made the user, when there is one. An add asking for
  something else replaces the record with its own, and adopts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from idprov.errors import ConflictError, IdprovError, PolicyError, StoreError
from idprov.model import ClaimValue, Role, User
from idprov.userstores.ldap_bulk import Change
from idprov.userstores.ldap_escape import (
    DnKey,
    Entry,
    dn_key,
    escape_rdn_value,
    iso_stamp,
    lx,
    parent_dn,
    rdn_value,
    with_rdn_value,
)
from idprov.userstores.ldap_import import LdapImporter
from idprov.userstores.ldap_members import MemberChange, Modify
from idprov.userstores.ldap_session import Unreachable

MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE = "MODIFY_ADD", "MODIFY_DELETE", "MODIFY_REPLACE"
"""The operations of an ldap3 modify (ldap3's own names)."""

__all__ = ["LdapUserStore", "dn_key", "escape_rdn_value", "rdn_value"]


class LdapUserStore(LdapImporter):
    """Users and roles of one domain in an LDAP directory (see the module docstring)."""

    def _refuse_existing(self, username: str, dn: str) -> None:
        """ConflictError if the name is a user's, or ``dn`` an entry's (of any class)."""
        existing = self._user_entry(username, [self.config.username_attribute])
        if existing is not None:
            raise ConflictError(
                f"user {self._username(existing)!r} already exists in the {self.domain} "
                f"userstore ({existing.dn})",
                hint="choose another name, or change it with `idprov user update`",
            )
        if self._entry_at(dn):
            raise ConflictError(
                f"the {self.domain} userstore has an entry at {dn} that is not one of its "
                "users (another object class)",
                hint="choose another name, or remove or rename that entry in the directory",
            )

    def _entry_at(self, dn: str) -> bool:
        """Whether the directory holds an entry (of any class) at ``dn``."""
        (entry,) = self._run(
            "look up an entry", lambda c: self._entries_at(c, [dn], "(objectClass=*)", ["1.1"])
        )
        return entry is not None

    def add_user(
        self, username: str, claims: Mapping[str, ClaimValue], password_hash: str | None
    ) -> User:
        return self.add_user_with_roles(username, claims, password_hash, [])

    def add_user_with_roles(
        self,
        username: str,
        claims: Mapping[str, ClaimValue],
        password_hash: str | None,
        roles: Sequence[str],
    ) -> User:
        """The new DN is taken out of the groups of other roles (a DN with no entry is
        no one's member: a value left by a deleted user, or by an add cut off before,
        would hand its roles to the new user), the roles' groups list it, then the
        entry is added: cut off at any point, the user either does not exist or holds
        exactly its roles, and the same add run again finishes it. A refusal of the add
        (entryAlreadyExists too: another writer made the DN meanwhile) takes the DN out
        of the groups this call listed it in; an add whose answer was lost is never
        sent again (a second one would be refused as if the first were someone
        else's): it is :class:`Unreachable`."""
        self.ensure_writable()
        attrs = self._entry_attributes(username, claims, password_hash)
        dn, classes = self._new_user_dn(username), self.config.user_object_classes
        self._refuse_existing(username, dn)
        listed = self._list_new(username, dn, roles)
        try:
            added = self._run_ldap3(
                f"add user {username!r}", lambda c: self._add(c, dn, classes, attrs), resend=False
            )
        except Unreachable as exc:
            after = f", after its roles ({', '.join(roles)}) listed its DN" if roles else ""
            raise Unreachable(
                f"{self._where()}: the directory stopped answering while user {username!r} "
                f"was added{after}; the add may have been made ({exc.message})",
                hint=f"once the server at {self.config.url} answers, run the same command "
                "again: it adds the user, or takes the one this add made",
            ) from exc
        except IdprovError as exc:
            self._undo(
                exc,
                lambda: self._change_members({r: ([], [dn]) for r in listed}),
                dn,
                listed,
                username,
            )
            raise
        return self._new_user(username, claims, password_hash, added)

    def _undo(
        self,
        exc: IdprovError,
        undo: Callable[[], object],
        dn: str,
        roles: Sequence[str],
        name: str,
    ) -> None:
        """After the refusal ``exc`` of a write for which this call listed ``dn`` in the
        groups of ``roles``, ``undo`` takes it out of them again: also when an entry
        took the DN meanwhile (entryAlreadyExists), since those memberships are this
        call's, not the other writer's. If that fails, a :class:`StoreError` says
        which groups may still list the DN."""
        if not roles:
            return
        try:
            undo()
        except IdprovError as failed:
            listed = ", ".join(roles)
            raise StoreError(
                f"{self._where()}: {exc.message}; the groups of roles ({listed}) were made "
                f"to list {dn} first, and may still list it: {failed.message}",
                hint=f"take {dn} out of those groups (`idprov role unassign "
                f"{self.domain}/ROLE {self.domain}/{name}` while an entry holds the DN)",
            ) from exc

    def _list_new(self, username: str, dn: str, roles: Sequence[str]) -> list[str]:
        """Have exactly ``roles`` list the DN of a user not added yet (one modify per
        group); the roles this listed it in (not those that did already)."""
        wanted = {role.casefold() for role in roles}
        stale = [r for r in self._roles_of(dn) if r.casefold() not in wanted]
        changes: dict[str, MemberChange] = {r: ([], [dn]) for r in stale}
        changes |= {role: ([dn], []) for role in roles}
        try:
            done = self._change_members(changes) if changes else {}
        except Unreachable as exc:
            listed = (
                f", but its roles ({', '.join(roles)}) may list its DN already" if roles else ""
            )
            raise Unreachable(
                f"{self._where()}: user {username!r} was not added{listed}: {exc.message}",
                hint=f"once the server at {self.config.url} answers, run the same command "
                "again: it adds the user",
            ) from exc
        return [role for role in roles if done[role][0]]

    def update_user(
        self, username: str, set_claims: Mapping[str, ClaimValue], unset: Sequence[str]
    ) -> User:
        self.ensure_writable()
        entry = self._required_user(username, [*self._user_attrs(), "cn"])
        name = self._username(entry)
        before = self._claims_of(entry, name)
        after = {**before, **set_claims}
        for claim in unset:
            after.pop(claim, None)
        changes = self._claim_changes(entry, before, after)
        if changes:
            (error,) = self._modify_all([(f"update user {name!r}", entry.dn, changes)])
            if error is not None:
                raise error
        user = self.find_user(name)
        assert user is not None
        return user

    def rename_user(self, username: str, new_name: str) -> User:
        """A modify-DN when the username names the entry (else a modify of the
        attribute; of a multi-valued RDN only the username's part changes); an
        ``sn``/``cn`` made from the old name follows, and so does every group's
        ``member`` value (no referential-integrity overlay is assumed).

        A directory cannot roll back, so the steps are ordered for the user to hold
        exactly its roles whatever step a cut-off stops at. Each of its groups first
        lists the new DN beside the old one (and any other group drops the new DN: with
        no entry there, it is no one's member); then the entry is renamed, never sent
        twice (a refusal takes the new DN out of the groups this call listed it in);
        then the names made from the old username are replaced and the groups drop the
        old DN. Once the entry has moved the old name is gone: the caller, who recorded
        the rename and the user's id before it started, finishes it with
        :meth:`finish_rename` (see :meth:`unfinished_rename`); the error of the
        cut-off one says to run it again."""
        self.ensure_writable()
        entry = self._required_user(username, [*self._user_attrs(), "cn", "sn"])
        new_dn = self._renamed_dn(entry.dn, new_name)
        moves = dn_key(new_dn) != dn_key(entry.dn)
        clash = self._user_entry(new_name, [self.config.username_attribute])
        if clash is not None and dn_key(clash.dn) != dn_key(entry.dn):
            raise ConflictError(
                f"user {self._username(clash)!r} already exists in the {self.domain} "
                f"userstore ({clash.dn})",
                hint="choose another name",
            )
        if moves and self._entry_at(new_dn):
            raise ConflictError(
                f"the {self.domain} userstore has an entry at {new_dn} that is not one of "
                "its users (another object class)",
                hint="choose another name, or remove or rename that entry in the directory",
            )
        old = self._username(entry)
        groups = self._groups_holding(entry.dn)
        listed = self._list_beside(groups, new_dn, old, new_name) if moves else []
        self._rename_entry(entry, new_dn, listed, old, new_name)
        return self._after_rename(Entry(new_dn, entry.attributes), old, new_name, entry.dn)

    def unfinished_rename(self, username: str, new_name: str, user_id: str) -> User | None:
        """The user ``new_name`` (named ``username``, as before) when it is the entry
        of entryUUID ``user_id`` and no user is named ``username``: the rename the
        caller recorded moved it (see :meth:`rename_user`)."""
        if self._user_entry(username, [self.config.username_attribute]) is not None:
            return None
        entry = self._user_entry(new_name, [*self._user_attrs(), "cn", "sn"])
        if entry is None or self._entry_id(entry) != user_id:
            return None
        user = self._to_user(entry, self._roles_of(entry.dn))
        return replace(user, username=username)

    def made_by_idprov(self, username: str, since: str) -> User | None:
        """The user when its entry's ``creatorsName`` is the bind DN and its
        ``createTimestamp`` (to the second, the directory's clock) is not before
        ``since`` (to the second, idprov's clock): a directory whose clock is behind
        idprov's shows an add idprov made as made before, and it is not taken. Where
        administrators write with idprov's own bind DN, this proves less: the caller
        compares what the entry holds, too."""
        bind = self.config.bind_dn
        entry = self._user_entry(username, [*self._user_attrs(), "creatorsName"])
        if entry is None or not bind:
            return None
        creator = entry.text("creatorsName") or ""
        made = iso_stamp(entry.text("createTimestamp"))
        if not creator or dn_key(creator) != dn_key(bind) or made[:19] < since[:19]:
            return None
        return self._to_user(entry, self._roles_of(entry.dn))

    def finish_rename(self, username: str, new_name: str, user_id: str) -> User:
        """The steps of a rename of ``username`` left after its entry moved (see
        :meth:`unfinished_rename`), done."""
        self.ensure_writable()
        entry = self._user_entry(new_name, [*self._user_attrs(), "cn", "sn"])
        if entry is None or self._entry_id(entry) != user_id:
            raise self._no_user(username)
        return self._after_rename(entry, username, new_name, self._renamed_dn(entry.dn, username))

    def _renamed_dn(self, dn: str, name: str) -> str:
        """``dn`` with ``name`` for the username (the same DN if it does not name it)."""
        return with_rdn_value(dn, self.config.username_attribute, name) or dn

    def _list_beside(self, groups: Sequence[Entry], new_dn: str, old: str, new: str) -> list[Entry]:
        """Have each of ``groups`` list ``new_dn`` too (those that do already, from a
        rename cut off before, are left as they are), and every other group drop it.
        Returns the groups this listed it in."""
        holding = self._groups_holding(new_dn)
        listed = {dn_key(g.dn) for g in holding}
        kept = {dn_key(g.dn) for g in groups}
        member = self.config.member_attribute
        unlisted = [g for g in groups if dn_key(g.dn) not in listed]
        modifies: list[Modify] = [
            (f"add {new_dn} to {g.dn}", g.dn, [("add", member, [new_dn])]) for g in unlisted
        ]
        try:
            if any(dn_key(g.dn) not in kept for g in holding):  # stale values
                self._drop_unowned([new_dn], kept)
            errors = self._modify_all(modifies)
        except Unreachable as exc:
            raise self._not_renamed(exc, old, new) from exc
        made = [g for g, e in zip(unlisted, errors, strict=True) if e is None]
        refused = [error for error in errors if error is not None]
        if refused:
            self._unlist(made, new_dn)
            raise refused[0]
        return made

    def _not_renamed(self, exc: StoreError, old: str, new: str) -> StoreError:
        return Unreachable(
            f"{self._where()}: user {old!r} was not renamed to {new!r}, but some of its "
            f"groups may list the new name's DN beside the old one already: {exc.message}",
            hint=self._rerun_hint(old, new, exc),
        )

    def _rerun_hint(self, old: str, new: str, exc: IdprovError) -> str:
        """How to finish a rename that ``exc`` stopped: run it again (once the server
        answers, if it did not)."""
        again = (
            f"run the same command again to finish the rename: `idprov user rename "
            f"{self.domain}/{old} {new}`"
        )
        if isinstance(exc, Unreachable):
            return f"once the server at {self.config.url} answers, {again}"
        return f"{exc.hint}; then {again}" if exc.hint else again

    def _rename_entry(
        self, entry: Entry, new_dn: str, listed: Sequence[Entry], old: str, new: str
    ) -> None:
        """Move ``entry`` to ``new_dn``: a modify-DN (never sent twice) that keeps the
        other parts of a multi-valued RDN, or a modify when the username is not in the
        DN. A refusal takes the DN out of the groups :meth:`_list_beside` ``listed`` it
        in again (also when an entry took the DN meanwhile: they are not its own)."""
        attribute = self.config.username_attribute
        if new_dn == entry.dn:  # the username does not name the entry
            change = {attribute: [(MODIFY_REPLACE, [new])]}
            self._run_ldap3(f"rename user {new!r}", lambda c: c.modify(entry.dn, change))
            return
        rdn = new_dn[: len(new_dn) - len(parent_dn(new_dn)) - 1]
        try:
            self._run_ldap3(
                f"rename user {old!r}", lambda c: c.modify_dn(entry.dn, rdn), resend=False
            )
        except Unreachable as exc:
            raise Unreachable(
                f"{self._where()}: the directory stopped answering while user {old!r} was "
                f"renamed to {new!r}, which may have been made ({exc.message})",
                hint=self._rerun_hint(old, new, exc),
            ) from exc
        except IdprovError as exc:
            roles = [self._role_name(g) for g in listed]
            self._undo(exc, lambda: self._unlist(listed, new_dn), new_dn, roles, new)
            raise

    def _unlist(self, groups: Sequence[Entry], dn: str) -> list[IdprovError | None]:
        """Take ``dn`` out of ``groups`` (a value already gone is an error of its
        group, returned, not raised)."""
        member = self.config.member_attribute
        return self._modify_all(
            [(f"remove {dn} from {g.dn}", g.dn, [("delete", member, [dn])]) for g in groups]
        )

    def _after_rename(self, entry: Entry, old: str, new: str, old_dn: str) -> User:
        """The steps after the entry moved to ``entry.dn``: the names made from ``old``,
        then every group's ``old_dn`` (replaced in one modify when only its case
        changed, since the server matches either spelling)."""
        try:
            derived = self._derived_names(entry, old, new)
            if derived:
                self._run_ldap3(f"rename user {old!r}", lambda c: c.modify(entry.dn, derived))
            self._move_members(old_dn, entry.dn)
        except IdprovError as exc:
            raise StoreError(
                f"{self._where()}: user {old!r} was renamed to {new!r} ({entry.dn}), but its "
                f"groups may still list its old DN: {exc.message}",
                hint=self._rerun_hint(old, new, exc),
            ) from exc
        try:
            user = self.find_user(new)
        except IdprovError as exc:
            raise StoreError(
                f"{self._where()}: user {old!r} was renamed to {new!r} ({entry.dn}), then "
                f"could not be read back: {exc.message}",
                hint=f"see it with `idprov user show {self.domain}/{new}`; `idprov sync` "
                "pushes the new name",
            ) from exc
        if user is None:
            raise StoreError(f"{self._where()}: user {new!r} vanished while renamed")
        return user

    def _move_members(self, old_dn: str, new_dn: str) -> None:
        """Have every group that lists ``old_dn`` list ``new_dn`` instead: a group that
        lists both drops the old; any other swaps them in one modify (an interrupted
        rename of an earlier idprov left only the old DN, and a change of case only
        leaves the server matching either spelling)."""
        member = self.config.member_attribute
        groups = self._groups_holding(old_dn)
        same = dn_key(old_dn) == dn_key(new_dn)
        listed = set() if same or not groups else self._group_keys(new_dn)

        def change(group: Entry) -> list[Change]:
            keep = dn_key(group.dn) in listed
            return [("delete", member, [old_dn]), *([] if keep else [("add", member, [new_dn])])]

        moves: list[Modify] = [
            (f"rename member {new_dn} in {g.dn}", g.dn, change(g)) for g in groups
        ]
        for error in self._modify_all(moves):
            if error is not None:
                raise error

    def _group_keys(self, dn: str) -> set[DnKey]:
        """The DN keys of the groups that list ``dn``."""
        return {dn_key(g.dn) for g in self._groups_holding(dn)}

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
        self._run_ldap3(f"set the password of {username!r}", lambda c: c.modify(entry.dn, change))

    def delete_user(self, username: str) -> User:
        """Remove the user from its groups, then delete its entry."""
        self.ensure_writable()
        entry = self._required_user(username)
        user = self._to_user(entry, self._roles_of(entry.dn))
        for group in self._groups_holding(entry.dn):
            self._remove_member(group.dn, entry.dn)
        self._write_once(
            f"delete user {user.username!r}",
            lambda c: c.delete(entry.dn),
            lambda: not self._entry_at(entry.dn),
        )
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

        self._run_ldap3(f"remove a member from {group_dn}", remove)

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
        added = self._run_ldap3(f"add role {name!r}", lambda c: self._add(c, dn, classes, attrs))
        stamp = iso_stamp(added.text("createTimestamp"))
        return Role(self._entry_id(added), self.domain, name, 0, [], stamp, stamp)

    def delete_role(self, name: str) -> Role:
        self.ensure_writable()
        group = self._required_group(name)
        role = self._to_role(group, True)
        self._write_once(
            f"delete role {role.name!r}",
            lambda c: c.delete(group.dn),
            lambda: not self._entry_at(group.dn),
        )
        return role

    def rename_role(self, name: str, new_name: str) -> Role:
        """A modify-DN: the entry, its entryUUID and its members stay."""
        self.ensure_writable()
        group = self._required_group(name)
        clash = self._group_entry(new_name, [self.config.group_name_attribute])
        if clash is not None and dn_key(clash.dn) != dn_key(group.dn):
            raise ConflictError(f"role {self._role_name(clash)!r} already exists ({clash.dn})")
        rdn = f"{self.config.group_name_attribute}={escape_rdn_value(new_name)}"
        new_dn = f"{rdn},{parent_dn(group.dn)}"

        def made() -> bool:
            now = self._group_by_id(self._entry_id(group))
            return now is not None and dn_key(now.dn) == dn_key(new_dn)

        self._write_once(f"rename role {name!r}", lambda c: c.modify_dn(group.dn, rdn), made)
        moved = self._group_by_id(self._entry_id(group))
        if moved is None:
            raise StoreError(f"{self._where()}: role {new_name!r} vanished while renamed")
        if not self._real_members(group) and self.config.empty_member is None:
            self._move_placeholder(moved)
            moved = self._group_by_id(self._entry_id(group)) or moved
        return self._to_role(moved, True)

    def finish_role_rename(self, name: str, new_name: str, role_id: str) -> Role:
        """After a rename of role ``name`` whose answer was lost: an empty group that
        still names its old DN as its member names its own DN instead."""
        self.ensure_writable()
        moved = self._group_by_id(role_id)
        if moved is None:
            raise StoreError(f"{self._where()}: role {new_name!r} vanished while renamed")
        attribute = self.config.group_name_attribute
        old_dn = f"{attribute}={escape_rdn_value(name)},{parent_dn(moved.dn)}"
        values = self._member_values(moved)
        if self.config.empty_member is None and [dn_key(v) for v in values] == [dn_key(old_dn)]:
            self._move_placeholder(moved)
            moved = self._group_by_id(role_id) or moved
        return self._to_role(moved, True)

    def _move_placeholder(self, new: Entry) -> None:
        """An empty group named itself as its member: name the new DN instead."""
        member = self.config.member_attribute
        change = {member: [(MODIFY_REPLACE, [new.dn])]}
        self._run_ldap3(f"rename role {self._role_name(new)!r}", lambda c: c.modify(new.dn, change))

    def _user_dns(self, usernames: Sequence[str]) -> dict[str, str]:
        """DN of every username (by casefolded name); NotFoundError for the first missing."""
        entries = self._user_entries(
            list(dict.fromkeys(usernames)), [self.config.username_attribute]
        )
        dns = {self._username(e).casefold(): e.dn for e in entries}
        for username in usernames:
            if username.casefold() not in dns:
                raise self._no_user(username)
        return dns

    def assign(self, role: str, usernames: Sequence[str]) -> list[str]:
        """One modify adding every new member (and dropping the placeholder)."""
        self.ensure_writable()
        groups = self._groups_named([role])
        dns = self._user_dns(usernames)
        added, _ = self._change_members(
            {role: ([dns[u.casefold()] for u in usernames], [])}, groups
        )[role]
        return self._named(usernames, dns, added)

    def unassign(self, role: str, usernames: Sequence[str]) -> list[str]:
        """One modify removing the members (the last one gives way to the placeholder)."""
        self.ensure_writable()
        groups = self._groups_named([role])
        dns = self._user_dns(usernames)
        _, removed = self._change_members(
            {role: ([], [dns[u.casefold()] for u in usernames])}, groups
        )[role]
        return self._named(usernames, dns, removed)

    def _named(
        self, usernames: Sequence[str], dns: Mapping[str, str], keys: set[DnKey]
    ) -> list[str]:
        """The first of ``usernames`` for each DN key in ``keys``, in order."""
        named: dict[DnKey, str] = {}
        for username in usernames:
            if (key := dn_key(dns[username.casefold()])) in keys:
                named.setdefault(key, username)
        return list(named.values())
