"""The userstore contract: what every kind of userstore (SQLite, LDAP...) provides.

A userstore holds the users and roles of one domain. It stores and reads; it does
not decide policy (the service checks names, passwords and claims first) and it
never calls connectors. Names are case-insensitive within a store; the case given
at creation is kept for display.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from idprov.config.claims import ClaimDefinition
from idprov.config.models import UserstoreConfig
from idprov.errors import NotFoundError, PolicyError, ReadOnlyError, UsageError
from idprov.model import AmbiguousName, ClaimValue, Page, PageStream, Role, User, UserQuery


class JsonClaims(Mapping[str, ClaimValue]):
    """Claims kept as JSON text, decoded only if read: what a bulk import staged (SQL
    stores write the JSON as it is), and the users of :meth:`UserStore.iter_users`
    (a sync digests the text of the users it skips, never decoding it)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._decoded: dict[str, ClaimValue] | None = None

    def _claims(self) -> dict[str, ClaimValue]:
        if self._decoded is None:
            import json

            self._decoded = json.loads(self.text)
        return self._decoded

    def __getitem__(self, key: str) -> ClaimValue:
        return self._claims()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._claims())

    def __len__(self) -> int:
        return len(self._claims())


@dataclass
class ImportedUser:
    """One user of a bulk import: created (``existing`` False) or updated, with exactly
    these claims, and exactly these roles when ``roles`` is not None."""

    id: str
    username: str
    claims: Mapping[str, ClaimValue]
    password_hash: str | None
    roles: list[str] | None
    existing: bool
    claims_json: str | None = None
    """``claims`` as sorted JSON, when the caller has it already (saves re-encoding)."""
    refused: Exception | None = None
    """Set by a store that cannot roll back (LDAP) when it refused this user and wrote
    the others; the caller reports it as that row's error."""


