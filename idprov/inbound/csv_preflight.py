"""The pre-flight of a CSV import: every row checked, decided and staged before
anything is written (see :mod:`idprov.inbound.csv_import`).

It streams the file once: parses each row, checks every cell against the userstore's
policy and the claim definitions, finds duplicates inside the file, looks each user
up (create, update, unchanged, or an error for the mode), hashes passwords in a
process pool on all cores, and stages the outcome of every row in a private SQLite
file (:class:`Staging`), so memory does not grow with the file.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.errors import IdprovError
from idprov.inbound.csv_read import (
    Columns,
    FileError,
    HeaderRules,
    NothingToImport,
    Source,
    decoded_lines,
    not_decodable,
    read_header,
    sniff_delimiter,
)
from idprov.model import QualifiedName, new_id
from idprov.userstores import policy
from idprov.userstores.base import UserStore
from idprov.userstores.passwords import hash_with

if TYPE_CHECKING:
    from idprov.provisioning.service import IdentityService


if TYPE_CHECKING:
    from idprov.inbound.csv_import import ImportOptions, ImportReport, Progress

FIELD_LIMIT = 1 << 20  # one cell may hold up to 1 MiB; a longer one rejects its row
KEPT_ERRORS = 200
HASH_CHUNK = {"scrypt": 8}


# ---------------------------------------------------------------- staging
class Staging:
    """Validated rows and rejects, in a private temporary SQLite file."""

    def __init__(self, directory: Path):
        from idprov.config.paths import ensure_private_dir

        self.dir = tempfile.TemporaryDirectory(prefix="import-", dir=ensure_private_dir(directory))
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
        self.db.execute("BEGIN")

    def close(self) -> None:
        self.db.close()
        self.dir.cleanup()


@dataclass
class Pending:
    """A row that passed its own checks, waiting for the checks that need the store."""

    line: int
    domain: str
    username: str
    cells: list[str]
    claims: dict[str, Any]
    """Claims given in the row; None means the cell was empty (remove the claim)."""
    roles: list[str] | None
    password: str | None
    password_hash: str | None


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


class ImportState:
    """What an import holds while it runs (set by ``CsvImport.__init__``), declared
    once for both halves: the pre-flight and the write phase."""

    service: IdentityService
    path: Path
    source: Source
    delimiter: str
    options: ImportOptions
    rejects_path: Path | None
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
    import_id: int | None
    killed_batch: tuple[int, int] | None
    sha256: str
    staging: Staging


class Preflight(ImportState):
    """The checking half of :class:`~idprov.inbound.csv_import.CsvImport`."""

    # -- pre-flight
    def _preflight(self, staging: Staging) -> None:
        csv.field_size_limit(FIELD_LIMIT)
        lines = decoded_lines(self.source, self.bad_lines)
        first_line = next(lines, "")
        self.delimiter = self.options.delimiter or sniff_delimiter(first_line)
        reader = csv.reader(
            itertools.chain([first_line] if first_line else [], lines),
            delimiter=self.delimiter,
            strict=True,
        )
        header = self._header(reader)
        columns = read_header(
            header,
            HeaderRules(
                set(self.known),
                self.options.column_map,
                self.options.ignore_columns,
                self.delimiter,
            ),
        )
        batch: list[Pending] = []
        size = self.path.stat().st_size or 1
        line = reader.line_num
        while True:
            first = line + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                line = reader.line_num
                self._reject(staging, first, [], None, f"not valid CSV: {exc}")
                continue
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue  # an empty line
            self.report.rows += 1
            pending = self._check_row(staging, first, line, cells, columns)
            if pending is not None:
                batch.append(pending)
            if len(batch) >= self.options.batch_size:
                self._stage(staging, batch)
                batch = []
                if self.progress:
                    self.progress("checking", self.source.bytes_read[0], size)
        self._stage(staging, batch)
        if self.progress:
            self.progress("checking", size, size)
        self._collect_hashes(staging)
        if self.report.rows == 0:
            raise NothingToImport(
                f"{self.source.name} has a header but no rows: nothing to import",
                hint="add a row per user under the header",
            )

    def _header(self, reader: Any) -> list[str]:
        try:
            header: list[str] = next(reader)
        except StopIteration:
            raise FileError(
                f"{self.source.name} is empty: no header row",
                hint="the first row names the columns: username,email,...",
            ) from None
        except csv.Error as exc:
            raise FileError(f"{self.source.name}, header: {exc}") from None
        if 1 in self.bad_lines:
            raise FileError(
                f"{self.source.name}: the header is not {self.source.encoding} text",
                hint="give the file's encoding with --encoding (latin-1? cp1252?)",
            )
        self.header = header
        return header

    def _reject(
        self, staging: Staging, line: int, cells: list[str], column: str | None, message: str
    ) -> None:
        self.report.rejected += 1
        if len(self.report.errors) < KEPT_ERRORS:
            self.report.errors.append(RowError(line, column, message))
        staging.db.execute(
            "INSERT OR REPLACE INTO rejects VALUES (?, ?, ?, ?)",
            [line, json.dumps(cells, ensure_ascii=False), column, message],
        )

    def _check_row(
        self, staging: Staging, first: int, last: int, cells: list[str], columns: Columns
    ) -> Pending | None:
        def reject(column: str | None, message: str) -> None:
            self._reject(staging, first, cells, column, message)

        bad = [n for n in range(first, last + 1) if n in self.bad_lines]
        if bad:
            reject(None, not_decodable(self.source, bad[0]))
            return None
        if len(cells) != len(columns.names):
            reject(None, f"has {len(cells)} fields; the header has {len(columns.names)}")
            return None
        try:
            return self._pending(first, cells, columns)
        except (IdprovError, ValueError) as exc:
            column = getattr(exc, "column", None)
            reject(column, getattr(exc, "message", str(exc)))
            return None

    def _pending(self, line: int, cells: list[str], columns: Columns) -> Pending:
        domain, sep, name = cells[columns.username].strip().partition("/")
        if not sep:
            domain, name = self.options.domain or "PRIMARY", domain
        if not name:
            raise _cell_error("username", "is empty")
        store = self._stores.get(domain) or self._stores.setdefault(
            domain, self.service.store(domain)
        )
        _in_column("username", policy.check_username, store.config.policy, name, store.domain)
        _in_column("username", store.ensure_writable)
        claims: dict[str, Any] = {}
        for index, claim in columns.claims:
            value = cells[index].strip()
            definition = self.known[claim]
            if not value:
                claims[claim] = None
                continue
            if definition.multi_valued:
                values = [v.strip() for v in value.split(self.options.separator) if v.strip()]
                for item in values:
                    _in_column(
                        columns.names[index], policy.check_claim_value, definition, item, name
                    )
                claims[claim] = values
            else:
                if not policy.claim_value_ok(definition, value):  # the fast path; on a
                    _in_column(  # refusal, the full check says exactly why
                        columns.names[index], policy.check_claim_value, definition, value, name
                    )
                claims[claim] = value
        roles = None
        if columns.roles is not None:
            roles = [
                r.strip() for r in cells[columns.roles].split(self.options.separator) if r.strip()
            ]
            for role in roles:
                if (store.domain, role) not in self._valid_roles:  # each name checked once
                    _in_column(
                        "roles", policy.check_role_name, store.config.policy, role, store.domain
                    )
                    self._valid_roles.add((store.domain, role))
                    self.roles_seen.setdefault((store.domain, role.casefold()), role)
        password = cells[columns.password] if columns.password is not None else ""
        pw_hash = cells[columns.password_hash].strip() if columns.password_hash is not None else ""
        if password and pw_hash:
            raise _cell_error("password", "give password or password_hash, not both")
        if password:
            _in_column(
                "password", policy.check_password, store.config.policy, password, store.domain
            )
        if pw_hash:
            _in_column("password_hash", store.check_password_hash, pw_hash)
        return Pending(
            line, store.domain, name, cells, claims, roles, password or None, pw_hash or None
        )

    def _stage(self, staging: Staging, batch: list[Pending]) -> None:
        """Checks that need the store or the rest of the file, then stage the batch."""
        if not batch:
            return
        batch = self._drop_duplicates(staging, batch)
        existing: dict[tuple[str, str], Any] = {}
        by_domain: dict[str, list[str]] = {}
        for p in batch:
            by_domain.setdefault(p.domain, []).append(p.username)
        for domain, names in by_domain.items():
            for key, user in self.service.store(domain).find_users(names).items():
                existing[(domain, key)] = user
        rows = []
        for p in batch:
            staged = self._decide(staging, p, existing.get((p.domain, p.username.casefold())))
            if staged is not None:
                rows.append(staged)
        staging.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _drop_duplicates(self, staging: Staging, batch: list[Pending]) -> list[Pending]:
        keys: dict[str, int] = {}
        out = []
        earlier = dict(
            staging.db.execute(
                f"SELECT key, line FROM rows WHERE key IN ({','.join('?' * len(batch))})",
                [f"{p.domain}/{p.username.casefold()}" for p in batch],
            ).fetchall()
        )
        for p in batch:
            key = f"{p.domain}/{p.username.casefold()}"
            first = earlier.get(key) or keys.get(key)
            if first is not None:
                self._reject(
                    staging,
                    p.line,
                    p.cells,
                    "username",
                    f"user {p.username!r} is already on line {first} (names are case-insensitive)",
                )
                continue
            keys[key] = p.line
            out.append(p)
        return out

    def _decide(self, staging: Staging, p: Pending, user: Any) -> tuple[Any, ...] | None:
        mode = self.options.mode
        key = f"{p.domain}/{p.username.casefold()}"
        if p.line <= self.done_through:
            self.report.skipped_done += 1
            return (p.line, p.domain, key, p.username, "done", None, None, None, None)
        if user is None and mode == "update":
            self._reject(
                staging,
                p.line,
                p.cells,
                "username",
                f"no user {p.username!r} in the {p.domain} userstore (--mode update)",
            )
            return None
        resumed = user is not None and self._in_killed_batch(p.line)
        if user is not None and mode == "create" and not resumed:
            self._reject(
                staging,
                p.line,
                p.cells,
                "username",
                f"user {p.username!r} already exists (use --mode upsert to update)",
            )
            return None
        base = dict(user.claims) if user is not None and not resumed else {}
        claims = {k: v for k, v in {**base, **p.claims}.items() if v is not None}
        store = self.service.store(p.domain)
        try:
            policy.check_required(claims, store.config.policy, p.username, store.domain)
        except IdprovError as exc:
            self._reject(staging, p.line, p.cells, None, exc.message)
            return None
        if resumed and mode == "create":
            self.report.created += 1  # the killed run made it: finish it exactly
        elif user is not None:
            same_roles = p.roles is None or sorted(r.casefold() for r in p.roles) == sorted(
                r.casefold() for r in user.roles
            )
            if (
                claims == user.claims
                and same_roles
                and p.password is None
                and p.password_hash is None
            ):
                self.report.unchanged += 1
                return (p.line, p.domain, key, p.username, "unchanged", user.id, None, None, None)
            self.report.updated += 1
        else:
            self.report.created += 1
        if p.password is not None and not self.options.dry_run:
            self._queue_hash(p.line, p.password, store.password_scheme)
        return (
            p.line,
            p.domain,
            key,
            p.username,
            ("resume" if resumed and mode == "create" else "update") if user else "create",
            user.id if user else new_id(),
            json.dumps(claims, ensure_ascii=False, sort_keys=True),
            json.dumps(p.roles, ensure_ascii=False) if p.roles is not None else None,
            p.password_hash,
        )

    def _in_killed_batch(self, line: int) -> bool:
        batch = self.killed_batch
        return batch is not None and batch[0] <= line <= batch[1]

    # -- passwords, hashed on every core while the file is read
    def _queue_hash(self, line: int, password: str, scheme: str) -> None:
        """Hash in the scheme of the user's store (scrypt; {SSHA} for a directory)."""
        queued = self.to_hash.setdefault(scheme, [])
        queued.append((line, password))
        if len(queued) >= HASH_CHUNK.get(scheme, 256):
            self._submit_hashes()

    def _submit_hashes(self) -> None:
        for scheme, queued in self.to_hash.items():
            if not queued:
                continue
            if self.pool is None:
                from concurrent.futures import ProcessPoolExecutor

                self.pool = ProcessPoolExecutor(
                    max_workers=os.cpu_count() or 1, initializer=_ignore_interrupts
                )
            lines = [line for line, _ in queued]
            passwords = [pw for _, pw in queued]
            self.hashes.append((lines, self.pool.submit(hash_many, passwords, scheme)))
        self.to_hash = {}

    def _collect_hashes(self, staging: Staging) -> None:
        self._submit_hashes()
        total = sum(len(lines) for lines, _ in self.hashes)
        done = 0
        for lines, future in self.hashes:
            staging.db.executemany(
                "UPDATE rows SET pw_hash = ? WHERE line = ?",
                list(zip(future.result(), lines, strict=True)),
            )
            done += len(lines)
            if self.progress:
                self.progress("hashing", done, total)
        self.hashes = []

    # -- roles
    def _check_roles(self, staging: Staging) -> None:
        missing: dict[tuple[str, str], str] = {}
        for (domain, key), role in self.roles_seen.items():
            if self.service.store(domain).find_role(role) is None:
                missing[(domain, key)] = role
        if not missing:
            return
        if self.options.create_roles:
            self.report.roles_created = [
                str(QualifiedName(d, r)) for (d, _), r in sorted(missing.items())
            ]
            self._missing_roles = missing
            return
        for line, domain, roles, action in staging.db.execute(
            "SELECT line, domain, roles, action FROM rows WHERE roles IS NOT NULL"
            " AND action IN ('create', 'update', 'resume')"
        ).fetchall():
            unknown = [r for r in json.loads(roles) if (domain, r.casefold()) in missing]
            if unknown:
                self.report.created -= action in ("create", "resume")
                self.report.updated -= action == "update"
                staging.db.execute("DELETE FROM rows WHERE line = ?", [line])
                self._reject(
                    staging,
                    line,
                    [],
                    "roles",
                    f"unknown role(s) {', '.join(unknown)} (create them first, or use "
                    "--create-roles)",
                )

    # -- rejects file
    def _write_rejects(self, staging: Staging) -> None:
        if self.rejects_path is None:
            return
        from idprov.config.paths import open_private_output

        header = self.header
        missing = {r[0] for r in staging.db.execute("SELECT line FROM rejects WHERE cells = '[]'")}
        found = self._cells_at(missing)
        # a report of this run: replaced on a re-run, 0600, never in a new directory
        with open_private_output(self.rejects_path, overwrite=True) as f:
            writer = csv.writer(f, delimiter=self.delimiter)
            writer.writerow([*header, "line", "error"])
            for line, cells, column, error in staging.db.execute(
                "SELECT line, cells, col, error FROM rejects ORDER BY line"
            ):
                values = json.loads(cells) or found.get(line, [])
                values = (values + [""] * len(header))[: len(header)]  # line, error aligned
                where = f"column {column}: " if column else ""
                writer.writerow([*values, line, where + error])
        self.report.rejects_file = str(self.rejects_path)

    def _cells_at(self, lines: set[int]) -> dict[int, list[str]]:
        """The cells of the rows starting on ``lines``, in one more read of the file
        (for rows rejected after the pre-flight let their cells go)."""
        found: dict[int, list[str]] = {}
        if not lines:
            return found
        reader = csv.reader(
            decoded_lines(Source(self.path, self.source.name, self.source.encoding), set()),
            delimiter=self.delimiter,
        )
        first = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return found
            except csv.Error:
                cells = []  # a row rejected as broken CSV: no cells to give back
            if first in lines:
                found[first] = cells
            first = reader.line_num + 1


def _ignore_interrupts() -> None:
    """In a hashing worker: a Ctrl-C is the parent's to handle (it cancels the work)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def hash_many(passwords: Sequence[str], scheme: str = "scrypt") -> list[str]:
    """Hash in a worker process (module level, so it can be pickled)."""
    return [hash_with(scheme, p) for p in passwords]


class _CellError(ValueError):
    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column
        self.message = message


def _cell_error(column: str, message: str) -> _CellError:
    return _CellError(column, f"{column} {message}")


def _in_column(column: str, check: Callable[..., None], *args: Any) -> None:
    """Run a policy check; its refusal becomes an error of that column."""
    try:
        check(*args)
    except IdprovError as exc:
        raise _CellError(column, exc.message) from None
