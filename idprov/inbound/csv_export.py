"""`idprov export users`: users to the CSV format `idprov import users` reads.

Columns: ``username`` (``DOMAIN/name`` outside PRIMARY), ``roles`` (joined by the
separator), then one column per claim in use. No passwords. Importing the file
with ``--mode upsert`` gives back the same users, claims and roles. The file is
created with mode 0600 (it holds user data), never over an existing one unless
asked, and never in a directory that does not exist (a typo is not a new tree).
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
                separator.join(user.roles),
                *[separator.join(v) if isinstance(v, list) else v for v in values],
            ]
        )
        count += 1
    return count
