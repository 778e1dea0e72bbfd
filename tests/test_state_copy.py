"""`idprov state copy --to NEW.yaml`: from the SQLite default to PostgreSQL, losing nothing.

Against the ``postgres`` fixture's private cluster and a real SCIM 2.0 target
(scim2-server on loopback): users, roles, claims and password hashes keep their ids,
the ledger comes over (a sync with the new configuration sends nothing, a delete
deprovisions at the target), serve tokens still authenticate; a destination that holds
anything else, a table the copy does not know, a run lock held, are refused; a dry run
and a refused copy leave the destination as they found it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from idprov.cli.common import as_idprov_error
from idprov.config import load_config
from idprov.config.loader import load_file
from idprov.errors import ConfigError, LockedError
from idprov.inbound.serve_auth import IssuedTokens
from idprov.provisioning import state_copy
from idprov.provisioning.lock import AdvisoryRunLock, RunLock
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


def every_row(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table of an SQLite file with its rows (plain sqlite3)."""
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"'), key=repr) for n in names}
    finally:
        conn.close()


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


def test_after_a_copy_the_old_configuration_refuses_to_change_its_state(
    cli, configs, postgres, tmp_path
):
    """A timer or `idprov serve` left on the old configuration would write to a file no
    longer used, and push from a second ledger: it is refused, saying where the state
    went; commands that only read still show the old file, with a warning."""
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    path = tmp_path / "data" / "idprov.db"
    before = every_row(path)

    for argv in (("user", "add", "zed"), ("sync",), ("token", "create", "--app", "resident")):
        error = cli("--config", str(old), *argv, "--json").error(2)
        assert f"idprov's state in {path} was copied to PostgreSQL at" in error["message"]
        assert f"/{postgres.name}, schema idprov on " in error["message"]
        assert str(new) in error["message"] and "state copy --forget" in error["hint"]
        assert postgres.password not in str(error)
    with pytest.raises(ConfigError, match="was copied to PostgreSQL"):
        IssuedTokens(load_config(old))  # what idprov serve checks its callers with
    assert every_row(path) == before, "nothing was written to the old file"

    listed = cli("--config", str(old), "user", "list", "--json")
    assert {u["username"] for u in listed.items()} == {"alice", "bob"}
    warning = json.loads(listed.stderr)["warning"]
    assert warning["code"] == "state_copied" and str(new) in warning["hint"]
    for argv in (("log",), ("status",), ("plan",), ("sync", "--dry-run"), ("idp", "list")):
        # what only reads, or previews, shows the old file with the warning
        assert "was copied to PostgreSQL" in cli("--config", str(old), *argv).ok().stderr
    assert cli("--config", str(new), "user", "add", "zed").ok()


def test_forget_lets_the_old_configuration_work_again(cli, configs, postgres, tmp_path):
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    cli("--config", str(old), "user", "add", "zed").fails(2)

    for argv in (("sync", "--dry-run"), ("status",), ("user", "list")):
        cli("--config", str(new), *argv).ok()  # looking at the new state changes nothing

    forgotten = cli("--config", str(old), "state", "copy", "--forget", "--json").json()
    assert forgotten["status"] == "forgotten" and forgotten["copied"]["schema"] == "idprov"
    assert forgotten["checked"] is True and forgotten["since"] == []
    assert any("stop idprov on" in n for n in forgotten["notes"])
    cli("--config", str(old), "user", "add", "zed").ok()
    assert postgres.rows("SELECT count(*) FROM directory.users") == [(2,)], "left as it is"
    again = cli("--config", str(old), "state", "copy", "--forget", "--json").json()
    assert again["status"] == "not copied"
    forced = cli("--config", str(old), "state", "copy", "--to", str(new), "--force", "--json")
    assert "--forget" in forced.error(2)["message"]


