"""The audit log's retention: ``audit: {keep_days: N}``.

Every change and every operation at a target is an audit entry, so the log grows with
the work done, and it names people (who changed whom). With ``keep_days`` set, each
`idprov sync` (the job cron runs) removes the entries older than that, oldest first, in
short transactions of :data:`BATCH` entries (a writer waits for one batch, never for
the whole removal), and records what it removed as one entry of its own
(``audit.prune``). Without it, every entry is kept, as before. Some entries are
evidence other parts read, and stay whatever their age (see
:meth:`StateStore.remove_audit_before`): the logins that created users, the renames
of IdPs, the newest sync runs. An SQLite file does not shrink: the freed pages hold
the entries written after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idprov.provisioning.metrics import RECENT_RUNS
from idprov.provisioning.outbox import stamp_in

if TYPE_CHECKING:
    from idprov.provisioning.service import IdentityService

BATCH = 5_000
"""Entries removed per transaction."""


def prune_audit(service: IdentityService) -> int:
    """Remove the audit entries older than ``audit.keep_days`` (none without it); how
    many went. Recorded as one ``audit.prune`` entry, in the current sync run."""
    keep = service.config.audit.keep_days
    if keep is None:
        return 0
    before = stamp_in(-keep * 86_400)  # as the audit log writes times
    removed = 0
    while True:
        with service.state.transaction():
            count = service.state.remove_audit_before(before, BATCH, keep_runs=RECENT_RUNS)
        removed += count
        if count < BATCH:
            break
    if removed:
        with service.state.transaction():
            service.state.audit(
                actor=service.actor,
                application=service.application,
                action="audit.prune",
                target="audit",
                details={"before": before, "keep_days": keep, "removed": removed},
                run=service.run,
            )
    return removed
