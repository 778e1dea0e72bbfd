"""Upgrading idprov on existing data: what `config validate` may do with a database an
earlier release made (nothing), what a read-only data directory says when its
database needs this release's migrations, and how a release refuses a database a
newer one upgraded."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from idprov import __version__
from tests.mounts import needs_mounts, read_only, run_with_mounts

NEWER = "9999_from_a_newer_idprov"


def older_state(data_dir: Path, left_out: int = 1) -> Path:
    """An idprov.db as the release before this one left it: the state without this
    release's last ``left_out`` migrations."""
    from idprov.db import open_database
    from idprov.provisioning.state import MIGRATIONS
    from idprov.statedb import SqliteStateDB
    from idprov.userstores import sqlite

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "idprov.db"
    db = open_database(path)
    SqliteStateDB(db, path).migrate("state", {"sqlite": MIGRATIONS["sqlite"][:-left_out]})
    sqlite.migrate(db, "userstore", sqlite.MIGRATIONS)  # the embedded PRIMARY userstore
    db.close()
    return path


def migrations_of(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT namespace, name FROM idprov_migrations ORDER BY 1, 2")
        return rows.fetchall()
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_validate_does_not_upgrade_an_older_state_and_says_it_needs_it(cli, data_dir):
    """It applied the new release's migrations to the live database, under an older
    release still running on it (README: a validate writes nothing)."""
    path = older_state(data_dir, left_out=2)
    before, recorded = digest(path), migrations_of(path)

    run = cli("config", "validate").ok()
    assert f"idprov's state at {path} needs upgrading (2 migrations)" in run.stderr
    assert "the first command with write access applies them" in run.stderr
    assert digest(path) == before and migrations_of(path) == recorded

    json_run = cli("config", "validate", "--json").ok()
    assert '"code": "needs_upgrade"' in json_run.stderr
    assert migrations_of(path) == recorded

    cli("status").ok()  # a command that may write upgrades it
    assert len(migrations_of(path)) > len(recorded)
    assert "needs upgrading" not in cli("config", "validate").ok().stderr


def test_validate_writes_nothing_to_a_state_this_release_made(cli, data_dir, state):
    """Nor makes the tables of a module the state has none of yet (the IdP names'),
    while it still finds a ledger kept under a name no longer configured."""
    cli("user", "add", "alice", "-c", "email=a@example.com").ok()
    before, recorded = digest(state.path), migrations_of(state.path)
    run = cli("config", "validate").ok()
    assert run.stderr == ""
    assert digest(state.path) == before and migrations_of(state.path) == recorded

    conn = sqlite3.connect(state.path)
    conn.execute(
        "INSERT INTO ledger (idp, kind, local_id, domain, label, remote_id, state, updated_at)"
        " VALUES ('gone', 'user', 'u1', 'PRIMARY', 'alice', 'r1', 'present', 'x')"
    )
    conn.commit()
    conn.close()
    assert not any(space == "idp_names" for space, _ in recorded)
    before = digest(state.path)
    run = cli("config", "validate").ok()
    assert "'gone', which is not configured" in run.stderr
    assert digest(state.path) == before and migrations_of(state.path) == recorded


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["user", "list"],
        ["log"],
        ["outbox", "list"],
        ["config", "validate"],
        ["user", "add", "bob", "-c", "email=b@example.com"],
        ["sync", "--dry-run"],
    ],
)
def test_every_command_refuses_a_state_a_newer_idprov_upgraded(cli, state, args):
    """From this release on, an older release cannot run on a newer schema unawares
    (it ran status and outbox list on a database the new release had migrated)."""
    cli("user", "add", "alice", "-c", "email=a@example.com").ok()
    conn = sqlite3.connect(state.path)
    conn.execute("INSERT INTO idprov_migrations VALUES ('state', ?, 'x')", [NEWER])
    conn.execute("INSERT INTO idprov_migrations VALUES ('reports', '0001_reports', 'x')")
    conn.commit()
    conn.close()
    before = state.dump()

    error = cli(*args, "--json").error(1)
    assert error["code"] == "newer_schema"
    assert error["message"] == (
        f"idprov's state at {state.path} was upgraded by a newer idprov (migrations "
        f"reports 0001_reports, state {NEWER}); this idprov ({__version__}) cannot use it: "
        "run the "
        "newer release"
    )
    assert "restore the backup" in error["hint"]
    assert state.dump() == before


