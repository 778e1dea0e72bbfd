"""The deletion guard: one rule for every destructive change at a target.

Whatever causes a change — `idprov sync`, a CLI command, a CSV import, a SCIM request,
a JIT login — its **remote effects** are counted per identity provider before
anything is sent: users deprovisioned, groups deleted, members removed from groups,
and users losing an attribute idprov had sent (a value removed or blanked). Each kind
is judged against the IdP's ``deletion_guard`` (a count, and a percentage of what is
there from a minimum count on). The effects come from the same pure decisions the
engine makes (:mod:`idprov.provisioning.decide`), so what the guard counts is what
would be sent.

Sync refuses a plan over the guard (exit 7); the unit of work's push holds the rows
of an IdP over the guard in the outbox (status ``held``) until an administrator
releases them (`idprov outbox release`); a CLI command previews the effects and asks
first (:mod:`idprov.provisioning.preview`). ``allow`` (``--allow-deletes N``) accepts
up to N effects of each kind.

**An allowance is for one change, as it was made.** It travels with the outbox rows
of the change it was given for (``allowed``), to whichever drainer pushes them, and
the rows of each allowance are judged together, apart from the others': what passed
under one allowance is not counted against rows judged without it, and a held row's
reason counts only what is judged with it (:class:`GuardWindow`).

**No change is judged in parts, and no allowance covers another change's effects.**
A row that two changes coalesce into before its push carries both, and keeps the
smaller allowance, none if either has none: its effects, both changes', are judged
with the change that allows less (a row cannot tell which effect is whose, so the
safe side). The command that makes a change judges all its rows together with its
own ``--allow-deletes``, those other changes share included; a row goes only if
every judgement it is in lets it. So an import taking every role from 7 users (over
the guard), 3 of them in rows an unassign's ``--allow-deletes 7`` left to the worker,
is held whole, its 7 and the rows they share, as with nothing pending (judged apart,
its 3 under the unassign's allowance and its other 4 alone, under the guard, those 4
were deleted); the unassign's own rows go under its allowance. A user's leaving the
groups is part of its deprovision, judged with its row, not again with a group's row
judged after it. Every change but a sync's (judged whole by its plan) marks its rows
as it commits (:attr:`~idprov.provisioning.outbox.OutboxRow.unjudged`): committed
without the push that judges it (`import --no-push`), or with it and cut before it
judged the change (Ctrl-C, ``kill -9``, a crash, on any host sharing the state), a
later command's push carrying one of its rows takes every such row of that IdP and
judges them together, as the worker does (judged with the later change alone, it
went out a few users at a time, each under the guard's minimum); its own push judges
its rows as its change. The mark goes where a guard judges the rows (let go or
held). An allowance does not outlive the push it was given for: a row that fails or is held
loses it, and its retry is judged afresh and whole (a failed row that lost one is
marked again: over the guard, held for `idprov outbox release --allow-deletes N`),
whatever the directory has become since. A sync gives the rows of what its plan
destroys what the plan needed at their IdP (at most its ``--allow-deletes``), and
the harmless rows it releases none.

**A change of scope in the configuration** (an IdP's ``provisioning_roles``) is judged
whole, by `idprov sync`: the users it takes out of scope are deprovisioned by no other
push, which holds them (else each command would deprovision the one user it touched,
each under the guard's minimum, until the rest were under it too). Each IdP's scope
is recorded when a sync applies a plan there; every other push adds to it the scope
it goes out under (the union: what was pushed under any scope in force since is
counted in). A user (or a role's group) out of scope now but in scope under the
recorded one is such a user, unless it is disabled here (its disable, or delete, is
the change's own: never held back). Only those rows are held, not the IdP's others.
An IdP whose scope was never recorded but that holds users (a database from before
this rule) has its scope recorded by its first sync.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from idprov.provisioning.decide import (
    RoleDecision,
    UserDecision,
    compared_in_part,
    decide_role,
    decide_user,
    group_member,
    group_target,
    role_pushed,
)

if TYPE_CHECKING:
    from idprov.config.models import GuardThreshold, IdentityProviderConfig, PushRoles
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.outbound import Directory, Outbound
    from idprov.provisioning.outbox import OutboxRow
    from idprov.provisioning.results import OutboundReport

KINDS = ("users", "groups", "memberships", "attributes")
NOUNS = {"users": "users", "groups": "groups", "memberships": "memberships", "attributes": "users"}
"""What a kind's percentage is of: users provisioned, groups, memberships."""
EMPTY: tuple[Any, ...] = (None, "", [], {})


