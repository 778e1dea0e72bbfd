"""Planning a user's row: provision (create or update), or deprovision.

Part of the engine (a mixin of :class:`~idprov.provisioning.engine.Engine`): each
``_plan_*`` method reads, decides, and returns a :class:`Task` whose ``run`` goes to
a worker thread and whose ``record`` writes the ledger back on the engine's thread.

**A create is never sent twice blindly.** After a create whose outcome is unknown
(a timeout, a 5xx, a lost reply, a ``creating`` mark left by a crash), the target is
looked up first. Only an object that is provably idprov's — it carries the mark
idprov sends for this entity (SCIM ``externalId``) — is adopted as idprov's; one
without that proof is taken over only with ``on_conflict: adopt``, and is then
recorded as not created by idprov (so it is never deleted by a deprovision).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import (
    Account,
    Connector,
    RemoteConflict,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
)
from idprov.provisioning.decide import UserDecision, decide_user, in_scope, with_unique_values
from idprov.provisioning.discard import scope_roles, stop_user
from idprov.provisioning.inputs import user_inputs
from idprov.provisioning.ledger import RefusedCreate, qualified
from idprov.provisioning.marks import delete_if_ours
from idprov.provisioning.results import Attempt, OperationResult
from idprov.provisioning.retry import with_retries
from idprov.provisioning.tasks import (
    Leave,
    Planned,
    Planning,
    Settled,
    Task,
    leave_group,
    ledger_entry,
)

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.model import User
    from idprov.provisioning.ledger import LedgerEntry
    from idprov.provisioning.outbox import OutboxRow


class UserPlanning(Planning):
    """The user half of the engine."""

    def _user(self, row: OutboxRow) -> User | None:
        raise NotImplementedError

    def take_password(self, user_id: str) -> str | None:
        raise NotImplementedError

    def _know_holders(self, row: OutboxRow) -> None:
        """Before ``row``'s create is sent: have its workers know which local user
        holds each remote id at its IdP (see :meth:`_claim`)."""
        raise NotImplementedError

    def _claim(
        self, idp: str, remote_id: str, local_id: str, take: bool, kind: str = "user"
    ) -> str | None:
        """In a worker: the local id of another user (``kind`` role: role) that holds
        ``remote_id`` at ``idp`` (the ledger maps it to that one, or a create or
        adoption of this drain took it), else None, and with ``take`` it is
        ``local_id``'s from now on."""
        raise NotImplementedError

    def _holding(
        self, idp: str, remote_id: str, local_id: str, held_by: str | None, kind: str = "user"
    ) -> LedgerEntry | None:
        """On the engine's thread: the entry of another user (or role) than
        ``local_id`` holding ``remote_id`` (``held_by``: the one a worker found),
        recorded or to be."""
        raise NotImplementedError

    def _exists(self, entry: LedgerEntry) -> bool:
        """Whether the local user or role of ``entry`` exists here (when unsure: yes)."""
        raise NotImplementedError

    def _shares(self, idp: str, remote_id: str, kind: str = "user") -> bool:
        """Whether another entry of ``kind`` holds ``remote_id`` at ``idp`` too."""
        raise NotImplementedError

    def _shared_with(self, row: OutboxRow, entry: LedgerEntry | None) -> LedgerEntry | None:
        """The entry of another local entity of ``row``'s kind that exists here and
        holds ``entry``'s remote id too (a merged ledger: see :meth:`_kept_for_another`)."""
        raise NotImplementedError

    def _refused(
        self, refusal: RefusedCreate, row: OutboxRow, idp: IdentityProviderConfig, stop: str
    ) -> TargetError:
        """The row's error for a create refused (see :meth:`Ledger.refused`): the
        object's holder, when another local entity of ``row``'s kind holds it, is named
        (it exists here) or let go (deleted here, and ``on_conflict: adopt``)."""
        raise NotImplementedError

    def _plan_user(self, row: OutboxRow) -> Planned:
        idp = self.outbound.idp(row.idp)
        connector = self.outbound.connector(row.idp)
        entry = self._entry(row)
        user = self._user(row)
        decision = decide_user(idp, type(connector), user, entry)
        decision = with_unique_values(decision, connector)
        decision = self._with_password(decision, row, connector)
        if decision.action == "none":
            if entry is not None and entry.remote_id is None and decision.account is None:
                if entry.state in ("creating", "accepted"):  # it may exist: look first
                    return self._plan_uncertain_deprovision(row, idp, connector, entry)
                self._ledger.forget(row.idp, "user", row.local_id)  # a create never made
            return self._skip(row, decision.reason, entry.remote_id if entry else None)
        if decision.action == "forget":  # lost at the target: a re-create may have made it
            assert entry is not None
            disable = user is not None and in_scope(idp, user.roles, user.domain)  # disabled here
            return self._plan_uncertain_deprovision(row, idp, connector, entry, disable)
        if decision.action in ("delete", "disable"):
            assert entry is not None
            return self._kept_for_another(row, entry) or self._plan_deprovision(
                row, idp, connector, entry, decision
            )
        assert user is not None
        yielded = self._yield_shared(row, entry, decision)
        if yielded is not None:
            return yielded
        inputs = user_inputs(idp, type(connector), user)
        return self._plan_provision(row, idp, connector, decision, entry, inputs, user)

    def _kept_for_another(self, row: OutboxRow, entry: LedgerEntry) -> Settled | None:
        """A deprovision of an account the ledger maps to another local user too (an
        adoption made before one account was kept to one user merged two people into
        it): while that user exists the account is theirs. Nothing is sent; this user's
        entry goes, and the other's next push (a sync) sends its own attributes again,
        over what this user's pushes left there."""
        holder = self._shared_with(row, entry)
        if holder is None:
            return None
        self._ledger.forget(row.idp, "user", row.local_id)
        self._ledger.invalidate(holder.idp, "user", holder.local_id)
        why = f"kept: the account is {qualified(holder)}'s (idprov forgot this user's record of it)"
        return self._skip(row, why, entry.remote_id)

    def _yield_shared(
        self, row: OutboxRow, entry: LedgerEntry | None, decision: UserDecision
    ) -> Settled | None:
        """An update of an account the ledger maps to another local user too (see
        :meth:`_kept_for_another`), while that user exists: one of them keeps it, the
        one idprov created it for over one that adopted it; this user yields unless it
        has that claim and the other not. It yields with nothing sent: its entry goes,
        its row fails naming the other, and the other's next push (a sync) sends its
        own attributes again; its next try finds the name taken, and is refused so."""
        holder = self._shared_with(row, entry)
        if entry is None or holder is None or entry.state == "lost":
            return None
        if entry.created_by_idprov and not holder.created_by_idprov:
            return None  # this user's: the other yields when it is pushed
        self._ledger.forget(row.idp, "user", row.local_id)
        self._ledger.invalidate(holder.idp, "user", holder.local_id)
        name = (entry.sent or {}).get("userName") or entry.label
        if decision.account is not None:
            name = decision.account.user_name
        refusal = RefusedCreate.name_taken(row.idp, "user", name, None, entry.remote_id)
        error = refusal.held_by(holder, row.label).error(row.label).message
        return Settled(
            row, OperationResult(row.idp, "user", row.label, "update", "failed", error=error)
        )

    def _with_password(
        self, decision: UserDecision, row: OutboxRow, connector: Connector
    ) -> UserDecision:
        """Carry a password set in this command to a connector that sends passwords
        (an unchanged user is then updated, for the password alone)."""
        if decision.account is None or not connector.accepts_password():
            return decision
        password = self.take_password(row.local_id)
        if password is None:
            return decision
        self._carried[row.id] = row
        account = dataclasses.replace(decision.account, password=password)
        if decision.action == "none":
            return dataclasses.replace(
                decision,
                action="update",
                reason="password changed",
                account=account,
                changed=["password"],
            )
        return dataclasses.replace(decision, account=account)

    def _plan_provision(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        decision: UserDecision,
        entry: LedgerEntry | None,
        inputs: str,
        user: User,
    ) -> Planned:
        account, sent, digest = decision.account, decision.sent, decision.digest
        assert account is not None
        retry = idp.retry
        lost: list[str] = []  # remote ids of groups the user, made again, did not join
        was_lost = entry is not None and entry.state == "lost"
        if entry is None or not entry.remote_id or was_lost or idp.on_conflict == "adopt":
            self._know_holders(row)  # a create (an update's, of an account gone) may adopt
        joins = entry is None or entry.remote_id is None or was_lost or decision.action == "enable"
        joining = self._joining_roles(row.idp, user) if joins else []  # read outside the
        # transaction that records the push: a directory may be slow to answer

        def record(outcome: tuple[str, bool] | RefusedCreate) -> OperationResult:
            if isinstance(outcome, RefusedCreate):
                stop = stop_user(row.idp, row.label, scope_roles(idp, user.roles, user.domain))
                raise self._refused(outcome, row, idp, stop)
            remote_id, created_by_idprov = outcome
            if entry is None or remote_id != entry.remote_id:
                self._one_holder(row, remote_id, account.user_name)
            self._keep(
                ledger_entry(
                    row, row.label, remote_id, "active", created_by_idprov, digest, sent, inputs
                )
            )
            self._confirmed.add((row.idp, row.local_id))
            op = "create" if entry is None or entry.remote_id is None or was_lost else "update"
            if joins:  # a create, or an enable: to join its groups
                self._made.append((row, user))
                self._joining.append((row.idp, joining, (user.domain, user.id)))
            self._lose_groups(row, lost)
            return OperationResult(row.idp, "user", row.label, op, "done", remote_id=remote_id)

        if entry is not None and entry.remote_id:
            remote_id = entry.remote_id
            # an account idprov disabled is re-enabled by a full replace carrying the
            # activation (account.enable: the only update that sends one); one it found
            # disabled (an administrator's doing) is only updated
            enabling = idprov_disabled(entry)
            previous = (entry.sent or {}).get("attributes")
            sent_name = (entry.sent or {}).get("userName")
            removed = removed_while_disabled(entry, sent) if enabling else False

            def send(number: int) -> None:
                if enabling:  # a full replace carries the user name already
                    if removed:  # it sends nothing of what is gone: that goes first
                        connector.update_user(remote_id, account, previous)
                    connector.update_user(
                        remote_id, dataclasses.replace(account, enable=True), None
                    )
                elif previous is not None and sent_name not in (None, account.user_name):
                    connector.rename_user(remote_id, account, sent_name, previous)
                else:
                    connector.update_user(remote_id, account, previous)

            groups = self._group_ids(row)
            gone: list[str] = []  # the account, found deleted at the target

            def update(attempts: list[Attempt]) -> tuple[str, bool] | RefusedCreate:
                if not was_lost:
                    try:
                        with_retries(send, retry, attempts, self.sleep, connector.throttled)
                        return remote_id, entry.created_by_idprov
                    except RemoteNotFound:  # deleted at the target: made again, in its groups
                        gone.append(remote_id)
                return self._remake(connector, idp, account, attempts, remote_id, groups, lost)

            def failed() -> None:
                """Not made again: the ledger says lost, not idprov's at the old id."""
                if gone:
                    self._ledger.mark_lost(row.idp, {row.local_id: remote_id})

            operation = "create" if was_lost else "update"
            return Task(row, operation, update, record, failed=failed)
        prior = entry.state if entry is not None else None  # creating, accepted: look first
        marked = json.dumps(sent, ensure_ascii=False)  # to look the account up, if need be
        self._creating.append((row.idp, "user", row.local_id, row.domain, row.label, marked))
        return Task(
            row,
            "create",
            lambda attempts: self._create(connector, idp, account, attempts, prior),
            record,
            account=account,
            prior=prior,
        )

    def _remake(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        account: Account,
        attempts: list[Attempt],
        lost_id: str,
        groups: list[str],
        lost: list[str],
    ) -> tuple[str, bool] | RefusedCreate:
        """Make again the account the target lost (``lost_id``), looking first (an
        earlier try's outcome may be unknown), and put it in ``groups`` (remote ids)
        in place of the lost id; the groups it could not join go in ``lost``."""
        made = self._create(connector, idp, account, attempts, "creating")
        if isinstance(made, RefusedCreate):
            return made
        for group_id in groups:  # the user is made: a group refusing it
            try:  # is the group's row's to finish (and a 404, to make again)
                self._join(connector, idp, group_id, made[0], lost_id, attempts)
            except TargetError:
                lost.append(group_id)
        return made

    def _create(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        account: Account,
        attempts: list[Attempt],
        prior: str | None,
        ambiguous: bool = False,
    ) -> tuple[str, bool] | RefusedCreate:
        """Create, never twice: after an uncertain outcome (a timeout, a 5xx, a
        ``creating`` mark left by a crash: ``prior``), look the account up first. A
        create the target acknowledged for later (``prior`` ``accepted``) made what is
        found: that is idprov's."""
        look = prior is not None or ambiguous

        def call(number: int) -> tuple[str, bool] | RefusedCreate:
            nonlocal look
            if look:
                match = connector.lookup_user(account)
                if match is not None:
                    if prior == "accepted":
                        match = RemoteMatch(match.remote_id, ours=True)
                    return self._adopt(connector, idp, account, match, None)
            try:
                made = connector.create_user(account)
            except RemoteConflict as exc:
                return self._on_conflict(connector, idp, account, exc, certain=not look)
            except TargetError as exc:
                look = look or exc.ambiguous
                raise
            self._claim(idp.name, made, account.local_id, take=True)
            return made, True

        result: tuple[str, bool] | RefusedCreate = with_retries(
            call, idp.retry, attempts, self.sleep, connector.throttled
        )
        return result

    def _on_conflict(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        account: Account,
        exc: TargetError,
        certain: bool = True,
    ) -> tuple[str, bool] | RefusedCreate:
        """The target says the account exists: adopt it if it is provably ours, or if
        the IdP says ``on_conflict: adopt``; else refuse, naming the account.
        ``certain``: no earlier attempt of this create can have made it."""
        match = connector.lookup_user(account)
        if match is None:
            return RefusedCreate(
                f"{idp.name} refused to create user {account.user_name!r} as a duplicate "
                f"({exc.message}), but no account of that name can be found there: the "
                "target may enforce uniqueness on another attribute (email?); check the "
                "account at the target",
                idp.name,
                exc.status,
                certain,
                taken=False,
            )
        return self._adopt(connector, idp, account, match, exc if certain else None)

    def _adopt(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        account: Account,
        match: RemoteMatch,
        conflict: TargetError | None,
    ) -> tuple[str, bool] | RefusedCreate:
        """(remote id, created by idprov) of an account found where a create went or
        was about to go; it is then updated to what idprov would send. One that is not
        provably idprov's is refused: after a ``conflict`` (the target's answer to
        idprov's first create) it was there before; else an earlier create of idprov's,
        whose outcome is not known, may have made it. One that another local user holds
        (the ledger maps it to that user) is refused, ``on_conflict: adopt`` or its mark
        notwithstanding, before anything is sent to it: one account, one user."""
        adopting = match.ours or idp.on_conflict == "adopt"
        holder = self._claim(idp.name, match.remote_id, account.local_id, take=adopting)
        if holder is None and adopting:
            connector.update_user(match.remote_id, account, None)
            return match.remote_id, match.ours
        return RefusedCreate.name_taken(
            idp.name, "user", account.user_name, conflict, match.remote_id, holder
        )

    def _one_holder(self, row: OutboxRow, remote_id: str, name: str) -> None:
        """Before ``row``'s user is recorded at ``remote_id``: no other local user may
        hold it. Its workers refuse such adoptions before sending anything; this
        catches the one they cannot see (an update at an IdP without ``on_conflict:
        adopt`` finds its account gone, and its re-create adopts by mark what it finds,
        the ledger's holders unread). Another user that exists holds it: the row fails
        naming it, and that user's next push sends its own attributes again (what was
        just sent may have overwritten them); one deleted here since lets go of it."""
        holder = self._holding(row.idp, remote_id, row.local_id, None)
        if holder is None:
            return
        if not self._exists(holder):
            self._ledger.forget(holder.idp, "user", holder.local_id)
            return
        self._ledger.invalidate(holder.idp, "user", holder.local_id)
        refusal = RefusedCreate.name_taken(row.idp, "user", name, None, remote_id)
        raise refusal.held_by(holder, row.label).error(row.label)

    def _join(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        group_id: str,
        user_id: str,
        lost_id: str,
        attempts: list[Attempt],
    ) -> None:
        """Put the user made again (``user_id``) in group ``group_id`` in place of its
        account the target lost (``lost_id``: a target that keeps a deleted user's id
        in its groups kept it, and after each loss one more stayed)."""

        def join(number: int) -> None:
            connector.change_members(group_id, [user_id], [lost_id])

        with_retries(join, idp.retry, attempts, self.sleep, connector.throttled)

    def _lose_groups(self, row: OutboxRow, lost: list[str]) -> None:
        """Take ``row``'s user, made again, out of the ledger's members of the groups
        (by remote id) it could not be put back in, and have their roles' rows follow
        in this drain (:meth:`~idprov.provisioning.plan_roles.RolePlanning._groups_after`),
        which add it: a group found deleted at the target is made again with its
        members, as a role's own push does; one that failed otherwise is retried as
        the role's row. The user's row is done, its new remote id recorded (a user
        update failed on the group's 404, losing the id of the account it had just
        made, and every sync after it failed, until ``sync --verify --repair``)."""
        for role_id, group_id in self._groups(row) if lost else []:
            if group_id in lost:
                self._ledger.set_members(row.idp, role_id, [], [row.local_id])
                role = self._ledger.get(row.idp, "role", role_id)
                if role is not None:
                    self._lost.append(role)

    def _groups(self, row: OutboxRow) -> list[tuple[str, str]]:
        """(role id, group remote id) of the groups idprov put ``row``'s user in."""
        return self._ledger.groups_with_ids(row.idp, row.local_id)

    def _group_ids(self, row: OutboxRow) -> list[str]:
        return [group_id for _, group_id in self._groups(row)]

    def _plan_uncertain_deprovision(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        entry: LedgerEntry,
        disable: bool = False,
    ) -> Task:
        """Deprovision a user whose create's outcome is unknown (``disable``: disable it
        whatever ``deprovision`` says, the user is disabled here): look it up; what is
        provably idprov's is deprovisioned, nothing found is forgotten, and anything
        else fails the row (it stays in the outbox, visible) instead of vanishing. An
        account the target lost is one: its re-create, or a kill during it, may have
        made it again with its answer lost (the ledger still says ``lost``)."""
        found_disabled: list[bool] = []
        sent = entry.sent or {}
        account = Account(row.local_id, sent.get("userName", row.label), sent.get("attributes", {}))
        operation = "disable" if disable or idp.deprovision == "disable" else "delete"
        lost = entry.state == "lost"

        def call(number: int) -> str | None:
            match = connector.lookup_user(account)
            if match is None:
                return None
            if not (match.ours or entry.state == "accepted"):
                raise TargetError(
                    f"an account named {account.user_name!r} exists at {idp.name}; an earlier "
                    "create of idprov's may have made it, but nothing there proves it, so "
                    "idprov does not deprovision it",
                    hint=f"check it at the target, then `idprov outbox discard --idp {idp.name}`",
                )
            if operation == "disable":
                done = connector.disable_user(match.remote_id, account)
                found_disabled.append(theirs_if(done, row, number))
            else:
                connector.delete_user(match.remote_id)
            return match.remote_id

        def run(attempts: list[Attempt]) -> str | None:
            found: str | None = with_retries(
                call, idp.retry, attempts, self.sleep, connector.throttled
            )
            return found

        def record(remote_id: str | None) -> OperationResult:
            if remote_id is not None and operation == "disable":
                disabled = disabled_form(sent, any(found_disabled))
                for role_id, _group in self._groups(row) if lost else []:
                    self._ledger.set_members(row.idp, role_id, [], [row.local_id])
                self._keep(ledger_entry(row, row.label, remote_id, "disabled", True, sent=disabled))
            else:
                self._ledger.forget(row.idp, "user", row.local_id)
            outcome = "done" if remote_id is not None else "skipped"
            nothing = "lost at the target, not found there" if lost else "never created"
            why = operation if remote_id is not None else nothing
            return OperationResult(row.idp, "user", row.label, why, outcome, remote_id=remote_id)

        return Task(row, operation, run, record)

    def _plan_deprovision(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        entry: LedgerEntry,
        decision: UserDecision,
    ) -> Planned:
        remote_id = entry.remote_id
        assert remote_id is not None
        groups = self._groups(row)
        sent = entry.sent or {}
        account = Account(
            row.local_id, sent.get("userName", row.label), sent.get("attributes", {}), active=False
        )
        operation = decision.action
        leaving = Leave(remote_id, [g for _, g in groups])
        found_disabled: list[bool] = []
        """True when the target had the account disabled already (not idprov's doing)."""
        gone: list[bool] = []
        """True when the target lost the account: nothing there to disable."""

        def run(attempts: list[Attempt]) -> None:
            if leaving.error is not None:
                raise leaving.error
            for group_id in [] if leaving.done else leaving.groups:

                def leave(number: int, group: str = group_id) -> None:
                    leave_group(connector, group, [remote_id])

                with_retries(leave, idp.retry, attempts, self.sleep, connector.throttled)
            if operation == "disable":

                def disable(number: int) -> None:
                    done = connector.disable_user(remote_id, account)
                    found_disabled.append(theirs_if(done, row, number))

                try:
                    with_retries(disable, idp.retry, attempts, self.sleep, connector.throttled)
                except RemoteNotFound:  # the target lost it: nothing there to disable
                    gone.append(True)
            else:
                with_retries(
                    lambda n: delete_if_ours(connector, remote_id, account, row.label),
                    idp.retry,
                    attempts,
                    self.sleep,
                    connector.throttled,
                )

        def record(_: None) -> OperationResult:
            for role_id, _group in groups:
                self._ledger.set_members(row.idp, role_id, [], [row.local_id])
            if operation == "delete" or gone:
                self._ledger.forget(row.idp, "user", row.local_id)
            if gone:
                why = "lost at the target: nothing there to disable"
                return OperationResult(row.idp, "user", row.label, why, "skipped")
            if operation == "disable":
                theirs = any(found_disabled)
                self._keep(
                    ledger_entry(
                        row,
                        row.label,
                        remote_id,
                        "disabled",
                        entry.created_by_idprov,
                        sent=disabled_form(sent, theirs),
                    )
                )
                if theirs:  # the target's deactivation, not idprov's: claim none
                    why, outcome = "already disabled at the target", "skipped"
                    if groups:
                        why, outcome = "left its groups; already disabled at the target", "done"
                    return OperationResult(
                        row.idp, "user", row.label, why, outcome, remote_id=remote_id
                    )
            return OperationResult(
                row.idp, "user", row.label, operation, "done", remote_id=remote_id
            )

        return Task(row, operation, run, record, leave=leaving if groups else None)


