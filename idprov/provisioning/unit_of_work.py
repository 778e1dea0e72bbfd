"""The unit of work: the one way any change to users and roles is written.

``with service.unit_of_work() as uow:`` opens nothing yet; the first write opens one
transaction over idprov's state database and each userstore the work touches (in
SQLite they commit together; a directory cannot roll back: the CSV import journals
its batches, and any other change (a user's add, rename, update or delete, a role's
rename, delete or change of members) is recorded in ``directory_writes`` before its
first write, so that a re-run finishes it: :meth:`UnitOfWork._directory_write`).
Each change method checks the userstore's policy *before* the transaction opens
(passwords are hashed there too), writes the change, its audit entry and one outbox
row per identity provider it must reach. When the ``with`` block ends the
transaction commits; then, and only then, the service hands the outbox rows and the
one-shot passwords to outbound, once (:meth:`IdentityService.unit_of_work`). The
CLI, the CSV import, JIT logins, the SCIM endpoint and sync apply all write through
here: nothing else writes the state.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from idprov.db import clock
from idprov.errors import (
    ConflictError,
    IdprovError,
    LockedError,
    NotFoundError,
    StoreError,
    UsageError,
)
from idprov.model import ClaimValue, QualifiedName, Role, User
from idprov.provisioning import managers
from idprov.provisioning.active import is_active
from idprov.provisioning.internal_roles import INTERNAL
from idprov.provisioning.outbound import holder_gone
from idprov.provisioning.results import ChangeResult
from idprov.userstores import policy
from idprov.userstores.passwords import verify_password

if TYPE_CHECKING:
    from idprov.provisioning.external_ids import ExternalIds
    from idprov.provisioning.outbox import Kind, OutboxRow
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import IdentityService
    from idprov.provisioning.state import DirectoryWrite, StateStore
    from idprov.userstores import UserStore
    from idprov.userstores.base import ImportedUser


@dataclass
class PendingPush:
    """Committed outbox rows (and one-shot passwords) not pushed yet: what a caller
    that pushes elsewhere (`idprov serve`'s pushers, or its outbox worker process:
    :mod:`~idprov.inbound.push_relay`) carries from the commit to the push. Passwords
    are only in memory (and on the local socket to the outbox worker), never on disk."""

    rows: list[int] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    claims: list[str] = field(default_factory=list)
    """The names the rows were claimed under in their changes' own transactions: the
    push drains them under those names, with no transaction of its own to claim them."""
    queued: list[tuple[int, str]] = field(default_factory=list)
    """(row, IdP) the changes left to the outbox worker (``blocking: false`` IdPs)."""
    fresh: list[int] = field(default_factory=list)
    """Rows of users and roles the changes created: nothing of theirs is at a target
    yet, so the deletion guard has nothing to judge in them."""
    idps: dict[int, str] = field(default_factory=dict)
    """Each row's IdP."""

    def add(self, other: PendingPush) -> None:
        self.rows += other.rows
        self.idps.update(other.idps)
        self.passwords.update(other.passwords)
        self.claims += other.claims
        self.queued += other.queued
        self.fresh += other.fresh


@dataclass(frozen=True)
class CutOff:
    """What the changes of a command left when a Ctrl-C cut it off, for its message
    to say what finishes the job (:meth:`UnitOfWork.cut_off`)."""

    committed: bool = False
    """A change of the command is committed here (audited, its outbox rows written)."""
    unpushed: bool = False
    """The last change is committed and its push did not finish: its rows wait in the
    outbox (`idprov outbox retry` pushes them; run again, the change would repeat)."""
    recorded: tuple[str, ...] = ()
    """The directory writes the last change recorded and left unfinished (``add of
    user CORP/ann``): the same command, run again, finishes only these."""
    unanswered: tuple[str, ...] = ()
    """The domains whose directory was sent a write of the last change, recorded
    nowhere and never answered: the directory may have made it."""

    @property
    def nothing(self) -> bool:
        """Nothing was changed: the command can simply be run again."""
        return not (self.committed or self.recorded or self.unanswered)


