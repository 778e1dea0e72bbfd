"""Leavers: the users of a domain that a complete file no longer lists (an HR feed's
nightly snapshot of every employee), disabled or deleted by `idprov import users
--missing disable|delete --domain DOMAIN` (see :mod:`idprov.inbound.csv_import`).

The file is the complete list of ONE domain's users: ``--domain`` names it, and a
row of another domain is rejected. Every row names its user, imported or rejected:
a user whose row was rejected (a typo in a cell) is not missing; a row whose user
cannot be read (bad bytes, a wrong field count, no username) leaves the leavers
alone, since who is missing is then not known. The missing users are found and
judged by the deletion guard before anything is written (their count against the
domain's users, its enabled ones to disable, then their effects at the identity
providers, as `user delete` previews them; those effects are counted with the
pushes of the file's rows, as one change); they are disabled or deleted after the
rows are written, in batches, each one unit of work, pushed with the import's push.
A killed import re-run finds them again from the file and the store, and ends in the
same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from idprov.errors import GuardError, PolicyError, ReadOnlyError, UsageError
from idprov.inbound.csv_staging import Staging
from idprov.inbound.csv_write import BatchWriter
from idprov.model import QualifiedName
from idprov.provisioning.decide import enabled

if TYPE_CHECKING:
    from idprov.inbound.csv_read import Columns
    from idprov.inbound.csv_rows import Pending
    from idprov.provisioning.guard import Effects, GuardWindow
    from idprov.userstores.base import UserStore

Missing = Literal["keep", "disable", "delete"]
NAMED = 10
"""Users named in a note (the rest are counted)."""


@dataclass
class MissingReport:
    """The users of :attr:`domain` the file does not list, and what befell them."""

    action: Literal["disable", "delete"]
    domain: str
    of: int = 0
    """What the leavers are counted against (before the import): the domain's enabled
    users to disable (past leavers stay in it, disabled), all its users to delete."""
    users: list[str] = field(default_factory=list)
    """``DOMAIN/name`` of each user missing from the file (to disable or delete)."""
    done: int = 0
    """Of :attr:`users`, those disabled or deleted (0 in a dry run)."""
    refused: str | None = None
    """A dry run: why the deletion guard would refuse them (a run raises)."""
    unread_lines: list[int] = field(default_factory=list)
    """Rejected rows whose user is unknown: nobody is disabled or deleted."""
    failed: list[str] = field(default_factory=list)
    """``name: why`` of users the store's policy kept as they are."""
    disabled_in_file: list[str] = field(default_factory=list)
    """Users the file lists whose account is disabled (the file has no ``active``)."""

    @property
    def whose(self) -> str:
        """What :attr:`of` counts: ``active users`` (to disable) or ``users``."""
        return "active users" if self.action == "disable" else "users"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "domain": self.domain,
            "count": len(self.users),
            "of": self.of,
            "users": list(self.users),
            "done": self.done,
            "refused": self.refused,
            "unread_lines": list(self.unread_lines),
            "failed": list(self.failed),
            "disabled_in_file": len(self.disabled_in_file),
        }


def check_options(missing: Missing, mode: str, domain: str | None) -> None:
    """``--missing`` needs ``--domain`` (the userstore the file is complete for) and a
    mode that reads existing users."""
    if missing == "keep":
        return
    if mode == "create":
        raise UsageError(
            f"--missing {missing} needs --mode upsert or --mode update: with --mode create "
            "every user already in the userstore is an error",
            hint=f"e.g. idprov import users hr.csv --mode upsert --domain HR --missing {missing}",
        )
    if not domain:
        raise UsageError(
            f"--missing {missing} needs --domain DOMAIN: the userstore whose complete list "
            "of users the file is (its users not in the file are "
            f"{'disabled' if missing == 'disable' else 'deleted'})",
            hint="give the feed's users a userstore of their own (e.g. HR), so that no other "
            f"account is ever missing from it: --domain HR --missing {missing} "
            "(even --domain PRIMARY must be said)",
        )


