"""What outbound provisioning did: per operation, per identity provider, per drain.

These are plain result types, shared by the engine that fills them, the CLI that
renders them, and the library API that returns them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from idprov.db import now

if TYPE_CHECKING:
    from idprov.model import Role, User

Progress = Callable[["OutboundReport"], None]


@dataclass
class Attempt:
    number: int
    duration_ms: int
    status: int | None = None
    error: str | None = None
    ambiguous: bool = False
    """The attempt failed in a way that may have done the operation anyway (a timeout
    after the request went, a lost reply, a 5xx): see ``TargetError.ambiguous``."""


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
    row: int | None = field(default=None, repr=False)
    """The outbox row this is the result of (set by the engine)."""
    at: str = field(default_factory=now, repr=False, compare=False)
    """When its outcome was known: the IdP's health dates a failing streak by it."""
    derived: bool = field(default=False, repr=False, compare=False)
    """Failed because others did (a group whose members' own pushes failed): the IdP's
    health names their error, the cause, rather than this one."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["row"], out["at"], out["derived"]
        return out


@dataclass
class IdpReport:
    name: str
    total: int = 0
    operations: list[OperationResult] = field(default_factory=list)
    _rows: set[int] | None = field(default=None, init=False, repr=False, compare=False)
    """The rows of :attr:`operations`, kept by :meth:`OutboundReport.merge` once asked."""

    def rows(self) -> set[int]:
        """The outbox rows :attr:`operations` are the results of (made on first use,
        then kept up to date by :meth:`OutboundReport.merge`: a long-running worker's
        report is merged into at every pass)."""
        if self._rows is None:
            self._rows = {op.row for op in self.operations if op.row is not None}
        return self._rows

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
    """Every IdP's results for one drain, and what it did not drain: rows left to the
    worker (IdPs with ``blocking: false``), rows of IdPs no longer configured, rows the
    deletion guard held, and rows of IdPs awaiting `idprov idp rename`."""

    idps: dict[str, IdpReport] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)
    """IdP -> rows committed to the outbox and left to the worker (non-blocking IdPs)."""
    orphaned: dict[str, int] = field(default_factory=dict)
    """IdP -> rows of an identity provider that is not in the configuration any more."""
    held: dict[str, int] = field(default_factory=dict)
    """IdP -> rows the deletion guard held in the outbox (`idprov outbox release`)."""
    guard: list[str] = field(default_factory=list)
    """Why the deletion guard held them: one sentence per kind of effect."""
    awaiting_rename: dict[str, int] = field(default_factory=dict)
    """IdP -> rows not pushed, left pending in the outbox: the IdP has no ledger and
    points where the ledger of a name no longer configured was made, so it awaits
    `idprov idp rename OLD IdP` (see :attr:`renamed_from`); pushed, it would take the
    accounts idprov made there for new ones."""
    renamed_from: dict[str, str] = field(default_factory=dict)
    """IdP awaiting a rename -> the old name whose ledger it must take over; for an IdP
    in :attr:`renamed_away`, the name its ledger went to."""
    renamed_away: dict[str, str] = field(default_factory=dict)
    """IdP awaiting a rename because `idprov idp rename IdP NEW` moved its ledger to NEW
    (:attr:`renamed_from`) after this process read its configuration -> when: the
    process runs an older configuration, and must be restarted with the new one."""
    leased: dict[str, int] = field(default_factory=dict)
    """IdP -> rows another drainer holds a lease on (see :attr:`leases`): no worker
    can take them before the lease ends, so they are not queued for one."""
    leases: dict[str, dict[str, str]] = field(default_factory=dict)
    """IdP -> each drainer holding rows of :attr:`leased` -> until when (its latest
    lease; see :func:`~idprov.provisioning.outbound.lease_line`)."""
    noted: dict[int, tuple[str, str]] = field(default_factory=dict, repr=False)
    """Outbox row id -> (IdP, what became of it) for rows not drained: ``queued``,
    ``orphaned``, ``held``, ``awaiting_rename``, ``leased``, or ``pending`` (left by a
    credentials failure)."""

    passwords: dict[int, tuple[str, str, bool]] = field(default_factory=dict)
    """Outbox row id -> (IdP, user, ``sent_later``) of the users whose password did not
    reach the IdP: given in this command, its push did not go through (``sent_later``
    False); or given in an earlier one whose push failed, and this push went without
    it (True). idprov keeps passwords only in memory: each must be set again."""

    def password(self, row: int, idp: str, user: str, sent_later: bool) -> None:
        """Note a password that did not reach ``idp`` (see :attr:`passwords`)."""
        self.passwords[row] = (idp, user, sent_later)

    def note(self, what: str, idp: str, row: int) -> None:
        """Count a row that was not drained (see :attr:`noted`)."""
        self.noted[row] = (idp, what)
        counts = {
            "queued": self.queued,
            "orphaned": self.orphaned,
            "held": self.held,
            "awaiting_rename": self.awaiting_rename,
            "leased": self.leased,
        }.get(what)
        if counts is not None:
            counts[idp] = counts.get(idp, 0) + 1

    def lease(self, idp: str, row: int, holder: str, until: str) -> None:
        """Count a row of ``idp`` that drainer ``holder`` holds until ``until``."""
        self.note("leased", idp, row)
        self._add_lease(idp, holder, until)

    def _add_lease(self, idp: str, holder: str, until: str) -> None:
        holders = self.leases.setdefault(idp, {})
        holders[holder] = max(until, holders.get(holder, until))

    def await_rename(self, idp: str, old: str, row: int, away: str | None = None) -> None:
        """Count a row of ``idp`` not pushed until `idprov idp rename OLD IdP` (``away``:
        when `idprov idp rename IdP OLD` moved its ledger away from under this process,
        see :attr:`renamed_away`)."""
        self.renamed_from[idp] = old
        if away is not None:
            self.renamed_away[idp] = away
        self.note("awaiting_rename", idp, row)

    def only(self, rows: Collection[int]) -> OutboundReport:
        """The part of this report about outbox ``rows`` (one change's, when the changes
        of several were drained together)."""
        part = OutboundReport(guard=list(self.guard))
        for name, report in self.idps.items():
            ops = [op for op in report.operations if op.row in rows]
            left = sum(1 for r in rows if self.noted.get(r) == (name, "pending"))
            if ops or left:
                part.idps[name] = IdpReport(name, len(ops) + left, ops)
        for row in rows:
            if row in self.noted:
                part.note(self.noted[row][1], self.noted[row][0], row)
            if row in self.passwords:
                part.passwords[row] = self.passwords[row]
        if not part.held:
            part.guard = []
        part.leases = {n: dict(self.leases[n]) for n in part.leased if n in self.leases}
        part.renamed_from = {n: self.renamed_from[n] for n in part.awaiting_rename}
        part.renamed_away = {
            n: at for n, at in self.renamed_away.items() if n in part.awaiting_rename
        }
        return part

    @property
    def failed(self) -> int:
        return sum(r.count("failed") for r in self.idps.values())

    def merge(self, other: OutboundReport) -> None:
        """Add another drain's results (an import pushes batch by batch). A row it
        pushed again (a group's row that failed, upserted by the next batch) counts
        once, with its latest outcome: an import whose one group failed in each of
        its 5 batches said "5 failed"."""
        for name, report in other.idps.items():
            mine = self.idps.setdefault(name, IdpReport(name))
            again = {op.row for op in report.operations if op.row is not None}
            if again & mine.rows():  # looked up, not scanned: a worker's pass each
                before = len(mine.operations)
                mine.operations = [op for op in mine.operations if op.row not in again]
                mine.total -= before - len(mine.operations)
            mine.rows().update(again)
            mine.total += report.total
            mine.operations += report.operations
        self.guard += other.guard
        self.noted.update(other.noted)
        self.passwords.update(other.passwords)
        self.renamed_from.update(other.renamed_from)
        self.renamed_away.update(other.renamed_away)
        for name, holders in other.leases.items():
            for holder, until in holders.items():
                self._add_lease(name, holder, until)
        pairs = ((self.queued, other.queued), (self.orphaned, other.orphaned))
        waiting = (self.awaiting_rename, other.awaiting_rename)
        leased = (self.leased, other.leased)
        for mine_counts, theirs in (*pairs, (self.held, other.held), waiting, leased):
            for name, count in theirs.items():
                mine_counts[name] = mine_counts.get(name, 0) + count

    @property
    def ok(self) -> bool:
        """Nothing failed, and nothing waits for `idprov idp rename` (both exit 6: the
        local change is done, its push is not)."""
        return self.failed == 0 and not self.awaiting_rename

    @property
    def warnings(self) -> list[str]:
        """One line per IdP whose rows were skipped because it left the configuration,
        held by the deletion guard, or left waiting for `idprov idp rename`."""
        # what it let through is above only where something went
        went = any(r.operations for r in self.idps.values())
        above = " (what it let through is reported above)" if went else ""
        lines = [
            f"deletion guard: {why}; what it held waits in the outbox{above}: check it with"
            " `idprov outbox list --status held`, then push it with `idprov outbox release`"
            " (what a change of scope holds: `idprov sync`), or drop it with"
            " `idprov outbox discard`"
            for why in self.guard
        ] + [
            f"{count} outbox row(s) of identity provider {name!r}, which is not in the "
            f"configuration any more, were skipped: drop them with `idprov outbox discard "
            f"--idp {name}` or declare the IdP again"
            for name, count in sorted(self.orphaned.items())
        ]
        lines += [self.awaiting_warning(n) for n in sorted(self.awaiting_rename)]
        return lines + self._password_warnings()

    def _password_warnings(self) -> list[str]:
        """One line per IdP and kind of password that did not reach it (see
        :attr:`passwords`), naming the users and the command that sets it again."""
        by: dict[tuple[str, bool], list[str]] = {}
        for idp, user, later in self.passwords.values():
            by.setdefault((idp, later), []).append(user)
        lines = []
        for (idp, later), users in sorted(by.items()):
            names = ", ".join(sorted(users))
            again = "; ".join(f"`idprov user passwd {shlex.quote(u)}`" for u in sorted(users))
            if later:
                lines.append(
                    f"pushed to {idp} without the password given earlier (that push failed, "
                    f"and idprov never stores passwords): {names}; the account has a random "
                    f"password, or its old one: set it again with {again}"
                )
            else:
                lines.append(
                    f"the password given was not sent to {idp} for {names} (the push did not "
                    "go through, and idprov keeps passwords only in memory): the push that "
                    "goes through later sends none (a new account gets a random password); "
                    f"set it again with {again} once it has"
                )
        return lines

    def awaiting_warning(self, name: str) -> str:
        """Why the rows of ``name`` in :attr:`awaiting_rename` were not pushed, and what
        to do."""
        count, old = self.awaiting_rename.get(name, 0), self.renamed_from[name]
        if name in self.renamed_away:
            return (
                f"{count} outbox row(s) of identity provider {name!r} were not pushed: "
                f"`idprov idp rename {name} {old}` moved its ledger to {old!r} at "
                f"{self.renamed_away[name]}, and the configuration of this process, which "
                f"still names {name!r}, is older than that rename: restart this worker or "
                f"`idprov serve` with the new configuration (and run commands with it). "
                f"These rows stay under {name!r}, orphaned: the next `idprov sync` pushes "
                f"their changes to {old!r}, and `idprov outbox discard --idp {name}` drops "
                f"them. This configuration never pushes under {name!r} again; `idprov idp "
                f"forget-rename {name}` gives the name to another identity provider, at "
                f"another target"
            )
        return (
            f"{count} outbox row(s) of identity provider {name!r} were not pushed, waiting "
            f"for `idprov idp rename {old} {name}`: {name!r} has no ledger and points at the "
            f"target the ledger of {old!r}, which is not configured any more, was made at "
            f"(pushed now, it would take the accounts and groups idprov made there for new "
            f"ones); run the rename if it was one (these rows go with it, the next `idprov "
            f"sync` pushes them), or keep the entry of {old!r} with `enabled: false` if it "
            f"was retired"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "idps": [r.to_dict() for r in self.idps.values()]}
        if self.queued:
            out["queued"] = dict(self.queued)
        if self.held:
            out["held"] = dict(self.held)
            out["guard"] = list(self.guard)
        if self.orphaned:
            out["orphaned"] = dict(self.orphaned)
        if self.leased:
            out["leased"] = {
                name: {
                    "rows": count,
                    "claimed_by": [
                        {"holder": h, "claimed_until": u}
                        for h, u in sorted(self.leases.get(name, {}).items())
                    ],
                }
                for name, count in self.leased.items()
            }
        if self.awaiting_rename:
            out["awaiting_rename"] = {
                name: {"rows": count, "from": self.renamed_from[name]}
                | ({"renamed_away_at": at} if (at := self.renamed_away.get(name)) else {})
                for name, count in self.awaiting_rename.items()
            }
        if self.passwords:
            out["passwords_not_sent"] = [
                {"idp": idp, "user": user, "earlier": later}
                for idp, user, later in self.passwords.values()
            ]
        if self.orphaned or self.held or self.awaiting_rename or self.passwords:
            out["warnings"] = self.warnings
        return out


@dataclass
class ChangeResult:
    """What a change did: the action, its target, the entity after (or before a
    delete), and whether anything changed."""

    action: str
    target: str
    entity: User | Role | None = None
    changed: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    outbound: OutboundReport | None = None
    """What provisioning to the identity providers did (None: none are targeted)."""

    @property
    def outbound_failed(self) -> bool:
        return self.outbound is not None and not self.outbound.ok

    @property
    def outbound_held(self) -> bool:
        return self.outbound is not None and bool(self.outbound.held)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "changed": self.changed,
            "entity": self.entity.to_dict() if self.entity is not None else None,
            **({"details": self.details} if self.details else {}),
            "outbound": self.outbound.to_dict() if self.outbound is not None else None,
        }
