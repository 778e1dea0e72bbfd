"""`idprov explain USER --idp NAME`: why a user is or is not provisioned there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idprov.provisioning.decide import decide_user, in_scope, sent_form

if TYPE_CHECKING:
    from idprov.provisioning.service import IdentityService


def explain(service: IdentityService, username: str, idp_name: str) -> dict[str, Any]:
    """Scope and its reason, the decision, what would be sent, the ledger, the outbox."""
    idp = service.idp(idp_name)
    user = service.get_user(username)
    connector = type(service.connector(idp_name))
    entry = service.state.ledger.get(idp_name, "user", user.id)
    decision = decide_user(idp, connector, user, entry)
    pending = [
        r.to_dict()
        for r in service.outbox_rows([idp_name])
        if r.kind == "user" and r.local_id == user.id
    ]
    return {
        "user": user.qualified_name,
        "idp": idp_name,
        "in_scope": in_scope(idp, user.roles, user.domain),
        "why": _why(idp.provisioning_roles, user.roles),
        "targeted_by_application": idp_name in service.targets(),
        "decision": {
            "action": decision.action,
            "reason": decision.reason,
            "changed": decision.changed,
        },
        "would_send": sent_form(decision.account) if decision.account else None,
        "ledger": entry.to_dict() if entry else None,
        "outbox": pending,
    }


def _why(provisioning_roles: list[str] | None, roles: list[str]) -> str:
    if provisioning_roles is None:
        return "the IdP has no provisioning roles: every user goes there"
    held = [r for r in roles if r.casefold() in {p.casefold() for p in provisioning_roles}]
    if held:
        return f"holds provisioning role(s) {', '.join(held)}"
    return (
        f"holds none of the provisioning roles ({', '.join(provisioning_roles)}); "
        f"holds: {', '.join(roles) or 'no roles'}"
    )
