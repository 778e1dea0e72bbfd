"""Monitoring: `idprov status`, and `--metrics FILE` for node_exporter's textfile collector.

:func:`idp_status` reads, per identity provider, what an operator wants at a glance:
the last sync and the last successful one (from the audit log), the outbox depth by
status and the age of the oldest row waiting, and the IdP's health. A command run
with ``--metrics FILE`` (sync, import, outbox work) adds what that run did
(:class:`RunStats`: operations by kind and outcome, drift found and repaired, guard
trips, duration, :func:`run_outcome`) and writes it all as OpenMetrics text,
atomically (a temporary file renamed over the old one, so the collector never reads
half a file). The file holds counts and IdP names only: no user names, no values.

A run that fails before it can read the state (a configuration that does not load)
still replaces the file (:func:`failed_run_metrics`): its outcome and finish time,
and the last successful syncs carried over from the file it replaces, so that an
alert on their age fires instead of seeing the last success forever.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.db import clock
from idprov.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import IdentityService

RECENT_RUNS = 500
"""How many sync runs back the audit log is searched for each IdP's last one."""


@dataclass
class IdpStatus:
    """One identity provider at a glance."""

    idp: str
    last_sync: str | None = None
    last_sync_outcome: str | None = None
    last_success: str | None = None
    outbox: dict[str, int] = field(default_factory=dict)
    """Rows by status: pending, failed, held; for an IdP not configured, all of them as
    orphaned (as `idprov outbox list` shows them: nothing pushes them)."""
    oldest_waiting: str | None = None
    """When the oldest row still in the outbox was enqueued."""
    health: str = "ok"
    configured: bool = True
    """False for a name only outbox rows are left under (see :attr:`outbox`)."""
    enabled: bool = True
    """False for an IdP the configuration disables (nothing syncs it)."""

    def oldest_age(self, now: float | None = None) -> float | None:
        if self.oldest_waiting is None:
            return None
        return max((now or clock().timestamp()) - _epoch(self.oldest_waiting), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "oldest_waiting_seconds": self.oldest_age()}


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def idp_status(service: IdentityService) -> list[IdpStatus]:
    """Every configured IdP's status (and any that still has outbox rows)."""
    enabled = {i.name: i.enabled for i in service.config.identity_providers}
    names = list(enabled) + [n for n in service.state.outbox.idps() if n not in enabled]
    found = {n: IdpStatus(n, configured=n in enabled, enabled=enabled.get(n, False)) for n in names}
    for (name, status), (count, oldest) in service.state.outbox.depth().items():
        entry = found.setdefault(name, IdpStatus(name, configured=False))
        status = status if entry.configured else "orphaned"
        entry.outbox[status] = entry.outbox.get(status, 0) + count
        if entry.oldest_waiting is None or oldest < entry.oldest_waiting:
            entry.oldest_waiting = oldest
    for name, health in service.idp_health().items():
        found[name].health = health
    _last_syncs(service, found)
    return list(found.values())


def _last_syncs(service: IdentityService, found: dict[str, IdpStatus]) -> None:
    from idprov.provisioning.state import AuditQuery

    runs = service.state.audit_entries(AuditQuery(action="sync.run", limit=RECENT_RUNS))
    renames = service.state.audit_entries(AuditQuery(action="idp.rename", limit=RECENT_RUNS))
    renames.reverse()  # oldest first: a → b, then b → c
    for run in runs:  # newest first
        for name, counts in run.details.items():
            entry = found.get(_renamed(name, run.id, renames))
            if entry is None or not isinstance(counts, dict):
                continue
            ok = _outcome(run, counts) in ("ok", "failed") and not counts.get("failed")
            if entry.last_sync is None:  # this IdP's part: another's failure is not its
                own = _outcome(run, counts)
                entry.last_sync = run.at
                entry.last_sync_outcome = (
                    own if own not in ("ok", "failed") else ("ok" if ok else "failed")
                )
            if ok and entry.last_success is None:
                entry.last_success = run.at


