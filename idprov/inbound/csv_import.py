"""Bulk CSV import of users: checked whole before anything is written, then written
in batches that a killed run resumes.

Two phases. The **pre-flight** streams the file once: it decodes each physical line
as UTF-8 (a bad byte rejects the row it is in, naming the line), parses CSV, checks
every cell against the userstore's policy and the claim definitions, finds
duplicates inside the file, looks each user up (create, update, unchanged, or an
error for the mode), hashes passwords in a process pool on all cores, and stages
the outcome of every row in a private SQLite file (mode 0600, deleted afterwards),
so memory does not grow with the file. ``--dry-run`` stops there, with the full
report. The **write** phase reads the staged rows in line order and writes them in
batches, each one transaction together with its outbox rows, its audit entry and
the import's journal line; after each batch its users are pushed to the acting
application's identity providers (unless ``push`` is off).

Resuming: the journal (table ``imports`` of idprov's state) records, per file
(SHA-256 of its bytes) and options, the last line written. A re-run of an
unfinished import of the same file with the same options skips those lines (each
one whose user the store holds as its row asks: a row the store refused, or never
received, is decided again) and continues, so it ends with exactly the users an
uninterrupted run would have.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TextIO

from idprov.errors import ExitCode, StoreError
from idprov.inbound.csv_missing import Missing, MissingReport, MissingUsers, check_options
from idprov.inbound.csv_preflight import Preflight
from idprov.inbound.csv_read import FileError, Source, bom_wins, check_input, open_source
from idprov.inbound.csv_staging import RowError, Staging
from idprov.userstores.base import UserStore

__all__ = ["CsvImport", "FileError", "ImportOptions", "ImportReport", "RowError"]

if TYPE_CHECKING:
    from idprov.provisioning.guard import GuardWindow
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import IdentityService

Progress = Callable[[str, int, int], None]
"""(phase, bytes or rows done, total) for a progress bar."""


@dataclass(frozen=True)
class ImportOptions:
    """How to read the file and what to do with its rows."""

    mode: Literal["create", "upsert", "update"] = "create"
    delimiter: str | None = None
    """None: sniffed from the header (``,``, ``;``, tab or ``|``)."""
    encoding: str | None = None
    """None: UTF-8 (a BOM is skipped)."""
    column_map: dict[str, str] = field(default_factory=dict)
    """File column -> claim (or username/password/password_hash/roles)."""
    ignore_columns: frozenset[str] = frozenset()
    separator: str = ";"
    """Between roles in the roles column, and between values of multi-valued claims."""
    create_roles: bool = False
    on_error: Literal["skip", "stop"] = "skip"
    dry_run: bool = False
    push: bool = True
    batch_size: int = 5000
    domain: str | None = None
    wait: bool = False
    """Wait for a running sync or import instead of failing with LockedError."""
    missing: Missing = "keep"
    """The users of ``domain`` that the file does not list (it is their complete list):
    kept, disabled or deleted (see :mod:`~idprov.inbound.csv_missing`)."""

    def __post_init__(self) -> None:
        check_options(self.missing, self.mode, self.domain)

    def fingerprint(self) -> str:
        data = asdict(self)
        for key in ("dry_run", "push", "batch_size", "wait"):
            data.pop(key)
        if self.missing == "keep":
            data.pop("missing")  # an import's journal from before the option still resumes
        data["ignore_columns"] = sorted(self.ignore_columns)
        return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class GuardNote:
    """What the deletion guard says of a dry run's changes: a run would hold them."""

    message: str
    allow_deletes: int
    """The ``--allow-deletes`` that would accept them."""


@dataclass
class ImportReport:
    """What an import did (or, dry-run, would do)."""

    file: str
    mode: str
    dry_run: bool
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    skipped_done: int = 0
    """Rows a previous, interrupted run of the same import had already written."""
    errors: list[RowError] = field(default_factory=list)
    roles_created: list[str] = field(default_factory=list)
    rejects_file: str | None = None
    seconds: float = 0.0
    outbound: OutboundReport | None = None
    stopped: bool = False
    """``--on-error stop`` found errors: nothing was written."""
    notes: list[str] = field(default_factory=list)
    """What the import decided on its own, worth a line in the report."""
    missing: MissingReport | None = None
    """With ``--missing``: the users of the domain the file does not list."""
    guard: GuardNote | None = None
    """A dry run: the deletion guard over the import's changes (a run holds them)."""
    changes: list[dict[str, Any]] = field(default_factory=list)
    """A dry run: what each row would change (the user, create or update, the claims
    set and removed, the roles added and removed; names, not values), in line order."""

    @property
    def written(self) -> int:
        return 0 if self.dry_run or self.stopped else self.created + self.updated

    @property
    def exit_code(self) -> ExitCode:
        if self.missing is not None and self.missing.refused:
            return ExitCode.GUARD_TRIPPED  # a dry run: a run raises GuardError
        if self.guard is not None and self.rejected == 0:
            return ExitCode.GUARD_TRIPPED  # a dry run: a run holds them in the outbox
        if self.rejected == 0 and not (self.missing is not None and self.missing.failed):
            if self.outbound is not None and not self.outbound.ok:
                return ExitCode.OUTBOUND_FAILED
            if self.outbound is not None and self.outbound.held:
                return ExitCode.GUARD_TRIPPED  # held in the outbox: `idprov outbox release`
            return ExitCode.OK
        good = self.created + self.updated + self.unchanged + self.skipped_done
        if self.stopped or good == 0:
            return ExitCode.NOTHING_IMPORTED
        return ExitCode.PARTIAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "skipped_already_imported": self.skipped_done,
            "stopped": self.stopped,
            "roles_created": self.roles_created,
            "notes": self.notes,
            "errors": [e.to_dict() for e in self.errors],
            "rejects_file": self.rejects_file,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds else None,
            "outbound": self.outbound.to_dict() if self.outbound is not None else None,
            "missing": self.missing.to_dict() if self.missing is not None else None,
            **({"changes": self.changes} if self.dry_run else {}),
            **({"guard": asdict(self.guard) if self.guard else None} if self.dry_run else {}),
        }