def test_forget_refuses_once_the_new_state_has_moved_on(cli, configs, scim, postgres, tmp_path):
    """Copied, then run a while on PostgreSQL: going back to the SQLite file would lose
    what the new state knows (its ledger's new accounts: the next sync on the old file
    would take them for someone else's, or make them again). --forget says what moved
    on and changes nothing; --forget --force goes back all the same, saying what is lost."""
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    cli("--config", str(new), "user", "add", "carol", "-c", "email=c@example.com", "-r", "staff")
    assert "carol" in {u["userName"] for u in scim.users()}  # an account the old file lacks
    path = tmp_path / "data" / "idprov.db"
    before = every_row(path)

    error = cli("--config", str(old), "state", "copy", "--forget", "--json").error(4)
    message = error["message"]
    assert "schema idprov has moved on since the copy of " in message
    assert "audit entries since the copy (" in message and "user.add" in message
    assert "the state: ledger holds 4 rows, 3 when copied" in message
    assert "userstore PRIMARY: users holds 3 rows, 2 when copied" in message
    assert f"{path} knows none of it" in message and "nothing was changed" in message
    assert "--forget --force" in error["hint"] and "cannot copy a state back" in error["hint"]
    assert every_row(path) == before
    cli("--config", str(old), "user", "add", "zed").fails(2)  # still refused

    forced = cli("--config", str(old), "state", "copy", "--forget", "--force", "--json").json()
    assert forced["status"] == "forgotten"
    assert any(n.startswith("lost with the move: ") and "user.add" in n for n in forced["notes"])
    cli("--config", str(old), "user", "add", "zed").ok()


def test_forget_sees_rows_made_and_removed_since_and_users_changed(cli, configs, postgres):
    """Counts alone miss an outbox row pushed and gone, or a user changed in place: the
    ids given and the users' modification times tell them."""
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    postgres.execute(
        "INSERT INTO idprov.outbox (idp, kind, local_id, domain, label, enqueued_at,"
        " updated_at) VALUES ('scim', 'user', 'x', 'PRIMARY', 'x', '2026', '2026')"
    )
    postgres.execute("DELETE FROM idprov.outbox WHERE local_id = 'x'")
    postgres.execute("UPDATE directory.users SET modified = now() WHERE username = 'bob'")
    error = cli("--config", str(old), "state", "copy", "--forget", "--json").error(4)
    assert "the state: rows were added to outbox since (and removed)" in error["message"]
    assert "userstore PRIMARY: 1 users changed since" in error["message"]
    assert "audit entries" not in error["message"]


def test_forget_refuses_when_it_cannot_look_at_the_new_state(cli, configs, postgres, tmp_path):
    """A new state it cannot reach, or a new configuration moved away, is no answer:
    --forget says so and changes nothing, unless --force; --to names a moved file."""
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    moved = tmp_path / "moved.yaml"
    new.rename(moved)
    error = cli("--config", str(old), "state", "copy", "--forget", "--json").error(2)
    assert "cannot tell whether the state at PostgreSQL at " in error["message"]
    assert f"the new configuration the copy recorded, {new}, is not there" in error["message"]
    assert "--to NEW.yaml" in error["hint"] and "--forget --force" in error["hint"]

    secret = tmp_path / "pg-password"
    secret.write_text("not-the-password\n")
    error = cli(
        "--config", str(old), "state", "copy", "--forget", "--to", str(moved), "--json"
    ).error(1)
    assert "cannot tell whether" in error["message"] and "cannot connect" in error["message"]
    assert "not-the-password" not in str(error)
    cli("--config", str(old), "user", "add", "zed").fails(2)

    forced = cli(
        "--config", str(old), "state", "copy", "--forget", "--to", str(moved), "--force",
        "--json",
    ).json()  # fmt: skip
    assert forced["status"] == "forgotten" and forced["checked"] is False
    assert any("was not looked at: " in n for n in forced["notes"])
    cli("--config", str(old), "user", "add", "zed").ok()


def test_a_rerun_of_a_copy_forgotten_and_unchanged_records_it_again(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    cli("--config", str(old), "state", "copy", "--forget").ok()
    again = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    assert again["status"] == "already copied"
    cli("--config", str(old), "user", "add", "zed").fails(2)


def test_a_dry_run_leaves_the_old_configuration_working(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new), "--dry-run").ok()
    cli("--config", str(old), "user", "add", "zed").ok()


