"""Draining the outbox: from "this user must be reconciled at that IdP" to calls.

For each outbox row the engine reads the *current* local state and the ledger,
decides what the target needs (create, update, disable, delete, nothing), and runs
the call in a worker thread, bounded per identity provider by ``max_concurrency``.
Users go first, then roles (groups reference their members' remote ids). Failures
that retrying can fix are retried with exponential backoff and jitter, honouring
``Retry-After``; the rest, and retries exhausted, leave the row failed in the
outbox with the target's message. Results are recorded (ledger, outbox, audit) on
the calling thread, one transaction per operation.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from idprov.config.models import IdentityProviderConfig, RetryConfig
from idprov.connectors.base import (
    Account,
    Connector,
    GroupSpec,
    RemoteConflict,
    RemoteNotFound,
    TargetError,
    last_status,
    note_status,
)
from idprov.errors import IdprovError
from idprov.provisioning.decide import (
    RoleDecision,
    UserDecision,
    decide_role,
    decide_user,
    in_scope,
)
from idprov.provisioning.outbox import LedgerEntry, OutboxRow

if TYPE_CHECKING:
    from idprov.model import User
    from idprov.provisioning.service import IdentityService

Progress = Callable[["OutboundReport"], None]


@dataclass
class Attempt:
    number: int
    duration_ms: int
    status: int | None = None
    error: str | None = None


@dataclass
class OperationResult:
    """One entity's reconciliation at one IdP: what was done and how it ended."""

    idp: str
    kind: str
    label: str
    operation: str
    outcome: str  # done | failed | skipped
    remote_id: str | None = None
    error: str | None = None
    status: int | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IdpReport:
    name: str
    total: int = 0
    operations: list[OperationResult] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for op in self.operations if op.outcome == outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "idp": self.name,
            "done": self.count("done"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "pending": self.total - len(self.operations),
            "operations": [op.to_dict() for op in self.operations if op.outcome != "skipped"],
        }


@dataclass
class OutboundReport:
    """Every IdP's results for one drain."""

    idps: dict[str, IdpReport] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(r.count("failed") for r in self.idps.values())

    def merge(self, other: OutboundReport) -> None:
        """Add another drain's results (an import pushes batch by batch)."""
        for name, report in other.idps.items():
            mine = self.idps.setdefault(name, IdpReport(name))
            mine.total += report.total
            mine.operations += report.operations

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "idps": [r.to_dict() for r in self.idps.values()]}


@dataclass
class Task:
    """Planned work for one row: ``run`` in a worker, ``record`` back on this thread."""

    row: OutboxRow
    operation: str
    run: Callable[[list[Attempt]], Any]
    record: Callable[[Any], OperationResult]
    account: Account | None = None
    """For user creates: what to create, so that creates can go out in bulk."""
    own: bool = False
    """For user creates: a remote object of that name is ours (a crashed create)."""


Outcome = tuple[Task, list[Attempt], Any]
"""A task, its attempts, and its value or the exception it raised."""


@dataclass
class Settled:
    """A row whose outcome is known without calling the target."""

    row: OutboxRow
    result: OperationResult


Planned = Task | Settled


