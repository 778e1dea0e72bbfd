"""The audit log's retention: ``audit: {keep_days: N}`` and each `idprov sync`."""

from __future__ import annotations

import sqlite3

import pytest

from idprov.provisioning import retention

OLD = [
    ("2020-01-01T00:00:00.000Z", "ann", "resident", "user.add", f"gone{i}", "ok", "{}", None)
    for i in range(5)
]


def _age_entries(state) -> None:
    conn = sqlite3.connect(state.path)
    with conn:
        conn.executemany(
            "INSERT INTO audit (at, actor, application, action, target, outcome, details, run)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            OLD,
        )
    conn.close()


def _targets(state) -> list[str]:
    return [r[0] for r in state.rows("SELECT target FROM audit ORDER BY id")]


def test_sync_removes_the_entries_older_than_keep_days(cli, state, write_config, monkeypatch):
    write_config("version: 1\naudit:\n  keep_days: 30\n")
    cli("user", "add", "alice").ok()
    _age_entries(state)
    monkeypatch.setattr(retention, "BATCH", 2)  # several short transactions
    before = _targets(state)
    assert [t for t in before if t.startswith("gone")] == [f"gone{i}" for i in range(5)]

    assert "audit_removed" not in cli("sync", "--dry-run", "--json").json()
    assert _targets(state) == before  # a dry run changes nothing

    result = cli("sync", "--json").json()
    assert result["audit_removed"] == 5
    kept = _targets(state)
    assert not [t for t in kept if t.startswith("gone")]
    assert "alice" in kept  # today's entries stay
    pruned = [e for e in cli("log", "--json").items() if e["action"] == "audit.prune"]
    assert len(pruned) == 1
    assert pruned[0]["details"]["removed"] == 5 and pruned[0]["details"]["keep_days"] == 30
    assert pruned[0]["run"] == result["run"]

    shown = cli("sync").ok()
    assert "audit log" not in shown.stdout  # nothing more to remove: nothing said
    _age_entries(state)
    assert "audit log: 5 entries older than audit.keep_days removed" in cli("sync").ok().stdout


def test_without_keep_days_every_entry_is_kept(cli, state):
    cli("user", "add", "alice").ok()
    _age_entries(state)
    assert cli("sync", "--json").json()["audit_removed"] == 0
    assert len([t for t in _targets(state) if t.startswith("gone")]) == 5


@pytest.mark.parametrize("value", ["0", "-3", "forever", "800000"])
def test_keep_days_must_be_a_number_of_days(cli, write_config, value):
    write_config(f"version: 1\naudit:\n  keep_days: {value}\n")
    error = cli("config", "validate").fails(2)
    assert "audit.keep_days" in error and "idprov.yaml:3" in error