@dataclass
class Effects:
    """The destructive effects of some changes at one IdP (labels of what they hit)."""

    idp: str
    verb: str = "delete"
    """How users are deprovisioned there: ``delete`` or ``disable``."""
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    memberships: list[str] = field(default_factory=list)
    """``group: user`` of each member removed from a group."""
    attributes: dict[str, list[str]] = field(default_factory=dict)
    """User -> attributes that were sent and would be removed or blanked."""
    leaving: set[str] = field(default_factory=set, repr=False)
    """Ids of the users deprovisioned: leaving their groups is part of that."""
    rescoped: list[str] = field(default_factory=list)
    """Of :attr:`users` and :attr:`groups`, those a change of the IdP's scope in the
    configuration took out of it (left to `idprov sync`: see the module's doc)."""
    scope_change: str = ""
    """That change, as a sentence's part (see :func:`_scope_change`)."""
    hit: set[str] = field(default_factory=set, repr=False)
    """Local ids of the users and roles whose rows have any of these effects."""
    disabled: set[str] = field(default_factory=set, repr=False)
    """Of :attr:`users`, those disabled there because they are disabled here (the
    ``active`` claim), whatever :attr:`verb` says."""

    def count(self, kind: str) -> int:
        return len(getattr(self, kind))

    @property
    def any(self) -> bool:
        return any(self.count(k) for k in KINDS)

    def note_user(self, label: str, decision: UserDecision, entry: LedgerEntry | None) -> None:
        """Count a user's decision (users first, then roles). An account enabled again
        loses what it lost here since it was last sent (before its disable), whoever
        disabled it, as in any update: those attributes are counted (see
        :mod:`~idprov.provisioning.plan_users`)."""
        if decision.action in ("delete", "disable"):
            self.users.append(label)
            if decision.action == "disable":
                self.disabled.add(label)
            if entry is not None:
                self.leaving.add(entry.local_id)
                self.hit.add(entry.local_id)
        elif entry is not None and decision.action in ("update", "enable"):
            lost = removed_attributes(entry.sent, decision.sent)
            if lost:
                self.attributes[label] = lost
                self.hit.add(entry.local_id)

    def note_role(
        self,
        label: str,
        decision: RoleDecision,
        names: Mapping[str, str],
        local_id: str | None = None,
        lost: Set[str] = frozenset(),
    ) -> None:
        """Count a role's decision; ``local_id``: the role's, noted in :attr:`hit`.
        Members in ``lost`` (:meth:`~idprov.provisioning.ledger.Ledger.lost_leaving`)
        leave with nothing sent, and are not counted."""
        if decision.action == "delete":
            self.groups.append(label)
        removed = [u for u in decision.remove if u not in self.leaving and u not in lost]
        self.memberships += [f"{label}: {names.get(u, u)}" for u in removed]
        if local_id is not None and (decision.action == "delete" or removed):
            self.hit.add(local_id)

    def merged(self, other: Effects | None) -> Effects:
        """These effects and ``other``'s (of the same IdP) together; what both count
        (the same user deprovisioned, the same member removed) is counted once: a row
        pushed again in one window, or an import's leavers counted before their push
        (:meth:`GuardWindow.prime`) and at it."""
        if other is None:
            return self
        return Effects(
            self.idp,
            self.verb,
            _once(self.users + other.users),
            _once(self.groups + other.groups),
            _once(self.memberships + other.memberships),
            {**self.attributes, **other.attributes},
            self.leaving | other.leaving,
            _once(self.rescoped + other.rescoped),
            self.scope_change or other.scope_change,
            self.hit | other.hit,
            self.disabled | other.disabled,
        )

    def sentence(self, kind: str, total: int) -> str:
        """``will delete 25 users at scim-main (83% of its 30 users)``."""
        count = self.count(kind)
        verb = self.verb
        if self.disabled:
            verb = "disable" if len(self.disabled) == len(self.users) else "deprovision"
        what = {
            "users": f"{verb} {_n(count, 'user')}",
            "groups": f"delete {_n(count, 'group')}",
            "memberships": f"remove {_n(count, 'member')} from groups",
            "attributes": f"remove attributes ({', '.join(self._attribute_names())}) "
            f"of {_n(count, 'user')}",
        }[kind]
        noun = NOUNS[kind].rstrip("s")
        share = f" ({100.0 * count / total:.0f}% of its {_n(total, noun)})" if total else ""
        return f"will {what} at {self.idp}{share}"

    def _attribute_names(self) -> list[str]:
        return sorted({a for names in self.attributes.values() for a in names})

    def to_dict(self) -> dict[str, Any]:
        return {
            "idp": self.idp,
            "users": list(self.users),
            "groups": list(self.groups),
            "memberships": list(self.memberships),
            "attributes": dict(self.attributes),
        }

    def saved(self) -> dict[str, Any]:
        """Everything of these effects, for :meth:`restored` (an import's journal)."""
        return {
            **self.to_dict(),
            "verb": self.verb,
            "leaving": sorted(self.leaving),
            "rescoped": list(self.rescoped),
            "scope_change": self.scope_change,
            "hit": sorted(self.hit),
            "disabled": sorted(self.disabled),
        }

    @classmethod
    def restored(cls, data: Mapping[str, Any]) -> Effects:
        return cls(
            data["idp"],
            data["verb"],
            list(data["users"]),
            list(data["groups"]),
            list(data["memberships"]),
            {k: list(v) for k, v in data["attributes"].items()},
            set(data["leaving"]),
            list(data["rescoped"]),
            data["scope_change"],
            set(data["hit"]),
            set(data["disabled"]),
        )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _once(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(labels))