def test_a_destination_holding_users_is_refused(cli, configs, postgres):
    old, new = configs
    seed(cli, old)
    cli("--config", str(new), "user", "add", "carol").ok()
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(4)
    assert "holds" in error["message"] and "nothing was copied" in error["message"]
    assert postgres.rows("SELECT username FROM directory.users") == [("carol",)]
    assert postgres.rows("SELECT count(*) FROM idprov.ledger") == [(0,)]


def test_a_source_changed_after_its_copy_is_refused(cli, configs, postgres):
    """The move was abandoned (--forget) and the old configuration used again."""
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    cli("--config", str(old), "state", "copy", "--forget").ok()
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


def hr_elsewhere(
    postgres: Database, second_database: Database, tmp_path: Path, write_config: Callable[..., Path]
) -> tuple[Path, Path]:
    """The old configuration (PRIMARY and HR, two SQLite files) and the new one: the
    state and PRIMARY in ``postgres``, HR in another database (``second_database``)."""
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
    return old, new


def fail_hr_commits(second_database: Database) -> None:
    """HR's database refuses, at COMMIT, any transaction that added users (its
    tables must exist: a command of the new configuration made them)."""
    second_database.execute(
        "CREATE FUNCTION hr.fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'hr went away'; END $$"
    )
    second_database.execute(
        "CREATE CONSTRAINT TRIGGER fail AFTER INSERT ON hr.users DEFERRABLE INITIALLY"
        " DEFERRED FOR EACH ROW EXECUTE FUNCTION hr.fail()"
    )


def test_a_userstore_in_another_database_left_out_by_a_failed_commit_comes_on_a_rerun(
    cli, postgres, second_database, tmp_path, write_config
):
    """The state commits first: a userstore of another database whose commit fails is
    copied by the next run, which finds the state (and PRIMARY) already copied."""
    old, new = hr_elsewhere(postgres, second_database, tmp_path, write_config)
    cli("--config", str(old), "user", "add", "alice").ok()
    cli(
        "--config", str(old), "user", "add", "HR/bob", "--password-stdin", input="pw-bob-4567\n"
    ).ok()
    cli("--config", str(new), "user", "list", "--domain", "HR").ok()  # HR's tables
    fail_hr_commits(second_database)
    error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(1)
    assert "hr went away" in error["message"]
    assert (
        "committed: the state, userstore PRIMARY; not committed: userstore HR" in (error["message"])
    )
    assert "run the copy again" in error["hint"] and "userstore HR" in error["hint"]
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


def test_a_left_out_userstore_is_copied_after_the_new_configuration_was_used(
    cli, postgres, second_database, tmp_path, write_config
):
    """HR's commit failed; then the new configuration ran (a sync, serve, a user
    added): the state there is no longer exactly the copy, and the re-run still copies
    HR, empty there while its source is the one the copy was made of."""
    old, new = hr_elsewhere(postgres, second_database, tmp_path, write_config)
    cli("--config", str(old), "user", "add", "alice").ok()
    cli("--config", str(old), "user", "add", "HR/bob").ok()
    cli("--config", str(new), "user", "list", "--domain", "HR").ok()  # HR's tables
    fail_hr_commits(second_database)
    cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(1)
    second_database.execute("DROP TRIGGER fail ON hr.users")
    cli("--config", str(new), "user", "add", "dave").ok()

    report = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    statuses = {p["name"]: p["status"] for p in report["parts"]}
    assert statuses["userstore HR"] == "copied" and statuses["state"] == "already copied"
    assert second_database.rows("SELECT username FROM hr.users") == [("bob",)]
    assert {u for (u,) in postgres.rows("SELECT username FROM directory.users")} == {
        "alice",
        "dave",
    }

    again = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(4)
    assert "nothing to copy" in again["message"]