class UnitOfWork:
    """Changes written in one transaction, pushed once after it commits."""

    def __init__(self, service: IdentityService, claim: bool = False) -> None:
        self.service = service
        self.rows: list[int] = []
        self.judged_whole = False
        """Set by a sync applying its plan (judged whole by the deletion guard): the
        rows it enqueues go out even where a held change waits in them; any other
        change joins a held row and waits with it, but an offboarding (see
        :attr:`_offboarding`)."""
        self._offboarding: set[str] = set()
        self._known_idps: list[str] | None = None
        """Every IdP configured or ever pushed to (see :meth:`_untracked`), read once."""
        """Users this change disables (``active`` false), deletes, or takes a role from
        (an import row that sets roles; a role's deletion): their rows go out even where
        a held change waits in them, at the IdPs they leave (an offboarding is never
        postponed; this command's own guard judges it, an import's batches together;
        see :meth:`_offboard_held`)."""
        """Outbox rows this work wrote, to drain after the commit."""
        self._claim = claim
        self.claimed_by: str | None = None
        """With ``claim``, the rows of the IdPs the service waits for are claimed for
        its push in this transaction, under this name (no other drainer takes them in
        between, and the push needs no transaction of its own to claim them)."""
        self._idps: dict[int, str] = {}
        """Each row's IdP."""
        self._created: set[str] = set()
        """Ids of the users and roles this work created."""
        self._fresh: set[int] = set()
        """The rows of those (see :meth:`pending`)."""
        self._waited: list[int] = []
        """The rows of the IdPs the service waits for (claimed, with ``claim``)."""
        self.passwords: dict[str, str] = {}
        """Passwords set by this work, by user id: in memory only, handed to outbound."""
        self.results: list[ChangeResult] = []
        self.outbound: OutboundReport | None = None
        """What the push after the commit did (None until then, or nothing to push)."""
        self._stack = ExitStack()
        self._open: set[str] = set()
        self._writer: str | None = None
        """This work's name as the owner of the directory writes it records."""
        self.committed = False
        """Whether the transaction committed (set as the ``with`` block ends)."""
        self._sent: dict[str, tuple[UserStore, int]] = {}
        """Each store this work opened that cannot roll back, and how many writes it
        had sent then (see :meth:`cut_off`)."""
        self._recorded: dict[int, tuple[str, DirectoryWrite]] = {}
        """The directory writes this work recorded or took over and has not forgotten,
        with their domain."""

    def pending(self, waited_only: bool = False) -> PendingPush:
        """What this work leaves to push (after its commit). ``waited_only``: leave
        out the rows of entities this work created for the IdPs the service does not
        wait for (counted in ``queued``): nothing is at a target yet that pushing them
        could destroy, so the deletion guard has nothing to judge, and `idprov
        serve` spends no push on a create for a ``blocking: false`` IdP. Every other
        row is judged by the guard with the whole change, as the push does."""
        claims = [self.claimed_by] if self.claimed_by is not None else []
        waited = set(self._waited)
        left = {r for r in self._fresh if r not in waited} if waited_only else set()
        rows = [r for r in self.rows if r not in left]
        queued = [(r, self._idps[r]) for r in sorted(left)]
        fresh = [r for r in rows if r in self._fresh]
        idps = {r: self._idps[r] for r in rows}
        return PendingPush(rows, dict(self.passwords), claims, queued, fresh, idps)

    # ---- the transaction
    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        if exc[0] is None and self._waited and self.claimed_by is not None:
            outbound = self.service.outbound
            self.service.state.outbox.claim_ids(self._waited, self.claimed_by, outbound.lease)
        if exc[0] is None and self._claim and not self.judged_whole and self.rows:
            # judged by this command's push; cut before it, whoever meets them judges
            # the change whole (the rows of what it created have nothing to judge)
            unjudged = sorted({r for r in self.rows if r not in self._fresh})
            self.service.state.outbox.mark_own_push(unjudged)
        suppressed = self._stack.__exit__(*exc)
        self.committed = exc[0] is None
        return suppressed

    def cut_off(self) -> CutOff:
        """What this work leaves if a Ctrl-C stops it now: committed (and whether its
        push finished), or the directory writes it recorded for a re-run to finish, or
        the directories it sent a write that nothing records (their answer never came:
        the write may have been made), or nothing at all."""
        if self.committed:
            return CutOff(committed=True, unpushed=bool(self.rows) and self.outbound is None)
        recorded = {domain.casefold() for domain, _ in self._recorded.values()}
        return CutOff(
            recorded=tuple(_label(domain, w) for domain, w in self._recorded.values()),
            unanswered=tuple(
                store.domain
                for key, (store, sent) in self._sent.items()
                if store.writes_sent > sent and key not in recorded
            ),
        )

    def begin(self, store: UserStore | None = None) -> None:
        """Open ``store``'s transaction, or with no store the state's, once each. The
        state's opens at the first record (audit, outbox), after the store writes of
        a change: a directory write is never made while idprov's database is locked."""
        key = "" if store is None else store.domain.casefold()
        if store is not None:
            store.ensure_writable()
            if not store.transactional:
                self._sent.setdefault(key, (store, store.writes_sent))
            if store.transactional:
                self.begin()  # the state's is the outer one: the store commits first
        if key not in self._open:
            if store is None:
                self._stack.enter_context(self.service.state.transaction())
            elif not store.shares_connection(self.service.state.db):
                self._stack.enter_context(store.transaction())  # else: in the state's
            self._open.add(key)

    def audit(
        self,
        action: str,
        target: str,
        details: dict[str, Any] | None = None,
        outcome: str = "ok",
    ) -> None:
        """Record a change in the audit log (opens the transaction if needed)."""
        self.begin()
        self.service.state.audit(
            actor=self.service.actor,
            application=self.service.application,
            action=action,
            target=target,
            outcome=outcome,
            details=details,
            run=self.service.run,
        )

    def enqueue(
        self,
        kind: Kind,
        entity_id: str,
        domain: str,
        label: str,
        idps: Sequence[str] | None = None,
        members: Collection[tuple[str, str]] | None = None,
    ) -> None:
        """Ask for a user or role to be reconciled at the application's IdPs (at
        ``idps`` only, when given: sync applies a plan per IdP). A user this change
        offboards (:attr:`_offboarding`) is reconciled too at every other enabled IdP
        whose ledger holds it (see :meth:`_ledger_targets`). ``members``: of a role,
        every user (domain, id) whose membership this change may have changed, when
        the change knows them: its push then compares the group for them alone (see
        :attr:`~idprov.provisioning.outbox.OutboxRow.members_delta`)."""
        touched = None if members is None else {entity_id: members}
        self.enqueue_many(kind, [(entity_id, domain, label)], idps, touched)

    def enqueue_many(
        self,
        kind: Kind,
        entities: Sequence[tuple[str, str, str]],
        idps: Sequence[str] | None = None,
        members: Mapping[str, Collection[tuple[str, str]]] | None = None,
    ) -> None:
        """:meth:`enqueue` for several (id, domain, label) at once."""
        targets = self.service.targets() if idps is None else list(idps)
        if kind == "user" and idps is None:
            for others, leaving in self._ledger_targets(entities, targets).items():
                self._enqueue_at(list(others), kind, leaving)
        if kind == "role" and idps is None:
            self._untracked([e[0] for e in entities], targets)
        self._enqueue_at(targets, kind, entities, members)

    def _untracked(self, role_ids: Sequence[str], targets: Sequence[str]) -> None:
        """Note, at every IdP but ``targets`` (configured, or pushed to by any host: one
        removed from the configuration may come back), that the members of roles
        ``role_ids`` changed with no row there (see
        :meth:`~idprov.provisioning.outbox.Outbox.untracked`): the next push of each
        there compares every member."""
        if self._known_idps is None:  # (an import's batch enqueues a role at a time)
            known = {i.name for i in self.service.config.identity_providers}
            known |= set(self.service.state.outbox.scopes())  # pushed to, configured or not
            self._known_idps = sorted(known)
        others = [idp for idp in self._known_idps if idp not in targets]
        if others and role_ids:
            self.begin()
            self.service.state.outbox.untracked(others, role_ids)

    def _ledger_targets(
        self, entities: Sequence[tuple[str, str, str]], targets: Sequence[str]
    ) -> dict[tuple[str, ...], list[tuple[str, str, str]]]:
        """The users of ``entities`` this change offboards, by the enabled IdPs outside
        ``targets`` whose ledger holds them. An application may change the users of
        another's userstore (one its JIT logins land in) but provisions to its own IdPs
        only: an offboarding (a delete, a disable, a role taken away) must still reach
        every target the user was sent to, or the account stays there, enabled, with no
        row to say so. Those rows are enqueued, held and judged as any other."""
        leaving = [e for e in entities if e[0] in self._offboarding]
        others = [
            idp.name
            for idp in self.service.config.identity_providers
            if idp.enabled and idp.name not in targets
        ]
        if not leaving or not others:
            return {}
        held = self.service.state.ledger.idps_of(others, "user", [e[0] for e in leaving])
        out: dict[tuple[str, ...], list[tuple[str, str, str]]] = {}
        for entity in leaving:
            if entity[0] in held:
                out.setdefault(tuple(sorted(held[entity[0]])), []).append(entity)
        return out

    def _enqueue_at(
        self,
        targets: Sequence[str],
        kind: Kind,
        entities: Sequence[tuple[str, str, str]],
        members: Mapping[str, Collection[tuple[str, str]]] | None = None,
    ) -> None:
        """Outbox rows for ``entities`` at ``targets``, in this work's transaction."""
        if not targets or not entities:
            return
        self.begin()
        allowed = self.service.allow_deletes  # travels with the rows, to any drainer
        outbox = self.service.state.outbox
        rows = outbox.enqueue_many(
            list(targets),
            kind,
            entities,
            allowed,
            keep_held=not self.judged_whole,  # a held change waits in its rows
            unjudged=not (self._claim or self.judged_whole),  # no push of ours judges it
            # (ours does: the commit marks them, see __exit__)
            members=members,
        )
        if kind == "user" and not self.judged_whole:
            self._offboard_held([r for r in rows if r.status == "held"], allowed)
        self.rows += [r.id for r in rows]
        self._idps.update((r.id, r.idp) for r in rows)
        self._fresh.update(r.id for r in rows if r.local_id in self._created)
        waited = self.service.waits_for
        self._waited += [r.id for r in rows if waited(r.idp)]
        if self._claim and self._waited and self.claimed_by is None:
            self.claimed_by = self.service.outbound.change_owner()

    def _offboard_held(self, held: Sequence[OutboxRow], allowed: int | None) -> None:
        """Take out of their hold the rows of ``held`` (user rows this change wrote
        that stay held, as the upsert found them: see :attr:`judged_whole`) whose user
        this change offboards (:attr:`_offboarding`) and leaves that IdP: deleted or
        disabled here, or out of its scope. Its push there deprovisions the user and
        sends nothing of the held change waiting in the row (a disable sends what was
        last sent), judged by this change's command, with its allowance ``allowed``.
        Where the user stays (a role taken away that its scope does not name; an IdP
        provisioning every user), the push would send the user's whole state, the held
        change's effects in it (an attribute it removes), judged with this change,
        apart from the rest of its own: there the row stays held with the held change,
        as any later change's does. Decided on the rows as the upsert left them, never
        on a read before it (a worker's hold made in between was undone by the
        upsert); the users are read only when some of their rows are held."""
        from idprov.provisioning.decide import group_member

        offboarded = self._offboarding - self._created
        mine = [r for r in held if r.local_id in offboarded]
        if not mine:
            return
        users = self.service.directory.users_by_id({(r.domain, r.local_id) for r in mine})
        leaving = [
            r
            for r in mine
            if r.local_id not in users
            or not group_member(self.service.idp(r.idp), users[r.local_id])
        ]
        if leaving:
            ids = [r.id for r in leaving]
            idps = sorted({r.idp for r in leaving})
            self.service.state.outbox.release_held(idps, allowed=allowed, ids=ids)

    def lock_user(self, username: str, domain: str | None = None) -> None:
        """Open the user's store transaction and hold the user's row in it until the
        commit, where the store has row locks (see :meth:`UserStore.lock_user`)."""
        store, name = self.service.resolve(username, domain)
        self.begin(store)
        store.lock_user(name)

    def lock_role(self, name: str, domain: str | None = None) -> None:
        """:meth:`lock_user` for a role."""
        store, bare = self.service.resolve(name, domain)
        self.begin(store)
        store.lock_role(bare)

    def _enqueue_user(self, user: User | None, domain: str) -> None:
        if user is not None:
            self.enqueue("user", user.id, domain, user.qualified_name)

    def _enqueue_role(
        self, store: UserStore, name: str, members: Collection[tuple[str, str]] | None = None
    ) -> None:
        role = store.find_role(name)
        if role is not None:
            self.enqueue("role", role.id, store.domain, role.qualified_name, members=members)

    def _done(self, result: ChangeResult) -> ChangeResult:
        self.results.append(result)
        return result

    # ---- users
    def add_user(
        self,
        username: str,
        claims: Mapping[str, ClaimValue] | None = None,
        password: str | None = None,
        roles: Sequence[str] = (),
        domain: str | None = None,
        origin: str = "",
    ) -> ChangeResult:
        """Create a user with claims, an optional password and roles (which must exist).
        ``origin`` says who asked beside the actor (a JIT login: ``jit:<idp>:<subject>``),
        recorded with an add to a directory: only the same add, asked for again by
        the same origin, adopts the user an add cut off made."""
        store, name = self.service.resolve(username, domain)
        claims = policy.trimmed_claims(claims or {})
        policy.check_username(store.config.policy, name, store.domain)
        policy.check_claims(claims, self.service.claims, name)
        policy.check_required(claims, store.config.policy, name, store.domain)
        internal = [n for r in roles if (n := self.service.internal_name(r, "")) is not None]
        for role_name in internal:
            self.service.internal.get(role_name)  # it must exist, before anything is written
        role_names = [
            self.service.same_domain_role(store, r)
            for r in roles
            if self.service.internal_name(r, "") is None
        ]
        pw_hash = None
        if password is not None:
            policy.check_password(store.config.policy, password, store.domain)
            pw_hash = store.hash_password(password)
        self.begin(store)
        asked = _Add(claims, pw_hash, password, role_names, origin)
        user, write = self._add_in_store(store, name, asked)
        self._created.add(user.id)
        for role_name in role_names:
            self._enqueue_role(store, role_name, [(store.domain, user.id)])
        self.audit(
            "user.add",
            user.qualified_name,
            {"claims": sorted(claims), "roles": role_names, "password": pw_hash is not None},
        )
        self._written(write)
        self.enqueue("user", user.id, store.domain, user.qualified_name)
        for role_name in internal:
            self._internal_membership("role.assign", role_name, [user.qualified_name], True)
        if password is not None:
            self.passwords[user.id] = password
        read_back = role_names or not store.adds_as_read  # roles, or a directory's additions
        added = (store.find_user(name) or user) if read_back else user
        return self._done(ChangeResult("user.add", user.qualified_name, added))

    def _add_in_store(
        self, store: UserStore, name: str, asked: _Add
    ) -> tuple[User, DirectoryWrite | None]:
        """The store's add, recorded first where it cannot roll back (see
        :meth:`_directory_write`). A recorded add of the same user that no process runs
        any more, and that asked for the same, is this one: the user it made, its
        answer lost, is taken as this add's when it provably is (:meth:`_made`);
        otherwise the add is made (or refused, the name being taken)."""

        def add() -> User:
            return store.add_user_with_roles(name, asked.claims, asked.pw_hash, asked.roles)

        if store.transactional:
            return add(), None
        recorded = self.service.state.directory_writes.find(store.domain, "add", name)
        write = None
        if recorded is not None:
            recorded = self._take_over(store, recorded)
            if recorded.digest == asked.digest:
                made = self._made(store, recorded, name, asked)
                if made is not None:
                    return made, recorded
                write = recorded  # the same add, carried on under its record
        if write is None:
            write = self._directory_write(
                store, "add", name, name, roles=asked.roles, asked=asked, replacing=recorded
            )
        try:
            return self._in_store(store, write, add, fresh=write is not recorded), write
        except ConflictError as exc:
            if recorded is None:
                raise
            raise ConflictError(
                f"{exc.message}; an add of {name!r} that idprov started before was cut off, "
                "and nothing proves that it made this user (it asked for other claims, "
                "roles or password, or the user was made by another account or before it)",
                hint=f"see the user with `idprov user show {store.domain}/{name}`: if that "
                "add made it, change it with `idprov user update` and `idprov role assign` "
                "(`idprov sync` pushes it); else choose another name",
            ) from exc

    def _made(
        self, store: UserStore, recorded: DirectoryWrite, name: str, asked: _Add
    ) -> User | None:
        """The user the recorded add made with its answer lost, when that is provable:
        created by idprov's account since the add was recorded (see
        :meth:`UserStore.made_by_idprov`), holding exactly the roles asked for, every
        claim asked for, and the password asked for (or none)."""
        made = store.made_by_idprov(name, recorded.started_at)
        if made is None or not _same_roles([r for r in made.roles if "/" not in r], asked.roles):
            return None
        if any(made.claims.get(k) != v for k, v in asked.claims.items()):
            return None
        stored = store.password_hash(name)
        if asked.password is None:
            return made if stored is None else None
        return made if verify_password(asked.password, stored) else None

    def _directory_write(
        self,
        store: UserStore,
        kind: str,
        name: str,
        new_name: str,
        entry_id: str | None = None,
        roles: Sequence[str] = (),
        asked: _Add | None = None,
        replacing: DirectoryWrite | None = None,
        details: dict[str, Any] | None = None,
        key: str | None = None,
        digest: str = "",
    ) -> DirectoryWrite:
        """Record a user add or rename in a store that cannot roll back, owned by this
        work and committed before its first write to the store (unless this work's own
        transaction is open already: then with it), in place of ``replacing`` (a record
        of the user whose owner is gone); removed with the change's records
        (:meth:`_written`). Only what is recorded is finished or adopted by a re-run.
        :class:`LockedError` if another process recorded one meanwhile."""
        state = self.service.state
        with state.transaction():
            write = state.directory_writes.start(
                store.domain,
                kind,
                name,
                new_name,
                entry_id,
                tuple(roles),
                owner=self._owner(),
                digest=asked.digest if asked else digest,
                origin=asked.origin if asked else "",
                replacing=replacing,
                details=details,
                key=key,
            )
        if write is None:
            again = state.directory_writes.find(store.domain, kind, key or name)
            raise _busy(store, again or replacing, kind, name)
        self._recorded[write.id] = (store.domain, write)
        return write

    def _owner(self) -> str:
        """This work's name as the owner of the directory writes it records or takes
        over (``host:pid:nonce``, as outbound names its drainers); this process counts
        them as running until the work ends."""
        if self._writer is None:
            self._writer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
            _RUNNING.add(self._writer)
            self._stack.callback(_RUNNING.discard, self._writer)
        return self._writer

    def _take_over(self, store: UserStore, recorded: DirectoryWrite) -> DirectoryWrite:
        """``recorded``, owned by this work from now: :class:`LockedError` while the
        process that owns it runs (it is making that write now, or finishing it)."""
        if not _abandoned(recorded):
            raise _busy(store, recorded, recorded.kind, recorded.name)
        state = self.service.state
        with state.transaction():
            taken = state.directory_writes.take_over(recorded, self._owner())
        if taken is None:
            again = state.directory_writes.find(store.domain, recorded.kind, recorded.name)
            raise _busy(store, again or recorded, recorded.kind, recorded.name)
        self._recorded[taken.id] = (store.domain, taken)
        return taken

    def _in_store(
        self, store: UserStore, write: DirectoryWrite, change: Callable[[], _T], fresh: bool
    ) -> _T:
        """``change()``; a refusal (which leaves nothing of it) forgets ``write``, and
        so does a store error before the store sent any write, when ``write`` is this
        work's own (``fresh``; one taken over keeps what an earlier run left); another
        store error (the directory stopped answering with a write out, a step after
        others failed) keeps it for the same command, run again, to finish."""
        sent = store.writes_sent
        try:
            return change()
        except StoreError:
            if fresh and store.writes_sent == sent:
                self._forget(write)
            raise
        except IdprovError:
            self._forget(write)
            raise

    def _journaled(self, store: UserStore, kind: str, key: str) -> DirectoryWrite | None:
        """The recorded ``kind`` write of ``key`` in ``store`` that no process makes any
        more, taken over by this work (:meth:`_take_over`: :class:`LockedError` while
        its process runs); None if there is none, or where the store rolls back."""
        if store.transactional:
            return None
        recorded = self.service.state.directory_writes.find(store.domain, kind, key)
        return None if recorded is None else self._take_over(store, recorded)

    def _recorded_change(
        self,
        store: UserStore,
        kind: str,
        name: str,
        change: Callable[[], _T],
        entry_id: str,
        replacing: DirectoryWrite | None,
        **record: Any,
    ) -> tuple[_T, DirectoryWrite | None]:
        """``change()``, recorded first (:meth:`_directory_write`) where the store
        cannot roll back: a delete, an update, a role's rename or change of members.
        Cut off with its answer lost, the same command run again reads the store and
        finishes the change the store shows made (its audit entry and outbox rows),
        or makes it. ``record``: the record's ``details``, ``key``, ``digest``,
        ``new_name``."""
        if store.transactional:
            return change(), None
        new_name = record.pop("new_name", name)
        write = self._directory_write(
            store, kind, name, new_name, entry_id, replacing=replacing, **record
        )
        return self._in_store(store, write, change, fresh=True), write

    def _forget(self, write: DirectoryWrite) -> None:
        with self.service.state.transaction():
            self.service.state.directory_writes.done(write.id)
        self._recorded.pop(write.id, None)

    def _written(self, write: DirectoryWrite | None) -> None:
        """The recorded write is finished: forgotten with its change's records."""
        if write is not None:
            self.begin()
            self.service.state.directory_writes.done(write.id)

    def update_user(
        self,
        username: str,
        set_claims: Mapping[str, ClaimValue] | None = None,
        unset: Sequence[str] = (),
        domain: str | None = None,
    ) -> ChangeResult:
        """Set and remove claims; an update that changes nothing records nothing."""
        store, name = self.service.resolve(username, domain)
        set_claims = policy.trimmed_claims(set_claims or {})
        policy.check_claims(set_claims, self.service.claims, name)
        policy.check_claim_names(unset, self.service.claims)
        digest = _digest({"set": set_claims, "unset": sorted(set(unset))})
        key = f"{name}\n{digest}"  # updates of other claims go on beside it
        recorded = self._journaled(store, "update", key)
        before = self.service.get_user(name, store.domain)
        if recorded is not None and recorded.entry_id != before.id:
            self._forget(recorded)  # of a user deleted since, whose name another took
            recorded = None
        after = {k: v for k, v in {**before.claims, **set_claims}.items() if k not in unset}
        policy.check_required(after, store.config.policy, name, store.domain)
        if after == before.claims and recorded is None:
            return self._done(
                ChangeResult("user.update", before.qualified_name, before, changed=False)
            )
        self.begin(store)
        write: DirectoryWrite | None = recorded
        if after == before.claims and recorded is not None:  # made, its answer lost
            user = before
            changed = sorted(recorded.details.get("claims", []))
        else:
            claims = sorted(
                k for k in {*before.claims, *after} if before.claims.get(k) != after.get(k)
            )
            user, write = self._recorded_change(
                store,
                "update",
                before.username,
                lambda: store.update_user(name, set_claims, list(unset)),
                before.id,
                recorded,
                details={"claims": claims},
                key=f"{before.username}\n{digest}",
                digest=digest,
            )
            changed = sorted(
                k
                for k in {*before.claims, *user.claims}
                if before.claims.get(k) != user.claims.get(k)
            )
        self.audit("user.update", user.qualified_name, {"claims": changed})
        self._written(write)
        if "active" in changed and not is_active(user.claims):
            self._offboarding.add(user.id)
        self.enqueue("user", user.id, store.domain, user.qualified_name)
        return self._done(
            ChangeResult("user.update", user.qualified_name, user, details={"claims": changed})
        )

    def rename_user(self, username: str, new_name: str, domain: str | None = None) -> ChangeResult:
        """Give a user another name in its userstore (id, claims, roles kept); its
        identity providers rename the account (see the engine)."""
        store, name = self.service.resolve(username, domain)
        new_store, new_bare = self.service.in_domain_of(store, new_name)
        if new_store is not store:
            raise UsageError("a user cannot be renamed into another domain")
        policy.check_username(store.config.policy, new_bare, store.domain)
        recorded = replacing = None
        if not store.transactional:
            recorded = self.service.state.directory_writes.find(store.domain, "rename", name)
            if recorded is not None:  # not while the process that recorded it runs
                recorded = self._take_over(store, recorded)
        try:
            before = self.service.get_user(name, store.domain)
        except NotFoundError:  # the same rename, recorded, cut off after the store renamed it?
            unfinished = _unfinished(store, recorded, name, new_bare)
            if unfinished is None or recorded is None:
                raise
            before = unfinished
        else:  # the user is still named so: a rename from the start
            recorded, replacing = None, recorded
        if before.username == new_bare:
            return self._done(ChangeResult("user.rename", before.qualified_name, before, False))
        reports = self._reports_of(store, before.username)
        self.begin(store)
        if recorded is not None:
            user, write = store.finish_rename(recorded.name, new_bare, before.id), recorded
        elif store.transactional:
            user, write = store.rename_user(name, new_bare), None
        else:
            write = self._directory_write(  # the name as stored: a re-run may spell it otherwise
                store, "rename", before.username, new_bare, before.id, replacing=replacing
            )
            user = self._in_store(store, write, lambda: store.rename_user(name, new_bare), True)
        details: dict[str, Any] = {"from": before.qualified_name}
        self.audit("user.rename", user.qualified_name, details)
        self._written(write)
        self.enqueue("user", user.id, store.domain, user.qualified_name)
        for report in reports:  # their manager follows the new name
            label = QualifiedName(store.domain, new_bare).relative_to(report.domain)
            current = new_bare if report.id == user.id else report.username  # their own
            self.update_user(current, {"manager": label}, domain=report.domain)
        if reports:
            details = {**details, "reports": sorted(r.qualified_name for r in reports)}
        return self._done(ChangeResult("user.rename", user.qualified_name, user, details=details))

    def _reports_of(self, store: UserStore, username: str) -> list[User]:
        """The users whose ``manager`` claim names ``username`` of ``store`` (see
        :func:`idprov.provisioning.managers.reports_of`)."""
        return managers.reports_of(self.service, QualifiedName(store.domain, username))

    def set_password(self, username: str, password: str, domain: str | None = None) -> ChangeResult:
        store, name = self.service.resolve(username, domain)
        user = self.service.get_user(name, store.domain)
        policy.check_password(store.config.policy, password, store.domain)
        pw_hash = store.hash_password(password)
        self.begin(store)
        store.set_password_hash(name, pw_hash)
        self.audit("user.passwd", user.qualified_name)
        self.enqueue("user", user.id, store.domain, user.qualified_name)
        self.passwords[user.id] = password
        return self._done(ChangeResult("user.passwd", user.qualified_name, user))

    def delete_user(self, username: str, domain: str | None = None) -> ChangeResult:
        """Delete a user; the users it managed lose their ``manager`` claim (see
        :meth:`_reports_of`), each an update of its own (audited, pushed, guarded).
        Where the store cannot roll back, the delete is recorded (its reports too)
        before the first of those writes, while this work's own transaction is not
        open: a re-run finishes what the record names (:meth:`_deleted`)."""
        store, name = self.service.resolve(username, domain)
        recorded = self._journaled(store, "delete", name)
        existing = store.find_user(name)
        if existing is None and recorded is not None:
            if _user_gone(store, recorded):
                return self._deleted(store, recorded)
            self._forget(recorded)  # the user of that id lives on (renamed since)
        if existing is None:
            self.begin(store)
            store.delete_user(name)  # NotFoundError
            raise NotFoundError(f"no user {name!r} in the {store.domain} userstore")
        reports = self._reports_of(store, existing.username)
        same = recorded is not None and recorded.entry_id == existing.id
        earlier = recorded if same else None
        left = _report_names(earlier)
        write = None
        if not store.transactional:
            named = _merged_pairs(left, [(r.domain, r.username) for r in reports])
            write = self._directory_write(
                store,
                "delete",
                existing.username,
                existing.username,
                existing.id,
                roles=_merged(earlier.roles if earlier else [], existing.roles),
                details={"reports": [list(pair) for pair in named]},
                replacing=recorded,
            )
        for report in reports:
            self.update_user(report.username, unset=["manager"], domain=report.domain)
        done = {(r.domain.casefold(), r.username.casefold()) for r in reports}
        for domain_name, report_name in left:  # taken by an earlier run, cut off
            if (domain_name.casefold(), report_name.casefold()) not in done:
                self._manager_taken(report_name, domain_name)
        self.begin(store)
        internal = self.service.internal.roles_of_user(existing.id)
        if write is None:
            user = store.delete_user(name)
        else:
            fresh = not reports and not left  # else: writes went out before it
            user = self._in_store(store, write, lambda: store.delete_user(name), fresh)
            user = replace(user, roles=_merged(write.roles, user.roles))
        return self._user_deleted(store, user, internal, write, reports)

    def _manager_taken(self, name: str, domain: str) -> User | None:
        """The ``manager`` claim of a report of a user whose recorded delete was cut off,
        taken away: by this update, or (it holds none now) by the run cut off, whose
        record names the report: then audited and pushed now. None: no such user."""
        try:
            result = self.update_user(name, unset=["manager"], domain=domain)
        except NotFoundError:
            return None  # deleted since: nothing of it to finish
        user = result.entity
        assert isinstance(user, User)
        if not result.changed:
            self.audit("user.update", user.qualified_name, {"claims": ["manager"]})
            self.enqueue("user", user.id, user.domain, user.qualified_name)
            result.changed, result.details = True, {"claims": ["manager"]}
        return user

    def _deleted(self, store: UserStore, recorded: DirectoryWrite) -> ChangeResult:
        """A recorded delete whose user is gone from ``store`` (:func:`_user_gone`): it
        was made (its answer lost, or the command stopped), and its records are
        written now, the updates of its reports finished (see :meth:`_manager_taken`)."""
        assert recorded.entry_id is not None
        reports = [
            user
            for domain, name in _report_names(recorded)
            if (user := self._manager_taken(name, domain)) is not None
        ]
        user = User(recorded.entry_id, store.domain, recorded.name, roles=list(recorded.roles))
        internal = self.service.internal.roles_of_user(user.id)
        return self._user_deleted(store, user, internal, recorded, reports)

    def _user_deleted(
        self,
        store: UserStore,
        user: User,
        internal: Sequence[Role],
        write: DirectoryWrite | None,
        reports: Sequence[Any],
    ) -> ChangeResult:
        """The records of a user deleted from ``store``: its internal roles forgotten,
        its audit entry, its outbox rows and its groups'."""
        self.begin()
        self.service.internal.forget_user(user.id)
        for role in internal:
            self.enqueue("role", role.id, INTERNAL, role.qualified_name)
        self.audit(
            "user.delete",
            user.qualified_name,
            {"roles": [*user.roles, *(r.qualified_name for r in internal)]},
        )
        self._written(write)
        self._offboarding.add(user.id)
        self.enqueue("user", user.id, store.domain, user.qualified_name)
        for role_name in user.roles:
            self._enqueue_role(store, role_name)
        details = {"reports": sorted(r.qualified_name for r in reports)} if reports else {}
        return self._done(ChangeResult("user.delete", user.qualified_name, user, details=details))

    def set_roles(
        self, username: str, roles: Sequence[str], domain: str | None = None
    ) -> ChangeResult:
        """Give the user exactly ``roles`` of its domain (which exist): one change."""
        store, name = self.service.resolve(username, domain)
        user = self.service.get_user(name, store.domain)
        wanted = {self.service.same_domain_role(store, r).casefold(): r for r in roles}
        held = {r.casefold(): r for r in user.roles if "/" not in r}
        added = [r for k, r in wanted.items() if k not in held]
        removed = [r for k, r in held.items() if k not in wanted]
        if not added and not removed:
            return self._done(ChangeResult("user.roles", user.qualified_name, user, False))
        self.begin(store)
        for role in added:
            store.assign(role, [name])
        for role in removed:
            store.unassign(role, [name])
        for role in [*added, *removed]:
            self._enqueue_role(store, role, [(store.domain, user.id)])
        self.audit("user.roles", user.qualified_name, {"added": added, "removed": removed})
        if removed:  # it may leave an IdP's scope: an offboarding
            self._offboarding.add(user.id)
        self.enqueue("user", user.id, store.domain, user.qualified_name)
        after = self.service.get_user(name, store.domain)
        details = {"added": added, "removed": removed}
        return self._done(ChangeResult("user.roles", user.qualified_name, after, True, details))

    def set_external_id(
        self, application: str, kind: str, local_id: str, value: str | None
    ) -> None:
        """Keep (None: drop) the ``externalId`` an application's SCIM client gave."""
        self.begin()
        self._external_ids().set(application, kind, local_id, value)

    def forget_external_ids(self, kind: str, local_id: str) -> None:
        """Drop every application's externalId of a deleted user or role."""
        self.begin()
        self._external_ids().forget(kind, local_id)

    def link_login(self, idp: str, subject: str, domain: str, user_id: str) -> None:
        """Link a federated login (IdP, subject) to the local user it is."""
        from idprov.provisioning.jit_links import JitLinks

        self.begin()
        JitLinks(self.service.state.db).link(idp, subject, domain, user_id)

    def _external_ids(self) -> ExternalIds:
        from idprov.provisioning.external_ids import ExternalIds

        return ExternalIds(self.service.state.db)

    def import_users(
        self, store: UserStore, users: Sequence[ImportedUser], details: dict[str, Any], label: str
    ) -> None:
        """Write one batch of a bulk import: the users, their roles, one audit entry
        (``user.import`` of ``label``), and their outbox rows."""
        internal = self._take_internal_roles(users)
        self.begin(store)
        store.import_users(users)  # before any record: see begin()
        refused = [u.username for u in users if u.refused is not None]
        users = [u for u in users if u.refused is None]  # a directory refused these alone
        details = {**details, "refused": refused} if refused else details
        self.audit("user.import", label, {"domain": store.domain, **details})
        self._set_internal_roles(store, internal)
        targets = bool(self.service.targets())
        for user in users:  # a row disabling a user, or setting its roles: an offboarding
            offboarded = user.existing and (user.roles is not None or not is_active(user.claims))
            if offboarded:  # (the import's batches are judged together: no row slips out)
                self._offboarding.add(user.id)
            if targets or offboarded:  # else only at the IdPs of the user's ledger
                label = str(QualifiedName(store.domain, user.username))
                self.enqueue("user", user.id, store.domain, label)
        touched = _Touched(store.domain, users)  # (without targets: untracked everywhere)
        for key, role in {r.casefold(): r for u in users for r in (u.roles or [])}.items():
            self._enqueue_role(store, role, touched.named(key))
        self._enqueue_roles_left(store, users, touched)

    def _enqueue_roles_left(
        self, store: UserStore, users: Sequence[ImportedUser], touched: _Touched
    ) -> None:
        """Queue the groups that existing users whose roles an import set may have left:
        those the ledger says idprov put them in at the targets (a role a row no longer
        names goes out with the import's push, as `role unassign` does; the ledger, not
        the roles read before the write, so that a re-run of a killed import, whose
        users hold their new roles already, still queues them). Internal roles are
        queued by :meth:`_set_internal_roles`."""
        setting = [u.id for u in users if u.existing and u.roles is not None]
        if not setting:
            return
        kept = {r.casefold() for u in users for r in (u.roles or [])}
        ledger = self.service.state.ledger
        targets = self.service.targets()
        everywhere = [i.name for i in self.service.config.identity_providers]
        holding = ledger.groups_holding(targets, setting) if targets else set()
        elsewhere = ledger.groups_holding(everywhere, setting) - holding if everywhere else set()
        for role_id in sorted(holding):
            role = store.find_role_by_id(role_id)
            if role is not None and role.name.casefold() not in kept:
                members = touched.left()
                self.enqueue("role", role.id, store.domain, role.qualified_name, members=members)
        self._untracked(sorted(elsewhere), targets)  # groups of other applications' IdPs

    def _take_internal_roles(
        self, users: Sequence[ImportedUser]
    ) -> list[tuple[ImportedUser, list[str]]]:
        """Take the internal roles (``Internal/NAME``, as `export users` writes them) out
        of each imported user's roles: each user whose roles the import sets, with their
        bare names (the store keeps the others; it may give a new user another id, so
        the ids are read after its import)."""
        internal = []
        for user in users:
            if user.roles is None:
                continue
            names = [self.service.internal_name(r, "") for r in user.roles]
            internal.append((user, [n for n in names if n is not None]))
            user.roles = [r for r, n in zip(user.roles, names, strict=True) if n is None]
        return internal

    def _set_internal_roles(
        self, store: UserStore, internal: list[tuple[ImportedUser, list[str]]]
    ) -> None:
        """Make imported users' internal roles exactly those their rows name (an import
        sets a user's roles), one audited change per role."""
        internal = [(u, names) for u, names in internal if u.refused is None]
        if not internal:
            return
        held = self.service.internal.roles_of([u.id for u, _ in internal])
        changes: dict[tuple[str, bool], list[User]] = {}
        for user, names in internal:
            wanted = {n.casefold(): n for n in names}
            has = {r.split("/", 1)[1].casefold(): r.split("/", 1)[1] for r in held.get(user.id, [])}
            member = User(user.id, store.domain, user.username)
            for key in wanted.keys() - has.keys():
                changes.setdefault((wanted[key], True), []).append(member)
            for key in has.keys() - wanted.keys():
                changes.setdefault((has[key], False), []).append(member)
        if not changes:
            return
        self.begin()
        for (name, assign), members in sorted(changes.items()):
            internal_roles = self.service.internal
            done = (
                internal_roles.assign(name, members)
                if assign
                else internal_roles.unassign(name, members)
            )
            if done:
                role = internal_roles.get(name)
                self.audit(
                    "role.assign" if assign else "role.unassign",
                    role.qualified_name,
                    {"users": done},
                )
                self.enqueue("role", role.id, INTERNAL, role.qualified_name)

    def imported_through(self, import_id: int, last_line: int) -> None:
        """The import journal: every line up to ``last_line`` is written."""
        self.begin()
        self.service.state.imports.written(import_id, last_line)

    # ---- roles
    def add_role(self, name: str, domain: str | None = None) -> ChangeResult:
        if (internal := self.service.internal_name(name, domain)) is not None:
            policy.check_role_name(self.service.store().config.policy, internal, INTERNAL)
            return self._internal_change("role.add", lambda: self.service.internal.add(internal))
        store, bare = self.service.resolve(name, domain)
        policy.check_role_name(store.config.policy, bare, store.domain)
        self.begin(store)
        role = store.add_role(bare)
        self._created.add(role.id)
        self.audit("role.add", role.qualified_name)
        self.enqueue("role", role.id, store.domain, role.qualified_name)
        return self._done(ChangeResult("role.add", role.qualified_name, role))

    def delete_role(self, name: str, domain: str | None = None) -> ChangeResult:
        if (internal := self.service.internal_name(name, domain)) is not None:
            members = self.service.role_members(INTERNAL, self.service.internal.get(internal).id)
            self._offboarding.update(user_id for _, user_id in members)  # as below
            return self._internal_change(
                "role.delete", lambda: self.service.internal.delete(internal), members
            )
        store, bare = self.service.resolve(name, domain)
        recorded = self._journaled(store, "role_delete", bare)
        self.begin(store)
        found = store.find_role(bare, with_members=not store.transactional)
        if found is None and recorded is not None:  # made, its answer lost?
            role, member_ids, write = self._role_deleted(store, recorded)
        elif found is None:
            role, member_ids, write = store.delete_role(bare), [], None  # NotFoundError
        else:
            member_ids = store.role_member_ids(found.id)
            role, write = self._recorded_change(
                store,
                "role_delete",
                found.name,
                lambda: store.delete_role(bare),
                found.id,
                recorded,
                details={"members": found.members or [], "member_ids": member_ids},
            )
        self.audit("role.delete", role.qualified_name, {"members": role.members or []})
        self._written(write)
        self._offboarding.update(member_ids)  # they may leave an IdP's scope
        self._enqueue_ids(store, member_ids)
        self.enqueue("role", role.id, store.domain, role.qualified_name)
        return self._done(ChangeResult("role.delete", role.qualified_name, role))

    def rename_role(self, name: str, new_name: str, domain: str | None = None) -> ChangeResult:
        if (internal := self.service.internal_name(name, domain)) is not None:
            new = QualifiedName.parse(new_name, INTERNAL).name
            policy.check_role_name(self.service.store().config.policy, new, INTERNAL)
            members = self.service.role_members(INTERNAL, self.service.internal.get(internal).id)
            self._keeps_scope(
                f"{INTERNAL}/{internal}",
                f"{INTERNAL}/{new}",
                lambda: self.service.users_by_id(members).values(),
            )
            result = self._internal_change(
                "role.rename", lambda: self.service.internal.rename(internal, new), members
            )
            result.details = {"from": internal}
            return result
        store, bare = self.service.resolve(name, domain)
        new_store, new_bare = self.service.in_domain_of(store, new_name)
        if new_store is not store:
            raise UsageError("a role cannot be renamed into another domain")
        policy.check_role_name(store.config.policy, new_bare, store.domain)
        recorded = self._journaled(store, "role_rename", bare)
        try:
            current = self.service.get_role(bare, store.domain)
        except NotFoundError:  # the same rename, recorded, its answer lost?
            moved = _renamed_role(store, recorded, new_bare)
            if moved is None or recorded is None:
                raise
            self.begin(store)
            role = store.finish_role_rename(recorded.name, moved.name, moved.id)
            write: DirectoryWrite | None = recorded
        else:

            def held() -> list[User]:
                users = list(store.find_users_by_id(store.role_member_ids(current.id)).values())
                return self.service.directory.with_internal_roles(users)

            self._keeps_scope(current.name, new_bare, held, store.domain)
            self.begin(store)
            role, write = self._recorded_change(
                store,
                "role_rename",
                current.name,
                lambda: store.rename_role(bare, new_bare),
                current.id,
                recorded,
                new_name=new_bare,
            )
        self.audit("role.rename", role.qualified_name, {"from": bare})
        self._written(write)
        self._enqueue_ids(store, store.role_member_ids(role.id))
        self.enqueue("role", role.id, store.domain, role.qualified_name)
        return self._done(
            ChangeResult("role.rename", role.qualified_name, role, details={"from": bare})
        )

    def _keeps_scope(
        self,
        old: str,
        new: str,
        members: Callable[[], Iterable[User]],
        domain: str | None = None,
    ) -> None:
        """Refuse a role rename that takes members out of an identity provider's scope
        (its ``provisioning_roles`` names the old name, not the new one), which would
        deprovision them there, unless the deletion guard was told to let that many
        through (``--yes --allow-deletes N``): a rename reads as harmless, and under
        the guard's minimum it went through silently (every account of a small target
        deleted)."""
        from idprov.errors import GuardError
        from idprov.provisioning.decide import in_scope
        from idprov.provisioning.guard import as_recorded

        idps = [idp for idp in self.service.config.identity_providers if idp.enabled]
        was = as_recorded(self.service.outbound, idps)  # a change of scope not synced yet
        scoping = [
            idp
            for idp in idps
            if (in_scope(idp, [old], domain) or in_scope(was[idp.name], [old], domain))
            and not in_scope(idp, [new], domain)
        ]
        if not scoping:
            return  # the members are read only where the rename can take them out
        held = list(members())
        leaving: dict[str, int] = {}
        for idp in scoping:
            gone = [
                u
                for u in held
                if (in_scope(idp, u.roles, u.domain) or in_scope(was[idp.name], u.roles, u.domain))
                and not in_scope(
                    idp, [r for r in u.roles if r.casefold() != old.casefold()], u.domain
                )
            ]
            if gone:
                leaving[idp.name] = len(gone)
        most = max(leaving.values(), default=0)
        if most and (self.service.allow_deletes or 0) < most:
            where = ", ".join(f"{n} ({c})" for n, c in sorted(leaving.items()))
            raise GuardError(
                f"renaming role {old!r} to {new!r} takes members out of the scope of {where}: "
                f"provisioning_roles names {old!r}, not {new!r}, so they would be "
                "deprovisioned there; nothing was changed",
                hint=f"add {new!r} to provisioning_roles of those identity providers first; or, "
                f"to deprovision them, run the command again with --yes --allow-deletes {most}",
                tripped=dict(leaving),
            )

    def _enqueue_ids(self, store: UserStore, user_ids: Sequence[str]) -> None:
        if self.service.targets():
            self._enqueue_users(store, store.find_users_by_id(list(user_ids)).values())

    def _enqueue_users(self, store: UserStore, users: Iterable[User]) -> None:
        self.enqueue_many("user", [(u.id, store.domain, u.qualified_name) for u in users])

    def assign(self, role: str, users: Sequence[str], domain: str | None = None) -> ChangeResult:
        """Make ``users`` members of ``role``; those already members are left as they are."""
        return self._membership("role.assign", role, users, domain, assign=True)

    def unassign(self, role: str, users: Sequence[str], domain: str | None = None) -> ChangeResult:
        return self._membership("role.unassign", role, users, domain, assign=False)

    def _membership(
        self, action: str, role: str, users: Sequence[str], domain: str | None, assign: bool
    ) -> ChangeResult:
        if (internal := self.service.internal_name(role, domain)) is not None:
            return self._internal_membership(action, internal, users, assign)
        store, bare = self.service.resolve(role, domain)
        names = self.service.members_in(store, users, bare)
        self.begin(store)
        changed, write = self._members_changed(store, bare, names, assign)
        result = self.service.get_role(bare, store.domain)
        self._written(write)
        if changed:
            key = "users"
            self.audit(action, result.qualified_name, {key: changed})
            found: list[User] | None = None
            if self.service.targets() or not assign:  # (see enqueue: an offboarding)
                found = list(store.find_users(changed).values())
                if not assign:  # they may leave an IdP's scope: an offboarding
                    self._offboarding.update(u.id for u in found)
                self._enqueue_users(store, found)
            touched = None if found is None else [(store.domain, u.id) for u in found]
            self.enqueue("role", result.id, store.domain, result.qualified_name, members=touched)
        details = {"added" if assign else "removed": changed}
        return self._done(
            ChangeResult(action, result.qualified_name, result, bool(changed), details)
        )

    def _role_deleted(
        self, store: UserStore, recorded: DirectoryWrite
    ) -> tuple[Role, list[str], DirectoryWrite | None]:
        """A recorded delete of a role no longer in ``store``: made if no role has its
        id (its answer lost, or the command stopped): the role as recorded, its
        members' ids and the record. Else the record goes, and the store says that
        there is no such role."""
        if recorded.entry_id is not None and store.find_role_by_id(recorded.entry_id) is None:
            members = list(recorded.details.get("members", []))
            role = Role(recorded.entry_id, store.domain, recorded.name, len(members), members)
            return role, list(recorded.details.get("member_ids", [])), recorded
        self._forget(recorded)
        return store.delete_role(recorded.name), [], None  # NotFoundError

    def _members_changed(
        self, store: UserStore, role: str, names: Sequence[str], assign: bool
    ) -> tuple[list[str], DirectoryWrite | None]:
        """The store's assign (unassign) of ``names`` to ``role``: the users it made
        members (took out), and its record where the store cannot roll back. The
        record names the users the change is to add (remove); the same command run
        again after its answer was lost counts those the role's members now show
        as changed (they are what the lost change made), and changes the rest."""

        def change() -> list[str]:
            return store.assign(role, names) if assign else store.unassign(role, names)

        if store.transactional:
            return change(), None
        kind = "assign" if assign else "unassign"
        key = "\n".join([role, *sorted({n.casefold() for n in names})])
        recorded = self._journaled(store, kind, key)
        found = store.find_role(role)
        users = store.find_users(names)  # not the role's members: it may hold many
        if found is None or any(n.casefold() not in users for n in names):
            if recorded is not None:
                self._forget(recorded)
            return change(), None  # NotFoundError
        members = {k for k, u in users.items() if role.casefold() in map(str.casefold, u.roles)}
        todo = [n for n in names if (n.casefold() in members) != assign]
        made = [
            n for n in (recorded.details.get("users", []) if recorded else [])
            if (n.casefold() in members) == assign
        ]  # fmt: skip
        if not todo:
            return made, recorded
        done, write = self._recorded_change(
            store, kind, role, change, found.id, recorded, details={"users": todo}, key=key
        )
        return _merged(made, done), write

    # ---- internal roles (idprov's own, holding users of several domains)
    def _internal_change(
        self, action: str, change: Callable[[], Role], members: Sequence[tuple[str, str]] = ()
    ) -> ChangeResult:
        self.begin()
        role = change()
        self.audit(action, role.qualified_name)
        for domain, user_id in members:
            self.enqueue("user", user_id, domain, user_id)
        self.enqueue("role", role.id, INTERNAL, role.qualified_name)
        return self._done(ChangeResult(action, role.qualified_name, role))

    def _internal_membership(
        self, action: str, name: str, users: Sequence[str], assign: bool
    ) -> ChangeResult:
        """Members of any domain: ``DOMAIN/username``, bare names being PRIMARY."""
        found = [self.service.get_user(u) for u in users]
        self.begin()
        internal = self.service.internal
        changed = internal.assign(name, found) if assign else internal.unassign(name, found)
        role = internal.get(name, with_members=True)
        if changed:
            self.audit(action, role.qualified_name, {"users": changed})
            for user in found:
                if user.qualified_name in changed:
                    if not assign:  # they may leave an IdP's scope: an offboarding
                        self._offboarding.add(user.id)
                    self.enqueue("user", user.id, user.domain, user.qualified_name)
            self.enqueue("role", role.id, INTERNAL, role.qualified_name)
        key = "added" if assign else "removed"
        return self._done(
            ChangeResult(action, role.qualified_name, role, bool(changed), {key: changed})
        )


