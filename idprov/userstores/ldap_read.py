"""Reading users and roles from the directory: lookups by name and id, the listing,
roles and their members, and entries made into :class:`User` and :class:`Role`.
"""

from __future__ import annotations

import gc
import heapq
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from idprov.errors import NotFoundError, PolicyError, StoreError
from idprov.model import AmbiguousName, ClaimValue, Page, Role, User, UserQuery
from idprov.userstores.ldap_escape import (
    CHUNK,
    LEVEL,
    STAMPS,
    SUBTREE,
    DnKey,
    Entry,
    all_filter,
    any_filter,
    dn_key,
    eq_filter,
    is_spaced,
    is_uuid,
    iso_stamp,
    rdn_value,
)
from idprov.userstores.ldap_filters import escape_filter_chars, ldap_condition
from idprov.userstores.ldap_session import LdapSession, ServerLimit

Picked = tuple[str, str, str, Entry]
"""An entry of a listing: (casefolded name, name, DN, entry), in that order."""


def _first(attributes: dict[str, list[bytes]], name: str) -> str | None:
    """The first value of the attribute ``name`` (lower-cased), as text."""
    values = attributes.get(name)
    return values[0].decode("utf-8", "replace") if values else None


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a listing reads and converts entries:
    they are acyclic (dicts and lists of bytes and str, freed by reference counting),
    and as they pile up each collection scans them all again (a sixth of the CPU of a
    10,000-user listing). Free them before leaving: the collector's first pass after
    scans whatever the pause left. Re-enabled on the way out, whatever happens."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class LdapReader(LdapSession):
    """The reads of :class:`~idprov.userstores.ldap.LdapUserStore`."""

    _walked: list[tuple[str, str]] | None = None
    """(DN, id) of every user of the last :meth:`iter_users`, until the next
    :meth:`roles_with_member_ids` or write takes it away."""

    def ensure_writable(self) -> None:
        """Refuse a write to a read-only store; before any write, forget the last
        walk's ids (the directory is about to change)."""
        self._walked = None
        super().ensure_writable()

    # ---- users: reading
    def _user_attrs(self) -> list[str]:
        names = [self.config.username_attribute, *self.claim_attributes.values()]
        return [*dict.fromkeys(names), "userPassword", *STAMPS]

    def _username(self, entry: Entry) -> str:
        """The username attribute's value; of several, the one that names the entry."""
        attribute = self.config.username_attribute
        values = entry.attributes.get(attribute.lower())
        if values is not None and len(values) == 1:
            return values[0].decode("utf-8", "replace")
        return rdn_value(entry.dn, attribute) or (entry.text(attribute) or "")

    def _user_entries(self, usernames: Sequence[str], attrs: Sequence[str]) -> list[Entry]:
        """Entries of these usernames: one search per ``CHUNK`` names, all in flight."""
        name, base = self.config.username_attribute, self.config.user_search_base
        filters = [
            all_filter(self._user_filter, any_filter([eq_filter(name, n) for n in chunk]))
            for chunk in (usernames[i : i + CHUNK] for i in range(0, len(usernames), CHUNK))
        ]
        return self._run(
            "look up users", lambda c: self._searches(c, base, filters, attrs, self._scope)
        )

    def _user_entry(self, username: str, attrs: Sequence[str] | None = None) -> Entry | None:
        matches = [
            e
            for e in self._user_entries([username], attrs or self._user_attrs())
            if self._username(e).casefold() == username.casefold()
        ]
        if len(matches) > 1:
            raise self._ambiguous(username, matches)
        return matches[0] if matches else None

    def _ambiguous(self, username: str, matches: Sequence[Entry]) -> StoreError:
        return StoreError(
            f"{self._where()}: {len(matches)} entries have "
            f"{self.config.username_attribute}={username!r}: " + "; ".join(e.dn for e in matches),
            hint=self._ambiguous_name(matches).hint,
        )

    def _no_user(self, username: str) -> NotFoundError:
        return NotFoundError(
            f"no user {username!r} in the {self.domain} userstore",
            hint="list users with `idprov user list`",
        )

    def _required_user(self, username: str, attrs: Sequence[str] | None = None) -> Entry:
        entry = self._user_entry(username, attrs)
        if entry is None:
            raise self._no_user(username)
        return entry

    def _claims_of(self, entry: Entry, username: str) -> dict[str, ClaimValue]:
        claims: dict[str, ClaimValue] = {}
        attributes, family = entry.attributes, "sn" if self._person else None
        for claim, attribute, multi_valued in self._claim_columns:
            raw = attributes.get(attribute)
            if not raw:
                continue
            first = raw[0].decode("utf-8", "replace")
            if attribute == family and len(raw) == 1 and first == username:
                continue  # the sn that person requires, made from the username
            claims[claim] = [v.decode("utf-8", "replace") for v in raw] if multi_valued else first
        return claims

    def _to_user(self, entry: Entry, roles: list[str]) -> User:
        attributes, username = entry.attributes, self._username(entry)
        return User(
            self._entry_id(entry),
            self.domain,
            username,
            self._claims_of(entry, username),
            roles,
            bool(attributes.get("userpassword")),
            iso_stamp(_first(attributes, "createtimestamp")),
            iso_stamp(_first(attributes, "modifytimestamp")),
        )

    def _roles_of(self, user_dn: str) -> list[str]:
        flt = all_filter(self._group_filter, eq_filter(self.config.member_attribute, user_dn))
        attrs = [self.config.group_name_attribute]
        groups = self._run(
            "read roles",
            lambda c: list(self._paged(c, self.config.group_search_base, flt, attrs)),
        )
        return sorted((self._role_name(g) for g in groups), key=str.casefold)

    def _roles_by_member(self, user_dns: Sequence[str]) -> dict[DnKey, list[str]]:
        """:meth:`_roles_by_dn`, by DN key."""
        return {dn_key(dn): names for dn, names in self._roles_by_dn(user_dns).items()}

    def _roles_by_dn(self, user_dns: Sequence[str]) -> dict[str, list[str]]:
        """The role names (sorted) of each of these users, by DN as given: a search per
        user for a few, one walk of every group (names and members) for more. A member
        value is found by its spelling, by DN key only if no user DN is spelled so (the
        keys of 10,000 DNs cost more than the walk); groups are walked in name order,
        so each user's names come sorted."""
        if len(user_dns) <= CHUNK:
            return {dn: self._roles_of(dn) for dn in user_dns}
        found: dict[str, list[str]] = {dn: [] for dn in user_dns}
        keyed: dict[DnKey, str] | None = None
        for name, group in self._groups_by_name():
            for member in self._member_values(group):
                names = found.get(member)
                if names is None:
                    if self._is_placeholder(member, group.dn):
                        continue
                    keyed = {dn_key(dn): dn for dn in user_dns} if keyed is None else keyed
                    dn = keyed.get(dn_key(member))
                    if dn is None:
                        continue
                    names = found[dn]
                names.append(name)
        return found

    def _groups_by_name(self) -> list[tuple[str, Entry]]:
        """Every group with its members, and its role name, in name order."""
        named = [(self._role_name(group), group) for group in self._groups_with_members()]
        return sorted(named, key=lambda pair: pair[0].casefold())

    def _groups_with_members(self) -> list[Entry]:
        """Every group, with its name and member values."""
        config = self.config
        base, attrs = (
            config.group_search_base,
            [config.group_name_attribute, config.member_attribute],
        )
        return self._run(
            "read roles", lambda c: list(self._paged(c, base, self._group_filter, attrs))
        )

    def _groups_holding(self, dn: str) -> list[Entry]:
        """The groups (DNs only) that hold ``dn`` as a member."""
        flt = all_filter(self._group_filter, eq_filter(self.config.member_attribute, dn))
        base = self.config.group_search_base
        return self._run("read roles", lambda c: list(self._paged(c, base, flt, ["1.1"])))

    def find_user(self, username: str) -> User | None:
        entry = self._user_entry(username)
        return None if entry is None else self._to_user(entry, self._roles_of(entry.dn))

    def find_user_by_id(self, user_id: str) -> User | None:
        return self.find_users_by_id([user_id]).get(user_id)

    def find_users_by_id(self, user_ids: Sequence[str]) -> dict[str, User]:
        """The users among ``user_ids`` that exist: one search per ``CHUNK`` ids, all in
        flight (and :meth:`_roles_by_dn` for their roles)."""
        wanted = {i.lower(): i for i in user_ids if is_uuid(i)}
        ids = list(wanted)
        filters = [
            all_filter(self._user_filter, any_filter([eq_filter("entryUUID", i) for i in chunk]))
            for chunk in (ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK))
        ]
        base, attrs = self.config.user_search_base, self._user_attrs()
        found = self._run(
            "find users by id", lambda c: self._searches(c, base, filters, attrs, self._scope)
        )
        entries = {
            wanted[key]: entry
            for entry in found
            if (key := self._entry_id(entry).lower()) in wanted
        }
        roles = self._roles_by_dn([e.dn for e in entries.values()])
        return {i: self._to_user(e, roles.get(e.dn, [])) for i, e in entries.items()}

    def find_users(self, usernames: Sequence[str]) -> dict[str, User]:
        """The users among ``usernames`` that exist, by casefolded name: one search per
        ``CHUNK`` names (and :meth:`_roles_by_dn` for their roles)."""
        wanted = {name.casefold() for name in usernames}
        entries: dict[str, Entry] = {}
        for entry in self._user_entries(list(dict.fromkeys(usernames)), self._user_attrs()):
            key = self._username(entry).casefold()
            if key in wanted and key not in entries:
                entries[key] = entry
        roles = self._roles_by_dn([e.dn for e in entries.values()])
        return {k: self._to_user(e, roles.get(e.dn, [])) for k, e in entries.items()}

    def list_users(self, query: UserQuery) -> Page:
        if is_spaced(query.username_prefix):
            return Page([], 0, query.offset, query.limit)
        flt = self._list_filter(query)
        members: set[DnKey] | None = None
        if query.role is not None:
            group = self._group_entry(query.role, [self.config.member_attribute])
            if group is None:
                return Page([], 0, query.offset, query.limit)
            members = {dn_key(dn) for dn in self._real_members(group)}
        keep = None if query.limit is None else query.offset + query.limit
        with collector_paused():
            total, entries, self._left_ambiguous = self._listing(flt, members, keep, query.offset)
            users = self._users_of(entries, True)
            del entries  # the entries go before the collector is back, unscanned
        return Page(users, total, query.offset, query.limit)

    def _listing(
        self, flt: str, members: set[DnKey] | None, keep: int | None, offset: int
    ) -> tuple[int, list[Entry], list[AmbiguousName]]:
        """The total of matches, the entries of the page (from ``offset`` to ``keep``)
        with their attributes, and the names of the page that several entries hold.
        A page walks the matches for their names alone (a third of the cost of reading
        them whole) and reads its own entries with one lookup of its names, which finds
        every entry holding each of them too (the filter may leave the others out). A
        whole listing walks them whole; its names' other holders are counted in the walk
        when it reads every user, else looked up."""
        if keep is not None:
            total, picked = self._listed(flt, members, keep, [self.config.username_attribute])
            entries, ambiguous = self._page_entries(picked[offset:])
            return total, entries, ambiguous
        total, picked = self._listed(flt, members, None, self._user_attrs())
        whole = members is None and flt == self._user_filter
        page = picked[offset:]
        ambiguous = self._ambiguous_of(picked if whole else None, page)
        return total, [entry for *_, entry in page], ambiguous

    def _listed(
        self, flt: str, members: set[DnKey] | None, keep: int | None, attrs: Sequence[str]
    ) -> tuple[int, list[Picked]]:
        """:meth:`_pick` on the store's connection; a server limit says that a listing
        reads every match, however short its page."""
        try:
            return self._run("list users", lambda c: self._pick(c, flt, members, keep, attrs))
        except ServerLimit as exc:
            exc.message += (
                "; a listing reads every matching user, to order them by name and count "
                "them, however few it shows"
            )
            exc.hint = f"{exc.hint}; or narrow the listing below the limit (--prefix, --claim)"
            raise

    def iter_users(self, batch: int = 1000, roles: bool = True) -> Iterator[list[User]]:
        """Every user, by name as :meth:`list_users` gives them, from one paged search
        read to its end before the first batch (a read that fails midway yields
        nothing); their roles from one walk of the groups, and only with ``roles``.
        The users of a name that several entries hold are left out (which one the name
        means cannot be told): :meth:`ambiguous_names` says which."""
        with collector_paused():
            _, picked = self._run(
                "list users",
                lambda c: self._pick(c, self._user_filter, None, None, self._user_attrs()),
            )
            unique, self._left_ambiguous = self._unique(picked)
            users = self._users_of([entry for *_, entry in unique], roles)
            walked = [(dn, self._entry_id(e)) for _, _, dn, e in picked]
            del picked, unique  # the entries go before the collector is back, unscanned
        self._walked = walked
        for start in range(0, len(users), batch):
            yield users[start : start + batch]

    _left_ambiguous: list[AmbiguousName] = []
    """What :meth:`ambiguous_names` gives (replaced by each read, never changed)."""

    def ambiguous_names(self) -> list[AmbiguousName]:
        return self._left_ambiguous

    def _unique(self, picked: list[Picked]) -> tuple[list[Picked], list[AmbiguousName]]:
        """``picked`` (in name order) parted into the entries whose name is theirs
        alone, and the names that several hold (compared as the store compares names,
        case-insensitively). Entries without a name (no username attribute) are
        neither: no name is ambiguous, and none names a user to provision (a paged
        listing lists them as they are, and names no ambiguity either)."""
        unique: list[Picked] = []
        ambiguous: list[AmbiguousName] = []
        for key, group in itertools.groupby(picked, key=lambda p: p[0]):
            entries = list(group)
            if not key:
                continue
            if len(entries) == 1:
                unique.append(entries[0])
            else:
                ambiguous.append(self._ambiguous_name([e for *_, e in entries]))
        return unique, ambiguous

    def _ambiguous_of(self, picked: list[Picked] | None, page: list[Picked]) -> list[AmbiguousName]:
        """The names of ``page`` that several entries hold: counted in ``picked``, every
        user in name order, or else looked up (the page of a filtered listing may hold
        one of them, and the others be out of it)."""
        if picked is not None:
            names = {key for key, *_ in page}
            return [a for a in self._unique(picked)[1] if a.username.casefold() in names]
        return self._held_by_several(
            self._holders(page, [self.config.username_attribute, "entryUUID"])
        )

    def _page_entries(self, page: list[Picked]) -> tuple[list[Entry], list[AmbiguousName]]:
        """The entries of ``page`` (walked for their names) with their attributes, and
        the names of the page that several entries hold: one lookup of its names. One
        it does not find (no name to look up, or renamed since the walk) is read at its
        DN; one gone since the walk is left out."""
        attrs = self._user_attrs()
        holders = self._holders(page, attrs)
        by_dn = {dn_key(entry.dn): entry for found in holders.values() for entry in found}
        keys = [dn_key(dn) for _, _, dn, _ in page]
        missing = [dn for (_, _, dn, _), key in zip(page, keys, strict=True) if key not in by_dn]
        if missing:
            flt = self._user_filter
            read = self._run("list users", lambda c: self._entries_at(c, missing, flt, attrs))
            by_dn.update((dn_key(e.dn), e) for e in read if e is not None)
        entries = [by_dn.get(key) for key in keys]
        return [e for e in entries if e is not None], self._held_by_several(holders)

    def _holders(self, page: list[Picked], attrs: Sequence[str]) -> dict[str, list[Entry]]:
        """Every entry (of this store, whatever the listing's filter) holding each name
        of ``page``, by casefolded name: one search per ``CHUNK`` names."""
        wanted = {key for key, *_ in page}
        found: dict[str, list[Entry]] = {}
        for entry in self._user_entries(list(dict.fromkeys(n for _, n, *_ in page)), attrs):
            key = self._username(entry).casefold()
            if key in wanted:
                found.setdefault(key, []).append(entry)
        return found

    def _held_by_several(self, holders: dict[str, list[Entry]]) -> list[AmbiguousName]:
        """The names of ``holders`` (:meth:`_holders`) that several entries hold."""
        return [self._ambiguous_name(holders[k]) for k in sorted(holders) if len(holders[k]) > 1]

    def _ambiguous_name(self, entries: Sequence[Entry]) -> AmbiguousName:
        ordered = sorted(entries, key=lambda e: (self._username(e), e.dn))
        return AmbiguousName(
            self.domain,
            self._username(ordered[0]),
            [e.dn for e in ordered],
            [self._entry_id(e) for e in ordered],
            self.config.username_attribute,
        )

    def _users_of(self, entries: Sequence[Entry], roles: bool) -> list[User]:
        """``entries`` made users, with their roles (:meth:`_roles_by_dn`) or none."""
        held = self._roles_by_dn([e.dn for e in entries]) if roles else {}
        return [self._to_user(e, held.get(e.dn, [])) for e in entries]

    def _list_filter(self, query: UserQuery) -> str:
        terms = [self._user_filter]
        if query.where is not None:
            attribute = self.config.username_attribute
            found = ldap_condition(query.where, attribute, self.claim_attributes)
            terms += [found] if found else []
        for claim, value in query.claims.items():
            terms.append(eq_filter(self._attribute(claim), value))
        if query.username_prefix:
            prefix = escape_filter_chars(query.username_prefix)
            terms.append(f"({self.config.username_attribute}={prefix}*)")
        return all_filter(*terms)

    def _pick(
        self,
        conn: Any,
        flt: str,
        members: set[DnKey] | None,
        keep: int | None,
        attrs: Sequence[str],
    ) -> tuple[int, list[Picked]]:
        """The total of matches, and the first ``keep`` of them by name (all if None):
        (casefolded name, name, DN, entry with ``attrs``), holding no more than
        ``keep`` at a time; one paged search."""
        total = 0

        def matches() -> Iterator[Picked]:
            nonlocal total
            base = self.config.user_search_base
            for entry in self._paged(conn, base, flt, attrs, self._scope):
                if members is None or dn_key(entry.dn) in members:
                    total += 1
                    name = self._username(entry)
                    yield name.casefold(), name, entry.dn, entry

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
        flt = all_filter(self._group_filter, eq_filter(self.config.group_name_attribute, name))
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
        values = self._member_values(group)
        return [dn for dn in values if not self._is_placeholder(dn, group.dn)]

    def _is_user_dn(self, dn: str) -> bool:
        """Whether ``dn`` is in this store's user subtree (members elsewhere are not users
        of this domain: they are neither shown nor counted)."""
        return self._is_user_key(dn_key(dn))

    def _is_user_key(self, key: DnKey) -> bool:
        size = len(self._user_base)
        inside = len(key) > size and key[len(key) - size :] == self._user_base
        return inside and (self._scope != LEVEL or len(key) == size + 1)

    def _user_members(self, group: Entry) -> list[tuple[str, DnKey]]:
        """The group's members that are users of this store (:meth:`_real_members` in
        the user subtree), with their DN keys: one key per member value."""
        own, empty = dn_key(group.dn), self._empty_key
        keyed = ((dn, dn_key(dn)) for dn in self._member_values(group))
        return [
            (dn, key) for dn, key in keyed if key != own and key != empty and self._is_user_key(key)
        ]

    def _member_names(self, dns: Sequence[str]) -> list[str]:
        """Usernames of member DNs: from the DN when it names one, else read."""
        attribute = self.config.username_attribute
        names = {dn: rdn_value(dn, attribute) for dn in dns}
        unnamed = [dn for dn, name in names.items() if name is None]
        for dn, entry in zip(unnamed, self._members(unnamed, [attribute]), strict=True):
            names[dn] = self._username(entry) if entry is not None else None
        return sorted((n for n in names.values() if n is not None), key=str.casefold)

    def _members(self, dns: Sequence[str], attrs: Sequence[str]) -> list[Entry | None]:
        """The user entry of each member DN (None where it is gone or no user)."""
        flt = self._user_filter
        return self._run("read members", lambda c: self._entries_at(c, dns, flt, attrs))

    def _to_role(
        self, group: Entry, with_members: bool, users: list[tuple[str, DnKey]] | None = None
    ) -> Role:
        """The role of ``group`` (``users``: its :meth:`_user_members`, if known)."""
        members = [dn for dn, _ in (self._user_members(group) if users is None else users)]
        return Role(
            id=self._entry_id(group),
            domain=self.domain,
            name=self._role_name(group),
            member_count=len(members),
            members=self._member_names(members) if with_members else None,
            created=iso_stamp(group.text("createTimestamp")),
            modified=iso_stamp(group.text("modifyTimestamp")),
        )

    def find_role(self, name: str, with_members: bool = False) -> Role | None:
        group = self._group_entry(name)
        return None if group is None else self._to_role(group, with_members)

    def _group_by_id(self, role_id: str) -> Entry | None:
        if not is_uuid(role_id):
            return None
        flt = all_filter(self._group_filter, eq_filter("entryUUID", role_id))
        base, attrs = self.config.group_search_base, self._group_attrs()
        found = self._run("find a role by id", lambda c: self._search(c, base, flt, attrs, SUBTREE))
        return found[0] if found else None

    def find_role_by_id(self, role_id: str) -> Role | None:
        group = self._group_by_id(role_id)
        return None if group is None else self._to_role(group, False)

    def role_member_ids(self, role_id: str) -> list[str]:
        """One base search per member, pipelined: work grows with the members, not with
        the users (a walk of every user per role made a sync read them all 7 times)."""
        group = self._group_by_id(role_id)
        if group is None:
            return []
        dns = [dn for dn in self._real_members(group) if self._is_user_dn(dn)]
        found = self._members(dns, ["entryUUID"])
        return [self._entry_id(e) for e in found if e is not None]

    def roles_with_member_ids(self) -> list[tuple[Role, list[str]]]:
        """One walk of the groups and one of the users' ids, instead of a search per
        member of every role."""
        ids = self._run("read member ids", self._ids_by_dn)
        found = []
        for group in self._groups(self._group_filter):
            users = self._user_members(group)
            members = [ids[key] for _, key in users if key in ids]
            found.append((self._to_role(group, False, users), members))
        return sorted(found, key=lambda pair: (pair[0].name.casefold(), pair[0].name))

    def _ids_by_dn(self, conn: Any) -> dict[DnKey, str]:
        """The entryUUID of every user, by DN key: those of the walk that
        :meth:`iter_users` just made (a sync reads the roles right after the users),
        else from a walk of the users' ids."""
        walked, self._walked = self._walked, None
        if walked is not None:
            return {dn_key(dn): user_id for dn, user_id in walked}
        base, flt = self.config.user_search_base, self._user_filter
        walk = self._paged(conn, base, flt, ["entryUUID"], self._scope)
        return {dn_key(e.dn): self._entry_id(e) for e in walk}

    def list_roles(self, prefix: str | None = None) -> list[Role]:
        if is_spaced(prefix):
            return []
        flt = self._group_filter
        if prefix:
            name = self.config.group_name_attribute
            flt = all_filter(flt, f"({name}={escape_filter_chars(prefix)}*)")
        roles = [self._to_role(g, False) for g in self._groups(flt)]
        return sorted(roles, key=lambda r: (r.name.casefold(), r.name))

    def _groups(self, flt: str) -> list[Entry]:
        """The groups matching ``flt``, with names, members and stamps."""
        base, attrs = self.config.group_search_base, self._group_attrs()
        return self._run("list roles", lambda c: list(self._paged(c, base, flt, attrs)))

    # (claims to attributes)
    def keeps_claim(self, name: str) -> bool:
        return name in self.claim_attributes

    def _attribute(self, claim: str) -> str:
        attribute = self.claim_attributes.get(claim)
        if attribute is None:
            raise PolicyError(
                f"claim {claim!r} has no LDAP attribute in the {self.domain} userstore",
                hint=f"map it under userstores[].claim_attributes, e.g. {claim}: ATTRIBUTE",
            )
        return attribute
