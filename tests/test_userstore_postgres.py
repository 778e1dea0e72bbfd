"""The PostgreSQL userstore as users meet it: configured in a file, used through the
CLI next to the embedded store, and when the database is unreachable, refuses the
credentials, has no TLS, or drops the connection in the middle of an import.

Its contract (users, roles, paging, filters, bulk writes) is
tests/test_userstore_contract.py. The server is the ``postgres`` fixture's private
cluster; what was written is read back with a connection of the test's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from idprov.config import Config, load_text
from idprov.config.postgres import PostgresUserstoreConfig
from idprov.config.secrets import SecretRef
from idprov.errors import ConfigError, StoreError
from idprov.model import UserQuery
from idprov.userstores.postgres import PostgresUserStore
from tests.peers.postgres import Cluster, Database, free_port
from tests.peers.slapd import make_certificates

HEADER = "username,email,title,roles\n"


def pg_yaml(database: Database, tmp_path: Path, **overrides: str) -> str:
    """A configuration with PRIMARY (SQLite) and PG (``database``); the password in a
    file: secret, unless ``password`` says otherwise."""
    secret = tmp_path / "pg-password"
    secret.write_text(database.password + "\n")
    keys = {"url": database.url, "password": f"file:{secret}", "sslmode": "disable", **overrides}
    lines = "".join(f"    {k}: {v}\n" for k, v in keys.items() if v)
    return f"userstores:\n  - domain: PRIMARY\n  - domain: PG\n    type: postgres\n{lines}"


@pytest.fixture
def configured(postgres, tmp_path, write_config):
    write_config(pg_yaml(postgres, tmp_path))
    return postgres


def test_users_and_roles_land_in_the_database_beside_the_embedded_store(cli, configured, state):
    cli("role", "add", "PG/staff").ok()
    cli("user", "add", "PG/Alice", "-c", "email=alice@example.com", "--role", "staff").ok()
    cli("user", "add", "alice").ok()
    cli("user", "passwd", "PG/alice", "--password-stdin", input="Wonder-land1\n").ok()
    listed = cli("user", "list", "--json").json()["items"]
    assert [(u["domain"], u["username"]) for u in listed] == [("PRIMARY", "alice"), ("PG", "Alice")]
    rows = configured.rows(
        "SELECT u.username, u.claims->>'email', u.password_hash, r.name FROM users u"
        " JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id"
    )
    ((username, email, password_hash, role),) = rows
    assert (username, email, role) == ("Alice", "alice@example.com", "staff")
    assert password_hash.startswith("$scrypt$") and "Wonder-land1" not in password_hash
    assert state.rows("SELECT username FROM users") == [("alice",)]  # only PRIMARY's
    targets = sorted(t for (t,) in state.rows("SELECT target FROM audit"))
    assert targets == ["PG/Alice", "PG/Alice", "PG/staff", "alice"]


def test_an_unreachable_server_is_named_and_nothing_is_written(cli, postgres, tmp_path, state):
    port = free_port()
    url = f"postgresql://idprov@127.0.0.1:{port}/{postgres.name}"
    (tmp_path / "idprov.yaml").write_text(pg_yaml(postgres, tmp_path, url=url))
    run = cli("user", "add", "PG/alice", "--json")
    error = run.error(1)
    assert error["code"] == "store"
    assert f"127.0.0.1:{port}/{postgres.name}" in error["message"]
    assert "Connection refused" in error["message"]
    assert "pg_hba.conf" in error["hint"]
    assert postgres.password not in run.stdout + run.stderr
    assert state.counts()["audit"] == 0


def test_wrong_credentials_name_the_host_and_the_secret_never_the_password(
    cli, postgres, tmp_path, state
):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password-4711\n")
    (tmp_path / "idprov.yaml").write_text(pg_yaml(postgres, tmp_path, password=f"file:{wrong}"))
    run = cli("user", "add", "PG/alice", "--json")
    error = run.error(1)
    assert f"127.0.0.1:{postgres.port}" in error["message"]
    assert "password authentication failed" in error["message"]
    assert f"file:{wrong}" in error["hint"]
    assert "not-the-password-4711" not in run.stdout + run.stderr
    assert postgres.password not in run.stdout + run.stderr
    assert state.counts()["audit"] == 0


def test_a_user_without_privileges_is_told_which_to_grant(cli, postgres, tmp_path, state):
    postgres.execute("CREATE ROLE clerk LOGIN PASSWORD 'clerk-password-1'")
    secret = tmp_path / "clerk"
    secret.write_text("clerk-password-1\n")
    url = f"postgresql://clerk@127.0.0.1:{postgres.port}/{postgres.name}"
    (tmp_path / "idprov.yaml").write_text(
        pg_yaml(postgres, tmp_path, url=url, password=f"file:{secret}")
    )
    error = cli("user", "add", "PG/alice", "--json").error(1)
    assert "permission denied for schema public" in error["message"]
    assert "grant clerk CREATE on schema public" in error["hint"]
    assert state.counts()["audit"] == 0


def test_tls_is_verified_by_default_and_a_server_without_it_is_refused(cli, postgres, tmp_path):
    (tmp_path / "idprov.yaml").write_text(pg_yaml(postgres, tmp_path, sslmode=""))
    error = cli("user", "list", "--domain", "PG", "--json").error(2)
    assert "server does not support SSL" in error["message"]
    assert "sslmode: disable" in error["hint"]


@pytest.fixture
def tls_cluster() -> Iterator[Cluster]:
    cluster = Cluster(tls=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def test_a_tls_server_is_verified_against_ca_file(cli, tls_cluster, tmp_path, write_config):
    database = Database(tls_cluster, "postgres")
    write_config(pg_yaml(database, tmp_path, sslmode="", ca_file=tls_cluster.ca_file))
    cli("user", "add", "PG/alice").ok()  # sslmode verify-full (the default): TLS or nothing
    assert database.rows("SELECT username FROM users") == [("alice",)]
    other_ca = tmp_path / "other-ca"
    make_certificates(other_ca)
    write_config(pg_yaml(database, tmp_path, sslmode="", ca_file=str(other_ca / "ca.pem")))
    error = cli("user", "add", "PG/bob", "--json").error(2)
    assert "certificate verify failed" in error["message"]
    assert str(other_ca / "ca.pem") in error["hint"]
    assert database.rows("SELECT username FROM users") == [("alice",)]


def test_a_connection_lost_mid_import_rolls_back_and_a_rerun_finishes_exactly(
    cli, configured, tmp_path, state
):
    cli("role", "add", "PG/staff").ok()
    lines = [f"PG/user{i:03d},u{i}@example.com,T{i},staff" for i in range(30)]
    path = tmp_path / "users.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    # The server ends the session itself while it writes user015 (the second batch).
    configured.execute(
        "CREATE FUNCTION cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.username = 'user015' THEN PERFORM pg_terminate_backend(pg_backend_pid());"
        " END IF; RETURN NEW; END $$"
    )
    configured.execute(
        "CREATE TRIGGER cut BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION cut()"
    )
    run = cli("import", "users", str(path), "--batch-size", "10", "--json")
    error = run.error(1)
    assert "connection was lost" in error["message"] and "rolled back" in error["message"]
    assert configured.rows("SELECT count(*) FROM users") == [(10,)]
    assert state.rows("SELECT lines_done FROM imports") == [(11,)]

    configured.execute("DROP TRIGGER cut ON users")
    report = cli("import", "users", str(path), "--batch-size", "10", "--json").json()
    assert (report["created"], report["skipped_already_imported"], report["rejected"]) == (
        20,
        10,
        0,
    )
    rows = configured.rows(
        "SELECT u.username, u.claims::text, string_agg(r.name, ';') FROM users u"
        " LEFT JOIN user_roles ur ON ur.user_id = u.id LEFT JOIN roles r ON r.id = ur.role_id"
        " GROUP BY u.username, u.claims::text ORDER BY u.username"
    )
    assert [(name, json.loads(claims), roles) for name, claims, roles in rows] == [
        (f"user{i:03d}", {"email": f"u{i}@example.com", "title": f"T{i}"}, "staff")
        for i in range(30)
    ]
    imported = [
        json.loads(d)
        for (d,) in state.rows("SELECT details FROM audit WHERE action = 'user.import'")
    ]
    assert sorted(n for d in imported for n in d["created"]) == [f"user{i:03d}" for i in range(30)]


def test_two_domains_share_a_database_in_schemas_of_their_own(
    cli, postgres, tmp_path, write_config
):
    text = pg_yaml(postgres, tmp_path, schema="sales")
    other = text.split("  - domain: PG\n")[1].replace("schema: sales", "schema: hr")
    write_config(text + "  - domain: HR\n" + other)
    cli("user", "add", "PG/alice").ok()
    cli("user", "add", "HR/alice").ok()
    cli("user", "add", "HR/bob").ok()
    assert postgres.rows("SELECT username FROM sales.users") == [("alice",)]
    assert postgres.rows("SELECT username FROM hr.users ORDER BY 1") == [("alice",), ("bob",)]


def end_sessions(database: Database) -> int:
    """End idprov's sessions on ``database`` from the server side, as a restart or a
    failover would, and wait until the server has let them go; returns how many."""
    pids = [
        pid
        for (pid,) in database.rows(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'idprov'"
            " AND datname = current_database()"
        )
    ]
    database.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    deadline = time.monotonic() + 10
    while database.rows("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)) != [
        (0,)
    ]:
        assert time.monotonic() < deadline, "the server did not end the sessions"
        time.sleep(0.01)
    return len(pids)


def test_a_dropped_connection_is_reopened_for_reads_and_new_transactions_only(postgres, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(postgres.password)
    config = PostgresUserstoreConfig(
        url=postgres.url, password=SecretRef(f"file:{secret}"), sslmode="disable"
    )
    store = PostgresUserStore(config, Config().claim_definitions())
    try:
        store.add_user("alice", {}, None)
        assert end_sessions(postgres) == 1
        assert store.find_user("ALICE").username == "alice"  # a read: on a new connection
        assert end_sessions(postgres) == 1
        with store.transaction():  # BEGIN found the connection dropped: a new one
            store.add_user("bob", {}, None)
        with pytest.raises(StoreError) as info:
            with store.transaction():
                store.add_user("carol", {}, None)
                end_sessions(postgres)
                store.add_user("dave", {}, None)  # inside a transaction: never re-run
        assert "connection was lost" in info.value.message
        assert "nothing of it was written" in info.value.message
        assert [u.username for u in store.list_users(UserQuery()).items] == ["alice", "bob"]
    finally:
        store.close()


# ---- configuration and cost


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ("url: mysql://u@h/db", "url", "postgresql://USER@HOST"),
        ("url: postgresql://u@h:port/db", "url", "postgresql://USER@HOST"),
        ("url: 'postgresql://u:hunter2@h/db'", "url", "secret reference of its own"),
        ("url: postgresql://h/db", "url", "name the user and the database"),
        ("url: postgresql://u@h/", "url", "name the user and the database"),
        ("url: postgresql://u@h/db?sslmode=disable", "url", "not ?query"),
        ("url: postgresql://u@h/db\n    password: hunter2", "password", "are references"),
        ("url: postgresql://u@h/db\n    sslmode: prefer", "sslmode", "one of"),
        ("url: postgresql://u@h/db\n    sslmode: disable\n    ca_file: ca.pem", "ca_file", "needs"),
        ("url: postgresql://u@h/db\n    schema: 'x; DROP'", "schema", "lower-case"),
        ("url: postgresql://u@h/db\n    connect_timeout: 0", "connect_timeout", "at least 1"),
        ("url: postgresql://u@h/db\n    colour: blue", "colour", "unknown key"),
    ],
)
def test_options_are_checked_when_the_config_loads(extra, key, says):
    text = f"userstores:\n  - domain: PRIMARY\n  - domain: PG\n    type: postgres\n    {extra}\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "t.yaml")
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.strip().startswith(f"{key}:"))
    assert info.value.message.startswith(f"t.yaml:{line}:5: userstores[1].{key}: ")
    assert key in info.value.message and says in info.value.message
    assert "hunter2" not in info.value.message


def test_the_url_gives_host_port_database_and_user(tmp_path):
    config = load_text(
        "userstores:\n  - domain: PRIMARY\n  - {domain: PG, type: postgres,"
        " url: 'postgresql://svc%40corp@db.example.com/identity', ca_file: ca.pem}\n",
        "t.yaml",
        tmp_path,
    )
    store = config.userstore("PG")
    assert isinstance(store, PostgresUserstoreConfig)
    assert (store.host, store.port, store.database, store.user) == (
        "db.example.com",
        5432,
        "identity",
        "svc@corp",
    )
    assert (store.sslmode, store.ca_file) == ("verify-full", str(tmp_path / "ca.pem"))


def test_psycopg_is_imported_only_when_a_postgres_store_opens(run_python, configured, tmp_path):
    code = f"""
import sys
from idprov.config import load_text
from idprov.provisioning.service import IdentityService
with IdentityService(load_text({pg_yaml(configured, tmp_path)!r}, "t.yaml")) as svc:
    svc.add_user("alice")
    print("psycopg" in sys.modules)
    svc.add_user("PG/alice")
    print("psycopg" in sys.modules)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


def test_a_password_in_a_driver_message_is_hidden_without_mangling_names():
    from idprov.pg import reason as _reason

    message = ValueError("connection failed: bad\n\tpassword 'S3cret-pass-99' for db.example.com")
    assert _reason(message, "S3cret-pass-99") == "bad password '***' for db.example.com"
    assert _reason(ValueError("at db.example.com"), "x") == "at db.example.com"
