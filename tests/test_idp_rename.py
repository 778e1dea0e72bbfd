"""`idprov idp rename`: an identity provider renamed in the configuration keeps its
ledger, outbox, health and scope record, on SQLite and PostgreSQL state, against a real
SCIM 2.0 server (scim2-server); and the warning that `status`, `sync` and `config
validate` give about a ledger kept under a name that is no longer configured."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from idprov.config import load_config
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer


def config_text(tmp_path: Path, name: str, base_url: str, state: str, roles: str) -> str:
    return f"""version: 1
data_dir: {tmp_path / "data"}
{state}
identity_providers:
  - name: {name}
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: {roles}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [{name}]
"""


class Setup:
    """The configuration file of one test: one SCIM IdP under a name that can change."""

    def __init__(self, tmp_path: Path, base_url: str, state: str) -> None:
        self.tmp_path, self.base_url, self.state = tmp_path, base_url, state

    def configure(self, name: str, roles: str = "[staff]", base_url: str | None = None) -> None:
        text = config_text(self.tmp_path, name, base_url or self.base_url, self.state, roles)
        (self.tmp_path / "idprov.yaml").write_text(text)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of idprov's state, SQLite or PostgreSQL, read as the service reads it."""
        with IdentityService(load_config()) as svc:
            return [tuple(r) for r in svc.state.db.execute(sql, list(params)).fetchall()]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with IdentityService(load_config()) as svc, svc.state.transaction():
            svc.state.db.execute(sql, list(params))

    def held_by(self, idp: str) -> dict[str, int]:
        counts = {}
        for table in ("ledger", "ledger_members", "ledger_inputs", "outbox", "idp_health"):
            counts[table] = self.rows(f"SELECT count(*) FROM {table} WHERE idp = ?", (idp,))[0][0]
        return counts


@pytest.fixture(params=["sqlite", "postgres"])
def setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    scim2_server: Scim2Peer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Setup]:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    state = ""
    if request.param == "postgres":
        database = request.getfixturevalue("postgres")
        secret = tmp_path / "pg-password"
        secret.write_text(database.password + "\n")
        state = (
            f"state: {{url: '{database.url}', password: 'file:{secret}', sslmode: disable,"
            " schema: idprov}"
        )
    chosen = Setup(tmp_path, scim2_server.base_url, state)
    chosen.configure("a")
    yield chosen


def requests_at(scim: Scim2Peer) -> list[str]:
    """The requests this tenant answered so far (discovery of its configuration aside)."""
    assert scim.log_path is not None
    path = urlsplit(scim.base_url).path
    lines = scim.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if f" {path}/" in line and "/ServiceProviderConfig" not in line]


def provisioned_under_a(cli, users: tuple[str, ...] = ("alice", "bob")) -> None:
    cli("role", "add", "staff").ok()
    for name in users:
        cli("user", "add", name, "-c", f"email={name}@example.com", "--role", "staff").ok()
    cli("sync").ok()  # records where 'a' points