def test_every_sqlite_file_copied_is_named_as_a_backup_and_no_longer_written(
    cli, postgres, tmp_path, write_config
):
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    hr = tmp_path / "hr.db"
    old = write_config(
        f"data_dir: {tmp_path / 'data'}\nuserstores:\n  - {{domain: PRIMARY}}\n"
        f"  - {{domain: HR, path: {hr}}}\n",
        "old.yaml",
    )
    new = write_config(
        f"state: {{{pg_keys(postgres, secret, 'idprov')}}}\nuserstores:\n"
        f"  - {{domain: PRIMARY, type: postgres, {pg_keys(postgres, secret, 'directory')}}}\n"
        f"  - {{domain: HR, type: postgres, {pg_keys(postgres, secret, 'hr')}}}\n",
        "new.yaml",
    )
    cli("--config", str(old), "user", "add", "alice").ok()
    cli("--config", str(old), "user", "add", "HR/bob").ok()

    report = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    [backup] = [step for step in report["next_steps"] if step.startswith("keep ")]
    assert str(tmp_path / "data" / "idprov.db") in backup and str(hr) in backup
    before = every_row(hr), every_row(tmp_path / "data" / "idprov.db")
    csv = tmp_path / "users.csv"
    csv.write_text("username\nHR/carol\n")
    for argv in (
        ("user", "add", "HR/zed"),
        ("user", "delete", "HR/bob", "--yes"),
        ("user", "update", "HR/bob", "-c", "given_name=Bob"),
        ("role", "add", "HR/staff"),
        ("import", "users", str(csv)),
    ):
        cli("--config", str(old), *argv, "--json").error(2)
    assert (every_row(hr), every_row(tmp_path / "data" / "idprov.db")) == before


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


WRITER = """
import sys
from idprov.config import load_config
from idprov.provisioning.service import IdentityService

with IdentityService(load_config(sys.argv[1])) as svc:
    print("open", flush=True)
    svc.add_user("carol", {})
print("added", flush=True)
"""


def test_a_user_added_while_the_copy_runs_is_not_lost(cli, configs, postgres, monkeypatch):
    """A command that opened the SQLite file once the copy had begun (after its first
    look for other processes) waits for the copy's lock, and the copy refuses: what
    the command writes would stay behind. Once it is done, the copy carries it over."""
    old, new = configs
    seed(cli, old)
    original, writers = state_copy.copy_tables, []

    def copy_tables(target, session):
        if not writers:
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(old)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            writers.append(writer)
            assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        original(target, session)

    monkeypatch.setattr(state_copy, "copy_tables", copy_tables)
    try:
        with pytest.raises(LockedError) as refused:
            state_copy.copy_state(load_file(old), load_file(new))
    finally:
        written, _ = writers[0].communicate()
    assert f"pid {writers[0].pid}" in refused.value.message
    assert writers[0].returncode == 0 and written == "added\n", "it waited, then wrote"
    assert schemas(postgres) == set()
    monkeypatch.undo()

    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    copied = {u for (u,) in postgres.rows("SELECT username FROM directory.users")}
    assert copied == {"alice", "bob", "carol"}