class UserStore(ABC):
    """One domain's users and roles. Methods raise idprov errors, never library ones."""

    type: ClassVar[str]
    transactional: ClassVar[bool] = True
    """Whether :meth:`transaction` can roll back (SQLite); a directory cannot, so
    bulk writers journal a batch before writing it (see the CSV import)."""
    adds_as_read: ClassVar[bool] = False
    """Whether :meth:`add_user` returns the user exactly as :meth:`find_user` would
    read it back (SQL stores: what they wrote is what they read), so that a new user
    need not be read back. A directory may fill in attributes from the name (``cn``,
    ``sn``) that map to claims."""
    writes_sent: int = 0
    """How many writes a store that cannot roll back has sent so far (a count that
    only grows): a change that failed with it unchanged wrote nothing, so nothing of
    it needs finishing."""

    def __init__(self, config: UserstoreConfig, claims: Mapping[str, ClaimDefinition]):
        self.config = config
        self.claims = claims

    @property
    def domain(self) -> str:
        return self.config.domain

    password_scheme: ClassVar[str] = "scrypt"
    """How this store wants passwords hashed (see :func:`passwords.hash_with`)."""

    def hash_password(self, password: str) -> str:
        """A hash of ``password`` in the form this store keeps and checks."""
        from idprov.userstores.passwords import hash_with

        return hash_with(self.password_scheme, password)

    def check_password_hash(self, encoded: str) -> None:
        """Raise :class:`PolicyError` unless this store can keep ``encoded`` as a
        password hash it checks logins against."""
        from idprov.userstores.passwords import is_supported_hash

        if not is_supported_hash(encoded):
            raise PolicyError(
                "not a hash idprov can verify ($scrypt$..., $pbkdf2-sha256$..., {SSHA}...)",
                hint="give the password instead, or a hash in one of these formats",
            )

    def ensure_writable(self) -> None:
        """Raise :class:`ReadOnlyError` when the store is configured read-only."""
        if self.config.read_only:
            raise ReadOnlyError(
                f"the {self.domain} userstore is read-only",
                hint=f"set read_only: false on userstore {self.domain} to allow changes",
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes; stores that cannot roll back make this a no-op."""
        yield

    def shares_connection(self, db: object) -> bool:
        """Whether this store writes through ``db``'s connection (the embedded store
        lives in idprov's own database file): then one transaction holds both."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections. Safe to call twice."""

    def lock_user(self, username: str) -> None:  # noqa: B027 - most stores need nothing
        """Inside :meth:`transaction`: keep other writers off the user until it ends.
        Nothing to do where the transaction excludes every other writer already
        (SQLite's ``BEGIN IMMEDIATE``) or where there are no row locks (a directory)."""

    def lock_role(self, name: str) -> None:  # noqa: B027 - most stores need nothing
        """:meth:`lock_user` for a role."""

    def keeps_claim(self, name: str) -> bool:
        """Whether this store can hold claim ``name`` (a directory only what its
        ``claim_attributes`` map)."""
        return name in self.claims

    # reads
    @abstractmethod
    def find_user(self, username: str) -> User | None:
        """The user with this name (any case), with roles; None if there is none."""

    @abstractmethod
    def find_user_by_id(self, user_id: str) -> User | None:
        """The user with this stable id, with roles; None if there is none."""

    def find_users_by_id(self, user_ids: Sequence[str]) -> dict[str, User]:
        """The users among ``user_ids`` that exist, by id (stores may batch this)."""
        found = {}
        for user_id in user_ids:
            user = self.find_user_by_id(user_id)
            if user is not None:
                found[user_id] = user
        return found

    def find_users(self, usernames: Sequence[str]) -> dict[str, User]:
        """The users among ``usernames`` that exist, by casefolded name (stores may
        batch this)."""
        found = {}
        for name in usernames:
            user = self.find_user(name)
            if user is not None:
                found[name.casefold()] = user
        return found

    def import_users(self, users: Sequence[ImportedUser]) -> None:
        """Write a batch of a bulk import (inside the caller's transaction). Roles must
        exist. Stores may do this in a few statements; this default goes one by one.
        A store without transactions sets ``refused`` on a user it refuses instead of
        raising, so the rest of the batch is written and reported as such."""
        self.ensure_writable()
        for user in users:
            if user.existing:
                current = self.find_user(user.username)
                unset = [c for c in (current.claims if current else {}) if c not in user.claims]
                self.update_user(user.username, user.claims, unset)
                if user.password_hash:
                    self.set_password_hash(user.username, user.password_hash)
            else:
                self.add_user(user.username, user.claims, user.password_hash)
            if user.roles is not None:
                self.set_roles(user.username, user.roles)

    def set_roles(self, username: str, roles: Sequence[str]) -> None:
        """Give the user exactly ``roles`` (which exist): assign missing, unassign others."""
        wanted = {r.casefold(): r for r in roles}
        user = self.find_user(username)
        held = {r.casefold(): r for r in (user.roles if user else [])}
        for key, role in wanted.items():
            if key not in held:
                self.assign(role, [username])
        for key, role in held.items():
            if key not in wanted:
                self.unassign(role, [username])

    @abstractmethod
    def list_users(self, query: UserQuery) -> Page:
        """A page of users matching ``query``, ordered by username, with a total."""

    def stream_users(self, query: UserQuery) -> PageStream:
        """:meth:`list_users`, the users read as they are consumed (SQL stores read in
        batches, so a listing of every user does not grow with their number). The
        stream is read once, before the next write to the store. This default reads
        the whole page first."""
        page = self.list_users(query)
        domains = [self.domain] if page.items else []
        return PageStream(
            iter(page.items), page.total, page.offset, page.limit, domains, self.ambiguous_names()
        )

    def ambiguous_names(self) -> list[AmbiguousName]:
        """The names that several entries held in the last :meth:`list_users` (among
        the page's users) or :meth:`iter_users` (which leaves their users out). Only a
        store whose names are not unique keys (a directory searched in its subtree)
        can have any."""
        return []

    def iter_users(self, batch: int = 1000, roles: bool = True) -> Iterator[list[User]]:
        """Every user, in batches of up to ``batch``, from one read (one statement, or
        one paged search: pages by offset would shift under a concurrent deletion and
        name the wrong user). A store that can, streams it (memory flat in users), and
        may give claims as :class:`JsonClaims`, the text it holds; with ``roles``
        False, it may leave each user's roles empty (not read)."""
        users = self.list_users(UserQuery(limit=None)).items
        for start in range(0, len(users), batch):
            yield users[start : start + batch]

    @abstractmethod
    def password_hash(self, username: str) -> str | None:
        """The stored password hash of an existing user, or None if it has none."""

    @abstractmethod
    def find_role(self, name: str, with_members: bool = False) -> Role | None:
        """The role with this name (any case); members' usernames when asked."""

    @abstractmethod
    def find_role_by_id(self, role_id: str) -> Role | None:
        """The role with this stable id (members not loaded); None if there is none."""

    @abstractmethod
    def role_member_ids(self, role_id: str) -> list[str]:
        """Stable ids of the role's members."""

    def role_member_ids_among(self, role_id: str, user_ids: Sequence[str]) -> list[str]:
        """Those of ``user_ids`` that are members of the role: work grows with
        ``user_ids``, not with the role (a push of a few changed members of a large
        role). This default reads those users and their roles; stores may ask it."""
        role = self.find_role_by_id(role_id)
        if role is None or not user_ids:
            return []
        key = role.name.casefold()
        users = self.find_users_by_id(list(user_ids))
        return [
            user_id
            for user_id in user_ids
            if user_id in users and key in {r.casefold() for r in users[user_id].roles}
        ]

    @abstractmethod
    def list_roles(self, prefix: str | None = None) -> list[Role]:
        """Every role (with member counts), ordered by name."""

    def roles_with_member_ids(self) -> Iterable[tuple[Role, list[str]]]:
        """Every role with its members' stable ids, ordered by name (what a sync reads).
        This default reads a role's members as it is consumed (memory holds one role's
        members, not all); stores may read it all at once."""
        return ((role, self.role_member_ids(role.id)) for role in self.list_roles())

    # writes: each raises ConflictError/NotFoundError as the case may be
    @abstractmethod
    def add_user(
        self, username: str, claims: Mapping[str, ClaimValue], password_hash: str | None
    ) -> User:
        """Create a user; ConflictError if the name exists. Not idempotent."""

    def add_user_with_roles(
        self,
        username: str,
        claims: Mapping[str, ClaimValue],
        password_hash: str | None,
        roles: Sequence[str],
    ) -> User:
        """:meth:`add_user`, and the user a member of each of ``roles`` (which exist).
        A store that cannot roll back (LDAP) may list the user in its roles first, so
        that the add is its last write: a cut-off never leaves the user without its
        roles, and one before the add is finished by the same add run again (the
        caller records the add first, to adopt a user whose add's answer was lost)."""
        user = self.add_user(username, claims, password_hash)
        for role in roles:
            self.assign(role, [username])
        return user

    @abstractmethod
    def update_user(
        self, username: str, set_claims: Mapping[str, ClaimValue], unset: Sequence[str]
    ) -> User:
        """Set and remove claims of an existing user; a repeat is harmless."""

    def rename_user(self, username: str, new_name: str) -> User:
        """Give the user another name, keeping its id, claims, password and roles;
        ConflictError if ``new_name`` is another user's. Stores that cannot refuse."""
        raise UsageError(
            f"the {self.domain} userstore ({self.type}) cannot rename users",
            hint="delete the user and add it under the new name",
        )

    def unfinished_rename(self, username: str, new_name: str, user_id: str) -> User | None:
        """The user ``new_name``, as it was named before (``username``), when it is the
        user of id ``user_id`` and ``username`` names no one: a rename that idprov
        recorded before it started (so the user is provably the one it was renaming)
        and that was cut off after the store renamed the user (a store that cannot
        roll back: LDAP's group members); :meth:`finish_rename` then finishes it. None
        otherwise, and always where a rename is one transaction."""
        return None

    def made_by_idprov(self, username: str, since: str) -> User | None:
        """The user ``username`` when the store shows that idprov's own account created
        it at ``since`` (ISO 8601) or later, to the second (a directory: its
        ``creatorsName`` is the bind DN, its ``createTimestamp`` not earlier): part of
        the proof that an add whose answer was lost made it, and not someone else.
        None otherwise, and always where an add is one transaction."""
        return None

    def finish_rename(self, username: str, new_name: str, user_id: str) -> User:
        """Finish what a cut-off rename of ``username`` to ``new_name`` left, once
        :meth:`unfinished_rename` found it (a repeat is harmless)."""
        raise NotFoundError(f"no user {username!r} in the {self.domain} userstore")

    def finish_role_rename(self, name: str, new_name: str, role_id: str) -> Role:
        """Finish what a cut-off rename of role ``name`` to ``new_name`` left once the
        store renamed it (the role of ``role_id`` is named ``new_name``); a repeat is
        harmless. Where a rename is one write, nothing is left: the role."""
        role = self.find_role_by_id(role_id)
        if role is None:
            raise NotFoundError(f"no role {name!r} in the {self.domain} userstore")
        return role

    @abstractmethod
    def set_password_hash(self, username: str, password_hash: str) -> None:
        """Replace the stored hash; a repeat is harmless."""

    @abstractmethod
    def delete_user(self, username: str) -> User:
        """Delete the user and its memberships; returns what was deleted."""

    @abstractmethod
    def add_role(self, name: str) -> Role:
        """Create an empty role; ConflictError if the name exists."""

    @abstractmethod
    def delete_role(self, name: str) -> Role:
        """Delete the role (its members keep existing); returns it with its members."""

    @abstractmethod
    def rename_role(self, name: str, new_name: str) -> Role:
        """Rename, keeping id and members; ConflictError if ``new_name`` exists."""

    @abstractmethod
    def assign(self, role: str, usernames: Sequence[str]) -> list[str]:
        """Add members; returns the usernames newly added (members already: skipped)."""

    @abstractmethod
    def unassign(self, role: str, usernames: Sequence[str]) -> list[str]:
        """Remove members; returns the usernames actually removed."""
