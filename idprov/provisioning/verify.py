"""`idprov sync --verify [--repair]`: read the targets, report drift, restore what is idprov's.

For every user idprov provisioned: deleted remotely, or changed remotely (the
attributes that no longer match what idprov sent). For every group: deleted
remotely, renamed, or missing members idprov put in it (members someone else added
are not idprov's and are left alone; a target that never returns members is asked
member by member). Where the connector can list the target's
users: the ones idprov does not own (it never touches those, unless
``on_conflict: adopt`` makes it take one over when it needs that name).

**Repair** restores what idprov owns: it forgets, in the ledger, what the target no
longer holds (a deleted account or group, changed attributes, lost members) and
enqueues those entities, so that the engine re-creates, re-sends in full or re-adds
them — through the same unit of work, push and deletion guard as any change.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import Account
from idprov.errors import IdprovError
from idprov.provisioning.results import OutboundReport

if TYPE_CHECKING:
    from idprov.connectors.base import Connector
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.outbox import Kind
    from idprov.provisioning.service import IdentityService


def verify_idps(service: IdentityService, idps: list[str]) -> dict[str, Any]:
    return {name: verify_idp(service, name) for name in idps}


def drift_found(drift: dict[str, Any] | None) -> int:
    """How many entities have drifted, over every IdP of a verify report."""
    return sum(len(report["repairs"]) for report in (drift or {}).values())


def verify_idp(service: IdentityService, name: str) -> dict[str, Any]:
    connector = service.connector(name)
    report: dict[str, Any] = {
        "checked": 0,
        "deleted_remotely": [],
        "changed_remotely": [],
        "disabled_remotely": [],
        "groups_checked": 0,
        "groups_deleted_remotely": [],
        "groups_changed_remotely": [],
        "unowned": None,
        "unverifiable": None,
        "errors": [],
        "repairs": [],
        "repaired": None,
    }
    owned = _verify_users(service, name, connector, report)
    if owned is None:
        return report
    _verify_groups(service, name, connector, report)
    try:
        remote_ids = connector.list_users()
    except NotImplementedError:
        return report
    except IdprovError as exc:
        report["errors"].append(f"listing users: {exc.message}")
        return report
    report["unowned"] = sorted(user_name for rid, user_name in remote_ids if rid not in owned)
    return report


def _repair(report: dict[str, Any], entry: LedgerEntry, how: str) -> None:
    report["repairs"].append(
        {
            "kind": entry.kind,
            "local_id": entry.local_id,
            "domain": entry.domain,
            "label": entry.label,
            "how": how,
        }
    )


def _verify_users(
    service: IdentityService, name: str, connector: Connector, report: dict[str, Any]
) -> set[str] | None:
    """Check every active user idprov provisioned; the remote ids it owns (None:
    the connector cannot read users)."""
    owned: set[str] = set()
    for entry in service.state.ledger.for_idp(name, "user").values():
        if not entry.remote_id or entry.state != "active":
            continue
        owned.add(entry.remote_id)
        try:
            remote = connector.read_user(entry.remote_id)
        except NotImplementedError:  # optional for a connector: nothing failed
            report["unverifiable"] = (
                f"the {connector.name} connector cannot read users: nothing was checked"
            )
            return None
        except IdprovError as exc:
            report["errors"].append(f"{entry.label}: {exc.message}")
            continue
        report["checked"] += 1
        if remote is None:
            report["deleted_remotely"].append(entry.label)
            _repair(report, entry, "re-create")
            continue
        drift = connector.drift(remote, _account(entry))
        if "active" in drift:  # idprov has it enabled: an administrator disabled it there
            drift.remove("active")
            report["disabled_remotely"].append(entry.label)
        if drift:
            report["changed_remotely"].append({"user": entry.label, "attributes": drift})
            _repair(report, entry, "revert " + ", ".join(drift))
    return owned


def _account(entry: LedgerEntry) -> Account:
    sent = entry.sent or {}
    return Account(
        entry.local_id,
        sent.get("userName", entry.label),
        sent.get("attributes", {}),
        bool(sent.get("active", True)),
    )


def _verify_groups(
    service: IdentityService, name: str, connector: Connector, report: dict[str, Any]
) -> None:
    ledger = service.state.ledger
    members = ledger.all_members(name)
    for entry in ledger.for_idp(name, "role").values():
        if not entry.remote_id:
            continue
        try:
            remote = connector.read_group(entry.remote_id)
        except NotImplementedError:
            report["errors"].append(f"the {connector.name} connector cannot read groups")
            return
        except IdprovError as exc:
            report["errors"].append(f"group {entry.label}: {exc.message}")
            continue
        report["groups_checked"] += 1
        if remote is None:
            report["groups_deleted_remotely"].append(entry.label)
            _repair(report, entry, "re-create")
            continue
        _group_drift(service, name, entry, remote, members.get(entry.local_id, set()), report)


def _group_drift(
    service: IdentityService,
    name: str,
    entry: LedgerEntry,
    remote: tuple[str, Container[str]],
    mine: set[str],
    report: dict[str, Any],
) -> None:
    display_name, remote_members = remote
    expected = service.state.ledger.remote_ids(name, mine)
    lost = sorted(local for local, rid in expected.items() if rid not in remote_members)
    renamed = display_name != entry.label
    if not lost and not renamed:
        return
    labels = {e.local_id: e.label for e in service.state.ledger.get_many(name, "user", lost)}
    change: dict[str, Any] = {"group": entry.label, "missing_members": [labels[u] for u in lost]}
    if renamed:
        change["display_name"] = display_name
    report["groups_changed_remotely"].append(change)
    how = ["restore members"] if lost else []
    _repair(report, entry, ", ".join(how + (["rename back"] if renamed else [])))
    report["repairs"][-1]["lost"] = lost


def repair(service: IdentityService, drift: dict[str, Any]) -> OutboundReport:
    """Restore what ``drift`` (a verify report) found, per IdP: forget in the
    ledger what the target lost, enqueue those entities and push them (through the
    deletion guard). Records how many were repaired in each IdP's report."""
    with service.unit_of_work() as uow:
        uow.begin()
        for idp, report in drift.items():
            for fix in report["repairs"]:
                for entry in _forget_lost(service, idp, fix):
                    kind: Kind = "role" if entry.kind == "role" else "user"
                    uow.enqueue(kind, entry.local_id, entry.domain, entry.label, [idp])
            if report["repairs"]:
                uow.audit("sync.repair", idp, {"entities": [f["label"] for f in report["repairs"]]})
    outbound = uow.outbound or OutboundReport()
    for idp, report in drift.items():
        if report["repairs"]:  # the repaired entities, not every operation it took
            done = outbound.idps.get(idp)
            labels = {f["label"] for f in report["repairs"]}
            ops = done.operations if done is not None else []
            report["repaired"] = len(
                {op.label for op in ops if op.outcome == "done" and op.label in labels}
            )
    return outbound