class MissingUsers(BatchWriter):
    """The leavers' half of :class:`~idprov.inbound.csv_import.CsvImport`."""

    missing_report: MissingReport | None
    missing_users: list[tuple[str, str]]
    """(id, username) of the users to disable or delete, found before the write."""

    def _missing_scope(self) -> None:
        """Before the file is read: the domain's store can take the change."""
        action = self.options.missing
        self.missing_report, self.missing_users = None, []
        if action == "keep":
            return
        store = self.service.store(self.options.domain)
        done = "disabled" if action == "disable" else "deleted"
        if store.config.read_only:
            raise ReadOnlyError(
                f"--missing {action}: the {store.domain} userstore is read-only, so its "
                f"users missing from the file cannot be {done}",
                hint=f"set read_only: false on userstore {store.domain}, or import without "
                "--missing",
            )
        if action == "disable" and not store.keeps_claim("active"):
            raise UsageError(
                f"--missing disable: the {store.domain} userstore maps no `active` claim, so "
                "it cannot hold a disabled user",
                hint="map `active` in its claim_attributes, or use --missing delete",
            )
        self.missing_report = MissingReport(action, store.domain)

    # -- pre-flight: who the file names
    def _name_row(self, staging: Staging, line: int, cells: list[str], columns: Columns) -> None:
        """Note the user a row names, whatever becomes of the row; a row whose user
        cannot be read (called only for rows that decode) is noted by its line."""
        missing = self.missing_report
        if missing is None:
            return
        if len(cells) != len(columns.names):
            missing.unread_lines.append(line)
            return
        domain, sep, name = cells[columns.username].strip().partition("/")
        if not sep:
            domain, name = missing.domain, domain
        if not name.strip():
            missing.unread_lines.append(line)
        elif domain.strip().casefold() == missing.domain.casefold():
            staging.name(name.strip().casefold())

    def _unread_row(self, line: int) -> None:
        if self.missing_report is not None:
            self.missing_report.unread_lines.append(line)

    def _check_domain(self, store: UserStore, name: str) -> str | None:
        """Why a row of ``store`` is refused with ``--missing`` (another domain's)."""
        missing = self.missing_report
        if missing is None or store.domain.casefold() == missing.domain.casefold():
            return None
        return (
            f"{store.domain}/{name} is not a user of {missing.domain}: with --missing, the "
            f"file lists the users of {missing.domain} only (import the others without it)"
        )

    def _note_disabled(self, batch: list[Pending], existing: dict[tuple[str, str], Any]) -> None:
        """Users the file lists whose account is disabled: not enabled again here (an
        administrator may have disabled them), noted unless the file has ``active``."""
        missing = self.missing_report
        if missing is None or "active" in self.claims_given:
            return
        for p in batch:
            user = existing.get((p.domain, p.username.casefold()))
            if user is not None and not enabled(user):
                missing.disabled_in_file.append(user.qualified_name)

    # -- before anything is written: who is missing, judged
    def _find_missing(self, staging: Staging, window: GuardWindow | None = None) -> None:
        """The domain's users no row names (the enabled ones, to disable), judged by
        the deletion guard against the users they are of (the enabled ones, to
        disable): over it, a GuardError (a dry run notes it). Under it, their effects
        at the IdPs prime ``window`` (the import's): the pushes of the file's rows are
        judged with them from the first batch on, as one change."""
        missing = self.missing_report
        if missing is None or missing.unread_lines:
            return
        store = self.service.store(missing.domain)
        for users in store.iter_users(self.options.batch_size, roles=False):
            counted = users if missing.action == "delete" else [u for u in users if enabled(u)]
            missing.of += len(counted)
            staging.add_domain_users(
                (u.id, u.username, u.username.casefold(), enabled(u)) for u in users
            )
        self.missing_users = staging.missing(disabled_too=missing.action == "delete")
        missing.users = [str(QualifiedName(store.domain, name)) for _, name in self.missing_users]
        why, effects = self._guard_verdict()
        if why is None:
            if window is not None:
                window.prime(effects, self.service.allow_deletes)
            return
        message, needed = why
        if self.options.dry_run:
            missing.refused = message
            return
        raise GuardError(
            f"{message}; nothing was changed",
            hint=f"is {Path(self.source.name).name} complete (not a truncated export)? If "
            f"these users did leave, run the command again with --allow-deletes {needed}",
        )

    def _guard_verdict(self) -> tuple[tuple[str, int] | None, list[Effects]]:
        """(why, the ``--allow-deletes`` that accepts it) if the deletion guard refuses
        the missing users: first their count against the domain's (enabled) users, by
        each of the application's IdPs' user thresholds (the defaults when it has
        none), then their effects at those IdPs, as `user delete` previews them; and
        those effects (none when refused on the count)."""
        from idprov.config.models import GuardConfig
        from idprov.provisioning import preview
        from idprov.provisioning.guard import over

        missing = self.missing_report
        assert missing is not None
        count, allow = len(missing.users), self.service.allow_deletes
        if not count:
            return None, []
        accepted = allow is not None and count <= allow
        verb = missing.action
        file = Path(self.source.name).name
        share = f" ({100.0 * count / missing.of:.0f}%)" if missing.of else ""
        said = (
            f"--missing {verb} would {verb} {count:,} of the {missing.of:,} {missing.whose} of "
            f"the {missing.domain} userstore{share}: they are not in {file}"
        )
        limits = [
            (f"of {n}", self.service.idp(n).deletion_guard.users) for n in self.service.targets()
        ]
        for whose, threshold in limits or [("by default", GuardConfig().users)]:
            why = over(threshold, count, missing.of, "users")
            if why and not accepted:
                return (f"{said}: the deletion guard refuses it, {why} {whose}", count), []
        verdict = preview.leavers(self.service, self._leavers(), delete=verb == "delete")
        verdict = verdict.without_sync()
        effects = list(verdict.effects.values())
        if verdict.trips:
            return (f"{said}; deletion guard: {verdict.message()}", verdict.needed), effects
        return None, effects

    def _leavers(self) -> list[tuple[str, str, str]]:
        """(id, domain, qualified name) of the missing users, as the guard's previews
        take them (none when who is missing is not known)."""
        missing = self.missing_report
        if missing is None or missing.unread_lines:
            return []
        return [
            (i, missing.domain, str(QualifiedName(missing.domain, n)))
            for i, n in self.missing_users
        ]

    # -- after the rows: disable or delete them
    def _write_missing(self) -> None:
        """Disable or delete the missing users, a batch per unit of work (audited as
        the import's, pushed with it); a user gone meanwhile, or disabled meanwhile
        (to disable), is left as it is."""
        missing = self.missing_report
        if missing is None or not missing.users:
            return
        store = self.service.store(missing.domain)
        size = self.options.batch_size
        todo = self.missing_users
        phase = "disabling leavers" if missing.action == "disable" else "deleting leavers"
        self._journal_start()  # a run cut among them is resumed, its rows pushed
        for start in range(0, len(todo), size):
            self._leavers_batch(store, todo[start : start + size])
            if self.progress:
                self.progress(phase, min(start + size, len(todo)), len(todo))

    def _leavers_batch(self, store: UserStore, batch: list[tuple[str, str]]) -> None:
        missing = self.missing_report
        assert missing is not None
        found = store.find_users([name for _, name in batch])
        users = [
            u
            for user_id, name in batch
            if (u := found.get(name.casefold())) is not None and u.id == user_id
        ]
        if missing.action == "disable":
            users = [u for u in users if enabled(u)]
        if not users:
            return
        done = []
        with self.service.unit_of_work(push=self.options.push) as uow:
            for user in users:
                try:
                    if missing.action == "delete":
                        uow.delete_user(user.username, store.domain)
                    else:
                        uow.update_user(user.username, {"active": "false"}, domain=store.domain)
                except PolicyError as exc:  # checked before the user's write
                    missing.failed.append(f"{user.qualified_name}: {exc.message}")
                    continue
                done.append(user.qualified_name)
            if done:
                uow.audit(
                    "user.import.missing",
                    Path(self.source.name).name,
                    {"domain": store.domain, "action": missing.action, "users": done},
                )
            self._note_rows(uow)
        missing.done += len(done)
        self._merge(uow.outbound)

    def _missing_notes(self) -> None:
        """The report's notes on the leavers: what was not done, and why."""
        missing = self.missing_report
        if missing is None:
            return
        if missing.unread_lines:
            count = len(missing.unread_lines)
            lines = ", ".join(str(n) for n in missing.unread_lines[:NAMED])
            more = " ..." if count > NAMED else ""
            self.report.notes.append(
                f"--missing {missing.action}: nobody was {_done(missing.action)}: "
                f"{_n(count, 'rejected row')} (line{'s' if count > 1 else ''} {lines}{more}) "
                f"name{'s' if count == 1 else ''} no user that can be read, so who is missing "
                "from the file is not known; fix "
                f"{'it' if count == 1 else 'them'} and run the import again"
            )
        if missing.failed:
            self.report.notes.append(
                f"{_n(len(missing.failed), 'missing user')} not {_done(missing.action)}, "
                "refused by the userstore's policy: " + "; ".join(missing.failed[:NAMED])
            )
        disabled = missing.disabled_in_file
        if disabled:
            names = ", ".join(disabled[:NAMED]) + (" ..." if len(disabled) > NAMED else "")
            self.report.notes.append(
                f"{_n(len(disabled), 'user')} in the file {'is' if len(disabled) == 1 else 'are'} "
                f"disabled ({names}), not enabled again by the import: give the file an "
                "`active` column, or `idprov user update NAME -c active=true`"
            )


def _done(action: str) -> str:
    return "disabled" if action == "disable" else "deleted"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