def _outcome(run: Any, counts: dict[str, Any]) -> str:
    """A sync run's outcome at one IdP: ``refused`` where the deletion guard held its
    plan (``held`` in its counts); where a run that held another IdP's plan pushed
    this one's, as if that one had not been in the run (``ok``: its counts say what
    failed)."""
    if "held" in counts:
        return "refused"
    if run.outcome == "refused" and any(
        isinstance(c, dict) and "held" in c for c in run.details.values()
    ):
        return "ok"
    return str(run.outcome)


def _renamed(name: str, run: int, renames: list[Any]) -> str:
    """The name an IdP synced as ``name`` in audit entry ``run`` has now: an
    `idprov idp rename` after that run moved its record (``renames``: the rename
    entries, oldest first), and its syncs are its own."""
    for rename in renames:
        if rename.id > run and rename.details.get("from") == name:
            name = str(rename.details.get("to", name))
    return name


def run_outcome(code: int | str) -> str:
    """The ``outcome`` label of a run that ends with exit code ``code``: the code's name
    in lower case (``ok``, ``outbound_failed``, ``guard_tripped``, ``locked``,
    ``partial``, ``nothing_imported``, ``usage``, ``interrupted``, ``error``, ...; the
    README's table). Every success is ``ok``: ``--detailed-exitcode``'s 11 and 12 say
    what the run's other samples say too (operations, drift), and a run's label must
    not depend on that flag. Also takes a word of this vocabulary, or one that
    callers used to set (``refused``, ``failed``)."""
    if isinstance(code, str):
        code = int(code) if code.isdigit() else _OLD_WORDS.get(code, code)
        if isinstance(code, str):
            return code
    if code in _SUCCESSES:
        return "ok"
    try:
        return ExitCode(code).name.lower()
    except ValueError:
        return "error"


_SUCCESSES = {ExitCode.OK, ExitCode.CHANGES_APPLIED, ExitCode.DRIFT_FOUND}
_OLD_WORDS = {"refused": ExitCode.GUARD_TRIPPED, "failed": ExitCode.OUTBOUND_FAILED}


@dataclass
class RunStats:
    """What one command run did, for its metrics file."""

    command: str
    started: float = field(default_factory=time.monotonic)
    outcome: str = "ok"
    """How it ended: see :func:`run_outcome`."""
    operations: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(idp, operation, outcome) -> count."""
    drift_found: dict[str, int] = field(default_factory=dict)
    drift_repaired: dict[str, int] = field(default_factory=dict)
    guard_trips: dict[str, int] = field(default_factory=dict)

    def add(self, report: OutboundReport | None) -> None:
        """Count a push's operations (and the guard's holds) by IdP, kind, outcome."""
        if report is None:
            return
        for name, idp in report.idps.items():
            for op in idp.operations:
                key = (name, f"{op.kind}.{op.operation}", op.outcome)
                self.operations[key] = self.operations.get(key, 0) + 1
        for name in report.held:
            self.guard_trips[name] = self.guard_trips.get(name, 0) + 1


# ---------------------------------------------------------------- OpenMetrics text
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


class _Family:
    def __init__(self, name: str, kind: str, help_text: str, unit: str = "") -> None:
        self.lines = [f"# TYPE {name} {kind}", f"# HELP {name} {help_text}"]
        if unit:
            self.lines.insert(1, f"# UNIT {name} {unit}")
        self.name = name

    def sample(self, value: float, suffix: str = "", **labels: str) -> None:
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        self.lines.append(f"{self.name}{suffix}{_labels(**labels)} {number}")


def openmetrics(statuses: Iterable[IdpStatus], run: RunStats | None) -> str:
    """The OpenMetrics exposition of ``statuses`` and of ``run`` (if any). Every
    sample carries the run's ``command`` label, so that the files of sync, import
    and the worker, side by side in the collector's directory, never collide."""
    statuses = list(statuses)
    families = _status_families(statuses, run.command if run is not None else "status")
    if run is not None:
        families += _run_families(run)
    return "\n".join(line for f in families for line in f.lines) + "\n# EOF\n"