def test_a_userstore_file_a_newer_idprov_upgraded_is_refused(cli, write_config, tmp_path):
    config = "userstores:\n  - domain: PRIMARY\n  - domain: HR\n    type: sqlite\n    path: hr.db\n"
    write_config(config)
    cli("user", "add", "HR/alice", "-c", "email=a@example.com").ok()
    conn = sqlite3.connect(tmp_path / "hr.db")
    conn.execute("INSERT INTO idprov_migrations VALUES ('userstore', ?, 'x')", [NEWER])
    conn.commit()
    conn.close()
    error = cli("user", "list", "--domain", "HR", "--json").error(1)
    assert f"{tmp_path / 'hr.db'} was upgraded by a newer idprov" in error["message"]
    assert f"userstore {NEWER}" in error["message"]


def test_processes_of_the_same_release_share_a_state_one_of_them_extends(data_dir):
    """A process that read the migrations before another made a module's tables uses
    them after, without refusing or applying them twice."""
    from idprov.config import load_config
    from idprov.provisioning import idp_rename
    from idprov.provisioning.service import IdentityService

    first = IdentityService(load_config(None))
    second = IdentityService(load_config(None))
    try:
        first.state  # noqa: B018 - opens (and makes) the state
        idp_rename.migrate_tables(second.state.db)
        idp_rename.migrate_tables(first.state.db)
        rows = migrations_of(data_dir / "idprov.db")
        assert rows.count(("idp_names", "0001_idp_targets")) == 1
    finally:
        first.close()
        second.close()


def test_every_namespace_a_state_records_is_known(data_dir):
    """Each namespace a module migrates is listed where the check finds its migrations:
    one left out would make this release refuse its own databases."""
    from idprov.db import MIGRATION_MODULES, known_migrations, open_database
    from idprov.provisioning.state_copy import open_state_tables
    from idprov.statedb import SqliteStateDB
    from idprov.userstores.sqlite import MIGRATIONS, OPTIONAL, migrate

    data_dir.mkdir(parents=True)
    path = data_dir / "idprov.db"
    db = open_database(path)
    open_state_tables(SqliteStateDB(db, path))
    migrate(db, "userstore", MIGRATIONS, optional=OPTIONAL)
    db.close()
    recorded: dict[str, set[str]] = {}
    for space, name in migrations_of(path):
        recorded.setdefault(space, set()).add(name)
    assert set(recorded) == set(MIGRATION_MODULES)
    for space, names in recorded.items():
        assert known_migrations(space, "sqlite") == names


@needs_mounts
def test_read_commands_on_a_read_only_data_dir_say_it_needs_this_releases_upgrade(
    cli, tmp_path, data_dir
):
    """They failed with "read-only" and a hint that read commands work without writing
    (printed by a read command); once upgraded by one run that can write, they work."""
    path = older_state(data_dir)
    env = dict(os.environ)
    run = run_with_mounts(read_only(data_dir), ["log"], env, tmp_path)
    assert run.returncode == 1, run
    assert (
        f"idprov's state at {path} needs upgrading by this release (1 migration pending)"
    ) in run.stderr
    assert "run any idprov command once as a user who can write it (e.g. `idprov status`)" in (
        run.stderr
    )
    assert "work without writing" not in run.stderr and "Traceback" not in run.stderr

    cli("status").ok()
    for args in (["user", "list"], ["log"], ["status"]):
        run = run_with_mounts(read_only(data_dir), args, env, tmp_path)
        assert run.returncode == 0, run


# ---- PostgreSQL


def pg_config(write_config: Any, postgres: Any, tmp_path: Path) -> Any:
    from idprov.config import load_config

    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    keys = f"url: '{postgres.url}', password: 'file:{secret}', sslmode: disable"
    return load_config(write_config(f"state: {{{keys}, schema: idprov}}\n"))


