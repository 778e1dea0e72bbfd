"""Why a discarded outbox row comes back, and what stops it.

`idprov outbox discard` drops rows; it changes neither the directory nor the
configuration. While a user is in an IdP's scope and enabled without an account idprov
holds there, or a role is pushed there without a group idprov holds, every later
change of it (or of a role it holds: a group push brings its members along) and every
`idprov sync` plans its create again, and a create the target refuses (a name taken by
another system's object) fails again. What stops it is to take away that cause: the
roles that put the user in scope, ``push_roles`` or ``provisioning_roles`` for a role,
or to settle it at the target (``on_conflict: adopt``, rename or remove the object
there). The refusal's hint (:meth:`~idprov.provisioning.ledger.RefusedCreate.error`)
and discard's warning (:func:`returning`) say so, in the same words.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from idprov.provisioning.decide import group_member, in_scope, role_pushed

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.provisioning.outbox import OutboxRow
    from idprov.provisioning.service import IdentityService


@dataclass(frozen=True)
class Returning:
    """A discarded row that a later change or sync makes again: why, and what stops it."""

    row: OutboxRow
    message: str
    hint: str


def stop_user(idp: str, label: str, roles: Sequence[str] | None) -> str:
    """How to stop pushing user ``label`` to ``idp``, in a few words (a refusal's hint
    is read in a report line): ``roles``, those of its roles that put it in the IdP's
    scope (None: the IdP has no provisioning_roles)."""
    name = shlex.quote(label)
    if roles:
        how = "; ".join(f"`idprov role unassign {shlex.quote(r)} {name}`" for r in roles)
    else:
        how = f"set provisioning_roles, or `idprov user update {name} -c active=false`"
    return f"stop pushing {label} ({how}): {_alone(idp, label)}"


def stop_role(idp: str, label: str) -> str:
    """How to stop pushing role ``label``'s group to ``idp``, in a few words."""
    return (
        f"stop pushing role {label} (narrow push_roles or provisioning_roles, or "
        f"delete the role): {_alone(idp, label)}"
    )


def _alone(idp: str, label: str) -> str:
    return (
        f"`idprov outbox discard --idp {idp} --user {shlex.quote(label)}` alone: the next "
        "change or sync brings it back"
    )


def scope_roles(
    idp: IdentityProviderConfig, roles: Sequence[str], domain: str | None = None
) -> list[str] | None:
    """Of ``roles``, those that put their holder in ``idp``'s scope (None: the IdP has
    no provisioning_roles, every user is in it)."""
    if idp.provisioning_roles is None:
        return None
    return sorted(r for r in roles if in_scope(idp, [r], domain))


def returning(
    service: IdentityService, idp_name: str, rows: Sequence[OutboxRow]
) -> list[Returning]:
    """Of ``rows``, just discarded at ``idp_name``, the creates that a later change or
    sync makes again: the cause is still there (see the module's doc)."""
    if not service.outbound.configured(idp_name):
        return []
    idp = service.outbound.idp(idp_name)
    if not idp.enabled:
        return []
    ledger = service.state.ledger
    out = []
    for row in rows:
        entry = ledger.get(idp_name, row.kind, row.local_id)
        if entry is not None and entry.remote_id is not None:
            continue  # provisioned: not a create that fails again
        found = _returning(service, idp, row)
        if found is not None:
            out.append(found)
    return out


def _returning(
    service: IdentityService, idp: IdentityProviderConfig, row: OutboxRow
) -> Returning | None:
    back = (
        "a later change or `idprov sync` brings its row back (and, while what failed it "
        "remains, it fails again)"
    )
    if row.kind == "user":
        user = service.users_by_id([(row.domain, row.local_id)]).get(row.local_id)
        if user is None or not group_member(idp, user):
            return None
        roles = scope_roles(idp, user.roles, user.domain)
        why = f"provisioning_roles: {', '.join(roles)}" if roles else "no provisioning_roles"
        return Returning(
            row,
            f"{row.label} is in the scope of {idp.name} ({why}) and enabled, with no account "
            f"idprov holds there: {back}",
            stop_user(idp.name, row.label, roles),
        )
    role = service.role_by_id(row.domain, row.local_id)
    if role is None or not role_pushed(idp, role.qualified_name):
        return None
    if idp.push_roles == "all":
        why = "push_roles: all"
    elif idp.provisioning_roles is None:
        why = "every role: no provisioning_roles"
    else:
        why = f"provisioning_roles: {', '.join(idp.provisioning_roles)}"
    return Returning(
        row,
        f"role {row.label} is pushed to {idp.name} ({why}), with no group idprov holds "
        f"there: {back}",
        stop_role(idp.name, row.label),
    )