def _status_families(statuses: list[IdpStatus], command: str) -> list[_Family]:
    last = _Family(
        "idprov_last_successful_sync_timestamp_seconds",
        "gauge",
        "When the last sync that succeeded at this IdP ran (0: never).",
        "seconds",
    )
    depth = _Family("idprov_outbox_rows", "gauge", "Outbox rows by status.")
    oldest = _Family(
        "idprov_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest row waiting in the outbox.",
        "seconds",
    )
    healthy = _Family("idprov_idp_healthy", "gauge", "1 unless every recent operation failed.")
    now = clock().timestamp()  # the clock the outbox's stamps were written by
    for s in statuses:
        if s.last_success is not None:
            last.sample(_epoch(s.last_success), idp=s.idp, command=command)
        elif s.enabled:  # never: 0, so that an alert on its age fires for it too
            last.sample(0, idp=s.idp, command=command)
        for status in ("pending", "failed", "held") + (() if s.configured else ("orphaned",)):
            depth.sample(s.outbox.get(status, 0), idp=s.idp, status=status, command=command)
        oldest.sample(round(s.oldest_age(now) or 0.0, 3), idp=s.idp, command=command)
        healthy.sample(1 if s.health == "ok" else 0, idp=s.idp, command=command)
    return [last, depth, oldest, healthy]


def _run_families(run: RunStats) -> list[_Family]:
    command = run.command
    ops = _Family(
        "idprov_run_operations",
        "gauge",
        "Outbound operations of the last run, by kind and outcome.",
    )
    for (idp, kind, outcome), count in sorted(run.operations.items()):
        ops.sample(count, idp=idp, command=command, kind=kind, outcome=outcome)
    found = _Family("idprov_drift_found", "gauge", "Entities drifted at the target (last verify).")
    fixed = _Family("idprov_drift_repaired", "gauge", "Drifted entities repaired (last run).")
    for idp, count in sorted(run.drift_found.items()):
        found.sample(count, idp=idp, command=command)
    for idp, count in sorted(run.drift_repaired.items()):
        fixed.sample(count, idp=idp, command=command)
    trips = _Family(
        "idprov_guard_trips",
        "gauge",
        "Kinds of change over the deletion guard in the last run (refused or held).",
    )
    for idp, count in sorted(run.guard_trips.items()):
        trips.sample(count, idp=idp, command=command)
    duration = _Family(
        "idprov_run_duration_seconds", "gauge", "How long the last run took.", "seconds"
    )
    duration.sample(round(time.monotonic() - run.started, 3), command=command)
    finished = _Family(
        "idprov_run_finished_timestamp_seconds",
        "gauge",
        "When the last run finished, and how.",
        "seconds",
    )
    finished.sample(round(time.time(), 3), command=command, outcome=run_outcome(run.outcome))
    return [ops, found, fixed, trips, duration, finished]


_LAST_SUCCESS = re.compile(
    r'^idprov_last_successful_sync_timestamp_seconds\{idp="((?:[^"\\]|\\.)*)",'
    r'command="(?:[^"\\]|\\.)*"\} (\S+)$',
    re.MULTILINE,
)


def failed_run_metrics(previous: str | None, run: RunStats) -> str:
    """The metrics of a run that failed before it could read the state: its outcome,
    duration and finish time, and each IdP's last successful sync as ``previous`` (the
    file this one replaces) had it: that sync is still the last success, and an alert
    on its age must see it grow. Nothing of the outbox or health, which are not known."""
    last = _status_families([], run.command)[0]
    for idp, value in _LAST_SUCCESS.findall(previous or ""):
        try:
            when = float(value)
        except ValueError:
            continue
        last.sample(when, idp=_unescape(idp), command=run.command)
    families = [last, *_run_families(run)]
    return "\n".join(line for f in families for line in f.lines) + "\n# EOF\n"


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def previous_metrics(path: Path) -> str | None:
    """The metrics file at ``path`` as it is (None: none, or not readable)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(1 << 20)
    except OSError:
        return None


def write_metrics(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (mode 0644: counts only, no user data)."""
    directory = path.parent
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise UsageError(
            f"--metrics {path}: cannot write in {directory}: {exc.strerror}",
            hint="give a file in a directory idprov can write to (node_exporter's "
            "--collector.textfile.directory)",
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:  # the path is a directory, say
        Path(temp).unlink(missing_ok=True)
        raise UsageError(
            f"--metrics {path}: cannot replace it: {exc.strerror}",
            hint="give the path of a file (node_exporter reads *.prom files in its "
            "--collector.textfile.directory)",
        ) from exc
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
