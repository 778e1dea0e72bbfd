"""Planning a sync in one streamed pass: users chunk by chunk, then roles one by one.

Memory stays flat in the number of users: a chunk of users is read from its userstore,
decided at every IdP and dropped. What is kept is each user's id and domain (to find
the users deleted locally), and which users belong in groups at each IdP (in scope,
enabled: the members of a role that are to be in its group there).

A user whose inputs digest equals the ledger's (:mod:`idprov.provisioning.inputs`) was
pushed from exactly what is read now: it is unchanged and is neither rendered nor
compared. Every other user is decided in full, as the engine decides
(:func:`~idprov.provisioning.decide.decide_user`); one found unchanged all the same
(a claim no mapping reads) has its digest noted when the plan is applied, so the next
sync skips it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from idprov.errors import IdprovError
from idprov.model import AmbiguousName, QualifiedName
from idprov.provisioning.decide import (
    decide_role,
    decide_user,
    group_member,
    group_moved,
    group_target,
)
from idprov.provisioning.guard import Effects, trips
from idprov.provisioning.inputs import by_roles, idp_fingerprint, inputs_digest, user_digest
from idprov.provisioning.scope_roles import known_roles
from idprov.provisioning.sync import IdpPlan, PlanItem

if TYPE_CHECKING:
    from idprov.connectors.base import Connector
    from idprov.model import Role, User
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.service import IdentityService
    from idprov.userstores import UserStore

CHUNK = 1000
"""Users read, decided and dropped together."""


@dataclass
class Seen:
    """What the pass keeps of the source: every user's domain by id, the stores read
    in full (their roles are read next), the internal roles, the errors that make
    the read incomplete, and the names that several entries hold (their users left
    out of the read, ``held`` their ids)."""

    domains: dict[str, str] = field(default_factory=dict)
    stores: list[UserStore] = field(default_factory=list)
    internal: list[Role] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    """How to fix each error, as the store says it (a size limit: the directory's
    limits for the bind DN; a refused StartTLS: the url or start_tls)."""
    ambiguous: list[AmbiguousName] = field(default_factory=list)
    roles: dict[tuple[str, str], str] = field(default_factory=dict)
    """Every role read (:data:`~idprov.provisioning.scope_roles.KnownRoles`): a scope
    naming none of them is refused."""
    held: set[str] = field(default_factory=set)
    """Ids of the users of ambiguous names: nothing is planned for them, not even
    their deprovisioning or removal from groups (a read that cannot tell who a name
    means is no proof that anyone left)."""

    def failed(self, domain: str, error: IdprovError) -> None:
        """Note that userstore ``domain`` could not be read in full, and why."""
        self.errors.append(f"userstore {domain}: {error.message}")
        if error.hint and error.hint not in self.hints:
            self.hints.append(error.hint)


def plan_idps(service: IdentityService, names: list[str]) -> tuple[list[IdpPlan], Seen]:
    """The plan of each IdP of ``names``, and what the read saw: its errors (with their
    hints) and the names it left out."""
    planners = [IdpPlanner(service, name) for name in names]
    seen = Seen()
    roles = any(p.by_roles for p in planners)
    for users in read_users(service, seen, roles):
        decide_users(planners, users, seen)
    if not seen.errors:
        deleted_users(service, planners, seen)
    plan_roles(service, planners, seen)
    return [p.finish() for p in planners], seen


def read_users(service: IdentityService, seen: Seen, roles: bool) -> Iterator[list[User]]:
    """Every userstore's users, a chunk at a time (with their roles, internal ones too,
    if ``roles``: they are read only when an IdP's scope needs them); a store that
    cannot be read is noted in ``seen.errors``, the names several of its entries hold
    in ``seen.ambiguous``."""
    seen.internal = internal = service.internal.all()
    for store_config in service.config.userstores:
        domain = store_config.domain
        try:
            store = service.store(domain)
            for users in store.iter_users(CHUNK, roles):
                yield service.directory.with_internal_roles(users) if internal and roles else users
            seen.stores.append(store)
            for name in store.ambiguous_names():
                seen.ambiguous.append(name)
                seen.held.update(name.ids)
        except IdprovError as exc:
            seen.failed(domain, exc)


def decide_users(planners: list[IdpPlanner], users: list[User], seen: Seen) -> None:
    """Decide a chunk of users at every IdP: the ledger's digests of all of them at
    all the IdPs are read together; users whose inputs did not move are unchanged."""
    digests = {
        roles: {u.id: user_digest(u, roles) for u in users}
        for roles in {p.by_roles for p in planners}
    }
    for user in users:
        seen.domains[user.id] = user.domain
    if not planners:
        return
    ids = [u.id for u in users]
    stored = planners[0].ledger.inputs_of([p.name for p in planners], ids)
    for planner in planners:
        planner.users(users, digests[planner.by_roles], stored.get(planner.name, {}))


def deleted_users(service: IdentityService, planners: list[IdpPlanner], seen: Seen) -> None:
    """Users the ledger holds and the read did not return. Each one provisioned is
    looked up by id first: one that is there after all (the read raced a change) is
    kept; users of a userstore no longer configured are gone."""
    missing = {p.name: p.missing(seen) for p in planners}
    configured = {u.domain.casefold() for u in service.config.userstores}
    refs = {
        (e.domain, e.local_id)
        for entries in missing.values()
        for e in entries
        if e.remote_id and e.domain.casefold() in configured
    }
    found = _recheck(service, sorted(refs), seen)
    if seen.errors:
        return
    if found:
        decide_users(planners, found, seen)
    for planner in planners:
        planner.deleted([e for e in missing[planner.name] if e.local_id not in seen.domains])


def _recheck(service: IdentityService, refs: list[tuple[str, str]], seen: Seen) -> list[User]:
    by_domain: dict[str, list[str]] = {}
    for domain, user_id in refs:
        by_domain.setdefault(domain, []).append(user_id)
    found: list[User] = []
    for domain, ids in by_domain.items():
        try:
            found += service.users_by_id((domain, i) for i in ids).values()
        except IdprovError as exc:
            seen.failed(domain, exc)
    return found


def plan_roles(service: IdentityService, planners: list[IdpPlanner], seen: Seen) -> None:
    """Each role's group at each IdP, the role's members read once for all of them
    (as the store reads them best: :meth:`~idprov.userstores.UserStore.roles_with_member_ids`)."""
    known: set[str] = set()
    for store in seen.stores:
        try:
            for role, members in store.roles_with_member_ids():
                known.add(role.id)
                seen.roles |= known_roles([role])
                plan_role(planners, role, members, seen)
        except IdprovError as exc:
            seen.failed(store.domain, exc)
    seen.roles |= known_roles(seen.internal)
    for role in seen.internal:
        known.add(role.id)
        plan_role(planners, role, [u for _, u in service.role_members(role.domain, role.id)], seen)
    if not seen.errors:  # never read "could not be read" as "deleted"
        for planner in planners:
            planner.deleted_roles(known)


def plan_role(planners: list[IdpPlanner], role: Role, members: list[str], seen: Seen) -> None:
    """Members read as users that belong in groups at an IdP (in its scope, enabled:
    :func:`~idprov.provisioning.decide.group_member`) are to be in its group."""
    read = set(filter(seen.domains.__contains__, members))
    for planner in planners:
        planner.role(role, planner.group_members(read, members), seen)


class IdpPlanner:
    """One IdP's side of the pass: its items, its effects, the digests to note."""

    def __init__(self, service: IdentityService, name: str) -> None:
        from idprov.connectors import registry

        self.service = service
        self.name = name
        self.idp = service.idp(name)
        self.connector: type[Connector] = registry.load(self.idp.connector)
        self.fingerprint = idp_fingerprint(self.idp, self.connector)
        self.ledger = service.state.ledger
        self.entries, provisioned = self.ledger.user_counts(name)
        self.plan = IdpPlan(name, provisioned=provisioned)
        self.effects = Effects(name, self.idp.deprovision or "delete")
        self.by_roles = by_roles(self.idp)
        """Whether users' roles decide their scope here (are inputs)."""
        self.members: set[str] | None = set() if self.by_roles else None
        """Ids of the users read that belong in groups here (in scope, enabled); None:
        every user is in scope here, and those of :attr:`left_out` do not belong."""
        self.left_out: set[str] = set()
        """Where :attr:`members` is None: the users read that are disabled."""
        self.matched = 0
        """Ledger entries found for the users read so far."""
        self.role_entries = self.ledger.for_idp(name, "role")

    def users(self, users: list[User], digests: dict[str, str], stored: dict[str, str]) -> None:
        """Decide a chunk of users (``digests``: of each user; ``stored``: the ledger's
        inputs here, by user id): those whose inputs did not move are unchanged."""
        fingerprint = self.fingerprint
        rest = [u for u in users if stored.get(u.id) != fingerprint + digests[u.id]]
        self._group_members(users, rest)
        self.matched += len(users) - len(rest)
        if not rest:
            return
        entries = {e.local_id: e for e in self.ledger.get_many(self.name, "user", _ids(rest))}
        self.matched += len(entries)
        for user in rest:
            inputs = inputs_digest(fingerprint, digests[user.id])
            entry = entries.get(user.id)
            self.decide(user.id, user.domain, user.qualified_name, user, entry, inputs)

    def _group_members(self, users: list[User], rest: list[User]) -> None:
        """Note which of ``users`` belong in groups here. Those whose inputs did not
        move since their last active push do, as they did then (in scope, enabled):
        their claims are not decoded to ask. Of the ``rest``, each is asked (its
        decision decodes them anyway)."""
        left_out = (u.id for u in rest if not group_member(self.idp, u))
        if self.members is None:
            self.left_out.update(left_out)
        else:
            self.members.update(_ids(users))
            self.members.difference_update(left_out)

    def decide(
        self,
        local_id: str,
        domain: str,
        label: str,
        user: User | None,
        entry: LedgerEntry | None,
        inputs: str | None = None,
    ) -> None:
        decision = decide_user(self.idp, self.connector, user, entry)
        self.effects.note_user(label, decision, entry)
        if decision.action != "none":
            self.plan.items.append(
                PlanItem(
                    "user",
                    local_id,
                    domain,
                    label,
                    decision.action,
                    decision.reason,
                    decision.changed,
                    decision.digest,
                )
            )
        elif decision.reason == "unchanged" and entry is not None and entry.hash:
            if inputs is not None and entry.inputs != inputs:
                self.plan.unchanged.append((local_id, inputs, entry.hash))

    def missing(self, seen: Seen) -> list[LedgerEntry]:
        """The ledger's users here that the read did not return (none, without reading
        their ids, when every entry was matched by a user read)."""
        if self.entries == self.matched:
            return []
        ids = [
            i
            for i in self.ledger.user_ids(self.name)
            if i not in seen.domains and i not in seen.held
        ]
        return self.ledger.get_many(self.name, "user", ids)

    def deleted(self, entries: Iterable[LedgerEntry]) -> None:
        for entry in entries:
            self.decide(entry.local_id, entry.domain, entry.label, None, entry)

    def group_members(self, read: set[str], members: list[str]) -> set[str]:
        """Of a role's ``members`` (``read``: those read as users), those that belong
        in its group here."""
        if self.members is None:
            return read - self.left_out if self.left_out else read
        return self.members.intersection(members)

    def role(self, role: Role, desired: set[str], seen: Seen) -> None:
        entry = self.role_entries.get(role.id)
        current: set[str] = set()
        if entry is not None and entry.remote_id:
            current = self.ledger.members(self.name, role.id)
        if seen.held:  # an ambiguous name's users keep the memberships they have here
            desired = (desired - seen.held) | (current & seen.held)
        name = role.qualified_name
        target = self._group_target(name)
        moved = entry is not None and group_moved(entry, target) is not None
        if current == desired and not moved:  # nothing to add or remove: spare the copies
            current = desired = set()
        decision = decide_role(self.idp, name, entry, desired, current, target)
        names = self._labels(decision.remove, seen)
        lost = (
            self.ledger.lost_leaving(self.name, decision.remove, ()) if decision.remove else set()
        )
        self.effects.note_role(name, decision, names, lost=lost)
        if decision.action == "none":
            return
        names.update(self._labels(decision.add, seen))
        changed = [f"+{names[u]}" for u in decision.add]
        changed += [
            f"-{names[u]}" + (" (lost at the target)" if u in lost else "") for u in decision.remove
        ]
        if decision.rename:
            assert entry is not None
            changed.insert(0, f"rename from {entry.label}")
        if decision.moved_from is not None:
            changed.insert(0, f"move from {decision.moved_from} to {target}")
        label = str(QualifiedName(role.domain, role.name))
        self.plan.items.append(
            PlanItem("role", role.id, role.domain, label, decision.action, decision.reason, changed)
        )

    def _group_target(self, name: str) -> str | None:
        """What the configuration maps role ``name`` to here, where the group is not the
        role's own (asked of the connector only when it maps roles)."""
        from idprov.connectors.base import Connector as Base

        if self.connector.group_target is Base.group_target:
            return None
        return group_target(self.service.outbound.connector(self.name), name)

    def deleted_roles(self, known: set[str]) -> None:
        for local_id, entry in self.role_entries.items():
            if local_id not in known and entry.remote_id:
                self.effects.groups.append(entry.label)
                self.plan.items.append(
                    PlanItem(
                        "role", local_id, entry.domain, entry.label, "delete", "deleted locally"
                    )
                )

    def _labels(self, user_ids: list[str], seen: Seen) -> dict[str, str]:
        """Labels of user ids: their qualified names as read, else the ledger's."""
        if not user_ids:
            return {}
        refs = [(seen.domains[u], u) for u in user_ids if u in seen.domains]
        users = self.service.users_by_id(refs) if refs else {}
        out = {u: users[u].qualified_name for u in user_ids if u in users}
        rest = [u for u in user_ids if u not in out]
        out.update({e.local_id: e.label for e in self.ledger.get_many(self.name, "user", rest)})
        return {u: out.get(u, u) for u in user_ids}

    def finish(self) -> IdpPlan:
        plan = self.plan
        plan.effects = self.effects
        if self.effects.any:  # what the guard's percentages are of
            plan.trips = trips(self.idp, self.effects, self.ledger.counts(self.name), None)
        plan.guard = "; ".join(t.message for t in plan.trips) or None
        return plan


def _ids(users: Iterable[User]) -> list[str]:
    return [u.id for u in users]
