"""An SQLite state that fails (disk full) once `user add` has committed: the user
is added and its push waits in the outbox, so the error says the command is done
here and `idprov outbox retry` finishes it once some space is free, as a PostgreSQL
state lost then says (it said "free some space and run again": run again, `user
add` said "already exists")."""

from __future__ import annotations

import sqlite3
import sys


def a_full_disk() -> sqlite3.Error:
    """SQLite's own error for a database that cannot grow (SQLITE_FULL)."""
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA max_page_count = 1")
    try:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (randomblob(100000))")
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("SQLite grew past max_page_count")


def test_a_full_disk_during_the_push_of_a_committed_user_add_says_it_was_added(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    from idprov.provisioning.outbound import Outbound

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(f"""version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: '{scim2_server.base_url}', auth: bearer, token: env:SCIM_TOKEN}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    cli("user", "add", "ann").ok()
    full = a_full_disk()
    assert full.sqlite_errorname == "SQLITE_FULL"

    def filling(self, *args, **kwargs):  # the disk fills as the push starts
        raise full

    drain = Outbound._drain_claimed
    monkeypatch.setattr(Outbound, "_drain_claimed", filling)
    argv = ["user", "add", "pgy"]
    monkeypatch.setattr(sys, "argv", ["idprov", *argv])
    error = cli(*argv, "--json").error(1)
    monkeypatch.setattr(Outbound, "_drain_claimed", drain)
    assert "cannot grow: the disk is full" in error["message"]
    assert "after the change was committed" in error["message"]
    assert "`idprov user add pgy` is done here" in error["message"]
    assert "run again" not in error["hint"]
    assert "do not run it again" in error["hint"]
    assert "`idprov outbox retry` once some space is free" in error["hint"]
    assert [(r["label"], r["status"]) for r in cli("outbox", "list", "--json").items()] == [
        ("pgy", "pending")
    ]
    # what the hint says finishes it, once the command's process has ended (here: its
    # claim, which this process still runs under, is let go)
    db = sqlite3.connect(tmp_path / "data" / "idprov.db")
    with db:
        db.execute("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL")
    db.close()
    cli("outbox", "retry").ok()
    assert [u["userName"] for u in scim2_server.users()].count("pgy") == 1
