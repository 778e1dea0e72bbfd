"""The core service: users and roles across every configured userstore.

:class:`IdentityService` is what the CLI, the CSV import, the SCIM endpoint, JIT
login and sync call; it knows nothing of Typer or rich. It reads (users, roles,
the audit log), and it changes through one path: a
:class:`~idprov.provisioning.unit_of_work.UnitOfWork`, which writes any number of
changes in one transaction; after the commit the service hands the outbox rows to
:class:`~idprov.provisioning.outbound.Outbound`, which pushes them. The single-change
methods (:meth:`add_user`, :meth:`assign`, ...) are one-change units of work.

What is pushed before a change returns: the rows of *blocking* identity providers
(the default), and, when ``wait`` is ``"all"`` (the CLI's default, and the library's),
those of non-blocking ones too. The rest stay committed in the outbox for the worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from idprov.config import RESIDENT, Config, IdentityProviderConfig, load_config
from idprov.db import DatabasePool
from idprov.errors import IdprovError, NotFoundError, UsageError
from idprov.model import ClaimValue, Page, PageStream, QualifiedName, Role, User, UserQuery
from idprov.provisioning import managers
from idprov.provisioning.directory import StoreDirectory
from idprov.provisioning.internal_roles import is_internal
from idprov.provisioning.results import ChangeResult, OutboundReport
from idprov.provisioning.state import AuditEntry, AuditQuery, StateStore
from idprov.provisioning.unit_of_work import CutOff, PendingPush, UnitOfWork
from idprov.userstores import UserStore, open_userstore, policy
from idprov.userstores.passwords import verify_password

if TYPE_CHECKING:
    import httpx

    from idprov.connectors.base import CheckReport, Connector
    from idprov.provisioning.connect import DisabledIdpProblem
    from idprov.provisioning.guard import GuardWindow, Verdict
    from idprov.provisioning.internal_roles import InternalRoles
    from idprov.provisioning.outbound import Met, Outbound
    from idprov.provisioning.outbox import OutboxRow
    from idprov.provisioning.results import Progress
    from idprov.provisioning.tokens import InboundTokens, NewToken, TokenRecord

__all__ = ["ChangeResult", "IdentityService", "current_actor", "open_service"]

Wait = Literal["all", "blocking"]


def current_actor() -> str:
    """The OS user running idprov, for the audit log."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "unknown"


def open_service(
    config_path: str | None = None, *, application: str = RESIDENT, actor: str | None = None
) -> IdentityService:
    """Load the configuration (discovered as the CLI does) and open a service."""
    return IdentityService(load_config(config_path), application=application, actor=actor)


