"""`idprov sync`: bring every identity provider into line with the userstores.

A **plan** is computed per IdP from all users and roles of all userstores and the
ledger, with the same decisions the engine makes (idprov/provisioning/decide.py):
creates, updates (with the attributes that changed), deprovisions, group creates,
renames, membership changes and deletes. Only differences are in it: when
everything is in sync the plan is empty and nothing is sent.

Applying a plan enqueues its items in the outbox (one transaction) and drains
them, together with every earlier pending or failed row of those IdPs. The plan is
refused, and nothing is changed anywhere, when a userstore could not be read in
full (a directory that is down is never "empty"). The plan of an IdP whose effects
exceed its deletion guard (unless ``allow_deletes`` says how many are expected) is
held: nothing is enqueued or sent there, and the other IdPs' plans are applied (the
guard judges each IdP's effects apart, as it does for every push); a saved plan is
applied whole or refused whole. The
users of a name that several directory entries hold are in no item (which entry the
name means cannot be told): the plan says which (``ambiguous``), and the rest goes on.
"""

from __future__ import annotations

import errno
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.db import now
from idprov.errors import ConfigError, ConflictError, GuardError, UsageError, from_os_error
from idprov.model import AmbiguousName
from idprov.provisioning.guard import KINDS, Effects, Trip
from idprov.provisioning.results import OutboundReport
from idprov.provisioning.retention import prune_audit

if TYPE_CHECKING:
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
    unchanged: list[tuple[str, str, str]] = field(default_factory=list, repr=False)
    """(local id, inputs digest, hash) of users decided in full and found unchanged:
    their digests are noted when the plan is applied (not part of the plan itself)."""

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
    ambiguous: list[AmbiguousName] = field(default_factory=list)
    """Names that several entries of a userstore hold: their users are in no item."""
    source_hints: list[str] = field(default_factory=list)
    """How to fix each of ``source_errors``, as its store said (not in a saved plan)."""
    refused: list[ConfigError] = field(default_factory=list)
    """The IdPs left out of the plan because their scope names a role no userstore has
    (:mod:`~idprov.provisioning.scope_roles`): nothing is enqueued or sent there."""

    @property
    def empty(self) -> bool:
        return all(not p.items for p in self.idps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "created": self.created,
            "fingerprint": self.fingerprint,
            "source_errors": self.source_errors,
            "ambiguous": [a.to_dict() for a in self.ambiguous],
            "idps": [p.to_dict() for p in self.idps],
        }

    @classmethod
    def from_dict(cls, data: Any) -> SyncPlan:
        """The plan :meth:`to_dict` wrote; ValueError naming the first key that is wrong."""
        plan = _fields(data, "", {"application": str, "idps": list, "source_errors": list})
        idps = []
        for i, p in enumerate(plan["idps"]):
            idp = _fields(p, f"idps[{i}].", {"idp": str, "items": list, "provisioned": int})
            items = [
                _plan_item(item, f"idps[{i}].items[{j}]") for j, item in enumerate(idp["items"])
            ]
            guard = p.get("guard")
            if guard is not None and not isinstance(guard, str):
                raise ValueError(f"idps[{i}].guard: expected text or null")
            idps.append(IdpPlan(idp["idp"], items, idp["provisioned"], guard))
        extra = _fields(data, "", {"fingerprint": str, "created": str})
        errors = [str(e) for e in plan["source_errors"]]
        ambiguous = [
            _ambiguous(a, f"ambiguous[{i}]") for i, a in enumerate(data.get("ambiguous", []))
        ]
        return cls(
            plan["application"], idps, errors, extra["fingerprint"], extra["created"], ambiguous
        )


def _ambiguous(data: Any, where: str) -> AmbiguousName:
    item = _fields(data, f"{where}.", {"domain": str, "username": str, "dns": list, "ids": list})
    dns, ids = [str(d) for d in item["dns"]], [str(i) for i in item["ids"]]
    return AmbiguousName(item["domain"], item["username"], dns, ids)


