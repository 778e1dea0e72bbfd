"""What a CSV import holds while it runs (see :mod:`idprov.inbound.csv_import`).

:class:`Staging` keeps the decided rows and the rejects in a private temporary SQLite
file (mode 0600, deleted afterwards), so memory does not grow with the file; its
methods are every statement the pre-flight runs there. :class:`ImportState` declares
once the attributes that the import's halves (pre-flight and write) share.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

if TYPE_CHECKING:
    from idprov.inbound.csv_import import ImportOptions, ImportReport, Progress
    from idprov.inbound.csv_read import Source
    from idprov.provisioning.guard import GuardWindow
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import IdentityService
    from idprov.userstores.base import UserStore

PREFIX = "import-"
"""Of the staging directories in the data directory."""
KEPT_ERRORS = 200
"""Row errors kept in the report; every one goes to the rejects file."""


@dataclass
class RowError:
    """Why one row was not imported: its line, the column at fault, the message."""

    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Staging:
    """Validated rows and rejects, in a private temporary SQLite file.

    Its directory in the data directory is named after the process that owns it
    (``import-HOST:PID:...``), so that the next import removes the directories of
    imports killed on this machine (``kill -9`` leaves them behind)."""

    def __init__(self, directory: Path):
        from idprov.config.paths import ensure_private_dir

        _remove_abandoned(ensure_private_dir(directory))
        owner = f"{PREFIX}{socket.gethostname()}:{os.getpid()}:"
        try:
            self.dir = tempfile.TemporaryDirectory(prefix=owner, dir=directory)
        except OSError as exc:  # it named the random directory it could not make
            from idprov.errors import StoreError

            raise StoreError(
                f"cannot import into the data directory {directory}: "
                + (
                    "it is read-only for this user"
                    if not os.access(directory, os.W_OK)
                    else str(exc.strerror or exc)
                ),
                hint="an import writes there (idprov's database and its working copy); run "
                "it as the owner of the data, or check the directory's mode",
            ) from exc
        os.chmod(self.dir.name, 0o700)
        path = Path(self.dir.name) / "staging.db"
        path.touch(mode=0o600)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute(
            "CREATE TABLE rows (line INTEGER PRIMARY KEY, domain TEXT, key TEXT UNIQUE,"
            " username TEXT, action TEXT, user_id TEXT, claims TEXT, roles TEXT, pw_hash TEXT)"
        )
        self.db.execute(
            "CREATE TABLE rejects (line INTEGER PRIMARY KEY, cells TEXT, col TEXT, error TEXT)"
        )
        self.db.execute("CREATE TABLE named (key TEXT PRIMARY KEY) WITHOUT ROWID")
        self.db.execute("CREATE TABLE row_users (line INTEGER PRIMARY KEY, key TEXT, name TEXT)")
        self.db.execute(
            "CREATE TABLE domain_users (user_id TEXT, username TEXT, key TEXT, enabled INTEGER)"
        )
        self.db.execute("BEGIN")

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        """Stage decided rows: (line, domain, key, username, action, user id, claims
        JSON, roles JSON, password hash)."""
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def first_lines(self, keys: Sequence[str]) -> dict[str, int]:
        """The line already staged for each of ``keys`` (``domain/casefolded name``)."""
        return dict(
            self.db.execute(
                f"SELECT key, line FROM rows WHERE key IN ({','.join('?' * len(keys))})", keys
            ).fetchall()
        )

    def set_hashes(self, hashes: Sequence[str], lines: Sequence[int]) -> None:
        """Give the rows of ``lines`` their password hashes, in the same order."""
        self.db.executemany(
            "UPDATE rows SET pw_hash = ? WHERE line = ?", list(zip(hashes, lines, strict=True))
        )

    def rows_with_roles(self) -> list[tuple[int, str, str, str]]:
        """(line, domain, roles JSON, action) of the rows that write roles."""
        return self.db.execute(
            "SELECT line, domain, roles, action FROM rows WHERE roles IS NOT NULL"
            " AND action IN ('create', 'update', 'resume')"
        ).fetchall()

    def written_by_the_cut_run(self) -> list[tuple[str, str, str | None]]:
        """(domain, user id, roles JSON) of the rows the cut run this one resumes wrote
        (``done``: see ``Preflight._decide``)."""
        return self.db.execute(
            "SELECT domain, user_id, roles FROM rows WHERE action = 'done' AND user_id IS NOT NULL"
        ).fetchall()

    def claim_values(self, claim: str) -> list[tuple[int, str, str]]:
        """(line, domain, value) of the rows that write ``claim`` with a value."""
        return self.db.execute(
            "SELECT line, domain, value FROM ("
            " SELECT line, domain, json_extract(claims, '$.' || ?) AS value FROM rows"
            " WHERE action IN ('create', 'update', 'resume'))"
            " WHERE typeof(value) = 'text' AND value != '' ORDER BY line",
            [claim],
        ).fetchall()

    def name(self, key: str) -> None:
        """A row of the file names the user ``key`` (casefolded bare name), whether
        the row is imported or rejected: that user is not missing from the file."""
        self.db.execute("INSERT OR IGNORE INTO named VALUES (?)", [key])

    def note_user(self, line: int, key: str, name: str) -> None:
        """The row of ``line`` names the user ``key`` (``domain/name``, casefolded),
        written ``name``, whether the row is imported or rejected."""
        self.db.execute("INSERT OR REPLACE INTO row_users VALUES (?, ?, ?)", [line, key, name])

    def duplicated_users(self) -> list[list[tuple[int, str]]]:
        """The (line, name as written) of the rows of each user that several rows name."""
        groups: dict[str, list[tuple[int, str]]] = {}
        for key, line, name in self.db.execute(
            "SELECT key, line, name FROM row_users WHERE key IN"
            " (SELECT key FROM row_users GROUP BY key HAVING count(*) > 1) ORDER BY key, line"
        ):
            groups.setdefault(key, []).append((line, name))
        return list(groups.values())

    def staged_action(self, line: int) -> str | None:
        """What the staged row of ``line`` does (``create``, ...; None: not staged)."""
        row = self.db.execute("SELECT action FROM rows WHERE line = ?", [line]).fetchone()
        return None if row is None else str(row[0])

    def add_to_reject(self, line: int, note: str) -> str | None:
        """Add ``note`` to the error of the rejected row of ``line``: the new error, or
        None if that row is not rejected."""
        self.db.execute("UPDATE rejects SET error = error || ? WHERE line = ?", [note, line])
        row = self.db.execute("SELECT error FROM rejects WHERE line = ?", [line]).fetchone()
        return None if row is None else str(row[0])

    def add_domain_users(self, users: Iterable[tuple[str, str, str, bool]]) -> None:
        """Stage users of the domain the file is complete for: (id, username, casefolded
        username, enabled)."""
        self.db.executemany("INSERT INTO domain_users VALUES (?, ?, ?, ?)", users)

    def missing(self, disabled_too: bool) -> list[tuple[str, str]]:
        """(id, username) of the domain's users that no row names, by username; the
        disabled ones only if ``disabled_too``."""
        return self.db.execute(
            "SELECT user_id, username FROM domain_users WHERE key NOT IN (SELECT key FROM named)"
            + ("" if disabled_too else " AND enabled")
            + " ORDER BY username"
        ).fetchall()

    def drop(self, line: int) -> None:
        self.db.execute("DELETE FROM rows WHERE line = ?", [line])

    def reject(self, line: int, cells: list[str], column: str | None, message: str) -> None:
        """Record why the row of ``line`` (its ``cells``, if still known) is rejected."""
        self.db.execute(
            "INSERT OR REPLACE INTO rejects VALUES (?, ?, ?, ?)",
            [line, json.dumps(cells, ensure_ascii=False), column, message],
        )

    def rejects_without_cells(self) -> set[int]:
        """Lines of rejects recorded after the pre-flight let their cells go."""
        return {r[0] for r in self.db.execute("SELECT line FROM rejects WHERE cells = '[]'")}

    def rejects(self) -> Iterator[tuple[int, list[str], str | None, str]]:
        """(line, cells, column, error) of every reject, in line order."""
        for line, cells, column, error in self.db.execute(
            "SELECT line, cells, col, error FROM rejects ORDER BY line"
        ):
            yield line, json.loads(cells), column, error

    def close(self) -> None:
        self.db.close()
        self.dir.cleanup()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove_abandoned(directory: Path) -> None:
    """Remove the staging directories of imports whose process is gone from this
    machine (as outbound tells a dead drainer: by host and pid, a zombie counting as
    gone). Another machine's, a running one's, or one of an older name is kept."""
    import shutil

    from idprov.provisioning.outbound import holder_gone

    for path in directory.glob(f"{PREFIX}*:*:*"):
        if path.is_dir() and holder_gone(path.name.removeprefix(PREFIX)):
            shutil.rmtree(path, ignore_errors=True)


class ImportState:
    """What an import holds while it runs (set by ``CsvImport.__init__``), declared
    once for both halves: the pre-flight and the write phase."""

    service: IdentityService
    given: Path | BinaryIO
    path: Path
    source: Source
    delimiter: str
    options: ImportOptions
    rejects_path: Path | None
    rejects_out: TextIO | None
    rejects_new: bool
    """The rejects file was created by this run (removed again if it fails)."""
    progress: Progress | None
    pool: Executor | None
    report: ImportReport
    known: Mapping[str, Any]
    bad_lines: set[int]
    roles_seen: dict[tuple[str, str], str]
    hashes: list[tuple[list[int], Future[list[str]]]]
    to_hash: dict[str, list[tuple[int, str]]]
    done_through: int
    _stores: dict[str, UserStore]
    _valid_roles: set[tuple[str, str]]
    header: list[str]
    claims_given: set[str]
    """The claims the header names (after ``--map``)."""
    unnamed: int
    """The header's empty last cells (dropped: see ``Preflight._named``)."""
    import_id: int | None
    killed_batch: tuple[int, int] | None
    judged_before: dict[str, Any] | None
    own_rows: dict[int, int | None]
    """Outbox rows the import (and its cut runs) wrote that may still wait: noted in
    its journal as each batch commits (see ``BatchWriter._note_rows``)."""
    rows_unnoted: bool
    """The cut run this one resumes was an earlier release's: its journal notes no
    outbox rows (see ``BatchWriter._push_unnoted``)."""
    window: GuardWindow | None
    sha256: str
    staging: Staging

    def _reject(
        self, staging: Staging, line: int, cells: list[str], column: str | None, message: str
    ) -> None:
        """Count the row of ``line`` as rejected, keep its error for the report (the
        first few hundred) and stage it for the rejects file."""
        self.report.rejected += 1
        if len(self.report.errors) < KEPT_ERRORS:
            self.report.errors.append(RowError(line, column, message))
        staging.reject(line, cells, column, message)

    def _merge(self, report: OutboundReport | None) -> None:
        """Add what a push did to the import's outbound report."""
        if report is None:
            return
        if self.report.outbound is None:
            self.report.outbound = report
        else:
            self.report.outbound.merge(report)
            # each batch after a trip says it again: once
            self.report.outbound.guard = list(dict.fromkeys(self.report.outbound.guard))
