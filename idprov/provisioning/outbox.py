"""The outbox: durable queue of outbound reconciliations.

The outbox holds one row per (identity provider, user or role) that needs to be
brought up to date there. It records *that* something must be reconciled, not a
payload: the engine computes what to send from the current local state when it
drains, so repeated changes coalesce and nothing stale or secret is stored. A row
is written in the same transaction as the local change (same SQLite file as the
embedded store), removed when done, and kept with its last error when it fails.

Rows are **claimed** before they are drained: a claim is a lease (``claimed_by``,
``claimed_until``) taken in a short transaction, so that the command that made a
change and the worker (`idprov serve`, `idprov outbox work`) never push the same
row at once, and a drainer killed mid-way loses nothing: its lease runs out and the
next drainer takes the row. A failed row waits for ``next_attempt_at`` (the IdP's
``retry.row_*`` schedule) before the worker tries it again. On a PostgreSQL state,
shared by workers in several processes, a claim locks the rows it picks with ``FOR
UPDATE SKIP LOCKED``: workers claiming at once skip each other's rows instead of
waiting for them. One row is one user or role at one IdP and later changes coalesce
into it, so a claimed entity is pushed by one worker at a time, in order.

``idp_health`` keeps, per IdP, since when every drained operation has failed; an IdP
failing for longer than ``retry.quarantine_after`` is *quarantined*: the worker
tries it once per ``retry.row_max_backoff`` until an operation succeeds.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Literal

from idprov.db import clock, now
from idprov.statedb import StateDB

Kind = Literal["user", "role"]
STALE_AFTER_SECONDS = 300
LEASE_SECONDS = 300.0
"""How long a claim lasts unless renewed; a drain renews its claims as it goes."""


def create_tables(db: StateDB) -> None:
    db.execute(
        "CREATE TABLE outbox ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, idp TEXT NOT NULL, kind TEXT NOT NULL,"
        " local_id TEXT NOT NULL, domain TEXT NOT NULL, label TEXT NOT NULL,"
        " status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT, last_status INTEGER, enqueued_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL, UNIQUE (idp, kind, local_id))"
    )
    db.execute("CREATE INDEX outbox_status ON outbox (status, updated_at)")
    from idprov.provisioning.ledger import create_tables as ledger_tables

    ledger_tables(db)


def worker_columns(db: StateDB) -> None:
    """Migration: claims, the per-row retry schedule, and IdP health."""
    db.execute("ALTER TABLE outbox ADD COLUMN next_attempt_at TEXT")
    db.execute("ALTER TABLE outbox ADD COLUMN claimed_by TEXT")
    db.execute("ALTER TABLE outbox ADD COLUMN claimed_until TEXT")
    db.execute("ALTER TABLE outbox ADD COLUMN failures INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX outbox_due ON outbox (next_attempt_at)")
    db.execute(
        "CREATE TABLE idp_health (idp TEXT PRIMARY KEY, failing_since TEXT,"
        " last_success_at TEXT, last_failure_at TEXT, last_error TEXT) WITHOUT ROWID"
    )


def allowances(db: StateDB) -> None:
    """Migration: the allowance of deletions that travels with a row (see
    :attr:`OutboxRow.allowed`)."""
    db.execute("ALTER TABLE outbox ADD COLUMN allowed INTEGER")


def unsent_passwords(db: StateDB) -> None:
    """Migration: whether a row's change set a password that did not reach the target
    (see :attr:`OutboxRow.password_unsent`)."""
    db.execute("ALTER TABLE outbox ADD COLUMN password_unsent INTEGER NOT NULL DEFAULT 0")


def versions(db: StateDB) -> None:
    """Migration: a row's version, raised by each enqueue, so that a push finishing
    removes the row only if no change came since it was read (times alone cannot
    tell two changes in one millisecond apart)."""
    db.execute("ALTER TABLE outbox ADD COLUMN version INTEGER NOT NULL DEFAULT 0")


def unjudged_marks(db: StateDB) -> None:
    """Migration: whether a row carries a change no deletion guard judged yet (see
    :attr:`OutboxRow.unjudged`)."""
    db.execute("ALTER TABLE outbox ADD COLUMN unjudged INTEGER NOT NULL DEFAULT 0")


def member_deltas(db: StateDB) -> None:
    """Migration: the members a role's row says its changes touched (see
    :attr:`OutboxRow.members_delta`), kept apart, one row per member; and, per IdP and
    role, the changes of its members that no row there carries (see
    :meth:`Outbox.untracked`)."""
    db.execute("ALTER TABLE outbox ADD COLUMN members_delta INTEGER NOT NULL DEFAULT 0")
    key = "bigint" if db.dialect == "postgresql" else "INTEGER"
    tail = "" if db.dialect == "postgresql" else " WITHOUT ROWID"
    db.execute(
        f"CREATE TABLE outbox_members (outbox_id {key} NOT NULL, domain TEXT NOT NULL,"
        f" user_id TEXT NOT NULL, PRIMARY KEY (outbox_id, user_id)){tail}"
    )
    db.execute(
        "CREATE TABLE untracked_members (idp TEXT NOT NULL, role_id TEXT NOT NULL,"
        f" changes INTEGER NOT NULL, PRIMARY KEY (idp, role_id)){tail}"
    )


def stamp_in(seconds: float) -> str:
    """The time ``seconds`` from now, in the form :func:`now` writes."""
    moment = clock() + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class OutboxRow:
    """One pending or failed reconciliation of a user or role at an IdP."""

    id: int
    idp: str
    kind: str
    local_id: str
    domain: str
    label: str
    status: str
    attempts: int
    last_error: str | None
    last_status: int | None
    enqueued_at: str
    updated_at: str
    next_attempt_at: str | None = None
    claimed_by: str | None = None
    claimed_until: str | None = None
    failures: int = 0
    """Failed drains in a row (the worker's backoff counts these; attempts counts calls)."""
    version: int = 0
    """Raised by each enqueue: the change this row stood for when it was read."""
    allowed: int | None = None
    """The ``--allow-deletes`` of the change the row carries (the command that changed
    or released it; the smaller of two changes coalesced before a push, none if either
    has none): the deletion guard judges it with that, whichever drainer pushes it. A
    failed or held row has none: its retry is judged afresh (see :meth:`Outbox.failed`)."""
    password_unsent: bool = False
    """A user's row whose change set a password (`user add --password-stdin`, `user
    passwd`) that its push could not send: idprov keeps passwords only in memory, so
    the push that goes through sends none, and says whose password to set again."""
    unjudged: int = 0
    """Whether the row carries a change no deletion guard has judged whole yet: only a
    judgement of every such row of its IdP judges it whole (the worker's; a later
    command's push that takes them all, see :meth:`Outbox.claim_unjudged`). Pushed
    alone with another change, it went out a few rows at a time, each under the
    guard's minimum. :data:`UNJUDGED` (1): committed without the push that judges it
    (`import --no-push`), or met by a later change (an enqueue turns a
    :data:`OWN_PUSH` mark into this one); :data:`OWN_PUSH` (2): its command's own push
    judges it (set in that command's commit, see :meth:`Outbox.mark_own_push`), so
    that command's push does not take the IdP's others for it; cut after its commit
    (Ctrl-C, ``kill -9``, a crash, on any host), the change keeps the mark and is
    judged whole by whoever meets it next. Cleared where the guard judges the change:
    let go (:meth:`Outbox.judged`) or held (:meth:`Outbox.hold`); set again where a
    failed row loses its allowance (:meth:`Outbox.failed`)."""
    members_delta: int = 0
    """A role's row whose every change named the users whose membership it may have
    changed (a role assign, an import's batch): 1, and those users are kept in
    ``outbox_members`` (:meth:`Outbox.touched`); the push then compares the group with
    the role for them alone, not for every member (an import into one role of 90,000
    users re-read them all for each batch of 5,000). 0: any change that did not name
    them (a sync, a role rename, a retry of a failed push, a held row) makes the push
    compare every member; so does a change of the role's members that went to other
    IdPs only (:meth:`Outbox.untracked`)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for internal in ("version", "unjudged", "members_delta"):  # not in `outbox list --json`
            del out[internal]
        out["password_unsent"] = bool(self.password_unsent)
        return out


@dataclass(frozen=True)
class DrainHealth:
    """What a drain tells of an IdP's health, from its operations in the order they
    ended (see :meth:`Outbox.note_health`)."""

    succeeded_at: str | None = None
    """When its last successful operation ended (None: none succeeded)."""
    failing_since: str | None = None
    """When the first of the failures after that one ended (None: none failed after)."""
    failed_at: str | None = None
    """When its last failure ended, and its error."""
    error: str | None = None
    derived: bool = False
    """Whether ``error`` only follows from others' failures (a group waiting for its
    members): a failing streak then keeps the cause an earlier drain recorded."""


@dataclass
class IdpHealth:
    """Whether an IdP has been failing, and since when."""

    idp: str
    failing_since: str | None
    last_success_at: str | None
    last_failure_at: str | None
    last_error: str | None

    def quarantined(self, after_seconds: float) -> bool:
        return self.failing_since is not None and self.failing_since < stamp_in(-after_seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_OUTBOX_COLUMNS = (
    "id, idp, kind, local_id, domain, label, status, attempts, last_error, last_status,"
    " enqueued_at, updated_at, next_attempt_at, claimed_by, claimed_until, failures, version,"
    " allowed, password_unsent, unjudged, members_delta"
)


UNJUDGED = 1
"""An :attr:`OutboxRow.unjudged` mark: no push of the change's own judges it."""
OWN_PUSH = 2
"""An :attr:`OutboxRow.unjudged` mark: the push of the command that made the change
judges it (set in its commit); anyone else meeting it judges it whole."""


