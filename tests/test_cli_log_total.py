"""`idprov log` says when its limit cut the log off: how many entries match in all."""

from __future__ import annotations

import sqlite3

ENTRY = (
    "INSERT INTO audit (at, actor, application, action, target, outcome, details, run)"
    " VALUES ('2026-01-01T00:00:00.000Z', 'ann', 'resident', 'user.add', ?, 'ok', '{}', NULL)"
)


def _entries(state, count: int) -> None:
    conn = sqlite3.connect(state.path)
    with conn:
        conn.executemany(ENTRY, [(f"u{i}",) for i in range(count)])
    conn.close()


def test_the_default_limit_says_how_many_entries_there_are(cli, state):
    cli("user", "add", "alice").ok()  # makes the database
    total = 70 + len(state.rows("SELECT id FROM audit"))
    _entries(state, 70)
    run = cli("log")
    assert run.exit_code == 0, run
    assert f"showing the newest 50 of {total} (--limit 0 for all)" in run.stderr
    document = cli("log", "--json").json()
    assert len(document["items"]) == 50 and document["total"] == total
    assert document["limit"] == 50


def test_the_total_counts_what_the_filters_match_and_every_entry_is_no_note(cli, state):
    cli("user", "add", "alice").ok()
    _entries(state, 5)
    document = cli("log", "--target", "u", "--limit", "2", "--json").json()
    assert [e["target"] for e in document["items"]] == ["u4", "u3"]
    assert document["total"] == 5
    everything = cli("log", "--target", "u", "--limit", "0")
    assert "showing the newest" not in everything.stderr + everything.stdout
    whole = cli("log", "--target", "u", "--limit", "5", "--json").json()
    assert whole["total"] == 5 and len(whole["items"]) == 5
    assert "showing the newest" not in cli("log", "--target", "u", "--limit", "5").stderr
