"""The ledger: idprov's memory of what it provisioned where.

It holds, per (identity provider, user or role), the remote id, the attributes last
sent and their hash, whether idprov created the remote object, and its state
(``creating`` while a create is in flight, ``active``, ``disabled``, ``lost``: the
target lost the account, and idprov has not made it again yet, see
:meth:`Ledger.mark_lost`);
``ledger_members`` holds the group memberships idprov made remotely. The ledger
holds real remote ids only: a create that failed leaves no id behind.

``ledger_inputs`` holds, for a user whose entry is active and provisioned, the digest of
what its last push was rendered from (:mod:`idprov.provisioning.inputs`), so that a sync
skips users whose inputs did not move. It is a table of its own, a few dozen bytes a
row, because a sync reads it for every user: the ledger's rows carry what was sent.
Every write of a user's entry here keeps it true (set with an active push, dropped
with any other state, a forget or an invalidation): a sync takes a user whose inputs
match it to belong in its groups there, as it did when pushed (in scope, enabled).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from idprov.connectors.base import TargetError
from idprov.db import now
from idprov.statedb import StateDB


def create_tables(db: StateDB) -> None:
    db.execute(
        "CREATE TABLE ledger ("
        " idp TEXT NOT NULL, kind TEXT NOT NULL, local_id TEXT NOT NULL,"
        " domain TEXT NOT NULL, label TEXT NOT NULL, remote_id TEXT, state TEXT NOT NULL,"
        " hash TEXT, sent TEXT, created_by_idprov INTEGER NOT NULL DEFAULT 1,"
        " updated_at TEXT NOT NULL, PRIMARY KEY (idp, kind, local_id)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE ledger_members ("
        " idp TEXT NOT NULL, role_id TEXT NOT NULL, user_id TEXT NOT NULL,"
        " PRIMARY KEY (idp, role_id, user_id)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX ledger_members_user ON ledger_members (idp, user_id)")


def inputs_table(db: StateDB) -> None:
    """Per (IdP, user with an active push): the digest of that push's inputs. And the
    index that counts entries per IdP and state without reading what was sent (a sync
    counts them every run, as the deletion guard does)."""
    db.execute(
        "CREATE TABLE ledger_inputs (idp TEXT NOT NULL, local_id TEXT NOT NULL,"
        " inputs TEXT NOT NULL, PRIMARY KEY (idp, local_id))"
        + (" WITHOUT ROWID" if db.dialect == "sqlite" else "")
    )
    db.execute("CREATE INDEX ledger_state ON ledger (idp, kind, state, remote_id)")


@dataclass
class LedgerEntry:
    """What idprov knows of one provisioned entity at one IdP."""

    idp: str
    kind: str
    local_id: str
    domain: str
    label: str
    remote_id: str | None
    state: str
    hash: str | None
    sent: dict[str, Any] | None
    created_by_idprov: bool
    updated_at: str
    inputs: str | None = None
    """Users: the digest of the user and mapping that ``hash`` was rendered from."""
    lost_at: str | None = None
    """Users whose state is ``lost``: when idprov found the account gone at the target."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RefusedCreate:
    """A create that found its name taken at the target by an object that is not
    provably idprov's: a task's outcome, turned into the row's error on the engine's
    thread by :meth:`Ledger.refused`. ``certain``: no attempt of this create can have
    made anything (the target refused idprov's first request), so the ``creating``
    mark goes and the ledger claims nothing; else an earlier attempt's outcome is not
    known, and the mark stays so that what comes next looks first. ``taken``: the
    message is followed by the ways to settle a name taken at the target, then by
    ``detail`` (the target's own words)."""

    message: str
    idp: str
    status: int | None = None
    certain: bool = False
    taken: bool = True
    detail: str | None = None
    remote_id: str | None = None
    """The object that holds the name there, when the lookup found it."""
    kind: str = "user"
    name: str = ""
    fix: str | None = None
    """How to settle it, when not the usual ways (see :meth:`error`)."""
    holder: str | None = None
    """The local id of another user the object is idprov's for (the ledger maps it, or
    an earlier create of this drain made it): it is never adopted for this one."""

    @classmethod
    def name_taken(
        cls,
        idp: str,
        kind: str,
        name: str,
        conflict: TargetError | None,
        remote_id: str | None = None,
        holder: str | None = None,
    ) -> RefusedCreate:
        """A ``kind`` (user, group) named ``name`` is at ``idp`` (``remote_id``) and not
        provably idprov's: after ``conflict`` (the target's answer to idprov's first
        create) it was there before; else an earlier create of idprov's may have made
        it. ``holder``: the local id of another entity it is idprov's for."""
        if holder is not None:
            return cls(
                f"{idp} refused to create {kind} {name!r}: one of that name is there",
                idp,
                conflict.status if conflict is not None else None,
                certain=conflict is not None,
                detail=conflict.message if conflict is not None else None,
                remote_id=remote_id,
                kind=kind,
                name=name,
                holder=holder,
            )
        if conflict is not None:
            return cls(
                f"{idp} refused to create {kind} {name!r}: one of that name is there, "
                "and idprov did not create it",
                idp,
                conflict.status,
                certain=True,
                detail=conflict.message,
                remote_id=remote_id,
                kind=kind,
                name=name,
            )
        return cls(
            f"a {kind} named {name!r} exists at {idp}; an earlier create of idprov's, "
            "whose outcome idprov never learnt (its reply was lost, or idprov stopped), may "
            "have made it, but nothing at the target proves it is idprov's",
            idp,
            remote_id=remote_id,
            kind=kind,
            name=name,
        )

    def made_for_another(self) -> RefusedCreate:
        """The same refusal when the object holding the name is one idprov made for
        another local user or role (one deleted here since, whose account the target
        kept: Salesforce deactivates users, never deletes them): it is not given to a
        newcomer of the same name."""
        return dataclasses.replace(
            self,
            message=f"{self.idp} has a {self.kind} named {self.name!r} that idprov made for an "
            f"earlier {self.kind} of that name, since deleted or renamed here; it is not "
            f"given to a new {self.kind} of the same name",
            fix=f"rename that {self.kind} at {self.idp} (Salesforce keeps deactivated users: "
            "change its Username there), or set on_conflict: adopt on identity provider "
            f"{self.idp} to give it to this one, then `idprov outbox retry`",
        )

    def held_by(self, holder: LedgerEntry, label: str) -> RefusedCreate:
        """The same refusal when the object holding the name is the account of another
        local user that exists here (``holder``'s): two local users map to one name at
        the target. One account is one user's: adopting it would merge the two people
        (the second's data over the first's account, and deleting either deletes it),
        so it is never offered."""
        if self.kind != "user":
            return self._group_held_by(holder, label)
        owner, name = qualified(holder), qualified_label(label, self.kind)
        if owner.lower() == name.lower():  # two entries of one name: a directory's uid twice
            message = (
                f"belongs to another user named {owner} (id {holder.local_id}): two users "
                "of one userstore have that name (two directory entries with one uid?)"
            )
            fix = f"remove or rename one of the two users named {owner}"
        elif owner.split("/", 1)[0].lower() == name.split("/", 1)[0].lower():
            message = f"belongs to {owner}, not to {name}: both map to that name"
            fix = (
                f"change the username template of identity provider {self.idp} so that "
                f"it maps them to two names, or rename one of {owner} and {name}"
            )
        else:
            message = (
                f"belongs to {owner}, not to {name}: two users of different domains map "
                f"to one target {self._name_word}"
            )
            fix = (
                f"set the username template of identity provider {self.idp} to keep the "
                f"domain (e.g. username: '{{UD}}/{{UN}}'), or rename one of {owner} and "
                f"{name} (`idprov user rename`)"
            )
        return dataclasses.replace(
            self,
            message=f"{self.idp}'s account {self.name!r} {message}",
            fix=f"{fix}, then `idprov outbox retry`",
        )

    def _group_held_by(self, holder: LedgerEntry, label: str) -> RefusedCreate:
        """:meth:`held_by` for a group: another role that exists here holds it (the
        target makes one group name of two role names: Google's group e-mail of
        ``PARTNERS/staff`` and of ``partners-staff``). Adopting it would give each
        role's members the other's access, and deleting either would delete it."""
        owner = holder.label
        fix = (
            f"rename one of the roles {owner} and {label} (`idprov role rename`) so that "
            f"they make two groups at {self.idp}"
        )
        return dataclasses.replace(
            self,
            message=f"{self.idp}'s group {self.name!r} belongs to role {owner}, not to role "
            f"{label}: both map to that group",
            fix=f"{fix}, then `idprov outbox retry`",
        )

    def released(self, holder: LedgerEntry) -> RefusedCreate:
        """The refusal of an adoption (``on_conflict: adopt``) of an account idprov made
        for ``holder``, a user deleted here since: its entry is let go, and the next try
        gives the account to this one."""
        return dataclasses.replace(
            self,
            message=f"{self.idp} has a {self.kind} named {self.name!r} that idprov made for "
            f"{qualified(holder)}, since deleted here; on_conflict: adopt gives it to this "
            f"{self.kind}: idprov let go of the deleted {self.kind}'s record of it",
            fix="run `idprov outbox retry` (or the next sync) to take it over",
        )

    @property
    def _name_word(self) -> str:
        return "userName" if self.kind == "user" else "group name"

    def error(self, label: str, stop: str | None = None) -> TargetError:
        """The row's error: what happened, how to settle it, what the target said.
        ``stop``: how to stop pushing it there instead (see
        :mod:`~idprov.provisioning.discard`); discarding the row alone does not."""
        fix = self.fix
        if self.taken and fix is None:
            fix = (
                f"set on_conflict: adopt on identity provider {self.idp} to take it over, or "
                f"rename or remove it at {self.idp}, then `idprov outbox retry`; or "
                + (
                    stop
                    or f"stop pushing it: `idprov outbox discard --idp {self.idp} --user "
                    f"{shlex.quote(label)}` alone: the next change or sync brings it back"
                )
            )
        message = self.message + (f". {fix[0].upper()}{fix[1:]}" if fix else "")
        message += f" ({self.detail})" if self.detail else ""
        return TargetError(message, status=self.status, hint=fix)


