"""The checks of one CSV import row on its own (see :mod:`idprov.inbound.csv_import`).

Each row becomes a :class:`Pending` once its cells pass the userstore's policy and
the claim definitions: the username, every claim (multi-valued ones split on the
separator), the roles' names, and a password or a password hash. A refusal names the
column at fault. The checks that need the store or the rest of the file follow in
:mod:`idprov.inbound.csv_preflight`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from idprov.errors import IdprovError
from idprov.inbound.csv_export import unescaped
from idprov.inbound.csv_missing import MissingUsers
from idprov.inbound.csv_read import Columns, not_decodable
from idprov.inbound.csv_staging import Staging
from idprov.model import QualifiedName
from idprov.provisioning.internal_roles import INTERNAL, is_internal
from idprov.userstores import policy
from idprov.userstores.base import UserStore


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


class RowChecks(MissingUsers):
    """The row checks of :class:`~idprov.inbound.csv_import.CsvImport`."""

    def _check_row(
        self, staging: Staging, first: int, last: int, cells: list[str], columns: Columns
    ) -> Pending | None:
        """The row on lines ``first``-``last`` as a Pending, else rejected (None)."""

        def reject(column: str | None, message: str) -> None:
            self._reject(staging, first, cells, column, message)

        bad = [n for n in range(first, last + 1) if n in self.bad_lines]
        if bad:
            reject(None, not_decodable(self.source, bad[0], first))
            self._unread_row(first)
            return None
        if [c.strip().casefold() for c in cells] == [h.strip().casefold() for h in self.header]:
            reject(None, "repeats the header row (files joined together?): remove it")
            return None
        self._name_row(staging, first, cells, columns)
        width = len(columns.names)
        if width < len(cells) <= width + self.unnamed:
            at = next(i for i in range(width, len(cells)) if cells[i].strip())
            reject(
                None,
                f"has the value {cells[at].strip()[:40]!r} in column {at + 1}, which the header "
                "leaves unnamed: name the column in the header, or remove the value",
            )
            return None
        if len(cells) != width:
            reject(None, f"has {len(cells)} fields; the header has {width}")
            return None
        self._note_user(staging, first, cells[columns.username])
        try:
            return self._pending(first, cells, columns)
        except (IdprovError, ValueError) as exc:
            column = getattr(exc, "column", None)
            reject(column, getattr(exc, "message", str(exc)))
            return None

    def _note_user(self, staging: Staging, line: int, cell: str) -> None:
        """Note the user the row of ``line`` names, whatever becomes of the row: a
        name on two rows is found whether either passes its checks or not."""
        domain, sep, name = cell.strip().partition("/")
        if not sep:
            domain, name = self.options.domain or "PRIMARY", domain
        if name:
            staging.note_user(line, f"{domain.strip().casefold()}/{name.casefold()}", name)

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
        if (elsewhere := self._check_domain(store, name)) is not None:
            raise _CellError("username", elsewhere)
        claims = {
            claim: self._claim(cells, columns, index, claim, name)
            for index, claim in columns.claims
        }
        cell = unescaped(cells[columns.roles].strip()) if columns.roles is not None else None
        roles = self._roles(cell, store) if cell is not None else None
        password = cells[columns.password] if columns.password is not None else ""
        pw_hash = cells[columns.password_hash].strip() if columns.password_hash is not None else ""
        _check_password(store, password, pw_hash)
        return Pending(
            line, store.domain, name, cells, claims, roles, password or None, pw_hash or None
        )

    def _claim(self, cells: list[str], columns: Columns, index: int, claim: str, user: str) -> Any:
        """The ``claim`` in column ``index``: None when empty, a list when multi-valued."""
        # trimmed by the core's rule (never a control character: policy.SPACES), then
        # `'=x` is the export's =x: see csv_export
        value = unescaped(cells[index].strip(policy.SPACES))
        definition = self.known[claim]
        column = columns.names[index]
        if not value:
            return None
        if definition.multi_valued:
            values = cast(list[str], policy.trimmed(value.split(self.options.separator)))
            for item in values:
                self._check_text(column, definition, item, user)
                _in_column(column, policy.check_claim_value, definition, item, user)
            return values
        if not policy.claim_value_ok(definition, value):  # the fast path; on a refusal,
            self._check_text(column, definition, value, user)
            _in_column(column, policy.check_claim_value, definition, value, user)  # why
        elif _C1.search(value):
            self._check_text(column, definition, value, user)
        return value

    def _check_text(self, column: str, definition: Any, value: str, user: str) -> None:
        """Refuse, saying what it is, a C1 control character (U+0080-U+009F: what
        Windows-1252's quotes, dashes and euro become when the file is read as latin-1;
        the userstore's own check refuses only the others) and a line break in a claim
        that takes one line (a cell quoted over two lines: in Excel it looks like one)."""
        name = definition.name
        if found := _C1.search(value):
            at = found.start() + 1
            if self.source.encoding in ("iso8859-1", "latin-1", "latin_1"):
                why = (
                    "the file is probably Windows-1252 (what Excel writes), read as latin-1: "
                    "import it with --encoding cp1252"
                )
            else:
                why = "remove it from the file"
            raise _CellError(
                column,
                f"claim {name!r} of user {user} contains the control character "
                f"U+{ord(found.group()):04X} (character {at}); {why}",
            )
        if not definition.multiline and ("\n" in value or "\r" in value):
            multi = sorted(n for n, d in self.known.items() if d.multiline)
            takes = (
                f"only {', '.join(multi)} take{'s' if len(multi) == 1 else ''} several lines"
                if multi
                else "no claim takes several lines"
            )
            raise _CellError(
                column,
                f"claim {name!r} of user {user} holds a line break (a cell quoted over two "
                f"lines; Excel shows it on one): {name} takes one line, {takes} (declare "
                "multiline: true for the claim to accept it)",
            )

    def _roles(self, cell: str, store: UserStore) -> list[str]:
        """The roles of a roles cell, each name checked once per import: a role of the
        user's userstore, or an internal role (``Internal/NAME``, as `export users`
        writes it)."""
        roles = [
            own_role(r.strip(), store.domain)
            for r in cell.split(self.options.separator)
            if r.strip()
        ]
        for role in roles:
            if (store.domain, role) not in self._valid_roles:
                domain, name = INTERNAL, internal_role(role)
                if name is None:
                    domain, name = store.domain, role
                    check = store.config.policy
                else:
                    check = self.service.store().config.policy
                _in_column("roles", policy.check_role_name, check, name, domain)
                self._valid_roles.add((store.domain, role))
                self.roles_seen.setdefault(role_key(store.domain, role), name)
        return roles


def own_role(role: str, domain: str) -> str:
    """A roles cell's ``role`` as a role of a user of ``domain``: ``CORP/staff`` is
    ``staff`` for a user of CORP (domains compare case-insensitively), ``staff`` and
    ``Internal/NAME`` as they are. A role of another domain is refused: a user's roles
    are in its own domain."""
    named, sep, name = role.partition("/")
    if not sep or is_internal(named):
        return role
    if named.strip().casefold() == domain.casefold():
        return name.strip()
    raise _CellError(
        "roles",
        f"role {role!r} is in the {named.strip()} domain, but a user's roles are in its own "
        f"domain ({domain}): write {name.strip()!r} for {domain}/{name.strip()}, or use an "
        "internal role (Internal/NAME) to hold users of several domains",
    )


def internal_role(role: str) -> str | None:
    """The bare name of ``Internal/NAME`` in a roles cell, else None."""
    qualified = QualifiedName.parse(role, "")
    return qualified.name if is_internal(qualified.domain) else None


def role_key(domain: str, role: str) -> tuple[str, str]:
    """Which role a roles cell's ``role`` is, for a user of ``domain``."""
    internal = internal_role(role)
    if internal is not None:
        return INTERNAL, internal.casefold()
    return domain, role.casefold()


def _check_password(store: UserStore, password: str, pw_hash: str) -> None:
    """A password that the store's policy accepts, or a hash it can read; not both."""
    if password and pw_hash:
        raise _cell_error("password", "give password or password_hash, not both")
    if password:
        _in_column("password", policy.check_password, store.config.policy, password, store.domain)
    if pw_hash:
        _in_column("password_hash", store.check_password_hash, pw_hash)


_C1 = re.compile("[\x80-\x9f]")
"""The C1 control characters (Unicode ``Cc`` like C0's)."""


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