def removed_attributes(
    sent: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> list[str]:
    """Attributes sent with a value that ``after`` (what would be sent) drops or blanks,
    and those a repair recorded as sent with null (a value the target holds that idprov
    has none for, to be removed there: see :func:`idprov.provisioning.verify.repair`)."""
    old = dict((sent or {}).get("attributes") or {})
    new = dict((after or {}).get("attributes") or {})
    return sorted(
        k for k, v in old.items() if (v is None or v not in EMPTY) and new.get(k) in EMPTY
    )


@dataclass
class Trip:
    """One kind of effect over the guard at one IdP."""

    idp: str
    kind: str
    count: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"idp": self.idp, "kind": self.kind, "count": self.count, "message": self.message}


@dataclass
class Verdict:
    """The guard's judgement of some changes: their effects per IdP and what trips."""

    effects: dict[str, Effects] = field(default_factory=dict)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    trips: list[Trip] = field(default_factory=list)

    def without_sync(self) -> Verdict:
        """This verdict without the trips only a sync can accept (a change of scope in
        the configuration: the push holds those rows, whatever the command says)."""
        trips = [t for t in self.trips if t.kind != SCOPE_TRIP]
        return Verdict(self.effects, self.totals, trips)

    @property
    def needed(self) -> int:
        """The ``--allow-deletes`` that would accept these changes."""
        return max((t.count for t in self.trips), default=0)

    def lines(self) -> list[str]:
        """One sentence per kind of effect per IdP, for a prompt."""
        return [
            e.sentence(kind, self.totals.get(name, {}).get(kind, 0))
            for name, e in self.effects.items()
            for kind in KINDS
            if e.count(kind)
        ]

    def message(self) -> str:
        return "; ".join(t.message for t in self.trips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "effects": [e.to_dict() for e in self.effects.values() if e.any],
            "trips": [t.to_dict() for t in self.trips],
            "needed": self.needed,
        }


def judge(outbound: Outbound, effects: Iterable[Effects], allow: int | None = None) -> Verdict:
    """Count what is at each IdP (only where there are effects) and judge."""
    verdict = Verdict()
    for e in effects:
        if not e.any:
            continue
        verdict.effects[e.idp] = e
        totals = outbound.state.ledger.counts(e.idp)
        verdict.totals[e.idp] = totals
        verdict.trips += trips(outbound.idp(e.idp), e, totals, allow)
    return verdict


def trips(
    idp: IdentityProviderConfig, effects: Effects, totals: Mapping[str, int], allow: int | None
) -> list[Trip]:
    """The kinds of ``effects`` over ``idp``'s thresholds (and over ``allow``), and
    its users taken out of scope by the configuration, at any count: accepting some of
    them (`outbox release --allow-deletes 4`) left the rest under the guard's minimum,
    for a sync to delete unjudged."""
    guard = idp.deletion_guard
    out = []
    rescoped = len(effects.rescoped)
    if rescoped:  # whatever ``allow``: only a sync judges the whole change and accepts it
        names = ", ".join(effects.rescoped[:10]) + (" ..." if rescoped > 10 else "")
        message = (
            f"will deprovision {rescoped} user(s) or group(s) at {idp.name} ({names}) that "
            f"{SCOPE_CHANGE} ({effects.scope_change}) took out of it: `idprov sync` "
            "deprovisions them, all judged together by the deletion guard"
        )
        out.append(Trip(idp.name, SCOPE_TRIP, rescoped, message))
    for kind in KINDS:
        threshold: GuardThreshold = getattr(guard, kind)
        count = effects.count(kind)
        if allow is not None and count <= allow:
            continue
        why = over(threshold, count, totals.get(kind, 0), kind)
        if why:
            out.append(
                Trip(idp.name, kind, count, f"{effects.sentence(kind, totals.get(kind, 0))}: {why}")
            )
    return out


def over(threshold: GuardThreshold, count: int, total: int, kind: str) -> str | None:
    """Why ``count`` effects of one kind out of ``total`` trip ``threshold`` (or None)."""
    key = "deletion_guard" if kind == "users" else f"deletion_guard.{kind}"
    if count > threshold.max_deletes:
        return f"over {key}.max_deletes ({threshold.max_deletes})"
    if total and count >= threshold.min_deletes and 100.0 * count / total > threshold.max_percent:
        return f"over {key}.max_percent ({threshold.max_percent:g}%)"
    return None