class CsvImport(Preflight, MissingUsers):
    """One import of one file (see the module docstring)."""

    def __init__(
        self,
        service: IdentityService,
        path: Path | BinaryIO,
        options: ImportOptions,
        rejects_path: Path | None = None,
        progress: Progress | None = None,
        pool: Executor | None = None,
    ) -> None:
        self.service = service
        self.given = path
        self.path = path if isinstance(path, Path) else Path("-")
        self.source = Source(self.path, str(self.path))
        self.delimiter = options.delimiter or ","
        self.options = options
        self.rejects_path = rejects_path
        self.rejects_out: TextIO | None = None
        self.rejects_new = False
        self.progress = progress
        self.pool = pool
        self.report = ImportReport(str(self.path), options.mode, options.dry_run)
        self.known = service.claims
        self.bad_lines: set[int] = set()
        self.roles_seen: dict[tuple[str, str], str] = {}
        self.row_changes = []
        self.hashes: list[tuple[list[int], Future[list[str]]]] = []
        self.to_hash: dict[str, list[tuple[int, str]]] = {}
        self.done_through = 0
        self._stores: dict[str, UserStore] = {}
        self._valid_roles: set[tuple[str, str]] = set()
        self.header: list[str] = []
        self.unnamed = 0
        self.claims_given: set[str] = set()
        self.import_id: int | None = None
        self.killed_batch: tuple[int, int] | None = None
        """Lines of a batch a killed run was writing to a directory (see _decide)."""
        self.judged_before: dict[str, Any] | None = None
        """What the deletion guard judged of a killed run of this import (its journal)."""
        self.own_rows: dict[int, int | None] = {}
        self.rows_unnoted = False
        self.window: GuardWindow | None = None
        self._missing_scope()
        self.report.missing = self.missing_report

    # -- the whole run
    def run(self) -> ImportReport:
        if isinstance(self.given, Path):
            check_input(self.given)
        self._open_rejects()  # before anything is written, not after
        start = time.perf_counter()
        try:
            with Staging(self.service.data_dir) as self.staging:
                self._run(self.staging)
        except BaseException:
            self._stop_hashing(at_once=True)
            self._close_rejects(failed=True)
            raise
        finally:
            self._stop_hashing()
            self._close_rejects()
            self.report.seconds = time.perf_counter() - start
        return self.report

    def _run(self, staging: Staging) -> None:
        """Check the file whole, then write it; unless a dry run, under the run lock
        from the start: a second import or a sync exits 8 at once (not after reading a
        directory that hangs), and what is checked is what is written."""
        self.source = open_source(self.given, self.options.encoding, Path(staging.dir.name))
        self.source, note = bom_wins(self.source)
        if note is not None:
            self.report.notes.append(note)
        self.path = self.source.path
        lock = self.service.state.run_lock("import", wait=self.options.wait)
        with nullcontext() if self.options.dry_run else lock:
            self._resume_point()
            self._preflight(staging)
            self._check_roles(staging)
            self._check_managers(staging)
            if self.report.rejected and self.options.on_error == "stop":
                self._stopped()
            elif not self.options.dry_run:
                # the batches judged together, and with what a killed run of it let through
                with self.service.guard_window(self._note_judged) as window:
                    self._resume_judgement(window)
                    self._find_missing(staging, window)  # judged before anything is written
                    self._write_resumable(staging)
                    self._judged_whole(window)
            else:
                self._find_missing(staging)
                self._judge_dry_run()
        self._missing_notes()
        self._write_rejects(staging)
        self.report.errors.sort(key=lambda error: error.line)

    def _judge_dry_run(self) -> None:
        """A dry run: what the deletion guard would say of the import's changes, its
        rows' and its leavers' (``--missing``) as one change, as its run's pushes
        judge them: over it, the run would hold them in the outbox (exit 7)."""
        from idprov.provisioning import preview

        missing = self.missing_report
        if missing is not None and missing.refused:
            return  # refused whole already, on the leavers' count
        delete = missing is not None and missing.action == "delete"
        verdict = preview.imported(self.service, self.row_changes, self._leavers(), delete)
        verdict = verdict.without_sync()
        if verdict.trips:
            self.report.guard = GuardNote(f"deletion guard: {verdict.message()}", verdict.needed)

    def _write_resumable(self, staging: Staging) -> None:
        """:meth:`_write`, and the missing users' changes; a userstore that stops
        answering meanwhile is an error that says a re-run resumes (the journal holds
        how far it got)."""
        try:
            self._write(staging)
            self._write_missing()
            self._finish()  # after the leavers: a re-run cut among them resumes too
        except StoreError as exc:
            again = (
                "once the userstore answers, run the same import again: it resumes after "
                "the last row written"
            )
            exc.hint = f"{exc.hint}; {again}" if exc.hint else again
            raise

    def _stopped(self) -> None:
        """``--on-error stop`` found errors: nothing is written, no role created."""
        self.report.stopped = True
        if self.report.roles_created:
            self.report.notes.append(
                "roles to create (none were created: --on-error stop): "
                + ", ".join(self.report.roles_created)
            )
            self.report.roles_created = []
