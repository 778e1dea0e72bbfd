"""What an identity provider should hold, and what to do about it: pure decisions.

Both the engine (draining the outbox now) and `idprov sync` (planning for everyone)
decide with these functions, from the local state and the ledger, so a plan says
exactly what applying it will do. Nothing here reads a database; only
:func:`with_unique_values` asks a target, for a create whose mapping has unique().
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from idprov.connectors.base import Account, hold_back
from idprov.provisioning.active import is_active, unreadable
from idprov.provisioning.internal_roles import is_internal
from idprov.provisioning.mapping import fingerprint, mapping_for, resolve_unique

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.connectors.base import Connector
    from idprov.model import User
    from idprov.provisioning.ledger import LedgerEntry

UserAction = Literal["create", "update", "enable", "delete", "disable", "forget", "none"]
RoleAction = Literal["create", "update", "delete", "none"]


def in_scope(idp: IdentityProviderConfig, roles: Iterable[str], domain: str | None = None) -> bool:
    """Whether a user of userstore ``domain`` holding ``roles`` (its own domain's by
    bare name, ``Internal/NAME``) is provisioned to ``idp``: a provisioning role names
    them bare (in every domain) or as ``DOMAIN/name`` (in that one)."""
    if idp.provisioning_roles is None:
        return True
    wanted = {r.casefold() for r in idp.provisioning_roles}
    for role in roles:
        if role.casefold() in wanted:
            return True
        if domain is not None and "/" not in role and f"{domain}/{role}".casefold() in wanted:
            return True
    return False


def role_pushed(idp: IdentityProviderConfig, role: str) -> bool:
    """Whether the role ``role`` (its qualified name, ``DOMAIN/name`` outside PRIMARY)
    becomes a group at ``idp``. A bare provisioning role names that role in every
    userstore domain; ``Internal/NAME`` names an internal role."""
    if idp.push_roles == "none":
        return False
    if idp.push_roles == "all" or idp.provisioning_roles is None:
        return True
    wanted = {r.casefold() for r in idp.provisioning_roles}
    if role.casefold() in wanted:
        return True
    domain, sep, bare = role.partition("/")
    return bool(sep) and not is_internal(domain) and bare.casefold() in wanted


def account_for(
    user: User,
    idp: IdentityProviderConfig,
    connector: type[Connector],
    previous: dict[str, Any] | None = None,
) -> Account:
    """What ``user`` should look like at ``idp``: user name and mapped attributes
    (``previous``: what was last sent there, which keeps unique() values, and the
    attributes the connector never sends in an update, :func:`hold_back`)."""
    account = mapping_for(idp, connector).account(user, idp.name, previous)
    if previous is None:
        return account
    held = connector.held_back(idp.options)  # the mark: never sent by an update
    kept = hold_back(account.attributes, held, previous.get("attributes"))
    return dataclasses.replace(account, attributes=kept)


def sent_form(account: Account) -> dict[str, Any]:
    """What the ledger keeps of an account sent (and hashes to skip unchanged ones)."""
    return {
        "userName": account.user_name,
        "attributes": dict(account.attributes),
        "active": account.active,
    }


@dataclass(frozen=True)
class UserDecision:
    """What to do with one user at one IdP, and why."""

    action: UserAction
    reason: str
    account: Account | None = None
    sent: dict[str, Any] | None = None
    digest: str | None = None
    changed: list[str] = field(default_factory=list)
    """Attributes that differ from what was last sent (updates)."""


def decide_user(
    idp: IdentityProviderConfig,
    connector: type[Connector],
    user: User | None,
    entry: LedgerEntry | None,
) -> UserDecision:
    """Create, update, enable, delete, disable or leave ``user`` (None: deleted
    locally) at ``idp``, given what the ledger says was done there."""
    if entry is not None and entry.state == "lost":
        return _decide_lost(idp, connector, user, entry)
    provisioned = entry is not None and entry.remote_id is not None
    if user is not None and not enabled(user) and in_scope(idp, user.roles, user.domain):
        # disabled here (the `active` claim): disabled there, never deleted, and
        # enabled again with the account (the ledger says idprov disabled it)
        why = _disabled_why(user)
        if not provisioned:
            return UserDecision("none", f"{why}, never provisioned")
        assert entry is not None
        if entry.state == "disabled":
            return UserDecision("none", f"already disabled ({why})")
        return UserDecision("disable", why)
    if user is not None and in_scope(idp, user.roles, user.domain):
        account = account_for(user, idp, connector, entry.sent if provisioned and entry else None)
        sent = sent_form(account)
        digest = fingerprint(sent)
        if not provisioned:
            return UserDecision(
                "create",
                "in scope, not provisioned",
                account,
                sent,
                digest,
                sorted(account.attributes),
            )
        assert entry is not None
        if entry.state == "disabled":
            return UserDecision("enable", "back in scope", account, sent, digest)
        if entry.hash == digest:
            return UserDecision("none", "unchanged", account, sent, digest)
        return UserDecision("update", "changed", account, sent, digest, _changed(entry.sent, sent))
    if not provisioned:
        return UserDecision("none", "not in scope" if user else "deleted, never provisioned")
    assert entry is not None
    why = "deleted locally" if user is None else "out of scope"
    if idp.deprovision == "disable" or not entry.created_by_idprov:
        # an account idprov adopted is never deleted: it was there before idprov
        if entry.state == "disabled":
            return UserDecision("none", "already disabled")
        return UserDecision("disable", why)
    return UserDecision("delete", why)


def _decide_lost(
    idp: IdentityProviderConfig,
    connector: type[Connector],
    user: User | None,
    entry: LedgerEntry,
) -> UserDecision:
    """A user whose account the target lost: made again while it belongs there; else
    forgotten (nothing is there to deprovision, so the deletion guard counts nothing),
    once a look-up finds nothing: a re-create whose answer was lost may have made it
    again, and what is provably idprov's then is deprovisioned."""
    if user is None or not group_member(idp, user):
        return UserDecision("forget", "lost at the target: forgotten unless found made again")
    account = account_for(user, idp, connector, entry.sent)
    sent = sent_form(account)
    return UserDecision(
        "create",
        "lost at the target: made again",
        account,
        sent,
        fingerprint(sent),
        sorted(account.attributes),
    )


