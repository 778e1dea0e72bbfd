"""Whether an account in idprov's ledger is provably idprov's, by the mark at the target.

A connector that keeps a mark (SPML ``mark_attribute``, Salesforce ``mark_field``)
writes idprov's id of the user on the accounts it creates. Before the mark was
idprov's alone, a mapping could fill it from a claim (an HR number, an e-mail), and an
account another system made holding that value was adopted as created by idprov: the
ledger says so, the target's account does not carry idprov's id. Such an account is
not provably idprov's, as an adopted one is not: `sync --verify` reports it
(:func:`unproven`), a deprovision never deletes it (:func:`delete_if_ours`), and an
operator settles it: ``idprov idp stamp`` confirms it is idprov's (writes the mark),
``idprov idp forget-account`` lets go of it (the ledger forgets it, the target keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import Account, Connector, TargetError
from idprov.errors import UsageError

if TYPE_CHECKING:
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.service import IdentityService


def settle_hint(idp: str, label: str) -> str:
    """How to settle the account of ``label`` that idprov cannot prove its own."""
    return (
        f"if idprov made it: `idprov idp stamp {idp} {label}`; if not: `idprov idp "
        f"forget-account {idp} {label}` (the target keeps it); then `idprov outbox retry "
        f"--idp {idp}`"
    )


def unproven(connector: Connector, remote: dict[str, Any], account: Account) -> bool:
    """Whether ``remote`` (the account idprov's ledger holds for ``account``) lacks the
    mark the connector keeps: nothing proves idprov made it."""
    return connector.carries_mark(remote, account) is False


def delete_if_ours(connector: Connector, remote_id: str, account: Account, label: str) -> None:
    """Delete the account ``remote_id``, unless the connector keeps a mark and the
    account does not carry it: then a non-retryable TargetError naming the user and
    how to settle it (the account stays). An account already gone is deleted."""
    if type(connector).carries_mark is not Connector.carries_mark:
        remote = connector.read_user(remote_id)
        if remote is not None and unproven(connector, remote, account):
            idp = connector.idp.name
            fix = settle_hint(idp, label)
            raise TargetError(
                f"the account {remote_id} at {idp} lacks idprov's mark, so nothing proves "
                "idprov made it (another system's, adopted when the mark could be a "
                f"claim's value?): not deleted. {fix[0].upper()}{fix[1:]}",
                hint=fix,
            )
    connector.delete_user(remote_id)


@dataclass
class Settled:
    """What `idp stamp` or `idp forget-account` did, per user."""

    idp: str
    action: str
    users: list[str] = field(default_factory=list)
    kept_by: dict[str, str] = field(default_factory=dict)
    """User forgotten -> the other local user the ledger maps its account to, who
    keeps it (a merged ledger settled)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "idp": self.idp,
            "action": self.action,
            "users": self.users,
            "kept_by": self.kept_by,
        }


def _entries(service: IdentityService, idp: str, names: list[str]) -> list[LedgerEntry]:
    """The ledger's users of ``idp`` labelled ``names`` (case-insensitive); a name it
    does not hold is a usage error naming it."""
    service.outbound.idp(idp)  # an unknown IdP says so
    by_label = {e.label.casefold(): e for e in service.state.ledger.for_idp(idp, "user").values()}
    missing = [n for n in names if n.casefold() not in by_label]
    if missing:
        raise UsageError(
            f"idprov's ledger holds no account of {', '.join(missing)} at {idp}",
            hint=f"`idprov sync --verify --idp {idp}` lists the accounts not provably idprov's",
        )
    return [by_label[n.casefold()] for n in names]


def stamp(service: IdentityService, idp: str, names: list[str]) -> Settled:
    """Write idprov's mark on the accounts of ``names`` at ``idp``: an operator has
    checked they are idprov's. An account the ledger records as adopted (it was there
    before idprov) is refused: idprov never takes it for its own."""
    entries = _entries(service, idp, names)
    adopted = [e.label for e in entries if not e.created_by_idprov]
    if adopted:
        raise UsageError(
            f"{', '.join(adopted)}: idprov adopted the account at {idp} (it was there "
            "before idprov): it is never stamped as idprov's",
            hint="stamp only accounts idprov created",
        )
    shared = [(e, h) for e in entries if (h := _other_holder(service, e)) is not None]
    if shared:
        entry, holder = shared[0]
        raise UsageError(
            f"{entry.label}'s account at {idp} ({entry.remote_id}) is also {holder.label}'s in "
            "idprov's ledger (one account, two local users: merged by an earlier version's "
            f"adoption): stamping it would make it provably {entry.label}'s. Nothing was "
            "stamped",
            hint=f"check at {idp} whose account it is, then `idprov idp forget-account {idp} "
            "USER` of the other (`idprov sync --verify` lists these accounts); stamp after",
        )
    connector = service.connector(idp)
    done = Settled(idp, "stamp")
    for entry in entries:
        if entry.remote_id is None:
            continue
        connector.stamp_mark(entry.remote_id, _account(entry))
        done.users.append(entry.label)
        with service.state.transaction():
            _audit(service, "outbound.stamp", entry)
    return done


def forget_accounts(service: IdentityService, idp: str, names: list[str]) -> Settled:
    """Let go of the accounts of ``names`` at ``idp``: the ledger forgets them (and the
    groups idprov put them in); nothing at the target changes. An account the ledger
    maps to another local user too (a merged ledger) is that user's from now on: what
    idprov last sent it is forgotten, so that its next push (a sync) sends its own
    attributes again, over what the forgotten user's pushes left there."""
    entries = _entries(service, idp, names)
    done = Settled(idp, "forget")
    ledger = service.state.ledger
    for entry in entries:
        with service.state.transaction():
            holder = _other_holder(service, entry)
            ledger.forget(idp, "user", entry.local_id)
            if holder is not None:
                ledger.invalidate(idp, "user", holder.local_id)
                done.kept_by[entry.label] = holder.label
            _audit(service, "outbound.forget", entry)
        done.users.append(entry.label)
    done.kept_by = _still_kept(done.kept_by, set(done.users))
    return done


def _still_kept(kept_by: dict[str, str], forgotten: set[str]) -> dict[str, str]:
    """``kept_by`` once the whole command is done: a holder forgotten by the same
    command keeps nothing (``forget-account IDP carol dave`` of an account both held:
    nobody keeps it), unless a holder left after it took the account on."""
    out = {}
    for user, holder in kept_by.items():
        seen = {user}
        while holder in kept_by and holder not in seen:
            seen.add(holder)
            holder = kept_by[holder]
        if holder not in forgotten:
            out[user] = holder
    return out


def _other_holder(service: IdentityService, entry: LedgerEntry) -> LedgerEntry | None:
    """The entry of another local user that the ledger maps ``entry``'s account to."""
    if entry.remote_id is None:
        return None
    return service.state.ledger.holder(entry.idp, "user", entry.remote_id, entry.local_id)


def _account(entry: LedgerEntry) -> Account:
    sent = entry.sent or {}
    return Account(entry.local_id, sent.get("userName", entry.label), sent.get("attributes", {}))


def _audit(service: IdentityService, action: str, entry: LedgerEntry) -> None:
    service.state.audit(
        actor=service.actor,
        application=service.application,
        action=action,
        target=entry.label,
        outcome="ok",
        details={"idp": entry.idp, "remote_id": entry.remote_id},
        run=service.run,
    )