def test_a_command_that_looked_before_the_copy_committed_cannot_write_after_it(
    cli, configs, postgres, monkeypatch, tmp_path
):
    """A command that opened the old state in the instant between the copy's last look
    for other processes and its SQLite commit found no record of the copy, and wrote
    once the copy let go of the file: the change stayed behind in a file no longer
    used. The copy fences every file it took in the transaction that records it: a
    write after it is refused, whenever the writer looked."""
    old, new = configs
    seed(cli, old)
    hr = tmp_path / "hr.db"
    text = old.read_text().replace(
        "identity_providers:", f"userstores:\n  - {{domain: PRIMARY}}\n"
        f"  - {{domain: HR, path: {hr}}}\nidentity_providers:", 1
    )  # fmt: skip
    old.write_text(text)
    new.write_text(
        new.read_text().replace(
            "identity_providers:",
            f"  - {{domain: HR, type: postgres, "
            f"{pg_keys(postgres, tmp_path / 'pg-password', 'hr')}}}\nidentity_providers:",
            1,
        )
    )
    cli("--config", str(old), "user", "add", "HR/dora").ok()
    original, looked = state_copy.record_copy, []

    def record_copy(*args, **kwargs):
        svc = IdentityService(load_config(old))
        assert svc.state.copied is None  # it looked: no record yet
        looked.append(svc)
        original(*args, **kwargs)

    monkeypatch.setattr(state_copy, "record_copy", record_copy)
    state_copy.copy_state(load_file(old), load_file(new))
    [svc] = looked
    before = every_row(tmp_path / "data" / "idprov.db"), every_row(hr)
    try:
        for write in (
            lambda: svc.add_user("carol", {}),
            lambda: svc.add_user("HR/erin", {}),
            lambda: svc.tokens.create("resident", "late", "admin"),
        ):
            with pytest.raises(sqlite3.DatabaseError) as refused:
                write()
            error = as_idprov_error(refused.value)
            assert isinstance(error, ConfigError) and error.exit_code == 2
            assert "was copied to PostgreSQL at" in error.message
            assert error.hint is not None and "state copy --forget" in error.hint
    finally:
        svc.close()
    assert (every_row(tmp_path / "data" / "idprov.db"), every_row(hr)) == before

    cli("--config", str(old), "state", "copy", "--forget", "--force").ok()
    cli("--config", str(old), "user", "add", "carol").ok()  # the fences went with it
    cli("--config", str(old), "user", "add", "HR/erin").ok()


def test_a_sync_of_the_new_configuration_holding_its_lock_makes_the_copy_refuse(
    cli, configs, postgres
):
    old, new = configs
    seed(cli, old)
    cli("--config", str(new), "log").ok()  # the new state's tables, run_locks among them
    with AdvisoryRunLock(load_config(new).state, "sync"):
        error = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").error(8)
    assert "new configuration" in error["message"] and "sync holds the lock" in error["message"]
    assert postgres.rows("SELECT count(*) FROM idprov.ledger") == [(0,)]


def test_a_postgres_userstore_kept_must_be_the_same_database(cli, postgres, tmp_path, write_config):
    """A userstore that is not copied (PostgreSQL, LDAP) is the same store or the copy
    refuses: pointed elsewhere, its users would be missing, and deprovisioned."""
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    state = f"state: {{{pg_keys(postgres, secret, 'idprov')}}}\n"
    primary = f"  - {{domain: PRIMARY, type: postgres, {pg_keys(postgres, secret, 'directory')}}}\n"

    def hr(schema: str) -> str:
        return f"  - {{domain: HR, type: postgres, {pg_keys(postgres, secret, schema)}}}\n"

    old = write_config(
        f"data_dir: {tmp_path / 'data'}\nuserstores:\n  - {{domain: PRIMARY}}\n{hr('hr')}",
        "old.yaml",
    )
    elsewhere = write_config(f"{state}userstores:\n{primary}{hr('hr_elsewhere')}", "new.yaml")
    same = write_config(f"{state}userstores:\n{primary}{hr('hr')}", "same.yaml")
    cli("--config", str(old), "user", "add", "HR/bob").ok()

    error = cli("--config", str(old), "state", "copy", "--to", str(elsewhere), "--json").error(2)
    assert "schema hr," in error["message"] and "schema hr_elsewhere" in error["message"]
    assert "deprovision" in error["message"] and "point HR" in error["hint"]
    assert schemas(postgres) == set()

    report = cli("--config", str(old), "state", "copy", "--to", str(same), "--json").json()
    assert report["status"] == "copied" and "schema hr)" in report["kept"][0]
    listed = cli("--config", str(same), "user", "list", "--domain", "HR", "--json").json()
    assert [u["username"] for u in listed["items"]] == ["bob"]