def test_a_renamed_idp_keeps_its_ledger_and_deprovisions_through_its_new_name(
    cli, setup, scim2_server
):
    provisioned_under_a(cli)
    before = setup.held_by("a")
    assert before["ledger"] == 3 and before["idp_health"] == 1  # alice, bob, staff
    scope = setup.rows("SELECT scope FROM idp_health WHERE idp = 'a'")
    setup.configure("b")

    status = cli("status")
    assert status.exit_code == 0
    assert (
        "the ledger holds 2 accounts and 1 group for 'a', which is not configured; 'b' "
        "points at the target 'a' pointed at: if it was renamed to 'b', run "
        "`idprov idp rename a b`" in status.stderr
    )

    planned = cli("idp", "rename", "a", "b", "--dry-run", "--json").json()
    assert planned["dry_run"] is True
    assert planned["moved"] == {
        "accounts": 2,
        "groups": 1,
        "memberships": 2,
        "inputs": 2,
        "outbox": 0,
        "health": 1,
        "jit_links": 0,
    }
    assert setup.held_by("a") == before  # a dry run moves nothing

    out = cli("idp", "rename", "a", "b").ok()
    assert "a → b: moved 2 accounts, 1 group, 2 memberships" in out.stdout
    assert "nothing at the target changes" in out.stdout
    assert setup.held_by("b") == before
    assert set(setup.held_by("a").values()) == {0}
    assert setup.rows("SELECT scope FROM idp_health WHERE idp = 'b'") == scope
    [entry] = cli("log", "--action", "idp.rename", "--json").items()
    assert entry["target"] == "b" and entry["details"]["from"] == "a"
    assert entry["details"]["moved"]["accounts"] == 2

    sent = len(requests_at(scim2_server))
    synced = cli("sync", "--json")
    assert synced.exit_code == 0, synced
    assert synced.stderr == ""  # nothing orphaned any more
    assert requests_at(scim2_server)[sent:] == []  # every account is known: nothing to send
    assert "ledger holds" not in cli("status").stderr

    cli("user", "delete", "bob", "--yes").ok()
    [alice] = scim2_server.users()
    assert alice["userName"] == "alice"
    [group] = scim2_server.groups()
    assert [m["value"] for m in group["members"]] == [alice["id"]]


def test_sync_and_config_validate_warn_about_a_ledger_under_a_name_gone_from_the_file(
    cli, setup, scim2_server
):
    provisioned_under_a(cli)
    setup.configure("b", base_url=scim2_server.base_url + "/elsewhere")
    validated = cli("config", "validate", "--json")
    assert validated.exit_code == 0, validated
    [line] = validated.stderr.splitlines()
    warning = json.loads(line)["warning"]
    assert warning["code"] == "orphaned_idp"
    assert warning["message"] == (
        "the ledger holds 2 accounts and 1 group for 'a', which is not configured; if it "
        "was renamed, run `idprov idp rename a NEW`"
    )  # 'b' points elsewhere: not named as the likely new name
    assert "enabled: false" in warning["hint"]
    synced = cli("sync", "--dry-run")
    assert "warning: the ledger holds 2 accounts and 1 group for 'a'" in synced.stderr


def test_the_rename_refuses_what_would_lose_or_merge_state(cli, setup, scim2_server):
    provisioned_under_a(cli)
    before = setup.held_by("a")

    error = cli("idp", "rename", "a", "b", "--json").error(3)  # 'b' is not configured yet
    assert error["message"].startswith("identity provider 'b' is not configured in ")
    assert "rename the entry of 'a' to 'b' in the configuration first" in error["hint"]

    setup.configure("b")
    path = setup.tmp_path / "idprov.yaml"
    still = (
        "  - {name: a, connector: scim2, options: {base_url: 'http://127.0.0.1:9/v2',"
        " auth: bearer, token: 'env:SCIM_TOKEN'}}\n"
    )
    path.write_text(
        path.read_text().replace("identity_providers:\n", "identity_providers:\n" + still)
    )
    error = cli("idp", "rename", "a", "b", "--json").error(2)  # 'a' still configured
    assert "idprov.yaml:" in error["message"]
    assert "identity_providers[0].name: 'a' is still configured" in error["message"]

    setup.configure("b")
    error = cli("idp", "rename", "nosuch", "b", "--json").error(3)
    assert "holds nothing under 'nosuch'" in error["message"]

    setup.execute(
        "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at, updated_at)"
        " VALUES ('b', 'user', 'x1', 'PRIMARY', 'carol', '2026-01-01', '2026-01-01')"
    )
    error = cli("idp", "rename", "a", "b", "--json").error(4)
    assert "'b' has state of its own (1 outbox rows)" in error["message"]
    assert "idprov outbox discard --idp b --yes" in error["hint"]
    cli("outbox", "discard", "--idp", "b", "--yes").ok()

    setup.execute(
        "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at, updated_at,"
        " claimed_by, claimed_until) VALUES ('a', 'user', 'x2', 'PRIMARY', 'dave',"
        " '2026-01-01', '2026-01-01', 'host:42:w1', '9999-01-01T00:00:00.000Z')"
    )
    error = cli("idp", "rename", "a", "b", "--json").error(8)
    assert "1 outbox rows of 'a' are being pushed by host:42:w1" in error["message"]
    setup.execute("DELETE FROM outbox WHERE idp = 'a'")

    with IdentityService(load_config()) as svc, svc.state.run_lock("sync"):
        error = cli("idp", "rename", "a", "b", "--json").error(8)
        assert "another idprov sync holds the lock" in error["message"]
    assert setup.held_by("a") == before
    cli("idp", "rename", "a", "b").ok()


