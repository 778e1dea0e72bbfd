"""`idprov state copy --to NEW.yaml`: from the SQLite default to PostgreSQL, losing nothing.

Against the ``postgres`` fixture's private cluster and a real SCIM 2.0 target
(scim2-server on loopback): users, roles, claims and password hashes keep their ids,
the ledger comes over (a sync with the new configuration sends nothing, a delete
deprovisions at the target), serve tokens still authenticate; a destination that holds
anything else, a table the copy does not know, a run lock held, are refused; a dry run
and a refused copy leave the destination as they found it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from idprov.config import load_config
from idprov.provisioning.lock import RunLock
from idprov.provisioning.service import IdentityService
from tests.peers.postgres import Database
from tests.peers.scim2 import Scim2Peer

PASSWORD = "pw-alice-4711"

IDP = """identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
"""


def pg_keys(database: Database, secret: Path, schema: str) -> str:
    return f"url: '{database.url}', password: 'file:{secret}', sslmode: disable, schema: {schema}"


@pytest.fixture
def scim(scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    return scim2_server


@pytest.fixture
def configs(tmp_path: Path, postgres: Database, scim: Scim2Peer) -> tuple[Path, Path]:
    """The SQLite default (old.yaml) and the same in PostgreSQL (new.yaml): the state in
    schema ``idprov``, PRIMARY's users in ``directory`` of the same database."""
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    idps = IDP.format(base_url=scim.base_url)
    old = tmp_path / "old.yaml"
    old.write_text(f"version: 1\ndata_dir: {tmp_path / 'data'}\n{idps}")
    new = tmp_path / "new.yaml"
    new.write_text(
        f"version: 1\ndata_dir: {tmp_path / 'new-data'}\n"
        f"state: {{{pg_keys(postgres, secret, 'idprov')}}}\n"
        f"userstores:\n  - {{domain: PRIMARY, type: postgres, "
        f"{pg_keys(postgres, secret, 'directory')}}}\n{idps}"
    )
    return old, new


def requests(scim: Scim2Peer) -> int:
    """Every request this tenant of the target has answered so far."""
    assert scim.log_path is not None
    prefix = f" {urlsplit(scim.base_url).path}/"
    return sum(prefix in line for line in scim.log_path.read_text().splitlines())


def seed(cli, old: Path) -> dict[str, str]:
    """On the SQLite default: roles, users with claims and a password, all provisioned;
    a serve token. Returns the token."""
    run = ("--config", str(old))
    cli(*run, "role", "add", "staff").ok()
    cli(*run, "role", "add", "Internal/auditors").ok()
    cli(
        *run, "user", "add", "alice", "-c", "email=alice@example.com", "-c", "given_name=Alice",
        "-r", "staff", "--password-stdin", input=PASSWORD + "\n",
    ).ok()  # fmt: skip
    cli(*run, "user", "add", "bob", "-c", "email=bob@example.com", "-r", "staff").ok()
    cli(*run, "role", "assign", "Internal/auditors", "alice").ok()
    cli(*run, "sync").ok()  # as cron does: it records where each IdP points, too
    return cli(*run, "token", "create", "--app", "resident", "--json").json()


def schemas(postgres: Database) -> set[str]:
    rows = postgres.rows("SELECT nspname FROM pg_namespace")
    return {r[0] for r in rows} & {"idprov", "directory"}


def test_a_copy_carries_everything_over_and_the_new_configuration_carries_on(
    cli, configs, scim, postgres
):
    old, new = configs
    token = seed(cli, old)
    alice = cli("--config", str(old), "user", "show", "alice", "--json").json()
    assert {u["userName"] for u in scim.users()} == {"alice", "bob"}

    report = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    assert report["status"] == "copied"
    tables = {p["name"]: {t["table"]: t["rows"] for t in p["tables"]} for p in report["parts"]}
    assert tables["userstore PRIMARY"] == {"roles": 1, "user_roles": 2, "users": 2}
    assert tables["state"]["ledger"] == 3 and tables["state"]["inbound_tokens"] == 1
    assert tables["state"]["idp_targets"] == 1  # what tells a renamed IdP (idp rename)
    assert postgres.rows("SELECT count(*) FROM idprov.ledger") == [(3,)]
    assert any("sync --dry-run" in step for step in report["next_steps"])
    assert postgres.password not in str(report)

    before = requests(scim)
    cli("--config", str(new), "sync", "--json").ok()
    assert requests(scim) == before, "the ledger came over: nothing to send"
    assert cli("--config", str(new), "user", "show", "alice", "--json").json() == alice
    with IdentityService(load_config(new)) as svc:
        assert svc.verify_password("alice", PASSWORD)
        assert svc.tokens.caller(token["token"]) is not None
        assert [r.name for r in svc.internal.all()] == ["auditors"]

    cli("--config", str(new), "user", "delete", "alice", "--yes").ok()
    assert {u["userName"] for u in scim.users()} == {"bob"}
    ids = postgres.rows("SELECT id FROM idprov.audit ORDER BY id")
    assert len({i for (i,) in ids}) == len(ids), "new entries continue after the copied ones"