def test_an_ldap_userstore_kept_must_stay_the_same_directory(tmp_path, write_config):
    ldap = (
        "  - {{domain: CORP, type: ldap, url: '{url}', user_search_base: 'ou=people,"
        "dc=example,dc=com', group_search_base: 'ou=groups,dc=example,dc=com'}}\n"
    )
    old = write_config(
        f"data_dir: {tmp_path / 'data'}\nuserstores:\n  - {{domain: PRIMARY}}\n"
        + ldap.format(url="ldap://ldap.example.com"),
        "old.yaml",
    )
    keys = "url: 'postgresql://idprov@db.example.com/identity', password: 'env:PG'"
    new = f"state: {{{keys}}}\nuserstores:\n  - {{domain: PRIMARY, type: postgres, {keys}}}\n"
    moved = write_config(new + ldap.format(url="ldap://other.example.com"), "moved.yaml")
    same = write_config(new + ldap.format(url="LDAP://ldap.example.com:389"), "same.yaml")
    to_postgres = write_config(
        new + f"  - {{domain: CORP, type: postgres, {keys}, schema: corp}}\n"
    )

    with pytest.raises(ConfigError) as refused:
        state_copy.pair_userstores(load_file(old), load_file(moved))
    assert "ldap://ldap.example.com" in refused.value.message
    assert "ldap://other.example.com" in refused.value.message
    with pytest.raises(ConfigError) as refused:
        state_copy.pair_userstores(load_file(old), load_file(to_postgres))
    assert "postgres at db.example.com:5432/identity, schema corp" in refused.value.message
    _, kept = state_copy.pair_userstores(load_file(old), load_file(same))
    assert kept and kept[0].startswith("CORP (ldap): not copied")


def test_a_failed_copy_of_users_does_not_echo_password_hashes(cli, configs, postgres):
    """PostgreSQL's CONTEXT of a failed COPY quotes the row: salt and hash, claims."""
    old, new = configs
    seed(cli, old)
    cli("--config", str(new), "user", "list").ok()  # the new userstore's tables
    postgres.execute(
        "CREATE FUNCTION directory.fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'out of disk'; END $$"
    )
    postgres.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON directory.users FOR EACH ROW"
        " EXECUTE FUNCTION directory.fail()"
    )
    run = cli("--config", str(old), "state", "copy", "--to", str(new), "--json")
    error = run.error(1)
    assert "out of disk" in error["message"] and "table users" in error["message"]
    assert "line 1" in error["message"] and "nothing was committed" in error["message"]
    assert "run the copy again" in error["hint"]
    for leaked in ("$scrypt", "alice", "example.com", "Alice"):
        assert leaked not in run.stderr


def test_a_database_error_never_quotes_the_row(postgres, tmp_path):
    """Every caller of PgSession (the userstore's own COPY of an import, an INSERT):
    neither DETAIL's "Failing row contains (...)" nor a COPY's CONTEXT comes through."""
    from idprov.config.postgres import PostgresUserstoreConfig
    from idprov.config.secrets import SecretRef
    from idprov.errors import StoreError
    from idprov.pg import PgSession

    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    config = PostgresUserstoreConfig(
        url=postgres.url, password=SecretRef(f"file:{secret}"), sslmode="disable"
    )
    postgres.execute("CREATE TABLE rows (name text, hash text CHECK (hash <> 'x'))")
    session = PgSession(config, "userstore PG", "userstore PG")
    try:
        with pytest.raises(StoreError) as inserted:
            session.execute("INSERT INTO rows VALUES ('carol', 'x')")
        with pytest.raises(StoreError) as copied, session.translated():
            with session.connection().cursor() as cur, cur.copy("COPY rows FROM STDIN") as copy:
                copy.write_row(["dave", "$scrypt$secret"])
                copy.write_row(["erin", "x"])
    finally:
        session.close()
    assert "violates check constraint" in inserted.value.message
    assert "carol" not in inserted.value.message
    assert "(at COPY rows, line 2)" in copied.value.message
    assert "erin" not in copied.value.message