# ---------------------------------------------------------------- effects of outbox rows
class Row(Protocol):
    """An entity to reconcile at an IdP: an outbox row, or a :class:`Change`."""

    @property
    def idp(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def local_id(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class Change:
    """An entity a preview imagines reconciling at an IdP (as an outbox row would)."""

    idp: str
    kind: str
    local_id: str
    domain: str
    label: str


def effects_of(
    outbound: Outbound,
    directory: Directory,
    rows: Sequence[Row],
    leaving: Mapping[str, set[str]] | None = None,
) -> list[Effects]:
    """The destructive effects draining ``rows`` would have, from the current local
    state (as ``directory`` reads it) and the ledger. Only rows of entities that are
    provisioned can destroy anything: others cost no read. ``leaving``: IdP -> ids of
    users deprovisioned by other rows, whose removal from a group is not counted."""
    out: dict[str, Effects] = {}
    scopes = recorded_scopes(outbound, list(dict.fromkeys(r.idp for r in rows)))
    for idp_name in dict.fromkeys(r.idp for r in rows):
        if not outbound.configured(idp_name):
            continue
        idp = outbound.idp(idp_name)
        mine = [r for r in rows if r.idp == idp_name]
        effects = out.setdefault(idp_name, Effects(idp_name, idp.deprovision or "delete"))
        effects.leaving |= (leaving or {}).get(idp_name, set())
        users = [r for r in mine if r.kind == "user"]
        _user_effects(outbound, directory, idp, users, effects, scopes.get(idp_name))
        roles = [r for r in mine if r.kind == "role"]
        _role_effects(outbound, directory, idp, roles, effects, scopes.get(idp_name))
    return list(out.values())


def _user_effects(
    outbound: Outbound,
    directory: Directory,
    idp: IdentityProviderConfig,
    rows: Sequence[Row],
    effects: Effects,
    scope: str | None = None,
) -> None:
    """Count the effects of user ``rows``; with ``scope`` (the IdP's recorded one,
    when the configuration's differs), note who that change took out of scope."""
    ledger = outbound.state.ledger
    entries = {
        e.local_id: e
        for e in ledger.get_many(idp.name, "user", [r.local_id for r in rows])
        if e.remote_id
    }
    provisioned = [r for r in rows if r.local_id in entries]
    if not provisioned:
        return
    users = directory.users_by_id((r.domain, r.local_id) for r in provisioned)
    connector = type(outbound.connector(idp.name))
    was = None if scope is None else _recorded_idp(idp, scope)
    for row in provisioned:
        entry = entries[row.local_id]
        user = users.get(row.local_id)
        decision = decide_user(idp, connector, user, entry)
        effects.note_user(row.label, decision, entry)
        if was is not None and decision.reason == "out of scope" and user is not None:
            if group_member(was, user):  # enabled and in the scope it had
                effects.rescoped.append(row.label)
                effects.scope_change = _scope_change(was, idp)


def _role_effects(
    outbound: Outbound,
    directory: Directory,
    idp: IdentityProviderConfig,
    rows: Sequence[Row],
    effects: Effects,
    scope: str | None = None,
) -> None:
    """Count the effects of role ``rows``; with ``scope`` (as for users), note the
    groups that change of scope takes out (no longer pushed, pushed under it)."""
    was = None if scope is None else _recorded_idp(idp, scope)
    ledger = outbound.state.ledger
    touched = _touched(outbound, rows)
    scope_now = scope_key(idp)
    for entry in ledger.get_many(idp.name, "role", [r.local_id for r in rows]):
        if not entry.remote_id:
            continue
        role = directory.role_by_id(entry.domain, entry.local_id)
        name = role.qualified_name if role is not None else None
        target = group_target(outbound.connector(idp.name), name) if name else None
        among = touched.get(entry.local_id)
        if role is None or not compared_in_part(entry, target, scope_now):
            among = None  # compared whole by the push too (see RolePlanning._compared)
        if among is None:
            members = (
                {u for _, u in directory.role_members(entry.domain, entry.local_id)}
                if role
                else set()
            )
            current = ledger.members(idp.name, entry.local_id)
        else:
            members = {
                u for _, u in directory.role_members_among(entry.domain, entry.local_id, among)
            }
            current = ledger.members_among(idp.name, entry.local_id, [u for _, u in among])
        decision = decide_role(idp, name, entry, members & current, current, target)
        users = ledger.get_many(idp.name, "user", decision.remove)  # members of any domain
        names = {u.local_id: u.label for u in users}
        lost = ledger.lost_leaving(idp.name, current, members)
        effects.note_role(entry.label, decision, names, entry.local_id, lost)
        if was is not None and decision.action == "delete" and decision.reason == "not pushed":
            if name is not None and role_pushed(was, name):
                effects.rescoped.append(entry.label)
                effects.scope_change = _scope_change(was, idp)


def _touched(outbound: Outbound, rows: Sequence[Row]) -> dict[str, list[tuple[str, str]]]:
    """Role id -> the users its row's changes touched, for the outbox rows of ``rows``
    whose push compares only those (:attr:`~idprov.provisioning.outbox.OutboxRow.members_delta`,
    no change left untracked there): what a push takes out of a group is among them."""
    from idprov.provisioning.outbox import OutboxRow

    outbox = outbound.state.outbox
    in_part = {r.id: r for r in rows if isinstance(r, OutboxRow) and r.members_delta}
    if in_part and outbound.state.writes_unfinished():
        return {}  # a directory write cut off: every group is compared whole
    untracked = outbox.untracked_of([(r.idp, r.local_id) for r in in_part.values()])
    in_part = {i: r for i, r in in_part.items() if untracked[(r.idp, r.local_id)] == 0}
    found = outbox.touched(sorted(in_part)) if in_part else {}
    return {in_part[i].local_id: users for i, users in found.items()}


SCOPE_CHANGE = "the configuration's change of its scope"
"""What the guard's reason for holding a row a change of scope took out says."""
SCOPE_TRIP = "scope"
"""The kind of a trip only a sync accepts (see the module's doc)."""

PUSHED = ("none", "scoped", "all")
"""``push_roles`` from the fewest groups to the most."""


def scope_key(idp: IdentityProviderConfig) -> str:
    """What decides who and which groups are in ``idp``'s scope, as recorded: its
    provisioning roles (case-folded, sorted; ``null``: every user) and ``push_roles``."""
    roles = idp.provisioning_roles
    kept = None if roles is None else sorted({r.casefold() for r in roles})
    return json.dumps({"provisioning_roles": kept, "push_roles": idp.push_roles})


def _parsed(scope: str) -> tuple[list[str] | None, PushRoles]:
    """(provisioning roles, push_roles) of a recorded scope."""
    value = json.loads(scope)
    if not isinstance(value, dict):  # an early record: the provisioning roles alone
        return value, "scoped"
    pushed = value["push_roles"]
    return value["provisioning_roles"], pushed if pushed in PUSHED else "scoped"


def _recorded_idp(idp: IdentityProviderConfig, scope: str) -> IdentityProviderConfig:
    """``idp`` as it was under recorded ``scope``: what decides scope, from the record."""
    roles, pushed = _parsed(scope)
    return replace(idp, provisioning_roles=roles, push_roles=pushed)


def as_recorded(
    outbound: Outbound, idps: Sequence[IdentityProviderConfig]
) -> dict[str, IdentityProviderConfig]:
    """Each of ``idps`` as its recorded scope has it (itself, where that is what the
    configuration says): what was pushed under since the last sync."""
    changed = recorded_scopes(outbound, [idp.name for idp in idps])
    return {i.name: _recorded_idp(i, changed[i.name]) if i.name in changed else i for i in idps}


def recorded_scopes(outbound: Outbound, names: Sequence[str]) -> dict[str, str]:
    """IdP -> its recorded scope, for those of ``names`` whose configuration now says
    otherwise; each push adds the scope it goes out under to the record (see the
    module's doc). An IdP seen for the first time has its scope recorded, unless it
    holds users already (then its first sync records it: what was in force before is
    not known)."""
    names = [n for n in names if outbound.configured(n)]
    if not names:
        return {}
    recorded = outbound.state.outbox.scopes()
    now = {n: scope_key(outbound.idp(n)) for n in names}
    noted: dict[str, str] = {}
    for name in names:
        was = recorded.get(name)
        if was is None:
            if not outbound.state.ledger.holds_users(name):
                noted[name] = now[name]
        elif _union(was, now[name]) != was:
            noted[name] = _union(was, now[name])
    if noted:
        with outbound.state.transaction():
            for name, scope in noted.items():
                outbound.state.outbox.note_scope(name, scope)
    changed: dict[str, str] = {}
    for name in names:
        was = noted.get(name, recorded.get(name))
        if was is not None and was != now[name]:
            changed[name] = was
    return changed


def _union(a: str, b: str) -> str:
    """The scope holding every user and group either holds (null: every user)."""
    (first, pushed), (second, also) = _parsed(a), _parsed(b)
    roles = None if first is None or second is None else sorted(set(first) | set(second))
    most = max(pushed, also, key=PUSHED.index)
    return json.dumps({"provisioning_roles": roles, "push_roles": most})


def _scope_change(was: IdentityProviderConfig, idp: IdentityProviderConfig) -> str:
    """``pushed under provisioning_roles [a, b] since the last sync; now [b]`` (and
    ``push_roles`` where it changed)."""
    text = f"pushed under provisioning_roles {_roles(was)}"
    now = f"now {_roles(idp)}"
    if was.push_roles != idp.push_roles:
        text += f", push_roles {was.push_roles}"
        now += f", push_roles {idp.push_roles}"
    return f"{text} since the last sync; {now}"


def _roles(idp: IdentityProviderConfig) -> str:
    """A scope for a message: ``[a, b]``, or ``null`` (every user)."""
    roles = idp.provisioning_roles
    return "null" if roles is None else "[" + ", ".join(roles) + "]"


def harmless(outbound: Outbound, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
    """Those of ``rows`` (of configured IdPs) whose push destroys nothing of its own:
    no user deprovisioned, no group deleted, no attribute lost, no member taken out
    of a group (a member being deprovisioned too: that is its user's row's effect,
    and that row may stay held)."""
    hit: set[tuple[str, str]] = set()
    for kind in ("user", "role"):
        mine = [r for r in rows if r.kind == kind]
        found = effects_of(outbound, outbound.directory, mine) if mine else []
        hit.update((e.idp, local_id) for e in found for local_id in e.hit)
    return [r for r in rows if outbound.configured(r.idp) and (r.idp, r.local_id) not in hit]


# ---------------------------------------------------------------- holding rows
@dataclass
class Allowed:
    """What the rows of one allowance did in a :class:`GuardWindow`."""

    passed: dict[str, Effects] = field(default_factory=dict)
    tripped: dict[str, list[Trip]] = field(default_factory=dict)
    held: dict[str, Effects] = field(default_factory=dict)
    """IdP -> the effects of the rows held there (for a report of the whole change)."""
    let: dict[str, Effects] = field(default_factory=dict)
    """IdP -> the effects of the rows let through there (:attr:`passed` without what
    was counted in before it was pushed: :meth:`GuardWindow.prime`)."""

    def saved(self) -> dict[str, Any]:
        """What :meth:`restored` takes back (an import's journal: see
        :meth:`GuardWindow.resume`)."""
        return {
            "passed": {idp: e.saved() for idp, e in self.passed.items()},
            "tripped": {idp: [t.to_dict() for t in ts] for idp, ts in self.tripped.items()},
            "held": {idp: e.saved() for idp, e in self.held.items()},
            "let": {idp: e.saved() for idp, e in self.let.items()},
        }

    @classmethod
    def restored(cls, data: Mapping[str, Any]) -> Allowed:
        return cls(
            {idp: Effects.restored(e) for idp, e in data["passed"].items()},
            {idp: [Trip(**t) for t in ts] for idp, ts in data["tripped"].items()},
            {idp: Effects.restored(e) for idp, e in data["held"].items()},
            {idp: Effects.restored(e) for idp, e in data["let"].items()},
        )

    def renamed(self, old: str, new: str) -> Allowed:
        """These judgements with IdP ``old``'s under ``new`` (`idp rename`: a cut
        import's re-run counts what went at the IdP under its new name), merged with
        any ``new`` had."""

        def moved(effects: dict[str, Effects]) -> dict[str, Effects]:
            out = {idp: e for idp, e in effects.items() if idp != old}
            if old in effects:
                out[new] = replace(effects[old], idp=new).merged(out.get(new))
            return out

        at = re.compile(rf" at {re.escape(old)}(?= \(|;|:|$)")
        tripped = {idp: ts for idp, ts in self.tripped.items() if idp != old}
        if old in self.tripped:
            tripped[new] = tripped.get(new, []) + [
                replace(t, idp=new, message=at.sub(f" at {new}", t.message, count=1))
                for t in self.tripped[old]
            ]
        return Allowed(moved(self.passed), tripped, moved(self.held), moved(self.let))


@dataclass
class GuardWindow:
    """One change judged across the batches it is pushed in (an import's, the outbox
    worker's): what was let through counts with every later batch, and once the guard
    trips at an IdP, the change's later rows there are held too (else the batches
    after a held one, each under the guard, would delete what it held back).

    The rows of each allowance are judged as one change (a judging command's own rows
    with its allowance, whatever their own): what passed under one allowance is not
    counted against rows judged with another, nor does its trip hold them (each
    command's change is judged on its own, as it was when it was made: 12 deletes
    allowed and pushed are not counted again against a 13th that was not). ``base``:
    effects counted with every row judged here, whatever its allowance (a sync's plan,
    which judged its IdPs whole)."""

    base: dict[str, Effects] = field(default_factory=dict)
    allowances: dict[int | None, Allowed] = field(default_factory=dict)
    held_rows: set[int] = field(default_factory=set)
    """Outbox rows held here: a later batch's row coalescing into one is the same
    change's, not one that waits with another's."""

    def of(self, allowance: int | None) -> Allowed:
        """What the rows judged with ``allowance`` did so far."""
        return self.allowances.setdefault(allowance, Allowed())

    def resume(self, saved: Mapping[str, Any], allowance: int | None) -> None:
        """Take back what the interrupted run of the same change judged (its
        :meth:`Allowed.saved`, made with ``saved["allowance"]``) as the start of the
        judgement of the rows judged with ``allowance``: a re-run after a kill counts
        what its cut run let through (it went out, or goes with the re-run), so the
        change is judged whole, as one uninterrupted run judges it. Its trips, and what
        they held, hold the re-run's rows only when they were judged with the same
        allowance: another one given to the re-run judges afresh the rest of the change
        with what the cut run held of it (the re-run pushes those rows again as its own:
        ``BatchWriter._finish_left_pushes``), as one uninterrupted run with that
        allowance judges it."""
        before = Allowed.restored(saved["judged"])
        self.held_rows.update(saved["held_rows"])
        allowed = self.of(allowance)
        for idp, effects in before.passed.items():
            allowed.passed[idp] = effects.merged(allowed.passed.get(idp))
        for idp, effects in before.let.items():
            allowed.let[idp] = effects.merged(allowed.let.get(idp))
        if saved["allowance"] == allowance:
            for idp, effects in before.held.items():
                allowed.held[idp] = effects.merged(allowed.held.get(idp))
            for idp, trips in before.tripped.items():
                allowed.tripped.setdefault(idp, []).extend(trips)

    def prime(self, effects: Iterable[Effects], allowance: int | None) -> None:
        """Count ``effects`` with the rows judged with ``allowance`` from now on, as if
        they had passed: an import's leavers, judged before anything is written, are
        judged with its rows (and counted once when they are pushed in turn)."""
        allowed = self.of(allowance)
        for e in effects:
            allowed.passed[e.idp] = e.merged(allowed.passed.get(e.idp))


def hold_over(
    outbound: Outbound,
    rows: list[OutboxRow],
    report: OutboundReport,
    allow: int | None = None,
    window: GuardWindow | None = None,
    own: Collection[int] | None = None,
    whole: Collection[str] = (),
    later: Collection[int] = (),
) -> list[OutboxRow]:
    """Hold (in the outbox, status ``held``) the rows of the IdPs where they would
    trip the guard; return the others, to push (but those of ``later``: failed rows
    whose next try has not come, judged with the others, they wait for it, their
    claim given back). A row is judged with the allowance
    that travels with it (``allowed``: the ``--allow-deletes`` of the change it
    carries, the smaller of two, whichever drainer pushes it), the rows of each
    allowance together, as one change, apart from the others'. The judging command's
    own rows (``own``, their ids; by default every row when ``allow`` is given) are
    judged together too, with ``allow``, as its change: whole, whatever other changes
    coalesced into some of them. A row goes only if every judgement it is in lets it
    (see the module's doc). With ``window``, they are judged as part of the changes it
    stands for (see :class:`GuardWindow`). A held row loses its allowance
    (:meth:`~idprov.provisioning.outbox.Outbox.hold`): `outbox release` gives one.

    The marks of changes no guard judged whole yet
    (:attr:`~idprov.provisioning.outbox.OutboxRow.unjudged`) that the rows let go
    carry are cleared only where that change was judged whole: at the IdPs ``whole``
    (every marked row there is in ``rows``), and the ``own`` rows' own mark (the
    command's change, judged whole here). Elsewhere the change was judged in part
    (the rows a command pushing some IdPs only, ``--no-wait``, met there), and the
    rows stay marked for the worker to judge it whole: cleared, its batches of them
    were judged alone, and it went out a batch at a time. A row of ``later`` keeps
    its mark: not pushed now, it is judged again with its IdP's others when it is."""
    mine = set(own) if own is not None else {r.id for r in rows} if allow is not None else set()
    groups = _judgements(rows, allow, mine)
    judged = Counter(r.id for members in groups.values() for r in members)
    held: set[int] = set()
    leaving: dict[str, set[str]] = {}
    for allowed in sorted(groups, key=lambda a: -1 if a is None else a, reverse=True):
        members = [r for r in groups[allowed] if r.id not in held]
        passed, found = _hold_over(outbound, members, report, allowed, window, leaving)
        held.update(r.id for r in members if r.id not in passed)
        for row in members:
            judged[row.id] -= 1
        _note_leaving(leaving, found, [r for r in members if r.id in passed and not judged[r.id]])
    from idprov.provisioning.outbox import OWN_PUSH

    kept = [r for r in rows if r.id not in held]
    cleared = [  # judged whole (the held rows' marks went with their hold)
        r
        for r in kept
        if r.unjudged
        and r.id not in later
        and (r.idp in whole or (own is not None and r.id in own and r.unjudged == OWN_PUSH))
    ]
    waiting = [r.id for r in kept if r.id in later]
    if cleared or waiting:
        with outbound.state.transaction():
            outbound.state.outbox.judged(cleared)
            outbound.state.outbox.release_rows(waiting, [outbound.owner])
    return [r for r in kept if r.id not in later]


def _judgements(
    rows: list[OutboxRow], allow: int | None, mine: Collection[int]
) -> dict[int | None, list[OutboxRow]]:
    """Allowance -> the rows judged together with it: each row with its own
    (``allowed``), and the judging command's rows (``mine``) with ``allow`` too."""
    groups: dict[int | None, list[OutboxRow]] = {}
    for row in rows:
        if row.id in mine:
            groups.setdefault(allow, []).append(row)
            if row.status == "held":  # the change it carried was held: the command's now
                continue
        if row.id not in mine or row.allowed != allow:
            groups.setdefault(row.allowed, []).append(row)
    return groups


def _note_leaving(leaving: dict[str, set[str]], found: list[Effects], let: list[OutboxRow]) -> None:
    """Add to ``leaving`` (IdP -> user ids) the users that rows ``let`` through every
    judgement deprovision: a group's row judged after them does not count their
    removal from it again (it is part of their deprovision, judged with their rows)."""
    for effects in found:
        ids = {r.local_id for r in let if r.idp == effects.idp and r.kind == "user"}
        leaving.setdefault(effects.idp, set()).update(effects.leaving & ids)


def _hold_over(
    outbound: Outbound,
    rows: list[OutboxRow],
    report: OutboundReport,
    allow: int | None,
    window: GuardWindow | None,
    leaving: Mapping[str, set[str]],
) -> tuple[set[int], list[Effects]]:
    """:func:`hold_over` for rows judged with one allowance, ``allow``: the ids of
    those it lets go, and their effects (``leaving``: users deprovisioned by rows let
    through before)."""
    found = effects_of(outbound, outbound.directory, rows, leaving)
    if window is None:
        verdict = judge(outbound, found, allow)
    else:
        mine = window.of(allow)
        counted = [e.merged(mine.passed.get(e.idp)).merged(window.base.get(e.idp)) for e in found]
        verdict = judge(outbound, counted, allow)
        _remember(mine, verdict, found, {r.idp for r in rows})
    tripped = {t.idp for t in verdict.trips if t.kind != SCOPE_TRIP}
    rescoped = {(e.idp, label) for e in found for label in e.rescoped}
    held = [r for r in rows if r.idp in tripped or (r.idp, r.label) in rescoped]
    if window is not None:
        window.held_rows.update(r.id for r in held)
        mine = window.of(allow)
        for e in found:
            if e.idp in tripped:  # every row there is held
                mine.held[e.idp] = e.merged(mine.held.get(e.idp))
    if held:
        _hold(outbound, held, verdict, report)
    ids = {r.id for r in held}
    return {r.id for r in rows if r.id not in ids}, found


def _remember(window: Allowed, verdict: Verdict, found: list[Effects], idps: set[str]) -> None:
    """Add this batch to ``window`` (its allowance's): the trips of earlier batches
    hold it too."""
    for trip in verdict.trips:
        if trip.kind != SCOPE_TRIP:  # only its own rows are held: the later batches go on
            window.tripped.setdefault(trip.idp, []).append(trip)
    now = {t.idp for t in verdict.trips}
    verdict.trips += [t for i in sorted(idps - now) for t in window.tripped.get(i, [])]
    for effects in found:
        if effects.idp not in window.tripped:
            window.passed[effects.idp] = effects.merged(window.passed.get(effects.idp))
            window.let[effects.idp] = effects.merged(window.let.get(effects.idp))


def _hold(
    outbound: Outbound, rows: list[OutboxRow], verdict: Verdict, report: OutboundReport
) -> None:
    """Hold ``rows`` with the guard's reason, recorded in the audit log and the report."""
    with outbound.state.transaction():
        for idp in sorted({r.idp for r in rows}):
            mine = [r for r in rows if r.idp == idp]
            why = "; ".join(dict.fromkeys(t.message for t in verdict.trips if t.idp == idp))
            outbound.state.outbox.hold(mine, why)
            outbound.state.audit(
                actor=outbound.actor,
                application=outbound.application,
                action="outbox.held",
                target=idp,
                details={"rows": len(mine), "guard": why},
                run=outbound.run,
            )
            for row in mine:
                report.note("held", idp, row.id)
    report.guard += [t.message for t in verdict.trips if t.message not in report.guard]
