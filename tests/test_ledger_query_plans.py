"""The ledger's hot lookups keep to the primary key on SQLite. Its planner, without
statistics, prefers an index with more equal columns: a lookup of users by local id
that also asked for ``state = 'active'`` walked the state index, every active user of
the IdP, for each chunk of 500 ids. A role's push looks up its every member so, once
per import batch: an import of 30,000 more users into one role took 61 s of CPU at
90,000 users where it took 11 s at none (15 s with the lookup on the primary key)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from idprov.config import Config
from idprov.db import DatabasePool
from idprov.provisioning.ledger import Ledger
from idprov.provisioning.state import StateStore


class Recording:
    """A StateDB that notes the statements run through it."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.statements: list[tuple[str, Sequence[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.statements.append((sql, list(params)))
        return self.db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_looking_up_members_remote_ids_reads_by_primary_key(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pool = DatabasePool()
    state = StateStore.open(Config(data_dir=str(tmp_path / "data")), pool)
    try:
        with state.transaction():
            state.db.executemany(
                "INSERT INTO ledger (idp, kind, local_id, domain, label, remote_id, state,"
                " updated_at) VALUES ('corp', 'user', ?, 'PRIMARY', ?, ?, ?, '2026-12-01')",
                [
                    (f"id-{i:05}", f"u{i}", f"r{i}", "lost" if i % 10 == 0 else "active")
                    for i in range(3000)
                ],
            )
        recording = Recording(state.db)
        wanted = [f"id-{i:05}" for i in range(0, 3000, 3)] + ["id-none"]
        found = Ledger(recording).remote_ids("corp", wanted)  # type: ignore[arg-type]

        assert found == {i: f"r{int(i[3:])}" for i in wanted[:-1] if int(i[3:]) % 10 != 0}
        assert recording.statements
        for sql, params in recording.statements:
            plan = " ".join(
                str(r[-1]) for r in state.db.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            )
            assert "USING PRIMARY KEY" in plan, plan
    finally:
        state.close()
        pool.close()