def _plan_item(data: Any, where: str) -> PlanItem:
    names = ("kind", "local_id", "domain", "label", "action", "reason")
    item = _fields(data, f"{where}.", {**dict.fromkeys(names, str), "changed": list})
    unknown = sorted(set(data) - {f.name for f in fields(PlanItem)})
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    digest = data.get("digest")
    if digest is not None and not isinstance(digest, str):
        raise ValueError(f"{where}.digest: expected text or null")
    return PlanItem(**{**item, "changed": [str(c) for c in item["changed"]], "digest": digest})


def _fields(data: Any, where: str, wanted: dict[str, type]) -> dict[str, Any]:
    """The ``wanted`` keys of the mapping ``data``, each of its type, or ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"{where.rstrip('.') or 'top level'}: expected a JSON object")
    out = {}
    for key, kind in wanted.items():
        value = data.get(key)
        if type(value) is not kind:  # bool is not int here
            name = {str: "text", int: "a whole number", list: "a list"}[kind]
            raise ValueError(
                f"{where}{key}: " + ("missing" if value is None else f"expected {name}")
            )
        out[key] = value
    return out


def load_plan(path: Path) -> SyncPlan:
    """The plan `idprov plan --out` saved in ``path``, or an error naming the file,
    what is wrong with it and how to make a good one."""
    again = f"save the plan again with `idprov plan --out {path}` and apply that file"
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        error = from_os_error(exc, "read the saved plan")
        if exc.errno == errno.ENOENT:
            error.hint = f"check the path, or {again}"
        raise error from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a saved plan: not UTF-8 text", hint=again) from exc
    try:
        return SyncPlan.from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        message = f"not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg.lower()})"
        raise UsageError(f"{path} is not a saved plan: {message}", hint=again) from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not a saved plan: {exc}", hint=again) from exc


@dataclass
class SyncResult:
    """What a sync did: the plan, the outbound report, the run id in the audit log."""

    run: str
    plan: SyncPlan
    outbound: OutboundReport | None = None
    dry_run: bool = False
    drift: dict[str, Any] | None = None
    """What ``verify`` found at each IdP (None: not asked)."""
    repaired: OutboundReport | None = None
    """The push that ``repair`` made (None: not asked, or a dry run)."""
    audit_removed: int = 0
    """Audit entries older than ``audit.keep_days`` that the run removed."""
    held: GuardError | None = None
    """The deletion guard's refusal of some IdPs' plans, held while the others' were
    applied (None: no plan was held). Its ``tripped`` names the IdPs held."""

    @property
    def outbound_failed(self) -> bool:
        return self.outbound is not None and not self.outbound.ok

    @property
    def ok(self) -> bool:
        """Nothing failed, or the repair finished it: the push, the verify's reads,
        the repair."""
        from idprov.provisioning.verify import failed

        repair_failed = self.repaired is not None and not self.repaired.ok
        return not (self._unrepaired() or repair_failed or failed(self.drift))

    def _unrepaired(self) -> bool:
        """Whether an operation of the push failed that the repair did not then do
        (a user the target lost failed its update, and the repair made it again)."""
        if self.outbound is None or self.outbound.ok:
            return False
        repaired = self.repaired.idps if self.repaired is not None else {}
        done = {
            (name, op.kind, op.label)
            for name, report in repaired.items()
            for op in report.operations
            if op.outcome == "done"
        }
        return any(
            op.outcome == "failed" and (name, op.kind, op.label) not in done
            for name, report in self.outbound.idps.items()
            for op in report.operations
        )

    def to_dict(self) -> dict[str, Any]:
        payload = {
            "run": self.run,
            "dry_run": self.dry_run,
            "plan": self.plan.to_dict(),
            "outbound": self.outbound.to_dict() if self.outbound is not None else None,
            "refused": [e.to_dict() for e in self.plan.refused],
        }
        if self.drift is not None:
            payload["drift"] = self.drift
            payload["repair"] = self.repaired.to_dict() if self.repaired is not None else None
        if not self.dry_run:
            payload["audit_removed"] = self.audit_removed
            payload["held"] = sorted(self.held.tripped) if self.held is not None else []
        return payload


# ---------------------------------------------------------------- planning
def compute_plan(
    service: IdentityService, idps: Sequence[str] | None = None, fingerprint: bool = True
) -> SyncPlan:
    """The differences between the userstores and the ledger, per IdP (planned in one
    streamed pass, see :mod:`idprov.provisioning.sync_plan`); ``fingerprint``: with the
    hash a saved plan is checked against (it reads the whole ledger)."""
    from idprov.provisioning.scope_roles import scope_errors
    from idprov.provisioning.sync_plan import plan_idps

    names = list(idps) if idps else service.targets()
    for name in names:
        if not service.idp(name).enabled:  # NotFoundError for an unknown one
            raise UsageError(
                f"identity provider {name} is disabled (enabled: false)",
                hint=f"nothing is synced to it: set enabled: true in its entry to sync it, "
                f"or leave out --idp {name}",
            )
    plans, seen = plan_idps(service, names)
    refused = {} if seen.errors else scope_errors(service.config, names, seen.roles)
    plan = SyncPlan(
        service.application,
        [p for p in plans if p.idp not in refused],
        seen.errors,
        created=now(),
        ambiguous=seen.ambiguous,
        source_hints=seen.hints,
        refused=list(refused.values()),
    )
    if fingerprint:
        plan.fingerprint = plan_fingerprint(service, plan)
    return plan


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
    if over_guard(plan, allow_deletes):
        raise guard_refusal(plan, allow_deletes)


def over_guard(plan: SyncPlan, allow_deletes: int | None) -> list[IdpPlan]:
    """The IdPs whose plan the deletion guard refuses, with ``allow_deletes``."""
    return [p for p in plan.idps if _tripped(p, allow_deletes)]


def _tripped(plan: IdpPlan, allow_deletes: int | None) -> list[Trip]:
    return [t for t in plan.trips if allow_deletes is None or t.count > allow_deletes]


def guard_refusal(plan: SyncPlan, allow_deletes: int | None, pushed: bool = False) -> GuardError:
    """What the deletion guard says of the plan's IdPs over it: nothing was changed
    there (``pushed``: the other IdPs' plans were applied; else nothing anywhere), and
    how to go on: ``--allow-deletes N`` if the changes are expected, ``--idp`` for
    the others."""
    held = over_guard(plan, allow_deletes)
    tripped = [t for p in held for t in _tripped(p, allow_deletes)]
    names = [p.idp for p in held]
    others = [p.idp for p in plan.idps if p.idp not in names]
    where = ", ".join(names)
    if pushed:
        done = f"; nothing was sent to {where} (held); " + (
            f"{', '.join(others)} {'was' if len(others) == 1 else 'were'} synced"
        )
    else:
        done = "; nothing was changed"
    options = " ".join(f"--idp {name}" for name in others)
    rest = ""
    if others:
        rest = (
            f"; until then, `idprov sync {options}` syncs the others alone"
            if pushed
            else f"; meanwhile `idprov sync {options}` syncs the others"
        )
    counts: dict[str, int] = {}
    for trip in tripped:
        counts[trip.idp] = counts.get(trip.idp, 0) + 1
    check = "`idprov plan" + "".join(f" --idp {name}" for name in names if others) + "`"
    return GuardError(
        "deletion guard: " + "; ".join(t.message for t in tripped) + done,
        hint=f"check the plan with {check}; if these changes are expected, run "
        f"`idprov sync --allow-deletes {max(t.count for t in tripped)}`{rest}",
        tripped=counts,
    )


def check_source(plan: SyncPlan) -> None:
    """Refuse a plan (to apply or to show) read from an incomplete source."""
    if plan.source_errors:
        raise GuardError(
            "the userstores could not be read in full, so nothing was changed: "
            + "; ".join(plan.source_errors),
            hint="; ".join(plan.source_hints or ["fix the userstore"])
            + "; then run the command again",
        )


def apply_plan(
    service: IdentityService, plan: SyncPlan, run: str, allow_deletes: int | None = None
) -> OutboundReport:
    """Enqueue the plan's items and drain them, with every pending or failed row of
    its IdPs: deprovisions first, so that an account re-created under the same name
    (a new entry, a new id) finds its name free at the target."""
    from idprov.provisioning.guard import SCOPE_CHANGE, scope_key

    check_plan(plan, allow_deletes)
    first: list[int] = []
    allowed: dict[int, list[int]] = {}
    with service.unit_of_work(push=False) as uow:
        uow.begin()
        uow.judged_whole = True  # its rows go out, held ones too: the plan judged them
        for idp_plan in plan.idps:
            service.state.ledger.note_inputs(idp_plan.idp, idp_plan.unchanged)
            # its scope judged whole: from now on, other pushes judge by it
            service.state.outbox.note_scope(
                idp_plan.idp, scope_key(service.outbound.idp(idp_plan.idp))
            )
            for item in sorted(idp_plan.items, key=lambda i: i.kind != "user"):
                kind: Kind = "user" if item.kind == "user" else "role"
                before = len(uow.rows)
                uow.enqueue(kind, item.local_id, item.domain, item.label, idps=[idp_plan.idp])
                if item.action in ("delete", "disable") and kind == "user":
                    first += uow.rows[before:]
                need = accepted(idp_plan, item, allow_deletes)
                if need is not None:
                    allowed.setdefault(need, []).extend(uow.rows[before:])
        # what it accepted goes with its destructive rows, to whichever drainer pushes them
        for need, ids in allowed.items():
            service.state.outbox.allow(ids, need)
        # what waited for this sync goes with it (its plan holds whatever they change)
        service.state.outbox.release_held([p.idp for p in plan.idps], because=SCOPE_CHANGE)
        # this run drains every row of its IdPs, not only those it just enqueued
        rest = [r.id for r in service.state.outbox.rows(idps=[p.idp for p in plan.idps])]
    report = OutboundReport()
    done = set(first)
    for ids in (first, [i for i in rest if i not in done]):
        if ids:
            report.merge(service.push(ids, uow.passwords, guarded=True) or OutboundReport())
    released = release_resolved(service, plan, allow_deletes, report)
    if released:
        report.merge(service.push(released, guarded=True) or OutboundReport())
    return report


def accepted(plan: IdpPlan, item: PlanItem, allow_deletes: int | None) -> int | None:
    """The allowance ``item``'s outbox row carries: none for a row that destroys
    nothing, nor without ``allow_deletes``; else what the plan's effects at its IdP
    need (at most ``allow_deletes``), not all the operator gave: a retry or a change
    coalescing into the row before its push finds it over that, so judged afresh."""
    effects = plan.effects
    if allow_deletes is None or effects is None:
        return None
    if item.kind == "user":
        destructive = item.local_id in effects.hit
    else:
        destructive = item.action == "delete" or any(c.startswith("-") for c in item.changed)
    need = max(effects.count(kind) for kind in KINDS)
    return min(need, allow_deletes) if destructive and need else None


def release_resolved(
    service: IdentityService, plan: SyncPlan, allow_deletes: int | None, report: OutboundReport
) -> list[int]:
    """The rows of the plan's IdPs still held once its push is done, released: a held
    row with nothing destructive of its own was held with its IdP's other rows (a group
    row beside 25 deletes), and this sync judged the IdP whole; one still destructive
    is judged with the plan's effects and ``allow_deletes``, and held again over the
    guard, saying why (in the outbox and ``report``). Returns the ids released."""
    from idprov.provisioning.guard import GuardWindow, harmless, hold_over

    held = service.state.outbox.rows(idps=[p.idp for p in plan.idps], status="held")
    if not held:
        return []
    harmless_ids = {r.id for r in harmless(service.outbound, held)}
    ids = set(harmless_ids)
    rest = [r for r in held if r.id not in ids and service.outbound.configured(r.idp)]
    if rest:
        judged = GuardWindow({p.idp: p.effects for p in plan.idps if p.effects is not None})
        kept = hold_over(service.outbound, rest, report, allow_deletes, judged)
        ids.update(r.id for r in kept)
    if not ids:
        return []
    released: list[int] = []
    with service.state.transaction():  # a harmless row needs no allowance: it gets none
        for given, some in ((None, harmless_ids), (allow_deletes, ids - harmless_ids)):
            idps = sorted({r.idp for r in held if r.id in some})
            if some:
                released += service.state.outbox.release_held(idps, ids=sorted(some), allowed=given)
        service.state.audit(
            actor=service.actor,
            application=service.application,
            action="outbox.release",
            target=", ".join(sorted({r.idp for r in held if r.id in ids})),
            details={"rows": len(released), "by": "sync"},
            run=service.run,
        )
    return sorted(released)


def run_sync(
    service: IdentityService,
    idps: Sequence[str] | None = None,
    dry_run: bool = False,
    allow_deletes: int | None = None,
    saved: SyncPlan | None = None,
    verify: bool = False,
    repair: bool = False,
) -> SyncResult:
    """Plan, and unless ``dry_run`` apply; with ``saved``, apply exactly that plan:
    refused if the userstores or the ledger have moved since it was made, or if its
    items are not those it was made with (a file edited by hand: idprov applies what it
    computes, so an item taken out of the file would have been applied all the same).
    Then, with ``verify`` (or ``repair``), read the plan's IdPs for drift, and with
    ``repair`` (not in a dry run) restore it: in the same run, recorded with it."""
    run = uuid.uuid4().hex[:12]
    names = idps or ([p.idp for p in saved.idps] if saved else None)
    if not dry_run:
        refuse_awaiting_rename(service, names)
    plan = compute_plan(service, names, fingerprint=dry_run or saved is not None)
    if (
        saved is not None
        and saved.fingerprint == plan.fingerprint
        and (_items(saved) != _items(plan) or saved.application != plan.application)
    ):
        raise ConflictError(
            "the saved plan was changed after it was made: its items are not the ones its "
            "fingerprint stands for; nothing was changed",
            hint="idprov applies a plan whole, as it was made: make a new one with `idprov "
            "plan --out plan.json`; to leave a change out, change the userstores (or the "
            "configuration) first, then plan again",
        )
    if saved is not None and saved.fingerprint != plan.fingerprint:
        raise ConflictError(
            "the saved plan is out of date: the userstores or the ledger changed since it "
            "was made; nothing was changed",
            hint="make a new plan with `idprov plan --out plan.json` and review it",
        )
    result = SyncResult(run, plan, dry_run=dry_run)
    if dry_run:
        check_source(plan)  # a plan from a partial read would show deletions that are not
        _verify(service, result, verify or repair, repair=False)
        return result
    service.run = run
    outcome = "interrupted"  # a Ctrl-C (KeyboardInterrupt) leaves it so
    try:
        pushed = _pushed(plan, allow_deletes, whole=saved is not None)
        result.held = guard_refusal(plan, allow_deletes, True) if pushed is not plan else None
        result.outbound = apply_plan(service, pushed, run, allow_deletes)
        _verify(service, result, verify or repair, repair, allow_deletes, pushed)
        result.audit_removed = prune_audit(service)
        outcome = "ok" if result.ok else "failed"
        if outcome == "ok" and result.held is not None:
            outcome = "refused"  # for the IdPs held; those pushed are ok (see _record_run)
    except GuardError:
        outcome = "refused"  # the deletion guard's word, and only its
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        _record_run(service, result, outcome)
        service.run = None
    return result


def _pushed(plan: SyncPlan, allow_deletes: int | None, whole: bool) -> SyncPlan:
    """The part of ``plan`` to apply: its IdPs that the deletion guard lets go (the
    plan itself if it lets every one go). The guard judges each IdP's effects apart,
    so one IdP over it holds only its own plan; a plan refused at every IdP, or one
    to apply ``whole`` (a saved plan: applied as it was made, or not at all), is
    refused by :func:`apply_plan`, and nothing is changed anywhere."""
    held = over_guard(plan, allow_deletes)
    if not held or whole or len(held) == len(plan.idps) or plan.source_errors:
        return plan
    return replace(plan, idps=[p for p in plan.idps if p not in held])


def refuse_awaiting_rename(service: IdentityService, idps: Sequence[str] | None) -> None:
    """Refuse, before planning, a sync of an IdP that awaits `idprov idp rename` (see
    :func:`~idprov.provisioning.idp_rename.idp_names`): with no ledger, its plan
    makes every account a create, and its push would adopt the accounts idprov made
    there under the old name and make its groups again. The sync is refused whole, as
    for the deletion guard: nothing is changed anywhere. Records where each IdP points
    as it checks (a dry run, which changes nothing, shows its plan with the warning
    about the orphaned ledger instead, and its `--verify` the accounts that carry
    idprov's mark outside the ledger)."""
    from idprov.provisioning.idp_rename import awaiting_hint, awaiting_message

    waiting, away = service.outbound.awaiting_rename(), service.outbound.renamed_away()
    names = list(idps) if idps else service.targets()
    refused = [(name, waiting[name]) for name in names if name in waiting]
    if not refused:
        return
    stale = [(name, to) for name, to in refused if name in away]
    if stale:  # an old configuration: the rename was made, its hint would undo it
        raise ConfigError(
            "; ".join(
                f"'{name}' was renamed '{to}' by `idprov idp rename` at {away[name]}: this "
                f"configuration ({service.config.source}) still names '{name}' and is older "
                "than that rename"
                for name, to in stale
            )
            + "; nothing was changed",
            hint="run idprov with the configuration that names the new name (--config, "
            "IDPROV_CONFIG, the timer's unit). This configuration never pushes under a "
            "name renamed away again; `idprov idp forget-rename OLD` gives the name to "
            "another identity provider, at another target; `idprov idp rename NEW OLD` "
            "only if the rename itself was the mistake",
        )
    others = [name for name in names if name not in waiting]
    options = " ".join(f"--idp {name}" for name in others)
    rest = f"; the others can be synced meanwhile: `idprov sync {options}`" if others else ""
    raise ConfigError(
        "; ".join(awaiting_message(new, old) for new, old in refused) + "; nothing was changed",
        hint="; ".join(awaiting_hint(new, old) for new, old in refused) + rest,
    )


def _verify(
    service: IdentityService,
    result: SyncResult,
    verify: bool,
    repair: bool,
    allow_deletes: int | None = None,
    pushed: SyncPlan | None = None,
) -> None:
    """The drift at the IdPs of the plan ``pushed`` (by default the result's: those
    the guard held are not verified; their repair would be a push), when ``verify``,
    and its repair's push, judged by the deletion guard with the sync's
    ``allow_deletes``."""
    if not verify:
        return
    from idprov.provisioning import verify as check

    plan = pushed or result.plan
    result.drift = check.verify_idps(service, [p.idp for p in plan.idps])
    if repair:
        given = service.allow_deletes
        if allow_deletes is not None:  # N covers the whole command: what the plan used goes
            used = max((t.count for p in plan.idps for t in p.trips), default=0)
            allow_deletes = max(allow_deletes - used, 0)
        service.allow_deletes = allow_deletes if allow_deletes is not None else given
        try:
            result.repaired = check.repair(service, result.drift)
        finally:
            service.allow_deletes = given


def _items(plan: SyncPlan) -> list[tuple[str, list[dict[str, Any]]]]:
    """A plan's items per IdP, as its file holds them."""
    return [(p.idp, [i.to_dict() for i in p.items]) for p in plan.idps]


def _record_run(service: IdentityService, result: SyncResult, outcome: str) -> None:
    counts: dict[str, dict[str, int]] = {p.idp: p.counts() for p in result.plan.idps}
    for idp_plan in result.plan.idps:  # held by the deletion guard: its items, not sent
        if result.held is not None and idp_plan.idp in result.held.tripped:
            counts[idp_plan.idp]["held"] = len(idp_plan.items)
    for outbound, done, failed in (
        (result.outbound, "done", "failed"),
        (result.repaired, "repair_done", "repair_failed"),
    ):
        for name, report in (outbound.idps if outbound is not None else {}).items():
            counts.setdefault(name, {})
            counts[name].update({done: report.count("done"), failed: report.count("failed")})
    for name, found in (result.drift or {}).items():
        counts.setdefault(name, {})["drift"] = len(found["repairs"])
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