def smaller_allowance(first: int | None, second: int | None) -> int | None:
    """The allowance a row keeps when a second change joins it: the smaller, none if
    either has none (an allowance given to one change never covers another's effects;
    :meth:`Outbox.enqueue_many` decides it in SQL, with its one exception)."""
    return None if first is None or second is None else min(first, second)


def _smaller_allowance(running: Sequence[str], unheld: bool) -> str:
    """The allowance of a row a second change coalesces into (see
    :meth:`Outbox.enqueue_many`; the parameters: now, then ``running``, the drainers
    holding a claim on some of the rows that are known to run). ``unheld``: a held
    row is taken out of its hold by the second change, and takes its allowance."""
    held = "WHEN outbox.status = 'held' THEN excluded.allowed " if unheld else ""
    return (
        f"CASE {held}WHEN outbox.status = 'pending' AND outbox.claimed_until >= ?"
        f" AND outbox.claimed_by IN {_in(running)} THEN excluded.allowed"
        " WHEN outbox.allowed IS NULL OR excluded.allowed IS NULL THEN NULL"
        " WHEN outbox.allowed < excluded.allowed THEN outbox.allowed ELSE excluded.allowed END"
    )


ENQUEUE_CHUNK = 200
"""Outbox rows upserted per statement (8 parameters each)."""


