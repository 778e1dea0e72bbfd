"""Planning a role's row: its group at the target (create, rename, members, delete).

Part of the engine (a mixin of :class:`~idprov.provisioning.engine.Engine`). A group
is created with the members that are provisioned already; members whose own push
failed are named in the row's error, so that it is retried with them.

A member the group needs (in the IdP's scope, enabled) that was never pushed there
at all — no ledger entry, no row of its own at that IdP: a JIT login's user goes
only to IdPs with ``jit: true`` — or whose account the ledger says is lost there
(:meth:`~idprov.provisioning.ledger.Ledger.mark_lost`) and that has no row of its
own, is brought along by :meth:`RolePlanning._members_first` before any role is
planned: a row of its own at that IdP, made and claimed by the drain, which then
pushes it with the users, before the roles, as it pushes a ``user add --role``'s
two rows. Its push is the user planner's, a create (nothing of the user's is at
that IdP that it could change or destroy, so the deletion guard has nothing to
judge in it).

A lost account is named in no group push until it is made again: a group that the
ledger says holds it is left so (made again, it takes its dead id's place there);
any other is pushed without it, and its row fails naming it, to be retried.

A member whose own row another drainer holds (its create under way in another
process: concurrent ``user add --role`` on a shared PostgreSQL state) is waited for,
a while, before the roles are planned (:meth:`RolePlanning._await_members`), so that
the group is pushed with it instead of failing until the next retry.

A row whose every change named the users it touched (a role assign, a user's roles
set, an import's batch: :attr:`~idprov.provisioning.outbox.OutboxRow.members_delta`)
compares the group with the role for those users alone, where nothing else can have
moved since a push compared every member (:meth:`RolePlanning._compared`): the group
is idprov's and active, no change of mapping moves it, and no change of its members
went without a row to that IdP (another application's, a JIT login's, a discarded
row's: see :meth:`~idprov.provisioning.outbox.Outbox.untracked`), its last whole
compare was under the IdP's scope as it is now, and no change to a directory is
recorded as cut off half-way. A user made or enabled again at the IdP is named in its
groups' rows as its push is recorded (:meth:`RolePlanning._note_joined`). An import
into one role of 90,000 users re-read all of them for each batch of 5,000. Any other
change, a failed push's retry, a held row's release and a sync compare every member;
so does a group found deleted at the target, planned again whole in the same drain
(:class:`Replan`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import (
    Connector,
    GroupSpec,
    RemoteConflict,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
)
from idprov.db import now
from idprov.provisioning.decide import (
    RoleDecision,
    compared_in_part,
    decide_role,
    group_member,
    group_target,
    role_pushed,
)
from idprov.provisioning.discard import stop_role
from idprov.provisioning.guard import scope_key
from idprov.provisioning.ledger import RefusedCreate
from idprov.provisioning.results import Attempt, OperationResult
from idprov.provisioning.retry import with_retries
from idprov.provisioning.tasks import Planned, Planning, Settled, Task, ledger_entry

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.model import Role, User
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.outbox import Kind, OutboxRow
    from idprov.provisioning.remote_accounts import RemoteAccounts

RoleRead = tuple["Role | None", list[tuple[str, str]]]
"""A role as the directory holds it (None: gone), and its members (domain, user id)."""

MEMBER_WAIT_SECONDS = 60.0
"""How long the roles of a drain wait, at most, for members' own rows that another
drainer holds (their creates under way in another process)."""
MEMBER_POLL_SECONDS = 0.1


@dataclass
class MemberChanges:
    """The membership changes of one group push that the target acknowledged, over
    every attempt, whether or not the push succeeded in the end (a Salesforce user
    refused as inactive, one Google ``members.insert`` refused): what the ledger must
    record, so that a later unassign or role delete takes those members out, and what
    a repeat need not send again. ``group``: the group they were made in (None:
    none yet); ``ours``: whether idprov made that group (a create that failed after
    the group was made)."""

    group: str | None = None
    ours: bool = True
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)

    def change(
        self, connector: Connector, group: str, add: Sequence[str], remove: Sequence[str]
    ) -> None:
        """``connector.change_members`` with what is not done yet in ``group``; what
        the target acknowledged is noted, also when the call fails."""
        self.at(group)
        todo_add = [r for r in add if r not in self.added]
        todo_remove = [r for r in remove if r not in self.removed]
        try:
            connector.change_members(group, todo_add, todo_remove)
        except TargetError as exc:
            self.failed(exc)
            raise
        self.added.update(todo_add)
        self.removed.update(todo_remove)

    def failed(self, exc: TargetError, ours: bool | None = None) -> None:
        """Note what ``exc``, a failed membership change or group create, says was done."""
        done = exc.members_done
        if done is None:
            return
        self.at(done.group, ours)
        self.added.update(done.added)
        self.removed.update(done.removed)
        self.added.difference_update(done.removed)
        self.removed.difference_update(done.added)

    def at(self, group: str, ours: bool | None = None) -> None:
        """Changes in ``group`` (what was noted of another group is dropped)."""
        if group != self.group:
            self.group, self.added, self.removed = group, set(), set()
        if ours is not None:
            self.ours = ours

    def users(self, remote: dict[str, str]) -> tuple[list[str], list[str]]:
        """(added, removed) as local user ids, given user id -> remote id."""
        local = {rid: user_id for user_id, rid in remote.items()}
        return (
            sorted(local[r] for r in self.added if r in local),
            sorted(local[r] for r in self.removed if r in local),
        )


@dataclass(frozen=True)
class Replan:
    """What a role's push returns when the part of its members it compared found the
    group deleted at the target: the engine plans the row again, whole (the group is
    made again with every member), recording nothing of this try."""


@dataclass(frozen=True)
class GroupMove:
    """A role's members to move from the group they were given (``was``) to the one
    the configuration maps the role to now (``target``)."""

    provisioned: dict[str, str]
    """User id -> remote id of the members the new group gets."""
    current: set[str]
    """The members idprov put in the old group."""
    waiting: list[tuple[str, str]]
    target: str
    was: str

    def missing(self, name: str, idp: str) -> TargetError:
        """The new group is not at the target (a misspelt name): nothing is moved."""
        return unmapped(name, idp, self.target, self.was)


def unmapped(name: str, idp: str, target: str, was: str) -> TargetError:
    """Role ``name`` is mapped to ``target``, which ``idp`` does not have (a misspelt
    name): its members keep ``was``, nothing is taken away."""
    fix = (
        f"check options.roles of identity provider {idp}, then `idprov outbox retry` (or "
        "`idprov sync`)"
    )
    return TargetError(
        f"role {name!r} is now mapped to {target} at {idp}, which is not there: its members "
        f"keep {was} until it is ({fix})",
        hint=fix,
    )


class RolePlanning(Planning):
    """The role half of the engine."""

    owners: list[str]
    _stopped: dict[str, str]
    _roles_read: dict[tuple[str, str], RoleRead]
    """Roles and their members read for this drain, by (domain, role id): once for
    :meth:`_members_first` and the planning after it, whichever IdPs the role goes to."""
    _gone: dict[str, dict[str, tuple[str, str, str]]]
    """IdP -> the roles (local id, domain, label) whose groups were made again without
    members whose accounts the target had lost too (:meth:`_lose_members`)."""
    _remade: dict[str, dict[str, tuple[str, str, str]]]
    """IdP -> those members (local id, domain, label), to be made again in this drain."""
    _unprovisioned: dict[int, set[str]]
    """Role row id -> its members that were not provisioned at its IdP when the drain
    began (read by :meth:`_members_first`, for :meth:`_await_members`)."""
    _touched: dict[int, list[tuple[str, str]]]
    """Role row id -> the users its changes touched (rows with
    :attr:`~idprov.provisioning.outbox.OutboxRow.members_delta`), read once."""
    _whole: set[int]
    """Role rows this drain compares whole, whatever their changes touched: those whose
    partial push found their group gone (:class:`Replan`), and every one while a change
    to a directory is recorded unfinished (:meth:`_read_untracked`)."""
    _replan: list[OutboxRow]
    """Role rows whose compared part found their group deleted at the target: planned
    again, whole, in this drain (the group is made again with every member)."""
    _untracked: dict[tuple[str, str], int]
    """(IdP, role id) -> the changes of its members that no row there carried, read
    before any member of the drain's role rows (see
    :meth:`~idprov.provisioning.outbox.Outbox.untracked`)."""
    _in_part: set[int]
    """Role rows whose push compares only the members their changes touched."""
    _roles_named: dict[tuple[str, str], Role | None]
    """Roles by (domain, name), case-folded, read once in this drain (None: none, or
    unreadable now: its own row or a sync brings it)."""
    _unreadable: set[tuple[str, str]]
    """Of those, the ones whose read failed."""

    def _accounts(self, idp: str) -> RemoteAccounts:
        raise NotImplementedError

    # one remote group, one local role: the engine's, as for users (see plan_users)
    def _know_holders(self, row: OutboxRow) -> None:
        raise NotImplementedError

    def _claim(
        self, idp: str, remote_id: str, local_id: str, take: bool, kind: str = "user"
    ) -> str | None:
        raise NotImplementedError

    def _shared_with(self, row: OutboxRow, entry: LedgerEntry | None) -> LedgerEntry | None:
        raise NotImplementedError

    def _refused(
        self, refusal: RefusedCreate, row: OutboxRow, idp: IdentityProviderConfig, stop: str
    ) -> TargetError:
        raise NotImplementedError

    def _fan_out(self, idp: str, fn: Callable[[str], object], items: list[str]) -> None:
        raise NotImplementedError

    def _row_read(self, row: OutboxRow, among: list[tuple[str, str]] | None) -> RoleRead:
        """``row``'s role, and its members: those among ``among`` alone when given
        (:meth:`_compared`), else every one."""
        if among is None:
            return self._role_read(row.domain, row.local_id)
        role = self._role(row)
        key = (row.domain, f"{row.local_id}\x00{row.id}\x00{len(among)}")  # among only grows
        if key not in self._roles_read:
            refs = self.directory.role_members_among(row.domain, row.local_id, among)
            self._roles_read[key] = (role, refs if role is not None else [])
        return self._roles_read[key]

    def _role(self, row: OutboxRow) -> Role | None:
        """``row``'s role, read once in this drain."""
        key = (row.domain, f"{row.local_id}\x00")
        if (row.domain, row.local_id) in self._roles_read:
            return self._roles_read[(row.domain, row.local_id)][0]
        if key not in self._roles_read:
            self._roles_read[key] = (self.directory.role_by_id(row.domain, row.local_id), [])
        return self._roles_read[key][0]

    def _compared(self, row: OutboxRow) -> list[tuple[str, str]] | None:
        """The users (domain, id) whose membership ``row``'s push compares, when it
        may compare only those (see :attr:`~idprov.provisioning.outbox.OutboxRow.members_delta`):
        those its changes touched, and those this drain made or enabled again at its
        IdP (they join their groups); None: every member. Only a group that
        :func:`~idprov.provisioning.decide.compared_in_part` allows, that no user's
        push found deleted, and whose members no change left untracked at that IdP,
        is compared in part: every other push (a create, a move, a group made again,
        a scope widened) needs all its members."""
        if not row.members_delta or row.kind != "role" or row.id in self._whole:
            return None
        if self._untracked.get((row.idp, row.local_id)) != 0:  # (unread: a row brought later)
            return None
        if any(e.idp == row.idp and e.local_id == row.local_id for e in self._lost):
            return None
        role = self._role(row)
        if role is None:
            return None
        target = group_target(self.outbound.connector(row.idp), role.qualified_name)
        scope = scope_key(self.outbound.idp(row.idp))
        if not compared_in_part(self._entry(row), target, scope):
            return None
        if row.id not in self._touched:
            self._touched.update(self.outbound.state.outbox.touched([row.id]))
        made = [(u.domain, u.id) for r, u in self._made if r.idp == row.idp]
        return list(dict.fromkeys([*self._touched[row.id], *made]))

    def _read_untracked(self, rows: Sequence[OutboxRow]) -> None:
        """Read, before any of their members, the changes no row carried of role
        ``rows``' groups (see :attr:`_untracked`); while a directory write is recorded
        unfinished (:meth:`~idprov.provisioning.state.StateStore.writes_unfinished`),
        every one compares whole."""
        pairs = [(r.idp, r.local_id) for r in rows if r.kind == "role"]
        if not pairs:
            return
        self._untracked.update(self.outbound.state.outbox.untracked_of(pairs))
        if self.outbound.state.writes_unfinished():
            self._whole.update(r.id for r in rows if r.kind == "role")

    def _tracked(self, row: OutboxRow) -> None:
        """``row``'s push went through comparing every member of its group: the changes
        no row carried there, counted before its members were read, are in it now."""
        if row.kind != "role" or row.id in self._in_part:
            return
        if changes := self._untracked.get((row.idp, row.local_id)):
            self.outbound.state.outbox.tracked(row.idp, row.local_id, changes)

    def _role_read(self, domain: str, role_id: str) -> RoleRead:
        key = (domain, role_id)
        if key not in self._roles_read:
            role = self.directory.role_by_id(domain, role_id)
            refs = self.directory.role_members(domain, role.id) if role is not None else []
            self._roles_read[key] = (role, refs)
        return self._roles_read[key]

    def _members_first(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        """The own rows of the members that role ``rows``' groups need at their IdPs
        but that were never pushed there (see the module's doc), made and claimed
        under this drain's name in one short transaction, to be drained with the
        users before the roles. A member with any ledger entry at that IdP, or a row
        of its own there (pending, failed, or another drainer's), is left to that:
        the role's row names it if it is still missing when the group is pushed. A
        role that cannot be read is skipped here (its own planning says why)."""
        wanted: dict[str, dict[str, tuple[str, str, str]]] = {}
        for row in rows:
            try:
                self._never_pushed(row, wanted)
            except Exception:
                continue
        return self._bring(wanted, "user")

    def _groups_after(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        """Role rows, made and claimed under this drain's name, for the groups that the
        users this drain created or enabled again at an IdP belong to there (a user
        that a role assign brought into an IdP's scope joined that role's group, and
        none of its other groups until a sync; one enabled again, none), and for the
        groups a user's push found deleted at the target; none where ``rows`` (the
        drain's role rows) or another change's row has one already."""
        wanted: dict[str, dict[str, tuple[str, str, str]]] = {}
        for row, user in self._made:
            for role in self._pushed_roles(row.idp, user)[0]:  # (one unreadable: see joined)
                entity = (role.id, role.domain, role.qualified_name)
                wanted.setdefault(row.idp, {})[role.id] = entity
        for entry in self._lost:
            wanted.setdefault(entry.idp, {})[entry.local_id] = (
                entry.local_id,
                entry.domain,
                entry.label,
            )
        for row in rows:
            wanted.get(row.idp, {}).pop(row.local_id, None)
        return self._bring(wanted, "role")

    def _pushed_roles(self, idp: str, user: User) -> tuple[list[Role], bool]:
        """``user``'s roles whose groups ``idp`` is given, and whether every one of its
        roles could be read."""
        config = self.outbound.idp(idp)
        found: list[Role] = []
        complete = True
        for name in user.roles:
            key = (user.domain.casefold(), name.casefold())
            if key not in self._roles_named:
                try:
                    self._roles_named[key] = self.directory.role_by_name(user.domain, name)
                except Exception:  # unreadable now: its own row or a sync brings it
                    self._roles_named[key] = None
                    self._unreadable.add(key)
            role = self._roles_named[key]
            complete = complete and key not in self._unreadable
            if role is not None and role_pushed(config, role.qualified_name):
                found.append(role)
        return found, complete

    def _joining_roles(self, idp: str, user: User) -> list[str] | None:
        """The ids of ``user``'s roles whose groups ``idp`` is given, read as its push
        is planned (None: one could not be read), for :meth:`_note_joined`."""
        roles, complete = self._pushed_roles(idp, user)
        return [role.id for role in roles] if complete else None

    def _note_joined(self) -> None:
        """Tell the rows of their groups of the users recorded as made or enabled again
        since the last flush, in the transaction that records them (see
        :meth:`~idprov.provisioning.outbox.Outbox.joined`): a drain cut before its
        groups follow (:meth:`_groups_after`) leaves no group's row compared without
        them. A user one of whose roles could not be read is told to every group
        idprov holds at that IdP."""
        joins: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for idp, role_ids, user in self._joining:
            if role_ids is None:
                role_ids = self._ledger.role_ids(idp)
            for role_id in role_ids:
                joins.setdefault(idp, {}).setdefault(role_id, []).append(user)
        self._joining = []
        for idp, by_role in joins.items():
            self.outbound.state.outbox.joined(idp, by_role, self.owners)

    def _bring(
        self, wanted: dict[str, dict[str, tuple[str, str, str]]], kind: Kind
    ) -> list[OutboxRow]:
        """Rows of ``kind`` at each IdP for ``wanted``'s entities (local id, domain,
        label) that have none there, made and claimed under this drain's name in one
        short transaction (a row already there is another change's: left to it, but
        a role's compares every member: see :meth:`_compared`)."""
        if not any(wanted.values()):
            return []
        state = self.outbound.state
        made: list[OutboxRow] = []
        with state.transaction():
            for idp, entities in wanted.items():
                if entities:
                    made += state.outbox.enqueue_absent(
                        idp, kind, list(entities.values()), self.owners[0], self.outbound.lease
                    )
                    if kind == "role":
                        state.outbox.full_compare(idp, sorted(entities))
        return made

    def _never_pushed(
        self, row: OutboxRow, wanted: dict[str, dict[str, tuple[str, str, str]]]
    ) -> None:
        """Add to ``wanted[idp]`` the members of ``row``'s role that its group at that
        IdP needs and that the ledger has never heard of there, or knows only as lost
        (their accounts are made again before the group is pushed)."""
        idp = self.outbound.idp(row.idp)
        role, refs = self._row_read(row, self._compared(row))
        if role is None or not idp.enabled or not role_pushed(idp, role.qualified_name):
            return
        ids = [user_id for _, user_id in refs]
        missing = set(ids) - set(self._ledger.remote_ids(row.idp, ids))
        self._unprovisioned[row.id] = set(missing)
        missing -= set(wanted.get(row.idp, {}))
        if not missing:
            return
        known = self._ledger.get_many(row.idp, "user", sorted(missing))
        missing -= {e.local_id for e in known if e.state != "lost"}
        users = self.directory.users_by_id([r for r in refs if r[1] in missing])
        for user in users.values():
            if group_member(idp, user):
                entity = (user.id, user.domain, user.qualified_name)
                wanted.setdefault(row.idp, {})[user.id] = entity

    def _await_members(self, rows: Sequence[OutboxRow]) -> None:
        """Wait until no member that role ``rows`` need has its own row held by another
        drainer that is running (its create under way in another process), for at
        most :data:`MEMBER_WAIT_SECONDS`, renewing this drain's claims meanwhile. The
        other drainer records the member's remote id in the transaction that lets go
        of its row, so the roles planned after this see it. Rows of IdPs that refused
        this drain's credentials are not waited for (nothing goes there now)."""
        by_idp: dict[str, set[str]] = {}
        for row in rows:
            missing = self._unprovisioned.get(row.id)
            if missing and row.idp not in self._stopped:
                by_idp.setdefault(row.idp, set()).update(missing)
        held = [
            r
            for idp, ids in by_idp.items()
            for r in self._outbox_rows(idp, sorted(ids))
            if self._held_elsewhere(r)
        ]
        outbox = self.outbound.state.outbox
        lease = self.outbound.lease
        deadline = time.monotonic() + MEMBER_WAIT_SECONDS
        renewed = time.monotonic()
        for _ in range(int(MEMBER_WAIT_SECONDS / MEMBER_POLL_SECONDS)):
            if not held or time.monotonic() > deadline:
                return
            self.sleep(MEMBER_POLL_SECONDS)
            if time.monotonic() - renewed > lease / 3:
                with self.outbound.state.transaction():
                    outbox.renew(self.owners, lease)
                renewed = time.monotonic()
            held = [r for r in outbox.rows(ids=[r.id for r in held]) if self._held_elsewhere(r)]

    def _held_elsewhere(self, row: OutboxRow) -> bool:
        """Whether ``row`` is a user's, claimed by a drainer of another process whose
        claim holds and that is running (one that died on this machine is not waited
        for: its claims are given back by the next drainer that looks). A change of
        this very process is not waited for: in `idprov serve` its push may be queued
        behind this one, which would wait for it the whole while (the group's row is
        then retried, as before)."""
        from idprov.provisioning.outbound import holder_gone

        holder = row.claimed_by
        return (
            row.kind == "user"
            and holder is not None
            and holder not in self.owners
            and not holder.startswith(f"{socket.gethostname()}:{os.getpid()}:")
            and (row.claimed_until or "") > now()
            and not holder_gone(holder)
        )

    def _plan_role(self, row: OutboxRow) -> Planned:
        idp = self.outbound.idp(row.idp)
        connector = self.outbound.connector(row.idp)
        among = self._compared(row)
        if among is None:
            self._in_part.discard(row.id)
        else:
            self._in_part.add(row.id)
        role, refs = self._row_read(row, among)
        entry = self._entry(row)
        provisioned, current, kept = self._member_state(row, refs, among)
        target = group_target(connector, role.qualified_name) if role else None
        self._targets[row.id] = target
        decision = decide_role(
            idp, role.qualified_name if role else None, entry, set(provisioned), current, target
        )
        if decision.action == "none" and (role is None or decision.reason == "not pushed"):
            if entry is not None:
                self._ledger.forget(row.idp, "role", row.local_id)
            return self._skip(row, decision.reason)
        if decision.action == "delete":
            assert entry is not None and entry.remote_id is not None
            keep_for = self._shared_with(row, entry)
            return self._plan_group_delete(row, idp, connector, entry.remote_id, keep_for)
        assert role is not None
        waiting = [  # a lost account the group names stays, as it is, until made again
            w for w in self._waiting_members(idp, refs, provisioned) if w[0] not in kept
        ]
        name = role.qualified_name  # the group's display name: unique across domains
        if decision.action == "create":
            crashed = entry is not None and entry.state == "creating"
            return self._plan_group_create(row, idp, connector, name, provisioned, waiting, crashed)
        assert entry is not None
        if decision.moved_from is not None:
            move = GroupMove(provisioned, current, waiting, str(target), decision.moved_from)
            return self._plan_group_move(row, idp, connector, entry, name, move)
        return self._plan_group_update(
            row, idp, connector, entry, name, provisioned, waiting, decision, among is not None
        )

    def _role_entry(self, row: OutboxRow, name: str, remote_id: str, ours: bool) -> LedgerEntry:
        """The ledger entry of ``row``'s group: with what the configuration maps the
        role to, where the group is not the role's own (see :func:`group_target`), and
        the IdP's scope of the last push that compared every member (see
        :func:`~idprov.provisioning.decide.compared_in_part`)."""
        target = self._targets.get(row.id)
        sent: dict[str, Any] = {"target": target} if target is not None else {}
        if row.id in self._in_part:  # compared in part: the scope stays the last whole one
            entry = self._entry(row)
            scope = (entry.sent or {}).get("scope") if entry is not None else None
        else:
            scope = scope_key(self.outbound.idp(row.idp))
        if scope is not None:
            sent["scope"] = scope
        return ledger_entry(row, name, remote_id, "active", ours, sent=sent or None)

    def _plan_group_move(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        entry: LedgerEntry,
        name: str,
        move: GroupMove,
    ) -> Task:
        """The configuration maps the role to another group than the one its members
        were given (a Salesforce permission set renamed in ``options.roles``): check
        that the new one is there (nothing is taken away otherwise), take the members
        idprov put in the old one out of it, then give the new one to the members."""
        old_id = entry.remote_id or ""
        kept = self._ledger.members_elsewhere(row.idp, row.local_id, old_id)
        remote = self._remote_ids_of(row.idp, sorted(move.current - kept))
        self._know_holders(row)
        provisioned = move.provisioned
        changes, made = MemberChanges(), MemberChanges()

        def run(attempts: list[Attempt]) -> tuple[str, bool] | RefusedCreate:
            new_id = self._retried(connector, idp, attempts, lambda: connector.find_group(name))
            if new_id is None:
                raise move.missing(name, idp.name)
            if new_id == old_id:  # the same group, named another way: only the members
                add = [rid for u, rid in provisioned.items() if u not in move.current]
                gone = [rid for u, rid in remote.items() if u not in provisioned]
                self._retried(
                    connector, idp, attempts, lambda: changes.change(connector, old_id, add, gone)
                )
                return old_id, entry.created_by_idprov
            if remote:
                out = list(remote.values())
                self._retried(
                    connector, idp, attempts, lambda: changes.change(connector, old_id, [], out)
                )
            spec = GroupSpec(row.local_id, name, sorted(provisioned.values()))
            return self._group_creator(connector, idp, spec, False, made)(attempts)

        def record(outcome: tuple[str, bool] | RefusedCreate) -> OperationResult:
            if isinstance(outcome, RefusedCreate):
                stop = stop_role(row.idp, row.label)
                raise self._refused(outcome, row, idp, stop)
            self._keep(self._role_entry(row, name, outcome[0], outcome[1]))
            left = [u for u in move.current if u not in provisioned]
            self._ledger.set_members(row.idp, row.local_id, list(provisioned), left)
            return self._group_result(row, "move", outcome[0], move.waiting)

        def failed() -> None:  # what was taken out, or given, is recorded all the same
            if changes.group == old_id:
                added, removed = changes.users({**remote, **provisioned})
                self._ledger.set_members(row.idp, row.local_id, added, removed)
            if made.group is not None:
                self._made_in_part(row, name, made)

        return Task(row, "move", run, record, failed=failed)

    def _member_state(
        self,
        row: OutboxRow,
        refs: list[tuple[str, str]],
        among: list[tuple[str, str]] | None = None,
    ) -> tuple[dict[str, str], set[str], set[str]]:
        """The members of ``row``'s group: those provisioned (user id -> remote id:
        never an account the ledger says is lost), those the ledger has in it, and,
        apart, those in it whose accounts are lost: left as they are, neither put in
        nor taken out (each, made again, takes its lost id's place). A lost member
        that left the role leaves the ledger's group with nothing sent (its id is
        named in no group push). ``among``: of those users alone (:meth:`_compared`)."""
        wanted = {user_id for _, user_id in refs}
        provisioned = self._ledger.remote_ids(row.idp, sorted(wanted))
        current = (
            self._ledger.members(row.idp, row.local_id)
            if among is None
            else self._ledger.members_among(row.idp, row.local_id, [u for _, u in among])
        )
        lost = self._ledger.lost_among(row.idp, current)
        if lost - wanted:
            self._ledger.set_members(row.idp, row.local_id, [], lost - wanted)
        return provisioned, current - lost, lost & wanted

    def _plan_group_delete(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        remote_id: str,
        keep_for: LedgerEntry | None = None,
    ) -> Task:
        """Delete the group. Where the group is not idprov's to delete (``deletes_groups``
        False: a Salesforce permission set), the members idprov put there are removed
        first, so that no one keeps the access the role gave. A group the ledger maps
        to another role that exists here too (``keep_for``: a ledger an earlier
        version's adoption merged) is that role's: it is kept, only the members this
        role alone put in it are taken out, and this role's record of it goes. No member
        another role gives the group is taken out (two roles given one permission set,
        see :meth:`Ledger.members_elsewhere`)."""
        members: set[str] = set()
        if keep_for is not None or not connector.deletes_groups:
            members = self._ledger.members(row.idp, row.local_id)
        members -= self._ledger.members_elsewhere(row.idp, row.local_id, remote_id)
        remote = self._remote_ids_of(row.idp, sorted(members))
        member_ids = list(remote.values())
        changes = MemberChanges()

        def delete(attempts: list[Attempt]) -> None:
            if member_ids:
                self._retried(
                    connector,
                    idp,
                    attempts,
                    lambda: changes.change(connector, remote_id, [], member_ids),
                )
            if keep_for is None:
                self._retried(connector, idp, attempts, lambda: connector.delete_group(remote_id))

        def failed() -> None:  # the members taken out before it failed are out
            if changes.group == remote_id:
                self._ledger.set_members(row.idp, row.local_id, [], changes.users(remote)[1])

        def forget(_: None) -> OperationResult:
            self._ledger.forget(row.idp, "role", row.local_id)
            if keep_for is not None:
                why = f"kept: the group is role {keep_for.label}'s (idprov forgot this role's"
                why += " record of it" + (", and took out its own members)" if member_ids else ")")
                outcome = "done" if member_ids else "skipped"
                return OperationResult(
                    row.idp, "role", row.label, why, outcome, remote_id=remote_id
                )
            return OperationResult(
                row.idp, "role", row.label, "delete", "done", remote_id=remote_id
            )

        return Task(row, "delete", delete, forget, failed=failed)

    def _retried(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        attempts: list[Attempt],
        call: Callable[[], Any],
    ) -> Any:
        return with_retries(lambda n: call(), idp.retry, attempts, self.sleep, connector.throttled)

    def _waiting_members(
        self,
        idp: IdentityProviderConfig,
        refs: list[tuple[str, str]],
        provisioned: dict[str, str],
    ) -> list[tuple[str, str]]:
        """(user id, name) of the members in scope, and enabled, that are not (yet)
        provisioned: their own push has not succeeded."""
        missing = [(domain, user_id) for domain, user_id in refs if user_id not in provisioned]
        users = self.directory.users_by_id(missing) if missing else {}
        return [(u.id, u.qualified_name) for u in users.values() if group_member(idp, u)]

    def _group_result(
        self, row: OutboxRow, operation: str, remote_id: str, waiting: list[tuple[str, str]]
    ) -> OperationResult:
        if waiting:
            return OperationResult(
                row.idp,
                "role",
                row.label,
                operation,
                "failed",
                remote_id=remote_id,
                error=f"members not provisioned at {row.idp} yet: "
                + ", ".join(sorted(name for _, name in waiting))
                + f" ({self._why_waiting(row.idp, waiting)}); the group follows once they are",
                derived=True,
            )
        return OperationResult(row.idp, "role", row.label, operation, "done", remote_id=remote_id)

    def _why_waiting(self, idp: str, waiting: list[tuple[str, str]]) -> str:
        """Why members are not provisioned at ``idp``, by what their own rows say."""
        ids = {user_id: name for user_id, name in waiting}
        rows = {
            r.local_id: r
            for r in self._outbox_rows(idp, sorted(ids))
            if r.kind == "user" and r.local_id in ids
        }
        failed = sorted(ids[i] for i, r in rows.items() if r.status == "failed")
        queued = sorted(ids[i] for i, r in rows.items() if r.status != "failed")
        unsent = sorted(name for i, name in ids.items() if i not in rows)
        parts = [
            (names, why)
            for names, why in (
                (failed, f"their own push failed: `idprov outbox list --idp {idp}` says why"),
                (queued, "their own push waits in the outbox or is under way"),
                (unsent, f"no push of their own is pending there: `idprov sync --idp {idp}`"),
            )
            if names
        ]
        if len(parts) == 1:
            return parts[0][1]
        return "; ".join(f"{', '.join(names)}: {why}" for names, why in parts)

    def _outbox_rows(self, idp: str, local_ids: list[str]) -> list[OutboxRow]:
        outbox = self.outbound.state.outbox
        return [
            r
            for start in range(0, len(local_ids), 500)
            for r in outbox.rows(idps=[idp], local_ids=local_ids[start : start + 500])
        ]

    def _plan_group_create(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        name: str,
        provisioned: dict[str, str],
        waiting: list[tuple[str, str]],
        crashed: bool,
    ) -> Task:
        """Create the group; after an uncertain outcome (a failed attempt, a crashed
        create) look it up first and adopt only what is provably idprov's."""
        spec = GroupSpec(row.local_id, name, sorted(provisioned.values()))
        self._creating.append((row.idp, "role", row.local_id, row.domain, name, None))
        self._know_holders(row)  # a create may adopt: never another role's group
        made = MemberChanges()
        create = self._group_creator(connector, idp, spec, crashed, made)

        def record(outcome: tuple[str, bool] | RefusedCreate) -> OperationResult:
            if isinstance(outcome, RefusedCreate):
                stop = stop_role(row.idp, row.label)
                raise self._refused(outcome, row, idp, stop)
            remote_id, ours = outcome
            self._keep(self._role_entry(row, name, remote_id, ours))
            self._ledger.set_members(row.idp, row.local_id, provisioned, [])
            return self._group_result(row, "create", remote_id, waiting)

        return Task(
            row, "create", create, record, failed=lambda: self._made_in_part(row, name, made)
        )

    def _made_in_part(self, row: OutboxRow, name: str, made: MemberChanges) -> None:
        """Record a group create that failed after the group was there, with some of its
        members put in (``made``): the group as idprov's, with exactly those members, so
        that a role delete removes them, and the repeat adds the rest."""
        if made.group is None:
            return
        self._keep(self._role_entry(row, name, made.group, made.ours))
        remote = self._remote_ids_of(row.idp, sorted(self._member_ids(row)))
        added = made.users(remote)[0]
        before = self._ledger.members(row.idp, row.local_id)
        self._ledger.set_members(row.idp, row.local_id, added, before - set(added))

    def _member_ids(self, row: OutboxRow) -> set[str]:
        """The user ids of ``row``'s role's members, and those the ledger has in it."""
        _, refs = self._role_read(row.domain, row.local_id)
        return {user_id for _, user_id in refs} | self._ledger.members(row.idp, row.local_id)

    def _group_creator(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        spec: GroupSpec,
        look: bool,
        made: MemberChanges | None = None,
    ) -> Callable[[list[Attempt]], tuple[str, bool] | RefusedCreate]:
        """A worker's create of ``spec``: after an uncertain outcome (``look``: a crashed
        create; any failed attempt) the group is looked up first. A duplicate that the
        target reports (409) is adopted only if it is provably idprov's (or with
        ``on_conflict: adopt``). ``made`` notes the group and the members it holds when
        the create fails after making it (:class:`MemberChanges`)."""
        made = made if made is not None else MemberChanges()

        def create(attempts: list[Attempt]) -> tuple[str, bool] | RefusedCreate:
            def call(number: int) -> tuple[str, bool] | RefusedCreate:
                uncertain = look or number > 1
                if uncertain:
                    match = connector.lookup_group(spec)
                    if match is not None:
                        return self._adopt_group(connector, idp, spec, match, None, made)
                try:
                    made_id = connector.create_group(spec)
                except RemoteConflict as exc:
                    found = connector.lookup_group(spec)
                    if found is None:
                        return RefusedCreate(
                            f"{idp.name} refused to create group {spec.display_name!r} as a "
                            f"duplicate ({exc.message}), but no group of that name can be "
                            "found there; check the groups at the target",
                            idp.name,
                            exc.status,
                            not uncertain,
                            taken=False,
                        )
                    return self._adopt_group(
                        connector, idp, spec, found, None if uncertain else exc, made
                    )
                except TargetError as exc:  # made, and some of its members put in?
                    made.failed(exc, ours=True)
                    raise
                self._claim(idp.name, made_id, spec.local_id, take=True, kind="role")
                return made_id, True

            result: tuple[str, bool] | RefusedCreate = with_retries(
                call, idp.retry, attempts, self.sleep, connector.throttled
            )
            return result

        return create

    def _adopt_group(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        spec: GroupSpec,
        match: RemoteMatch,
        conflict: TargetError | None,
        made: MemberChanges,
    ) -> tuple[str, bool] | RefusedCreate:
        """As :meth:`UserPlanning._adopt`, for a group (given its initial members): one
        that another local role holds (the ledger maps it to that role: a role deleted
        here whose delete has not gone out yet, or two role names the target makes one
        group name of) is refused before anything is sent to it: one group, one role.
        Not a group the configuration names (``options.roles``: a Salesforce permission
        set), which roles may share."""
        adopting = match.ours or idp.on_conflict == "adopt"
        holder = None
        if group_target(connector, spec.display_name) is None:
            holder = self._claim(idp.name, match.remote_id, spec.local_id, adopting, "role")
        if holder is None and adopting:
            made.at(match.remote_id, match.ours)
            made.change(connector, match.remote_id, spec.member_ids, [])
            return match.remote_id, match.ours
        return RefusedCreate.name_taken(
            idp.name, "group", spec.display_name, conflict, match.remote_id, holder
        )

    def _plan_group_update(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        entry: LedgerEntry,
        name: str,
        provisioned: dict[str, str],
        waiting: list[tuple[str, str]],
        decision: RoleDecision,
        in_part: bool = False,
    ) -> Planned:
        """Rename the group, put members in and take them out. ``in_part``: the
        members compared are those the row's changes touched (:meth:`_compared`); a
        group found deleted at the target is then planned again, whole, in this
        drain (:class:`Replan`), to be made again with every member."""
        add, remove, rename = decision.add, decision.remove, decision.rename
        remote_id = entry.remote_id or ""
        target = self._targets.get(row.id)
        unsure = target is not None and (entry.sent or {}).get("target") is None
        if not (add or remove or rename or unsure):
            if waiting:
                return Settled(row, self._group_result(row, "members", remote_id, waiting))
            return self._skip(row, "unchanged", remote_id)
        # a member another role gives the group (one permission set, two roles) stays there
        kept = self._ledger.members_elsewhere(row.idp, row.local_id, remote_id) if remove else set()
        removing = self._remote_ids_of(row.idp, [u for u in remove if u not in kept])
        removed_remote = list(removing.values())
        confirmed = {u for u in provisioned if (row.idp, u) in self._confirmed}
        present: dict[str, str] = {}  # the members the group is made again with
        self._know_holders(row)  # made again, it may adopt: never another role's group
        changes, made = MemberChanges(), MemberChanges()

        def recreate(attempts: list[Attempt]) -> tuple[str, bool] | RefusedCreate:
            present.update(self._existing(connector, idp, provisioned, confirmed, attempts))
            spec = GroupSpec(row.local_id, name, sorted(present.values()))
            return self._group_creator(connector, idp, spec, False, made)(attempts)

        def failed() -> None:  # what the target acknowledged is recorded all the same
            if made.group is not None:
                self._made_in_part(row, name, made)
            elif changes.group == remote_id:
                added, removed = changes.users({**provisioned, **removing})
                self._ledger.set_members(row.idp, row.local_id, added, removed)

        def update(
            attempts: list[Attempt],
        ) -> tuple[str, bool] | RefusedCreate | str | Replan | None:
            if unsure:  # recorded before idprov kept the mapping: is it still that group?
                found = self._retried(connector, idp, attempts, lambda: connector.find_group(name))
                if found is None:
                    raise unmapped(name, idp.name, str(target), "the group they were given")
                if found != remote_id:
                    return found
            try:
                if rename:
                    self._retried(
                        connector, idp, attempts, lambda: connector.rename_group(remote_id, name)
                    )
                if add or removed_remote:
                    added = [provisioned[u] for u in add]
                    self._retried(
                        connector,
                        idp,
                        attempts,
                        lambda: changes.change(connector, remote_id, added, removed_remote),
                    )
            except RemoteNotFound:  # deleted at the target: made again, with its members
                return Replan() if in_part else recreate(attempts)
            return None

        def record(
            recreated: tuple[str, bool] | RefusedCreate | str | Replan | None,
        ) -> OperationResult:
            assert not isinstance(recreated, Replan)  # the engine plans it again first
            if isinstance(recreated, RefusedCreate):
                stop = stop_role(row.idp, row.label)
                raise self._refused(recreated, row, idp, stop)
            if isinstance(recreated, str):  # mapped elsewhere since: a move, judged first
                was = f"id {remote_id}"
                self._keep(dataclasses.replace(entry, sent={**(entry.sent or {}), "target": was}))
                raise TargetError(
                    f"role {name!r} is now mapped to {target} at {row.idp}, but its members "
                    f"were given {remote_id}: `idprov sync` moves them (the deletion guard "
                    "judges taking it away), or map the role back in options.roles",
                    hint=f"`idprov sync --idp {row.idp}` (`idprov plan` shows the move)",
                )
            if recreated is not None:
                self._keep(self._role_entry(row, name, recreated[0], recreated[1]))
                gone = {u: rid for u, rid in provisioned.items() if u not in present}
                self._ledger.set_members(row.idp, row.local_id, list(present), remove + [*gone])
                self._lose_members(row, gone)
                return self._group_result(row, "create", recreated[0], waiting)
            self._keep(self._role_entry(row, name, remote_id, entry.created_by_idprov))
            self._ledger.set_members(row.idp, row.local_id, add, remove)
            return self._group_result(
                row, "rename" if rename and not (add or remove) else "members", remote_id, waiting
            )

        operation = "rename" if rename and not (add or remove) else "members"
        return Task(row, operation, update, record, failed=failed)

    def _existing(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        provisioned: dict[str, str],
        confirmed: set[str],
        attempts: list[Attempt],
    ) -> dict[str, str]:
        """Of ``provisioned`` (user id -> remote id), the members whose accounts exist
        at the target, for a group made again after the target lost it (a sandbox
        reset loses its users too): those this drain pushed (``confirmed``), and those
        the target says it holds (:class:`RemoteAccounts`, asked once in this drain:
        a listing, or reads in the IdP's pool). A target that refuses a group naming
        accounts it does not hold (Entra, Okta, IAM Identity Center: a 400) is never
        sent one; nor is any other. A read that fails raises (the group is not made:
        its row is retried); a connector that cannot read users is sent every member,
        as the ledger has them."""
        unsure = [rid for user_id, rid in provisioned.items() if user_id not in confirmed]
        reads: list[Attempt] = []  # one per account: only the failures are the row's
        try:
            there = self._accounts(idp.name).existing(
                unsure,
                lambda call: self._retried(connector, idp, reads, call),
                lambda fn, ids: self._fan_out(idp.name, fn, ids),
            )
        except NotImplementedError:
            return dict(provisioned)
        finally:
            attempts += [a for a in reads if a.error is not None]
        return {u: rid for u, rid in provisioned.items() if u in confirmed or rid in there}

    def _lose_members(self, row: OutboxRow, gone: dict[str, str]) -> None:
        """Have the members of ``row``'s group whose accounts the target lost with it
        (``gone``: user id -> lost remote id) made again in this drain, as a user
        whose account is gone is (``sync --verify --repair`` does the same): their
        ledger entries say lost (:meth:`~idprov.provisioning.ledger.Ledger.mark_lost`),
        not forgotten, so that each keeps its other groups and, made again, takes its
        lost id's place in each. Their rows are pushed, then the group's row once more,
        which puts them in it (:meth:`Engine._push_again`). Until made again, in this
        drain or a later one, a lost id is put in no group."""
        if not gone:
            return
        self._ledger.mark_lost(row.idp, gone)
        remade = self._remade.setdefault(row.idp, {})
        for entry in self._ledger.get_many(row.idp, "user", sorted(gone)):
            remade[entry.local_id] = (entry.local_id, entry.domain, entry.label)
        self._gone.setdefault(row.idp, {})[row.local_id] = (row.local_id, row.domain, row.label)

    def _remote_ids_of(self, idp: str, user_ids: Sequence[str]) -> dict[str, str]:
        """User id -> remote id of those of ``user_ids`` with an account at ``idp`` in
        any state but lost (a disabled member is still in the group)."""
        found = {
            entry.local_id: entry.remote_id
            for entry in self._ledger.get_many(idp, "user", list(user_ids))
            if entry.remote_id and entry.state != "lost"
        }
        return {user_id: found[user_id] for user_id in user_ids if user_id in found}
