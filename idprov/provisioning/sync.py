"""`idprov sync`: bring every identity provider into line with the userstores.

A **plan** is computed per IdP from all users and roles of all userstores and the
ledger, with the same decisions the engine makes (idprov/provisioning/decide.py):
creates, updates (with the attributes that changed), deprovisions, group creates,
renames, membership changes and deletes. Only differences are in it: when
everything is in sync the plan is empty and nothing is sent.

Applying a plan enqueues its items in the outbox (one transaction) and drains
them, together with every earlier pending or failed row of those IdPs. The plan is
refused, and nothing is changed anywhere, when a userstore could not be read in
full (a directory that is down is never "empty"), or when its deprovisions exceed
an IdP's deletion guard, unless ``allow_deletes`` says how many are expected.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from idprov.db import now
from idprov.errors import ConflictError, GuardError, IdprovError
from idprov.model import QualifiedName, Role, User, UserQuery
from idprov.provisioning.decide import decide_role, decide_user, in_scope
from idprov.provisioning.guard import Effects, Trip, trips
from idprov.provisioning.results import OutboundReport

if TYPE_CHECKING:
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.outbox import Kind
    from idprov.provisioning.service import IdentityService


@dataclass
class PlanItem:
    """One difference to apply at one IdP."""

    kind: str
    local_id: str
    domain: str
    label: str
    action: str
    reason: str
    changed: list[str] = field(default_factory=list)
    """Users: attributes that differ. Roles: members added (+name) and removed (-name)."""
    digest: str | None = None
    """Users: the hash of what would be sent (a saved plan is refused if it moved)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IdpPlan:
    """The differences at one IdP, and what the deletion guard says of them."""

    idp: str
    items: list[PlanItem] = field(default_factory=list)
    provisioned: int = 0
    guard: str | None = None
    """Why the deletion guard refuses this plan (None: it does not)."""
    effects: Effects | None = None
    """Its destructive effects, as the deletion guard counts them."""
    trips: list[Trip] = field(default_factory=list)

    @property
    def deprovisions(self) -> int:
        return sum(1 for i in self.items if i.kind == "user" and i.action in ("delete", "disable"))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            key = f"{item.kind}.{item.action}"
            out[key] = out.get(key, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "idp": self.idp,
            "provisioned": self.provisioned,
            "counts": self.counts(),
            "deprovisions": self.deprovisions,
            "guard": self.guard,
            "effects": self.effects.to_dict() if self.effects is not None else None,
            "items": [i.to_dict() for i in self.items],
        }