def test_a_configuration_sharing_a_fenced_userstore_file_is_told_whose_copy_and_goes_on(
    cli, configs, postgres, tmp_path
):
    """Configurations A and B share a userstore file; A is copied to PostgreSQL. B's
    writes were refused with A's message, whose hint (`--forget` with this
    configuration) did nothing for B ("records no copy: nothing to forget"): B was
    stranded. The refusal names the file and A's configuration, and both ways out it
    gives work: `--forget --file FILE` lifts that file's fence alone (A's copy stays),
    A's own `--forget` lifts the rest."""
    _, new = configs
    shared = tmp_path / "shared" / "users.db"
    shared.parent.mkdir()
    idps = new.read_text().split("identity_providers:", 1)[1]
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for path, data in ((a, "a"), (b, "b")):
        path.write_text(
            f"version: 1\ndata_dir: {tmp_path / data}\nuserstores:\n"
            f"  - {{domain: PRIMARY, type: sqlite, path: {shared}}}\n"
            f"identity_providers:{idps}"
        )
    cli("--config", str(a), "role", "add", "staff").ok()
    cli("--config", str(a), "user", "add", "alice", "-r", "staff").ok()
    cli("--config", str(b), "user", "add", "bob").ok()
    cli("--config", str(a), "state", "copy", "--to", str(new)).ok()

    error = cli("--config", str(b), "user", "add", "dora", "--json").error(2)
    assert error["message"].startswith(f"{shared} was copied to PostgreSQL at ")
    assert f"by `idprov state copy` of {a} (with the state {tmp_path / 'a'}" in error["message"]
    assert f"`idprov --config {a} state copy --forget`" in error["hint"]
    assert f"`idprov state copy --forget --file {shared}`" in error["hint"]
    again = cli("--config", str(b), "state", "copy", "--forget", "--json").error(2)
    assert again["message"] == error["message"]  # not "nothing to forget"

    lifted = cli("--config", str(b), "state", "copy", "--forget", "--file", str(shared)).ok()
    assert f"{shared} is no longer fenced" in lifted.stdout
    cli("--config", str(b), "user", "add", "dora").ok()
    assert "--forget" in cli("--config", str(a), "user", "add", "erin", "--json").error(2)["hint"]
    assert {u for (u,) in postgres.rows("SELECT username FROM directory.users")} == {
        "alice",
        "bob",
    }  # the copy is as it was
    refused = cli("--config", str(b), "state", "copy", "--forget", "--file", str(shared), "--json")
    assert "is not fenced" in refused.error(3)["message"]
    state = tmp_path / "a" / "idprov.db"
    refused = cli("--config", str(b), "state", "copy", "--forget", "--file", str(state), "--json")
    assert (
        f"`idprov state copy --forget` with the configuration whose state is {state}"
        in (refused.error(4)["hint"])
    )

    cli("--config", str(a), "state", "copy", "--forget", "--force").ok()  # the way back for A
    cli("--config", str(a), "user", "add", "erin").ok()


def test_forget_lifts_the_fences_of_every_file_copied_even_one_the_configuration_dropped(
    cli, postgres, tmp_path, write_config
):
    """--forget visited only the files the configuration names now: a userstore taken
    out of it after the copy stayed fenced for good, whoever used it next. The copy
    records every file it fenced, and --forget lifts exactly those."""
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    hr = tmp_path / "hr.db"
    stores = f"userstores:\n  - {{domain: PRIMARY}}\n  - {{domain: HR, path: {hr}}}\n"
    old = write_config(f"data_dir: {tmp_path / 'data'}\n{stores}", "old.yaml")
    new = write_config(
        f"state: {{{pg_keys(postgres, secret, 'idprov')}}}\nuserstores:\n"
        f"  - {{domain: PRIMARY, type: postgres, {pg_keys(postgres, secret, 'directory')}}}\n"
        f"  - {{domain: HR, type: postgres, {pg_keys(postgres, secret, 'hr')}}}\n",
        "new.yaml",
    )
    cli("--config", str(old), "user", "add", "HR/bob").ok()
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    old.write_text(old.read_text().replace(f"  - {{domain: HR, path: {hr}}}\n", ""))
    cli("--config", str(old), "state", "copy", "--forget").ok()

    old.write_text(old.read_text().replace("  - {domain: PRIMARY}\n", stores.split("\n", 1)[1]))
    cli("--config", str(old), "user", "add", "HR/carol").ok()
    cli("--config", str(old), "user", "add", "alice").ok()