# ---------------------------------------------------------------- retries
def backoff(attempt: int, retry: RetryConfig) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry."""
    ceiling = min(retry.max_backoff, retry.initial_backoff * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


THROTTLE_FACTOR = 4
"""429s may take this many times ``max_attempts``: throttling slows a run down (the
IdP's rate limiter halves its pace on each 429) rather than failing it."""


def with_retries(
    call: Callable[[int], Any],
    retry: RetryConfig,
    attempts: list[Attempt],
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run ``call(attempt_number)`` until it succeeds, fails for good, or runs out."""
    failures = throttled = 0
    number = 0
    while True:
        number += 1
        start = time.monotonic()
        note_status(None)
        try:
            value = call(number)
        except TargetError as exc:
            attempts.append(Attempt(number, _ms(start), exc.status, exc.message))
            if exc.status == 429:
                throttled += 1
            else:
                failures += 1
            exhausted = failures >= retry.max_attempts or throttled >= (
                retry.max_attempts * THROTTLE_FACTOR
            )
            if not exc.retryable or exhausted:
                raise
            sleep(_delay(exc, failures + throttled, retry))
        else:
            attempts.append(Attempt(number, _ms(start), last_status()))
            return value


def _delay(exc: TargetError, attempt: int, retry: RetryConfig) -> float:
    delay = backoff(attempt, retry)
    if exc.retry_after is None:
        return delay
    if exc.retry_after > retry.max_backoff:
        raise TargetError(
            f"{exc.message} (the target asks to wait {exc.retry_after:.0f}s, more than "
            f"retry.max_backoff {retry.max_backoff:.0f}s; left in the outbox)",
            status=exc.status,
        ) from exc
    return max(delay, exc.retry_after)


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


# ---------------------------------------------------------------- engine
class Engine:
    """Drains outbox rows for a service (its stores, state, connectors)."""

    def __init__(
        self,
        service: IdentityService,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.state = service.state
        self.progress = progress
        self.sleep = sleep
        self.report = OutboundReport()
        self._users: dict[str, User] = {}
        self._entries: dict[tuple[str, str, str], LedgerEntry] = {}
        self._creating: list[tuple[str, str, str, str, str]] = []
        self._bulk_used: set[str] = set()

    def drain(self, rows: Sequence[OutboxRow]) -> OutboundReport:
        """Reconcile ``rows``: users first, then roles. Never raises for one row."""
        for row in rows:
            self._idp_report(row.idp).total += 1
        users = [r for r in rows if r.kind == "user"]
        roles = [r for r in rows if r.kind == "role"]
        with self._executors(rows) as pools:
            self._run(users, self._plan_user, pools)
            self._run(roles, self._plan_role, pools)
        return self.report

    def _idp_report(self, name: str) -> IdpReport:
        return self.report.idps.setdefault(name, IdpReport(name))

    def _executors(self, rows: Sequence[OutboxRow]) -> _Pools:
        return _Pools(self.service)

    # -- running
    def _plan(self, row: OutboxRow, planner: Callable[[OutboxRow], Planned]) -> Planned:
        try:
            return planner(row)
        except IdprovError as exc:
            return Settled(
                row,
                OperationResult(row.idp, row.kind, row.label, "plan", "failed", error=exc.message),
            )

    def _run(
        self, rows: Sequence[OutboxRow], planner: Callable[[OutboxRow], Planned], pools: _Pools
    ) -> None:
        """Plan rows and hand each call to its IdP's pool as soon as it is planned, then
        record results as they complete. Writes are batched: one transaction per
        ``BATCH_ROWS`` rows or ``BATCH_SECONDS``, so a crash loses at most one batch of
        records, and the ``creating`` marks make a re-run adopt instead of duplicate."""
        futures: dict[Future[Any], tuple[Task, list[Attempt]] | list[Task]] = {}
        bulk: dict[str, list[Task]] = {}
        with _Batch(self.state.db) as batch:
            for start in range(0, len(rows), BATCH_ROWS):
                chunk = rows[start : start + BATCH_ROWS]
                self._prefetch(chunk)
                planned = [self._plan(row, planner) for row in chunk]
                self.state.ledger.mark_creating(self._creating)
                self._creating.clear()
                batch.commit()  # the `creating` marks are durable before any call is made
                for item in planned:
                    if isinstance(item, Settled):
                        self._settle(item)
                    elif self._bulk_limit(item) > 1:
                        self._queue_bulk(item, bulk, futures, pools)
                    else:
                        attempts: list[Attempt] = []
                        futures[pools.submit(item.row.idp, item.run, attempts)] = (item, attempts)
                    batch.tick()
            for idp, queued in bulk.items():
                self._flush_bulk(idp, queued, futures, pools)
        with _Batch(self.state.db) as batch:
            for future in as_completed(futures):
                for task, attempts, value in self._outcomes(future, futures[future]):
                    self._finish(task, attempts, value)
                    batch.tick()

    def _outcomes(
        self, future: Future[Any], submitted: tuple[Task, list[Attempt]] | list[Task]
    ) -> list[Outcome]:
        if isinstance(submitted, list):  # a bulk task returns its tasks' outcomes
            outcomes: list[Outcome] = future.result()
            return outcomes
        task, attempts = submitted
        try:
            return [(task, attempts, future.result())]
        except Exception as exc:  # recorded as a failure by _finish
            return [(task, attempts, exc)]

    # -- bulk creates
    def _bulk_limit(self, task: Task) -> int:
        if task.account is None:
            return 0
        try:
            return self.service.connector(task.row.idp).bulk_create_limit()
        except IdprovError:
            return 0  # no Bulk then; the single creates report what is wrong

    def _queue_bulk(
        self,
        task: Task,
        bulk: dict[str, list[Task]],
        futures: dict[Future[Any], Any],
        pools: _Pools,
    ) -> None:
        queued = bulk.setdefault(task.row.idp, [])
        queued.append(task)
        if len(queued) >= self._bulk_limit(task):
            futures[pools.submit(task.row.idp, self._run_bulk, list(queued))] = list(queued)
            queued.clear()
            self._bulk_used.add(task.row.idp)

    def _flush_bulk(
        self, idp: str, queued: list[Task], futures: dict[Future[Any], Any], pools: _Pools
    ) -> None:
        """Send what is left: in bulk if there are enough (or this drain is already
        sending in bulk), else one request each."""
        enough = self.service.connector(idp).bulk_threshold()
        if len(queued) >= enough or (idp in self._bulk_used and len(queued) > 1):
            futures[pools.submit(idp, self._run_bulk, list(queued))] = list(queued)
        else:
            for task in queued:
                attempts: list[Attempt] = []
                futures[pools.submit(idp, task.run, attempts)] = (task, attempts)
        queued.clear()

    def _run_bulk(self, tasks: list[Task]) -> list[Outcome]:
        """Create ``tasks``' accounts in bulk requests (in a worker). Items the target
        refused for a reason a retry can fix, and every item of a request that failed
        ambiguously, go on one by one, looking before creating."""
        idp = self.service.idp(tasks[0].row.idp)
        connector = self.service.connector(idp.name)
        shared: list[Attempt] = []
        accounts = [t.account for t in tasks if t.account is not None]
        try:
            results = with_retries(
                lambda n: connector.create_users(accounts), idp.retry, shared, self.sleep
            )
        except TargetError as exc:
            if not (exc.ambiguous or exc.retryable):
                return [(t, list(shared), exc) for t in tasks]
            results = [exc] * len(tasks)
        except IdprovError as exc:  # a secret that cannot be read, say: every item fails
            return [(t, list(shared), exc) for t in tasks]
        return [
            self._bulk_item(t, r, shared, connector, idp)
            for t, r in zip(tasks, results, strict=True)
        ]

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
        try:
            if isinstance(result, str):
                return task, attempts, (result, True)
            if isinstance(result, RemoteConflict):
                return task, attempts, self._conflict(connector, idp, account, task.own, result)
            if not (result.retryable or result.ambiguous):
                raise result
            value = self._create(
                connector, idp, account, attempts, task.own, ambiguous=result.ambiguous
            )
            return task, attempts, value
        except TargetError as exc:
            return task, attempts, exc

    def _prefetch(self, rows: Sequence[OutboxRow]) -> None:
        """Read the users and ledger entries of ``rows`` in a few queries: every query
        on this thread waits for the GIL behind the worker threads."""
        self._users.clear()
        self._entries.clear()
        by_domain: dict[str, list[str]] = {}
        for row in rows:
            if row.kind == "user":
                by_domain.setdefault(row.domain, []).append(row.local_id)
        for domain, ids in by_domain.items():
            try:
                self._users.update(self.service.users_by_id((domain, i) for i in ids))
            except IdprovError:
                continue  # the planner reports it, row by row
        by_idp: dict[tuple[str, str], list[str]] = {}
        for row in rows:
            by_idp.setdefault((row.idp, row.kind), []).append(row.local_id)
        for (idp, kind), ids in by_idp.items():
            for entry in self.state.ledger.get_many(idp, kind, ids):
                self._entries[(idp, kind, entry.local_id)] = entry

    def _user(self, row: OutboxRow) -> User | None:
        if row.local_id in self._users:
            return self._users[row.local_id]
        return self.service.users_by_id([(row.domain, row.local_id)]).get(row.local_id)

    def _entry(self, row: OutboxRow) -> LedgerEntry | None:
        key = (row.idp, row.kind, row.local_id)
        if key in self._entries:
            return self._entries[key]
        return self.state.ledger.get(row.idp, row.kind, row.local_id)

    def _settle(self, item: Settled) -> None:
        if item.result.outcome == "failed":
            self.state.outbox.failed(item.row, item.result.error or "", item.result.status, 0)
        else:
            self.state.outbox.done(item.row)
        self._add(item.result)

    def _finish(self, task: Task, attempts: list[Attempt], value: Any) -> None:
        row = task.row
        try:
            if isinstance(value, Exception):
                raise value
            result = task.record(value)
        except TargetError as exc:
            result = OperationResult(
                row.idp,
                row.kind,
                row.label,
                task.operation,
                "failed",
                error=exc.message,
                status=exc.status,
            )
        except IdprovError as exc:
            result = OperationResult(
                row.idp, row.kind, row.label, task.operation, "failed", error=exc.message
            )
        result.attempts = len(attempts)
        if result.outcome == "failed":
            self.state.outbox.failed(row, result.error or "", result.status, len(attempts))
        else:
            self.state.outbox.done(row)
        self._audit(row, task.operation, result, attempts)
        self._add(result)

    def _add(self, result: OperationResult) -> None:
        self._idp_report(result.idp).operations.append(result)
        if self.progress is not None:
            self.progress(self.report)

    def _audit(
        self, row: OutboxRow, operation: str, result: OperationResult, attempts: list[Attempt]
    ) -> None:
        for attempt in attempts:
            last = attempt is attempts[-1]
            self.service.audit_outbound(
                f"outbound.{operation}",
                row.label,
                outcome="ok" if attempt.error is None else "failed",
                details={
                    "idp": row.idp,
                    "kind": row.kind,
                    "attempt": attempt.number,
                    "status": attempt.status,
                    "duration_ms": attempt.duration_ms,
                    "remote_id": result.remote_id if last else None,
                    "error": attempt.error,
                },
            )

    # -- users
    def _plan_user(self, row: OutboxRow) -> Planned:
        idp = self.service.idp(row.idp)
        connector = self.service.connector(row.idp)
        entry = self._entry(row)
        decision = decide_user(idp, type(connector), self._user(row), entry)
        decision = self._with_password(decision, row, connector)
        if decision.action == "none":
            if entry is not None and entry.remote_id is None and decision.account is None:
                self.state.ledger.forget(row.idp, "user", row.local_id)  # a create never made
            return self._skip(row, decision.reason, entry.remote_id if entry else None)
        if decision.action in ("delete", "disable"):
            assert entry is not None
            return self._plan_deprovision(row, idp, connector, entry, decision)
        return self._plan_provision(row, idp, connector, decision, entry)

    def _with_password(
        self, decision: UserDecision, row: OutboxRow, connector: Connector
    ) -> UserDecision:
        """Carry a password set in this command to a connector that sends passwords
        (an unchanged user is then updated, for the password alone)."""
        if decision.account is None or not connector.accepts_password():
            return decision
        password = self.service.take_password(row.local_id)
        if password is None:
            return decision
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

    def _skip(self, row: OutboxRow, why: str, remote_id: str | None = None) -> Settled:
        return Settled(
            row, OperationResult(row.idp, row.kind, row.label, why, "skipped", remote_id=remote_id)
        )

    def _plan_provision(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        decision: UserDecision,
        entry: LedgerEntry | None,
    ) -> Planned:
        account, sent, digest = decision.account, decision.sent, decision.digest
        assert account is not None
        retry = idp.retry

        def record(outcome: tuple[str, bool]) -> OperationResult:
            remote_id, created_by_idprov = outcome
            self.state.ledger.record(
                _entry(row, row.label, remote_id, "active", created_by_idprov, digest, sent)
            )
            op = "create" if entry is None or entry.remote_id is None else "update"
            return OperationResult(row.idp, "user", row.label, op, "done", remote_id=remote_id)

        if entry is not None and entry.remote_id:
            remote_id = entry.remote_id
            # a disabled account is re-enabled by a full replace (active: true included)
            previous = None if entry.state == "disabled" else (entry.sent or {}).get("attributes")

            def update(attempts: list[Attempt]) -> tuple[str, bool]:
                try:
                    with_retries(
                        lambda n: connector.update_user(remote_id, account, previous),
                        retry,
                        attempts,
                        self.sleep,
                    )
                    return remote_id, entry.created_by_idprov
                except RemoteNotFound:
                    return self._create(connector, idp, account, attempts, own=True)

            return Task(row, "update", update, record)
        crashed_create = entry is not None and entry.state == "creating"
        self._creating.append((row.idp, "user", row.local_id, row.domain, row.label))
        return Task(
            row,
            "create",
            lambda attempts: self._create(connector, idp, account, attempts, own=crashed_create),
            record,
            account=account,
            own=crashed_create,
        )

    def _create(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        account: Account,
        attempts: list[Attempt],
        own: bool,
        ambiguous: bool = False,
    ) -> tuple[str, bool]:
        """Create, never twice: after an ambiguous failure (timeout, 5xx) look first."""

        def call(number: int) -> tuple[str, bool]:
            nonlocal ambiguous
            if ambiguous:
                found = connector.find_user(account.user_name)
                if found is not None:
                    return found, True
            try:
                return connector.create_user(account), True
            except RemoteConflict as exc:
                return self._conflict(connector, idp, account, own or ambiguous, exc)
            except TargetError as exc:
                ambiguous = ambiguous or exc.ambiguous
                raise

        result: tuple[str, bool] = with_retries(call, idp.retry, attempts, self.sleep)
        return result

    def _conflict(
        self,
        connector: Connector,
        idp: IdentityProviderConfig,
        account: Account,
        ours: bool,
        exc: RemoteConflict,
    ) -> tuple[str, bool]:
        if ours or idp.on_conflict == "adopt":
            found = connector.find_user(account.user_name)
            if found is not None:
                # what is there may be stale or deactivated: make it what we would send
                connector.update_user(found, account, None)
                return found, ours
        raise TargetError(
            f"a user named {account.user_name!r} already exists at {idp.name} and idprov did "
            f"not create it ({exc.message})",
            status=exc.status,
            hint=f"to take it over, set on_conflict: adopt on identity provider {idp.name}",
        ) from exc

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
        groups = [
            (role_id, g.remote_id)
            for role_id in self.state.ledger.groups_of(row.idp, row.local_id)
            if (g := self.state.ledger.get(row.idp, "role", role_id)) and g.remote_id
        ]
        sent = entry.sent or {}
        account = Account(
            row.local_id, sent.get("userName", row.label), sent.get("attributes", {}), active=False
        )
        operation = decision.action

        def run(attempts: list[Attempt]) -> None:
            for _, group_id in groups:

                def leave(number: int, group: str = group_id) -> None:
                    connector.change_members(group, [], [remote_id])

                with_retries(leave, idp.retry, attempts, self.sleep)
            if operation == "disable":
                with_retries(
                    lambda n: connector.disable_user(remote_id, account),
                    idp.retry,
                    attempts,
                    self.sleep,
                )
            else:
                with_retries(
                    lambda n: connector.delete_user(remote_id), idp.retry, attempts, self.sleep
                )

        def record(_: None) -> OperationResult:
            for role_id, _group in groups:
                self.state.ledger.set_members(row.idp, role_id, [], [row.local_id])
            if operation == "delete":
                self.state.ledger.forget(row.idp, "user", row.local_id)
            else:
                self.state.ledger.record(
                    _entry(
                        row,
                        row.label,
                        remote_id,
                        "disabled",
                        entry.created_by_idprov,
                        sent={**sent, "active": False},
                    )
                )
            return OperationResult(
                row.idp, "user", row.label, operation, "done", remote_id=remote_id
            )

        return Task(row, operation, run, record)

    # -- roles
    def _plan_role(self, row: OutboxRow) -> Planned:
        idp = self.service.idp(row.idp)
        connector = self.service.connector(row.idp)
        role = self.service.role_by_id(row.domain, row.local_id)
        entry = self._entry(row)
        refs = self.service.role_members(row.domain, role.id) if role is not None else []
        member_ids = [user_id for _, user_id in refs]
        provisioned = self.state.ledger.remote_ids(row.idp, member_ids)
        current = self.state.ledger.members(row.idp, row.local_id)
        decision = decide_role(
            idp, role.qualified_name if role else None, entry, set(provisioned), current
        )
        if decision.action == "none" and (role is None or decision.reason == "not pushed"):
            if entry is not None:
                self.state.ledger.forget(row.idp, "role", row.local_id)
            return self._skip(row, decision.reason)
        if decision.action == "delete":
            assert entry is not None and entry.remote_id is not None
            remote_id = entry.remote_id

            def delete(attempts: list[Attempt]) -> None:
                with_retries(
                    lambda n: connector.delete_group(remote_id), idp.retry, attempts, self.sleep
                )

            def forget(_: None) -> OperationResult:
                self.state.ledger.forget(row.idp, "role", row.local_id)
                return OperationResult(
                    row.idp, "role", row.label, "delete", "done", remote_id=remote_id
                )

            return Task(row, "delete", delete, forget)
        assert role is not None
        waiting = self._waiting_members(idp, refs, provisioned)
        name = role.qualified_name  # the group's display name: unique across domains
        if decision.action == "create":
            return self._plan_group_create(row, idp, connector, name, provisioned, waiting)
        assert entry is not None
        return self._plan_group_update(
            row, idp, connector, entry, name, provisioned, waiting, decision
        )

    def _waiting_members(
        self,
        idp: IdentityProviderConfig,
        refs: list[tuple[str, str]],
        provisioned: dict[str, str],
    ) -> list[str]:
        """Members in scope that are not (yet) provisioned: their own push failed."""
        missing = [(domain, user_id) for domain, user_id in refs if user_id not in provisioned]
        users = self.service.users_by_id(missing) if missing else {}
        return [u.qualified_name for u in users.values() if in_scope(idp, u.roles)]

    def _group_result(
        self, row: OutboxRow, operation: str, remote_id: str, waiting: list[str]
    ) -> OperationResult:
        if waiting:
            return OperationResult(
                row.idp,
                "role",
                row.label,
                operation,
                "failed",
                remote_id=remote_id,
                error="members not provisioned yet (their own push failed): "
                + ", ".join(sorted(waiting)),
            )
        return OperationResult(row.idp, "role", row.label, operation, "done", remote_id=remote_id)

    def _plan_group_create(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        name: str,
        provisioned: dict[str, str],
        waiting: list[str],
    ) -> Task:
        spec = GroupSpec(row.local_id, name, sorted(provisioned.values()))
        self._creating.append((row.idp, "role", row.local_id, row.domain, name))

        def create(attempts: list[Attempt]) -> str:
            def call(number: int) -> str:
                if number > 1:
                    found = connector.find_group(name)
                    if found is not None:
                        connector.change_members(found, spec.member_ids, [])
                        return found
                return connector.create_group(spec)

            result: str = with_retries(call, idp.retry, attempts, self.sleep)
            return result

        def record(remote_id: str) -> OperationResult:
            self.state.ledger.record(_entry(row, name, remote_id, "active", created_by_idprov=True))
            self.state.ledger.set_members(row.idp, row.local_id, provisioned, [])
            return self._group_result(row, "create", remote_id, waiting)

        return Task(row, "create", create, record)

    def _plan_group_update(
        self,
        row: OutboxRow,
        idp: IdentityProviderConfig,
        connector: Connector,
        entry: LedgerEntry,
        name: str,
        provisioned: dict[str, str],
        waiting: list[str],
        decision: RoleDecision,
    ) -> Planned:
        add, remove, rename = decision.add, decision.remove, decision.rename
        remote_id = entry.remote_id or ""
        if not (add or remove or rename):
            if waiting:
                return Settled(row, self._group_result(row, "members", remote_id, waiting))
            return self._skip(row, "unchanged", remote_id)
        removed_remote = self._any_remote_ids(row.idp, remove)

        def update(attempts: list[Attempt]) -> None:
            if rename:
                with_retries(
                    lambda n: connector.rename_group(remote_id, name),
                    idp.retry,
                    attempts,
                    self.sleep,
                )
            if add or removed_remote:
                with_retries(
                    lambda n: connector.change_members(
                        remote_id, [provisioned[u] for u in add], removed_remote
                    ),
                    idp.retry,
                    attempts,
                    self.sleep,
                )

        def record(_: None) -> OperationResult:
            self.state.ledger.record(
                _entry(row, name, remote_id, "active", entry.created_by_idprov)
            )
            self.state.ledger.set_members(row.idp, row.local_id, add, remove)
            return self._group_result(
                row, "rename" if rename and not (add or remove) else "members", remote_id, waiting
            )

        return Task(row, "rename" if rename and not (add or remove) else "members", update, record)

    def _any_remote_ids(self, idp: str, user_ids: Sequence[str]) -> list[str]:
        out = []
        for user_id in user_ids:
            entry = self.state.ledger.get(idp, "user", user_id)
            if entry is not None and entry.remote_id:
                out.append(entry.remote_id)
        return out


def _entry(
    row: OutboxRow,
    label: str,
    remote_id: str | None,
    state: str,
    created_by_idprov: bool,
    digest: str | None = None,
    sent: dict[str, Any] | None = None,
) -> LedgerEntry:
    """The ledger entry of ``row``'s entity after a successful operation."""
    return LedgerEntry(
        row.idp,
        row.kind,
        row.local_id,
        row.domain,
        label,
        remote_id,
        state,
        digest,
        sent,
        created_by_idprov,
        updated_at="",
    )


BATCH_ROWS = 200
BATCH_SECONDS = 0.25


class _Batch:
    """A write transaction that commits and begins again every so often."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.count = 0
        self.started = 0.0

    def __enter__(self) -> _Batch:
        self._begin()
        return self

    def _begin(self) -> None:
        self.db.conn.execute("BEGIN IMMEDIATE")
        self.count, self.started = 0, time.monotonic()

    def tick(self) -> None:
        self.count += 1
        if self.count >= BATCH_ROWS or time.monotonic() - self.started >= BATCH_SECONDS:
            self.commit()

    def commit(self) -> None:
        self.db.conn.execute("COMMIT")
        self._begin()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.db.conn.in_transaction:
            self.db.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


class _Pools:
    """The service's thread pool of each IdP (sized by ``max_concurrency``, kept for the
    service's life, so a command that pushes often does not start threads each time)."""

    def __init__(self, service: IdentityService):
        self.service = service

    def submit(self, idp: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self.service.executor(idp).submit(fn, *args)

    def __enter__(self) -> _Pools:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # the service shuts its pools down when it closes
