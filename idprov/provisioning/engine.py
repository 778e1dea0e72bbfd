"""Draining claimed outbox rows: from "this user must be reconciled at that IdP" to calls.

For each row the engine reads the *current* local state (through the read-only
directory) and the ledger, decides what the target needs (create, update, disable,
delete, nothing: :mod:`idprov.provisioning.decide`), and runs the call in a worker
thread of that IdP's pool, bounded by ``max_concurrency``. Users go first, then roles
(groups reference their members' remote ids); a role's members that were never
pushed to its IdP go with the users, on rows of their own that the role's planning
brings along (``RolePlanning._members_first``). The planning of each kind lives in
:mod:`~idprov.provisioning.plan_users` and :mod:`~idprov.provisioning.plan_roles`;
retries in :mod:`~idprov.provisioning.retry`.

Results are recorded on the calling thread in **short transactions**: the
``creating`` marks of a chunk before its calls go out, then, each time calls
complete, their ledger, outbox and audit records together. No transaction is open
while the engine waits for a target. An exception from a connector — a third-party
plugin's ``KeyError`` as much as a :class:`TargetError` — fails that row with its
message (one not idprov's, raised in the connector's code, names the connector and
its package as the one with the bug, with its traceback under ``IDPROV_DEBUG=1``);
every other row's result is still recorded.
"""

from __future__ import annotations

import dataclasses
import queue
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import (
    Account,
    CredentialsRefused,
    RemoteConflict,
    TargetError,
    Throttled,
)
from idprov.errors import IdprovError, SecretError
from idprov.provisioning.halting import current_halt
from idprov.provisioning.ledger import LedgerEntry, RefusedCreate
from idprov.provisioning.plan_roles import Replan, RolePlanning
from idprov.provisioning.plan_users import UserPlanning
from idprov.provisioning.remote_accounts import RemoteAccounts
from idprov.provisioning.results import (
    Attempt,
    IdpReport,
    OperationResult,
    OutboundReport,
    Progress,
)
from idprov.provisioning.retry import backoff, with_retries
from idprov.provisioning.state import audit_row
from idprov.provisioning.tasks import (
    Creating,
    Outcome,
    Planned,
    Settled,
    Task,
    debugging,
    describe,
    leave_group,
    print_traceback,
)

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.connectors.base import Connector
    from idprov.model import User
    from idprov.provisioning.outbound import Directory, Outbound
    from idprov.provisioning.outbox import OutboxRow

BATCH_ROWS = 200
"""Rows planned (and their ``creating`` marks committed) per chunk."""
MAX_ROUNDS = 10
"""Rounds of groups made again, each with members made again that the last round
found lost (:meth:`Engine._push_again`), in one drain."""
RENEW_SECONDS = 60.0


class LeftPending(Exception):
    """A row not sent because its IdP refused idprov's credentials earlier in this
    drain, or the drain was halted (:mod:`~idprov.provisioning.halting`): it stays in
    the outbox as it was."""