def test_validate_leaves_an_older_postgresql_state_as_it_is(cli, write_config, postgres, tmp_path):
    from idprov.provisioning.state import MIGRATIONS
    from idprov.statedb import PostgresStateDB

    config = pg_config(write_config, postgres, tmp_path)
    db = PostgresStateDB(config.state)
    db.migrate("state", {"postgresql": MIGRATIONS["postgresql"][:-1]})
    db.close()
    count = "SELECT count(*) FROM idprov.idprov_migrations"
    before = postgres.rows(count)

    run = cli("config", "validate").ok()
    assert "needs upgrading (1 migration)" in run.stderr and "PostgreSQL" in run.stderr
    assert postgres.rows(count) == before
    cli("log").ok()
    assert postgres.rows(count) > before


def test_a_postgresql_state_a_newer_idprov_upgraded_is_refused(
    cli, write_config, postgres, tmp_path
):
    pg_config(write_config, postgres, tmp_path)
    cli("log").ok()
    postgres.execute("INSERT INTO idprov.idprov_migrations VALUES ('state', %s, 'x')", (NEWER,))
    for args in (["log"], ["config", "validate"]):
        error = cli(*args, "--json").error(1)
        assert "was upgraded by a newer idprov" in error["message"]
        assert f"state {NEWER}" in error["message"]


def test_a_read_command_refused_a_write_is_not_told_read_commands_work(cli, tmp_path, monkeypatch):
    """SQLite's read-only refusal came with "read commands (list, show, log) work
    without writing", printed by `user list` itself."""
    from idprov.db import open_database, open_database_read_only
    from idprov.provisioning.service import IdentityService

    path = tmp_path / "other.db"
    open_database(path).close()
    db = open_database_read_only(path)
    with pytest.raises(sqlite3.OperationalError) as refused:
        db.execute("CREATE TABLE t (a)")
    db.close()

    def stream_users(*args: Any, **kwargs: Any) -> Any:
        raise refused.value

    cli("user", "add", "alice", "-c", "email=a@example.com").ok()
    monkeypatch.setattr(IdentityService, "stream_users", stream_users)
    error = cli("user", "list", "--json").error(1)
    assert "is read-only" in error["message"]
    assert "work without writing" not in error["hint"]
    assert "once as a user who can write the file and its directory" in error["hint"]


# ---- connector options checks on an existing configuration

IDPS = """
identity_providers:
  - name: scim-a
    connector: scim2
    options: {{base_url: 'http://127.0.0.1:9/v2', auth: none}}
  - name: spml-x
    connector: spml
    enabled: {enabled}
    options:
      base_url: http://127.0.0.1:9/spml
      auth: none
      mark_attribute: employeeNumber
  - name: sf-x
    connector: salesforce
    enabled: {enabled}
    options:
      base_url: https://example.my.salesforce.com
      username: a@example.com
      client_id: x
      profile: Standard User
      domain: example.com
      private_key: 'file:{key}'
      ca_file: {tmp}/missing-ca.pem
    attributes:
      FederationIdentifier: '{{email}}'
applications:
  - name: resident
    identity_providers: [scim-a]
"""


def idps(write_config: Any, tmp_path: Path, enabled: str) -> Path:
    (tmp_path / "sf.key").write_text("not a key\n")
    return write_config(IDPS.format(enabled=enabled, key=tmp_path / "sf.key", tmp=tmp_path))


