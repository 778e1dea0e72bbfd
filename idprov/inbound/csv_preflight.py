"""The pre-flight of a CSV import: every row checked, decided and staged before
anything is written (see :mod:`idprov.inbound.csv_import`).

It streams the file once: parses each row, has its cells checked
(:mod:`~idprov.inbound.csv_rows`), finds duplicates inside the file, looks each user
up and decides (create, update, unchanged, or an error for the mode), queues
passwords for hashing on all cores (:mod:`~idprov.inbound.csv_hashing`), checks the
roles named, and stages the outcome of every row in a private SQLite file
(:mod:`~idprov.inbound.csv_staging`), so memory does not grow with the file. The
rejects file is written from there.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from idprov.config.paths import open_private_output
from idprov.errors import (
    ConflictError,
    IdprovError,
    NotFoundError,
    UsageError,
    from_os_error,
)
from idprov.inbound.csv_hashing import PasswordHashing
from idprov.inbound.csv_read import (
    FIELD_LIMIT,
    REJECTS_COLUMNS,
    BrokenFile,
    Columns,
    HeaderRules,
    NothingToImport,
    Source,
    decoded_lines,
    not_csv,
    read_header,
    sniff_delimiter,
)
from idprov.inbound.csv_rows import Pending, RowChecks, role_key
from idprov.inbound.csv_staging import Staging
from idprov.model import QualifiedName, new_id
from idprov.provisioning import managers
from idprov.provisioning.internal_roles import INTERNAL
from idprov.provisioning.preview import RowChange
from idprov.userstores import policy


class Preflight(RowChecks, PasswordHashing):
    """The checking half of :class:`~idprov.inbound.csv_import.CsvImport`."""

    row_changes: list[RowChange]
    """A dry run: the rows' changes of existing users that may destroy something at a
    target, judged by the deletion guard after the check."""

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
        columns = self._columns(reader)
        width = len(columns.names)
        batch: list[Pending] = []
        size = self.path.stat().st_size or 1
        line = reader.line_num
        while True:
            first = line + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # where this row ends is unknown: stop
                raise not_csv(self.source.name, exc, first, reader.line_num) from None
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue  # an empty line
            self.report.rows += 1
            if len(cells) > width:  # Excel's empty trailing columns: nothing in them
                cells = _trimmed(cells, width)
            pending = self._check_row(staging, first, line, cells, columns)
            if pending is not None:
                batch.append(pending)
            if len(batch) >= self.options.batch_size:
                self._stage(staging, batch)
                batch = []
                if self.progress:
                    self.progress("checking", self.source.bytes_read[0], size)
        self._stage(staging, batch)
        self._reject_duplicates(staging)
        if self.progress:
            self.progress("checking", size, size)
        self._collect_hashes(staging)
        if self.report.rows == 0:
            raise NothingToImport(
                f"{self.source.name} has a header but no rows: nothing to import",
                hint="add a row per user under the header",
            )

    def _named(self, header: list[str]) -> list[str]:
        """The header without its empty last cells (Excel's columns once formatted or
        cleared: ``a,b,c,,,``), noted; a row with a value under one is rejected, naming
        its column (see :meth:`_check_row`). An empty cell before a named one is an
        error (:func:`~idprov.inbound.csv_read.read_header`)."""
        width = len(header)
        while width > 1 and not header[width - 1].strip():
            width -= 1
        if width < len(header):
            count = len(header) - width
            self.report.notes.append(
                f"the header's last {count} cell{'s are' if count > 1 else ' is'} empty: "
                f"{'those columns are' if count > 1 else 'that column is'} not imported "
                "(a value under one rejects its row)"
            )
        self.unnamed = len(header) - width
        return header[:width]

    def _columns(self, reader: Any) -> Columns:
        """The header row, resolved (see :func:`~idprov.inbound.csv_read.read_header`)."""
        try:
            header: list[str] = next(reader)
        except StopIteration:
            raise NothingToImport(
                f"{self.source.name} is empty: no header, no rows: nothing to import",
                hint="the first row names the columns (username,email,...), a row per user follows",
            ) from None
        except csv.Error as exc:
            raise not_csv(self.source.name, exc, 1, reader.line_num) from None
        if 1 in self.bad_lines:
            raise BrokenFile(
                f"{self.source.name}: the header is not {self.source.encoding} text",
                hint="give the file's encoding with --encoding (Excel's \"CSV\" on Windows is "
                "cp1252)",
            )
        self.header = header = self._named(header)
        rules = HeaderRules(
            set(self.known), self.options.column_map, self.options.ignore_columns, self.delimiter
        )
        columns = read_header(header, rules)
        self.report.notes += columns.notes
        self.claims_given = {claim for _, claim in columns.claims}
        return columns

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
            found = self.service.store(domain).find_users(names)
            self.service.directory.with_internal_roles(list(found.values()))
            for key, user in found.items():
                existing[(domain, key)] = user
        rows = []
        for p in batch:
            staged = self._decide(staging, p, existing.get((p.domain, p.username.casefold())))
            if staged is not None:
                rows.append(staged)
        staging.add(rows)
        self._note_disabled(batch, existing)

    def _drop_duplicates(self, staging: Staging, batch: list[Pending]) -> list[Pending]:
        """``batch`` without the rows of a user staged already: every row of such a
        user is rejected once the whole file is read (:meth:`_reject_duplicates`)."""
        keys: set[str] = set()
        out = []
        earlier = staging.first_lines([f"{p.domain}/{p.username.casefold()}" for p in batch])
        for p in batch:
            key = f"{p.domain}/{p.username.casefold()}"
            if key not in earlier and key not in keys:
                keys.add(key)
                out.append(p)
        return out

    def _reject_duplicates(self, staging: Staging) -> None:
        """Reject every row of a user that several rows name, none imported (which one
        was meant is for the administrator to say), each naming the others' lines; a
        row rejected for its own fault says so too."""
        for rows in staging.duplicated_users():
            for line, name in rows:
                others = [str(other) for other, _ in rows if other != line]
                note = (
                    f"user {name!r} is also on line{'s' if len(others) > 1 else ''} "
                    f"{', '.join(others)} (names are case-insensitive): no row of it is "
                    "imported; keep one"
                )
                self._reject_duplicate(staging, line, note)
        self.report.errors.sort(key=lambda error: error.line)

    def _reject_duplicate(self, staging: Staging, line: int, note: str) -> None:
        action = staging.staged_action(line)
        if action == "done":
            return  # written by the killed run this one resumes
        if action is not None:
            self.report.created -= action in ("create", "resume")
            self.report.updated -= action == "update"
            self.report.unchanged -= action == "unchanged"
            staging.drop(line)
        error = staging.add_to_reject(line, f"; {note}")
        if error is None:
            self._reject(staging, line, [], "username", note)
            return
        for row_error in self.report.errors:
            if row_error.line == line:
                row_error.message = error

    def _decide(self, staging: Staging, p: Pending, user: Any) -> tuple[Any, ...] | None:
        mode = self.options.mode
        key = f"{p.domain}/{p.username.casefold()}"
        if p.line <= self.done_through and _holds(p, user):
            self.report.skipped_done += 1
            roles = json.dumps(p.roles, ensure_ascii=False) if p.roles is not None else None
            # the user and roles kept: an earlier release's cut run pushes their rows
            return (p.line, p.domain, key, p.username, "done", user.id, None, roles, None)
        if user is None and mode == "update":
            self._reject(
                staging,
                p.line,
                p.cells,
                "username",
                f"no user {p.username!r} in the {p.domain} userstore (--mode update)",
            )
            return None
        resumed = self._made_by_killed_batch(p, user)
        if user is not None and mode == "create" and not resumed:
            self._reject(
                staging,
                p.line,
                p.cells,
                "username",
                f"user {p.username!r} already exists (use --mode upsert to update)",
            )
            return None
        base = dict(user.claims) if user is not None else {}
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
            held = _holds(p, user, claims) and p.password is None and p.password_hash is None
            if held and not resumed:  # resumed: written, yet neither audited nor pushed
                self.report.unchanged += 1
                return (p.line, p.domain, key, p.username, "unchanged", user.id, None, None, None)
            self.report.updated += 1
        else:
            self.report.created += 1
        if self.options.dry_run:
            change = _change(p, user, claims)
            self.report.changes.append(change)
            if user is not None and _may_destroy(change, claims):
                self.row_changes.append(
                    RowChange(
                        user.id,
                        user.domain,
                        {k: str(v) for k, v in claims.items()},
                        tuple(change.get("roles_added", ())),
                        tuple(change.get("roles_removed", ())),
                    )
                )
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

    def _made_by_killed_batch(self, p: Pending, user: Any) -> bool:
        """Whether the batch a killed run was writing may have written this row: a
        line of that batch whose user holds the claims the row gives (an add or a
        modify writes them all at once; its roles come after). It is written again,
        with its records. The batch's lines hold the rows it did not write too
        (rejected, unchanged): a user that was there before a create is not taken
        over, but rejected as the killed run did."""
        batch = self.killed_batch
        in_batch = batch is not None and batch[0] <= p.line <= batch[1]
        return in_batch and _holds(p, user, with_roles=False)

    # -- roles
    def _check_roles(self, staging: Staging) -> None:
        missing: dict[tuple[str, str], str] = {}
        for (domain, key), role in self.roles_seen.items():
            if domain == INTERNAL:
                if self.service.internal.find(role) is None:
                    missing[(domain, key)] = role
            elif self.service.store(domain).find_role(role) is None:
                missing[(domain, key)] = role
        if self.options.create_roles:  # only those an imported row holds
            held = {
                role_key(domain, role)
                for _, domain, roles, _ in staging.rows_with_roles()
                for role in json.loads(roles)
            }
            missing = {key: role for key, role in missing.items() if key in held}
        if not missing:
            return
        if self.options.create_roles:
            self.report.roles_created = [
                str(QualifiedName(d, r)) for (d, _), r in sorted(missing.items())
            ]
            self._missing_roles = missing
            return
        for line, domain, roles, action in staging.rows_with_roles():
            unknown = [r for r in json.loads(roles) if role_key(domain, r) in missing]
            if unknown:
                self.report.created -= action in ("create", "resume")
                self.report.updated -= action == "update"
                staging.drop(line)
                self._reject(
                    staging,
                    line,
                    [],
                    "roles",
                    f"unknown role(s) {', '.join(unknown)} (create them first, or use "
                    "--create-roles)",
                )

    def _check_managers(self, staging: Staging) -> None:
        """A note naming the managers that rows name and no user has, in the file or
        in its userstore. The claim is written as given (a later import may add the
        manager: see the README), but a typo should not pass unseen."""
        if managers.CLAIM not in self.claims_given:
            return
        domains = {d.domain.casefold(): d.domain for d in self.service.config.userstores}
        wanted: dict[tuple[str, str], tuple[str, list[int]]] = {}
        for line, domain, value in staging.claim_values(managers.CLAIM):
            named = QualifiedName.parse(value, domain)
            known = domains.get(named.domain.casefold(), "")
            shown = str(named) if known else f"{named} (no userstore {named.domain})"
            wanted.setdefault((known, named.name.casefold()), (shown, []))[1].append(line)
        in_file = set(staging.first_lines([f"{d}/{n}" for d, n in wanted if d]))
        by_domain: dict[str, list[str]] = {}
        for domain, name in wanted:
            if domain and f"{domain}/{name}" not in in_file:
                by_domain.setdefault(domain, []).append(name)
        found = {
            (domain, key)
            for domain, names in by_domain.items()
            for key in self.service.store(domain).find_users(names)
        }
        nobody = [
            (shown, lines)
            for (domain, name), (shown, lines) in wanted.items()
            if not domain or (f"{domain}/{name}" not in in_file and (domain, name) not in found)
        ]
        if not nobody:
            return
        rows = sum(len(lines) for _, lines in nobody)
        listed = "; ".join(
            f"{shown} (line{'s' if len(lines) > 1 else ''} {_lines(lines)})"
            for shown, lines in nobody[:10]
        )
        more = f"; and {len(nobody) - 10} more" if len(nobody) > 10 else ""
        self.report.notes.append(
            f"{rows} row{'s' if rows > 1 else ''} name{'' if rows > 1 else 's'} a manager "
            f"that no user has, in this file or its userstore: {listed}{more}. The claim is "
            "kept as written; add the manager, or correct the rows "
            "(`idprov user list --claim manager=NAME` finds them)"
        )

    # -- rejects file
    def _open_rejects(self) -> None:
        """Open the ``--rejects`` file before anything is written, so that a path that
        cannot be written stops the import then, not after it committed. A new file is
        created (0600) and removed again if the import fails; an existing one is
        replaced only when the report is written. Never the file being imported."""
        path = self.rejects_path
        if path is None:
            return
        if not path.parent.is_dir():
            raise NotFoundError(
                f"directory {path.parent} (for --rejects) does not exist",
                hint="create it first, or choose a path in an existing directory",
            )
        if _same_file(path, self.given):
            raise UsageError(
                f"--rejects {path} is the file being imported: writing the rejects there "
                "would destroy it",
                hint="name another file, e.g. --rejects rejects.csv",
            )
        try:
            self.rejects_out, self.rejects_new = open_private_output(path), True
        except ConflictError:  # it exists: opened now, replaced when the report is written
            try:
                fd = os.open(path, os.O_WRONLY)
            except OSError as exc:
                raise from_os_error(exc, "open the rejects file (--rejects)") from None
            self.rejects_out = os.fdopen(fd, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise from_os_error(exc, "create the rejects file (--rejects)") from None

    def _close_rejects(self, failed: bool = False) -> None:
        """Close the rejects file; after a failure, remove it if this run created it."""
        out, self.rejects_out = self.rejects_out, None
        if out is None:
            return
        out.close()
        if failed and self.rejects_new and self.rejects_path is not None:
            self.rejects_path.unlink(missing_ok=True)

    def _write_rejects(self, staging: Staging) -> None:
        out = self.rejects_out
        if out is None:
            return
        header = self.header
        found = self._cells_at(staging.rejects_without_cells())
        out.truncate(0)  # a report of this run: it replaces the last one, and is 0600
        os.fchmod(out.fileno(), 0o600)
        writer = csv.writer(out, delimiter=self.delimiter)
        writer.writerow([*header, *REJECTS_COLUMNS])
        for line, cells, column, error in staging.rejects():
            values = cells or found.get(line, [])
            values = (values + [""] * len(header))[: len(header)]  # line, error aligned
            where = f"column {column}: " if column else ""
            writer.writerow([*values, line, where + error])
        self._close_rejects()
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
                return found  # changed since the pre-flight read it whole
            if first in lines:
                found[first] = cells
            first = reader.line_num + 1


def _trimmed(cells: list[str], width: int) -> list[str]:
    """A row's cells past the header's ``width`` dropped when they are empty (Excel
    ends every row with the separators of columns once formatted or cleared)."""
    return cells[:width] if not any(c.strip() for c in cells[width:]) else cells


def _same_file(path: Path, given: Path | BinaryIO) -> bool:
    """Whether ``path`` is the file ``given`` (a path, or the file standard input reads)."""
    try:
        target = path.stat()
        source = given.stat() if isinstance(given, Path) else os.fstat(given.fileno())
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return (target.st_dev, target.st_ino) == (source.st_dev, source.st_ino)


def _change(p: Pending, user: Any, claims: dict[str, Any]) -> dict[str, Any]:
    """What a dry run says a row would change (the claims' names, not their values)."""
    name = f"{p.domain}/{p.username}" if p.domain != "PRIMARY" else p.username
    if user is None:
        return {"user": name, "action": "create", "set": sorted(claims)}
    before = dict(user.claims)
    change: dict[str, Any] = {
        "user": name,
        "action": "update",
        "set": sorted(k for k, v in claims.items() if before.get(k) != v),
        "removed": sorted(k for k in before if k not in claims),
    }
    if p.roles is not None:
        had = {r.casefold(): r for r in user.roles}
        given = {r.casefold(): r for r in p.roles}
        change["roles_added"] = sorted(given[k] for k in given.keys() - had.keys())
        change["roles_removed"] = sorted(had[k] for k in had.keys() - given.keys())
    if p.password is not None or p.password_hash is not None:
        change["password"] = True
    return change


def _may_destroy(change: dict[str, Any], claims: dict[str, Any]) -> bool:
    """Whether a dry run's ``change`` of an existing user may destroy something at a
    target (see :func:`~idprov.provisioning.preview.imported`): a claim removed or
    blanked, ``active`` set, a role left."""
    blanked = any(claims.get(k) == "" for k in change["set"])
    return bool(change["removed"] or change.get("roles_removed") or blanked) or (
        "active" in change["set"]
    )


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:5])
    return shown + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")


def _holds(
    p: Pending, user: Any, claims: dict[str, Any] | None = None, with_roles: bool = True
) -> bool:
    """Whether ``user`` (None: not in the store) holds what the row asks: ``claims``
    (by default its own over the user's: the columns it gives) and, if it names them
    and ``with_roles``, its roles; a password cannot be read back. A line that an
    interrupted run passed counts as imported only then: the store may have refused
    its row, or never received it (its rejection was in the report that the
    interrupted run never gave), and the re-run decides it again."""
    if user is None:
        return False
    if claims is None:
        claims = {k: v for k, v in {**user.claims, **p.claims}.items() if v is not None}
    same_roles = (
        not with_roles
        or p.roles is None
        or sorted(r.casefold() for r in p.roles) == sorted(r.casefold() for r in user.roles)
    )
    return bool(claims == user.claims and same_roles)
