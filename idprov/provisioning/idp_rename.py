"""Renaming an identity provider without losing what idprov knows about it.

idprov's state keys everything it keeps about a target by the IdP's name in the
configuration: the ledger (which remote accounts and groups are idprov's, their ids and
digests, the memberships it made), the outbox, the IdP's health and its recorded scope
(which the deletion guard's rule for a change of scope reads). An IdP renamed in the
configuration alone leaves all of that under a name nothing reads: the next sync sees
every account at the target as new and not idprov's, and a change of scope pending
there is forgotten.

:func:`rename_idp` moves those rows from the old name to the new one in one state
transaction, under the run lock of sync and import, once the configuration names the
new one and no longer the old one (the state follows the configuration), and records
it in the audit log. Nothing at the target changes.

:func:`orphaned_idps` finds, in one query that reads the ledger's index once per IdP
name (never per user), the names the ledger holds that the configuration does not
(what those hold is counted only when there are some),
for `status`, `sync` and `config validate` to warn about. So that it can name the
likely new name, :func:`note_targets` records in ``idp_targets`` the target each
configured IdP points at (its ``base_url`` or the connector's equivalent): a
configured IdP that points where an orphaned name last pointed is most likely it.

Between the edit of the file and the rename, a push under the new name would find an
empty ledger: it would adopt the accounts idprov made there under the old name, make
its groups a second time, and leave a ledger of its own that the rename cannot merge.
:func:`idp_names` names the IdPs in that state (no ledger, and the likely new
name of an orphaned one) in one query, and records the targets as it goes (the first
push of an installation that never ran a sync records them too): outbound does not
push to them and sync refuses them until the rename, which takes the outbox rows they
made while they waited with it.

After the rename, a worker or `idprov serve` still running the configuration that names
the old name must not push under it either: the ledger is gone from there. The rename
records in ``idp_renames`` where the old name went (:func:`idp_names` reads it in the
same query), and outbound, which asks at every drain, never pushes under a name renamed
away that has no ledger of its own again (see :meth:`~idprov.provisioning.outbound.
Outbound.awaiting_rename`).

An administrator who wants the name for another identity provider gives it away with
:func:`forget_rename` (`idprov idp forget-rename`); a rename to that name does the same.
The targets the name pointed at each time it was renamed away stay (a name given away
twice has two, ``idp_rename_targets``): a configuration whose entry of that name points
at one of them is one older than that rename, and stays stopped under it, whatever
ledger the name has since (the new IdP's); one that points elsewhere is the new IdP's,
and pushes. No process needs to be found or stopped for that: the one that would push
under the name to an old target never can. A name whose target was not known when it
was renamed away is given to another IdP only with ``force`` (by either way), once
every process older than the rename is stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from idprov.db import now
from idprov.errors import ConfigError, ConflictError, LockedError, NotFoundError, UsageError
from idprov.statedb import Migrations, ddl

if TYPE_CHECKING:
    from idprov.config.models import Config, IdentityProviderConfig
    from idprov.provisioning.state import StateStore
    from idprov.statedb import StateDB

_KEEP_TARGETS = (
    "INSERT INTO idp_rename_targets (idp, target, renamed_to, renamed_at)"
    " SELECT idp, target, renamed_to, renamed_at FROM idp_renames WHERE target IS NOT NULL"
)

MIGRATIONS: Migrations = {
    "sqlite": [
        (
            "0001_idp_targets",
            ddl(
                "CREATE TABLE idp_targets (idp TEXT PRIMARY KEY, target TEXT NOT NULL,"
                " noted_at TEXT NOT NULL) WITHOUT ROWID"
            ),
        ),
        (
            "0002_idp_renames",
            ddl(
                "CREATE TABLE idp_renames (idp TEXT PRIMARY KEY, renamed_to TEXT NOT NULL,"
                " renamed_at TEXT NOT NULL) WITHOUT ROWID"
            ),
        ),
        (
            "0003_idp_renames_freed",
            ddl(
                "ALTER TABLE idp_renames ADD COLUMN target TEXT",
                "ALTER TABLE idp_renames ADD COLUMN freed_at TEXT",
            ),
        ),
        (
            "0004_idp_rename_targets",
            ddl(
                "CREATE TABLE idp_rename_targets (idp TEXT NOT NULL, target TEXT NOT NULL,"
                " renamed_to TEXT NOT NULL, renamed_at TEXT NOT NULL,"
                " PRIMARY KEY (idp, target)) WITHOUT ROWID",
                _KEEP_TARGETS,
            ),
        ),
    ],
    "postgresql": [
        (
            "0001_idp_targets",
            ddl(
                "CREATE TABLE idp_targets (idp text PRIMARY KEY, target text NOT NULL,"
                " noted_at text NOT NULL)"
            ),
        ),
        (
            "0002_idp_renames",
            ddl(
                "CREATE TABLE idp_renames (idp text PRIMARY KEY, renamed_to text NOT NULL,"
                " renamed_at text NOT NULL)"
            ),
        ),
        (
            "0003_idp_renames_freed",
            ddl(
                "ALTER TABLE idp_renames ADD COLUMN target text",
                "ALTER TABLE idp_renames ADD COLUMN freed_at text",
            ),
        ),
        (
            "0004_idp_rename_targets",
            ddl(
                "CREATE TABLE idp_rename_targets (idp text NOT NULL, target text NOT NULL,"
                " renamed_to text NOT NULL, renamed_at text NOT NULL,"
                " PRIMARY KEY (idp, target))",
                _KEEP_TARGETS,
            ),
        ),
    ],
}
"""``idp_targets``: per configured IdP, the target it pointed at when a sync or a push
last ran. ``idp_renames``: per name `idprov idp rename` moved away, the name its ledger
went to and when (a process that read its configuration before stops pushing to it),
the target the name pointed at then, and when `idprov idp forget-rename` (or a rename
to that name) gave the name to another identity provider (``freed_at``).
``idp_rename_targets``: every target a name pointed at when it was renamed away, and
where that ledger went, never overwritten by a later rename of the name (a name given
away twice has two): a configuration whose entry of that name points at one of them is
older than that rename and stays stopped, whatever ledger the name has since; renamed
back to it, the row goes."""

OWN_ROWS = ("ledger", "ledger_members", "ledger_inputs")
"""The tables whose rows under the new name would be merged with the old name's: the
new name must have none (its outbox rows, made while it waited, join the old name's)."""

TARGET_KEYS = ("base_url", "url", "instance_url", "domain", "customer")
"""The options that say which system an IdP's connector talks to (never a secret)."""


def target_of(idp: IdentityProviderConfig) -> str | None:
    """Which system ``idp`` points at: its connector and the options in
    :data:`TARGET_KEYS` it sets (a URL without credentials or a trailing ``/``);
    None when it sets none of them (a plugin with options of its own)."""
    options = idp.options
    parts = []
    for key in TARGET_KEYS:
        value = options.get(key) if isinstance(options, dict) else getattr(options, key, None)
        if isinstance(value, str) and value:
            parts.append(f"{key}={_without_credentials(value)}")
    return " ".join([idp.connector, *parts]) if parts else None


def _without_credentials(value: str) -> str:
    if "://" not in value:
        return value
    url = urlsplit(value.rstrip("/"))
    host = url.netloc.rpartition("@")[2].lower()
    return urlunsplit((url.scheme.lower(), host, url.path, url.query, ""))


def migrate_tables(db: StateDB) -> None:
    """Make this module's tables (``idp_targets``, ``idp_renames``), as every module
    keeping tables in the state does on first use."""
    db.migrate("idp_names", MIGRATIONS)


def _migrated(state: StateStore) -> StateDB:
    from idprov.provisioning import jit_links

    migrate_tables(state.db)
    state.db.migrate("jit", jit_links.MIGRATIONS)
    return state.db


def note_targets(state: StateStore, config: Config) -> None:
    """Record the target each configured IdP points at now (a row written only when it
    changed), so that an orphaned name can later be matched to its new name."""
    db = _migrated(state)
    _record_targets(state, config, dict(db.execute("SELECT idp, target FROM idp_targets")))


def _record_targets(state: StateStore, config: Config, known: Mapping[str, str]) -> None:
    """Write the target of each configured IdP whose target is not the one ``known``
    holds for it (nothing when none changed)."""
    changed = []
    for idp in config.identity_providers:
        target = target_of(idp)
        if target is not None and known.get(idp.name) != target:
            changed.append((idp.name, target, now()))
    if changed:
        with state.transaction():
            state.db.executemany(
                "INSERT INTO idp_targets (idp, target, noted_at) VALUES (?, ?, ?)"
                " ON CONFLICT (idp) DO UPDATE SET target = excluded.target,"
                " noted_at = excluded.noted_at",
                changed,
            )


def _likely(last: Mapping[str, str], config: Config) -> dict[str, str]:
    """Orphaned name -> the one configured IdP that points at the target the name last
    pointed at (``last``: name -> target); a name with none, or several, is left out."""
    pointing: dict[str, list[str]] = {}
    for idp in config.identity_providers:
        target = target_of(idp)
        if target is not None:
            pointing.setdefault(target, []).append(idp.name)
    found = {name: pointing.get(target, []) for name, target in last.items()}
    return {name: names[0] for name, names in found.items() if len(names) == 1}


@dataclass(frozen=True)
class IdpNames:
    """What the state says about the IdP names of a configuration (:func:`idp_names`)."""

    waiting: dict[str, str]
    """New name -> old name: the configured IdPs awaiting a rename (see
    :func:`idp_names`)."""
    renamed: dict[str, tuple[str, str]]
    """Every name `idprov idp rename` moved away -> (the name its ledger is under now,
    when it moved); of the names given to another identity provider since (``freed_at``),
    only those this configuration points where they pointed when one of their renames
    took them away (``idp_rename_targets``): it is older than that rename."""
    ledger: frozenset[str] = frozenset()
    """The IdP names the ledger holds rows under, but a name this configuration points
    where it pointed when it was renamed away: the rows there are another identity
    provider's, which took the name since."""


def idp_names(state: StateStore, config: Config, *, migrate: bool = True) -> IdpNames:
    """New name -> old name for each configured IdP that has no ledger and is the
    likely new name of an orphaned one (see :func:`orphaned_idps`): pushed to before
    `idprov idp rename OLD NEW`, it would take the accounts idprov made there for new
    ones; and the names renamed away (``idp_renames``); in one query, whatever the
    number of users. The targets of the configured IdPs are recorded as it goes (a
    write only when one changed: outbound asks before it pushes, so an installation
    that never ran a sync is matched). ``migrate``: make this module's tables first,
    as every reader does on first use; a caller that asks again and again does it
    once."""
    if migrate:
        migrate_tables(state.db)
    ledger: set[str] = set()
    known: dict[str, str] = {}
    renamed: dict[str, tuple[str, str]] = {}
    fenced: set[str] = set()
    pointing = {i.name: target_of(i) for i in config.identity_providers}
    for kind, idp, value, at, target, freed in state.db.execute(_NAMES_AND_TARGETS):
        if kind == "ledger":
            ledger.add(str(idp))
        elif kind == "target":
            known[str(idp)] = str(value)
        elif kind == "renamed" and freed is None:
            renamed.setdefault(str(idp), (str(value), str(at)))
        elif kind == "pointed" and pointing.get(str(idp)) == target:
            renamed[str(idp)] = (str(value), str(at))
            fenced.add(str(idp))
    _record_targets(state, config, known)
    configured = {i.name for i in config.identity_providers}
    last = {name: known[name] for name in sorted(ledger - configured) if name in known}
    waiting: dict[str, str] = {}
    for old, new in _likely(last, config).items():
        if new not in ledger:
            waiting.setdefault(new, old)
    return IdpNames(waiting, renamed, frozenset(ledger - fenced))


def awaiting_message(new: str, old: str) -> str:
    """Why nothing is pushed to ``new`` (see :func:`idp_names`)."""
    return (
        f"'{new}' awaits `idprov idp rename {old} {new}`: it has no ledger and points at "
        f"the target where the ledger of '{old}', no longer configured, was made; pushed "
        f"to now, it would take the accounts and groups idprov made there for new ones "
        f"(adopting the accounts, making the groups again)"
    )


def awaiting_hint(new: str, old: str) -> str:
    """What to run for ``new`` (see :func:`awaiting_message`)."""
    return (
        f"if '{old}' was renamed to '{new}', run `idprov idp rename {old} {new}`: it moves "
        f"the ledger and takes the outbox rows '{new}' made meanwhile; if '{old}' was "
        f"retired and '{new}' is another IdP at the same target, keep the entry of "
        f"'{old}' with `enabled: false`"
    )


# ---------------------------------------------------------------- orphaned names


@dataclass(frozen=True)
class OrphanedIdp:
    """An IdP name the ledger holds accounts or groups for, which is not configured."""

    idp: str
    users: int
    groups: int
    likely: str | None = None
    """The one configured IdP that points at the target this name last pointed at."""

    @property
    def message(self) -> str:
        held = f"{self.users} account{'s' if self.users != 1 else ''}"
        if self.groups:
            held += f" and {self.groups} group{'s' if self.groups != 1 else ''}"
        text = f"the ledger holds {held} for '{self.idp}', which is not configured"
        if self.likely is None:
            return f"{text}; if it was renamed, run `idprov idp rename {self.idp} NEW`"
        return (
            f"{text}; '{self.likely}' points at the target '{self.idp}' pointed at: if it "
            f"was renamed to '{self.likely}', run `idprov idp rename {self.idp} {self.likely}`"
        )

    @property
    def hint(self) -> str:
        until = (
            "until then nothing reads that ledger: a push under the new name takes the "
            "accounts and groups idprov made there for new ones"
        )
        if self.likely is not None:
            until = (
                f"until then nothing is pushed to '{self.likely}' while it has no ledger of "
                "its own (its changes wait in the outbox, `idprov sync` refuses it)"
            )
        return (
            f"{until}, and a change of scope pending there is not judged; if '{self.idp}' "
            "was retired, keep its entry with `enabled: false` (its ledger stays for the "
            "record)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message, "hint": self.hint}


_LEDGER_NAMES = (
    "WITH RECURSIVE names(idp) AS (SELECT min(idp) FROM ledger UNION ALL"
    " SELECT (SELECT min(l.idp) FROM ledger l WHERE l.idp > names.idp) FROM names"
    " WHERE names.idp IS NOT NULL)"
)
"""The IdP names in the ledger, found by walking its primary key one name at a time (a
loose index scan: one index seek per name, whatever the number of rows)."""

_NONE = "CAST(NULL AS TEXT)"
_NAMES_AND_TARGETS = (
    f"{_LEDGER_NAMES} SELECT 'ledger', idp, {_NONE}, {_NONE}, {_NONE}, {_NONE}"
    " FROM names WHERE idp IS NOT NULL"
    f" UNION ALL SELECT 'target', idp, target, {_NONE}, {_NONE}, {_NONE} FROM idp_targets"
    " UNION ALL SELECT 'renamed', idp, renamed_to, renamed_at, target, freed_at"
    " FROM idp_renames"
    f" UNION ALL SELECT 'pointed', idp, renamed_to, renamed_at, target, {_NONE}"
    " FROM idp_rename_targets"
)
"""(kind, IdP, value, when, target, freed): the IdP names in the ledger (``ledger``),
every recorded target (``target``), every name renamed away (``renamed``: its new
name, when, where it pointed then, and when it was given to another IdP, if it was),
and every target a name pointed at when it was renamed away (``pointed``: where that
ledger went, and when)."""


def _orphans_query(configured: list[str]) -> str:
    """The IdP names in the ledger that are not in ``configured``."""
    others = f" AND idp NOT IN ({', '.join('?' for _ in configured)})" if configured else ""
    return f"{_LEDGER_NAMES} SELECT idp FROM names WHERE idp IS NOT NULL{others}"


def orphaned_idps(state: StateStore, config: Config) -> list[OrphanedIdp]:
    """The IdP names the ledger holds rows for that ``config`` does not configure, with
    what the ledger holds there and the likely new name (see :func:`note_targets`).
    One query when there are none (status and sync run it every time); what the
    orphaned names hold is counted only when there are some."""
    db = _migrated(state)
    configured = [i.name for i in config.identity_providers]
    names = [str(r[0]) for r in db.execute(_orphans_query(configured), configured)]
    if not names:
        return []
    marks = ", ".join("?" for _ in names)
    held: dict[tuple[str, str], int] = {
        (r[0], r[1]): int(r[2])
        for r in db.execute(
            f"SELECT idp, kind, count(*) FROM ledger WHERE idp IN ({marks}) GROUP BY idp, kind",
            names,
        )
    }
    last = (
        dict(db.execute(f"SELECT idp, target FROM idp_targets WHERE idp IN ({marks})", names))
        if db.has_table("idp_targets")  # not made by `config validate`, which writes nothing
        else {}
    )
    likely = _likely(last, config)
    return [
        OrphanedIdp(
            name, held.get((name, "user"), 0), held.get((name, "role"), 0), likely.get(name)
        )
        for name in names
    ]


# ---------------------------------------------------------------- the rename


@dataclass
class RenameResult:
    """What :func:`rename_idp` moved (or, with ``dry_run``, would move)."""

    old: str
    new: str
    dry_run: bool
    moved: dict[str, int]
    """What moved: ``accounts``, ``groups`` (ledger entries), ``memberships``,
    ``inputs`` (digests of what was pushed), ``outbox`` rows, ``health`` (the health
    and scope record: 0 or 1), ``jit_links``."""
    notes: list[str] = field(default_factory=list)
    """What the administrator should know: JIT links left under the old name, a target
    that changed with the name, outbox rows that waited under the new name."""
    waited: int = 0
    """Outbox rows made under the new name while it waited for this rename (see
    :func:`idp_names`): they join the old name's (``merged`` of them into a row
    of the old name's for the same user or role)."""
    merged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rename_idp(
    state: StateStore,
    config: Config,
    old: str,
    new: str,
    *,
    actor: str,
    application: str,
    dry_run: bool = False,
    wait: bool = False,
    force: bool = False,
) -> RenameResult:
    """Move every state row kept under IdP ``old`` to ``new``, in one transaction under
    the run lock (``wait``: queue behind a running sync or import), audited as
    ``idp.rename``. ``config`` must configure ``new`` and not ``old``; ``new`` must have
    no ledger of its own; ``old`` must have some state. The outbox rows ``new`` made
    while it waited for this (see :func:`idp_names`) stay, merged into the old
    name's row for the same user or role (:func:`_merge`). A ``new`` renamed away
    before, to another name than ``old``, whose target then is not known, is refused
    (ConflictError unless ``force``, as :func:`forget_rename` refuses it). ``dry_run``
    checks the same and counts, changing nothing."""
    _check_configuration(config, old, new)
    db = _migrated(state)
    lock: AbstractContextManager[Any] = (
        nullcontext() if dry_run else state.run_lock("idp rename", wait)
    )
    with lock, nullcontext() if dry_run else state.transaction():
        moved = _counts(db, old, _moves_jit_links(config, old, new))
        _check_state(db, old, new, moved)
        _check_name_taken(db, old, new, force)
        waited, both = _count(db, "outbox", new), _both(db, old, new)
        notes = _notes(db, config, old, new, moved) + _waited(old, new, waited, len(both))
        result = RenameResult(old, new, dry_run, moved, notes, waited, len(both))
        if dry_run:
            return result
        _merge(db, both)
        _move(db, config, old, new, moved)
        state.audit(
            actor=actor,
            application=application,
            action="idp.rename",
            target=new,
            details={"from": old, "to": new, "moved": moved, "waited": waited},
        )
        note_targets(state, config)  # where the new name points, in the same transaction
    return result


def _check_configuration(config: Config, old: str, new: str) -> None:
    names = [i.name for i in config.identity_providers]
    if old == new:
        raise UsageError(
            f"'{old}' is both the old and the new name",
            hint="give the name the state "
            "holds (see `idprov status`) and the one the configuration now says",
        )
    if new not in names:
        swapped = f" (the order is OLD NEW: is '{new}' the old name?)" if old in names else ""
        raise NotFoundError(
            f"identity provider '{new}' is not configured in {config.source}",
            hint=f"rename the entry of '{old}' to '{new}' in the configuration first "
            f"(identity_providers: - name: {new}), then run this again: the state follows "
            f"the configuration{swapped}",
        )
    if old in names:
        from idprov.config.schema import Locator

        i = names.index(old)
        locator = config.locator or Locator(config.source)
        raise ConfigError(
            f"'{old}' is still configured, so its state is in use under that name",
            location=locator.where(("identity_providers", i, "name")),
            key=f"identity_providers[{i}].name",
            hint=f"remove this entry (you configured '{new}' in its place), then run this "
            "again; stop or restart `idprov serve` and outbox workers with the new "
            "configuration first, or they keep pushing under the old name",
        )


def _moves_jit_links(config: Config, old: str, new: str) -> bool:
    """JIT links name the *federated* IdP of `applications[].jit[].idp`, which may be
    another name than an outbound one: they move only when the configuration renamed
    that one too (it names ``new`` there, and no longer ``old``)."""
    federated = {j.idp for app in config.applications for j in app.jit}
    return new in federated and old not in federated


def _count(db: StateDB, table: str, idp: str, where: str = "") -> int:
    row = db.execute(f"SELECT count(*) FROM {table} WHERE idp = ?{where}", [idp]).fetchone()
    return int(row[0])


def _counts(db: StateDB, idp: str, jit_links: bool) -> dict[str, int]:
    kinds = dict(db.execute("SELECT kind, count(*) FROM ledger WHERE idp = ? GROUP BY kind", [idp]))
    return {
        "accounts": int(kinds.get("user", 0)),
        "groups": int(kinds.get("role", 0)),
        "memberships": _count(db, "ledger_members", idp),
        "inputs": _count(db, "ledger_inputs", idp),
        "outbox": _count(db, "outbox", idp),
        "health": _count(db, "idp_health", idp),
        "jit_links": _count(db, "jit_links", idp) if jit_links else 0,
    }


def _check_state(db: StateDB, old: str, new: str, moved: dict[str, int]) -> None:
    if not any(moved.values()):
        raise NotFoundError(
            f"idprov's state holds nothing under '{old}' (no ledger, outbox or health rows)",
            hint="check the old name: `idprov status` warns about each name the ledger "
            "holds that is not configured",
        )
    tables = (*OWN_ROWS, "jit_links") if moved["jit_links"] else OWN_ROWS
    own = {table: _count(db, table, new) for table in tables}
    if any(own.values()):
        held = ", ".join(f"{n} {table.replace('_', ' ')} rows" for table, n in own.items() if n)
        raise ConflictError(
            f"'{new}' has state of its own ({held}): renaming '{old}' to it would merge "
            "two ledgers",
            hint=f"a sync or push went to '{new}' before this rename: it provisioned under "
            f"that name (accounts it adopted, groups it made again: `idprov sync --verify "
            f"--dry-run --idp {new}` shows them); the two ledgers cannot be merged",
        )
    for name in (old, new):
        claims = _claims(db, name)
        if claims:
            raise LockedError(
                f"{sum(n for _, n, _ in claims)} outbox rows of '{name}' are being pushed by "
                + ", ".join(f"{owner} (until {until})" for owner, _, until in claims),
                hint="a worker or `idprov serve` still runs with an older configuration or "
                "state: stop it (or wait until it is done), restart it with the new one, "
                "then run this again",
            )


def _check_name_taken(db: StateDB, old: str, new: str, force: bool) -> None:
    """Refuse (unless ``force``) to give ``new`` to ``old`` when `idprov idp rename`
    moved the ledger of ``new`` to another name while nobody knew where ``new``
    pointed: a configuration older than that rename could not be told from ``old``
    renamed, and would push under ``new`` through the ledger of ``old``."""
    row = db.execute(
        "SELECT renamed_to, target FROM idp_renames WHERE idp = ? AND freed_at IS NULL", [new]
    ).fetchone()
    if row is None or row[1] is not None or str(row[0]) == old or force:
        return
    raise ConflictError(
        f"idprov does not know where '{new}' pointed when `idprov idp rename {new} {row[0]}` "
        f"moved its ledger (no sync or push recorded it): once '{old}' takes the name, "
        f"nothing tells a process still running a configuration older than that rename "
        f"(which would push under '{new}' to where it pointed then, through the ledger of "
        f"'{old}') from '{old}'; nothing was changed",
        hint=f"give '{old}' another name in the configuration; or stop or restart every "
        "idprov serve, outbox worker and cron job with the current configuration, then "
        "run this again with --force",
    )


def _claims(db: StateDB, idp: str) -> list[tuple[str, int, str]]:
    rows = db.execute(
        "SELECT claimed_by, count(*), max(claimed_until) FROM outbox WHERE idp = ?"
        " AND claimed_until >= ? GROUP BY claimed_by ORDER BY 1",
        [idp, now()],
    ).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def _notes(db: StateDB, config: Config, old: str, new: str, moved: dict[str, int]) -> list[str]:
    notes = []
    if not _moves_jit_links(config, old, new):
        kept = _count(db, "jit_links", old)
        if kept:
            notes.append(
                f"{kept} JIT login links stay under '{old}': they name the federated IdP of "
                f"an application's `jit:` entries, which the configuration did not rename "
                f"to '{new}'"
            )
    row = db.execute("SELECT target FROM idp_targets WHERE idp = ?", [old]).fetchone()
    now_at = target_of(next(i for i in config.identity_providers if i.name == new))
    if row is not None and now_at is not None and row[0] != now_at:
        notes.append(
            f"'{new}' points at another target than '{old}' last did: if it is not the same "
            f"system, this is not a rename (the ledger would name accounts that are not "
            f"there); `idprov sync --verify --dry-run --idp {new}` shows what is there"
        )
    return notes


def _waited(old: str, new: str, waited: int, merged: int) -> list[str]:
    if not waited:
        return []
    both = f" ({merged} merged into the row '{old}' had for the same user or role)"
    return [
        f"{waited} outbox rows made under '{new}' while it waited for this rename stay "
        f"there{both if merged else ''}: the next `idprov sync` (or `idprov outbox retry "
        f"--idp {new}`) pushes them"
    ]


_MERGED = (
    "o.id, n.id, o.status, n.status, o.attempts + n.attempts, o.last_error, n.last_error,"
    " o.last_status, n.last_status, n.label, n.domain, n.updated_at, o.allowed, n.allowed,"
    " n.unjudged, n.password_unsent"
)


def _both(db: StateDB, old: str, new: str) -> list[tuple[Any, ...]]:
    """The users and roles with an outbox row under both names: (the old row's and the
    new row's columns of :data:`_MERGED`)."""
    return [
        tuple(r)
        for r in db.execute(
            f"SELECT {_MERGED} FROM outbox o JOIN outbox n ON n.kind = o.kind"
            " AND n.local_id = o.local_id WHERE o.idp = ? AND n.idp = ? ORDER BY o.id",
            [old, new],
        )
    ]


def _merge(db: StateDB, both: list[tuple[Any, ...]]) -> None:
    """One row per user or role with rows under both names: the old name's (its id,
    since when it has waited, its attempts and failures: its history) takes the newer
    change the new name's row stands for, as an enqueue coalesces two changes: its
    label and domain, due now and pending again; the smaller allowance of the two
    (:func:`~idprov.provisioning.outbox.smaller_allowance`), the marks of either (a
    change no guard judged yet, a password not sent); held if either was held (the
    guard's reason with it: a held row is pushed only once released). The new name's
    row goes."""
    from idprov.provisioning.outbox import UNJUDGED, smaller_allowance

    merged = []
    for row in both:
        old_id, _, old_status, new_status, attempts, *errors = row[:9]
        label, domain, at, old_allowed, new_allowed, unjudged, unsent = row[9:]
        old_error, new_error, old_code, new_code = errors
        newly_held = new_status == "held" and old_status != "held"
        error, code = (new_error, new_code) if newly_held else (old_error, old_code)
        status = "held" if "held" in (old_status, new_status) else "pending"
        allowed = smaller_allowance(old_allowed, new_allowed)
        merged.append(
            (status, attempts, error, code, label, domain, at, allowed, unjudged, unsent, old_id)
        )
    db.executemany("DELETE FROM outbox WHERE id = ?", [(row[1],) for row in both])
    db.executemany("DELETE FROM outbox_members WHERE outbox_id = ?", [(row[1],) for row in both])
    db.executemany(  # members_delta: the push compares every member (see OutboxRow)
        "UPDATE outbox SET status = ?, attempts = ?, last_error = ?, last_status = ?,"
        " label = ?, domain = ?, updated_at = ?, allowed = ?, members_delta = 0,"
        f" unjudged = CASE WHEN ? <> 0 OR unjudged <> 0 THEN {UNJUDGED} ELSE 0 END,"
        " password_unsent = CASE WHEN ? = 1 THEN 1 ELSE password_unsent END,"
        " next_attempt_at = NULL, version = version + 1 WHERE id = ?",
        merged,
    )


def _move(db: StateDB, config: Config, old: str, new: str, moved: dict[str, int]) -> None:
    for table in ("ledger", "ledger_members", "ledger_inputs"):
        db.execute(f"UPDATE {table} SET idp = ? WHERE idp = ?", [new, old])
    db.execute(  # the groups' changes no row carried (see Outbox.untracked), under either name
        "INSERT INTO untracked_members (idp, role_id, changes) SELECT ?, role_id, changes"
        " FROM untracked_members WHERE idp = ? ON CONFLICT (idp, role_id)"
        " DO UPDATE SET changes = untracked_members.changes + excluded.changes",
        [new, old],
    )
    db.execute("DELETE FROM untracked_members WHERE idp = ?", [old])
    taken = db.execute(
        "UPDATE outbox SET idp = ? WHERE idp = ? AND (claimed_until IS NULL OR claimed_until < ?)",
        [new, old, now()],
    ).rowcount
    if taken != moved["outbox"]:  # claimed or enqueued since they were counted
        raise LockedError(
            f"the outbox rows of '{old}' changed during the rename; nothing moved",
            hint="a worker or `idprov serve` still runs with the old configuration: stop "
            "it, restart it with the new one, then run this again",
        )
    if moved["health"]:  # the new name's record, if any, is of no account it provisioned
        db.execute("DELETE FROM idp_health WHERE idp = ?", [new])
        db.execute("UPDATE idp_health SET idp = ? WHERE idp = ?", [new, old])
    if moved["jit_links"]:
        db.execute("UPDATE jit_links SET idp = ? WHERE idp = ?", [new, old])
    _move_judgements(db, old, new)
    row = db.execute("SELECT target FROM idp_targets WHERE idp = ?", [old]).fetchone()
    db.execute("DELETE FROM idp_targets WHERE idp = ?", [old])
    _note_renamed(db, old, new, None if row is None else str(row[0]), _target(config, new))


def _move_judgements(db: StateDB, old: str, new: str) -> None:
    """What the deletion guard judged at ``old`` of a cut import, noted in its journal,
    under ``new``: the re-run counts what went there under the new name (judged
    alone, the rest of the import went out under the guard)."""
    from idprov.provisioning.guard import Allowed
    from idprov.provisioning.state import ImportJournal

    journal = ImportJournal(db)
    for import_id, judged in journal.judgements():
        if "judged" not in judged:
            continue
        before = Allowed.restored(judged["judged"])
        after = before.renamed(old, new)
        if after != before:
            journal.judged(import_id, {**judged, "judged": after.saved()})


def _target(config: Config, name: str) -> str | None:
    return next((target_of(i) for i in config.identity_providers if i.name == name), None)


def _note_renamed(
    db: StateDB, old: str, new: str, old_target: str | None, new_target: str | None
) -> None:
    """Record in ``idp_renames`` that the ledger of ``old`` (which pointed at
    ``old_target``) went to ``new``: outbound in a process that read its configuration
    before (it still names ``old``) stops pushing to ``old`` at its next drain (see
    :meth:`~idprov.provisioning.outbound.Outbound.awaiting_rename`). Names renamed to
    ``old`` before now lead to ``new``. ``new`` is a name in use again: renamed back
    (it points, at ``new_target``, where it pointed when renamed away, or that is not
    known), its record goes; else it is given to another IdP, as by :func:`forget_rename`.
    Where ``old`` pointed is kept beside every target it pointed at when renamed away
    before (``idp_rename_targets``): a configuration pointing it at any of them stays
    stopped."""
    stamp = now()
    for table in ("idp_renames", "idp_rename_targets"):
        db.execute(f"UPDATE {table} SET renamed_to = ? WHERE renamed_to = ?", [new, old])
    db.execute(
        "DELETE FROM idp_renames WHERE idp = ? AND (target IS NULL OR target = ?)",
        [new, new_target],
    )
    db.execute("DELETE FROM idp_rename_targets WHERE idp = ? AND target = ?", [new, new_target])
    db.execute(
        "UPDATE idp_renames SET freed_at = ? WHERE idp = ? AND freed_at IS NULL", [stamp, new]
    )
    db.execute(
        "INSERT INTO idp_renames (idp, renamed_to, renamed_at, target) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (idp) DO UPDATE SET renamed_to = excluded.renamed_to,"
        " renamed_at = excluded.renamed_at, target = excluded.target, freed_at = NULL",
        [old, new, stamp, old_target],
    )
    if old_target is not None:
        db.execute(
            "INSERT INTO idp_rename_targets (idp, target, renamed_to, renamed_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (idp, target) DO UPDATE SET"
            " renamed_to = excluded.renamed_to, renamed_at = excluded.renamed_at",
            [old, old_target, new, stamp],
        )


# ---------------------------------------------------------------- a name given back


@dataclass
class ForgetRenameResult:
    """What :func:`forget_rename` did: ``name`` was renamed away to ``renamed_to`` at
    ``renamed_at`` while it pointed at ``target``; it is another IdP's to take now."""

    name: str
    renamed_to: str
    renamed_at: str
    target: str | None
    """Where the name pointed when it was renamed away: a configuration whose entry of
    that name points there still never pushes under it (None: not known, ``force``)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def forget_rename(
    state: StateStore,
    config: Config,
    name: str,
    *,
    actor: str,
    application: str,
    force: bool = False,
) -> ForgetRenameResult:
    """Give ``name``, renamed away by `idprov idp rename`, to another identity provider:
    from now on a configuration whose entry ``name`` points elsewhere than the renamed
    one did is pushed to under it (with a ledger of its own), while one that points
    where it pointed (a process older than the rename: its ledger is under the new
    name) stays stopped, however long it has run. Refused, changing nothing: a name
    not renamed away (NotFoundError), or whose configured entry points where the
    renamed one did, at this rename or an earlier one (ConflictError: it is that IdP),
    or whose target then is not known
    (ConflictError unless ``force``: nothing would tell a process older than the
    rename from the new IdP), or with outbox rows claimed now (LockedError). Audited
    as ``idp.forget_rename``."""
    db = _migrated(state)
    with state.transaction():
        row = db.execute(
            "SELECT renamed_to, renamed_at, target, freed_at FROM idp_renames WHERE idp = ?",
            [name],
        ).fetchone()
        if row is None or row[3] is not None:
            raise _not_renamed_away(name, row)
        to, at, target = str(row[0]), str(row[1]), None if row[2] is None else str(row[2])
        _check_forget(db, config, name, to, target, force)
        if target is None:
            db.execute("DELETE FROM idp_renames WHERE idp = ?", [name])
        else:
            db.execute("UPDATE idp_renames SET freed_at = ? WHERE idp = ?", [now(), name])
        result = ForgetRenameResult(name, to, at, target, _forget_notes(db, name, to, target))
        state.audit(
            actor=actor,
            application=application,
            action="idp.forget_rename",
            target=name,
            details={"renamed_to": to, "renamed_at": at, "target": target, "forced": force},
        )
    return result


def _not_renamed_away(name: str, row: Any) -> NotFoundError:
    if row is None:
        return NotFoundError(
            f"'{name}' was not renamed away by `idprov idp rename`: nothing keeps it from "
            "being used",
            hint="`idprov status` shows the names idprov's state holds",
        )
    return NotFoundError(
        f"'{name}' was given to another identity provider already, at {row[3]}",
        hint=f"a configuration whose '{name}' points elsewhere than {row[2]} is pushed to",
    )


def _check_forget(
    db: StateDB, config: Config, name: str, to: str, target: str | None, force: bool
) -> None:
    renamed = f"`idprov idp rename {name} {to}`"
    here = _target(config, name)
    kept = db.execute(
        "SELECT renamed_to FROM idp_rename_targets WHERE idp = ? AND target = ?", [name, here]
    ).fetchone()
    if kept is not None or (target is not None and here == target):
        went = to if kept is None else str(kept[0])
        raise ConflictError(
            f"'{name}' in {config.source} points at {here}, where '{name}' pointed when "
            f"`idprov idp rename` moved its ledger away (it is under '{went}' now): it is "
            "that identity provider, not another, and stays stopped under this name",
            hint=f"to use the name '{name}' again for it, rename it back in the file and run "
            f"`idprov idp rename {went} {name}`; for another identity provider, point its "
            "entry at its own target first",
        )
    if target is None and not force:
        raise ConflictError(
            f"idprov does not know where '{name}' pointed when {renamed} moved its ledger "
            "(no sync or push recorded it): once it is given to another identity provider, "
            f"nothing tells a process still running a configuration older than the rename "
            f"(which would push under '{name}' and adopt the accounts {to} holds into a "
            "second ledger) from the new one",
            hint="stop or restart every idprov serve, outbox worker and cron job with the "
            "current configuration, then run this again with --force",
        )
    claims = _claims(db, name)
    if claims:
        raise LockedError(
            f"{sum(n for _, n, _ in claims)} outbox rows of '{name}' are being pushed by "
            + ", ".join(f"{owner} (until {until})" for owner, _, until in claims),
            hint="wait until it is done, then run this again",
        )


def _forget_notes(db: StateDB, name: str, to: str, target: str | None) -> list[str]:
    notes = []
    waiting = _count(db, "outbox", name)
    if waiting:
        notes.append(
            f"{waiting} outbox rows wait under '{name}' (changes made since the rename): an "
            f"identity provider configured as '{name}' pushes them, one of a configuration "
            f"older than the rename never does (`idprov outbox discard --idp {name}` drops "
            "them)"
        )
    asked = db.execute("SELECT target, noted_at FROM idp_targets WHERE idp = ?", [name])
    found = asked.fetchone()
    if target is not None and found is not None and found[0] == target:
        notes.append(
            f"a process whose configuration names '{name}' at {target} (older than the "
            f"rename) asked to push at {found[1]}: it stays stopped; restart it with the "
            "current configuration"
        )
    return notes