def test_a_disabled_idps_option_problems_warn_and_stop_nothing(cli, write_config, tmp_path):
    """A configuration that validated before (the old README's own SPML example, an
    e-mail for Salesforce single sign-on) on IdPs with enabled: false: every command,
    the cron sync and the read commands, exited 2, one error at a time."""
    path = idps(write_config, tmp_path, "false")
    for args in (["status"], ["user", "list"], ["log"], ["sync", "--dry-run"]):
        run = cli(*args).ok()
        lines = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
        assert lines == [
            f"warning: {path}:6:5: identity provider spml-x (enabled: false) has options "
            "that are refused once it is enabled: `idprov config validate` says what to change",
            f"warning: {path}:13:5: identity provider sf-x (enabled: false) has options "
            "that are refused once it is enabled: `idprov config validate` says what to change",
        ], run.stderr

    shown = cli("config", "validate").ok().stdout
    assert f"{path}:12:7: identity_providers[1].options.mark_attribute: mark_attribute" in shown
    assert "map employeeNumber: null" in shown
    assert f"{path}:16:5: identity_providers[2].options.mark_field: mark_field" in shown
    assert f"{path}:23:7: identity_providers[2].options.ca_file: ca_file" in shown
    assert shown.count("has enabled: false: a warning now, refused once it is enabled") == 3
    problems = cli("config", "validate", "--json").json()["disabled_idp_problems"]
    assert len(problems) == 3


def test_enabled_idps_option_problems_are_refused_all_at_once(cli, write_config, tmp_path):
    path = idps(write_config, tmp_path, "true")
    for args in (["config", "validate"], ["status"]):
        error = cli(*args, "--json").error(2)
        message = error["message"]
        assert message.startswith("3 problems in identity providers' options:\n")
        assert f"- {path}:12:7: identity_providers[1].options.mark_attribute: " in message
        assert f"- {path}:23:7: identity_providers[2].options.ca_file: " in message
        assert f"- {path}:16:5: identity_providers[2].options.mark_field: " in message
        assert "\n  fix: set mark_attribute to an attribute nothing else writes" in message


def test_a_postgresql_state_needing_migrations_its_user_cannot_make_says_so(
    cli, write_config, postgres, tmp_path
):
    """A user with SELECT only (a reporting account): told what the state needs and
    who can apply it, not only which privilege it lacks."""
    from idprov.provisioning.state import MIGRATIONS
    from idprov.statedb import PostgresStateDB

    config = pg_config(write_config, postgres, tmp_path)
    db = PostgresStateDB(config.state)
    db.migrate("state", {"postgresql": MIGRATIONS["postgresql"][:-1]})
    db.close()
    reader = f"r_{postgres.name}"
    postgres.execute(f"CREATE ROLE {reader} LOGIN PASSWORD 'reader-password'")
    postgres.execute(f"GRANT USAGE ON SCHEMA idprov TO {reader}")
    postgres.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA idprov TO {reader}")
    (tmp_path / "reader-password").write_text("reader-password\n")
    url = postgres.url.replace(f"{postgres.user}@", f"{reader}@")
    keys = f"url: '{url}', password: 'file:{tmp_path / 'reader-password'}', sslmode: disable"
    write_config(f"state: {{{keys}, schema: idprov}}\n")
    try:
        error = cli("log", "--json").error(1)
    finally:
        postgres.execute(f"DROP OWNED BY {reader}")
        postgres.execute(f"DROP ROLE {reader}")
    assert error["code"] == "needs_upgrade"
    assert "needs upgrading by this release (1 migration pending)" in error["message"]
    assert "once as a user who can write it" in error["hint"]


def test_validate_says_which_userstore_file_needs_upgrading_and_writes_nothing(
    cli, write_config, tmp_path
):
    from idprov.db import open_database
    from idprov.userstores import sqlite

    write_config(
        "userstores:\n  - domain: PRIMARY\n  - domain: HR\n    type: sqlite\n    path: hr.db\n"
    )
    cli("user", "add", "alice", "-c", "email=a@example.com").ok()
    path = tmp_path / "hr.db"
    db = open_database(path)
    sqlite.migrate(db, "userstore", sqlite.MIGRATIONS[:-2])
    db.close()
    before = digest(path)

    run = cli("config", "validate").ok()
    assert f"warning: the database at {path} needs upgrading (2 migrations)" in run.stderr
    assert digest(path) == before

    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO idprov_migrations VALUES ('userstore', ?, 'x')", [NEWER])
    conn.commit()
    conn.close()
    error = cli("config", "validate", "--json").error(1)
    assert f"{path} was upgraded by a newer idprov" in error["message"]
