"""A PostgreSQL state that goes away once a command has committed its change: the
error says the change is made (naming it), what is left, and what finishes it, never
"nothing was written" (an admin who read that ran `user add` again and got "already
exists"; an import cut after its first batch said nothing of it was written)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.postgres import Cluster, Database
from tests.test_state_postgres import pg_keys, shared_config


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of the test's own: the test stops it (the session's serves others)."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def test_a_database_stopped_during_the_push_of_a_committed_user_add_says_it_was_added(
    cli, own_cluster, tmp_path, write_config, scim2_server, monkeypatch
):
    from idprov.provisioning.outbound import Outbound

    database = Database(own_cluster, "postgres")
    secret = tmp_path / "pg-password"
    secret.write_text(database.password + "\n")
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(f"""version: 1
data_dir: {tmp_path / "data"}
state: {{{pg_keys(database.url, secret, "idprov")}}}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: '{scim2_server.base_url}', auth: bearer, token: env:SCIM_TOKEN}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    cli("user", "add", "ann").ok()
    drain = Outbound._drain_claimed

    def stopping(self, *args, **kwargs):  # the database stops as the push starts
        own_cluster.stop()
        drain(self, *args, **kwargs)

    monkeypatch.setattr(Outbound, "_drain_claimed", stopping)
    argv = ["user", "add", "pgy", "-c", "email=pgy@example.com"]
    monkeypatch.setattr(sys, "argv", ["idprov", *argv])
    error = cli(*argv, "--json").error(1)
    assert "cannot connect" in error["message"]
    assert "after the change was committed" in error["message"]
    assert "`idprov user add pgy -c email=pgy@example.com` is done here" in error["message"]
    assert "its push did not finish" in error["message"]
    assert "nothing" not in error["message"]
    assert "do not run it again" in error["hint"]
    assert "idprov outbox retry" in error["hint"] and "once the database answers" in error["hint"]

    monkeypatch.setattr(Outbound, "_drain_claimed", drain)
    own_cluster.start()
    write_config(
        Path(tmp_path / "idprov.yaml")
        .read_text()
        .replace(f":{database.port}/", f":{own_cluster.port}/")
    )
    assert "pgy" in [u["username"] for u in cli("user", "list", "--json").items()]
    [row] = cli("outbox", "list", "--json").items()
    assert row["label"] == "pgy" and row["status"] == "pending"
    # the command's process has ended (here: its claim, which this process still runs under)
    database = Database(own_cluster, "postgres")
    database.execute("UPDATE idprov.outbox SET claimed_by = NULL, claimed_until = NULL")
    cli("outbox", "retry").ok()  # as the hint says
    assert [u["userName"] for u in scim2_server.users()].count("pgy") == 1
    assert cli("outbox", "list", "--json").items() == []


def test_a_connection_lost_after_an_import_s_first_batch_says_that_batch_is_kept(
    cli, postgres, tmp_path, write_config, monkeypatch
):
    write_config(shared_config(postgres, tmp_path))
    lines = [f"user{i:03d},u{i}@example.com" for i in range(30)]
    path = tmp_path / "users.csv"
    path.write_text("username,email\n" + "\n".join(lines) + "\n")
    cli("user", "list").ok()  # creates the directory's tables
    cli("log").ok()  # and the state's
    # The server ends the state's session while it records the second batch.
    postgres.execute(
        "CREATE FUNCTION idprov.cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF strpos(NEW.details, 'user015') > 0 THEN"
        " PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$"
    )
    postgres.execute(
        "CREATE TRIGGER cut BEFORE INSERT ON idprov.audit FOR EACH ROW"
        " EXECUTE FUNCTION idprov.cut()"
    )
    argv = ["import", "users", str(path), "--batch-size", "10"]
    monkeypatch.setattr(sys, "argv", ["idprov", *argv])
    error = cli(*argv, "--json").error(1)
    assert "the connection was lost" in error["message"]
    assert "nothing of it was written" not in error["message"]
    assert (
        f"what `idprov import users {path} --batch-size 10` committed before is kept"
        in (error["message"])
    )
    assert "run the same command again once the database answers again" in error["hint"]
    assert "an import resumes after the last row written" in error["hint"]
    assert postgres.rows("SELECT count(*) FROM directory.users") == [(10,)]


def test_a_connection_lost_before_anything_was_committed_says_nothing_was_written(
    cli, postgres, tmp_path, write_config
):
    """The message was right there, and stays: the change can simply be run again."""
    write_config(shared_config(postgres, tmp_path))
    cli("user", "list").ok()
    cli("log").ok()
    postgres.execute(
        "CREATE FUNCTION idprov.cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$"
    )
    postgres.execute(
        "CREATE TRIGGER cut BEFORE INSERT ON idprov.audit FOR EACH ROW"
        " EXECUTE FUNCTION idprov.cut()"
    )
    error = cli("user", "add", "bob", "--json").error(1)
    assert "nothing of it was written" in error["message"]
    assert "re-run the command" in error["hint"]