TOUCHED_PER_USER = 8
"""How many (role, user) pairs an import's batch names in its role rows, per user of
the batch, at most (see :class:`_Touched`); beyond, its role rows compare every member."""


class _Touched:
    """The users (domain, id) whose membership of each role an import's batch may have
    changed, for its role rows (see :meth:`UnitOfWork.enqueue`): those naming the role,
    and the existing users whose roles the batch sets (they may have left it). A role
    whose users would pass the batch's budget (:data:`TOUCHED_PER_USER`: an upsert
    setting the roles of many users of many roles) names none: its push compares every
    member."""

    def __init__(self, domain: str, users: Sequence[ImportedUser]) -> None:
        self._setting = [(domain, u.id) for u in users if u.existing and u.roles is not None]
        self._naming: dict[str, list[tuple[str, str]]] = {}
        for user in users:
            for key in {r.casefold() for r in user.roles or []}:
                self._naming.setdefault(key, []).append((domain, user.id))
        self._budget = TOUCHED_PER_USER * len(users)

    def named(self, key: str) -> list[tuple[str, str]] | None:
        """Those of role ``key`` (case-folded), which the batch's users name."""
        return self._spend([*self._naming.get(key, []), *self._setting])

    def left(self) -> list[tuple[str, str]] | None:
        """Those of a role no user of the batch names (existing users may have left it)."""
        return self._spend(self._setting)

    def _spend(self, users: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        if len(users) > self._budget:
            return None
        self._budget -= len(users)
        return users


@dataclass(frozen=True)
class _Add:
    """What a user add asks for."""

    claims: Mapping[str, ClaimValue]
    pw_hash: str | None
    password: str | None = field(repr=False)
    roles: Sequence[str]
    origin: str

    @property
    def digest(self) -> str:
        """What a record of the add keeps of it (no password, only whether one)."""
        asked = {
            "claims": dict(self.claims),
            "roles": sorted(r.casefold() for r in self.roles),
            "password": self.pw_hash is not None,
            "origin": self.origin,
        }
        text = json.dumps(asked, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


_RUNNING: set[str] = set()
"""The owners of the directory writes this process is making (see
:meth:`UnitOfWork._owner`)."""

OWNER_LEASE_SECONDS = 900.0
"""How long a recorded directory write is its owner's when idprov cannot tell whether
that process runs (on another machine): then another may take it over."""


def cut_off(state: StateStore, domains: Mapping[str, str]) -> list[str]:
    """What changes to a directory were cut off half-way and not finished since (no
    process makes them any more), said for `idprov status`: while any is recorded,
    group pushes compare every member (see
    :meth:`~idprov.provisioning.state.StateStore.writes_unfinished`). An import's
    batch is told whether it runs or not (its record names no process). ``domains``:
    the configured name of each domain, by its case-folded name."""
    said = [
        f"{write.kind} of {domains.get(domain, domain)}/{write.name}"
        f" (started {write.started_at[:19]})"
        for domain, write in state.directory_writes.recorded()
        if _abandoned(write)
    ]
    said += [
        f"import of {path} (started {at[:19]}), lines {first}-{last}, unless it is running"
        for path, at, first, last in state.imports.half_written()
    ]
    return said


def _abandoned(write: DirectoryWrite) -> bool:
    """Whether no process makes the recorded ``write`` any more: this process's, and
    not running; another process of this machine that is gone
    (:func:`~idprov.provisioning.outbound.holder_gone`); one whose lease ran out; or
    a record of an earlier version, which names no owner."""
    if write.owner in _RUNNING:
        return False
    host, _, rest = write.owner.partition(":")
    if not write.owner or (host, rest.partition(":")[0]) == (
        socket.gethostname(),
        str(os.getpid()),
    ):
        return True
    return holder_gone(write.owner) or _older_than(write.owned_at, OWNER_LEASE_SECONDS)


def _older_than(stamp: str, seconds: float) -> bool:
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return True
    return (clock() - at).total_seconds() > seconds


_T = TypeVar("_T")

_WRITES = {
    "add": ("add", "user"),
    "rename": ("rename", "user"),
    "update": ("update", "user"),
    "delete": ("delete", "user"),
    "role_rename": ("rename", "role"),
    "role_delete": ("delete", "role"),
    "assign": ("assignment", "role"),
    "unassign": ("unassignment", "role"),
}
"""Each kind of recorded directory write as messages name it: what, and of what."""


def _digest(asked: Mapping[str, Any]) -> str:
    """What a recorded write asked for, digested (a re-run asking for the same finds it)."""
    text = json.dumps(asked, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _merged(first: Iterable[str], then: Iterable[str]) -> list[str]:
    """The names of ``first``, then those of ``then`` not in it (names match in any case)."""
    merged: dict[str, str] = {}
    for name in [*first, *then]:
        merged.setdefault(name.casefold(), name)
    return list(merged.values())


def _report_names(recorded: DirectoryWrite | None) -> list[tuple[str, str]]:
    """The (domain, username) of the reports a recorded delete names."""
    if recorded is None:
        return []
    return [(domain, name) for domain, name in recorded.details.get("reports", [])]


def _merged_pairs(
    first: Iterable[tuple[str, str]], then: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(domain, name) pairs of ``first``, then those of ``then`` not in it (any case)."""
    merged: dict[tuple[str, str], tuple[str, str]] = {}
    for domain, name in [*first, *then]:
        merged.setdefault((domain.casefold(), name.casefold()), (domain, name))
    return list(merged.values())


def _user_gone(store: UserStore, recorded: DirectoryWrite) -> bool:
    """Whether the user a recorded delete was deleting is gone (no user has its id)."""
    return recorded.entry_id is not None and store.find_user_by_id(recorded.entry_id) is None


def _renamed_role(store: UserStore, recorded: DirectoryWrite | None, new_name: str) -> Role | None:
    """The role a recorded rename to ``new_name`` moved, if the store shows it made (the
    role of the recorded id is named so now)."""
    if recorded is None or recorded.entry_id is None:
        return None
    if recorded.new_name.casefold() != new_name.casefold():
        return None
    role = store.find_role_by_id(recorded.entry_id)
    return role if role is not None and role.name.casefold() == new_name.casefold() else None


def _busy(store: UserStore, write: DirectoryWrite | None, kind: str, name: str) -> LockedError:
    """The error of a directory write that another process is making."""
    what, of = _WRITES.get(kind, (kind, "user"))
    doing = f"{'an' if what[0] in 'aeiou' else 'a'} {what} of {of} {name!r}"
    owner = f" ({write.owner}, since {write.owned_at})" if write is not None else ""
    minutes = int(OWNER_LEASE_SECONDS // 60)
    return LockedError(
        f"{doing} in the {store.domain} userstore is being made by another idprov process{owner}",
        hint="let it finish, then see the user with `idprov user show`; if that process "
        "stopped, run the same command again (a process of another machine is taken for "
        f"stopped {minutes} minutes after it took the {what} on)",
    )


def _label(domain: str, write: DirectoryWrite) -> str:
    """A recorded write as a message names it: ``add of user CORP/ann``."""
    what, of = _WRITES.get(write.kind, (write.kind, "user"))
    label = f"{what} of {of} {domain}/{write.name}"
    return f"{label} to {write.new_name}" if what == "rename" else label


def _same_roles(a: Iterable[str], b: Iterable[str]) -> bool:
    return {r.casefold() for r in a} == {r.casefold() for r in b}


def _unfinished(
    store: UserStore, recorded: DirectoryWrite | None, name: str, new_name: str
) -> User | None:
    """The user a recorded rename of ``name`` to ``new_name`` moved, if it was cut off
    after the store renamed it (the user under the new name is the recorded one)."""
    if recorded is None or recorded.entry_id is None:
        return None
    if recorded.new_name.casefold() != new_name.casefold():
        return None
    return store.unfinished_rename(name, new_name, recorded.entry_id)