class IdentityService:
    """Users and roles across all configured userstores, as one application acts."""

    def __init__(
        self,
        config: Config,
        *,
        application: str = RESIDENT,
        actor: str | None = None,
        http_transport: httpx.BaseTransport | None = None,
        progress: Progress | None = None,
        sleep: Callable[[float], None] | None = None,
        wait: Wait = "all",
        read_only: bool = False,
        previewing: bool = False,
    ) -> None:
        """``read_only``: open existing databases for reading only (read commands);
        ``previewing``: a command that changes nothing of the users or at the targets
        (a dry run) may open a state `idprov state copy` took away, as reading does."""
        self.config = config
        self.http_transport = http_transport
        """Injected into every HTTP connector's client (tests: faults; else None)."""
        self.progress = progress
        """Called with the report so far when a drain starts and after each outbound
        operation (live views)."""
        self.phase: Callable[[str, int, int], None] | None = None
        """Called with (phase, done, total) as a long read goes (``sync --verify``'s
        reads of the targets; live views)."""
        self.sleep = sleep or time.sleep
        """How the engine waits between retries (tests record instead of sleeping)."""
        self.wait: Wait = wait
        """Which IdPs a change waits for: ``all``, or only the ``blocking`` ones."""
        self._guard_window: GuardWindow | None = None
        self._guard_judged: Callable[[GuardWindow], None] | None = None
        self.allow_deletes: int | None = None
        """Destructive effects of each kind per IdP the deletion guard lets through
        (``--allow-deletes N``, or what a person confirmed); None: the guard's own."""
        self.application = config.application(application).name
        self.actor = actor or current_actor()
        self.claims = config.claim_definitions()
        self.disabled_idp_problems: list[DisabledIdpProblem] = []
        """What the options of IdPs with ``enabled: false`` have wrong (warnings)."""
        if config.identity_providers:
            from idprov.provisioning.connect import check_identity_providers

            self.disabled_idp_problems = check_identity_providers(config)
        self.data_dir = Path(config.data_dir or ".")
        self._pool = DatabasePool(read_only)
        self._previewing = previewing or read_only
        self._stores: dict[str, UserStore] = {}
        self._state: StateStore | None = None
        self._outbound: Outbound | None = None
        self.directory = StoreDirectory(self.store, lambda: self.internal)
        """What outbound reads of the userstores (read-only)."""
        self._work: UnitOfWork | None = None
        """The last unit of work opened (see :meth:`cut_off`)."""
        self._committed = False
        """Whether a unit of work before it committed."""

    def close(self) -> None:
        if self._outbound is not None:
            self._outbound.close()
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._state is not None:
            self._state.close()
            self._state = None
        self._pool.close()

    def __enter__(self) -> IdentityService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing
    @property
    def state(self) -> StateStore:
        if self._state is None:
            self._state = StateStore.open(self.config, self._pool, self._previewing)
        return self._state

    @property
    def outbound(self) -> Outbound:
        """Connectors, pools and draining, made on first use."""
        if self._outbound is None:
            from idprov.provisioning.outbound import Outbound

            self._outbound = Outbound(
                self.config,
                lambda: self.state,
                self.directory,
                actor=self.actor,
                application=self.application,
                http_transport=self.http_transport,
                sleep=self.sleep,
            )
        return self._outbound

    @property
    def run(self) -> str | None:
        """The sync run in progress, recorded with every audit entry it causes."""
        return self._outbound.run if self._outbound is not None else None

    @run.setter
    def run(self, value: str | None) -> None:
        self.outbound.run = value

    def store(self, domain: str | None = None) -> UserStore:
        """The userstore of ``domain`` (default PRIMARY), opened on first use."""
        config = self.config.userstore(domain or "PRIMARY")
        key = config.domain.casefold()
        if key not in self._stores:
            self._stores[key] = open_userstore(config, self.claims, self._pool, self.data_dir)
        return self._stores[key]

    def resolve(self, name: str, domain: str | None = None) -> tuple[UserStore, str]:
        """The store and bare name that ``DOMAIN/name`` (or ``--domain``) points to."""
        qualified = QualifiedName.parse(name, domain)
        if domain and "/" in name and qualified.domain.casefold() != domain.casefold():
            raise UsageError(f"{name!r} names domain {qualified.domain}, but --domain is {domain}")
        if not qualified.name:
            raise UsageError(f"{name!r} has no name after the domain")
        return self.store(qualified.domain), qualified.name

    def in_domain_of(self, store: UserStore, name: str) -> tuple[UserStore, str]:
        """Where ``name`` points, a bare name being in ``store``'s domain."""
        qualified = QualifiedName.parse(name, store.domain)
        return self.store(qualified.domain), qualified.name

    def same_domain_role(self, store: UserStore, role: str) -> str:
        """The bare name of an existing role of ``store``'s domain, or an error."""
        role_store, role_name = self.in_domain_of(store, role)
        if role_store is not store:
            raise UsageError(
                f"role {role!r} is in another domain than the {store.domain} user",
                hint="a role holds users of its own userstore domain",
            )
        if store.find_role(role_name) is None:
            raise NotFoundError(
                f"no role {role_name!r} in the {store.domain} userstore",
                hint=f"create it first with `idprov role add {role}`",
            )
        return role_name

    def members_in(self, store: UserStore, users: Sequence[str], role: str = "") -> list[str]:
        """Bare names of ``users``, which must be in ``store``'s domain (that of the
        role named ``role``: the error names its namesake in the user's domain)."""
        names = []
        for user in users:
            user_store, bare = self.in_domain_of(store, user)
            if user_store is not store:
                there = f"{user_store.domain}/{role}" if role else None
                raise UsageError(
                    f"user {user!r} is in the {user_store.domain} userstore, the role in"
                    f" {store.domain}",
                    hint="a role holds users of its own userstore"
                    + (f": for this user, name the role `{there}`" if there else ""),
                )
            names.append(bare)
        return names

    def internal_name(self, name: str, domain: str | None) -> str | None:
        """The bare name if ``name``/``domain`` address an internal role, else None."""
        qualified = QualifiedName.parse(name, domain)
        return qualified.name if is_internal(qualified.domain) else None

    # ---- changing: one unit of work, then one push
    @contextmanager
    def unit_of_work(
        self,
        push: bool = True,
        claim: bool | None = None,
        committed: Callable[[], None] | None = None,
    ) -> Iterator[UnitOfWork]:
        """Changes in one transaction; after it commits, their push (see the module
        docstring; ``push=False`` leaves the rows to the worker or the next sync).
        ``claim`` (default: ``push``) claims the rows for this service's push in the
        same transaction: say so when the caller pushes ``uow.pending()`` itself.
        ``committed`` is called once the transaction committed, before the push (an
        import's progress counts the batch written while the target answers).
        ``uow.outbound`` holds what the push did."""
        uow = UnitOfWork(self, claim=push if claim is None else claim)
        self._committed = self._committed or (self._work is not None and self._work.committed)
        self._work = uow
        with uow:
            yield uow
        if committed is not None:
            committed()
        if not push:
            return
        uow.outbound = self.push_pending([uow.pending()])[0]
        for result in uow.results:
            result.outbound = uow.outbound

    def cut_off(self) -> CutOff | None:
        """What this service's changes left, when a Ctrl-C stopped them: that of the
        last unit of work, which alone can be cut off half-way (an earlier one committed
        counts as a change committed). None: no unit of work was opened."""
        if self._work is None:  # `outbox release` commits its rows pending, then pushes
            return CutOff(committed=True, unpushed=True) if self._committed else None
        cut = self._work.cut_off()
        return replace(cut, committed=True) if self._committed else cut

    def push(
        self,
        row_ids: Sequence[int],
        passwords: Mapping[str, str] | None = None,
        guarded: bool = False,
        claims: Sequence[str] = (),
        fresh: Collection[int] = (),
    ) -> OutboundReport | None:
        """Drain committed outbox rows (and the rows a killed command was pushing, and
        pending rows a crashed command left) at the IdPs this service waits for; the
        rest are counted as queued for the worker. First the deletion guard judges
        them (unless ``guarded``: sync judged its plan; the ``fresh`` rows of what the
        changes created have nothing to judge): the rows of an IdP where they would
        destroy too much are held in the outbox, not pushed. Rows the changes'
        transactions claimed (under the names ``claims``) are drained without
        claiming them again."""
        if not row_ids and not self.targets():
            return None
        abandoned = self.outbound.release_the_dead()  # a killed command's rows
        # and a crashed one's, at the IdPs pushed now: the others' are the worker's
        pushed_now = [name for name in self.targets() if self.waits_for(name)]
        rows = self.state.outbox.rows([*row_ids, *abandoned], stale_pending=pushed_now)
        met = None
        withheld: list[OutboxRow] = []
        leased: list[int] = []
        if not guarded:
            # the others: the worker's (it judges another change's marked rows there
            # whole: they keep their mark); own rows: this push judges them (their
            # mark says so), unless another change's is in them
            met = self.outbound.with_unjudged(
                rows, only=pushed_now, own=set(row_ids), claims=claims
            )
            kept = {r.id for r in met.rows}
            withheld = [r for r in rows if r.id in met.withheld]
            leased = [r.id for r in rows if r.id not in kept and r.id not in met.withheld]
            rows = met.rows
        report = OutboundReport()
        for row in withheld:  # parts of a change another drainer holds part of: the
            # worker judges it whole (see Met.withheld); this push leaves them to it
            report.note("queued", row.idp, row.id)
        if leased:  # another drainer holds them: its push sends them
            self.outbound.note_leased(leased, report)
        if row_ids and not guarded:  # not in ``rows``: pushed only by a release (or the
            # sync that accepts them, which judges what is held after its push itself)
            held = self.state.outbox.rows(list(row_ids), status="held")
            self._note_held(held, report)
            if held and claims:  # the change's transaction claimed them: given back
                with self.state.transaction():
                    self.state.outbox.release_rows([r.id for r in held], list(claims))
        fresh = set(fresh)
        judged = [r for r in rows if r.id not in fresh] if not guarded else []
        if not guarded:  # the guard records an IdP's scope as it judges; these it does not
            from idprov.provisioning.guard import recorded_scopes

            recorded_scopes(self.outbound, sorted({r.idp for r in rows} - {r.idp for r in judged}))
        if judged:
            kept = {r.id for r in self._hold_over_guard(judged, report, set(row_ids), met)}
            rows = [r for r in rows if r.id in kept or r.id in fresh]
            self._note_waiting_with(judged, kept, set(row_ids), report)
        now_rows = [r for r in rows if self.waits_for(r.idp)]
        report.merge(self.outbound.drain(now_rows, self.progress, passwords, claims))
        for row in rows:
            if not self.waits_for(row.idp):
                report.note("queued", row.idp, row.id)
        return report

    @staticmethod
    def _note_waiting_with(
        judged: list[OutboxRow], kept: Collection[int], own: Collection[int], report: OutboundReport
    ) -> None:
        """Say in ``report`` whose change the changes' held rows wait with, where rows of
        an earlier change committed without its push were judged with them (see
        :meth:`~idprov.provisioning.outbound.Outbound.with_unjudged`; a command cut
        before its push judged its change, a failed push's retry that lost its
        allowance, alike): held, a harmless edit's exit 7 named only the earlier
        change's count, as if the edit destroyed it."""
        from idprov.provisioning.outbox import OWN_PUSH

        for idp in sorted({r.idp for r in judged if r.id in own and r.id not in kept}):
            earlier = [r for r in judged if r.idp == idp and r.id not in own and r.unjudged]
            if not earlier:
                continue
            since = min(r.enqueued_at for r in earlier)
            cut = any(r.unjudged == OWN_PUSH for r in earlier)
            retried = any(r.status == "failed" for r in earlier)
            if not cut and not retried:
                report.guard.append(
                    f"this change to {idp} waits with an earlier change committed without its"
                    f" push (`import --no-push`: {len(earlier)} more row(s), the first written"
                    f" at {since})"
                )
                continue
            ways = []
            if cut:
                ways.append("a command cut after its commit, before its push judged it")
            if retried:
                ways.append("the retry of a failed push, which lost its --allow-deletes")
            report.guard.append(
                f"this change to {idp} waits with an earlier change no deletion guard judged"
                f" whole yet ({' or '.join(ways)}: {len(earlier)} more row(s), the first written"
                f" at {since})"
            )

    def _note_held(self, held: list[OutboxRow], report: OutboundReport) -> None:
        """Note in ``report`` the change's rows that the deletion guard holds, saying
        that they wait with an earlier change the guard held (how many rows, since
        when, and that change's reason, as the earlier change's, not this one's): such
        a row stays held with the later change that joined it (pushed alone, a harmless
        edit let the held change out one row at a time); `idprov outbox release`, or
        the sync that accepts it, pushes it."""
        window = self._guard_window
        for row in held:
            report.note("held", row.idp, row.id)
        if window is not None:  # held by an earlier batch of the same change: said there
            held = [r for r in held if r.id not in window.held_rows]
        for idp in sorted({r.idp for r in held}):
            mine = [r for r in held if r.idp == idp]
            there = self.state.outbox.rows(idps=[idp], status="held")
            since = min((r.enqueued_at for r in there), default=mine[0].enqueued_at)
            names = ", ".join(r.label for r in mine[:5]) + (" ..." if len(mine) > 5 else "")
            reasons = "; ".join(dict.fromkeys(r.last_error for r in mine if r.last_error))
            earlier = f": {reasons}" if reasons else ""
            report.guard.append(
                f"this change to {idp} ({names}) waits with an earlier change the deletion"
                f" guard held there ({len(there)} row(s) held, the first written at {since}),"
                f" and goes out with it{earlier}"
            )

    def push_pending(self, changes: Sequence[PendingPush]) -> list[OutboundReport | None]:
        """Push committed changes together, in one drain (`idprov serve` pushes the
        changes of concurrent requests so): one claim, one planning pass and a few
        transactions for all, calls in parallel, Bulk where the target offers it, one
        judgement of the deletion guard. Each change gets the report of its own rows."""
        rows = [r for change in changes for r in change.rows]
        passwords = {k: v for change in changes for k, v in change.passwords.items()}
        claims = [name for change in changes for name in change.claims]
        fresh = [r for change in changes for r in change.fresh]
        report = self.push(rows, passwords, claims=claims, fresh=fresh)
        if report is None or len(changes) == 1:
            return [report if changes[0].rows else None] if changes else []
        return [report.only(set(change.rows)) if change.rows else None for change in changes]

    def _hold_over_guard(
        self,
        rows: list[OutboxRow],
        report: OutboundReport,
        own: Collection[int],
        met: Met | None = None,
    ) -> list[OutboxRow]:
        """``rows`` the deletion guard lets go; those of ``own`` (the changes' own rows,
        not those of a killed or crashed command pushed with them) are judged together
        with :attr:`allow_deletes` too, whatever other changes coalesced into them.
        ``met``: the marked rows they met (see
        :meth:`~idprov.provisioning.outbound.Outbound.with_unjudged`)."""
        from idprov.provisioning.guard import hold_over

        window = self._guard_window
        whole, later = (met.whole, met.later) if met is not None else ((), ())
        kept = hold_over(self.outbound, rows, report, self.allow_deletes, window, own, whole, later)
        if window is not None and self._guard_judged is not None:
            self._guard_judged(window)  # before anything of it is sent
        return kept

    @contextmanager
    def guard_window(
        self, judged: Callable[[GuardWindow], None] | None = None
    ) -> Iterator[GuardWindow]:
        """Judge the pushes made inside as one change (an import's batches): many small
        pushes cannot slip a mass deletion past the deletion guard. Yields the window
        (what is known to come can be counted in from the first push: its ``prime``;
        what an interrupted run of the change judged: its ``resume``). ``judged`` is
        called with it after each judgement, before the push sends anything (an import
        notes it in its journal, for its re-run after a kill)."""
        from idprov.provisioning.guard import GuardWindow

        self._guard_window = GuardWindow()
        self._guard_judged = judged
        try:
            yield self._guard_window
        finally:
            self._guard_window = None
            self._guard_judged = None

    def release_held(self, idps: Sequence[str] | None = None) -> OutboundReport:
        """Push the rows the deletion guard held (at ``idps``, or everywhere), judged
        again with :attr:`allow_deletes`: `idprov outbox release`."""
        names = list(idps) if idps else self.state.outbox.idps()
        with self.state.transaction():
            ids = self.state.outbox.release_held(names, allowed=self.allow_deletes)
            if ids:
                self._audit("outbox.release", ", ".join(names), {"rows": len(ids)})
        self._committed = self._committed or bool(ids)  # cut now: `outbox retry` pushes them
        return self.push(ids) or OutboundReport()

    def held_verdict(self, idps: Sequence[str] | None = None) -> Verdict:
        """What pushing the held rows (of ``idps``) would destroy, and whether that is
        over the guard (with :attr:`allow_deletes`)."""
        from idprov.provisioning.guard import effects_of, judge

        rows = self.state.outbox.rows(idps=idps, status="held")
        return judge(
            self.outbound, effects_of(self.outbound, self.directory, rows), self.allow_deletes
        )

    def waits_for(self, idp: str) -> bool:
        """Whether this service's pushes wait for IdP ``idp`` (else its worker does)."""
        if self.wait == "all" or not self.outbound.configured(idp):
            return True
        return self.outbound.idp(idp).blocking

    def _one(self, change: Callable[[UnitOfWork], ChangeResult]) -> ChangeResult:
        with self.unit_of_work() as uow:
            result = change(uow)
        return result

    # ---- outbound
    def idp(self, name: str) -> IdentityProviderConfig:
        return self.outbound.idp(name)

    def targets(self) -> list[str]:
        """Enabled identity providers the acting application provisions to."""
        names = self.config.application(self.application).identity_providers
        return [n for n in names if self.idp(n).enabled]

    def connector(self, name: str) -> Connector:
        """The connector of IdP ``name``, made on first use with its own HTTP client."""
        return self.outbound.connector(name)

    def drain(self, rows: Sequence[OutboxRow]) -> OutboundReport:
        """Reconcile ``rows`` at their identity providers now (see the engine)."""
        return self.outbound.drain(rows, self.progress)

    def retry_outbox(self, idps: Sequence[str] | None = None) -> OutboundReport:
        """Drain every pending and failed row (of ``idps``, or of all IdPs) now."""
        return self.outbound.retry(idps, self.progress)

    def outbox_rows(
        self, idps: Sequence[str] | None = None, status: str | None = None
    ) -> list[OutboxRow]:
        return self.state.outbox.rows(idps=idps, status=status)

    def discard_outbox(self, idp: str, local_ids: Sequence[str] | None = None) -> list[OutboxRow]:
        """Drop outbox rows of ``idp`` (of those users or roles only, when given),
        recorded in the audit log: for rows nobody will ever push (an IdP removed)."""
        with self.unit_of_work() as uow:
            uow.begin()
            rows = self.state.outbox.discard(idp, local_ids)
            if rows:
                uow.audit("outbox.discard", idp, {"rows": [r.label for r in rows]})
                self._untrack_discarded(idp, rows)
        return rows

    def _untrack_discarded(self, idp: str, rows: Sequence[OutboxRow]) -> None:
        """The groups at ``idp`` of discarded rows' roles, and of discarded rows' users,
        are compared whole at their next push (see
        :meth:`~idprov.provisioning.outbox.Outbox.untracked`): that push brings back
        what was discarded, as it did before groups were compared in part."""
        roles = {r.local_id for r in rows if r.kind == "role"}
        refs = [(r.domain, r.local_id) for r in rows if r.kind == "user"]
        try:
            users = self.directory.users_by_id(refs)
            held = {(u.domain, name) for u in users.values() for name in u.roles}
            for domain, name in sorted(held):
                role = self.directory.role_by_name(domain, name)
                if role is not None:
                    roles.add(role.id)
        except IdprovError:  # the directory is down: a discard needs none (every group)
            roles.update(self.state.ledger.role_ids(idp))
        if roles:
            self.state.outbox.untracked([idp], sorted(roles))

    def idp_health(self) -> dict[str, str]:
        """IdP -> ``quarantined since T: error`` or ``failing since T: error``, for
        those whose every recent operation failed (the others are healthy)."""
        out = {}
        for name, health in self.state.outbox.health().items():
            if health.failing_since is None or not self.outbound.configured(name):
                continue
            quarantined = health.quarantined(self.idp(name).retry.quarantine_after)
            state = "quarantined" if quarantined else "failing"
            out[name] = f"{state} since {health.failing_since}: {health.last_error or ''}"
        return out

    def test_idp(self, name: str) -> CheckReport:
        """Reachability, authentication and capabilities of IdP ``name``; changes nothing."""
        return self.connector(name).check()

    # ---- reading users and roles
    def get_user(self, username: str, domain: str | None = None) -> User:
        store, name = self.resolve(username, domain)
        user = store.find_user(name)
        if user is None:
            raise NotFoundError(
                f"no user {name!r} in the {store.domain} userstore",
                hint="list users with `idprov user list`",
            )
        return self.directory.with_internal_roles([user])[0]

    @property
    def internal(self) -> InternalRoles:
        """Roles that hold users of several domains (``Internal/NAME``)."""
        from idprov.provisioning.internal_roles import InternalRoles

        return InternalRoles(self.state.db)

    def users_by_id(self, refs: Any) -> dict[str, User]:
        """Users by id, from (domain, id) pairs, with their internal roles."""
        return self.directory.users_by_id(refs)

    def role_by_id(self, domain: str, role_id: str) -> Role | None:
        return self.directory.role_by_id(domain, role_id)

    def role_members(self, domain: str, role_id: str) -> list[tuple[str, str]]:
        """(domain, user id) of the role's members."""
        return self.directory.role_members(domain, role_id)

    def role_members_among(
        self, domain: str, role_id: str, refs: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Those of ``refs`` (domain, user id) that are members of the role."""
        return self.directory.role_members_among(domain, role_id, refs)

    def list_users(self, query: UserQuery, domain: str | None = None) -> Page:
        """One domain's users, or every domain's (in configuration order) when None."""
        return self.stream_users(query, domain).page()

    def stream_users(self, query: UserQuery, domain: str | None = None) -> PageStream:
        """:meth:`list_users` as a stream (:mod:`~idprov.provisioning.user_listing`)."""
        from idprov.provisioning.user_listing import stream_reports, stream_users

        policy.check_claim_names(query.claims, self.claims)
        domains = [domain] if domain else [u.domain for u in self.config.userstores]
        stores = [self.store(d) for d in domains]
        if manager := query.claims.get("manager"):  # a username: bare is PRIMARY's, or domain's
            named = QualifiedName.parse(manager, domain)
            return stream_reports(stores, query, named, self.directory.with_internal_roles)
        return stream_users(stores, query, self.directory.with_internal_roles)

    def verify_password(self, username: str, password: str, domain: str | None = None) -> bool:
        """Whether ``password`` is the user's; False for users without a password."""
        store, name = self.resolve(username, domain)
        return verify_password(password, store.password_hash(name))

    def unfinished(self, kind: str, name: str, domain: str | None = None) -> bool:
        """Whether a ``kind`` write (``delete`` of a user, ``role_delete``,
        ``role_rename``) of ``name`` was recorded in its directory and cut off: the
        same command, run again, finishes it (it was asked for and confirmed then),
        though the user or role may be gone or renamed already."""
        if self.internal_name(name, domain) is not None:
            return False  # idprov's own: one transaction
        store, bare = self.resolve(name, domain)
        if store.transactional:
            return False
        return self.state.directory_writes.find(store.domain, kind, bare) is not None

    def get_role(self, name: str, domain: str | None = None) -> Role:
        if (internal := self.internal_name(name, domain)) is not None:
            return self.internal.get(internal, with_members=True)
        store, bare = self.resolve(name, domain)
        role = store.find_role(bare, with_members=True)
        if role is None:
            raise NotFoundError(
                f"no role {bare!r} in the {store.domain} userstore",
                hint="list roles with `idprov role list`",
            )
        return role

    def list_roles(self, domain: str | None = None, prefix: str | None = None) -> list[Role]:
        """One domain's roles (``Internal`` for internal roles), or all of them."""
        if is_internal(domain):
            return self.internal.all(prefix)
        domains = [domain] if domain else [u.domain for u in self.config.userstores]
        roles = [r for d in domains for r in self.store(d).list_roles(prefix)]
        return roles if domain else [*roles, *self.internal.all(prefix)]

    # ---- single changes (each one unit of work)
    def add_user(
        self,
        username: str,
        claims: Mapping[str, ClaimValue] | None = None,
        password: str | None = None,
        roles: Sequence[str] = (),
        domain: str | None = None,
    ) -> ChangeResult:
        """Create a user with claims, an optional password and roles (which must exist,
        as must the user a ``manager`` claim names)."""
        self._manager_exists(username, claims or {}, domain)
        return self._one(lambda uow: uow.add_user(username, claims, password, roles, domain))

    def update_user(
        self,
        username: str,
        set_claims: Mapping[str, ClaimValue] | None = None,
        unset: Sequence[str] = (),
        domain: str | None = None,
    ) -> ChangeResult:
        """Set and remove claims (a ``manager`` claim must name a user); an update that
        changes nothing records nothing."""
        self._manager_exists(username, set_claims or {}, domain)
        return self._one(lambda uow: uow.update_user(username, set_claims, unset, domain))

    def _manager_exists(
        self, username: str, claims: Mapping[str, ClaimValue], domain: str | None
    ) -> None:
        """A change asked by name (the CLI, the library) names an existing manager. The
        other ways in take the claim as given: a SCIM client names the manager by id
        (which must exist), an import may name one its later rows create, a JIT login
        takes what the identity provider says."""
        if claims.get(managers.CLAIM):
            store, name = self.resolve(username, domain)
            managers.check_named(self, claims, f"{store.domain}/{name}")

    def rename_user(self, username: str, new_name: str, domain: str | None = None) -> ChangeResult:
        return self._one(lambda uow: uow.rename_user(username, new_name, domain))

    def set_password(self, username: str, password: str, domain: str | None = None) -> ChangeResult:
        return self._one(lambda uow: uow.set_password(username, password, domain))

    def delete_user(self, username: str, domain: str | None = None) -> ChangeResult:
        return self._one(lambda uow: uow.delete_user(username, domain))

    def add_role(self, name: str, domain: str | None = None) -> ChangeResult:
        return self._one(lambda uow: uow.add_role(name, domain))

    def delete_role(self, name: str, domain: str | None = None) -> ChangeResult:
        return self._one(lambda uow: uow.delete_role(name, domain))

    def rename_role(self, name: str, new_name: str, domain: str | None = None) -> ChangeResult:
        return self._one(lambda uow: uow.rename_role(name, new_name, domain))

    def assign(self, role: str, users: Sequence[str], domain: str | None = None) -> ChangeResult:
        """Make ``users`` members of ``role``; those already members are left as they are."""
        return self._one(lambda uow: uow.assign(role, users, domain))

    def unassign(self, role: str, users: Sequence[str], domain: str | None = None) -> ChangeResult:
        return self._one(lambda uow: uow.unassign(role, users, domain))

    # ---- inbound tokens
    @property
    def tokens(self) -> InboundTokens:
        from idprov.provisioning.tokens import InboundTokens

        return InboundTokens(self.state.db)

    def create_token(
        self, application: str, description: str = "", scope: str = "write"
    ) -> NewToken:
        """A new bearer token for `idprov serve`, acting as ``application`` with
        ``scope`` (read, write); the token is in the result once and stored only as a
        digest."""
        app = self.config.application(application).name
        with self.state.transaction():
            new = self.tokens.create(app, description, self.actor, scope)
            self._audit("token.create", new.record.id, {"application": app, "scope": scope})
        return new

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token; one revoked already is left as it is (not audited again:
        its ``revoked_at`` says since when)."""
        with self.state.transaction():
            before = [r for r in self.tokens.all() if r.id == token_id]
            record = self.tokens.revoke(token_id)
            if not (before and before[0].revoked_at):
                self._audit("token.revoke", token_id, {"application": record.application})
        return record

    def _audit(self, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        self.state.audit(
            actor=self.actor,
            application=self.application,
            action=action,
            target=target,
            details=details,
            run=self.run,
        )

    # ---- audit
    def audit_log(self, query: AuditQuery) -> list[AuditEntry]:
        return self.state.audit_entries(query)