def _forget_lost(service: IdentityService, idp: str, fix: dict[str, Any]) -> list[LedgerEntry]:
    """Make the ledger say what the target holds, so the engine sends the rest;
    returns the entities to push (a re-created user's groups too: it is a new
    member for them)."""
    ledger = service.state.ledger
    entry = ledger.get(idp, fix["kind"], fix["local_id"])
    if entry is None:
        return []
    if fix["kind"] == "role":
        if fix["how"] == "re-create":
            ledger.forget(idp, "role", entry.local_id)
        else:
            ledger.set_members(idp, entry.local_id, [], fix.get("lost", []))
            if "rename back" in fix["how"]:
                ledger.relabel(idp, "role", entry.local_id, "")
        return [entry]
    ledger.invalidate(idp, "user", entry.local_id)
    if fix["how"] != "re-create":
        return [entry]
    groups = [role_id for role_id, _ in ledger.groups_with_ids(idp, entry.local_id)]
    for role_id in groups:
        ledger.set_members(idp, role_id, [], [entry.local_id])
    return [entry, *ledger.get_many(idp, "role", groups)]


def failed(reports: dict[str, Any] | None) -> bool:
    """Whether verifying could not read all it should (an error per IdP)."""
    return bool(reports) and any(r.get("errors") for r in (reports or {}).values())