def test_forget_of_a_copy_recorded_before_the_record_named_its_files(
    cli, postgres, tmp_path, write_config
):
    """A record an earlier idprov made names no file: --forget lifts the fences of the
    files the configuration names, as it did; a re-run of the copy adds them to it."""
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    hr = tmp_path / "hr.db"
    old = write_config(
        f"data_dir: {tmp_path / 'data'}\nuserstores:\n  - {{domain: PRIMARY}}\n"
        f"  - {{domain: HR, path: {hr}}}\n",
        "old.yaml",
    )
    new = write_config(
        f"state: {{{pg_keys(postgres, secret, 'idprov')}}}\nuserstores:\n"
        f"  - {{domain: PRIMARY, type: postgres, {pg_keys(postgres, secret, 'directory')}}}\n"
        f"  - {{domain: HR, type: postgres, {pg_keys(postgres, secret, 'hr')}}}\n",
        "new.yaml",
    )
    cli("--config", str(old), "user", "add", "HR/bob").ok()
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    conn.execute("ALTER TABLE state_copied DROP COLUMN copied_from")
    conn.execute("ALTER TABLE state_copied DROP COLUMN fenced")
    conn.commit()
    conn.close()

    report = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    assert report["status"] == "already copied"
    [record] = every_row(tmp_path / "data" / "idprov.db")["state_copied"]
    assert json.loads(record[-1]) == [str(tmp_path / "data" / "idprov.db"), str(hr)]
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    conn.execute("ALTER TABLE state_copied DROP COLUMN copied_from")
    conn.execute("ALTER TABLE state_copied DROP COLUMN fenced")
    conn.commit()
    conn.close()
    cli("--config", str(old), "state", "copy", "--forget").ok()
    cli("--config", str(old), "user", "add", "HR/carol").ok()


def test_the_next_steps_say_the_dry_run_plans_what_the_outbox_still_holds(
    cli, configs, postgres, tmp_path
):
    """They said `sync --dry-run` "should plan no change"; it plans the work of the
    outbox rows copied (an `import --no-push` left them), which is right."""
    old, new = configs
    seed(cli, old)
    people = tmp_path / "people.csv"
    people.write_text("username,email,roles\ncarol,carol@example.com,staff\n")
    cli("--config", str(old), "import", "users", str(people), "--no-push").ok()
    report = cli("--config", str(old), "state", "copy", "--to", str(new), "--json").json()
    [step] = [s for s in report["next_steps"] if "sync --dry-run" in s]
    assert "other than what the outbox still holds (`idprov outbox list`" in step
    [idp] = cli("--config", str(new), "sync", "--dry-run", "--json").json()["plan"]["idps"]
    assert idp["counts"] == {"user.create": 1, "role.update": 1}  # the outbox rows' work
    waiting = cli("--config", str(new), "outbox", "list", "--json").items()
    assert sorted(r["label"] for r in waiting) == ["carol", "staff"]


def test_forget_names_who_holds_outbox_rows_and_until_when_not_that_idprov_runs(
    cli, configs, postgres
):
    """A command killed on another host holds its rows until its lease ends: --forget
    cannot know whether it runs, and says what it knows."""
    old, new = configs
    seed(cli, old)
    cli("--config", str(old), "state", "copy", "--to", str(new)).ok()
    postgres.execute(
        "INSERT INTO idprov.outbox (idp, kind, local_id, domain, label, enqueued_at,"
        " updated_at, claimed_by, claimed_until) VALUES ('scim', 'user', 'x', 'PRIMARY',"
        " 'bob', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z',"
        " 'hostA:3:0123abcd', '9999-01-01T00:00:00.000Z')"
    )
    error = cli("--config", str(old), "state", "copy", "--forget", "--json").error(4)
    assert (
        "outbox rows are claimed by hostA pid 3 until 9999-01-01T00:00:00.000Z"
        in (error["message"])
    )
    assert "idprov runs on it" not in error["message"]