class Engine(UserPlanning, RolePlanning):
    """Drains claimed rows through an :class:`Outbound`'s connectors and pools."""

    def __init__(
        self,
        outbound: Outbound,
        directory: Directory,
        progress: Progress | None = None,
        passwords: dict[str, str] | None = None,
        report: OutboundReport | None = None,
        owners: Sequence[str] = (),
    ) -> None:
        self.outbound = outbound
        self.owners = list(owners) or [outbound.owner]
        """The names this drain's claims are under (renewed as it goes)."""
        self.directory = directory
        self.state = outbound.state
        self.progress = progress
        self.sleep = outbound.sleep
        self.passwords = passwords if passwords is not None else {}
        """Passwords set by the change being pushed, by user id; each taken once."""
        self.report = report if report is not None else OutboundReport()
        self._users: dict[str, User] = {}
        self._entries: dict[tuple[str, str, str], LedgerEntry | None] = {}
        self._kept: list[LedgerEntry] = []
        self._kept_remote: dict[tuple[str, str, str], LedgerEntry] = {}
        """The entries of :attr:`_kept` by (IdP, kind, remote id): the last kept of each."""
        self._done_rows: list[OutboxRow] = []
        self._audit_rows: list[tuple[Any, ...]] = []
        """Records of completed calls, written together at the end of each collect."""
        self._creating: list[Creating] = []
        self._marked: set[tuple[str, str, str]] = set()
        """(idp, kind, local id) of the creates whose ``creating`` mark this drain set."""
        self._bulked: set[int] = set()
        """Rows whose creates went in a SCIM Bulk (maybe several requests)."""
        self._unmarked: list[tuple[str, str, str]] = []
        """Of those, the creates that provably made nothing: their marks go."""
        self._bulk_used: set[str] = set()
        self._no_bulk: set[str] = set()
        self._completed: queue.SimpleQueue[tuple[Future[Any], Any]] = queue.SimpleQueue()
        self._in_flight = 0
        self._inline = False
        self._renewed = time.monotonic()
        self._stopped: dict[str, str] = {}
        """IdP -> the credentials failure that stopped its batch (set by workers)."""
        self._halt = current_halt()
        """Set: send nothing more, every IdP (`serve`'s push deadline passed)."""
        self._reported: set[str] = set()
        """IdPs whose credentials failure was reported (once per drain)."""
        self._roles_read = {}
        self._targets = {}
        self._unprovisioned = {}
        self._touched = {}
        self._whole = set()
        self._replan = []
        self._untracked = {}
        self._in_part = set()
        self._roles_named = {}
        self._unreadable = set()
        self._joining = []
        self._replanned: dict[int, list[Attempt]] = {}
        """Role row id -> the calls of its partial push that found its group deleted."""
        self.brought: list[OutboxRow] = []
        """Rows that this drain brought in, made and claimed by it: the members that
        its role rows need (:meth:`_members_first`), and the groups that the users it
        made or enabled again belong to (:meth:`_groups_after`)."""
        self._made = []
        self._lost = []
        self._confirmed = set()
        self._gone = {}
        self._remade = {}
        self._remote: dict[str, RemoteAccounts] = {}
        self._remote_lock = threading.Lock()
        self._holders: dict[tuple[str, str], dict[str, str]] = {}
        """(IdP, kind) -> remote id -> the local user or role holding it: the ledger's
        (read before the first create there is sent, see :meth:`_know_holders`) and this
        drain's creates and adoptions. Shared by the workers, under :attr:`_holders_lock`."""
        self._holders_read: set[tuple[str, str]] = set()
        self._holders_lock = threading.Lock()
        self._creators: dict[tuple[str, str, str], OutboxRow] = {}
        """(IdP, kind, local id) -> the row of a create planned in this drain."""
        self._shared: set[tuple[str, str]] = set()
        """(IdP, remote id) of the chunk's user entries that share their remote id with
        another entry (read with them: :meth:`_prefetch`)."""
        self._carried = {}
        self._passwords_sent: set[int] = set()
        """Of :attr:`_carried`, the rows whose push went through, password and all."""
        self._password_notes: dict[int, str] = {}
        """Row id -> what its audit says of a password that did not reach the target."""

    def drain(self, rows: Sequence[OutboxRow]) -> OutboundReport:
        """Reconcile ``rows``: users first, then roles, each role's never-pushed
        members with the users; before the roles, a while for members whose own push
        another drainer is making. Never raises for one row."""
        roles = [r for r in rows if r.kind == "role"]
        self._read_untracked(roles)  # before any member is read
        self.brought = self._members_first(roles) if roles else []
        users = [r for r in rows if r.kind == "user"] + self.brought
        for row in [*rows, *self.brought]:
            self._idp_report(row.idp).total += 1
        if self.progress is not None:  # the totals, before any call goes out (live views)
            self.progress(self.report)
        self._inline = len(users) + len(roles) == 1
        self._push(users, roles)
        self._push_again()
        self._passwords_left()
        return self.report

    def _passwords_left(self) -> None:
        """Mark the rows whose push could not send the password given in this command
        (it failed, or was left pending): idprov keeps passwords only in memory, so the
        push that goes through later sends none. Their users are named in the report
        (and in that later push's), to have the password set again."""
        left = [r for i, r in self._carried.items() if i not in self._passwords_sent]
        if not left:
            return
        with self.state.transaction():
            self.state.outbox.note_passwords([r.id for r in left])
        for row in left:
            self.report.password(row.id, row.idp, row.label, sent_later=False)

    def _password_fate(self, row: OutboxRow, result: OperationResult) -> None:
        """What became of a password ``row``'s push carries, or that an earlier push of
        it could not send (``row.password_unsent``): said in ``result`` and the audit."""
        if row.id in self._carried:
            if result.outcome == "done":
                self._passwords_sent.add(row.id)
                if row.password_unsent:  # a newer change's row kept: sent now
                    self.state.outbox.note_passwords([], [row.id])
            elif result.outcome == "failed":
                note = (
                    "the password given was not sent (idprov keeps passwords only in "
                    "memory): once this row goes through, set it again with `idprov user "
                    f"passwd {shlex.quote(row.label)}`"
                )
                result.error = f"{result.error}; {note}" if result.error else note
                self._password_notes[row.id] = "not sent: set it again with `idprov user passwd`"
        elif row.password_unsent and result.outcome == "done":
            self.report.password(row.id, row.idp, row.label, sent_later=True)
            self._password_notes[row.id] = (
                "pushed without the password an earlier, failed push could not send: set it "
                "again with `idprov user passwd`"
            )

    def _push_again(self) -> None:
        """Push once more, round after round, the groups made again without members
        whose accounts the target lost with them (:meth:`_lose_members`): those members
        first, made again (each in place of its lost id in its other groups), then the
        groups, which put them in. A round can make more groups again (a member's
        other group was lost too); after :data:`MAX_ROUNDS` what is left stays in the
        outbox, pending, for the next push (nothing of it is reported done)."""
        for _ in range(MAX_ROUNDS):
            if not any(self._gone.values()):
                return
            again = self._judged(self._bring(self._gone, "role"))
            members = self._bring(self._remade, "user")
            members += self._members_first(again) if again else []  # never pushed
            self._gone, self._remade, self._made, self._lost = {}, {}, [], []
            self._count(again + members)
            self._push(members, again)
        left = self._bring(self._remade, "user") + self._bring(self._gone, "role")
        self._count(left)
        for row in left:  # released by the outbound, due at once
            self.report.note("pending", row.idp, row.id)

    def _push(self, users: list[OutboxRow], roles: list[OutboxRow]) -> None:
        """Push ``users``, then the groups the users made or enabled again belong to,
        then ``roles``."""
        self._run(users, self._plan_user)
        after = self._judged(self._groups_after(roles)) if self._made or self._lost else []
        members = self._members_first(after) if after else []  # theirs, never pushed
        self._count(after + members)
        self._run(members, self._plan_user)
        roles = roles + after
        if roles:
            self._await_members(roles)
        self._run(roles, self._plan_role)
        while self._replan:  # groups found deleted where only some members were compared
            again, self._replan = self._replan, []
            self._whole.update(row.id for row in again)
            self._run(again, self._plan_role)

    def _judged(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """``rows``, brought by this drain, that the deletion guard lets go (no change
        of this drain's judged them): the others are held."""
        if not rows:
            return rows
        from idprov.provisioning.guard import hold_over

        return hold_over(self.outbound, rows, self.report)

    def _count(self, brought: list[OutboxRow]) -> None:
        for row in brought:
            self._idp_report(row.idp).total += 1
        self.brought += brought

    def _accounts(self, idp: str) -> RemoteAccounts:
        """What ``idp``'s target says of its accounts, asked once in this drain."""
        with self._remote_lock:
            if idp not in self._remote:
                self._remote[idp] = RemoteAccounts(self.outbound.connector(idp))
            return self._remote[idp]

    def _fan_out(self, idp: str, fn: Callable[[str], object], items: list[str]) -> None:
        """Run ``fn`` over ``items`` on this thread and on the threads of ``idp``'s pool
        that are free (within its ``max_concurrency``); raise the first failure. This
        thread works through the items too, so a pool whose every thread is busy (this
        one may be one of them) never leaves it waiting: it waits only for items that
        a running thread took."""
        shared = _FanOut(items)
        helpers = min(len(items), self.outbound.idp(idp).max_concurrency) - 1
        for _ in range(helpers):
            self.outbound.executor(idp).submit(shared.work, fn)
        shared.work(fn)
        shared.wait()

    def _idp_report(self, name: str) -> IdpReport:
        return self.report.idps.setdefault(name, IdpReport(name))

    # -- running
    def _plan(self, row: OutboxRow, planner: Callable[[OutboxRow], Planned]) -> Planned:
        try:
            return planner(row)
        except Exception as exc:  # a plugin's bug fails its row, not the drain
            return Settled(
                row,
                OperationResult(
                    row.idp, row.kind, row.label, "plan", "failed", error=self._describe(row, exc)
                ),
            )

    def _describe(self, row: OutboxRow, exc: BaseException) -> str:
        """``exc``'s message for ``row``; one raised in its connector's own code (not
        one of idprov's errors) names that connector as the one with the bug."""
        if isinstance(exc, IdprovError) or not self.outbound.configured(row.idp):
            return describe(exc)
        from idprov.connectors import registry

        name = self.outbound.idp(row.idp).connector
        try:  # a built-in connector's bug is idprov's: said as for any other
            plugin = name not in registry.BUILTIN and registry.raised_by(name, exc)
            culprit = registry.described(name) if plugin else None
        except IdprovError:
            culprit = None
        if debugging():
            whose = f"the connector {culprit}" if culprit else "idprov"
            print_traceback(exc, f"a bug in {whose} ({row.kind} {row.label} at {row.idp})")
        return describe(exc, culprit)

    def _run(self, rows: Sequence[OutboxRow], planner: Callable[[OutboxRow], Planned]) -> None:
        """Plan rows chunk by chunk and hand each call to its IdP's pool; record results
        as they complete, each time in one short transaction."""
        bulk: dict[str, list[Task]] = {}
        for start in range(0, len(rows), BATCH_ROWS):
            chunk = rows[start : start + BATCH_ROWS]
            self._prefetch(chunk)
            planned = [self._plan(row, planner) for row in chunk]
            settled = [item for item in planned if isinstance(item, Settled)]
            if self._creating or settled:
                with self.state.transaction():
                    # the `creating` marks are durable before any call is made
                    self._marked.update(self._new_marks())
                    self.state.ledger.mark_creating(self._creating)
                    self._creating.clear()
                    for done in settled:
                        self._settle(done)
            self._leave_together([t for t in planned if isinstance(t, Task) and t.leave])
            for item in planned:
                if isinstance(item, Task):
                    self._dispatch(item, bulk)
            if self._unmarked:  # creates left unsent: their IdP refused idprov's credentials
                with self.state.transaction():
                    self._flush()
            self._collect(block=False)
        for idp, queued in bulk.items():
            self._flush_bulk(idp, queued)
        while self._in_flight:
            self._collect(block=True)

    def _new_marks(self) -> set[tuple[str, str, str]]:
        """The creates of this chunk with no ledger entry before: the ``creating`` mark
        about to be set is this drain's (one left by an earlier try is not)."""
        keys = {(idp, kind, local_id) for idp, kind, local_id, *_ in self._creating}
        return {key for key in keys if key in self._entries and self._entries[key] is None}

    def _made_nothing(self, task: Task, attempts: list[Attempt], value: Any) -> bool:
        """Whether ``task``, a create this drain marked, provably made nothing at the
        target: it never ran (its IdP refused idprov's credentials), or, a user's
        create of one request, every attempt failed before the target could act (a
        refused connection) or was refused by it (a 4xx). An ambiguous failure (a
        timeout after the request went, a lost reply, a 5xx) keeps the mark, and so
        does an error not the target's (a connector's bug), and a create of several
        requests whose last one failed (a group made, then its members refused; a
        Bulk split in several): the next try looks the object up first."""
        if task.operation != "create" or _key(task.row) not in self._marked:
            return False
        if isinstance(value, LeftPending):
            return True
        if task.row.kind != "user" or task.row.id in self._bulked:
            return False
        return (
            isinstance(value, TargetError)
            and not (value.ambiguous or value.accepted)
            and not any(attempt.ambiguous for attempt in attempts)
        )

    def _leave_together(self, tasks: Sequence[Task]) -> None:
        """Take the users a chunk deprovisions out of their groups: one request per
        group (the connector splits it to the target's limits), not one per user
        and group; each in its IdP's pool, awaited before the deprovisions go."""
        by_group: dict[tuple[str, str], list[Task]] = {}
        for task in tasks:
            assert task.leave is not None
            for group in task.leave.groups:
                by_group.setdefault((task.row.idp, group), []).append(task)
        waiting = []
        for (idp, group), members in by_group.items():
            remote = [t.leave.remote_id for t in members if t.leave is not None]
            tried: list[Attempt] = []  # filled in the worker, read once it is done
            pool = self.outbound.executor(idp)
            waiting.append(
                (pool.submit(self._leave_group, idp, group, remote, tried), members, tried)
            )
        for future, members, tried in waiting:
            error = future.exception()
            for task in members:
                if task.leave is not None:
                    task.leave.failed += [a for a in tried if a.error is not None]
                    task.leave.error = task.leave.error or error
        for task in tasks:
            assert task.leave is not None
            task.leave.done = task.leave.error is None

    def _leave_group(
        self, idp: str, group: str, remote_ids: list[str], attempts: list[Attempt]
    ) -> None:
        connector = self.outbound.connector(idp)
        retry = self.outbound.idp(idp).retry
        with_retries(
            lambda n: leave_group(connector, group, remote_ids),
            retry,
            attempts,
            self.sleep,
            connector.throttled,
        )

    def _dispatch(self, task: Task, bulk: dict[str, list[Task]]) -> None:
        if task.row.idp in self._stopped or self._halted():  # left pending: see LeftPending
            self.report.note("pending", task.row.idp, task.row.id)
            if self._made_nothing(task, [], LeftPending(task.row.idp)):
                self._unmarked.append(_key(task.row))
            return
        if self._bulk_limit(task) > 1:
            self._queue_bulk(task, bulk)
        else:
            self._submit_task(task.row.idp, task)

    def _submit_task(self, idp: str, task: Task) -> None:
        attempts: list[Attempt] = []  # filled in the worker, read with the outcome
        self._submit(idp, (task, attempts), task.run, attempts)

    def _submit(self, idp: str, tag: Any, fn: Callable[..., Any], *args: Any) -> None:
        self._in_flight += 1
        if self._inline:  # one call: no hop to a pool thread and back
            future: Future[Any] = Future()
            try:
                future.set_result(self._guarded(idp, fn, *args))
            except Exception as exc:
                future.set_exception(exc)
            self._completed.put((future, tag))
            return
        future = self.outbound.executor(idp).submit(self._guarded, idp, fn, *args)
        future.add_done_callback(lambda f: self._completed.put((f, tag)))

    def _guarded(self, idp: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in a worker, unless ``idp`` refused idprov's credentials already:
        after the first such refusal nothing more is sent there in this drain; nor
        anything anywhere once the drain is halted."""
        if idp in self._stopped or self._halted():
            raise LeftPending(idp)
        try:
            return fn(*args)
        except CredentialsRefused as exc:
            self._stopped.setdefault(idp, exc.message)
            raise
        except SecretError as exc:  # never sent: as refused credentials, nothing made
            self._stopped.setdefault(idp, exc.message)
            raise CredentialsRefused(exc.message, hint=exc.hint) from exc

    def _halted(self) -> bool:
        return self._halt is not None and self._halt.is_set()

    def _collect(self, block: bool) -> None:
        """Record every call that has completed (waiting for one if ``block``), in one
        transaction; renew this drainer's claims now and then."""
        done: list[tuple[Future[Any], Any]] = []
        try:  # a call may take long (a group made again reads its members): renew meanwhile
            done.append(self._completed.get(block=block, timeout=self._until_renewal()))
            while True:
                done.append(self._completed.get_nowait())
        except queue.Empty:
            pass
        if not done:
            if self._until_renewal() == 0:
                with self.state.transaction():
                    self._renew()
            return
        with self.state.transaction():
            for future, tag in done:
                self._in_flight -= 1
                for task, attempts, value in self._outcomes(future, tag):
                    self._finish(task, attempts, value)
            self._flush()
            if self._until_renewal() == 0:
                self._renew()

    def _until_renewal(self) -> float:
        """Seconds until this drainer's claims are due to be renewed (0: now)."""
        every = min(RENEW_SECONDS, self.outbound.lease / 3)
        return max(0.0, every - (time.monotonic() - self._renewed))

    def _renew(self) -> None:
        """Renew this drainer's claims (inside the caller's short transaction)."""
        self.state.outbox.renew(self.owners, self.outbound.lease)
        self._renewed = time.monotonic()

    def _keep(self, entry: LedgerEntry) -> None:
        """A ledger entry to write with this collect's records."""
        self._kept.append(entry)
        if entry.remote_id:
            self._kept_remote[(entry.idp, entry.kind, entry.remote_id)] = entry

    def _flush(self) -> None:
        """Write the collected records: a few statements for many results."""
        self.state.ledger.record_many(self._kept)
        self._note_joined()  # before done_many: the rows they join are told first
        self.state.outbox.done_many(self._done_rows)
        self.state.audit_many(self._audit_rows)
        self.state.ledger.unmark_creating(self._unmarked)
        self._kept, self._done_rows, self._audit_rows, self._unmarked = [], [], [], []
        self._kept_remote = {}

    def _outcomes(
        self, future: Future[Any], tag: tuple[Task, list[Attempt]] | list[Task]
    ) -> list[Outcome]:
        if isinstance(tag, list):  # a bulk request returns its tasks' outcomes
            try:
                outcomes: list[Outcome] = future.result()
            except Exception as exc:
                return [(task, [], exc) for task in tag]
            return outcomes
        task, attempts = tag
        try:
            return [(task, attempts, future.result())]
        except Exception as exc:  # recorded as a failure by _finish
            return [(task, attempts, exc)]

    # -- bulk creates
    def _bulk_limit(self, task: Task) -> int:
        idp = task.row.idp
        if task.account is None or task.prior is not None or idp in self._no_bulk:
            return 0  # a create whose last try's outcome is unknown goes alone, looking first
        if self.report.idps[idp].total < 2:
            return 0  # one row: nothing to batch, and no discovery request to ask
        try:
            return self.outbound.connector(idp).bulk_create_limit()
        except Exception:
            self._no_bulk.add(idp)  # not asked again in this drain
            return 0  # no Bulk then; the single creates report what is wrong

    def _queue_bulk(self, task: Task, bulk: dict[str, list[Task]]) -> None:
        queued = bulk.setdefault(task.row.idp, [])
        queued.append(task)
        if len(queued) >= self._bulk_limit(task):
            self._submit(task.row.idp, list(queued), self._run_bulk, list(queued))
            queued.clear()
            self._bulk_used.add(task.row.idp)

    def _flush_bulk(self, idp: str, queued: list[Task]) -> None:
        """Send what is left: in bulk if there are enough (or this drain is already
        sending in bulk), else one request each."""
        enough = self.outbound.connector(idp).bulk_threshold()
        if len(queued) >= enough or (idp in self._bulk_used and len(queued) > 1):
            self._bulked.update(t.row.id for t in queued)
            self._submit(idp, list(queued), self._run_bulk, list(queued))
        else:
            for task in queued:
                self._submit_task(idp, task)
        queued.clear()

    def _run_bulk(self, tasks: list[Task]) -> list[Outcome]:
        """Create ``tasks``' accounts in one bulk request (in a worker). The request is
        sent again whole only after a refusal that proves nothing was done (a 429, say);
        after an ambiguous failure every item goes on alone, looking before creating."""
        idp = self.outbound.idp(tasks[0].row.idp)
        connector = self.outbound.connector(idp.name)
        shared: list[Attempt] = []
        accounts = [t.account for t in tasks if t.account is not None]
        try:
            results = self._send_bulk(connector, accounts, idp, shared)
        except TargetError as exc:
            if not exc.ambiguous:
                return [(t, list(shared), exc) for t in tasks]
            results = [exc] * len(tasks)
        except Exception as exc:  # a secret that cannot be read, say: every item fails
            return [(t, list(shared), exc) for t in tasks]
        return [
            self._bulk_item(t, r, shared, connector, idp)
            for t, r in zip(tasks, results, strict=True)
        ]

    def _send_bulk(
        self,
        connector: Connector,
        accounts: list[Account],
        idp: IdentityProviderConfig,
        attempts: list[Attempt],
    ) -> list[str | TargetError]:
        number = 0
        while True:
            number += 1
            start = time.monotonic()
            try:
                results = connector.create_users(accounts)
            except TargetError as exc:
                attempts.append(Attempt(number, _ms(start), exc.status, exc.message, exc.ambiguous))
                if isinstance(exc, Throttled):
                    connector.throttled()
                if exc.ambiguous or not exc.retryable or number >= idp.retry.max_attempts:
                    raise
                self.sleep(max(backoff(number, idp.retry), exc.retry_after or 0))
                continue
            attempts.append(Attempt(number, _ms(start)))
            return results

    def _bulk_item(
        self,
        task: Task,
        result: str | TargetError,
        shared: list[Attempt],
        connector: Connector,
        idp: IdentityProviderConfig,
    ) -> Outcome:
        attempts = list(shared)
        account = task.account
        assert account is not None
        if isinstance(result, TargetError) and result.ambiguous:  # this item may be made
            attempts[-1] = dataclasses.replace(attempts[-1], ambiguous=True)
        if isinstance(result, TargetError) and not isinstance(result, RemoteConflict):
            # The call went through, this item did not: its audit says so, not "ok".
            failed = dataclasses.replace(attempts[-1], status=result.status, error=result.message)
            attempts[-1] = failed
        try:
            if isinstance(result, str):
                self._claim(idp.name, result, account.local_id, take=True)
                return task, attempts, (result, True)
            if isinstance(result, RemoteConflict):
                return task, attempts, self._on_conflict(connector, idp, account, result)
            if not (result.retryable or result.ambiguous):
                raise result
            value = self._create(
                connector, idp, account, attempts, task.prior, ambiguous=result.ambiguous
            )
            return task, attempts, value
        except Exception as exc:
            return task, attempts, exc

    # -- reading what rows need, a chunk at a time
    def _prefetch(self, rows: Sequence[OutboxRow]) -> None:
        """Read the users and ledger entries of ``rows`` in a few queries: every query
        on this thread waits for the GIL behind the worker threads."""
        self._users.clear()
        self._entries.clear()
        self._shared.clear()
        by_domain: dict[str, list[str]] = {}
        for row in rows:
            if row.kind == "user":
                by_domain.setdefault(row.domain, []).append(row.local_id)
        for domain, ids in by_domain.items():
            try:
                self._users.update(self.directory.users_by_id((domain, i) for i in ids))
            except IdprovError:
                continue  # the planner reports it, row by row
        by_idp: dict[tuple[str, str], list[str]] = {}
        for row in rows:
            by_idp.setdefault((row.idp, row.kind), []).append(row.local_id)
        for (idp, kind), ids in by_idp.items():
            for local_id in ids:
                self._entries[(idp, kind, local_id)] = None  # none, unless found
            found = self.state.ledger.get_many(idp, kind, ids)
            for entry in found:
                self._entries[(idp, kind, entry.local_id)] = entry
            if kind == "user":
                held = [e.remote_id for e in found if e.remote_id]
                self._shared.update((idp, r) for r in self.state.ledger.shared(idp, kind, held))

    def _user(self, row: OutboxRow) -> User | None:
        if row.local_id in self._users:
            return self._users[row.local_id]
        return self.directory.users_by_id([(row.domain, row.local_id)]).get(row.local_id)

    def _entry(self, row: OutboxRow) -> LedgerEntry | None:
        key = (row.idp, row.kind, row.local_id)
        if key in self._entries:
            return self._entries[key]
        return self.state.ledger.get(row.idp, row.kind, row.local_id)

    # -- one remote object, one local user or role
    def _know_holders(self, row: OutboxRow) -> None:
        self._creators[(row.idp, row.kind, row.local_id)] = row
        key = (row.idp, row.kind)
        if self._inline or key in self._holders_read:  # inline: the ledger is asked
            return
        held = self.state.ledger.holders(row.idp, row.kind)
        with self._holders_lock:
            self._holders[key] = {**held, **self._holders.get(key, {})}
            self._holders_read.add(key)

    def _claim(
        self, idp: str, remote_id: str, local_id: str, take: bool, kind: str = "user"
    ) -> str | None:
        key = (idp, kind)
        with self._holders_lock:
            held = self._holders.setdefault(key, {})
            holder = held.get(remote_id)
            if holder is None and self._inline and key not in self._holders_read:
                entry = self.state.ledger.holder(idp, kind, remote_id, local_id)
                holder = entry.local_id if entry is not None else None
            if holder is not None and holder != local_id:
                return holder
            if take:
                held[remote_id] = local_id
            return None

    def _holding(
        self, idp: str, remote_id: str, local_id: str, held_by: str | None, kind: str = "user"
    ) -> LedgerEntry | None:
        kept = self._kept_remote.get((idp, kind, remote_id))  # recorded, not written yet
        if kept is not None and kept.local_id != local_id:
            return kept
        holder = self.state.ledger.holder(idp, kind, remote_id, local_id)
        if holder is not None or held_by is None:
            return holder
        made = self._creators.get((idp, kind, held_by))  # its create's outcome is not recorded yet
        if made is None:
            return None
        return LedgerEntry(
            idp=idp,
            kind=kind,
            local_id=held_by,
            domain=made.domain,
            label=made.label,
            remote_id=remote_id,
            state="creating",
            hash=None,
            sent=None,
            created_by_idprov=True,
            updated_at="",
        )

    def _shares(self, idp: str, remote_id: str, kind: str = "user") -> bool:
        if kind != "user" or not self._entries:  # not prefetched: asked
            return bool(self.state.ledger.shared(idp, kind, [remote_id]))
        return (idp, remote_id) in self._shared

    def _shared_with(self, row: OutboxRow, entry: LedgerEntry | None) -> LedgerEntry | None:
        if entry is None or not entry.remote_id:
            return None
        if not self._shares(row.idp, entry.remote_id, row.kind):
            return None
        holder = self._ledger.holder(row.idp, row.kind, entry.remote_id, row.local_id)
        return holder if holder is not None and self._exists(holder) else None

    def _refused(
        self, refusal: RefusedCreate, row: OutboxRow, idp: IdentityProviderConfig, stop: str
    ) -> TargetError:
        holder = None
        if refusal.remote_id is not None:
            holder = self._holding(
                row.idp, refusal.remote_id, row.local_id, refusal.holder, row.kind
            )
        adopt = idp.on_conflict == "adopt"
        return self._ledger.refused(
            refusal, row.kind, row.local_id, row.label, stop, holder, self._exists, adopt
        )

    def _exists(self, entry: LedgerEntry) -> bool:
        try:
            if entry.kind == "role":
                return self.directory.role_by_id(entry.domain, entry.local_id) is not None
            found = self.directory.users_by_id([(entry.domain, entry.local_id)])
        except IdprovError:
            return True  # unsure: never let go of it
        return entry.local_id in found

    # -- recording (inside the caller's short transaction)
    def _settle(self, item: Settled) -> None:
        if item.result.outcome == "failed" and item.row.idp in self._stopped:
            self.report.note("pending", item.row.idp, item.row.id)
            return  # left pending with the rest of the IdP's rows: one failure is told
        self._password_fate(item.row, item.result)
        if item.result.outcome == "failed":
            self._failed(item.row, item.result.error or "", item.result.status, 0)
        else:
            self.state.outbox.done(item.row)
            self._tracked(item.row)
        self._add(item.result, item.row)

    def _failed(self, row: OutboxRow, error: str, status: int | None, attempts: int) -> None:
        retry = self.outbound.idp(row.idp).retry if self.outbound.configured(row.idp) else None
        delay = retry.row_delay(row.failures + 1) if retry is not None else 0.0
        self.state.outbox.failed(row, error, status, attempts, delay)

    def _finish(self, task: Task, attempts: list[Attempt], value: Any) -> None:
        row = task.row
        if task.leave is not None:  # the failed tries at its groups were its own too
            attempts = [*task.leave.failed, *attempts]
        attempts = [*self._replanned.pop(row.id, []), *attempts]  # (the part's 404)
        if self._made_nothing(task, attempts, value):
            self._unmarked.append(_key(row))
        if self._left_pending(row, value):
            return
        if isinstance(value, Replan):  # planned again, whole: audited with that push
            self._replan.append(row)
            self._replanned[row.id] = attempts
            return
        first_refusal = isinstance(value, CredentialsRefused)
        try:
            if isinstance(value, BaseException):
                raise value
            result = task.record(value)
        except Exception as exc:
            if task.failed is not None:
                task.failed()
            status = exc.status if isinstance(exc, TargetError) else None
            result = OperationResult(
                row.idp,
                row.kind,
                row.label,
                task.operation,
                "failed",
                error=self._describe(row, exc),
                status=status,
            )
        result.attempts = len(attempts)
        if first_refusal:
            result.error = (
                f"credentials refused; idprov stopped pushing to {row.idp} and left its other "
                f"rows in the outbox: {result.error}"
            )
        if task.operation == "create" and getattr(value, "accepted", False):
            self.state.ledger.mark_accepted(row.idp, row.kind, row.local_id)
        self._password_fate(row, result)
        if result.outcome == "failed":
            self._failed(row, result.error or "", result.status, len(attempts))
        else:
            self._done_rows.append(row)
            self._tracked(row)
        self._audit(row, task.operation, result, attempts)
        self._add(result, row)

    def _left_pending(self, row: OutboxRow, value: Any) -> bool:
        """Whether ``row`` stays in the outbox untouched: its IdP's batch was stopped by
        a credentials failure, and this is not the one failure reported for it."""
        if isinstance(value, LeftPending):
            self.report.note("pending", row.idp, row.id)
            return True
        if isinstance(value, CredentialsRefused):
            self._stopped.setdefault(row.idp, value.message)  # a bulk request returns it
            if row.idp in self._reported:
                self.report.note("pending", row.idp, row.id)
                return True
            self._reported.add(row.idp)
        return False

    def _add(self, result: OperationResult, row: OutboxRow) -> None:
        result.row = row.id
        self._idp_report(result.idp).operations.append(result)
        if self.progress is not None:
            self.progress(self.report)

    def _audit(
        self, row: OutboxRow, operation: str, result: OperationResult, attempts: list[Attempt]
    ) -> None:
        if not attempts and result.outcome == "failed":
            attempts = [Attempt(0, 0, result.status, result.error)]
        for attempt in attempts:
            last = attempt is attempts[-1]
            self._audit_rows.append(
                audit_row(
                    self.outbound.actor,
                    self.outbound.application,
                    f"outbound.{operation}",
                    row.label,
                    "ok" if attempt.error is None else "failed",
                    {
                        "idp": row.idp,
                        "kind": row.kind,
                        "attempt": attempt.number,
                        "status": attempt.status,
                        "duration_ms": attempt.duration_ms,
                        "remote_id": result.remote_id if last else None,
                        "error": attempt.error,
                    }
                    | (
                        {"password": self._password_notes[row.id]}
                        if last and row.id in self._password_notes
                        else {}
                    ),
                    self.outbound.run,
                )
            )

    def take_password(self, user_id: str) -> str | None:
        return self.passwords.pop(user_id, None)


class _FanOut:
    """Items that several threads take one at a time (:meth:`Engine._fan_out`)."""

    def __init__(self, items: list[str]) -> None:
        self._items = iter(items)
        self._busy = 0
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def work(self, fn: Callable[[str], object]) -> None:
        """Take items and run ``fn`` on each, until none is left or one failed."""
        while True:
            with self._cond:
                item = None if self._error is not None else next(self._items, None)
                if item is None:
                    return
                self._busy += 1
            error = None
            try:
                fn(item)
            except BaseException as exc:  # handed to the thread that waits
                error = exc
            with self._cond:
                self._busy -= 1
                if self._error is None:
                    self._error = error
                self._cond.notify_all()

    def wait(self) -> None:
        """Wait for the items other threads took; raise the first failure."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            if self._error is not None:
                raise self._error


def _key(row: OutboxRow) -> tuple[str, str, str]:
    return row.idp, row.kind, row.local_id


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