@dataclass
class SyncPlan:
    """Every IdP's differences, as computed at ``created``."""

    application: str
    idps: list[IdpPlan]
    source_errors: list[str] = field(default_factory=list)
    fingerprint: str = ""
    created: str = ""

    @property
    def empty(self) -> bool:
        return all(not p.items for p in self.idps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "created": self.created,
            "fingerprint": self.fingerprint,
            "source_errors": self.source_errors,
            "idps": [p.to_dict() for p in self.idps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyncPlan:
        idps = [
            IdpPlan(p["idp"], [PlanItem(**i) for i in p["items"]], p["provisioned"], p["guard"])
            for p in data["idps"]
        ]
        return cls(
            data["application"],
            idps,
            list(data["source_errors"]),
            data["fingerprint"],
            data["created"],
        )


@dataclass
class SyncResult:
    """What a sync did: the plan, the outbound report, the run id in the audit log."""

    run: str
    plan: SyncPlan
    outbound: OutboundReport | None = None
    dry_run: bool = False

    @property
    def outbound_failed(self) -> bool:
        return self.outbound is not None and not self.outbound.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "dry_run": self.dry_run,
            "plan": self.plan.to_dict(),
            "outbound": self.outbound.to_dict() if self.outbound is not None else None,
        }


# ---------------------------------------------------------------- reading the source
@dataclass
class Source:
    """All users and roles of all userstores, or the errors that stopped the read."""

    users: dict[str, User] = field(default_factory=dict)
    roles: list[tuple[Role, list[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_source(service: IdentityService) -> Source:
    source = Source()
    for store_config in service.config.userstores:
        domain = store_config.domain
        try:
            store = service.store(domain)
            # one read (a single statement, or one paged search): pages by offset
            # shift under a concurrent deletion and would name the wrong user
            page = store.list_users(UserQuery(limit=None))
            source.users.update({u.id: u for u in page.items})
            source.roles += store.roles_with_member_ids()
        except IdprovError as exc:
            source.errors.append(f"userstore {domain}: {exc.message}")
    service.directory.with_internal_roles(list(source.users.values()))
    for role in service.internal.all():
        source.roles.append((role, [u for _, u in service.role_members(role.domain, role.id)]))
    return source


def recheck(service: IdentityService, source: Source, entries: dict[str, LedgerEntry]) -> None:
    """Look up, by id, every provisioned user (of ``entries``) the read did not
    return: one that is there after all (the read raced a change) is kept, never
    deprovisioned. Users of a userstore no longer configured are gone."""
    configured = {u.domain.casefold() for u in service.config.userstores}
    missing: dict[str, list[str]] = {}
    for entry in entries.values():
        if entry.local_id not in source.users and entry.remote_id:
            if entry.domain.casefold() in configured:
                missing.setdefault(entry.domain, []).append(entry.local_id)
    for domain, ids in missing.items():
        try:
            source.users.update(service.users_by_id((domain, i) for i in ids))
        except IdprovError as exc:
            source.errors.append(f"userstore {domain}: {exc.message}")


# ---------------------------------------------------------------- planning
def compute_plan(service: IdentityService, idps: Sequence[str] | None = None) -> SyncPlan:
    """The differences between the userstores and the ledger, per IdP."""
    names = list(idps) if idps else service.targets()
    for name in names:
        service.idp(name)  # NotFoundError for an unknown one
    source = read_source(service)
    plans = [_plan_idp(service, name, source) for name in names]
    plan = SyncPlan(service.application, plans, source.errors, created=now())
    plan.fingerprint = plan_fingerprint(service, plan)
    return plan


def _plan_idp(service: IdentityService, name: str, source: Source) -> IdpPlan:
    idp = service.idp(name)
    connector = type(service.connector(name))
    ledger = service.state.ledger
    users = ledger.for_idp(name, "user")
    if not source.errors:
        recheck(service, source, users)
    plan = IdpPlan(
        name, provisioned=sum(1 for e in users.values() if e.remote_id and e.state == "active")
    )
    plan.effects = effects = Effects(name, idp.deprovision or "delete")
    for user in source.users.values():
        decision = decide_user(idp, connector, user, users.get(user.id))
        effects.note_user(user.qualified_name, decision, users.get(user.id))
        if decision.action != "none":
            plan.items.append(
                PlanItem(
                    "user",
                    user.id,
                    user.domain,
                    user.qualified_name,
                    decision.action,
                    decision.reason,
                    decision.changed,
                    decision.digest,
                )
            )
    if not source.errors:  # never read "could not be read" as "deleted"
        for local_id, entry in users.items():
            if local_id not in source.users:
                decision = decide_user(idp, connector, None, entry)
                effects.note_user(entry.label, decision, entry)
                if decision.action != "none":
                    plan.items.append(
                        PlanItem(
                            "user",
                            local_id,
                            entry.domain,
                            entry.label,
                            decision.action,
                            decision.reason,
                        )
                    )
    plan.items += _plan_roles(service, name, source, effects, users)
    plan.trips = trips(idp, effects, service.state.ledger.counts(name), None)
    plan.guard = "; ".join(t.message for t in plan.trips) or None
    return plan


def _plan_roles(
    service: IdentityService,
    name: str,
    source: Source,
    effects: Effects,
    users: dict[str, LedgerEntry],
) -> list[PlanItem]:
    idp = service.idp(name)
    ledger = service.state.ledger
    entries = ledger.for_idp(name, "role")
    members = ledger.all_members(name)
    items = []
    for role, member_ids in source.roles:
        desired = {
            m for m in member_ids if m in source.users and in_scope(idp, source.users[m].roles)
        }
        decision = decide_role(
            idp, role.qualified_name, entries.get(role.id), desired, members.get(role.id, set())
        )
        effects.note_role(role.qualified_name, decision, _names(source, users, decision.remove))
        if decision.action != "none":
            label = str(QualifiedName(role.domain, role.name))
            changed = [f"+{_label(source, u)}" for u in decision.add]
            changed += [f"-{_label(source, u)}" for u in decision.remove]
            if decision.rename:
                changed.insert(0, f"rename from {entries[role.id].label}")
            items.append(
                PlanItem(
                    "role", role.id, role.domain, label, decision.action, decision.reason, changed
                )
            )
    if not source.errors:
        known = {r.id for r, _ in source.roles}
        for local_id, entry in entries.items():
            if local_id not in known and entry.remote_id:
                effects.groups.append(entry.label)
                items.append(
                    PlanItem(
                        "role", local_id, entry.domain, entry.label, "delete", "deleted locally"
                    )
                )
    return items


def _label(source: Source, user_id: str) -> str:
    user = source.users.get(user_id)
    return user.qualified_name if user is not None else user_id


def _names(source: Source, users: dict[str, Any], ids: Sequence[str]) -> dict[str, str]:
    """Labels of user ids: from the source, else the ledger."""
    out = {}
    for user_id in ids:
        user = source.users.get(user_id)
        entry = users.get(user_id)
        out[user_id] = user.qualified_name if user else entry.label if entry else user_id
    return out


def plan_fingerprint(service: IdentityService, plan: SyncPlan) -> str:
    """Identifies the plan's items and the ledger it was computed against."""
    h = hashlib.sha256()
    for idp_plan in plan.idps:
        h.update(json.dumps(idp_plan.to_dict(), sort_keys=True).encode())
    h.update(service.state.ledger.digest([p.idp for p in plan.idps]).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- applying
def check_plan(plan: SyncPlan, allow_deletes: int | None) -> None:
    """Refuse a plan read from an incomplete source, or over a deletion guard."""
    check_source(plan)
    tripped = [
        t for p in plan.idps for t in p.trips if allow_deletes is None or t.count > allow_deletes
    ]
    if tripped:
        needed = max(t.count for t in tripped)
        counts: dict[str, int] = {}
        for trip in tripped:
            counts[trip.idp] = counts.get(trip.idp, 0) + 1
        raise GuardError(
            "deletion guard: " + "; ".join(t.message for t in tripped) + "; nothing was changed",
            hint="check the plan with `idprov plan`; if these changes are expected, "
            f"run `idprov sync --allow-deletes {needed}`",
            tripped=counts,
        )


def check_source(plan: SyncPlan) -> None:
    """Refuse a plan (to apply or to show) read from an incomplete source."""
    if plan.source_errors:
        raise GuardError(
            "the userstores could not be read in full, so nothing was changed: "
            + "; ".join(plan.source_errors),
            hint="fix the userstore (is the directory up? are the credentials right?) and "
            "run sync again",
        )


def apply_plan(
    service: IdentityService, plan: SyncPlan, run: str, allow_deletes: int | None = None
) -> OutboundReport:
    """Enqueue the plan's items and drain them, with every pending or failed row of
    its IdPs: deprovisions first, so that an account re-created under the same name
    (a new entry, a new id) finds its name free at the target."""
    check_plan(plan, allow_deletes)
    first: list[int] = []
    with service.unit_of_work(push=False) as uow:
        uow.begin()
        for idp_plan in plan.idps:
            for item in sorted(idp_plan.items, key=lambda i: i.kind != "user"):
                kind: Kind = "user" if item.kind == "user" else "role"
                before = len(uow.rows)
                uow.enqueue(kind, item.local_id, item.domain, item.label, idps=[idp_plan.idp])
                if item.action in ("delete", "disable") and kind == "user":
                    first += uow.rows[before:]
        # this run drains every row of its IdPs, not only those it just enqueued
        rest = [r.id for r in service.state.outbox.rows(idps=[p.idp for p in plan.idps])]
    report = OutboundReport()
    done = set(first)
    for ids in (first, [i for i in rest if i not in done]):
        if ids:
            report.merge(service.push(ids, uow.passwords, guarded=True) or OutboundReport())
    return report


def run_sync(
    service: IdentityService,
    idps: Sequence[str] | None = None,
    dry_run: bool = False,
    allow_deletes: int | None = None,
    saved: SyncPlan | None = None,
) -> SyncResult:
    """Plan, and unless ``dry_run`` apply; with ``saved``, apply exactly that plan,
    refused if the userstores or the ledger have moved since it was made."""
    run = uuid.uuid4().hex[:12]
    plan = compute_plan(service, idps or ([p.idp for p in saved.idps] if saved else None))
    if saved is not None and saved.fingerprint != plan.fingerprint:
        raise ConflictError(
            "the saved plan is out of date: the userstores or the ledger changed since it "
            "was made; nothing was changed",
            hint="make a new plan with `idprov plan --out plan.json` and review it",
        )
    result = SyncResult(run, plan, dry_run=dry_run)
    if dry_run:
        check_source(plan)  # a plan from a partial read would show deletions that are not
        return result
    service.run = run
    outcome = "refused"
    try:
        result.outbound = apply_plan(service, plan, run, allow_deletes)
        outcome = "ok" if result.outbound.ok else "failed"
    finally:
        _record_run(service, result, outcome)
        service.run = None
    return result


def _record_run(service: IdentityService, result: SyncResult, outcome: str) -> None:
    counts: dict[str, dict[str, int]] = {p.idp: p.counts() for p in result.plan.idps}
    if result.outbound is not None:
        for name, report in result.outbound.idps.items():
            counts.setdefault(name, {})
            counts[name].update({"done": report.count("done"), "failed": report.count("failed")})
    with service.state.transaction():
        service.state.audit(
            actor=service.actor,
            application=service.application,
            action="sync.run",
            target=", ".join(counts) or "(no IdPs)",
            outcome=outcome,
            details=counts,
            run=result.run,
        )
