"""`idprov sync --verify`: read the targets and report drift from the ledger.

For every user idprov provisioned: deleted remotely, or changed remotely (the
attributes that no longer match what idprov sent). Where the connector can list
the target's users: the ones idprov does not own (it never touches those, unless
``on_conflict: adopt`` makes it take one over when it needs that name).

With ``--repair`` (:func:`repair_idps`), users deleted at the target are forgotten
by the ledger before the sync plans, so that the sync re-creates them and puts them
back in their groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idprov.connectors.base import Account
from idprov.errors import IdprovError

if TYPE_CHECKING:
    from idprov.provisioning.service import IdentityService


def verify_idps(service: IdentityService, idps: list[str]) -> dict[str, Any]:
    return {name: verify_idp(service, name) for name in idps}


def repair_idps(service: IdentityService, idps: list[str]) -> dict[str, Any]:
    """Verify ``idps`` and make the ledger forget the users deleted at the target (so
    that the next sync plans their creation and their group memberships)."""
    from idprov.db import write_transaction

    reports = verify_idps(service, idps)
    ledger = service.state.ledger
    with write_transaction(service.state.db):
        for name, report in reports.items():
            gone = set(report["deleted_remotely"])
            entries = ledger.for_idp(name, "user").values()
            for entry in [e for e in entries if e.label in gone]:
                ledger.forget(name, "user", entry.local_id)
            report["repaired"] = sorted(gone)
    return reports


def failed(reports: dict[str, Any] | None) -> bool:
    """Whether verifying could not read all it should (an error per IdP)."""
    return bool(reports) and any(r.get("errors") for r in (reports or {}).values())


def verify_idp(service: IdentityService, name: str) -> dict[str, Any]:
    connector = service.connector(name)
    report: dict[str, Any] = {
        "checked": 0,
        "deleted_remotely": [],
        "changed_remotely": [],
        "unowned": None,
        "errors": [],
    }
    owned: set[str] = set()
    for entry in service.state.ledger.for_idp(name, "user").values():
        if not entry.remote_id or entry.state != "active":
            continue
        owned.add(entry.remote_id)
        sent = entry.sent or {}
        account = Account(
            entry.local_id,
            sent.get("userName", entry.label),
            sent.get("attributes", {}),
            bool(sent.get("active", True)),
        )
        try:
            remote = connector.read_user(entry.remote_id)
        except NotImplementedError:
            report["errors"].append(f"the {connector.name} connector cannot read users")
            return report
        except IdprovError as exc:
            report["errors"].append(f"{entry.label}: {exc.message}")
            continue
        report["checked"] += 1
        if remote is None:
            report["deleted_remotely"].append(entry.label)
            continue
        drift = connector.drift(remote, account)
        if drift:
            report["changed_remotely"].append({"user": entry.label, "attributes": drift})
    try:
        remote_ids = connector.list_users()
    except NotImplementedError:
        return report
    except IdprovError as exc:
        report["errors"].append(f"listing users: {exc.message}")
        return report
    report["unowned"] = sorted(user_name for rid, user_name in remote_ids if rid not in owned)
    return report