def theirs_if(done: bool | None, row: OutboxRow, number: int) -> bool:
    """Whether an account ``disable_user`` found disabled already (``done`` False) was
    disabled by someone else: only when idprov cannot have sent this disable before,
    its first call for the row (an earlier call's reply may have been lost, the
    account disabled by idprov's own request)."""
    return done is False and number == 1 and not row.attempts


def disabled_form(sent: dict[str, Any], found_disabled: bool) -> dict[str, Any]:
    """What the ledger keeps of a disabled account: what was last sent, ``active:
    false`` when idprov disabled it; as it was when the target had it disabled
    already (an administrator did), so that idprov never enables it again."""
    return dict(sent) if found_disabled else {**sent, "active": False}


def removed_while_disabled(entry: LedgerEntry, sent: dict[str, Any] | None) -> bool:
    """Whether the account of ``entry``, which idprov disabled, had attributes sent
    (before its disable: the ledger keeps them) that ``sent``, its enable, drops or
    blanks. The enable's full replace sends what the account has, and no connector
    takes away what it is not sent: those are removed first, from what was sent."""
    from idprov.provisioning.guard import removed_attributes

    return bool(removed_attributes(entry.sent, sent))


def idprov_disabled(entry: LedgerEntry) -> bool:
    """Whether idprov disabled the account of ``entry`` (and may enable it again)."""
    return entry.state == "disabled" and (entry.sent or {}).get("active") is False