def test_a_change_of_scope_pending_at_the_old_name_is_judged_under_the_new_one(
    cli, setup, scim2_server
):
    """Pushed under [staff, eng], renamed and narrowed to [staff] at once: the guard's
    record of the scope moved with the name, so bob, taken out of scope, is held for
    sync instead of staying at the target unjudged and forgotten."""
    setup.configure("a", roles="[staff, eng]")
    provisioned_under_a(cli, users=("alice",))
    cli("role", "add", "eng").ok()
    cli("user", "add", "bob", "-c", "email=bob@example.com", "--role", "eng").ok()
    setup.configure("b", roles="[staff]")
    cli("idp", "rename", "a", "b").ok()
    held = cli("user", "update", "bob", "-c", "title=Boss").fails(7)
    assert "provisioning_roles [eng, staff] since the last sync; now [staff]" in held
    assert len(scim2_server.users()) == 2
    cli("sync", "--allow-deletes", "1").ok()
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]


def test_jit_links_move_only_when_the_federated_idp_was_renamed_too(cli, setup):
    provisioned_under_a(cli)
    setup.execute("INSERT INTO jit_links VALUES ('a', 'sub-1', 'primary', 'id-1', '2026-01-01')")
    setup.configure("b")
    out = cli("idp", "rename", "a", "b", "--dry-run").ok()
    assert "1 JIT login links stay under 'a'" in out.stdout
    path = setup.tmp_path / "idprov.yaml"
    path.write_text(path.read_text() + "    jit: [{idp: b}]\n")
    moved = cli("idp", "rename", "a", "b", "--json").json()
    assert moved["moved"]["jit_links"] == 1 and moved["notes"] == []
    assert setup.rows("SELECT idp, subject FROM jit_links") == [("b", "sub-1")]


def test_a_ledger_is_orphaned_when_no_idp_is_configured_at_all(cli, setup):
    provisioned_under_a(cli, users=("alice",))
    (setup.tmp_path / "idprov.yaml").write_text(
        f"version: 1\ndata_dir: {setup.tmp_path / 'data'}\n{setup.state}\n"
    )
    warned = cli("status").ok().stderr
    assert "the ledger holds 1 account and 1 group for 'a', which is not configured; if it " in (
        warned
    )
    assert "run `idprov idp rename a NEW`" in warned


def test_a_sync_whose_record_of_targets_fails_keeps_its_report_and_exit_code(
    cli, setup, scim2_server, monkeypatch
):
    provisioned_under_a(cli, users=("alice",))
    from idprov.errors import StoreError

    def disk_full(*args: Any) -> None:
        raise StoreError("the database idprov.db cannot grow: the disk is full")

    monkeypatch.setattr("idprov.provisioning.idp_rename.note_targets", disk_full)
    cli("user", "add", "bob", "--role", "staff", "-c", "email=bob@example.com").ok()
    synced = cli("sync", "--json")
    assert synced.exit_code == 0, synced
    assert json.loads(synced.stdout)["plan"] is not None
    warning = json.loads(synced.stderr)["warning"]
    assert "identity provider names were not checked" in warning["message"]
    assert "the disk is full" in warning["message"]