def group_member(idp: IdentityProviderConfig, user: User) -> bool:
    """Whether ``user`` belongs in the groups of its roles at ``idp``: while it is in
    the IdP's scope and enabled. A user disabled here (the ``active`` claim), or whom
    the IdP's ``deprovision: disable`` disabled for leaving its scope, is taken out of
    its groups with its deprovision, and put back in them when enabled again. The plan
    of a group and its push both ask this."""
    return enabled(user) and in_scope(idp, user.roles, user.domain)


def enabled(user: User) -> bool:
    """Whether the user's account is enabled here: the ``active`` claim, true unless
    it says false in any case (a SCIM client's ``active: false``, `user update -c
    active=false`, a directory's ``FALSE``) or cannot be read (see
    :mod:`~idprov.provisioning.active`)."""
    return is_active(user.claims)


def _disabled_why(user: User) -> str:
    """Why a user not :func:`enabled` is disabled: naming an ``active`` value that
    cannot be read, which an administrator must fix."""
    value = unreadable(user.claims)
    if value is None:
        return "disabled locally"
    return f"active is {value!r}, neither true nor false: taken as disabled until it is fixed"


def with_unique_values(decision: UserDecision, connector: Connector) -> UserDecision:
    """A user whose unique() values are not chosen yet (a create, or an attribute new
    to the mapping): the first free candidates, asked of the target, in the account,
    what is recorded and its hash."""
    account = decision.account
    if account is None or not account.unique or decision.action == "none":
        return decision
    account = resolve_unique(account, connector.value_taken, connector.idp.name)
    sent = sent_form(account)
    return dataclasses.replace(decision, account=account, sent=sent, digest=fingerprint(sent))


def _changed(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    old = dict((before or {}).get("attributes") or {})
    new = after["attributes"]
    names = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    if (before or {}).get("userName") != after["userName"]:
        names.insert(0, "userName")
    return names


@dataclass(frozen=True)
class RoleDecision:
    """What to do with one role's group at one IdP: members are local user ids."""

    action: RoleAction
    reason: str
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    rename: bool = False
    moved_from: str | None = None
    """The group the role's members were given, when the configuration maps the role
    to another now (:meth:`~idprov.connectors.base.Connector.group_target`): every
    member idprov put there is removed (``remove``), and the members go to the new one
    (``add``)."""


def decide_role(
    idp: IdentityProviderConfig,
    name: str | None,
    entry: LedgerEntry | None,
    desired_members: Set[str],
    current_members: Set[str],
    target: str | None = None,
) -> RoleDecision:
    """``name`` None: the role is gone locally. ``desired_members``: in-scope members
    (that are, or will be, provisioned); ``current_members``: the group's members as
    idprov made them. ``target``: what the configuration maps the role to now, where
    the group is not the role's own (see :func:`group_moved`)."""
    provisioned = entry is not None and entry.remote_id is not None
    if name is None or not role_pushed(idp, name):
        if provisioned:
            return RoleDecision("delete", "deleted locally" if name is None else "not pushed")
        return RoleDecision("none", "not pushed")
    if not provisioned:
        return RoleDecision("create", "pushed, not provisioned", sorted(desired_members))
    assert entry is not None
    was = group_moved(entry, target)
    if was is not None:
        return RoleDecision(
            "update",
            f"now mapped to {target}, its members were given {was}",
            sorted(desired_members),
            sorted(current_members),
            moved_from=was,
        )
    add = sorted(set(desired_members) - set(current_members))
    remove = sorted(set(current_members) - set(desired_members))
    rename = entry.label != name and entry.label.split("/")[-1] != name
    if not (add or remove or rename):
        return RoleDecision("none", "unchanged")
    return RoleDecision("update", "renamed" if rename else "members changed", add, remove, rename)


def group_moved(entry: LedgerEntry, target: str | None) -> str | None:
    """What the role of ``entry`` was mapped to when its members were given it, if the
    configuration maps it elsewhere now (``target``); else None. An entry recorded
    before idprov kept the mapping says nothing: its push checks it at the target."""
    was = (entry.sent or {}).get("target")
    if target is None or was is None or was == target:
        return None
    return str(was)


def compared_in_part(entry: LedgerEntry | None, target: str | None, scope: str) -> bool:
    """Whether a role's push may compare its group for the members its changes touched
    alone (see :attr:`~idprov.provisioning.outbox.OutboxRow.members_delta`): a group
    idprov pushed (an active entry with a remote id), that no change of mapping moves
    (``target``), last compared whole under the IdP's scope as it is now (``scope``,
    :func:`~idprov.provisioning.guard.scope_key`: a scope widened since takes in
    members that no change touched)."""
    return (
        entry is not None
        and entry.state == "active"
        and bool(entry.remote_id)
        and group_moved(entry, target) is None
        and (entry.sent or {}).get("scope") == scope
    )


def group_target(connector: Connector, name: str) -> str | None:
    """What the configuration maps role ``name`` to at ``connector``'s target (None:
    the group is the role's own; or the connector cannot tell, a plugin's bug)."""
    try:
        return connector.group_target(name)
    except Exception:
        return None
