"""The audit log's retention: ``audit: {keep_days: N}`` and each `idprov sync`."""

from __future__ import annotations

import sqlite3

import pytest

from idprov.provisioning import retention
from tests.test_jit import ALICE, claims_file, login, portal  # noqa: F401

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


def test_the_evidence_other_parts_read_is_kept_whatever_its_age(
    cli, state, write_config, monkeypatch
):
    """A login that created a user (JIT links it by that entry at its next login), an
    IdP's rename, and the newest sync runs (status's last success) stay; the rest of
    that age goes."""
    write_config("version: 1\naudit:\n  keep_days: 30\n")
    old = "2020-01-01T00:00:00.000Z"
    evidence = [
        (old, "a", "app", "jit.login", "PRIMARY/alice", "ok", '{"idp": "p", "outcome": "created"}'),
        (old, "a", "app", "jit.login", "PRIMARY/alice", "ok", '{"idp": "p", "outcome": "linked"}'),
        (old, "a", "app", "idp.rename", "b", "ok", '{"from": "a", "to": "b"}'),
        (old, "a", "app", "sync.run", "b", "ok", '{"b": {"done": 1}}'),
        (old, "a", "app", "sync.run", "b", "ok", '{"b": {"done": 2}}'),
        (old, "a", "app", "user.add", "PRIMARY/bob", "ok", "{}"),
    ]
    cli("user", "add", "carol").ok()
    conn = sqlite3.connect(state.path)
    with conn:
        conn.executemany(
            "INSERT INTO audit (at, actor, application, action, target, outcome, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            evidence,
        )
    conn.close()
    monkeypatch.setattr(retention, "RECENT_RUNS", 1)  # the newest run only
    assert cli("sync", "--json").json()["audit_removed"] == 3
    kept = state.rows("SELECT action, details FROM audit WHERE at = ? ORDER BY id", (old,))
    assert kept == [
        ("jit.login", '{"idp": "p", "outcome": "created"}'),
        ("idp.rename", '{"from": "a", "to": "b"}'),
        ("sync.run", '{"b": {"done": 2}}'),
    ]


def test_a_user_a_login_created_before_links_logs_in_after_a_prune(
    cli,
    portal,  # noqa: F811
    tmp_path,
):
    """JIT takes over a user that a login made before logins were linked by that
    login's audit entry: the retention pruned it, and the next login was refused
    (`not_linked`, locked out of the account it had made)."""
    created = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE))
    user_id = created.json()["user"]["id"]
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    with conn:  # as an idprov from before links left it, a year ago
        conn.execute("DELETE FROM jit_links")
        conn.execute("UPDATE audit SET at = '2025-01-01T00:00:00.000Z'")
        conn.execute("UPDATE users SET created = '2025-01-01T00:00:01.000Z'")
    conn.close()
    portal.write_text(portal.read_text() + "\naudit: {keep_days: 30}\n")
    assert cli("--config", str(portal), "sync", "--json").json()["audit_removed"] > 0
    again = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE))
    assert again.exit_code == 0, again
    assert again.json()["user"]["id"] == user_id
