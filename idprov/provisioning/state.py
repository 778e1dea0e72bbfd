"""idprov's own database: the audit log, the outbox and the ledger of provisioned
entities, the import journal, the journal of user adds and renames in directories
(:class:`DirectoryWrites`), and the tables of the modules next to this one.

By default it lives at ``<data_dir>/idprov.db``, the same file as the embedded PRIMARY
userstore, so one transaction covers a local change and its records; with
``state: {url: postgresql://...}`` it is a PostgreSQL schema that several processes
share (see :mod:`idprov.statedb`). The migrations below are per dialect: SQLite's
grew one step at a time, PostgreSQL's start from the current shape.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.db import now
from idprov.statedb import STATE_FILENAME, Migrations, StateDB, ddl

if TYPE_CHECKING:
    from idprov.config.models import Config
    from idprov.db import DatabasePool
    from idprov.provisioning.ledger import Ledger
    from idprov.provisioning.outbox import Outbox
    from idprov.provisioning.state_moved import StateCopied


def _audit_schema(db: StateDB) -> None:
    db.execute(
        "CREATE TABLE audit ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,"
        " application TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
        " outcome TEXT NOT NULL, details TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX audit_at ON audit (at)")
    db.execute("CREATE INDEX audit_target ON audit (target)")


def _outbound_schema(db: StateDB) -> None:
    from idprov.provisioning.outbox import create_tables

    create_tables(db)


def _imports_schema(db: StateDB) -> None:
    db.execute(
        "CREATE TABLE imports ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, sha256 TEXT NOT NULL,"
        " options TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,"
        " lines_done INTEGER NOT NULL DEFAULT 0, actor TEXT NOT NULL, application TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX imports_file ON imports (sha256, options)")


def _audit_runs(db: StateDB) -> None:
    db.execute("ALTER TABLE audit ADD COLUMN run TEXT")
    db.execute("CREATE INDEX audit_run ON audit (run)")


def _internal_roles(db: StateDB) -> None:
    from idprov.provisioning.internal_roles import create_tables

    create_tables(db)


def _outbox_worker(db: StateDB) -> None:
    from idprov.provisioning.outbox import worker_columns

    worker_columns(db)


def _outbox_versions(db: StateDB) -> None:
    from idprov.provisioning.outbox import versions

    versions(db)


def _outbox_allowances(db: StateDB) -> None:
    from idprov.provisioning.outbox import allowances

    allowances(db)


def _outbox_passwords(db: StateDB) -> None:
    from idprov.provisioning.outbox import unsent_passwords

    unsent_passwords(db)


def _outbox_unjudged(db: StateDB) -> None:
    from idprov.provisioning.outbox import unjudged_marks

    unjudged_marks(db)


def _outbox_member_deltas(db: StateDB) -> None:
    from idprov.provisioning.outbox import member_deltas

    member_deltas(db)


def _import_batches(db: StateDB) -> None:
    """The batch an import is writing to a store that cannot roll back (a directory):
    a re-run after a kill finishes exactly those lines."""
    db.execute("ALTER TABLE imports ADD COLUMN batch_first INTEGER")
    db.execute("ALTER TABLE imports ADD COLUMN batch_last INTEGER")


def _inbound_tokens(db: StateDB) -> None:
    from idprov.provisioning.tokens import create_tables

    create_tables(db)


def _ledger_inputs(db: StateDB) -> None:
    from idprov.provisioning.ledger import inputs_table

    inputs_table(db)


_directory_writes = ddl(
    "CREATE TABLE directory_writes (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " domain TEXT NOT NULL, kind TEXT NOT NULL, name_key TEXT NOT NULL, name TEXT NOT NULL,"
    " new_name TEXT NOT NULL, entry_id TEXT, roles TEXT NOT NULL, started_at TEXT NOT NULL,"
    " UNIQUE (domain, kind, name_key))"
)
"""A user add or rename of a userstore that cannot roll back (a directory), recorded
before its first write: see :class:`DirectoryWrites`."""

_directory_write_owners = ddl(
    "ALTER TABLE directory_writes ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE directory_writes ADD COLUMN owned_at TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE directory_writes ADD COLUMN digest TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE directory_writes ADD COLUMN origin TEXT NOT NULL DEFAULT ''",
)
"""Who makes a recorded write, since when, and what it asked for (a record of an
earlier version has none: no process owns it, and no add is adopted through it)."""


_directory_write_kinds = ddl(
    "ALTER TABLE directory_writes ADD COLUMN details TEXT NOT NULL DEFAULT '{}'"
)
"""What a recorded delete, update, role rename or change of members needs to be
finished once its answer was lost (see :attr:`DirectoryWrite.details`)."""


_idp_scopes = ddl("ALTER TABLE idp_health ADD COLUMN scope TEXT")
"""Each IdP's provisioning roles as its last sync judged them (see
:func:`idprov.provisioning.guard.scope_key`)."""


def _ledger_remote(db: StateDB) -> None:
    from idprov.provisioning.ledger import remote_ids_index

    remote_ids_index(db)


_import_judgements = ddl("ALTER TABLE imports ADD COLUMN judged TEXT")
"""What the deletion guard let through and held of an import so far (see
:meth:`ImportJournal.judged`): its re-run after a kill judges the import whole."""


_ledger_lost = ddl("ALTER TABLE ledger ADD COLUMN lost_at TEXT")
"""When idprov found the account of a ledger entry lost at its target (its state is
then ``lost``: see :meth:`idprov.provisioning.ledger.Ledger.mark_lost`)."""


_POSTGRES_SCHEMA = ddl(
    "CREATE TABLE audit (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    ' at text COLLATE "C" NOT NULL, actor text NOT NULL, application text NOT NULL,'
    " action text NOT NULL, target text NOT NULL, outcome text NOT NULL,"
    " details text NOT NULL, run text)",
    "CREATE INDEX audit_at ON audit (at)",
    "CREATE INDEX audit_target ON audit (target)",
    "CREATE INDEX audit_run ON audit (run)",
    "CREATE TABLE outbox (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " idp text NOT NULL, kind text NOT NULL, local_id text NOT NULL, domain text NOT NULL,"
    " label text NOT NULL, status text NOT NULL DEFAULT 'pending',"
    " attempts integer NOT NULL DEFAULT 0, last_error text, last_status integer,"
    ' enqueued_at text COLLATE "C" NOT NULL, updated_at text COLLATE "C" NOT NULL,'
    ' next_attempt_at text COLLATE "C", claimed_by text, claimed_until text COLLATE "C",'
    " failures integer NOT NULL DEFAULT 0, UNIQUE (idp, kind, local_id))",
    "CREATE INDEX outbox_status ON outbox (status, updated_at)",
    "CREATE INDEX outbox_due ON outbox (next_attempt_at)",
    'CREATE TABLE idp_health (idp text PRIMARY KEY, failing_since text COLLATE "C",'
    ' last_success_at text COLLATE "C", last_failure_at text COLLATE "C", last_error text)',
    "CREATE TABLE ledger (idp text NOT NULL, kind text NOT NULL, local_id text NOT NULL,"
    " domain text NOT NULL, label text NOT NULL, remote_id text, state text NOT NULL,"
    " hash text, sent text, created_by_idprov integer NOT NULL DEFAULT 1,"
    " updated_at text NOT NULL, PRIMARY KEY (idp, kind, local_id))",
    "CREATE TABLE ledger_members (idp text NOT NULL, role_id text NOT NULL,"
    " user_id text NOT NULL, PRIMARY KEY (idp, role_id, user_id))",
    "CREATE INDEX ledger_members_user ON ledger_members (idp, user_id)",
    "CREATE TABLE imports (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " path text NOT NULL, sha256 text NOT NULL, options text NOT NULL,"
    " started_at text NOT NULL, finished_at text, lines_done integer NOT NULL DEFAULT 0,"
    " actor text NOT NULL, application text NOT NULL, batch_first integer,"
    " batch_last integer)",
    "CREATE INDEX imports_file ON imports (sha256, options)",
    "CREATE TABLE internal_roles (id text PRIMARY KEY, name text NOT NULL,"
    ' name_key text COLLATE "C" NOT NULL UNIQUE, created text NOT NULL,'
    " modified text NOT NULL)",
    "CREATE TABLE internal_members ("
    " role_id text NOT NULL REFERENCES internal_roles(id) ON DELETE CASCADE,"
    ' domain text COLLATE "C" NOT NULL, user_id text NOT NULL,'
    ' username text COLLATE "C" NOT NULL, PRIMARY KEY (role_id, domain, user_id))',
    "CREATE INDEX internal_members_user ON internal_members (user_id)",
    "CREATE TABLE inbound_tokens (id text PRIMARY KEY, application text NOT NULL,"
    " digest text NOT NULL UNIQUE, description text NOT NULL,"
    ' created_at text COLLATE "C" NOT NULL, created_by text NOT NULL, revoked_at text)',
    "CREATE TABLE run_locks (name text PRIMARY KEY, pid integer NOT NULL,"
    " host text NOT NULL, command text NOT NULL, since text NOT NULL)",
)
"""PostgreSQL's tables, in the shape SQLite's migrations reach (plus ``run_locks``:
who holds the advisory run lock). A later change adds a step to both lists."""

MIGRATIONS: Migrations = {
    "sqlite": [
        ("0001_audit", _audit_schema),
        ("0002_outbox_ledger", _outbound_schema),
        ("0003_imports", _imports_schema),
        ("0004_audit_runs", _audit_runs),
        ("0005_internal_roles", _internal_roles),
        ("0006_inbound_tokens", _inbound_tokens),
        ("0007_outbox_worker", _outbox_worker),
        ("0008_import_batches", _import_batches),
        ("0009_outbox_versions", _outbox_versions),
        ("0010_ledger_inputs", _ledger_inputs),
        ("0011_directory_writes", _directory_writes),
        ("0012_directory_write_owners", _directory_write_owners),
        ("0013_idp_scopes", _idp_scopes),
        ("0014_outbox_allowances", _outbox_allowances),
        ("0015_ledger_lost", _ledger_lost),
        ("0016_directory_write_kinds", _directory_write_kinds),
        ("0017_outbox_passwords", _outbox_passwords),
        ("0018_outbox_unjudged", _outbox_unjudged),
        ("0019_ledger_remote_ids", _ledger_remote),
        ("0020_import_judgements", _import_judgements),
        ("0021_outbox_member_deltas", _outbox_member_deltas),
    ],
    "postgresql": [
        ("0001_state", _POSTGRES_SCHEMA),
        ("0002_outbox_versions", _outbox_versions),
        ("0003_ledger_inputs", _ledger_inputs),
        (
            "0004_directory_writes",
            ddl(
                "CREATE TABLE directory_writes (id bigint GENERATED BY DEFAULT AS IDENTITY"
                ' PRIMARY KEY, domain text COLLATE "C" NOT NULL, kind text NOT NULL,'
                ' name_key text COLLATE "C" NOT NULL, name text NOT NULL,'
                " new_name text NOT NULL, entry_id text, roles text NOT NULL,"
                " started_at text NOT NULL, UNIQUE (domain, kind, name_key))"
            ),
        ),
        ("0005_directory_write_owners", _directory_write_owners),
        ("0006_idp_scopes", _idp_scopes),
        ("0007_outbox_allowances", _outbox_allowances),
        ("0008_ledger_lost", _ledger_lost),
        ("0009_directory_write_kinds", _directory_write_kinds),
        ("0010_outbox_passwords", _outbox_passwords),
        ("0011_outbox_unjudged", _outbox_unjudged),
        ("0012_ledger_remote_ids", _ledger_remote),
        ("0013_import_judgements", _import_judgements),
        ("0014_outbox_member_deltas", _outbox_member_deltas),
    ],
}


def audit_row(
    actor: str,
    application: str,
    action: str,
    target: str,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    run: str | None = None,
) -> tuple[Any, ...]:
    """One audit entry as :meth:`StateStore.audit_many` writes it."""
    encoded = json.dumps(details or {}, ensure_ascii=False, sort_keys=True)
    return (now(), actor, application, action, target, outcome, encoded, run)


@dataclass
class AuditEntry:
    """One line of the audit log: who, through which application, did what, when."""

    id: int
    at: str
    actor: str
    application: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)
    run: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditQuery:
    action: str | None = None
    target: str | None = None
    actor: str | None = None
    application: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int | None = 50
    """At most this many entries (None: every one)."""
    run: str | None = None


def _audit_where(query: AuditQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of the audit entries ``query`` matches, and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    for column in ("actor", "application", "run"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    for column in ("action", "target"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"substr({column}, 1, ?) = ?")
            params += [len(value), value]
    if query.since:
        where.append("at >= ?")
        params.append(query.since)
    if query.until:
        where.append("at < ?")
        params.append(query.until)
    return (" WHERE " + " AND ".join(where)) if where else "", params


class StateStore:
    """idprov's own database: the audit log here, the other tables through the
    properties below."""

    def __init__(self, db: StateDB):
        self.db = db
        self.copied: StateCopied | None = None
        """Where `idprov state copy` took this SQLite state: only a service that reads
        (``read_only``) opens it then, and the CLI warns."""
        db.migrate("state", MIGRATIONS)

    @classmethod
    def open(cls, config: Config, pool: DatabasePool, previewing: bool = False) -> StateStore:
        """The state ``config`` names (see :func:`idprov.statedb.open_state_db`). An
        SQLite state that `idprov state copy` took to PostgreSQL is refused (a
        ConfigError saying where it went), unless ``pool`` only reads or the command
        only previews (``previewing``: a dry run)."""
        from idprov.provisioning.state_moved import copied_away
        from idprov.statedb import open_state_db

        db = open_state_db(config, pool)
        try:
            copied = copied_away(db, reading=pool.read_only or previewing)
            store = cls(db)
        except BaseException:
            db.close()
            raise
        store.copied = copied
        return store

    @classmethod
    def path_in(cls, data_dir: Path) -> Path:
        return data_dir / STATE_FILENAME

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction on the state (a savepoint inside one)."""
        return self.db.transaction()

    def run_lock(self, command: str, wait: bool = False) -> AbstractContextManager[Any]:
        """The lock that lets one sync or import run at a time (see StateDB.run_lock)."""
        return self.db.run_lock(command, wait)

    @property
    def outbox(self) -> Outbox:
        from idprov.provisioning.outbox import Outbox

        return Outbox(self.db)

    @property
    def imports(self) -> ImportJournal:
        return ImportJournal(self.db)

    @property
    def directory_writes(self) -> DirectoryWrites:
        return DirectoryWrites(self.db)

    def writes_unfinished(self) -> bool:
        """Whether a change to a store that cannot roll back (a directory) is recorded
        as started and not finished (:class:`DirectoryWrites`, an import's batch): cut
        off after writing, it may have changed a role's members with no outbox row to
        say so, and group pushes compare every member until it is finished (see
        :attr:`~idprov.provisioning.outbox.OutboxRow.members_delta`)."""
        row = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM directory_writes)"
            " OR EXISTS (SELECT 1 FROM imports WHERE batch_first IS NOT NULL)"
        ).fetchone()
        return bool(row and row[0])

    @property
    def ledger(self) -> Ledger:
        from idprov.provisioning.ledger import Ledger

        return Ledger(self.db)

    def audit(
        self,
        *,
        actor: str,
        application: str,
        action: str,
        target: str,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        run: str | None = None,
    ) -> None:
        """Append one entry (``run``: the sync run it belongs to). No secrets in ``details``."""
        self.audit_many([audit_row(actor, application, action, target, outcome, details, run)])

    def audit_many(self, rows: list[tuple[Any, ...]]) -> None:
        """Append entries made with :func:`audit_row` (one statement)."""
        self.db.executemany(
            "INSERT INTO audit (at, actor, application, action, target, outcome, details, run)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def remove_audit_before(self, cutoff: str, limit: int, keep_runs: int = 0) -> int:
        """Remove up to ``limit`` of the oldest entries made before ``cutoff`` (ISO UTC);
        how many went. Kept whatever their age, as evidence that other parts read:
        each ``jit.login`` that created a user (it proves a login made a user it may
        link, see idprov/inbound/jit_trust.py), each ``idp.rename`` (an IdP's runs
        under its old name are its own), and the newest ``keep_runs`` ``sync.run``
        entries (status and the metrics read each IdP's last success from them)."""
        return self.db.execute(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?"
            " AND action != 'idp.rename'"
            " AND NOT (action = 'jit.login' AND details LIKE ?)"
            " AND id NOT IN (SELECT id FROM audit WHERE action = 'sync.run'"
            " ORDER BY id DESC LIMIT ?)"
            " ORDER BY id LIMIT ?)",
            [cutoff, '%"outcome": "created"%', keep_runs, limit],
        ).rowcount

    def audit_count(self, query: AuditQuery) -> int:
        """How many entries match ``query``, whatever its ``limit``."""
        clause, params = _audit_where(query)
        row = self.db.execute(f"SELECT count(*) FROM audit{clause}", params).fetchone()
        return int(row[0])

    def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """Newest first, filtered; ``target`` and ``action`` match as prefixes."""
        clause, params = _audit_where(query)
        if query.limit is not None:
            params.append(query.limit)
        rows = self.db.execute(
            "SELECT id, at, actor, application, action, target, outcome, details, run FROM audit"
            f"{clause} ORDER BY id DESC" + (" LIMIT ?" if query.limit is not None else ""),
            params,
        ).fetchall()
        return [
            AuditEntry(
                id=r[0],
                at=r[1],
                actor=r[2],
                application=r[3],
                action=r[4],
                target=r[5],
                outcome=r[6],
                details=json.loads(r[7]),
                run=r[8],
            )
            for r in rows
        ]


@dataclass
class ImportRun:
    """An unfinished import of one file with one set of options (see csv_import)."""

    id: int
    lines_done: int
    batch: tuple[int, int] | None
    """Lines (first, last) of a batch being written to a store that cannot roll back,
    when the run was killed in it: a re-run finishes exactly those lines."""
    judged: dict[str, Any] | None = None
    """What the deletion guard let through and held of it, and the outbox rows it
    wrote that may still wait (``rows``; see :meth:`ImportJournal.judged`). None: the
    journal of an earlier release, which noted neither (see :attr:`notes_rows`)."""

    @property
    def notes_rows(self) -> bool:
        """Whether the journal notes the import's outbox rows: every journal this release
        starts does (:meth:`ImportJournal.start`); an earlier release's never did, so
        its re-run cannot tell its rows from another change's. That release left
        ``judged`` NULL, or, where the deletion guard judged the import, its judgement
        without ``rows``."""
        return self.judged is not None and "rows" in self.judged

    def noted_rows(self) -> dict[int, int | None]:
        """The outbox rows the journal notes, each with its ``version`` when the import
        wrote it (a later change coalesced into the row raises it: the row is that
        change's then, not the import's). None: noted without its version (a journal
        written before versions were noted), taken as the import's while it waits."""
        noted: dict[int, int | None] = {}
        for entry in (self.judged or {}).get("rows", []):
            if isinstance(entry, list):
                noted[int(entry[0])] = int(entry[1])
            else:
                noted[int(entry)] = None
        return noted


class ImportJournal:
    """The ``imports`` table: how far each import got, so that a re-run resumes."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def unfinished(self, sha256: str, options: str) -> ImportRun | None:
        row = self.db.execute(
            "SELECT id, lines_done, batch_first, batch_last, judged FROM imports WHERE"
            " sha256 = ? AND options = ? AND finished_at IS NULL ORDER BY id DESC LIMIT 1",
            [sha256, options],
        ).fetchone()
        if row is None:
            return None
        batch = (int(row[2]), int(row[3])) if row[2] is not None else None
        judged = json.loads(row[4]) if row[4] else None
        return ImportRun(int(row[0]), int(row[1]), batch, judged)

    def of_other_content(self, path: str, options: str, sha256: str) -> tuple[str, int] | None:
        """The last unfinished import of ``path`` with ``options`` whose file held
        another content than ``sha256`` (the file changed since it was cut): when it
        started, and the last line it wrote; None if there is none."""
        row = self.db.execute(
            "SELECT started_at, lines_done FROM imports WHERE path = ? AND options = ?"
            " AND sha256 != ? AND finished_at IS NULL ORDER BY id DESC LIMIT 1",
            [path, options, sha256],
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def judgements(self) -> list[tuple[int, dict[str, Any]]]:
        """(id, what the guard judged of it) of each unfinished import that noted one
        (see :meth:`judged`)."""
        rows = self.db.execute(
            "SELECT id, judged FROM imports WHERE finished_at IS NULL AND judged IS NOT NULL"
            " ORDER BY id"
        ).fetchall()
        return [(int(r[0]), json.loads(r[1])) for r in rows]

    def start(self, path: str, sha256: str, options: str, actor: str, application: str) -> int:
        """A new import's journal, noting its outbox rows from the start (none yet):
        ``judged`` is NULL only in a journal an earlier release wrote."""
        row = self.db.execute(
            "INSERT INTO imports (path, sha256, options, started_at, lines_done, actor,"
            " application, judged) VALUES (?, ?, ?, ?, 0, ?, ?, ?) RETURNING id",
            [path, sha256, options, now(), actor, application, json.dumps({"rows": []})],
        ).fetchone()
        return int(row[0])

    def half_written(self) -> list[tuple[str, str, int, int]]:
        """(file, started at, first line, last line) of each import whose batch to a
        directory is recorded as being written (a running import's, or a killed one's)."""
        rows = self.db.execute(
            "SELECT path, started_at, batch_first, batch_last FROM imports"
            " WHERE batch_first IS NOT NULL ORDER BY id"
        ).fetchall()
        return [(str(p), str(at), int(first), int(last)) for p, at, first, last in rows]

    def writing(self, import_id: int, first: int, last: int) -> None:
        """Lines ``first``..``last`` are about to go to a store that cannot roll back."""
        self.db.execute(
            "UPDATE imports SET batch_first = ?, batch_last = ? WHERE id = ?",
            [first, last, import_id],
        )

    def written(self, import_id: int, last_line: int) -> None:
        """Every line up to ``last_line`` is written, with its records."""
        self.db.execute(
            "UPDATE imports SET lines_done = ?, batch_first = NULL, batch_last = NULL WHERE id = ?",
            [last_line, import_id],
        )

    def judged(self, import_id: int, judgement: dict[str, Any]) -> None:
        """What the deletion guard let through and held of the import so far (its
        :class:`~idprov.provisioning.guard.GuardWindow`'s, noted before the push sends
        anything): a re-run after a kill counts it in (``GuardWindow.resume``)."""
        self.db.execute(
            "UPDATE imports SET judged = ? WHERE id = ?",
            [json.dumps(judgement, ensure_ascii=False, sort_keys=True), import_id],
        )

    def finish(self, import_id: int) -> None:
        self.db.execute("UPDATE imports SET finished_at = ? WHERE id = ?", [now(), import_id])


@dataclass(frozen=True)
class DirectoryWrite:
    """A write that idprov started in a userstore that cannot roll back: a user's add,
    rename, update or delete, a role's rename or delete, a change of its members."""

    id: int
    kind: str
    """``add``, ``rename``, ``update``, ``delete`` (of a user); ``role_rename``,
    ``role_delete``, ``assign``, ``unassign`` (of a role)."""
    name: str
    """The username (a role's name) it had (a rename), or is given (an add)."""
    new_name: str
    """The name a rename gives it (else: ``name``)."""
    entry_id: str | None
    """The id of the user or role it changes (an add's is not known until it is made)."""
    roles: tuple[str, ...]
    """The roles an add gives the user."""
    started_at: str = ""
    owner: str = ""
    """The process making it (``host:pid:nonce``; empty in a record of an earlier
    version): no other finishes it while that one runs."""
    owned_at: str = ""
    """Since when ``owner`` has it."""
    digest: str = ""
    """What an add asked for (claims, roles, whether a password, origin), digested: a
    re-run asking for the same is the one that may adopt the user it made."""
    origin: str = ""
    """Who asked for it beside the actor: a JIT login's ``jit:<idp>:<subject>``."""
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    """What finishing it needs that the directory may no longer show: an update's
    claims changed, a delete's members or roles and reports, a change of members'
    users (see :class:`~idprov.provisioning.unit_of_work.UnitOfWork`)."""


_COLUMNS = (
    "id, kind, name, new_name, entry_id, roles, started_at, owner, owned_at, digest, origin,"
    " details"
)


def _write(row: Any) -> DirectoryWrite:
    return DirectoryWrite(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        row[4],
        tuple(json.loads(row[5])),
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        json.loads(row[11] or "{}"),
    )


class DirectoryWrites:
    """The ``directory_writes`` table: each write of a user or role in a store that
    cannot roll back (a directory: see :attr:`DirectoryWrite.kind`; an import has a
    journal of its own) is recorded here, and committed, before its first write to
    the store, and removed in the transaction that records the finished change (audit,
    outbox). A change cut off half-way stays recorded, and only what is recorded is
    finished by a re-run: a directory's leftovers alone (a stale member value, an entry
    under the new name) prove nothing about who made them. One record per user and
    kind: a process starts or takes over one only when no other process owns it
    (the caller judges whether its owner is gone)."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def recorded(self) -> list[tuple[str, DirectoryWrite]]:
        """(domain, write) of every recorded write, oldest first."""
        rows = self.db.execute(
            f"SELECT domain, {_COLUMNS} FROM directory_writes ORDER BY started_at, id"
        ).fetchall()
        return [(str(r[0]), _write(r[1:])) for r in rows]

    def find(self, domain: str, kind: str, name: str) -> DirectoryWrite | None:
        """The recorded ``kind`` of the user ``name`` (any case) of ``domain`` (of a
        change of members: the ``key`` it was started with)."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM directory_writes"
            " WHERE domain = ? AND kind = ? AND name_key = ?",
            [domain.casefold(), kind, name.casefold()],
        ).fetchone()
        return None if row is None else _write(row)

    def start(
        self,
        domain: str,
        kind: str,
        name: str,
        new_name: str,
        entry_id: str | None = None,
        roles: tuple[str, ...] = (),
        *,
        owner: str = "",
        digest: str = "",
        origin: str = "",
        replacing: DirectoryWrite | None = None,
        details: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> DirectoryWrite | None:
        """Record a write about to start, owned by ``owner``, in place of ``replacing``
        (a record of the same user and kind whose owner is gone); None when another
        record of the user and kind is there (another process's, started meanwhile).
        ``key``, where not ``name``, is what :meth:`find` finds it by (a change of
        members: the role and its users, so changes of other users go on at once)."""
        key_of = [domain.casefold(), kind, (key if key is not None else name).casefold()]
        details = details or {}
        if replacing is not None:
            self.db.execute(
                "DELETE FROM directory_writes WHERE id = ? AND owner = ?",
                [replacing.id, replacing.owner],
            )
        at = now()
        row = self.db.execute(
            "INSERT INTO directory_writes (domain, kind, name_key, name, new_name, entry_id,"
            " roles, started_at, owner, owned_at, digest, origin, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (domain, kind, name_key) DO NOTHING RETURNING id",
            [
                *key_of,
                name,
                new_name,
                entry_id,
                json.dumps(list(roles)),
                at,
                owner,
                at,
                digest,
                origin,
                json.dumps(details, sort_keys=True),
            ],
        ).fetchone()
        if row is None:
            return None
        return DirectoryWrite(
            int(row[0]),
            kind,
            name,
            new_name,
            entry_id,
            tuple(roles),
            at,
            owner,
            at,
            digest,
            origin,
            details,
        )

    def take_over(self, write: DirectoryWrite, owner: str) -> DirectoryWrite | None:
        """``write`` owned by ``owner`` from now (its start kept); None if its owner
        changed since it was read (another process took it over)."""
        at = now()
        taken = self.db.execute(
            "UPDATE directory_writes SET owner = ?, owned_at = ? WHERE id = ? AND owner = ?",
            [owner, at, write.id, write.owner],
        ).rowcount
        return replace(write, owner=owner, owned_at=at) if taken == 1 else None

    def done(self, write_id: int) -> None:
        """The write is finished (or refused, having left nothing): forget it."""
        self.db.execute("DELETE FROM directory_writes WHERE id = ?", [write_id])
