"""The write phase of a CSV import, and its journal (see
:mod:`idprov.inbound.csv_import`).

The staged rows are written in line order, in batches; each batch is one unit of
work with its audit entry, outbox rows and the journal's line, then pushed (unless
``--no-push``). A store outside idprov's database (a directory, which cannot roll
back; an SQLite file of its own) commits apart, so its batch is journalled first: a
re-run after a kill finishes exactly those lines.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.inbound.csv_staging import ImportState, Staging
from idprov.model import QualifiedName
from idprov.userstores.base import ImportedUser, JsonClaims

if TYPE_CHECKING:
    from idprov.provisioning.guard import GuardWindow
    from idprov.provisioning.outbox import OutboxRow
    from idprov.provisioning.unit_of_work import UnitOfWork

ROWS_AT_ONCE = 500
"""Outbox rows looked up per query (the journal may note many)."""


class BatchWriter(ImportState):
    """The writing half of :class:`~idprov.inbound.csv_import.CsvImport`."""

    _written: list[int]
    """Rows written so far, and to write (the progress display's)."""

    # -- journal
    def _resume_point(self) -> None:
        if self.options.dry_run:
            return
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        self.sha256 = digest.hexdigest()
        run = self.service.state.imports.unfinished(self.sha256, self.options.fingerprint())
        if run is not None:
            self.import_id, self.done_through = run.id, run.lines_done
            self.killed_batch = run.batch
            self.judged_before = run.judged
            self.own_rows = run.noted_rows()
            self.rows_unnoted = not run.notes_rows
            self._check_no_push()
        else:
            self._note_changed_file()

    def _check_no_push(self) -> None:
        """Refuse a ``--no-push`` re-run of a cut import whose push the deletion guard
        judged a destructive part of: the worker would judge the rest alone, without
        what the cut run let through (10 of 30 users deleted in two halves, each under
        the guard, where one run holds 5), and forget what it held. Only a pushing
        re-run judges the rest with it. Nothing is changed."""
        from idprov.errors import UsageError
        from idprov.provisioning.guard import Allowed

        saved = self.judged_before or {}
        if self.options.push or "judged" not in saved:
            return
        before = Allowed.restored(saved["judged"])
        went = sorted(idp for idp, e in before.let.items() if e.any)
        held = sorted({*before.tripped, *(i for i, e in before.held.items() if e.any)})
        if not went and not held:
            return  # nothing destructive went or was held: the worker judges it whole
        said = []
        if went:
            said.append(f"let part of its change through at {', '.join(went)}")
        if held:
            said.append(f"held part of it at {', '.join(held)}")
        file = Path(self.source.name).name
        raise UsageError(
            f"{file}: the cut import of this file pushed, and the "
            f"deletion guard {' and '.join(said)}; a re-run with --no-push would leave the "
            "rest to be judged without that, so nothing was imported",
            hint="run the same import again without --no-push (with the same --allow-deletes,"
            " if any): it judges the rest of the file with what the cut run let through and"
            " held, as one change",
        )

    def _note_changed_file(self) -> None:
        """Say so when an unfinished import of the same file and options exists whose
        content was another (the nightly export rewrote the file between a cut run and
        the re-run its hint asked for): this run is a new import, not its resumption,
        and with --mode create every user the cut run made is an error."""
        if not isinstance(self.given, Path):
            return  # standard input: each run's content is its own
        cut = self.service.state.imports.of_other_content(
            self.source.name, self.options.fingerprint(), self.sha256
        )
        if cut is None:
            return
        started, lines_done = cut
        mode = (
            "; the users it wrote are errors with --mode create: import the file with --mode upsert"
            if self.options.mode == "create"
            else ""
        )
        self.report.notes.append(
            f"the cut import of {self.source.name} started {started} (written through line "
            f"{lines_done:,}) was not resumed: the file changed since, so this is a new "
            f"import{mode}"
        )

    # -- the deletion guard: the import is one change, across its batches and re-runs
    def _resume_judgement(self, window: GuardWindow) -> None:
        """A re-run after a kill starts from what the guard judged of the cut run: what
        it let through counts with the rest of the file (judged alone, the rest of a
        mass deletion went out under the guard), and its trip holds the rest."""
        self.window = window
        if self.judged_before is not None and "judged" in self.judged_before:
            window.resume(self.judged_before, self.service.allow_deletes)

    def _journal_judgement(self) -> dict[str, Any]:
        """What the journal keeps for a re-run: the guard's judgement of the import so
        far (its window's, with the allowance it was made with), and the outbox rows
        the import wrote that may still wait (``rows``: its re-run pushes them as its
        own, and no other change's)."""
        allow = self.service.allow_deletes
        window = self.window
        judged: dict[str, Any] = {
            "rows": [i if v is None else [i, v] for i, v in sorted(self.own_rows.items())]
        }
        if window is not None:
            judged.update(
                allowance=allow,
                judged=window.of(allow).saved(),
                held_rows=sorted(window.held_rows),
            )
        return judged

    def _note_judged(self, window: GuardWindow) -> None:
        """Note in the journal what the guard judged of the import so far: called after
        each judgement, before its push sends anything."""
        if self.import_id is None:
            return
        self.window = window
        with self.service.state.transaction():
            self.service.state.imports.judged(self.import_id, self._journal_judgement())

    def _note_rows(self, uow: UnitOfWork) -> None:
        """Note in the journal, in the transaction of the unit of work that writes them,
        the outbox rows a batch of the import wrote: cut after its commit (Ctrl-C while
        it pushes, ``kill -9``), its re-run pushes them (nothing else does soon: too
        fresh to be taken as left behind, they waited for `idprov outbox retry`). Each
        row is noted with its version: a later change coalesced into it raises it, and
        the row is that change's from then on. The rows noted before that are done
        (sent, failed: a retry is judged afresh) or another change's now are dropped
        from the note, so that it keeps what may still wait (pending, or held)."""
        if self.import_id is None or not uow.rows or not self.options.push:
            return  # --no-push: its rows are the worker's or sync's, not the re-run's
        batch = set(uow.rows)
        earlier = sorted(i for i in self.own_rows if i not in batch)
        self.own_rows = {
            **{r.id: r.version for r in self._noted(earlier, ("pending", "held"))},
            **{r.id: r.version for r in self._rows_at_once(sorted(batch))},
        }
        uow.begin()
        self.service.state.imports.judged(self.import_id, self._journal_judgement())

    def _judged_whole(self, window: GuardWindow) -> None:
        """The guard's reasons for what it held of the import, as one change: the whole
        import's count at each IdP where it tripped, how much of it went before the trip
        (each batch is judged with those before it) and how much is held; once each
        (every later batch repeated the trip's words, counted when it tripped)."""
        from idprov.provisioning.guard import KINDS, SCOPE_TRIP, trips

        out = self.report.outbound
        if out is None or not out.held:
            return
        allow = self.service.allow_deletes
        mine = window.of(allow)
        file = Path(self.source.name).name
        replaced: set[str] = set()
        lines: list[str] = []
        for idp, tripped in sorted(mine.tripped.items()):
            held = mine.held.get(idp)
            if held is None or idp not in out.held or self._holds_another_change(idp):
                continue
            whole = held.merged(mine.passed.get(idp))  # with leavers counted in first
            went = mine.let.get(idp)
            # its share of what was there before it: what went is gone from the ledger
            totals = dict(self.service.state.ledger.counts(idp))
            gone = {k: went.count(k) if went is not None else 0 for k in KINDS}
            for kind in KINDS:
                totals[kind] += gone["users" if kind == "attributes" else kind]
            tripping = trips(self.service.idp(idp), whole, totals, allow)
            found = [t for t in tripping if t.kind != SCOPE_TRIP]
            if not found:
                continue
            replaced |= {t.message for t in tripped}
            said = [
                f"{file} {trip.message}; its batches are judged as one change:"
                f" {gone[trip.kind]} of them went before the guard tripped, the other"
                f" {trip.count - gone[trip.kind]} are held"
                for trip in found
            ]
            lines += said
            self._held_because(idp, window, "; ".join(said))
        kept = [g for g in dict.fromkeys(out.guard) if g not in replaced]
        out.guard = lines + [g for g in kept if g not in lines]
        # a row held in one batch and joined by the next is counted once
        held_rows = Counter(idp for idp, what in out.noted.values() if what == "held")
        out.held = dict(sorted(held_rows.items()))

    def _holds_another_change(self, idp: str) -> bool:
        """Whether rows the guard held at ``idp`` with the import are not the import's:
        another change no guard judged whole yet, judged with it (see
        :meth:`~idprov.provisioning.outbound.Outbound.with_unjudged`). The trip is then
        not the file's to own: its words stay the guard's, with whose change the
        import's rows wait with (another administrator's 25 deprovisions were said as
        'hr.csv will delete 25 users', the file deleting nobody)."""
        out = self.report.outbound
        assert out is not None
        return any(
            at == idp and what == "held" and row not in self.own_rows
            for row, (at, what) in out.noted.items()
        )

    def _journal_start(self) -> None:
        if self.import_id is None:
            with self.service.state.transaction():
                self.import_id = self.service.state.imports.start(
                    self.source.name,
                    self.sha256,
                    self.options.fingerprint(),
                    self.service.actor,
                    self.service.application,
                )

    # -- write phase
    def _write(self, staging: Staging) -> None:
        if not self.report.created and not self.report.updated and not self.report.roles_created:
            self._finish_left_pushes()  # killed while pushing its last batch
            return
        self._journal_start()
        self._finish_left_pushes()
        self._create_roles()
        self._written = [0, self.report.created + self.report.updated]
        self._wrote(0)
        cursor = staging.db.execute(
            "SELECT line, domain, username, action, user_id, claims, roles, pw_hash FROM rows"
            " WHERE action IN ('create', 'update', 'resume') ORDER BY line"
        )
        while rows := cursor.fetchmany(self.options.batch_size):
            self._write_batch(rows)

    def _wrote(self, count: int) -> None:
        """Count ``count`` rows written (committed, their push under way or to come)
        in the progress display: it showed 0% until the first batch's push ended."""
        self._written[0] += count
        if self.progress:
            self.progress("importing", *self._written)

    def _finish_left_pushes(self) -> None:
        """A resumed import first pushes what its interrupted run wrote but did not
        push (its rows are too fresh for the service to take as left behind), so the
        roles pushed later find their members provisioned: the rows its journal notes
        (its own, judged as its change with its ``--allow-deletes``), still pending;
        not every pending row of the state (another change's went out under this
        import's allowance, counted as its own). A failed row is not pushed here: its
        retry (`idprov outbox retry`) is judged afresh. A row the cut run's guard held
        is pushed again only by a re-run given another ``--allow-deletes`` than the cut
        run's: it judges the whole change afresh (:meth:`GuardWindow.resume`), the rows
        held of it included, as one uninterrupted run with that allowance (the same
        allowance: the cut run's trip holds the rest too, and they wait for
        `idprov outbox release`)."""
        if self.rows_unnoted:
            self._push_unnoted()
            return
        if not self.own_rows or not self.options.push:
            return
        ids = sorted(self.own_rows)
        left = [row.id for row in self._noted(ids, ("pending",))]
        saved = self.judged_before or {}
        allow = self.service.allow_deletes
        if "judged" in saved and saved.get("allowance") != allow:
            held = self._noted(ids, ("held",))
            if held:
                idps = sorted({row.idp for row in held})
                with self.service.state.transaction():
                    left += self.service.state.outbox.release_held(
                        idps, allowed=allow, ids=[row.id for row in held]
                    )
        if left:
            self._merge(self.service.push(sorted(left)))

    def _push_unnoted(self) -> None:
        """The re-run of an import an earlier release cut: its journal notes no outbox
        rows (that release never noted them), and they wait, pending, claimed by the
        killed process. It pushes the pending rows of the users the lines the cut run
        wrote name, and of their roles, judged by the deletion guard as one change with
        this import (with its ``--allow-deletes``); not every pending row of the state,
        as that release's re-run did: another change's (another administrator's 25
        deprovisions) held the import's own new users and were said as the file's
        deletes. :meth:`IdentityService.push` first gives back the claims of processes
        of this machine that no longer run. Once only: the batches written from here
        on note their rows."""
        self.rows_unnoted = False
        if not self.done_through or not self.options.push:
            return
        users: set[str] = set()
        roles: set[str] = set()
        for domain, user_id, named in self.staging.written_by_the_cut_run():
            users.add(user_id)
            for role in json.loads(named) if named else []:
                roles |= {role, str(QualifiedName(domain, role))}
        left = [
            row.id
            for row in self.service.state.outbox.rows(status="pending")
            if (row.local_id in users if row.kind == "user" else row.label in roles)
        ]
        if not left:
            return
        self.own_rows.update((row, None) for row in left)
        self.report.notes.append(
            f"the cut import of {Path(self.source.name).name} ran under an earlier idprov,"
            " which did not note its outbox rows: the pending rows of the users its written"
            f" lines name and of their roles were pushed with this run ({len(left)}),"
            " judged as one change"
        )
        self._merge(self.service.push(left))

    def _noted(self, ids: list[int], statuses: tuple[str, ...]) -> list[OutboxRow]:
        """Those of the outbox rows ``ids`` the journal notes that are in one of
        ``statuses`` and still the import's: at the version noted. A later change
        coalesced into a row (one row per user and IdP: a cut `user delete` of users
        the import updated) raised its version; it is that change's, left to it and to
        the worker, neither pushed nor counted as the import's."""
        return [
            row
            for row in self._rows_at_once(ids)
            if row.status in statuses
            and self.own_rows.get(row.id, row.version) in (row.version, None)
        ]

    def _rows_at_once(self, ids: list[int]) -> list[OutboxRow]:
        """The outbox rows ``ids``, looked up ``ROWS_AT_ONCE`` at a time."""
        return [
            row
            for start in range(0, len(ids), ROWS_AT_ONCE)
            for row in self.service.state.outbox.rows(ids[start : start + ROWS_AT_ONCE])
        ]

    def _held_because(self, idp: str, window: GuardWindow, why: str) -> None:
        """Give the import's rows held at ``idp`` the reason of the whole import (each
        was held with its batch's count), as `outbox list` and a later change that
        waits with them say it."""
        ids = sorted(window.held_rows)
        if not ids:
            return
        rows = [r for r in self.service.state.outbox.rows(ids, status="held") if r.idp == idp]
        if rows:
            with self.service.state.transaction():
                self.service.state.outbox.hold(rows, why)

    def _create_roles(self) -> None:
        missing = sorted(getattr(self, "_missing_roles", {}).items())
        if not missing:
            return
        with self.service.unit_of_work(push=self.options.push) as uow:
            for (domain, _), role in missing:
                uow.add_role(role, domain)
            self._note_rows(uow)
        self._merge(uow.outbound)

    def _write_batch(self, rows: list[tuple[Any, ...]]) -> None:
        """One batch per domain, each one unit of work: users, roles, audit, outbox rows
        and the journal commit together; then the batch is pushed (unless ``--no-push``).
        A store outside idprov's database commits apart from the journal (a directory
        cannot roll back; an SQLite file of its own commits just before idprov's), so
        its batch is journalled first: a re-run after a kill finishes exactly the
        users of those lines that the store holds (see ``_made_by_killed_batch``)."""
        for domain, group in itertools.groupby(rows, key=lambda row: row[1]):
            # runs of one domain, in line order: the journal's line is then exact
            batch = list(group)
            store = self.service.store(domain)
            users = [_imported(row) for row in batch]
            first, last = batch[0][0], batch[-1][0]
            if not store.shares_connection(self.service.state.db):
                with self.service.state.transaction():
                    self.service.state.imports.writing(self._journal_id(), first, last)
            wrote = partial(self._wrote, len(batch))
            with self.service.unit_of_work(push=self.options.push, committed=wrote) as uow:
                label = Path(self.source.name).name
                uow.import_users(store, users, _batch_details(batch, last), label)
                uow.imported_through(self._journal_id(), last)
                self._note_rows(uow)
            self._merge(uow.outbound)
            for row, user in zip(batch, users, strict=True):
                if user.refused is not None:
                    self._refused(row[0], user)

    def _refused(self, line: int, user: ImportedUser) -> None:
        """A row the store refused while writing (a directory cannot roll back the
        others): rejected with its line, like a row the pre-flight refused."""
        if user.existing:
            self.report.updated -= 1
        else:
            self.report.created -= 1
        message = getattr(user.refused, "message", None) or str(user.refused)
        self._reject(self.staging, line, [], None, message)

    def _journal_id(self) -> int:
        assert self.import_id is not None, "the journal is started before the write phase"
        return self.import_id

    def _finish(self) -> None:
        """The journal's import is finished: its noted rows go (no re-run pushes them;
        a nightly import kept its last batch's ids, 35 KB for 5,000 rows, for good)."""
        if self.import_id is not None:
            judged = {**self._journal_judgement(), "rows": []}
            with self.service.state.transaction():
                self.service.state.imports.judged(self.import_id, judged)
                self.service.state.imports.finish(self.import_id)


def _imported(row: tuple[Any, ...]) -> ImportedUser:
    """The staged row (line, domain, username, action, user_id, claims, roles, pw_hash)
    as the userstore's bulk write takes it."""
    _line, _domain, username, action, user_id, claims, roles, pw_hash = row
    return ImportedUser(
        user_id,
        username,
        JsonClaims(claims),
        pw_hash,
        json.loads(roles) if roles is not None else None,
        action in ("update", "resume"),
        claims_json=claims,
    )


def _batch_details(batch: list[tuple[Any, ...]], last_line: int) -> dict[str, Any]:
    return {
        "created": [r[2] for r in batch if r[3] in ("create", "resume")],
        "updated": [r[2] for r in batch if r[3] == "update"],
        "through_line": last_line,
    }
