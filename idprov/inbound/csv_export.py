"""`idprov export users`: users to the CSV format `idprov import users` reads.

Columns: ``username`` (``DOMAIN/name`` outside PRIMARY), ``roles`` (joined by the
separator), then one column per claim in use. No passwords. Importing the file
with ``--mode upsert`` gives back the same users, claims and roles. The file is
created with mode 0600: it holds user data.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.config.paths import create_private_file
from idprov.model import UserQuery

if TYPE_CHECKING:
    from collections.abc import Iterator

    from idprov.model import User
    from idprov.provisioning.service import IdentityService

PAGE = 1000


@dataclass
class ExportReport:
    file: str
    users: int
    columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "users": self.users, "columns": self.columns}


def _users(service: IdentityService, domain: str | None) -> Iterator[User]:
    offset = 0
    while True:
        page = service.list_users(UserQuery(limit=PAGE, offset=offset), domain)
        yield from page.items
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


def export_users(
    service: IdentityService,
    path: Path,
    domain: str | None = None,
    separator: str = ";",
    delimiter: str = ",",
) -> ExportReport:
    """Write every user (of ``domain``, or all) to ``path``."""
    claims = sorted({c for user in _users(service, domain) for c in user.claims})
    columns = ["username", "roles", *claims]
    create_private_file(path)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(columns)
        for user in _users(service, domain):
            values = [user.claims.get(c, "") for c in claims]
            writer.writerow(
                [
                    user.qualified_name,
                    separator.join(user.roles),
                    *[separator.join(v) if isinstance(v, list) else v for v in values],
                ]
            )
            count += 1
    return ExportReport(str(path), count, columns)
