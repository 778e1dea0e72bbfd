"""Outbound provisioning: the object that owns connectors, worker threads and draining.

:class:`Outbound` is built from the configuration, idprov's state store and a small
read-only :class:`Directory` (users by id, a role by id, a role's members): it never
sees the service that made the change, so the write path and the push path only meet
in the outbox. It claims outbox rows, drains them through the engine and records
each result in a short transaction as it arrives: no database lock is held while a
target is answering.

Two ways to drain:

- :meth:`Outbound.drain` pushes the rows a change just committed (the CLI command or
  SCIM request that made it waits for the blocking IdPs);
- :meth:`Outbound.work` is the worker: it claims due rows — pending rows nobody is
  draining, failed rows whose time has come on the IdP's retry schedule — and drains
  them, once or until stopped (`idprov serve` runs it in a thread, `idprov outbox
  work` runs it alone).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from idprov.db import clock, now
from idprov.errors import IdprovError, NotFoundError
from idprov.provisioning.outbox import LEASE_SECONDS, UNJUDGED, DrainHealth, OutboxRow
from idprov.provisioning.results import OperationResult, OutboundReport, Progress
from idprov.text import escaped

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from idprov.config.models import Config, IdentityProviderConfig
    from idprov.connectors.base import Connector
    from idprov.model import Role, User
    from idprov.provisioning.connect import SharedPerIdp
    from idprov.provisioning.guard import GuardWindow
    from idprov.provisioning.state import StateStore

WORK_BATCH = 500
DEAD_CHECK_SECONDS = 5.0
"""How often one drainer looks for the claims of killed ones on this machine."""
AGAIN_ROUNDS = 3
"""How many times a push pushes again the role rows changed while it held them."""
IDLE_POLL_SECONDS = 2.0
WAITED = ("pending", "failed")
"""The rows a worker keeps while it waits for the rest of their change."""


class Directory(Protocol):
    """What outbound reads of the userstores: nothing else, and never writes."""

    def users_by_id(self, refs: Iterable[tuple[str, str]]) -> dict[str, User]:
        """Users (with all their roles) by id, from (domain, user id) pairs."""
        ...

    def role_by_id(self, domain: str, role_id: str) -> Role | None:
        """The role, or None if it no longer exists."""
        ...

    def role_members(self, domain: str, role_id: str) -> list[tuple[str, str]]:
        """(domain, user id) of the role's members."""
        ...

    def role_members_among(
        self, domain: str, role_id: str, refs: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Those of ``refs`` (domain, user id) that are members of the role."""
        ...

    def role_by_name(self, domain: str, name: str) -> Role | None:
        """The role a user of ``domain`` holds as ``name`` (``Internal/NAME`` for an
        internal role), or None."""
        ...


class Met(NamedTuple):
    """What a push meets: see :meth:`Outbound.with_unjudged`."""

    rows: list[OutboxRow]
    """The rows to judge: the push's, and the marked rows of their IdPs it pulled."""
    whole: set[str]
    """The IdPs where every marked row that no other drainer holds is in :attr:`rows`:
    only there does the guard's judgement clear a mark (elsewhere it judged another
    change in part: the worker judges it whole)."""
    later: set[int]
    """Rows pulled whose next try is later (failed, not due): judged with the others,
    not pushed now (see :func:`~idprov.provisioning.guard.hold_over`)."""
    withheld: frozenset[int] = frozenset()
    """Marked rows left out of :attr:`rows`, neither judged nor pushed: another drainer
    holds more of their change (:attr:`elsewhere`), and judged in parts it went out
    (see :meth:`Outbound.with_unjudged`)."""
    elsewhere: frozenset[int] = frozenset()
    """The marked rows of those changes that other drainers hold."""


class Outbound:
    """Connectors, per-IdP thread pools and draining, for one thread of control."""

    def __init__(
        self,
        config: Config,
        state: Callable[[], StateStore],
        directory: Directory,
        *,
        actor: str,
        application: str,
        http_transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._state = state
        self.directory = directory
        self.actor = actor
        self.application = application
        self.http_transport = http_transport
        """Injected into every HTTP connector's client (tests: faults; else None)."""
        self.sleep = sleep
        """How the engine waits between retries (tests record instead of sleeping)."""
        self.run: str | None = None
        """The sync run in progress, recorded with every audit entry it causes."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}{process_token()}"
        """This drainer's name on the rows it claims (:func:`holder_running` reads it)."""
        self._changes = itertools.count(1)
        self.pushed_by: Callable[[], str | None] | None = None
        """Where another process pushes this one's changes (`serve --workers`: the
        outbox worker; see :mod:`~idprov.inbound.push_relay`): a name under that
        drainer's for a change's claims, or None while it is not reachable."""
        self.say: Callable[[str], None] | None = None
        """Where the worker says, once per IdP and as it happens, why it leaves rows
        waiting for `idprov idp rename` (`idprov outbox work`: stderr; `idprov serve`:
        its log): a long-running worker's report comes only when it stops."""
        self.lease = LEASE_SECONDS
        self.batch = WORK_BATCH
        """Rows the worker claims at a time (workers sharing a PostgreSQL state each
        claim their own batches)."""
        self.shared: SharedPerIdp | None = None
        """The limits and TLS contexts of the IdPs, shared with the other services of a
        server (see :class:`~idprov.provisioning.connect.SharedPerIdp`); None: this
        one's own."""
        self._connectors: dict[str, Connector] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._looked_for_the_dead = -DEAD_CHECK_SECONDS
        self._names_ready = False
        self._waiting: set[int] = set()
        """Marked rows the worker holds, neither judged nor pushed, until it can claim
        the rest of their change (see :meth:`with_unjudged`)."""

    @property
    def state(self) -> StateStore:
        return self._state()

    def change_owner(self) -> str:
        """A name of its own for the claims of one change (:class:`UnitOfWork`): the
        push that follows drains exactly those rows, even while other changes' pushes
        by this drainer are still in flight. Under :attr:`pushed_by`, a name of the
        drainer that pushes them, while it can."""
        if self.pushed_by is not None and (name := self.pushed_by()) is not None:
            return name
        return f"{self.owner}.{next(self._changes)}"

    # ---- identity providers and their connectors
    def idp(self, name: str) -> IdentityProviderConfig:
        for idp in self.config.identity_providers:
            if idp.name == name:
                return idp
        declared = ", ".join(i.name for i in self.config.identity_providers) or "none"
        raise NotFoundError(f"no identity provider named {name!r}", hint=f"declared: {declared}")

    def configured(self, name: str) -> bool:
        return any(idp.name == name for idp in self.config.identity_providers)

    def awaiting_rename(self) -> dict[str, str]:
        """IdP -> the name its ledger is under, to take over with `idprov idp rename
        OLD NEW` before anything is pushed to it (see
        :func:`~idprov.provisioning.idp_rename.idp_names`), or where `idprov idp
        rename` moved it from under this process (see :meth:`_rename_gate`). Read afresh
        at each call, in one query (some 20 µs on SQLite, whatever the ledger's size),
        which also records where each configured IdP points (an installation that never
        ran a sync too)."""
        return self._rename_gate()[0]

    def renamed_away(self) -> dict[str, str]:
        """Configured IdP -> when `idprov idp rename` moved its ledger away to the name
        :meth:`awaiting_rename` gives: this process's configuration is older than that
        rename (see :meth:`_rename_gate`)."""
        return self._rename_gate()[1]

    def _rename_gate(self) -> tuple[dict[str, str], dict[str, str]]:
        """:meth:`awaiting_rename`'s answer, and IdP -> when `idprov idp rename` moved
        its ledger away, for the configured IdPs this process must not push to because
        its configuration is older than a rename: the rename took the ledger of a name
        it still configures, which has no ledger of its own again (whenever the rename
        was, wherever the new name points: a name renamed away is never pushed under
        until renamed back; give another IdP another name). Each drain and each
        worker cycle asks once, after claiming its rows (a rename refuses while rows
        of its IdP are claimed), so no rename moves a ledger from under a push, even
        in a worker or `idprov serve` that started before it."""
        from idprov.provisioning.idp_rename import idp_names, migrate_tables

        if not self._names_ready:
            migrate_tables(self.state.db)
            self._names_ready = True
        names = idp_names(self.state, self.config, migrate=False)
        waiting, away = dict(names.waiting), {}
        for idp, (to, at) in names.renamed.items():
            if self.configured(idp) and idp not in names.ledger:
                waiting[idp], away[idp] = to, at
        return waiting, away

    def connector(self, name: str) -> Connector:
        """The connector of IdP ``name``, made on first use with its own HTTP client."""
        if name not in self._connectors:
            from idprov.provisioning.connect import open_connector

            self._connectors[name] = open_connector(
                self.idp(name), self.http_transport, self.sleep, self.shared
            )
        return self._connectors[name]

    def executor(self, idp: str) -> ThreadPoolExecutor:
        """The worker threads of IdP ``idp`` (``max_concurrency`` of them), made once."""
        if idp not in self._executors:
            from concurrent.futures import ThreadPoolExecutor

            self._executors[idp] = ThreadPoolExecutor(
                max_workers=self.idp(idp).max_concurrency, thread_name_prefix=f"idprov-{idp}"
            )
        return self._executors[idp]

    def close(self) -> None:
        for pool in self._executors.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._executors.clear()
        for connector in self._connectors.values():
            connector.close()
            if connector.client is not None:
                connector.client.close()
        self._connectors.clear()

    # ---- draining
    def drain(
        self,
        rows: Sequence[OutboxRow],
        progress: Progress | None = None,
        passwords: Mapping[str, str] | None = None,
        claims: Sequence[str] = (),
    ) -> OutboundReport:
        """Reconcile ``rows`` now: claim them, push, record. Rows of an IdP that left
        the configuration are skipped (counted in ``orphaned``), and so are those of
        an IdP awaiting `idprov idp rename` (``awaiting_rename``: they wait in the
        outbox); rows another drainer holds are left to it (counted in ``queued``).
        Rows their changes' transactions claimed under the names ``claims`` (see
        :class:`UnitOfWork`) are drained without claiming them again. Never raises
        for one row."""
        report = OutboundReport()
        mine = self._configured(rows, report)
        if not mine:
            return report
        names = set(claims)
        stamp = now()
        held = [r for r in mine if r.claimed_by in names and (r.claimed_until or "") > stamp]
        claimed = held
        if len(held) < len(mine):
            self.release_the_dead()
            ours = {r.id for r in held}
            rest = [r for r in mine if r.id not in ours]
            with self.state.transaction():
                claimed = sorted(
                    held + self.state.outbox.claim(rest, self.owner, self.lease),
                    key=lambda r: r.id,
                )
            names.add(self.owner)
        taken = {c.id for c in claimed}
        claimed = self._not_renamed(mine, claimed, report, sorted(names))
        self.note_leased([r.id for r in mine if r.id not in taken], report)
        self._drain_claimed(claimed, report, progress, passwords, sorted(names))
        return self._drain_changed(claimed, report, progress)

    def note_leased(self, ids: Sequence[int], report: OutboundReport, queued: bool = True) -> None:
        """Note in ``report`` the rows of ``ids`` that another drainer holds (a claim
        refused them): one running on this machine pushes them (``queued``); one
        elsewhere may have been killed there, and no worker takes them before its
        lease ends: ``leased``, with who and until when (without ``queued``, only
        those are noted: a worker's pass says nothing of rows pushed meanwhile)."""
        left = [i for i in ids if i not in report.noted]
        if not left:
            return
        stamp = now()
        for row in self.state.outbox.rows(left):
            holder, until = row.claimed_by or "", row.claimed_until or ""
            if holder and until >= stamp and not holder_running(holder):
                report.lease(row.idp, row.id, holder, until)
            elif queued:  # pushed by a drainer here, or released since: the next drain
                report.note("queued", row.idp, row.id)

    def _drain_changed(
        self, rows: Sequence[OutboxRow], report: OutboundReport, progress: Progress | None
    ) -> OutboundReport:
        """Push again the role rows of ``rows`` that another change enqueued while this
        push held them (the row's version moved on, so this push's end left it
        pending): every change to a role's members coalesces into that role's row,
        and the other change's push left it to this one (``queued``), which may have
        read the members before that change. Without this, the group missed the other
        change's member until a worker, a retry or a sync came by. Judged by the
        deletion guard first, as the worker judges rows it did not cause (a change
        committed without its push, with every row of it); at most
        :data:`AGAIN_ROUNDS` times."""
        for _ in range(AGAIN_ROUNDS):
            read = {r.id: r.version for r in rows if r.kind == "role"}
            if not read:
                break
            ids = sorted(read)
            current = [
                r
                for start in range(0, len(ids), 500)
                for r in self.state.outbox.rows(ids=ids[start : start + 500])
            ]
            changed = [r for r in current if r.status == "pending" and r.version != read[r.id]]
            if not changed:
                break
            with self.state.transaction():
                claimed = self.state.outbox.claim(changed, self.owner, self.lease)
            met = self.with_unjudged(claimed)
            claimed = self._not_renamed(met.rows, met.rows, report, [self.owner])
            if not claimed:
                break
            from idprov.provisioning.guard import hold_over

            rows = hold_over(self, claimed, report, whole=met.whole, later=met.later)
            self._drain_claimed(rows, report, progress, None)
        return report

    def release_the_dead(self) -> list[int]:
        """Give back the leases of drainers on this machine that are no longer running
        (killed mid-push), so a re-run need not wait for them to run out; returns the
        rows released. A drainer elsewhere keeps its lease until it expires. Writes
        (in a transaction of its own) only when there is something to release. Looks
        at most every ``DEAD_CHECK_SECONDS`` (`idprov serve` pushes per request)."""
        if time.monotonic() - self._looked_for_the_dead < DEAD_CHECK_SECONDS:
            return []
        self._looked_for_the_dead = time.monotonic()
        dead = [h for h in self.state.outbox.holders() if holder_gone(h)]
        if not dead:
            return []
        released = []
        with self.state.transaction():
            for holder in dead:
                released += self.state.outbox.release(holder)
        return released

    def _configured(self, rows: Sequence[OutboxRow], report: OutboundReport) -> list[OutboxRow]:
        """The rows of ``rows`` of configured IdPs; the others are noted as orphaned."""
        mine = []
        for row in rows:
            if self.configured(row.idp):
                mine.append(row)
            else:
                report.note("orphaned", row.idp, row.id)
        return mine

    def _not_renamed(
        self,
        rows: Sequence[OutboxRow],
        claimed: Sequence[OutboxRow],
        report: OutboundReport,
        owners: Sequence[str],
    ) -> list[OutboxRow]:
        """The rows of ``claimed`` (claimed under ``owners``) to push. Which IdPs await
        `idprov idp rename` is read now, after the claim: a rename refuses while rows of
        its IdP are claimed, so it cannot move a ledger from under this push, and one
        that came before the claim is seen (:meth:`_rename_gate`). Every row of ``rows``
        of those IdPs is noted in ``report``; the claimed ones are given back, for the
        rename to take and a later push to claim. A row claimed after a rename moved it
        to an IdP not configured here is given back too."""
        waiting, away = self._rename_gate() if claimed else ({}, {})
        for row in rows:
            if row.idp in waiting:
                report.await_rename(row.idp, waiting[row.idp], row.id, away.get(row.idp))
        left = {r.id: r for r in claimed if r.idp in waiting or not self.configured(r.idp)}
        if not left:
            return list(claimed)
        with self.state.transaction():
            self.state.outbox.release_rows(list(left), list(owners))
        for row in left.values():
            if row.idp not in waiting:
                report.note("orphaned", row.idp, row.id)
        return [r for r in claimed if r.id not in left]

    def _drain_claimed(
        self,
        rows: Sequence[OutboxRow],
        report: OutboundReport,
        progress: Progress | None,
        passwords: Mapping[str, str] | None,
        owners: Sequence[str] = (),
    ) -> OutboundReport:
        """Push ``rows``, claimed under ``owners`` (default: this drainer's name); give
        back the claims of those not finished."""
        from idprov.provisioning.engine import Engine

        owners = list(owners) or [self.owner]
        before = {name: len(r.operations) for name, r in report.idps.items()}
        engine = Engine(self, self.directory, progress, dict(passwords or {}), report, owners)
        try:
            engine.drain(rows)
        finally:
            drained = [*rows, *engine.brought]  # with the members its roles brought
            ended = {name: r.operations[before.get(name, 0) :] for name, r in report.idps.items()}
            finished = sum(len(ops) for ops in ended.values()) >= len(drained)
            health = self._health_changes(ended)
            if health or not finished:  # each finished row released its own claim
                with self.state.transaction():
                    self.state.outbox.release_rows([r.id for r in drained], owners)
                    for name, told in health:
                        self.state.outbox.note_health(name, told)
        return report

    def _health_changes(
        self, ended: Mapping[str, Sequence[OperationResult]]
    ) -> list[tuple[str, DrainHealth]]:
        """What to record of each IdP's health after a drain whose operations ended as
        ``ended`` (per IdP, in the order they ended): a failure, and the first success
        of an IdP that was failing (a healthy IdP's success writes nothing)."""
        failing = None
        out = []
        for name, ops in ended.items():
            health = drain_health(ops)
            if health.failed_at is None:
                if health.succeeded_at is None:
                    continue
                if failing is None:
                    failing = {n for n, h in self.state.outbox.health().items() if h.failing_since}
                if name not in failing:
                    continue
            out.append((name, health))
        return out

    def retry(
        self, idps: Sequence[str] | None = None, progress: Progress | None = None
    ) -> OutboundReport:
        """Drain every row of ``idps`` (all IdPs with rows when None) now, whatever its
        schedule: `idprov outbox retry`. Orphaned rows are skipped with a warning."""
        return self.work(idps, once=True, eager=True, progress=progress)

    def work(
        self,
        idps: Sequence[str] | None = None,
        *,
        once: bool = False,
        eager: bool = False,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> OutboundReport:
        """The worker: claim due rows and drain them, batch after batch. With ``once``,
        drain what is due now (every row, if ``eager``), each row at most once, and
        return; else keep waiting for rows to come due until ``stop`` is set. Why rows
        are left waiting for `idprov idp rename`, and for another drainer's lease on part
        of their change (:func:`_tell_leased`), is told to :attr:`say` as it happens."""
        from idprov.provisioning.guard import GuardWindow

        total = OutboundReport()
        told: set[str] = set()
        stop = stop or threading.Event()
        window = GuardWindow()  # the batches of one pass, or until idle, are one change
        if once:
            names = self._worked_idps(idps, total, eager)
            self.release_the_dead()
            ids = self.state.outbox.due_ids(names, eager) if names else []
            seen: set[int] = set()  # judged with an earlier batch: not claimed again
            for start in range(0, len(ids), self.batch):
                if stop.is_set():
                    break
                chunk = [i for i in ids[start : start + self.batch] if i not in seen]
                with self.state.transaction():
                    batch = self.state.outbox.claim_ids(chunk, self.owner, self.lease)
                taken = {r.id for r in batch}
                self.note_leased([i for i in chunk if i not in taken], total, queued=False)
                total.merge(self._drain_judged(batch, progress, window, seen, eager))
            _tell_waiting(total, told, self.say)
            return total
        waited: set[tuple[str, str]] = set()  # (IdP, holder) told of: see _tell_leased
        try:
            while not stop.is_set():
                batch = self._due_batch(idps, total)
                withheld: set[int] = set()
                if batch:
                    drained = self._drain_judged(batch, progress, window, withheld=withheld)
                    _tell_leased(drained, withheld, waited, self.say)
                    total.merge(drained)
                _tell_waiting(total, told, self.say)
                if not batch:
                    window = GuardWindow()  # idle: what comes next is another change
                    stop.wait(self._idle_wait(idps))
                elif {r.id for r in batch} <= withheld:  # parts of a change others hold
                    stop.wait(IDLE_POLL_SECONDS)  # more of: until they give theirs back
        finally:
            self._give_back_waiting()
        return total

    def _give_back_waiting(self) -> None:
        """Give back the rows the worker kept, waiting for the rest of their change
        (see :meth:`_split`): pending, due now, their marks kept."""
        if self._waiting:
            with self.state.transaction():
                self.state.outbox.release_rows(sorted(self._waiting), [self.owner])
            self._waiting.clear()

    def _drain_judged(
        self,
        batch: list[OutboxRow],
        progress: Progress | None,
        window: GuardWindow,
        seen: set[int] | None = None,
        eager: bool = False,
        withheld: set[int] | None = None,
    ) -> OutboundReport:
        """Drain a claimed batch, but first let the deletion guard hold what a change
        committed without a push (`import --no-push`) would destroy, judged with the
        batches before it in ``window`` and with every row of that change (see
        :meth:`with_unjudged`; ``eager``: a manual retry, every row is due). The ids
        judged are added to ``seen``, and so are those withheld (a part of a change
        that other drainers hold more of: see :meth:`_split`), which are added to
        ``withheld`` too; given ``withheld``, this is a worker that waits for them."""
        from idprov.provisioning.guard import hold_over

        report = OutboundReport()
        met = self.with_unjudged(batch, eager=eager, wait=withheld is not None)
        if met.elsewhere:
            self.note_leased(sorted(met.elsewhere), report, queued=False)
        if withheld is not None:
            withheld.update(met.withheld)
        batch = self._not_renamed(met.rows, met.rows, report, [self.owner])
        if seen is not None:
            seen.update(r.id for r in batch if r.id not in met.later)
            seen.update(met.withheld)
        pushed = hold_over(self, batch, report, window=window, whole=met.whole, later=met.later)
        return self._drain_claimed(pushed, report, progress, None)

    def with_unjudged(
        self,
        rows: list[OutboxRow],
        only: Collection[str] | None = None,
        own: Collection[int] = (),
        eager: bool = False,
        wait: bool = False,
        claims: Sequence[str] = (),
    ) -> Met:
        """``rows``, and where one of them carries a change no guard judged whole
        (:attr:`~idprov.provisioning.outbox.OutboxRow.unjudged`), every pending or
        failed row of that IdP (of ``only``, when given) that carries one and no other
        drainer holds, claimed: such a change is judged whole before any of it goes.
        Judged a batch (``batch`` rows) at a time, the first batch of a large one went
        out under the guard's minimum; pushed with a command's change alone, it went
        out a few users at a time. The rows ``own`` (the pushing command's change)
        carry their own mark (:data:`~idprov.provisioning.outbox.OWN_PUSH`): this push
        judges them; only another change's mark in them takes the others. A failed
        row pulled so whose next try has not come (unless ``eager``) is judged with
        them, and waits for its time (:attr:`Met.later`). Where other drainers hold
        marked rows of those IdPs, the change is not judged in part: see
        :meth:`_split` (``wait``: this is a worker that can wait for them). The rows
        the pushing changes claimed under the names ``claims`` are this push's, not
        another drainer's, whoever made the names (`idprov serve` commits on its
        writer thread and pushes on a pusher thread or in its outbox worker)."""
        whole = set(only) if only is not None else {r.idp for r in rows}
        idps = sorted(
            {
                r.idp
                for r in rows
                if (r.unjudged == UNJUDGED or (r.unjudged and r.id not in own)) and r.idp in whole
            }
        )
        if not idps:
            return Met(rows, whole, set())
        with self.state.transaction():
            pulled = self.state.outbox.claim_unjudged(idps, self.owner, self.lease)
            elsewhere = self.state.outbox.marked_elsewhere(idps, self.owner, claims)
        known = {r.id for r in rows}
        self._waiting -= known | {r.id for r in pulled}  # looked at again: kept below if so
        stamp = now()
        later = {
            r.id
            for r in pulled
            if r.id not in known
            and not eager
            and r.status == "failed"
            and (r.next_attempt_at or "") > stamp
        }
        rows = sorted([*rows, *(r for r in pulled if r.id not in known)], key=lambda r: r.id)
        if elsewhere:
            return self._split(Met(rows, whole, later), elsewhere, set(own), wait, claims)
        return Met(rows, whole, later)

    def _split(
        self,
        met: Met,
        elsewhere: list[tuple[str, int]],
        own: set[int],
        wait: bool,
        claims: Sequence[str] = (),
    ) -> Met:
        """:meth:`with_unjudged`'s answer where other drainers hold marked rows
        (``elsewhere``: (IdP, id), by id) of the IdPs it pulled: there this drainer
        holds only part of a change no guard judged, and judged so, each drainer its
        part, every part under the guard's minimum, all of it went. Its marked rows of
        those IdPs are neither judged nor pushed now (:attr:`Met.withheld`), their
        marks kept: given back (pending, due now) for whoever can claim them all,
        but by a worker (``wait``) that holds the lowest marked row of the IdP, which
        keeps them and claims the rest at its next look (:meth:`_due_batch`), once the
        others gave theirs back: of two workers, exactly one waits, and neither
        gives way to the other forever. The rows given back are released under this
        drainer's names and the pushing changes' (``claims``): kept under a change's
        name, a row its push left waited for the lease to end (5 minutes), every
        other drainer refused it, and its request had answered."""
        lowest: dict[str, int] = {}
        for idp, i in elsewhere:
            if i not in own:  # the pushing command's change, under another of its names
                lowest.setdefault(idp, i)
        if not lowest:
            return met
        theirs = {i for _, i in elsewhere}
        out = [
            r
            for r in met.rows
            if r.idp in lowest
            and r.id not in theirs
            and (r.unjudged == UNJUDGED or (r.unjudged and r.id not in own))
        ]
        first = {r.idp: r.id for r in reversed(out)}
        keep = {r.id for r in out if wait and first[r.idp] < lowest[r.idp]}
        back = [r for r in out if r.id not in keep]
        if back:
            owners = {self.owner, *(r.claimed_by for r in back if r.claimed_by)}
            mine = [
                o
                for o in owners
                if o == self.owner or o.startswith(f"{self.owner}.") or o in claims
            ]
            with self.state.transaction():
                self.state.outbox.release_rows([r.id for r in back], mine)
        self._waiting.difference_update(r.id for r in back)
        self._waiting.update(keep)
        left = {r.id for r in out} | {r.id for r in met.rows if r.id in theirs}
        return Met(
            [r for r in met.rows if r.id not in left],
            set(met.whole) - set(lowest),
            set(met.later) - left,
            frozenset(r.id for r in out),
            frozenset(i for idp, i in elsewhere if idp in lowest),
        )

    def _due_batch(self, idps: Sequence[str] | None, total: OutboundReport) -> list[OutboxRow]:
        """Claim the next due rows of the configured IdPs; note orphaned ones once."""
        names = self._worked_idps(idps, total, eager=False)
        if not names:
            self._give_back_waiting()
            return []
        self.release_the_dead()
        with self.state.transaction():
            kept = self._waiting  # their change's other rows may be free now: a new look
            self._waiting = set()
            waited = self.state.outbox.claim_ids(sorted(kept), self.owner, self.lease)
            due = self.state.outbox.due(names, self.owner, self.lease, self.batch)
        gone = [r.id for r in waited if r.idp not in names or r.status not in WAITED]
        if gone:
            with self.state.transaction():
                self.state.outbox.release_rows(gone, [self.owner])
        stamp = now()  # a failed row whose next try has not come: kept, pulled with the rest
        self._waiting = {r.id for r in waited if r.status == "failed" and r.id not in gone}
        self._waiting -= {r.id for r in waited if (r.next_attempt_at or "") <= stamp}
        again = [r for r in waited if r.id not in gone and r.id not in self._waiting]
        return sorted([*again, *due], key=lambda r: r.id)

    def _worked_idps(
        self, idps: Sequence[str] | None, total: OutboundReport, eager: bool
    ) -> list[str]:
        """The IdPs to drain: those named (else every IdP with rows) that are configured,
        not awaiting `idprov idp rename` and not resting in quarantine; orphaned ones
        and those awaiting a rename are counted in ``total`` once."""
        names = list(idps) if idps is not None else self.state.outbox.idps()
        waiting, away = self._rename_gate() if names else ({}, {})
        for name in names:
            if not self.configured(name) and name not in total.orphaned:
                count = len(self.state.outbox.rows(idps=[name]))
                if count:
                    total.orphaned[name] = count
            elif name in waiting and name not in total.awaiting_rename:
                count = len(self.state.outbox.rows(idps=[name]))
                if count:
                    total.awaiting_rename[name] = count
                    total.renamed_from[name] = waiting[name]
                    if name in away:
                        total.renamed_away[name] = away[name]
        return [
            n for n in names if self.configured(n) and n not in waiting and self._awake(n, eager)
        ]

    def _awake(self, name: str, eager: bool = False) -> bool:
        """False for a quarantined IdP whose next try has not come (the worker tries it
        once per ``retry.row_max_backoff``); a manual retry is always awake."""
        if eager:
            return True
        health = self.state.outbox.health().get(name)
        idp = self.idp(name)
        if health is None or not health.quarantined(idp.retry.quarantine_after):
            return True
        from idprov.provisioning.outbox import stamp_in

        last = health.last_failure_at or ""
        return last < stamp_in(-idp.retry.row_max_backoff)

    def _idle_wait(self, idps: Sequence[str] | None) -> float:
        """Seconds until the next row comes due (at most the idle poll interval)."""
        from datetime import datetime

        names = list(idps) if idps is not None else self.state.outbox.idps()
        nxt = self.state.outbox.next_due(names) if names else None
        if not nxt:
            return IDLE_POLL_SECONDS
        due = datetime.fromisoformat(nxt.replace("Z", "+00:00"))
        seconds = (due - clock()).total_seconds()
        return min(max(seconds, 0.05), IDLE_POLL_SECONDS)


def _tell_waiting(
    report: OutboundReport, told: set[str], say: Callable[[str], None] | None
) -> None:
    """Tell ``say`` why the rows of each IdP of ``report`` awaiting a rename were left,
    the first time the IdP is there (``told``: those already told)."""
    for name in sorted(report.awaiting_rename):
        if say is not None and name not in told:
            told.add(name)
            say(report.awaiting_warning(name))


def _tell_leased(
    report: OutboundReport,
    withheld: Collection[int],
    told: set[tuple[str, str]],
    say: Callable[[str], None] | None,
) -> None:
    """Tell ``say`` what a worker waits for where it left rows (``withheld``) of a
    change no guard judged whole because another drainer holds more of it: that
    drainer's lease, and until when (:func:`lease_line`). One on another host that
    was killed there holds them until its lease ends, and the worker claims and gives
    back its part every few seconds meanwhile: said once per IdP and holder (``told``:
    those already told), not at each look."""
    if say is None or not withheld:
        return
    for name, holders in sorted(report.leases.items()):
        if all((name, holder) in told for holder in holders):
            continue
        told.update((name, holder) for holder in holders)
        say(
            f"{name}: outbox rows of a change no guard judged whole wait for the rest of "
            f"it, to be judged with it: {lease_line(report.leased.get(name, 0), holders)}"
        )


def drain_health(ops: Sequence[OperationResult]) -> DrainHealth:
    """The health that operations ``ops`` (of one IdP, in the order they ended) tell:
    failing since the first failure after the last success (the first failed
    operation of a row that went on failing, its own account made just before, was
    the start of the streak, not the retry's). Its error is the last failure's that
    is a cause (a member's missing secret, not its group's waiting for it)."""
    done = [i for i, op in enumerate(ops) if op.outcome == "done"]
    failed = [i for i, op in enumerate(ops) if op.outcome == "failed"]
    after = [i for i in failed if not done or i > done[-1]]
    causes = [i for i in failed if not ops[i].derived] or failed
    return DrainHealth(
        succeeded_at=ops[done[-1]].at if done else None,
        failing_since=ops[after[0]].at if after else None,
        failed_at=ops[failed[-1]].at if failed else None,
        error=ops[causes[-1]].error if failed else None,
        derived=bool(failed) and ops[causes[-1]].derived,
    )


def keep_working(
    work: Callable[[], object], stop: threading.Event, say: Callable[[str, bool], None]
) -> None:
    """Run a long-lived worker (``work`` returns once ``stop`` is set) until ``stop``:
    an error (a state database that went away, say) is said in one line with its hint
    (``say(text, False)``; anything but idprov's own errors is a bug, said with its
    traceback: ``say(text, True)`` from within the handler) and the worker starts
    again after a pause that doubles up to a minute, instead of the process ending."""
    pause = 1.0
    while not stop.is_set():
        try:
            work()
        except IdprovError as exc:  # its message may quote a target's answer: escaped
            hint = f" ({escaped(exc.hint)})" if exc.hint else ""
            say(
                f"the outbox worker cannot go on for now: {escaped(exc.message)}{hint}; it "
                f"keeps running and tries again in {pause:.0f} s",
                False,
            )
        except Exception:
            say(
                f"the outbox worker failed; it keeps running and tries again in {pause:.0f} s",
                True,
            )
        else:
            continue
        stop.wait(pause)
        pause = min(pause * 2, 60.0)


def process_token(pid: int | None = None) -> str:
    """``~<boot>-<pid namespace>-<start time>`` of process ``pid`` (this one by
    default), from Linux's /proc; '' where it cannot be read. Added to a drainer's
    name after its pid, it names that very process: not whatever runs under the same
    pid later (a pid reused), nor a process of another container that shares the
    hostname (host networking) and whose pids overlap this one's."""
    boot, space = _boot_and_namespace()
    start = _start_time(os.getpid() if pid is None else pid)
    return "" if boot is None or space is None or start is None else f"~{boot}-{space}-{start}"


def _boot_and_namespace() -> tuple[str | None, str | None]:
    """This machine's boot (the first 8 characters of its boot id) and this
    process's pid namespace (the inode of /proc/self/ns/pid); None: unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot_id:
            boot = boot_id.read().strip()[:8]
        space = os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]")
    except OSError:
        return None, None
    return (boot or None), (space if space.isdigit() else None)


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since the boot (/proc/<pid>/stat);
    None: no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _same_process(pid: int, nonce: str) -> bool | None:
    """Whether process ``pid`` here is the one a drainer's name recorded (``nonce``:
    what follows the pid, with its :func:`process_token`): None when the name has no
    token, or was made in another pid namespace or boot (another container sharing
    the hostname: nothing can be known of it)."""
    token = nonce.partition("~")[2].partition(".")[0]
    boot, space, start = (token.split("-") + ["", "", ""])[:3]
    if not token or (boot, space) != _boot_and_namespace():
        return None
    return _start_time(pid) == start


def _holder(holder: str) -> tuple[int, str] | None:
    """The pid and what follows it of a drainer's name (``host:pid:nonce``) made on
    this machine (its hostname); None for another machine's."""
    name, _, rest = holder.partition(":")
    pid, _, nonce = rest.partition(":")
    return (int(pid), nonce) if name == socket.gethostname() and pid.isdigit() else None


def holder_label(holder: str) -> str:
    """A drainer's name (``host:pid:nonce``) as a person reads it: ``host pid N``."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    return f"{host} pid {pid}" if host and pid.isdigit() else holder


def lease_line(count: int, holders: Mapping[str, str]) -> str:
    """``N row(s) are held by <holder> until <time> (who that is)``: rows claimed by
    other drainers (``holders``: name -> lease end), which no other drainer takes
    before the lease ends; one running here is pushing them, one elsewhere (another
    machine, another container) may have been killed: nothing here can tell."""
    here = [h for h in holders if holder_running(h)]
    gone = [h for h in holders if holder_gone(h)]
    who = _holders_text(holders)
    rows = "row is" if count == 1 else "rows are"
    if len(here) == len(holders):
        return f"{count} {rows} claimed by {who} (an idprov process on this machine, pushing now)"
    if len(here) + len(gone) == len(holders):  # a killed command here waits for no lease
        return (
            f"{count} {rows} claimed by {who} (a command killed on this machine): the next "
            "`idprov outbox retry` or pass of the worker takes them"
        )
    return (
        f"{count} {rows} claimed by {who} (a command or worker on another host, or one killed "
        "there): they are taken when the lease ends"
    )


MOST_HOLDERS = 3
"""The most drainers :func:`lease_line` names; the others are counted."""


def _holders_text(holders: Mapping[str, str]) -> str:
    """``host pid N until T``, once per process (a process claims each change under a
    name of its own: `idprov serve` had a dozen of one pid on one line), the latest
    lease of each, at most :data:`MOST_HOLDERS` of them and the count of the rest."""
    by: dict[str, str] = {}
    for holder, until in holders.items():
        label = holder_label(holder)
        by[label] = max(until, by.get(label, ""))
    named = [f"{label} until {by[label]}" for label in sorted(by)[:MOST_HOLDERS]]
    more = len(by) - len(named)
    return ", ".join(named) + (
        f" and {more} other process{'es' if more > 1 else ''}" if more else ""
    )


def holder_gone(holder: str) -> bool:
    """Whether a drainer's name (``host:pid:nonce``) is of a process on this machine
    that no longer runs: with its :func:`process_token`, that process (a pid reused
    since is another process); a name made in another pid namespace (a container
    sharing the hostname) is not known to be gone: its claims wait for their lease."""
    found = _holder(holder)
    if found is None:
        return False
    pid, nonce = found
    same = _same_process(pid, nonce)
    if same is None:
        return "~" not in nonce and not _running(pid)
    return not same or not _running(pid)


def holder_running(holder: str) -> bool:
    """Whether a drainer's name (``host:pid:nonce``) is of a process on this machine
    that runs (that very process, when the name has its :func:`process_token`). Of
    another machine's, or another pid namespace's, nothing can be known: False (not
    :func:`holder_gone` either: its claims are waited for until their lease ends)."""
    found = _holder(holder)
    if found is None:
        return False
    pid, nonce = found
    same = _same_process(pid, nonce)
    if same is None:
        return "~" not in nonce and _running(pid)
    return same and _running(pid)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine). A zombie does not: killed with
    ``kill -9``, a process stays one until its parent collects it (at once for a
    shell, later for a reparented one), and a re-run then must take over its rows."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be collected (Linux's /proc; where
    there is none, a process that exists is taken to run)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