def test_a_rerun_after_a_complete_copy_says_so_and_changes_nothing(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    audit = postgres.rows("SELECT count(*) FROM idprov.audit")

    again = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    assert again["status"] == "already copied"
    assert postgres.rows("SELECT count(*) FROM idprov.audit") == audit


def test_a_destination_holding_users_is_refused(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    cli("--config", str(new), "user", "add", "carol").ok()
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(4)
    assert "holds" in error["message"] and "nothing was copied" in error["message"]
    assert postgres.rows("SELECT username FROM directory.users") == [("carol",)]
    assert postgres.rows("SELECT count(*) FROM idprov.ledger") == [(0,)]


def test_a_source_changed_after_its_copy_is_refused(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    cli("--config", str(old), "user", "update", "bob", "-c", "given_name=Bob").ok()
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(4)
    assert "has changed since" in error["message"]


def test_a_dry_run_shows_the_rows_and_leaves_the_destination_untouched(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    run = cli("--config", str(old), "state", "copy", "--to", str(new), "--dry-run").ok()
    assert "would copy" in run.stdout and "state\tledger\t3" in run.stdout
    assert "without --dry-run" in run.stdout
    assert schemas(postgres) == set()


def test_a_table_the_copy_does_not_know_makes_it_refuse(cli, configs, postgres, tmp_path):
    old, new = configs
    seed(cli, old)
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    conn.execute("CREATE TABLE future_things (id TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO future_things VALUES ('x')")
    conn.commit()
    conn.close()
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(1)
    assert "future_things" in error["message"] and "nothing was copied" in error["message"]
    assert schemas(postgres) == set()


def test_a_copy_waits_for_no_sync_it_refuses_while_one_runs(cli, configs, postgres, tmp_path):
    old, new = configs
    seed(cli, old)
    with RunLock(tmp_path / "data", "sync"):
        error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(8)
    assert "sync holds the lock" in error["message"]
    assert schemas(postgres) == set()


def test_a_destination_without_the_sqlite_domain_as_postgres_is_refused(
    cli, configs, tmp_path, write_config
):
    old, _ = configs
    seed(cli, old)
    text = (tmp_path / "new.yaml").read_text().replace("type: postgres, ", "")
    broken = write_config(text.split("userstores:")[0], "broken.yaml")
    error = cli("--config", str(old), "state", "copy", "--to", str(broken), "--json").error(2)
    assert "type: postgres" in error["hint"]


def test_a_copy_that_fails_midway_leaves_nothing_and_runs_again(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    cli("--config", str(new), "user", "list").ok()  # the new userstore's tables
    cli("--config", str(new), "log").ok()  # and the state's
    postgres.execute(
        "CREATE FUNCTION idprov.fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'disk full'; END $$"
    )
    postgres.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON idprov.ledger FOR EACH ROW"
        " EXECUTE FUNCTION idprov.fail()"
    )
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(1)
    assert "disk full" in error["message"]
    assert postgres.rows("SELECT count(*) FROM directory.users") == [(0,)], "one transaction"
    assert postgres.rows("SELECT count(*) FROM idprov.audit") == [(0,)]

    postgres.execute("DROP TRIGGER fail ON idprov.ledger")
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    assert postgres.rows("SELECT count(*) FROM directory.users") == [(2,)]


def test_ids_given_once_are_not_given_again(cli, configs, postgres, tmp_path):
    old, new = configs
    seed(cli, old)  # every outbox row was pushed, and deleted
    used = sqlite3.connect(tmp_path / "data" / "idprov.db").execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
    )
    (highest,) = used.fetchone()
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    [(following,)] = postgres.rows("SELECT nextval(pg_get_serial_sequence('idprov.outbox', 'id'))")
    assert following == highest + 1


def test_a_copy_is_refused_while_an_outbox_worker_holds_rows(cli, configs, postgres, tmp_path):
    old, new = configs
    seed(cli, old)
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    conn.execute(
        "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at, updated_at,"
        " claimed_by, claimed_until) VALUES ('scim', 'user', 'x', 'PRIMARY', 'bob',"
        " '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 'host:4242:worker',"
        " '9999-01-01T00:00:00.000Z')"
    )
    conn.commit()
    conn.close()
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(8)
    assert "host:4242:worker" in error["message"] and "stop idprov" in error["hint"]
    assert schemas(postgres) == set()


def test_a_copy_is_refused_while_another_process_has_the_database_open(
    cli, configs, postgres, tmp_path
):
    old, new = configs
    seed(cli, old)
    path = tmp_path / "data" / "idprov.db"
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print('open', flush=True)"
    code += "; input()"
    other = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout is not None and other.stdout.readline() == "open\n"
    try:
        error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(8)
    finally:
        other.communicate("\n")
    assert f"pid {other.pid}" in error["message"] and "stop idprov" in error["hint"]
    assert schemas(postgres) == set()


@pytest.fixture
def second_database(postgres: Database) -> Iterator[Database]:
    """Another database of the same cluster, for a userstore apart from the state."""
    name = f"{postgres.name}_hr"
    with postgres.cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield Database(postgres.cluster, name)
    finally:
        with postgres.cluster.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_userstore_in_another_database_left_out_by_a_failed_commit_comes_on_a_rerun(
    cli, postgres, second_database, tmp_path, write_config
):
    """The state commits first: a userstore of another database whose commit fails is
    copied by the next run, which finds the state (and PRIMARY) already copied."""
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    old = write_config(
        f"data_dir: {tmp_path / 'data'}\nuserstores:\n  - {{domain: PRIMARY}}\n"
        f"  - {{domain: HR, path: {tmp_path / 'hr.db'}}}\n",
        "old.yaml",
    )
    new = write_config(
        f"state: {{{pg_keys(postgres, secret, 'idprov')}}}\nuserstores:\n"
        f"  - {{domain: PRIMARY, type: postgres, {pg_keys(postgres, secret, 'directory')}}}\n"
        f"  - {{domain: HR, type: postgres, {pg_keys(second_database, secret, 'hr')}}}\n",
        "new.yaml",
    )
    cli("--config", str(old), "user", "add", "alice").ok()
    cli(
        "--config", str(old), "user", "add", "HR/bob", "--password-stdin", input="pw-bob-4567\n"
    ).ok()
    cli("--config", str(new), "user", "list", "--domain", "HR").ok()  # HR's tables
    second_database.execute(
        "CREATE FUNCTION hr.fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'hr went away'; END $$"
    )
    second_database.execute(
        "CREATE CONSTRAINT TRIGGER fail AFTER INSERT ON hr.users DEFERRABLE INITIALLY"
        " DEFERRED FOR EACH ROW EXECUTE FUNCTION hr.fail()"
    )  # fails at COMMIT
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(1)
    assert "hr went away" in error["message"]
    assert postgres.rows("SELECT username FROM directory.users") == [("alice",)]
    assert second_database.rows("SELECT count(*) FROM hr.users") == [(0,)]

    second_database.execute("DROP TRIGGER fail ON hr.users")
    report = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    assert report["status"] == "copied"
    statuses = {p["name"]: p["status"] for p in report["parts"]}
    assert statuses == {
        "state": "already copied",
        "userstore PRIMARY": "already copied",
        "userstore HR": "copied",
    }
    with IdentityService(load_config(new)) as svc:
        assert svc.verify_password("bob", "pw-bob-4567", domain="HR")


def test_a_missing_new_configuration_is_a_usage_error(cli, configs):
    old, _ = configs
    run = cli("--config", str(old), "state", "copy", "--to", "nowhere.yaml")
    assert "nowhere.yaml" in run.fails(2) and "does not exist" in run.stderr


def test_a_column_the_copy_does_not_know_makes_it_refuse(cli, configs, postgres, tmp_path):
    old, new = configs
    seed(cli, old)
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    conn.execute("ALTER TABLE ledger ADD COLUMN etag TEXT")
    conn.close()
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(1)
    assert "column etag of table ledger" in error["message"]
    assert schemas(postgres) == set()


def test_a_source_already_in_postgresql_is_refused(cli, configs):
    _, new = configs
    error = cli("--config", str(new), "state", "copy", "--to", str(new), "--json").error(2)
    assert "in PostgreSQL already" in error["message"]
