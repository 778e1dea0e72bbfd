"""The units of work the engine plans and runs: a task per row, or a settled row.

Shared by the engine and the user and role planners, so that neither imports the
other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from idprov.errors import IdprovError
from idprov.provisioning.results import Attempt, OperationResult

if TYPE_CHECKING:
    from idprov.connectors.base import Account, Connector
    from idprov.model import User
    from idprov.provisioning.ledger import Ledger, LedgerEntry
    from idprov.provisioning.outbound import Directory, Outbound
    from idprov.provisioning.outbox import OutboxRow


@dataclass
class Leave:
    """The groups a deprovisioned user leaves first. The engine takes the members
    leaving one group out together, in one request per group (:attr:`done`); a
    deprovision whose group could not be left fails with that group's error."""

    remote_id: str
    groups: list[str] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None
    failed: list[Attempt] = field(default_factory=list)
    """The failed attempts of those requests: each counts as one of the row's."""


def leave_group(connector: Connector, group: str, remote_ids: list[str]) -> None:
    """Take the accounts ``remote_ids`` out of group ``group`` at the target. A group
    that is gone there (an administrator deleted it) holds no one: they have left it
    (a 404 failed the deprovision that waited on it, drain after drain, and the
    disable or delete was never sent). The group's own row deals with the group."""
    from idprov.connectors.base import RemoteNotFound

    try:
        connector.change_members(group, [], remote_ids)
    except RemoteNotFound:
        return


@dataclass
class Task:
    """Planned work for one row: ``run`` in a worker, ``record`` back on this thread."""

    row: OutboxRow
    operation: str
    run: Callable[[list[Attempt]], Any]
    record: Callable[[Any], OperationResult]
    account: Account | None = None
    """For user creates: what to create, so that creates can go out in bulk."""
    prior: str | None = None
    """For user creates: the ledger's mark of an earlier create whose outcome is not
    known (``creating``; ``accepted`` for later by the target): look first."""
    leave: Leave | None = None
    """For user deprovisions: the groups to leave first."""
    failed: Callable[[], None] | None = None
    """Run on this thread when ``run`` (or ``record``) raised: what the failure
    taught idprov, recorded with it (an account found lost, say)."""


Creating = tuple[str, str, str, str, str, str | None]
"""A create about to be sent: (idp, kind, local id, domain, label, what is sent as
JSON, or None), marked in the ledger before it goes."""

Outcome = tuple[Task, list[Attempt], Any]
"""A task, its attempts, and its value or the exception it raised."""


@dataclass
class Settled:
    """A row whose outcome is known without calling the target."""

    row: OutboxRow
    result: OperationResult


Planned = Task | Settled


def describe(exc: BaseException, connector: str | None = None) -> str:
    """An exception's message for the outbox and the report: ours as they are, any
    other with its class, so that the row says what went wrong. ``connector``
    (``name (package)``): the exception came from that connector's code, which is
    then named as the one with the bug, so that an operator knows whom to tell."""
    if isinstance(exc, IdprovError):
        return exc.message
    from idprov.secrecy import blank  # a connector's bug may quote what it was given

    text = blank(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__
    if connector is None:
        return text
    return (
        f"a bug in the connector {connector}, not in idprov: {text} "
        "(IDPROV_DEBUG=1 prints its traceback)"
    )


def debugging() -> bool:
    """Whether ``IDPROV_DEBUG`` is set: a bug (idprov's or a connector's) then shows
    its traceback on standard error."""
    return bool(os.environ.get("IDPROV_DEBUG"))


def print_traceback(exc: BaseException, whose: str) -> None:
    """``exc``'s traceback on standard error, headed by ``whose`` bug it is."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(f"{whose}:\n{text}")
    sys.stderr.flush()


def ledger_entry(
    row: OutboxRow,
    label: str,
    remote_id: str | None,
    state: str,
    created_by_idprov: bool,
    digest: str | None = None,
    sent: Mapping[str, Any] | None = None,
    inputs: str | None = None,
) -> LedgerEntry:
    """The ledger entry of ``row``'s entity after a successful operation (``inputs``:
    the digest of what ``sent`` was rendered from, see idprov.provisioning.inputs)."""
    from idprov.provisioning.ledger import LedgerEntry

    return LedgerEntry(
        row.idp,
        row.kind,
        row.local_id,
        row.domain,
        label,
        remote_id,
        state,
        digest,
        dict(sent) if sent is not None else None,
        created_by_idprov,
        updated_at="",
        inputs=inputs,
    )


class Planning:
    """What the user and role planners (mixins of the engine) use of it, declared
    once: the engine provides each of these."""

    outbound: Outbound
    directory: Directory
    sleep: Any
    _creating: list[Creating]
    _made: list[tuple[OutboxRow, User]]
    """The user rows this drain created or enabled again their users by (at the row's
    IdP), with them: they join their groups there."""
    _joining: list[tuple[str, list[str] | None, tuple[str, str]]]
    """Of those, the ones recorded since the last flush, as (IdP, the ids of their
    roles pushed there, None if one could not be read; (domain, user id)): their
    groups' rows are told with their records (see
    :meth:`~idprov.provisioning.outbox.Outbox.joined`)."""

    def _joining_roles(self, idp: str, user: User) -> list[str] | None:
        raise NotImplementedError

    _lost: list[LedgerEntry]
    """The roles whose groups a user's push found deleted at the target."""
    _confirmed: set[tuple[str, str]]
    """(IdP, user id) of the users whose push in this drain succeeded: their accounts
    exist at the target."""
    _targets: dict[int, str | None]
    """Role row id -> what the configuration maps its role to (see
    :meth:`~idprov.connectors.base.Connector.group_target`)."""
    _carried: dict[int, OutboxRow]
    """Rows whose push carries a password given in this very command (by row id)."""

    def _keep(self, entry: LedgerEntry) -> None:
        raise NotImplementedError

    @property
    def _ledger(self) -> Ledger:
        return self.outbound.state.ledger

    def _entry(self, row: OutboxRow) -> LedgerEntry | None:
        raise NotImplementedError

    def _skip(self, row: OutboxRow, why: str, remote_id: str | None = None) -> Settled:
        return Settled(
            row, OperationResult(row.idp, row.kind, row.label, why, "skipped", remote_id=remote_id)
        )