class Ledger:
    """Remote ids, last-sent attributes and memberships, per IdP."""

    def __init__(self, db: StateDB):
        self.db = db

    _SELECT = (
        "SELECT l.idp, l.kind, l.local_id, l.domain, l.label, l.remote_id, l.state, l.hash,"
        " l.sent, l.created_by_idprov, l.updated_at, i.inputs, l.lost_at FROM ledger l"
        " LEFT JOIN ledger_inputs i ON l.kind = 'user' AND i.idp = l.idp"
        " AND i.local_id = l.local_id"
    )

    def get(self, idp: str, kind: str, local_id: str) -> LedgerEntry | None:
        row = self.db.execute(
            f"{self._SELECT} WHERE l.idp = ? AND l.kind = ? AND l.local_id = ?",
            [idp, kind, local_id],
        ).fetchone()
        return None if row is None else self._entry(row)

    def get_many(self, idp: str, kind: str, local_ids: Sequence[str]) -> list[LedgerEntry]:
        """The entries that exist among ``local_ids`` (in chunks of 500)."""
        out = []
        for start in range(0, len(local_ids), 500):
            chunk = list(local_ids[start : start + 500])
            rows = self.db.execute(
                f"{self._SELECT} WHERE l.idp = ? AND l.kind = ? AND l.local_id"
                f" IN ({','.join('?' * len(chunk))})",
                [idp, kind, *chunk],
            ).fetchall()
            out += [self._entry(r) for r in rows]
        return out

    @staticmethod
    def _entry(row: Any) -> LedgerEntry:
        sent = json.loads(row[8]) if row[8] else None
        return LedgerEntry(
            idp=row[0],
            kind=row[1],
            local_id=row[2],
            domain=row[3],
            label=row[4],
            remote_id=row[5],
            state=row[6],
            hash=row[7],
            sent=sent,
            created_by_idprov=bool(row[9]),
            updated_at=row[10],
            inputs=row[11],
            lost_at=row[12],
        )

    def for_idp(self, idp: str, kind: str) -> dict[str, LedgerEntry]:
        """Every entry of one kind at one IdP, by local id (one query)."""
        rows = self.db.execute(
            f"{self._SELECT} WHERE l.idp = ? AND l.kind = ?", [idp, kind]
        ).fetchall()
        return {r[2]: self._entry(r) for r in rows}

    def inputs_of(self, idps: Sequence[str], user_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """IdP -> user id -> the inputs digest of its active push there, for the users
        among ``user_ids`` that have one (in chunks of 500)."""
        out: dict[str, dict[str, str]] = {}
        marks = ",".join("?" * len(idps))
        for start in range(0, len(user_ids), 500):
            chunk = user_ids[start : start + 500]
            for idp, local_id, digest in self.db.execute(
                f"SELECT idp, local_id, inputs FROM ledger_inputs WHERE idp IN ({marks})"
                f" AND local_id IN ({','.join('?' * len(chunk))})",
                [*idps, *chunk],
            ).fetchall():
                out.setdefault(idp, {})[local_id] = digest
        return out

    def user_counts(self, idp: str) -> tuple[int, int]:
        """(user entries in any state, users active and provisioned) at ``idp``."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(CASE WHEN state = 'active' AND remote_id IS NOT NULL"
            " THEN 1 ELSE 0 END), 0) FROM ledger WHERE idp = ? AND kind = 'user'",
            [idp],
        ).fetchone()
        return int(row[0]), int(row[1])

    def user_ids(self, idp: str) -> Iterator[str]:
        """The local ids of every user entry at ``idp``, as they are read."""
        for row in self.db.execute(
            "SELECT local_id FROM ledger WHERE idp = ? AND kind = 'user'", [idp]
        ):
            yield row[0]

    def note_inputs(self, idp: str, unchanged: Sequence[tuple[str, str, str]]) -> None:
        """Record the inputs digest of users found unchanged by a full decision, from
        (local id, inputs, hash) where ``hash`` is what was compared: an entry pushed
        again, or no longer active, since is left alone."""
        self.db.executemany(
            "INSERT INTO ledger_inputs (idp, local_id, inputs)"
            " SELECT idp, local_id, CAST(? AS TEXT) FROM ledger WHERE idp = ? AND kind = 'user'"
            " AND local_id = ? AND hash = ? AND state = 'active' AND remote_id IS NOT NULL"
            " ON CONFLICT (idp, local_id) DO UPDATE SET inputs = excluded.inputs",
            [(inputs, idp, local_id, digest) for local_id, inputs, digest in unchanged],
        )

    def holds_users(self, idp: str) -> bool:
        """Whether idprov has provisioned any user at ``idp`` (one indexed probe)."""
        return (
            self.db.execute(
                "SELECT 1 FROM ledger WHERE idp = ? AND kind = 'user'"
                " AND remote_id IS NOT NULL LIMIT 1",
                [idp],
            ).fetchone()
            is not None
        )

    def counts(self, idp: str) -> dict[str, int]:
        """What idprov holds at ``idp``, the deletion guard's percentages are of: active
        users (``users``, ``attributes``), groups and memberships."""
        users, groups = self.db.execute(
            "SELECT coalesce(sum(CASE WHEN kind = 'user' AND state = 'active' THEN 1 ELSE 0 END),"
            " 0), coalesce(sum(CASE WHEN kind = 'role' THEN 1 ELSE 0 END), 0) FROM ledger"
            " WHERE idp = ? AND remote_id IS NOT NULL",
            [idp],
        ).fetchone()
        members = self.db.execute(
            "SELECT count(*) FROM ledger_members WHERE idp = ?", [idp]
        ).fetchone()[0]
        return {"users": users, "groups": groups, "memberships": members, "attributes": users}

    def all_members(self, idp: str) -> dict[str, set[str]]:
        """Role id -> the user ids idprov put in its group at ``idp``."""
        out: dict[str, set[str]] = {}
        for role_id, user_id in self.db.execute(
            "SELECT role_id, user_id FROM ledger_members WHERE idp = ?", [idp]
        ).fetchall():
            out.setdefault(role_id, set()).add(user_id)
        return out

    def digest(self, idps: Sequence[str]) -> str:
        """A hash of the ledger's state at ``idps`` (a saved plan is refused if it moved)."""
        import hashlib

        h = hashlib.sha256()
        for idp in sorted(idps):
            for row in self.db.execute(
                "SELECT kind, local_id, remote_id, state, hash FROM ledger WHERE idp = ?"
                " ORDER BY kind, local_id",
                [idp],
            ):
                h.update(repr(row).encode())
            for row in self.db.execute(
                "SELECT role_id, user_id FROM ledger_members WHERE idp = ? ORDER BY 1, 2", [idp]
            ):
                h.update(repr(row).encode())
        return h.hexdigest()

    def remote_ids(self, idp: str, user_ids: Iterable[str]) -> dict[str, str]:
        """Remote ids of provisioned, active users among ``user_ids``."""
        ids = list(user_ids)
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self.db.execute(  # state and remote id are judged here: asked of SQL,
                # its planner took the state index and walked the IdP's every active
                # user for each chunk (26 ms a chunk of 500 at 90,000 users; 2.7 ms so)
                "SELECT local_id, remote_id, state FROM ledger WHERE idp = ? AND kind = 'user'"
                f" AND local_id IN ({','.join('?' * len(chunk))})",
                [idp, *chunk],
            ).fetchall()
            out.update({r[0]: r[1] for r in rows if r[2] == "active" and r[1] is not None})
        return out

    def mark_creating(self, entities: Iterable[tuple[str, str, str, str, str, str | None]]) -> None:
        """Note that creates are about to be sent, for (idp, kind, local_id, domain,
        label, sent JSON) tuples, so that a crash mid-create is recognised on the next
        run, and what was sent can be looked up even if the user is gone by then."""
        stamp = now()
        self.db.executemany(
            "INSERT INTO ledger (idp, kind, local_id, domain, label, sent, state, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 'creating', ?) ON CONFLICT DO NOTHING",
            [(*entity, stamp) for entity in entities],
        )

    def refused(
        self,
        refusal: RefusedCreate,
        kind: str,
        local_id: str,
        label: str,
        stop: str | None = None,
        holder: LedgerEntry | None = None,
        exists: Callable[[LedgerEntry], bool] | None = None,
        adopt: bool = False,
    ) -> TargetError:
        """The error of a create the target refused (``stop``: how to stop pushing it
        there, see :meth:`RefusedCreate.error`); when nothing can have been made
        (``refusal.certain``), the ``creating`` mark goes with it.

        An object the ledger maps to another local entity (``holder``, else the
        ledger's) is that entity's: while it ``exists`` here the refusal names it
        (:meth:`RefusedCreate.held_by`); one deleted here since made it for an earlier
        entity of that name, and with ``adopt`` (``on_conflict: adopt``) its entry is
        let go, so that the next try takes the object over for this one: the ledger
        never maps one remote id to two local entities."""
        if refusal.certain:
            self.unmark_creating([(refusal.idp, kind, local_id)])
        if holder is None and refusal.remote_id is not None:
            holder = self.holder(refusal.idp, kind, refusal.remote_id, local_id)
        if holder is None:
            return refusal.error(label, stop)
        if exists is not None and exists(holder):
            return refusal.held_by(holder, label).error(label, stop)
        if adopt:
            self.forget(holder.idp, holder.kind, holder.local_id)
            return refusal.released(holder).error(label, stop)
        return refusal.made_for_another().error(label, stop)

    def holder(self, idp: str, kind: str, remote_id: str, local_id: str) -> LedgerEntry | None:
        """The entry of another local entity than ``local_id`` that holds ``remote_id``
        at ``idp`` (one indexed probe)."""
        row = self.db.execute(  # the subquery keeps to the remote-id index (ordered by
            # local id, SQLite's planner walked the whole IdP's entries: 1 ms a probe)
            f"{self._SELECT} WHERE l.idp = ? AND l.kind = ? AND l.local_id = (SELECT"
            " min(local_id) FROM ledger WHERE idp = ? AND kind = ? AND remote_id = ?"
            " AND local_id <> ?)",
            [idp, kind, idp, kind, remote_id, local_id],
        ).fetchone()
        return None if row is None else self._entry(row)

    def shared(self, idp: str, kind: str, remote_ids: Sequence[str]) -> set[str]:
        """Those of ``remote_ids`` that two or more entries of ``kind`` at ``idp`` hold
        (a ledger an earlier version's adoption merged; in chunks of 500)."""
        out: set[str] = set()
        for start in range(0, len(remote_ids), 500):
            chunk = list(remote_ids[start : start + 500])
            rows = self.db.execute(
                "SELECT remote_id FROM ledger WHERE idp = ? AND kind = ? AND remote_id IN"
                f" ({','.join('?' * len(chunk))}) GROUP BY remote_id HAVING count(*) > 1",
                [idp, kind, *chunk],
            ).fetchall()
            out.update(r[0] for r in rows)
        return out

    def holders(self, idp: str, kind: str) -> dict[str, str]:
        """Remote id -> the local id whose entry holds it, of every entry of ``kind``
        at ``idp`` with one (one query, on the remote-id index)."""
        rows = self.db.execute(
            "SELECT remote_id, local_id FROM ledger WHERE idp = ? AND kind = ?"
            " AND remote_id IS NOT NULL",
            [idp, kind],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def unmark_creating(self, entities: Sequence[tuple[str, str, str]]) -> None:
        """Drop the ``creating`` marks of (idp, kind, local_id) whose creates provably
        made nothing (the connection was refused, the target said no): the ledger then
        claims nothing there, and the next try creates without looking first."""
        self.db.executemany(
            "DELETE FROM ledger WHERE idp = ? AND kind = ? AND local_id = ?"
            " AND state = 'creating' AND remote_id IS NULL",
            list(entities),
        )

    def mark_accepted(self, idp: str, kind: str, local_id: str) -> None:
        """A create the target acknowledged for later: what appears is idprov's."""
        self.db.execute(
            "UPDATE ledger SET state = 'accepted' WHERE idp = ? AND kind = ? AND local_id = ?"
            " AND state = 'creating'",
            [idp, kind, local_id],
        )

    def record(self, entry: LedgerEntry) -> None:
        self.record_many([entry])

    def record_many(self, entries: Sequence[LedgerEntry]) -> None:
        """Write entries as they are after successful operations (one statement)."""
        stamp = now()
        self.db.executemany(
            "INSERT INTO ledger (idp, kind, local_id, domain, label, remote_id, state, hash,"
            " sent, created_by_idprov, updated_at, lost_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (idp, kind, local_id) DO UPDATE SET domain = excluded.domain,"
            " label = excluded.label, remote_id = excluded.remote_id, state = excluded.state,"
            " hash = excluded.hash, sent = excluded.sent,"
            " created_by_idprov = excluded.created_by_idprov, updated_at = excluded.updated_at,"
            " lost_at = excluded.lost_at",
            [
                (
                    e.idp,
                    e.kind,
                    e.local_id,
                    e.domain,
                    e.label,
                    e.remote_id,
                    e.state,
                    e.hash,
                    json.dumps(e.sent, ensure_ascii=False) if e.sent is not None else None,
                    int(e.created_by_idprov),
                    stamp,
                    e.lost_at if e.state == "lost" else None,
                )
                for e in entries
            ],
        )
        pushed = [e for e in entries if e.kind == "user" and _pushed_from(e)]
        self.db.executemany(
            "INSERT INTO ledger_inputs (idp, local_id, inputs) VALUES (?, ?, ?)"
            " ON CONFLICT (idp, local_id) DO UPDATE SET inputs = excluded.inputs",
            [(e.idp, e.local_id, e.inputs) for e in pushed],
        )
        self._drop_inputs(
            [(e.idp, e.local_id) for e in entries if e.kind == "user" and not _pushed_from(e)]
        )

    def _drop_inputs(self, keys: Sequence[tuple[str, str]]) -> None:
        self.db.executemany("DELETE FROM ledger_inputs WHERE idp = ? AND local_id = ?", keys)

    def invalidate(self, idp: str, kind: str, local_id: str) -> None:
        """Forget what was last sent (the target lost or changed it): the next push
        sends everything again, and re-creates what is gone."""
        self.db.execute(
            "UPDATE ledger SET hash = NULL, sent = NULL WHERE idp = ? AND kind = ?"
            " AND local_id = ?",
            [idp, kind, local_id],
        )
        if kind == "user":
            self._drop_inputs([(idp, local_id)])

    def mark_lost(self, idp: str, lost: Mapping[str, str]) -> None:
        """Record that the target lost the accounts of users ``lost`` (user id -> the
        remote id found gone: an entry whose id has moved on since, made again by
        another push, is left alone). A lost entry keeps that id, so that the account,
        made again, takes its place in the groups that kept it; until then no group
        push names it (:meth:`remote_ids` leaves it out, :meth:`lost_among` finds it),
        its next push makes it again, and a deprovision of it has nothing to send. Any
        successful push of the user records its state anew, clearing this."""
        stamp = now()
        self.db.executemany(
            "UPDATE ledger SET state = 'lost', hash = NULL, updated_at = ?,"
            " lost_at = coalesce(lost_at, ?) WHERE idp = ? AND kind = 'user' AND local_id = ?"
            " AND remote_id = ?",
            [(stamp, stamp, idp, user_id, remote_id) for user_id, remote_id in lost.items()],
        )
        self._drop_inputs([(idp, user_id) for user_id in lost])

    def lost_among(self, idp: str, user_ids: Iterable[str]) -> set[str]:
        """Those of ``user_ids`` whose accounts the ledger says are lost at ``idp``."""
        sql = "SELECT local_id FROM ledger WHERE idp = ? AND kind = 'user' AND state = 'lost'"
        return {r[0] for r in self.db.select_among(f"{sql} AND local_id", [idp], list(user_ids))}

    def lost_leaving(self, idp: str, current: Iterable[str], wanted: Iterable[str]) -> set[str]:
        """Of a group's members ``current`` at ``idp``, those whose accounts are lost
        there and that the group no longer wants (``wanted``): the engine drops their
        memberships with nothing sent (their ids are named in no group push), so the
        deletion guard and sync plans count no membership removed for them."""
        return self.lost_among(idp, set(current) - set(wanted))

    def relabel(self, idp: str, kind: str, local_id: str, label: str) -> None:
        """Set the name the ledger says the target holds (a group renamed there)."""
        self.db.execute(
            "UPDATE ledger SET label = ? WHERE idp = ? AND kind = ? AND local_id = ?",
            [label, idp, kind, local_id],
        )

    def forget(self, idp: str, kind: str, local_id: str) -> None:
        self.db.execute(
            "DELETE FROM ledger WHERE idp = ? AND kind = ? AND local_id = ?", [idp, kind, local_id]
        )
        if kind == "user":
            self._drop_inputs([(idp, local_id)])
        column = "user_id" if kind == "user" else "role_id"
        self.db.execute(
            f"DELETE FROM ledger_members WHERE idp = ? AND {column} = ?", [idp, local_id]
        )

    def members(self, idp: str, role_id: str) -> set[str]:
        rows = self.db.execute(
            "SELECT user_id FROM ledger_members WHERE idp = ? AND role_id = ?", [idp, role_id]
        ).fetchall()
        return {r[0] for r in rows}

    def role_ids(self, idp: str) -> list[str]:
        """The local ids of every role with a ledger entry at ``idp``."""
        rows = self.db.execute(
            "SELECT local_id FROM ledger WHERE idp = ? AND kind = 'role' ORDER BY local_id", [idp]
        ).fetchall()
        return [str(r[0]) for r in rows]

    def members_among(self, idp: str, role_id: str, user_ids: Iterable[str]) -> set[str]:
        """Those of ``user_ids`` that idprov put in the role's group (see :meth:`members`)."""
        sql = "SELECT user_id FROM ledger_members WHERE idp = ? AND role_id = ? AND user_id"
        return {r[0] for r in self.db.select_among(sql, [idp, role_id], list(user_ids))}

    def idps_of(
        self, idps: Sequence[str], kind: str, local_ids: Sequence[str]
    ) -> dict[str, set[str]]:
        """Local id -> those of ``idps`` with an entry of it (any state), for the ones
        of ``local_ids`` that have one (in chunks of 500; by the primary key)."""
        out: dict[str, set[str]] = {}
        for start in range(0, len(local_ids), 500):
            chunk = list(local_ids[start : start + 500])
            for local_id, idp in self.db.execute(
                f"SELECT local_id, idp FROM ledger WHERE idp IN ({','.join('?' * len(idps))})"
                f" AND kind = ? AND local_id IN ({','.join('?' * len(chunk))})",
                [*idps, kind, *chunk],
            ).fetchall():
                out.setdefault(local_id, set()).add(idp)
        return out

    def groups_holding(self, idps: Sequence[str], user_ids: Sequence[str]) -> set[str]:
        """The role ids of the groups idprov put any of ``user_ids`` in at ``idps``."""
        found: set[str] = set()
        for start in range(0, len(user_ids), 500):
            chunk = list(user_ids[start : start + 500])
            rows = self.db.execute(
                "SELECT DISTINCT role_id FROM ledger_members WHERE idp IN"
                f" ({','.join('?' * len(idps))}) AND user_id IN ({','.join('?' * len(chunk))})",
                [*idps, *chunk],
            ).fetchall()
            found.update(r[0] for r in rows)
        return found

    def members_elsewhere(self, idp: str, role_id: str, remote_id: str) -> set[str]:
        """The users that roles other than ``role_id`` have idprov's memberships of in
        the group ``remote_id`` at ``idp`` (two roles given one group: a Salesforce
        permission set two roles map to, or a ledger an earlier version's adoption
        merged): a role that no longer holds one of them never takes it out of the
        group, the other gives it there (one query, on the remote-id index)."""
        rows = self.db.execute(
            "SELECT DISTINCT m.user_id FROM ledger l JOIN ledger_members m ON m.idp = l.idp"
            " AND m.role_id = l.local_id WHERE l.idp = ? AND l.kind = 'role'"
            " AND l.remote_id = ? AND l.local_id <> ?",
            [idp, remote_id, role_id],
        ).fetchall()
        return {r[0] for r in rows}

    def groups_with_ids(self, idp: str, user_id: str) -> list[tuple[str, str]]:
        """(role id, group remote id) of the groups idprov put this user in (one query)."""
        rows = self.db.execute(
            "SELECT m.role_id, l.remote_id FROM ledger_members m JOIN ledger l"
            " ON l.idp = m.idp AND l.kind = 'role' AND l.local_id = m.role_id"
            " WHERE m.idp = ? AND m.user_id = ? AND l.remote_id IS NOT NULL"
            " ORDER BY m.role_id",
            [idp, user_id],
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def set_members(
        self, idp: str, role_id: str, added: Iterable[str], removed: Iterable[str]
    ) -> None:
        self.db.executemany(
            "INSERT INTO ledger_members (idp, role_id, user_id) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(idp, role_id, u) for u in added],
        )
        self.db.executemany(
            "DELETE FROM ledger_members WHERE idp = ? AND role_id = ? AND user_id = ?",
            [(idp, role_id, u) for u in removed],
        )


def remote_ids_index(db: StateDB) -> None:
    """The index that finds the entry holding a remote id (:meth:`Ledger.holder`): an
    adoption, and every create recorded, asks whether another local entity holds it.
    Not unique: a ledger written before one remote id was kept to one local entity may
    map two to one (see :meth:`Ledger.refused`), and a migration cannot tell which of
    them the account is; the engine refuses a second one."""
    db.execute("CREATE INDEX ledger_remote ON ledger (idp, kind, remote_id)")


def qualified(entry: LedgerEntry) -> str:
    """``DOMAIN/name`` of a ledger entry's local user (PRIMARY's too)."""
    return entry.label if "/" in entry.label else f"{entry.domain}/{entry.label}"


def qualified_label(label: str, kind: str) -> str:
    """``DOMAIN/name`` of a row's label: a PRIMARY user's label is its bare name."""
    return label if "/" in label or kind != "user" else f"PRIMARY/{label}"


def _pushed_from(entry: LedgerEntry) -> bool:
    """Whether ``entry`` is an active push whose inputs are known."""
    return entry.state == "active" and entry.remote_id is not None and entry.inputs is not None
