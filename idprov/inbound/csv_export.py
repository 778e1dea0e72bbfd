"""`idprov export users`: users to the CSV format `idprov import users` reads.

Columns: ``username`` (``DOMAIN/name`` outside PRIMARY), ``roles`` (joined by the
separator), then one column per claim in use. No passwords. Importing the file
with ``--mode upsert`` gives back the same users, claims and roles. The file is
created with mode 0600 (it holds user data), never over an existing one unless
asked, and never in a directory that does not exist (a typo is not a new tree).

A claims or roles cell that a spreadsheet would take for a formula (it begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written after a ``'``,
the spreadsheets' mark for text, and so is one that begins with ``'`` itself; the
import drops that one ``'`` (:func:`unescaped`), so a round trip gives back every
value exactly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from idprov.config.paths import open_private_output
from idprov.model import UserQuery

if TYPE_CHECKING:
    from collections.abc import Iterator

    from idprov.model import User
    from idprov.provisioning.service import IdentityService


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP's CSV injection list)."""


def escaped(cell: str) -> str:
    """``cell`` as the export writes it: after a ``'`` if a spreadsheet would take it
    for a formula, or if it begins with ``'`` (so that :func:`unescaped` can tell)."""
    return "'" + cell if cell.startswith((*FORMULA_STARTS, "'")) else cell


def unescaped(cell: str) -> str:
    """A cell as the import reads it: without the ``'`` that :func:`escaped` put before
    a formula's start or another ``'``; any other ``'`` is the value's own."""
    return (
        cell[1:] if cell.startswith("'") and cell[1:].startswith((*FORMULA_STARTS, "'")) else cell
    )


@dataclass
class ExportReport:
    file: str
    users: int
    columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "users": self.users, "columns": self.columns}


def _users(service: IdentityService, domain: str | None) -> Iterator[User]:
    """Every user, read as written (one streamed listing: no paging by offset, which
    costs more per page the further it goes, and nothing held in memory)."""
    return service.stream_users(UserQuery(limit=None), domain).items


def export_users(
    service: IdentityService,
    out: Path | TextIO,
    domain: str | None = None,
    separator: str = ";",
    delimiter: str = ",",
    overwrite: bool = False,
) -> ExportReport:
    """Write every user (of ``domain``, or all) to ``out``: a new file (mode 0600, in
    a directory that exists; an existing one only with ``overwrite``) or a stream."""
    claims = sorted({c for user in _users(service, domain) for c in user.claims})
    columns = ["username", "roles", *claims]
    if isinstance(out, Path):
        with open_private_output(out, overwrite) as f:
            count = _write(f, service, domain, columns, separator, delimiter)
        return ExportReport(str(out), count, columns)
    count = _write(out, service, domain, columns, separator, delimiter)
    return ExportReport("-", count, columns)


def _write(
    f: TextIO,
    service: IdentityService,
    domain: str | None,
    columns: list[str],
    separator: str,
    delimiter: str,
) -> int:
    writer = csv.writer(f, delimiter=delimiter)
    writer.writerow(columns)
    count = 0
    for user in _users(service, domain):
        values = [user.claims.get(c, "") for c in columns[2:]]
        writer.writerow(
            [
                user.qualified_name,
                escaped(separator.join(user.roles)),
                *[escaped(separator.join(v) if isinstance(v, list) else v) for v in values],
            ]
        )
        count += 1
    return count
