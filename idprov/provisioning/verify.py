"""`idprov sync --verify [--repair]`: read the targets, report drift, restore what is idprov's.

For every user idprov provisioned: deleted remotely, or changed remotely (the
attributes that no longer match what idprov sent); recorded as created by idprov but
not carrying the mark the connector keeps (not provably idprov's, see
:mod:`~idprov.provisioning.marks`: never deleted, an operator settles them); and
those whose accounts a push
found lost and could not make again yet (the ledger says ``lost``: no group push names
them until they are made again). For every group: deleted
remotely, renamed, or missing members idprov put in it (members someone else added
are not idprov's and are left alone; a target that never returns members is asked
member by member), and members that are no account at the target (dangling: the
account is gone, and the target kept its id in the group). Where the connector can
list the target's users: the ones idprov does not own (it never touches those, unless
``on_conflict: adopt`` makes it take one over when it needs that name), and apart
from them those that carry idprov's mark for a local user (what adoption calls
provably idprov's) but are not in this IdP's ledger: an IdP renamed in the
configuration leaves its ledger under the old name. Those are never adopted or
deleted from here.

**Repair** restores what idprov owns: it forgets, in the ledger, what the target no
longer holds (a deleted account or group, changed attributes, lost members) and
enqueues those entities, so that the engine re-creates, re-sends in full or re-adds
them — through the same unit of work, push and deletion guard as any change. It
removes a group's dangling members, and only those: references whose account the
target says is gone (not one merely absent from idprov's ledger: an account of the
target's own that an administrator put in the group is left alone), once the
deletion guard has judged them as it judges any member removed from a group.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Container, Iterable
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import Account, Connector, Throttled
from idprov.errors import IdprovError
from idprov.provisioning.marks import unproven
from idprov.provisioning.remote_accounts import RemoteAccounts
from idprov.provisioning.results import Attempt, IdpReport, OperationResult, OutboundReport

if TYPE_CHECKING:
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.outbox import Kind
    from idprov.provisioning.service import IdentityService


def verify_idps(service: IdentityService, idps: list[str]) -> dict[str, Any]:
    return {name: verify_idp(service, name) for name in idps}


def drift_found(drift: dict[str, Any] | None) -> int:
    """How many entities have drifted, over every IdP of a verify report (accounts
    not provably idprov's too: an operator is to settle them)."""
    return sum(
        len(report["repairs"]) + len(report.get("not_proven", [])) + len(report.get("shared", []))
        for report in (drift or {}).values()
    )


def verify_idp(service: IdentityService, name: str) -> dict[str, Any]:
    connector = service.connector(name)
    report: dict[str, Any] = {
        "checked": 0,
        "deleted_remotely": [],
        "lost": [],
        "changed_remotely": [],
        "disabled_remotely": [],
        "kept_remotely": [],
        "not_proven": [],
        "shared": [],
        "groups_checked": 0,
        "groups_deleted_remotely": [],
        "groups_changed_remotely": [],
        "unowned": None,
        "marked_unowned": None,
        "cut_off_creates": None,
        "unverifiable": None,
        "accounts_listed": None,
        "errors": [],
        "repairs": [],
        "repaired": None,
    }
    owned = _verify_users(service, name, connector, report)
    if owned is None:
        return _in_order(report)
    listed = _listed(connector, report)
    _verify_groups(service, name, connector, report, owned | {r for r, _ in listed or []})
    if listed is None:
        return _in_order(report)
    unowned = [(rid, user_name) for rid, user_name in listed if rid not in owned]
    marked = _marked(service, name, connector, unowned, report, set(report["deleted_remotely"]))
    report["unowned"] = sorted(user_name for rid, user_name in unowned if rid not in marked)
    report["marked_unowned"] = sorted(n for n, creating in marked.values() if not creating)
    report["cut_off_creates"] = sorted(n for n, creating in marked.values() if creating)
    return _in_order(report)


def _in_order(report: dict[str, Any]) -> dict[str, Any]:
    """The report's lists by name, as a reader looks for one (the ledger's order is
    its ids')."""
    for key in (
        "deleted_remotely",
        "lost",
        "disabled_remotely",
        "not_proven",
        "groups_deleted_remotely",
    ):
        report[key].sort(key=str.casefold)
    report["changed_remotely"].sort(key=lambda change: change["user"].casefold())
    report["kept_remotely"].sort(key=lambda change: change["user"].casefold())
    report["groups_changed_remotely"].sort(key=lambda change: change["group"].casefold())
    return report


def _listed(connector: Connector, report: dict[str, Any]) -> list[tuple[str, str]] | None:
    """(remote id, user name) of every account at the target (None: it cannot tell).
    ``accounts_listed`` says whether the connector lists them (None: it failed to)."""
    try:
        listed = connector.list_users()
    except NotImplementedError:
        report["accounts_listed"] = False  # accounts outside the ledger are not looked for
        return None
    except IdprovError as exc:
        report["errors"].append(f"listing users: {exc.message}")
        return None
    report["accounts_listed"] = True
    return listed


def _marked(
    service: IdentityService,
    name: str,
    connector: Connector,
    unowned: list[tuple[str, str]],
    report: dict[str, Any],
    gone: set[str],
) -> dict[str, tuple[str, bool]]:
    """Remote id -> (user name, whether its create was cut off) of the accounts of
    ``unowned`` that carry idprov's mark for a local user, as adoption asks
    (``lookup_user`` finds that very account and calls it idprov's), although this
    IdP's ledger does not hold them. Only a local user whose account would have the
    user name of an unowned one is looked up. A create cut off (a kill, a lost reply)
    left its ``creating`` mark in the ledger: that account is idprov's push in
    flight, which the next push or sync adopts, not a sign of a renamed IdP. So is
    the account of a user whose recorded one the target lost (the ledger says
    ``lost``, or verify found it gone: ``gone``, by label): an update that found it
    gone makes it again, and a kill during that create leaves the ledger as it was."""
    if not unowned or type(connector).lookup_user is Connector.lookup_user:
        return {}  # the target keeps no mark: nothing proves an account idprov's
    from idprov.model import UserQuery
    from idprov.provisioning.decide import account_for

    idp = service.outbound.idp(name)
    by_name = {user_name.casefold(): rid for rid, user_name in unowned}
    creating = {
        local_id
        for local_id, entry in service.state.ledger.for_idp(name, "user").items()
        if entry.state in ("creating", "lost") or entry.label in gone
    }
    found: dict[str, tuple[str, bool]] = {}
    for user in service.stream_users(UserQuery(limit=None)).items:
        try:
            account = account_for(user, idp, type(connector))
            rid = by_name.get(account.user_name.casefold())
            match = connector.lookup_user(account) if rid is not None else None
        except IdprovError as exc:
            report["errors"].append(f"looking for idprov's mark: {exc.message}")
            continue
        if match is not None and match.ours and match.remote_id == rid:
            found[match.remote_id] = (account.user_name, user.id in creating)
    return found


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
    """Check every active user idprov provisioned; the remote ids it owns, disabled
    ones too (None: the connector cannot read users). The ledger is read here; the
    accounts are read concurrently (:func:`_read_all`), and judged here in the
    ledger's order, as if read one by one."""
    owned: set[str] = set()
    to_read: list[LedgerEntry] = []
    entries = service.state.ledger.for_idp(name, "user").values()
    merged = _shared(name, entries, report)
    for entry in entries:
        if entry.remote_id:
            owned.add(entry.remote_id)
        if entry.remote_id in merged:  # whose it is, an operator says first
            continue
        if entry.state == "lost":  # found gone by a push that could not make it again
            report["lost"].append(entry.label)
            _repair(report, entry, "re-create")
        elif entry.remote_id and entry.state == "active":
            to_read.append(entry)
    try:
        reads = _read_all(service, name, connector, to_read)
    except NotImplementedError:  # optional for a connector: nothing failed
        report["unverifiable"] = (
            f"the {connector.name} connector cannot read users: nothing was checked"
        )
        return None
    for entry, read in zip(to_read, reads, strict=True):
        if isinstance(read, IdprovError):
            report["errors"].append(f"{entry.label}: {read.message}")
        else:
            _judge_user(connector, entry, read, report)
    return owned


def _shared(name: str, entries: Iterable[LedgerEntry], report: dict[str, Any]) -> set[str]:
    """The remote ids the ledger maps to two or more local users at ``name`` (merged by
    an adoption of an earlier version), each listed in ``report["shared"]`` with the
    way to settle it: `idprov idp forget-account` of the users whose account it is
    not. Pushes keep it for the one idprov created it for (``keeps``), over those that
    adopted it; when that does not tell, an operator does. Their accounts are neither
    judged nor repaired until then: each user's drift is the other's attributes."""
    holders: dict[str, list[LedgerEntry]] = {}
    for entry in entries:
        if entry.remote_id:
            holders.setdefault(entry.remote_id, []).append(entry)
    merged = {rid: held for rid, held in holders.items() if len(held) > 1}
    for rid, held in sorted(merged.items(), key=lambda item: item[1][0].label.casefold()):
        made = [e for e in held if e.created_by_idprov]
        keeps = made[0] if len(made) == 1 else None
        others = [shlex.quote(e.label) for e in held if e is not keeps]
        labels = sorted((e.label for e in held), key=str.casefold)
        if keeps is not None:
            fix = (
                f"the account is {keeps.label}'s (idprov created it; the others adopted "
                f"it): `idprov idp forget-account {name} {' '.join(others)}`"
            )
        else:
            fix = (
                "check at the target whose account it is, then `idprov idp forget-account "
                f"{name} USER...` of the others (of {', '.join(labels)})"
            )
        report["shared"].append(
            {
                "remote_id": rid,
                "users": labels,
                "keeps": keeps.label if keeps is not None else None,
                "fix": fix,
            }
        )
    return set(merged)


def _read_all(
    service: IdentityService, name: str, connector: Connector, entries: list[LedgerEntry]
) -> list[dict[str, Any] | None | IdprovError]:
    """Each entry's account at the target (None: gone), or the error reading it, in
    ``entries``' order. The reads go out on the IdP's pool (``max_concurrency``
    threads; an HTTP connector's requests also wait for the IdP's slots and
    ``rate_limit`` pace, :class:`~idprov.connectors.http.RateLimiter`); this thread
    only waits, holding no database lock, and reports how far they got
    (:attr:`IdentityService.phase`). A 429 slows the pace down, as it does a push's.
    NotImplementedError (the connector cannot read users) or a bug is raised here,
    and the reads not started yet are not made."""
    from concurrent.futures import as_completed

    def read(remote_id: str) -> dict[str, Any] | None | IdprovError:
        try:
            return connector.read_user(remote_id)
        except IdprovError as exc:
            if isinstance(exc, Throttled):  # the other reads slow down, as a push's do
                connector.throttled()
            return exc

    pool = service.outbound.executor(name)
    futures = [pool.submit(read, entry.remote_id or "") for entry in entries]
    label = f"reading accounts at {name}"
    try:
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            if service.phase is not None:
                service.phase(label, done, len(futures))
    finally:
        for future in futures:
            future.cancel()
    return [future.result() for future in futures]


def _judge_user(
    connector: Connector, entry: LedgerEntry, remote: dict[str, Any] | None, report: dict[str, Any]
) -> None:
    """What ``remote``, ``entry``'s account as the target holds it, says of its drift."""
    report["checked"] += 1
    if remote is None:
        report["deleted_remotely"].append(entry.label)
        _repair(report, entry, "re-create")
        return
    if entry.created_by_idprov and unproven(connector, remote, _account(entry)):
        report["not_proven"].append(entry.label)
    drift = connector.drift(remote, _account(entry))
    if "active" in drift:  # idprov has it enabled: an administrator disabled it there
        drift.remove("active")
        report["disabled_remotely"].append(entry.label)
    if not drift:
        return
    managed = connector.managed_attributes()
    mapped = [path for path in drift if any(_same(key, path) for key in managed)]
    kept = [path for path in drift if path not in mapped]
    if kept:  # the user name, what the connector derives: a repair never sends them
        report["kept_remotely"].append({"user": entry.label, "attributes": kept})
    if mapped:
        report["changed_remotely"].append({"user": entry.label, "attributes": mapped})
        _repair(report, entry, "revert " + ", ".join(mapped))


def _account(entry: LedgerEntry) -> Account:
    """What idprov sent, as the connector judges drift: an attribute recorded as sent
    with null (a repair's removal not made yet, :func:`_send_again`) holds no value."""
    sent = entry.sent or {}
    attributes = sent.get("attributes") or {}
    return Account(
        entry.local_id,
        sent.get("userName", entry.label),
        {path: value for path, value in attributes.items() if value is not None},
        bool(sent.get("active", True)),
    )


def _verify_groups(
    service: IdentityService,
    name: str,
    connector: Connector,
    report: dict[str, Any],
    known: set[str],
) -> None:
    """Check every group idprov provisioned. ``known``: the remote ids of accounts
    that are idprov's or that the target listed (no member among them dangles)."""
    ledger = service.state.ledger
    members = ledger.all_members(name)
    absent: dict[str, bool] = {}  # remote id -> provably nothing there answers to it
    accounts = RemoteAccounts(connector, may_list=False)  # ``known`` holds what was listed
    for entry in ledger.for_idp(name, "role").values():
        if not entry.remote_id:
            continue
        try:
            remote = connector.read_group(entry.remote_id)
        except NotImplementedError:  # optional for a connector: nothing failed
            report["unverifiable"] = (
                f"the {connector.name} connector cannot read groups: groups were not checked"
            )
            return
        except IdprovError as exc:
            report["errors"].append(f"group {entry.label}: {exc.message}")
            continue
        report["groups_checked"] += 1
        if remote is None:
            report["groups_deleted_remotely"].append(entry.label)
            _repair(report, entry, "re-create")
            continue
        dangling = _dangling(accounts, remote[1], known, absent, report)
        mine = members.get(entry.local_id, set())
        _group_drift(service, name, connector, entry, remote, mine, dangling, report)


def _dangling(
    accounts: RemoteAccounts,
    remote_members: Container[str],
    known: set[str],
    absent: dict[str, bool],
    report: dict[str, Any],
) -> list[str]:
    """The members of a group that provably reference nothing at the target: neither
    an account nor a group answers to the id there (a nested group does not dangle).
    One the target does not say is gone (a read that fails) is kept. A target that
    never lists a group's members (they are asked one by one) has none to check.
    Whether an account answers is the engine's rule too (:class:`RemoteAccounts`).
    Where members cannot dangle (``members_dangle``), none is read: a permission set's
    thousands of assignees would cost one API call each."""
    if not accounts.connector.members_dangle:
        return []
    if not isinstance(remote_members, set | frozenset | list | tuple):
        return []
    out = []
    for rid in sorted(set(remote_members) - known):
        if rid not in absent:
            try:
                absent[rid] = not accounts.exists(rid) and not _a_group(accounts.connector, rid)
            except IdprovError as exc:
                report["errors"].append(f"member {rid}: {exc.message}")
                absent[rid] = False
            except NotImplementedError:
                absent[rid] = False
        if absent[rid]:
            out.append(rid)
    return out


def _a_group(connector: Connector, remote_id: str) -> bool:
    """Whether ``remote_id`` is a group at the target (True when it cannot tell)."""
    try:
        return connector.read_group(remote_id) is not None
    except NotImplementedError:
        return True


def _group_drift(
    service: IdentityService,
    name: str,
    connector: Connector,
    entry: LedgerEntry,
    remote: tuple[str, Container[str]],
    mine: set[str],
    dangling: list[str],
    report: dict[str, Any],
) -> None:
    display_name, remote_members = remote
    expected = service.state.ledger.remote_ids(name, mine)
    lost = sorted(local for local, rid in expected.items() if rid not in remote_members)
    # a group that is not idprov's (a Salesforce permission set, perhaps two roles'):
    # idprov never names it, so its name is no drift
    renamed = connector.deletes_groups and display_name != entry.label
    if not lost and not renamed and not dangling:
        return
    labels = {e.local_id: e.label for e in service.state.ledger.get_many(name, "user", lost)}
    change: dict[str, Any] = {"group": entry.label, "missing_members": [labels[u] for u in lost]}
    if renamed:
        change["display_name"] = display_name
    if dangling:
        change["dangling_members"] = dangling
    report["groups_changed_remotely"].append(change)
    how = (["restore members"] if lost else []) + (["rename back"] if renamed else [])
    _repair(report, entry, ", ".join(how + (["remove dangling members"] if dangling else [])))
    report["repairs"][-1]["lost"] = lost
    if dangling:
        report["repairs"][-1]["dangling"] = dangling


def repair(service: IdentityService, drift: dict[str, Any]) -> OutboundReport:
    """Restore what ``drift`` (a verify report) found, per IdP: forget in the
    ledger what the target lost, enqueue those entities and push them (through the
    deletion guard); remove dangling members (judged by it too). Records how many
    were repaired in each IdP's report."""
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
        _remove_dangling(service, idp, [f for f in report["repairs"] if "dangling" in f], outbound)
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
    returns the entities to push. A user made again keeps its groups in the ledger:
    its push puts it back in each in place of the lost account (whose id a target
    such as scim2-server keeps there: re-adding it as a new member left that id
    dangling), and a group that refuses it follows as the group's own push."""
    ledger = service.state.ledger
    entry = ledger.get(idp, fix["kind"], fix["local_id"])
    if entry is None:
        return []
    if fix["kind"] == "role":
        if fix["how"] == "remove dangling members":
            return []  # nothing of idprov's own to push: :func:`_remove_dangling` does it
        if fix["how"] == "re-create":
            ledger.forget(idp, "role", entry.local_id)
        else:
            ledger.set_members(idp, entry.local_id, [], fix.get("lost", []))
            if "rename back" in fix["how"]:
                ledger.relabel(idp, "role", entry.local_id, "")
        return [entry]
    if fix["how"].startswith("revert "):
        _send_again(service, entry, fix["how"].removeprefix("revert ").split(", "))
    else:
        ledger.invalidate(idp, "user", entry.local_id)
    return [entry]


def _send_again(service: IdentityService, entry: LedgerEntry, paths: list[str]) -> None:
    """Take the drifted ``paths`` out of what the ledger says was last sent, so that
    the push sends them again as an ordinary update: those, and what changed here.
    Never the activation or the user name: an account an administrator disabled or
    renamed at the target stays so (forgetting everything sent made every connector
    send the whole account, enabled). A path the mapping does not give (a value a
    connector derives) is not sent again. A mapped one idprov holds no value in (the
    target holds one: an administrator added it, or a removal was not applied) is
    recorded as sent with null, so that the push removes it, as it removes any
    attribute that lost its value here."""
    sent = entry.sent or {}
    attributes = sent.get("attributes")
    if not isinstance(attributes, dict):  # nothing to compare with: sent whole
        service.state.ledger.invalidate(entry.idp, "user", entry.local_id)
        return
    kept = {k: v for k, v in attributes.items() if not any(_same(k, p) for p in paths)}
    # a mapped attribute idprov holds no value in, which the target holds: the ledger
    # says one was sent (null), so that the push removes it (and only it)
    managed = service.connector(entry.idp).managed_attributes()
    held = [k for k in managed if attributes.get(k) is None and any(_same(k, p) for p in paths)]
    again = {**sent, "attributes": {**kept, **dict.fromkeys(held)}}
    service.state.ledger.record(dataclasses.replace(entry, hash=None, sent=again, inputs=None))


def _same(key: str, path: str) -> bool:
    """Whether the mapped attribute ``key`` (``name.familyName``, ``emails[type eq
    "work"].value``, an extension's ``urn:...:User:department``) is the drifted
    ``path`` a connector names (``name.familyName``, ``emails``, ``urn:...:User.department``)
    or inside it. Names compare without case, as SCIM, LDAP and Salesforce do."""
    key, path = (text.casefold().replace(":", ".") for text in (key, path))
    return key == path or key.startswith((path + ".", path + "["))


def _remove_dangling(
    service: IdentityService, idp: str, fixes: list[dict[str, Any]], outbound: OutboundReport
) -> None:
    """Take the dangling members that verify found out of their groups at ``idp``
    (``fixes``), once the deletion guard has judged them as member removals: an
    operation per group in ``outbound`` (failed, naming the guard, if it refuses)."""
    if not fixes:
        return
    from idprov.provisioning.guard import Effects, judge

    removals = [f"{fix['label']}: {rid}" for fix in fixes for rid in fix["dangling"]]
    verdict = judge(service.outbound, [Effects(idp, memberships=removals)], service.allow_deletes)
    done = outbound.idps.setdefault(idp, IdpReport(idp))
    done.total += len(fixes)
    for fix in fixes:
        op = OperationResult(idp, "role", fix["label"], "remove dangling members", "done")
        if verdict.trips:
            op.outcome = "failed"
            op.error = (
                f"deletion guard: {verdict.message()}; no dangling member was removed: "
                f"if they are all gone from the target for good, run `idprov sync --verify "
                f"--repair --allow-deletes {len(removals)}`"
            )
        else:
            _unlink(service, idp, fix, op)
        done.operations.append(op)


def _unlink(service: IdentityService, idp: str, fix: dict[str, Any], op: OperationResult) -> None:
    """Remove ``fix``'s dangling members from its group; recorded in the audit log."""
    from idprov.provisioning.retry import with_retries

    entry = service.state.ledger.get(idp, "role", fix["local_id"])
    connector = service.connector(idp)
    attempts: list[Attempt] = []
    try:
        if entry is None or not entry.remote_id:
            raise IdprovError(f"group {fix['label']} is no longer in idprov's ledger at {idp}")
        remote_id = op.remote_id = entry.remote_id
        with_retries(
            lambda n: connector.change_members(remote_id, [], fix["dangling"]),
            service.outbound.idp(idp).retry,
            attempts,
            service.outbound.sleep,
            connector.throttled,
        )
    except IdprovError as exc:
        op.outcome, op.error = "failed", exc.message
    op.attempts = len(attempts)
    with service.state.transaction():
        service.state.audit(
            actor=service.actor,
            application=service.application,
            action="outbound.members",
            target=fix["label"],
            outcome="ok" if op.outcome == "done" else "failed",
            details={"idp": idp, "removed_dangling": fix["dangling"], "error": op.error},
            run=service.run,
        )


def failed(reports: dict[str, Any] | None) -> bool:
    """Whether verifying could not read all it should (an error per IdP)."""
    return bool(reports) and any(r.get("errors") for r in (reports or {}).values())
