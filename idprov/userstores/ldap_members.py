"""Writing role members and changing many entries at once.

A role's members are values of one attribute of its group, so any number of members
joining or leaving is one modify of that group. :meth:`LdapMembership._change_members`
reads every group concerned with one search, works out each group's modify (members
already there or already gone are skipped; the placeholder of an empty group goes
when a member arrives and comes back when the last one leaves), and sends the modifies
``WINDOW`` in flight (:meth:`LdapMembership._modify_all`), which the bulk update of
an import uses for users too. ``assign``, ``unassign``, imports and upserts all take
this one path.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from idprov.errors import IdprovError
from idprov.userstores.ldap_bulk import Change, ConnectionLost, Pipeline, encode_modify
from idprov.userstores.ldap_escape import (
    CHUNK,
    SUBTREE,
    DnKey,
    Entry,
    all_filter,
    any_filter,
    dn_key,
    eq_filter,
    lx,
)
from idprov.userstores.ldap_read import LdapReader
from idprov.userstores.ldap_session import WINDOW, Unreachable, result_codes

MemberChange = tuple[Sequence[str], Sequence[str]]
"""Member DNs to add to a role, and member DNs to remove from it."""
Modify = tuple[str, str, list[Change]]
"""What is being done (for messages), the DN, and its changes."""


class LdapMembership(LdapReader):
    """Role members written with one modify per group."""

    def _change_members(
        self, changes: Mapping[str, MemberChange], groups: Mapping[str, Entry] | None = None
    ) -> dict[str, tuple[set[DnKey], set[DnKey]]]:
        """Apply ``changes`` (by role name; ``groups`` as :meth:`_groups_named` read
        them, if the caller did). Returns, per role, the keys of the DNs it added and
        removed: members already there (or already gone) are not."""
        groups = groups or self._groups_named(list(changes))
        modifies, done = self._member_modifies(changes, groups)
        sent = self.writes_sent
        try:
            errors = self._modify_all(modifies, resend=False)
        except Unreachable as lost:
            if self.writes_sent == sent:  # never sent: the directory was not reached
                raise
            errors = self._after_lost(lost, changes)
        for error in errors:
            if error is not None:
                raise error
        return done

    def _member_modifies(
        self, changes: Mapping[str, MemberChange], groups: Mapping[str, Entry]
    ) -> tuple[list[Modify], dict[str, tuple[set[DnKey], set[DnKey]]]]:
        """The modify of each group that ``changes`` leaves something to do in, and per
        role the keys of the DNs it adds and removes."""
        modifies: list[Modify] = []
        done: dict[str, tuple[set[DnKey], set[DnKey]]] = {}
        for role, (add, remove) in changes.items():
            group = groups[role.casefold()]
            operations, added, removed = self._member_changes(group, add, remove)
            done[role] = (added, removed)
            if operations:
                modifies.append((f"change the members of role {role!r}", group.dn, operations))
        return modifies, done

    def _after_lost(
        self, lost: Unreachable, changes: Mapping[str, MemberChange]
    ) -> list[IdprovError | None]:
        """Member changes whose answers were lost: the groups are read back on a new
        connection and their member values compared with ``changes``; what is there
        is done, what is not is sent once more (sent again unseen, a member added was
        refused as attributeOrValueExists). ``lost`` if the groups cannot be read."""
        try:
            groups = self._groups_named(list(changes))
        except Unreachable:
            raise self._maybe_made(lost) from lost
        modifies, _ = self._member_modifies(changes, groups)
        return self._modify_all(modifies, resend=False)

    def _member_changes(
        self, group: Entry, add: Sequence[str], remove: Sequence[str]
    ) -> tuple[list[Change], set[DnKey], set[DnKey]]:
        """The modify that adds ``add`` and removes ``remove`` from ``group``, and the
        keys of the DNs it adds and removes."""
        member = self.config.member_attribute
        values = {dn_key(v): v for v in self._member_values(group)}
        added: dict[DnKey, str] = {}
        for dn in add:
            if (key := dn_key(dn)) not in values:
                added.setdefault(key, dn)
        removed = {key: values[key] for key in map(dn_key, remove) if key in values}
        placeholders = [v for v in values.values() if self._is_placeholder(v, group.dn)]
        changes: list[Change] = []
        if added:
            changes.append(("add", member, list(added.values())))
            changes += [("delete", member, placeholders)] if placeholders else []
        if removed:
            if not added and len(removed) == len(values):  # the last member leaves
                changes.append(("add", member, [self._placeholder(group.dn)]))
            changes.append(("delete", member, list(removed.values())))
        return changes, set(added), set(removed)

    def _drop_unowned(self, dns: Sequence[str], keep: Collection[DnKey] = ()) -> None:
        """Take those of ``dns`` at which no entry is out of every group that lists
        them (but the groups of ``keep``): one search per ``CHUNK`` DNs, one modify per
        group. A DN with no entry is no one's member (a value left by a deleted user,
        or by an add or rename cut off before): kept, it would hand its roles to the
        user who takes the DN next."""
        member, base = self.config.member_attribute, self.config.group_search_base
        filters = [
            all_filter(self._group_filter, any_filter([eq_filter(member, dn) for dn in chunk]))
            for chunk in (dns[i : i + CHUNK] for i in range(0, len(dns), CHUNK))
        ]
        found = self._run(
            "read roles", lambda c: self._searches(c, base, filters, [member], SUBTREE)
        )
        groups = {dn_key(g.dn): g for g in found if dn_key(g.dn) not in keep}
        held = {dn_key(v) for g in groups.values() for v in g.texts(member)}
        listed = [dn for dn in dns if dn_key(dn) in held]
        if not listed:
            return
        entries = self._run(
            "look up entries", lambda c: self._entries_at(c, listed, "(objectClass=*)", ["1.1"])
        )
        unowned = [dn for dn, entry in zip(listed, entries, strict=True) if entry is None]
        modifies: list[Modify] = []
        for group in groups.values():
            operations, _, _ = self._member_changes(group, [], unowned)
            if operations:
                modifies.append((f"take stale members out of {group.dn}", group.dn, operations))
        for error in self._modify_all(modifies):
            if error is not None:
                raise error

    def _groups_named(self, roles: Sequence[str]) -> dict[str, Entry]:
        """The group of each role (by casefolded name), with its members: one search
        per ``CHUNK`` names. NotFoundError for the first role that has none."""
        name, member = self.config.group_name_attribute, self.config.member_attribute
        base = self.config.group_search_base
        filters = [
            all_filter(self._group_filter, any_filter([eq_filter(name, r) for r in chunk]))
            for chunk in (roles[i : i + CHUNK] for i in range(0, len(roles), CHUNK))
        ]
        found = self._run(
            "read roles", lambda c: self._searches(c, base, filters, [name, member], SUBTREE)
        )
        groups: dict[str, Entry] = {}
        for group in found:
            groups.setdefault(self._role_name(group).casefold(), group)
        for role in roles:  # matched by the directory's rule, not by name: look it up
            if role.casefold() not in groups:
                groups[role.casefold()] = self._required_group(role, [member])
        return groups

    def _modify_all(
        self, modifies: Sequence[Modify], resend: bool = True
    ) -> list[IdprovError | None]:
        """Send the modifies, ``WINDOW`` in flight on the store's connection; the error
        of each, or None where it was made. Without ``resend``, a connection that drops
        before any answer is :class:`Unreachable` (see :meth:`_run`), for the caller
        to look before it sends them again."""
        if not modifies:
            return []

        def send(conn: Any) -> list[IdprovError | None]:
            pipeline = Pipeline(self._sending(conn).socket, WINDOW, self.config.timeout)
            try:
                replies = pipeline.run(
                    len(modifies), lambda i, mid: encode_modify(mid, *modifies[i][1:])
                )
            except ConnectionLost as exc:
                raise self._lost(exc, len(modifies)) from exc
            return [self._failure(m[0], r.result, r.message) if r and r.result else None
                    for m, r in zip(modifies, replies, strict=True)]  # fmt: skip

        return self._run("write to the directory", send, resend)

    def _lost(self, exc: ConnectionLost, sent: int) -> Exception:
        """A connection that dropped before any answer (a stale one: :meth:`_run` opens
        a new one and sends again), or after some: then resending could apply a
        member change twice, so it is an error; running the command again is safe."""
        answered = sum(reply is not None for reply in exc.args[1])
        if not answered:
            return lx.LDAPSocketReceiveError(str(exc.args[0]))
        return Unreachable(
            f"{self._where()}: the connection dropped after {answered} of {sent} changes were "
            f"made ({exc.args[0]})",
            hint="run the command again: it carries on from what the directory holds",
        )

    def _failure(self, doing: str, code: int, message: str) -> IdprovError:
        """The idprov error for result ``code`` of an operation sent by ldap_bulk."""
        described = result_codes().get(code, str(code))
        exc = lx.LDAPOperationResult(result=code, description=described, message=message)
        return self._translate(exc, doing)