def _in(values: Sequence[Any]) -> str:
    return f"({','.join('?' * len(values))})" if values else "(NULL)"


class Outbox:
    """Durable queue of reconciliations, in idprov's state database."""

    def __init__(self, db: StateDB):
        self.db = db

    def enqueue(
        self,
        idps: Sequence[str],
        kind: Kind,
        local_id: str,
        domain: str,
        label: str,
        allowed: int | None = None,
    ) -> list[int]:
        """Ask for ``kind local_id`` to be reconciled at each IdP; an existing row is
        reset to pending and due now (changes coalesce). ``allowed``: the change's
        ``--allow-deletes``, which travels with the row (:attr:`OutboxRow.allowed`).
        Returns the row ids. Call inside the transaction of the local change."""
        entities = [(local_id, domain, label)]
        return [r.id for r in self.enqueue_many(idps, kind, entities, allowed)]

    def enqueue_many(
        self,
        idps: Sequence[str],
        kind: Kind,
        entities: Sequence[tuple[str, str, str]],
        allowed: int | None = None,
        keep_held: bool = True,
        unjudged: bool = False,
        members: Mapping[str, Collection[tuple[str, str]]] | None = None,
    ) -> list[OutboxRow]:
        """:meth:`enqueue` for ``entities`` (local id, domain, label) at once, in a
        statement per :data:`ENQUEUE_CHUNK` rows (a statement per row cost a role
        assign of 5,000 users 5,000 round trips). A row already there keeps its
        ``enqueued_at``: its change has waited since then (each sync re-enqueued it,
        and the oldest row's age, which alerts watch, never passed the cron interval).
        It then carries both changes (a held row stays held, ``keep_held``, decided by
        the upsert itself, on the row as it is then, never on an earlier read that a
        worker's hold may have made stale: the change it was held for is in it still,
        and a later harmless change must not push it out alone, one row at a time;
        False: the row goes out with this change, which
        then gives it its allowance, the held change's having gone with its hold: a
        sync, which judged its IdP whole), and keeps the smaller
        allowance of the two, none
        if either has none (a failed or held row has none: the change it carries lost
        it): an allowance given to one change never covers another's effects. Only a
        row a running drainer holds a claim on takes this change's allowance as it is:
        the change it carried is being pushed. A claim whose holder was killed (``kill
        -9``) after its commit lasts until its lease ends, and the row still carries the
        killed change, not pushed: lent this change's allowance, that change was judged
        in parts (its rows shared with this one under this allowance, its others alone,
        each under the guard). So the holder must be known to run: a process of this
        machine (:func:`~idprov.provisioning.outbound.holder_running`); of another
        machine nothing can be known, and the row keeps the smaller allowance.
        ``unjudged``: this change is committed without the push that judges it (see
        :attr:`OutboxRow.unjudged`); a row keeps the mark of an earlier change that no
        guard judged whole yet, as :data:`UNJUDGED` (the returned rows say so: the
        push of this change takes every such row of the IdP). ``members``: local id ->
        the users (domain, user id) whose membership of that role this change may have
        changed; a row keeps its :attr:`OutboxRow.members_delta` while every change
        coalesced into it named its users. Returns the rows as written, by id."""
        stamp = now()
        unique = list({e[0]: e for e in entities}.values())  # a row is upserted once
        values = [(idp, kind, *entity) for entity in unique for idp in idps]
        found: list[OutboxRow] = []
        kept = "CASE WHEN outbox.status = 'held' THEN 'held' ELSE 'pending' END"
        status = kept if keep_held else "'pending'"
        mark = int(unjudged)
        named = members or {}
        for start in range(0, len(values), ENQUEUE_CHUNK):
            chunk = values[start : start + ENQUEUE_CHUNK]
            running = self._running_holders(kind, chunk, stamp) if allowed is not None else []
            rows = self.db.execute(
                "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at,"
                " updated_at, allowed, unjudged, members_delta) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                + " ON CONFLICT (idp, kind, local_id) DO UPDATE SET status ="
                f" {status},"
                " label = excluded.label, domain = excluded.domain, next_attempt_at = NULL,"
                " updated_at = excluded.updated_at,"  # enqueued_at: waiting since the first
                f" allowed = {_smaller_allowance(running, not keep_held)},"
                " unjudged = CASE WHEN excluded.unjudged = 1 OR outbox.unjudged <> 0 THEN 1"
                " ELSE 0 END,"  # another change's mark, met: this change's push takes them all
                " members_delta = CASE WHEN excluded.members_delta = 1"
                " AND outbox.members_delta = 1 THEN 1 ELSE 0 END,"
                f" version = outbox.version + 1 RETURNING {_OUTBOX_COLUMNS}",
                [
                    v
                    for row in chunk
                    for v in (*row, stamp, stamp, allowed, mark, int(row[2] in named))
                ]
                + [stamp, *running],
            ).fetchall()
            found += [OutboxRow(*r) for r in rows]
        self._note_members([(r.id, named[r.local_id]) for r in found if r.members_delta])
        return sorted(found, key=lambda r: r.id)

    def _note_members(self, touched: Sequence[tuple[int, Collection[tuple[str, str]]]]) -> None:
        """Add to rows' ``outbox_members`` the users their new change touched."""
        self.db.executemany(
            "INSERT INTO outbox_members (outbox_id, domain, user_id) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(row_id, domain, user_id) for row_id, users in touched for domain, user_id in users],
        )

    def touched(self, ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
        """Row id -> the users (domain, user id) that the changes of role rows ``ids``
        touched (see :attr:`OutboxRow.members_delta`; a row without any: none)."""
        out: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
        sql = "SELECT outbox_id, domain, user_id FROM outbox_members WHERE outbox_id"
        for row_id, domain, user_id in self.db.select_among(sql, [], ids):
            out[int(row_id)].append((str(domain), str(user_id)))
        return out

    def full_compare(self, idp: str, role_ids: Sequence[str]) -> None:
        """Make the rows of roles ``role_ids`` at ``idp`` compare every member at their
        next push (a change that did not name the users it touched): a new version,
        due now, so that a drainer holding one as it was keeps it for that push."""
        for start in range(0, len(role_ids), 500):
            chunk = list(role_ids[start : start + 500])
            self.db.execute(
                "UPDATE outbox SET members_delta = 0, version = version + 1,"
                " next_attempt_at = NULL WHERE idp = ? AND kind = 'role'"
                f" AND local_id IN {_in(chunk)} AND members_delta = 1",
                [idp, *chunk],
            )

    def joined(
        self, idp: str, joins: Mapping[str, Collection[tuple[str, str]]], owners: Sequence[str]
    ) -> None:
        """Users (domain, id) made, or enabled again, at ``idp`` join the groups of their
        roles there (``joins``: role id -> those users): each of those roles' rows that
        compares in part names them too (a new version where another drainer holds it,
        so that it pushes the row again; not where ``owners``, the drain recording
        them, does: it compares them already), and a role without a row there counts
        an untracked change (:meth:`untracked`): whatever row comes next for it
        compares every member. Call in the transaction that records them."""
        role_ids = sorted(joins)
        # (no row lock: other drainers delete and renew their rows in their own orders,
        # and a lock here deadlocked with them on PostgreSQL; a claim slipping between
        # this read and the commit is left to the drain's _groups_after, which follows)
        sql = "SELECT id, local_id, members_delta, claimed_by FROM outbox WHERE idp = ?"
        found = self.db.select_among(f"{sql} AND kind = 'role' AND local_id", [idp], role_ids)
        rows = {str(local_id): (int(i), int(delta), by) for i, local_id, delta, by in found}
        self.untracked([idp], [r for r in role_ids if r not in rows])
        named = [(i, joins[r]) for r, (i, delta, _) in rows.items() if delta]
        self._note_members(named)
        elsewhere = [(i,) for i, delta, by in rows.values() if delta and by and by not in owners]
        self.db.executemany("UPDATE outbox SET version = version + 1 WHERE id = ?", elsewhere)

    def untracked(self, idps: Sequence[str], role_ids: Sequence[str]) -> None:
        """Note that the members of roles ``role_ids`` changed without a row at
        ``idps`` (an application's change goes to its own IdPs; a JIT login to those
        with ``jit: true``): until a push there compares every member
        (:meth:`tracked`), none compares only the members its changes touched. Call in
        the change's transaction."""
        pairs = [(idp, role_id) for idp in idps for role_id in dict.fromkeys(role_ids)]
        self.db.executemany(
            "INSERT INTO untracked_members (idp, role_id, changes) VALUES (?, ?, 1)"
            " ON CONFLICT (idp, role_id) DO UPDATE SET changes = untracked_members.changes + 1",
            pairs,
        )

    def untracked_of(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """(IdP, role id) -> how many changes of its members no row there carried since
        a push compared every member (0: none), for each of ``pairs``."""
        out = dict.fromkeys(pairs, 0)
        sql = "SELECT role_id, changes FROM untracked_members WHERE idp = ? AND role_id"
        for idp in sorted({idp for idp, _ in pairs}):
            ids = sorted({role_id for i, role_id in pairs if i == idp})
            for role_id, changes in self.db.select_among(sql, [idp], ids):
                out[(idp, str(role_id))] = int(changes)
        return out

    def tracked(self, idp: str, role_id: str, changes: int) -> None:
        """A push at ``idp`` compared every member of role ``role_id``, read after the
        ``changes`` it had counted (:meth:`untracked_of`): those are in the group now;
        one noted since is not cleared."""
        self.db.execute(
            "DELETE FROM untracked_members WHERE idp = ? AND role_id = ? AND changes = ?",
            [idp, role_id, changes],
        )

    def _drop_members(self, ids: Sequence[int]) -> None:
        """Forget the touched users of rows ``ids``, gone from the outbox."""
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            self.db.execute(f"DELETE FROM outbox_members WHERE outbox_id IN {_in(chunk)}", chunk)

    def mark_own_push(self, ids: Sequence[int]) -> None:
        """Mark rows ``ids`` (not held) :data:`OWN_PUSH`: their change is committed and
        the push of its command judges it; where that push never comes (the command
        cut after its commit), whoever meets the rows judges the change whole. Rows
        already marked keep their mark (another change's). Call in the change's
        transaction: one statement per 500 rows."""
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.db.execute(
                f"UPDATE outbox SET unjudged = {OWN_PUSH} WHERE id IN {_in(chunk)}"
                " AND unjudged = 0 AND status <> 'held'",
                chunk,
            )

    def judged(self, rows: Sequence[OutboxRow]) -> None:
        """The deletion guard judged the changes ``rows`` carry and let them go: their
        mark (:attr:`OutboxRow.unjudged`) goes, but where a change came since they were
        read (its own mark stays). One statement per 500 rows."""
        marked = [(r.id, r.version) for r in rows if r.unjudged]
        for start in range(0, len(marked), 500):
            chunk = marked[start : start + 500]
            self.db.execute(
                "UPDATE outbox SET unjudged = 0 WHERE (id, version) IN (VALUES "
                + ", ".join(["(?, ?)"] * len(chunk))
                + ")",
                [v for pair in chunk for v in pair],
            )

    def claim_unjudged(self, idps: Sequence[str], owner: str, lease: float) -> list[OutboxRow]:
        """Claim for ``owner`` every pending or failed row of ``idps`` that carries a
        change no guard judged whole (:attr:`OutboxRow.unjudged`) and that no other
        drainer holds: a push carrying one of them judges them all together, as the
        worker would, so that a change is never judged in parts (a failed row's retry
        that lost its allowance too: :meth:`failed`). Call inside a short write
        transaction."""
        rows = self.db.execute(
            f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id FROM"
            f" outbox WHERE idp IN {_in(idps)} AND status IN ('pending', 'failed')"
            " AND unjudged <> 0"
            f" AND (claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?)"
            f"{self.db.claim_lock}) RETURNING {_OUTBOX_COLUMNS}",
            [owner, stamp_in(lease), *idps, now(), owner],
        ).fetchall()
        return sorted((OutboxRow(*r) for r in rows), key=lambda r: r.id)

    def marked_elsewhere(
        self, idps: Sequence[str], owner: str, mine: Sequence[str] = ()
    ) -> list[tuple[str, int]]:
        """(IdP, id) of the pending or failed rows of ``idps`` that carry a change no
        guard judged whole (:attr:`OutboxRow.unjudged`) and that another drainer holds
        (a lease not run out, under a name neither ``owner`` nor one of its changes',
        nor one of ``mine``: the names the pushing changes claimed under, which another
        service's or process's drainer made — `idprov serve` commits on one thread and
        pushes on another, or in its outbox worker): where there is one,
        :meth:`claim_unjudged` took only part of that change. Call in the transaction
        of that claim."""
        names = [owner, *mine]
        rows = self.db.execute(
            f"SELECT idp, id FROM outbox WHERE idp IN {_in(idps)}"
            " AND status IN ('pending', 'failed') AND unjudged <> 0 AND claimed_until >= ?"
            f" AND claimed_by NOT IN {_in(names)} AND substr(claimed_by, 1, ?) <> ? ORDER BY id",
            [*idps, now(), *names, len(owner) + 1, f"{owner}."],
        ).fetchall()
        return [(str(idp), int(i)) for idp, i in rows]

    def _running_holders(
        self, kind: Kind, chunk: Sequence[tuple[str, ...]], stamp: str
    ) -> list[str]:
        """The drainers holding a claim that has not run out on rows of ``chunk``
        ((IdP, kind, local id, ...) to upsert) and that are known to run (see
        :meth:`enqueue_many`). Without an allowance to lend, an upsert needs none."""
        from idprov.provisioning.outbound import holder_running

        idps = list(dict.fromkeys(v[0] for v in chunk))
        ids = list(dict.fromkeys(v[2] for v in chunk))
        holders = self.db.execute(
            f"SELECT DISTINCT claimed_by FROM outbox WHERE idp IN {_in(idps)} AND kind = ?"
            f" AND local_id IN {_in(ids)} AND claimed_until >= ?",
            [*idps, kind, *ids, stamp],
        ).fetchall()
        return sorted(h for (h,) in holders if h and holder_running(h))

    def enqueue_absent(
        self,
        idp: str,
        kind: Kind,
        entities: Sequence[tuple[str, str, str]],
        owner: str,
        lease: float,
    ) -> list[OutboxRow]:
        """Rows at ``idp`` for those of ``entities`` (local id, domain, label) that have
        none there, claimed by ``owner`` as they are made; a row already there (another
        change's, which another drainer may hold) is left exactly as it was, its
        version and schedule untouched. Returns the rows made. Call inside a short
        write transaction."""
        stamp, until = now(), stamp_in(lease)
        unique = list({e[0]: e for e in entities}.values())
        made: list[OutboxRow] = []
        for start in range(0, len(unique), ENQUEUE_CHUNK):
            chunk = unique[start : start + ENQUEUE_CHUNK]
            made += [
                OutboxRow(*r)
                for r in self.db.execute(
                    "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at,"
                    " updated_at, claimed_by, claimed_until) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                    + f" ON CONFLICT (idp, kind, local_id) DO NOTHING RETURNING {_OUTBOX_COLUMNS}",
                    [v for e in chunk for v in (idp, kind, *e, stamp, stamp, owner, until)],
                ).fetchall()
            ]
        return sorted(made, key=lambda r: r.id)

    def rows(
        self,
        ids: Iterable[int] | None = None,
        *,
        idps: Sequence[str] | None = None,
        status: str | None = None,
        stale_pending: Sequence[str] = (),
        local_ids: Sequence[str] | None = None,
    ) -> list[OutboxRow]:
        """Rows by id, or by IdP/status/entity; ``stale_pending`` (IdPs) adds their
        pending rows left by a command that stopped before draining them."""
        where: list[str] = []
        params: list[Any] = []
        if ids is not None:
            id_list = list(ids)
            where.append(f"id IN {_in(id_list)}")
            params += id_list
        for column, values in (("idp", idps), ("local_id", local_ids)):
            if values is not None:
                where.append(f"{column} IN {_in(values)}")
                params += list(values)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        clause = " AND ".join(where) or "TRUE"
        if stale_pending:
            clause = (
                f"(({clause}) AND status != 'held') OR (status = 'pending' AND updated_at < ?"
                f" AND idp IN {_in(stale_pending)})"
            )
            params += [stamp_in(-STALE_AFTER_SECONDS), *stale_pending]
        rows = self.db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {clause} ORDER BY id", params
        ).fetchall()
        return [OutboxRow(*r) for r in rows]

    # -- claims: call each inside a short write transaction
    def claim(self, rows: Sequence[OutboxRow], owner: str, lease: float) -> list[OutboxRow]:
        """Take a lease on those of ``rows`` that no other drainer holds; returns them."""
        return self.claim_ids([r.id for r in rows], owner, lease)

    def claim_ids(self, ids: Sequence[int], owner: str, lease: float) -> list[OutboxRow]:
        """As :meth:`claim`, by row id (rows gone since are left out)."""
        out: list[OutboxRow] = []
        stamp, until = now(), stamp_in(lease)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            out += [
                OutboxRow(*r)
                for r in self.db.execute(
                    "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id"
                    f" FROM outbox WHERE id IN {_in(chunk)} AND (claimed_until IS NULL"
                    f" OR claimed_until < ? OR claimed_by = ?){self.db.claim_lock})"
                    f" RETURNING {_OUTBOX_COLUMNS}",
                    [owner, until, *chunk, stamp, owner],
                ).fetchall()
            ]
        return sorted(out, key=lambda r: r.id)

    def due(
        self, idps: Sequence[str], owner: str, lease: float, limit: int, eager: Sequence[str] = ()
    ) -> list[OutboxRow]:
        """Claim up to ``limit`` rows of ``idps`` that are due: pending rows no one is
        draining, and failed rows whose ``next_attempt_at`` has come. Rows of IdPs
        in ``eager`` are due whatever their schedule (a manual retry)."""
        stamp = now()
        rows = self.db.execute(
            f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id FROM"
            f" outbox WHERE idp IN {_in(idps)} AND status != 'held'"
            f" AND (claimed_until IS NULL OR claimed_until < ?)"
            f" AND (next_attempt_at IS NULL OR next_attempt_at <= ? OR idp IN {_in(eager)})"
            f" ORDER BY id LIMIT ?{self.db.claim_lock}) RETURNING {_OUTBOX_COLUMNS}",
            [owner, stamp_in(lease), *idps, stamp, stamp, *eager, limit],
        ).fetchall()
        return sorted((OutboxRow(*r) for r in rows), key=lambda r: r.id)

    def due_ids(self, idps: Sequence[str], eager: bool = False) -> list[int]:
        """Ids of the rows of ``idps`` that are due now (every row, if ``eager``), in
        order: a snapshot that a one-pass drain works through."""
        stamp = now()
        schedule = "" if eager else " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
        rows = self.db.execute(
            f"SELECT id FROM outbox WHERE idp IN {_in(idps)} AND status != 'held'{schedule}"
            " ORDER BY id",
            [*idps, *([] if eager else [stamp])],
        ).fetchall()
        return [int(r[0]) for r in rows]

    def holders(self) -> list[str]:
        """Drainers that hold a lease that has not run out."""
        rows = self.db.execute(
            "SELECT DISTINCT claimed_by FROM outbox WHERE claimed_until >= ?", [now()]
        ).fetchall()
        return [r[0] for r in rows if r[0]]

    def renew(self, owners: Sequence[str], lease: float) -> None:
        """Extend every lease ``owners`` hold (a long drain calls this as it goes)."""
        self.db.execute(
            f"UPDATE outbox SET claimed_until = ? WHERE claimed_by IN {_in(owners)}",
            [stamp_in(lease), *owners],
        )

    def release(self, owner: str) -> list[int]:
        """Give back every lease ``owner`` still holds (rows it did not finish)."""
        rows = self.db.execute(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?"
            " RETURNING id",
            [owner],
        ).fetchall()
        return [int(r[0]) for r in rows]

    def release_prefix(self, prefix: str, keep: Collection[str] = ()) -> list[int]:
        """Give back every lease held under a name that starts with ``prefix``, but
        those under ``keep``'s names."""
        kept = list(keep)
        rows = self.db.execute(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
            " WHERE substr(claimed_by, 1, ?) = ?"
            + (f" AND claimed_by NOT IN {_in(kept)}" if kept else "")
            + " RETURNING id",
            [len(prefix), prefix, *kept],
        ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def release_rows(self, ids: Sequence[int], owners: Sequence[str]) -> list[int]:
        """Give back the leases on rows ``ids`` that are still under one of ``owners``
        (other rows drained under the same names stay held)."""
        released: list[int] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            released += [
                int(r[0])
                for r in self.db.execute(
                    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
                    f" WHERE claimed_by IN {_in(owners)} AND id IN {_in(chunk)} RETURNING id",
                    [*owners, *chunk],
                ).fetchall()
            ]
        return released

    def next_due(self, idps: Sequence[str]) -> str | None:
        """When the earliest row of ``idps`` that is waiting on its schedule comes due
        (a held row is not: it waits for its release)."""
        row = self.db.execute(
            f"SELECT min(coalesce(next_attempt_at, claimed_until, '')) FROM outbox"
            f" WHERE idp IN {_in(idps)} AND status != 'held'",
            list(idps),
        ).fetchone()
        return row[0] if row and row[0] is not None else None

    # -- outcomes
    def done(self, row: OutboxRow) -> None:
        """The reconciliation succeeded: remove the row, unless it was re-enqueued
        (a newer change) since it was read; then it stays, due now."""
        self.done_many([row])

    def done_many(self, rows: Sequence[OutboxRow]) -> None:
        """:meth:`done` for several rows, in two statements."""
        self.db.executemany(
            "DELETE FROM outbox WHERE id = ? AND version = ?",
            [(r.id, r.version) for r in rows],
        )
        roles = [r.id for r in rows if r.kind == "role"]  # only theirs name members
        if roles:
            self.db.executemany(
                "DELETE FROM outbox_members WHERE outbox_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM outbox WHERE id = ?)",
                [(i, i) for i in roles],
            )
        self.db.executemany(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL, failures = 0 WHERE id = ?",
            [(r.id,) for r in rows],
        )

    def note_passwords(self, unsent: Sequence[int], sent: Sequence[int] = ()) -> None:
        """Mark rows ``unsent``, whose pushes could not send the password their change
        set, and unmark rows ``sent``, whose pushes sent one (see
        :attr:`OutboxRow.password_unsent`)."""
        marks = [(1, i) for i in unsent] + [(0, i) for i in sent]
        self.db.executemany("UPDATE outbox SET password_unsent = ? WHERE id = ?", marks)

    def failed(
        self, row: OutboxRow, error: str, status: int | None, attempts: int, retry_in: float
    ) -> None:
        """The reconciliation failed: keep the row with its error, due again in
        ``retry_in`` seconds (unless re-enqueued meanwhile), and release it. Its
        allowance goes (a newer change's too, if re-enqueued meanwhile: the row carries
        the failed change with it, see :meth:`enqueue_many`): it was given for the
        change as it was, and the directory may have moved by the retry, which the
        deletion guard judges afresh (held over it, for `idprov outbox release`); the
        error says so. Judged afresh, the retry of a change that lost its allowance is
        judged whole (:data:`UNJUDGED`: a later command's push meeting one of its rows
        takes them all; judged with that command's change alone, it went out a user at
        a time, each under the guard's minimum). A row that had none was judged as it
        is: its retry does not take the IdP's others (nor ever will). A role's retry
        compares every member (see :attr:`OutboxRow.members_delta`)."""
        if row.allowed is not None:
            error += (
                f" (its --allow-deletes {row.allowed} does not go with the retry: over the"
                " deletion guard it is held, for `idprov outbox release --allow-deletes N`)"
            )
        self.db.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + ?, last_error = ?,"
            " last_status = ?, updated_at = ?, failures = failures + 1,"
            " next_attempt_at = CASE WHEN version = ? THEN ? ELSE NULL END,"
            f" unjudged = CASE WHEN allowed IS NOT NULL THEN {UNJUDGED} ELSE unjudged END,"
            " allowed = NULL, members_delta = 0,"  # the retry compares every member
            " claimed_by = NULL, claimed_until = NULL WHERE id = ?",
            [attempts, error, status, now(), row.version, stamp_in(retry_in), row.id],
        )

    def hold(self, rows: Sequence[OutboxRow], why: str) -> None:
        """Keep ``rows`` from being pushed (status ``held``, ``why`` as their error)
        until :meth:`release_held`: the deletion guard stopped them. Their allowance
        goes: the release gives its own; and their next try (a failed row's): there is
        none until then. Their change is judged (:attr:`OutboxRow.unjudged`): held
        whole, it goes only by a release, which judges it again."""
        self.db.executemany(
            "UPDATE outbox SET status = 'held', last_error = ?, updated_at = ?,"
            " allowed = NULL, unjudged = 0, members_delta = 0, next_attempt_at = NULL,"
            " claimed_by = NULL, claimed_until = NULL WHERE id = ?",
            [(why, now(), r.id) for r in rows],
        )

    def release_held(
        self,
        idps: Sequence[str],
        because: str | None = None,
        allowed: int | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Make the held rows of ``idps`` pending again (only those held for a reason
        that says ``because``, when given; of rows ``ids``, when given), with the
        releasing command's allowance ``allowed``; returns their ids. Their change is
        the releasing command's, which judges it (:data:`OWN_PUSH`: cut before its
        push, it is judged whole by whoever meets it)."""
        where, params = f"status = 'held' AND idp IN {_in(idps)}", list(idps)
        if because is not None:
            where += " AND last_error LIKE ?"
            params.append(f"%{because}%")
        released: list[int] = []
        chunks = [None] if ids is None else [ids[i : i + 500] for i in range(0, len(ids), 500)]
        for chunk in chunks:
            only = "" if chunk is None else f" AND id IN {_in(chunk)}"
            released += [
                int(r[0])
                for r in self.db.execute(
                    "UPDATE outbox SET status = 'pending', updated_at = ?, allowed = ?,"
                    f" unjudged = {OWN_PUSH} WHERE {where}{only} RETURNING id",
                    [now(), allowed, *params, *(chunk or [])],
                ).fetchall()
            ]
        return sorted(released)

    def allow(self, ids: Sequence[int], allowed: int | None) -> None:
        """Give rows ``ids`` the allowance of the change that enqueued them (a sync's
        ``--allow-deletes``). Call in that change's transaction."""
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.db.execute(
                f"UPDATE outbox SET allowed = ? WHERE id IN {_in(chunk)}", [allowed, *chunk]
            )

    def discard(self, idp: str, local_ids: Sequence[str] | None = None) -> list[OutboxRow]:
        """Drop rows of ``idp`` (of those entities only, when given); returns them."""
        rows = self.rows(idps=[idp], local_ids=local_ids)
        ids = [r.id for r in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.db.execute(f"DELETE FROM outbox WHERE id IN {_in(chunk)}", chunk)
        self._drop_members(ids)
        return rows

    def count(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}

    def depth(self) -> dict[tuple[str, str], tuple[int, str]]:
        """(idp, status) -> (rows, when the oldest of them was enqueued)."""
        rows = self.db.execute(
            "SELECT idp, status, count(*), min(enqueued_at) FROM outbox GROUP BY idp, status"
        ).fetchall()
        return {(r[0], r[1]): (int(r[2]), str(r[3])) for r in rows}

    def idps(self) -> list[str]:
        """Every IdP that has rows in the outbox."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT idp FROM outbox ORDER BY 1")]

    # -- IdP health
    def health(self) -> dict[str, IdpHealth]:
        rows = self.db.execute(
            "SELECT idp, failing_since, last_success_at, last_failure_at, last_error"
            " FROM idp_health"
        ).fetchall()
        return {r[0]: IdpHealth(*r) for r in rows}

    def scopes(self) -> dict[str, str | None]:
        """IdP -> its scope as recorded (:func:`idprov.provisioning.guard.scope_key`)."""
        rows = self.db.execute("SELECT idp, scope FROM idp_health").fetchall()
        return {r[0]: r[1] for r in rows}

    def note_scope(self, idp: str, scope: str) -> None:
        """Record ``idp``'s scope (by a sync that judged it, or at first sight)."""
        self.db.execute(
            "INSERT INTO idp_health (idp, scope) VALUES (?, ?) ON CONFLICT (idp)"
            " DO UPDATE SET scope = excluded.scope",
            [idp, scope],
        )

    def note_health(self, idp: str, drained: DrainHealth) -> None:
        """Record a drain's outcome at ``idp``: a success ends the failing streak (a
        failure after it starts a new one), and a failing streak keeps its start, and
        its cause over a failure that only follows from it."""
        self.db.execute(
            "INSERT INTO idp_health (idp, failing_since, last_success_at, last_failure_at,"
            " last_error) VALUES (?, ?, ?, ?, ?) ON CONFLICT (idp) DO UPDATE SET"
            " failing_since = CASE WHEN excluded.last_success_at IS NOT NULL"
            " THEN excluded.failing_since"
            " ELSE coalesce(idp_health.failing_since, excluded.failing_since) END,"
            " last_success_at = coalesce(excluded.last_success_at, idp_health.last_success_at),"
            " last_failure_at = coalesce(excluded.last_failure_at, idp_health.last_failure_at),"
            " last_error = CASE WHEN excluded.last_failure_at IS NULL THEN idp_health.last_error"
            " WHEN ? AND excluded.last_success_at IS NULL AND idp_health.failing_since IS NOT NULL"
            " AND idp_health.last_error IS NOT NULL THEN idp_health.last_error"
            " ELSE excluded.last_error END",
            [
                idp,
                drained.failing_since,
                drained.succeeded_at,
                drained.failed_at,
                drained.error,
                drained.derived,
            ],
        )
