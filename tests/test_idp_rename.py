"""`idprov idp rename`: an identity provider renamed in the configuration keeps its
ledger, outbox, health and scope record, on SQLite and PostgreSQL state, against a real
SCIM 2.0 server (scim2-server); and the warning that `status`, `sync` and `config
validate` give about a ledger kept under a name that is no longer configured."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
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
    [shown] = cli("status", "--json").items()  # its syncs under 'a' are its own
    assert shown["idp"] == "b" and shown["last_success"] is not None

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
        "INSERT INTO ledger (idp, kind, local_id, domain, label, remote_id, state, updated_at)"
        " VALUES ('b', 'user', 'x1', 'PRIMARY', 'carol', 'r1', 'active', '2026-01-01')"
    )
    error = cli("idp", "rename", "a", "b", "--json").error(4)  # two ledgers
    assert "'b' has state of its own (1 ledger rows)" in error["message"]
    assert "the two ledgers cannot be merged" in error["hint"]
    setup.execute("DELETE FROM ledger WHERE idp = 'b'")

    setup.execute(
        "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at, updated_at,"
        " claimed_by, claimed_until) VALUES ('b', 'user', 'x1', 'PRIMARY', 'carol',"
        " '2026-01-01', '2026-01-01', 'host:41:w0', '9999-01-01T00:00:00.000Z')"
    )
    error = cli("idp", "rename", "a", "b", "--json").error(8)  # a drainer holds b's row
    assert "1 outbox rows of 'b' are being pushed by host:41:w0" in error["message"]
    setup.execute("DELETE FROM outbox WHERE idp = 'b'")

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
    cli("role", "add", "eng").ok()  # a scope naming a role no userstore has is refused
    provisioned_under_a(cli, users=("alice",))
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


def test_a_sync_whose_check_of_idp_names_fails_keeps_its_report_and_exit_code(
    cli, setup, scim2_server, monkeypatch
):
    """The look for orphaned ledgers after the sync's work is a warning: the sync
    recorded where each IdP points before it planned (see the tests below)."""
    provisioned_under_a(cli, users=("alice",))
    from idprov.errors import StoreError

    def gone(*args: Any) -> None:
        raise StoreError("the database server went away")

    monkeypatch.setattr("idprov.provisioning.idp_rename.orphaned_idps", gone)
    cli("user", "add", "bob", "--role", "staff", "-c", "email=bob@example.com").ok()
    synced = cli("sync", "--json")
    assert synced.exit_code == 0, synced
    assert json.loads(synced.stdout)["plan"] is not None
    warning = json.loads(synced.stderr)["warning"]
    assert "identity provider names were not checked" in warning["message"]
    assert "the database server went away" in warning["message"]


# ---------------------------------------------------------------- before the rename


def created_at(scim: Scim2Peer, since: int) -> list[str]:
    """The POSTs (creates) this tenant answered after its ``since`` first requests."""
    return [line for line in requests_at(scim)[since:] if '"POST ' in line]


def test_a_push_under_the_new_name_waits_for_the_rename_instead_of_adopting(
    cli, setup, scim2_server
):
    """Renamed in the file, then cron's sync and a `user add` before `idp rename`: the
    sync under 'b' would adopt alice and bob and make 'staff' twice, and the two
    ledgers could never be merged. Both are held back until the rename, which takes
    what waited in the outbox with it; the next sync pushes carol alone."""
    provisioned_under_a(cli)
    setup.configure("b")
    sent = len(requests_at(scim2_server))

    error = cli("sync", "--json").error(2)
    assert error["message"].startswith("'b' awaits `idprov idp rename a b`: it has no ledger")
    assert error["message"].endswith("; nothing was changed")
    assert "if 'a' was renamed to 'b', run `idprov idp rename a b`" in error["hint"]
    planned = cli("sync", "--dry-run")  # changes nothing: shows the plan, and warns
    assert planned.exit_code == 0, planned
    assert "run `idprov idp rename a b`" in planned.stderr

    added = cli("user", "add", "carol", "-c", "email=carol@example.com", "--role", "staff")
    assert added.exit_code == 6, added
    assert "waiting for `idprov idp rename a b`" in added.stderr
    assert cli("user", "show", "carol").exit_code == 0  # committed here
    assert cli("outbox", "retry", "--idp", "b").exit_code == 6
    assert cli("outbox", "work", "--once").exit_code == 6
    assert requests_at(scim2_server)[sent:] == []  # nothing went to the target
    waiting = setup.rows("SELECT kind, label, status FROM outbox WHERE idp = 'b' ORDER BY 1")
    assert waiting == [("role", "staff", "pending"), ("user", "carol", "pending")]
    assert setup.held_by("b")["ledger"] == 0

    renamed = cli("idp", "rename", "a", "b", "--json").json()
    assert renamed["moved"]["accounts"] == 2 and renamed["moved"]["outbox"] == 0
    assert renamed["waited"] == 2
    assert setup.rows("SELECT count(*) FROM outbox WHERE idp = 'b'") == [(2,)]

    cli("sync").ok()
    assert len(created_at(scim2_server, sent)) == 1  # carol's account, nothing else
    assert sorted(u["userName"] for u in scim2_server.users()) == ["alice", "bob", "carol"]
    [group] = scim2_server.groups()  # one 'staff', not two
    assert len(group["members"]) == 3
    assert setup.rows("SELECT count(*) FROM outbox") == [(0,)]


def test_an_installation_that_never_ran_sync_is_protected_too(cli, setup, scim2_server):
    """Provisioned by commands alone (no cron sync): the first push recorded where 'a'
    points, so 'b' is known for its likely new name all the same."""
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "email=alice@example.com", "--role", "staff").ok()
    assert setup.rows("SELECT idp FROM idp_targets") == [("a",)]
    setup.configure("b")
    sent = len(requests_at(scim2_server))

    added = cli("user", "add", "bob", "-c", "email=bob@example.com", "--role", "staff", "--json")
    assert added.exit_code == 6, added
    waiting = json.loads(added.stdout)["outbound"]["awaiting_rename"]
    assert waiting == {"b": {"rows": 2, "from": "a"}}
    refused = " ".join(cli("sync").fails(2).split())
    assert "error: 'b' awaits `idprov idp rename a b`: it has no ledger" in refused
    assert requests_at(scim2_server)[sent:] == []

    cli("idp", "rename", "a", "b").ok()
    cli("sync").ok()
    assert sorted(u["userName"] for u in scim2_server.users()) == ["alice", "bob"]
    [group] = scim2_server.groups()
    assert len(group["members"]) == 2


def test_an_idp_pointing_elsewhere_is_pushed_to_and_synced(cli, setup, scim2_server):
    """'a' renamed to 'b' in the file, and 'c', at another target, added beside it: 'c'
    is no likely new name of 'a', so its pushes and syncs go on; the sync of both is
    refused whole (as for the deletion guard) and names the one that can run."""
    provisioned_under_a(cli)
    other = scim2_server.base_url.replace("/v2", "c/v2")  # another tenant: another target
    path = setup.tmp_path / "idprov.yaml"
    setup.configure("b")
    entry = (
        f"  - {{name: c, connector: scim2, options: {{base_url: '{other}', auth: bearer,"
        " token: 'env:SCIM_TOKEN'}, provisioning_roles: [staff]}\n"
    )
    text = path.read_text().replace("applications:", entry + "applications:")
    path.write_text(text.replace("identity_providers: [b]", "identity_providers: [b, c]"))
    sent = len(requests_at(scim2_server))

    added = cli("user", "add", "carol", "-c", "email=carol@example.com", "--role", "staff")
    assert added.exit_code == 6, added
    assert "b: 2 not pushed, waiting in the outbox for `idprov idp rename a b`" in added.stdout
    assert "✓ c: 4 done" in added.stdout  # carol, staff and the members it brought
    assert requests_at(scim2_server)[sent:] == []
    error = cli("sync", "--json").error(2)
    assert "`idprov idp rename a b`" in error["message"]
    assert "`idprov sync --idp c`" in error["hint"]
    cli("sync", "--idp", "c").ok()
    headers = {"Authorization": f"Bearer {scim2_server.token}"}
    with httpx.Client(base_url=other, headers=headers, timeout=10.0) as client:
        at_c = Scim2Peer(other, scim2_server.token, client)
        assert sorted(u["userName"] for u in at_c.users()) == ["alice", "bob", "carol"]
        [group] = at_c.groups()
        assert len(group["members"]) == 3
    assert requests_at(scim2_server)[sent:] == []  # nothing went to b's target


def test_the_rename_merges_the_rows_the_new_name_made_while_it_waited(cli, setup):
    """A user with a row under both names keeps the old name's (its id, attempts, since
    when it waits) with the newer change; one the deletion guard held stays held."""
    provisioned_under_a(cli)
    ids = dict(setup.rows("SELECT label, local_id FROM ledger WHERE idp = 'a' AND kind = 'user'"))
    columns = "(idp, kind, local_id, domain, label, status, attempts, last_error, enqueued_at,"
    columns += " updated_at, next_attempt_at)"
    setup.execute(
        f"INSERT INTO outbox {columns} VALUES ('a', 'user', ?, 'PRIMARY', 'alice', 'failed', 2,"
        " '503 from the target', '2026-01-01', '2026-01-02', '9999-01-01T00:00:00.000Z'),"
        " ('a', 'user', ?, 'PRIMARY', 'bob', 'held', 0, 'deletion guard: 30 removals', "
        " '2026-01-01', '2026-01-02', NULL)",
        (ids["alice"], ids["bob"]),
    )
    before = dict(setup.rows("SELECT label, id FROM outbox WHERE idp = 'a'"))
    setup.configure("b")
    for name in ("alice", "bob"):
        assert cli("user", "update", name, "-c", "title=Boss").exit_code == 6

    out = cli("idp", "rename", "a", "b").ok().stdout
    assert "2 outbox rows made under 'b' while it waited for this rename stay there (2 merged" in (
        " ".join(out.split())
    )
    rows = setup.rows(
        "SELECT label, id, status, attempts, last_error, enqueued_at, next_attempt_at"
        " FROM outbox WHERE idp = 'b' ORDER BY label"
    )
    assert rows == [
        ("alice", before["alice"], "pending", 2, "503 from the target", "2026-01-01", None),
        ("bob", before["bob"], "held", 0, "deletion guard: 30 removals", "2026-01-01", None),
    ]
    assert setup.rows("SELECT count(*) FROM outbox WHERE idp = 'a'") == [(0,)]


def test_serve_logs_a_push_that_awaits_the_rename(tmp_path, scim2_server, monkeypatch):
    """`idprov serve` restarted on the renamed configuration commits a SCIM client's
    change and says in its access log that the push waits for `idprov idp rename` (it
    said ``outbound=ok`` for a push that sent nothing)."""
    from tests.test_serve_scim import new_user, running, serve_config

    monkeypatch.setenv("CRM_TOKEN", "crm-token-5f0c1d2e")
    monkeypatch.setenv("HR_TOKEN", "hr-token-9a8b7c6d")
    monkeypatch.setenv("OUT_TOKEN", scim2_server.token)

    def idp(name: str) -> str:
        return f"""
  - name: {name}
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:OUT_TOKEN}}"""

    with running(serve_config(tmp_path, idp("a"), "[a]")) as inbound:
        new_user(inbound.client, "alice")
        assert "outbound=ok" in inbound.log.getvalue()
    with running(serve_config(tmp_path, idp("b"), "[b]")) as inbound:
        new_user(inbound.client, "bob")
        assert "outbound=awaiting_rename:1" in inbound.log.getvalue()
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]


# ---------------------------------------------------------------- a process older than the rename


def old_configuration(setup: Setup) -> Path:
    """A copy of the configuration as it is now: what a worker started now runs with."""
    path = setup.tmp_path / "old.yaml"
    path.write_text((setup.tmp_path / "idprov.yaml").read_text())
    return path


def test_a_worker_started_before_the_rename_pushes_nothing_under_the_old_name(
    cli, setup, scim2_server
):
    """The resilience trial's duplicate: a worker running the configuration that names
    'a' pushed once (it asked then whether 'a' awaits a rename: no), then 'a' was
    renamed to 'b' and a command with the old configuration committed a change under
    'a'. The worker pushed it under 'a', whose ledger had gone: it adopted the accounts
    and made the group again, a second ledger the rename could never merge. It now
    asks at each cycle, pushes nothing, says why once, and the rows wait."""
    provisioned_under_a(cli)
    old = old_configuration(setup)
    with IdentityService(load_config(old)) as worker:
        with worker.unit_of_work(push=False) as uow:  # `import users --no-push`
            uow.update_user("alice", {"title": "W0"})
        assert worker.outbound.work(once=True).ok  # its first push
        assert [u["title"] for u in scim2_server.users() if u["userName"] == "alice"] == ["W0"]

        setup.configure("b")
        cli("idp", "rename", "a", "b").ok()
        sent = len(requests_at(scim2_server))
        stale = cli("--config", str(old), "user", "update", "bob", "-c", "title=W1")
        assert stale.exit_code == 6, stale
        assert "⏸ a: 1 not pushed, its ledger went to b (`idprov idp rename`" in stale.stdout
        assert "this configuration is older than that rename; use the new one" in stale.stdout
        synced = cli("--config", str(old), "sync", "--json").error(2)  # a cron on the old file
        assert "'a' was renamed 'b' by `idprov idp rename`" in synced["message"]
        assert "rename b a" not in synced["message"] + synced["hint"]  # never: it undoes it
        assert requests_at(scim2_server)[sent:] == []
        with worker.unit_of_work(push=False) as uow:
            uow.update_user("alice", {"title": "W1"})

        said: list[str] = []
        worker.outbound.say = said.append  # what `idprov outbox work` prints, as it happens
        report = worker.outbound.work(once=True)
        assert requests_at(scim2_server)[sent:] == []  # nothing went to the target
        assert report.awaiting_rename == {"a": 2} and not report.ok
        [line] = said
        assert line.startswith(
            "2 outbox row(s) of identity provider 'a' were not pushed: `idprov idp rename a "
            "b` moved its ledger to 'b' at "
        )
        assert "restart this worker or `idprov serve` with the new configuration" in line
        stop = threading.Event()

        def told(text: str) -> None:
            said.append(text)
            stop.set()

        worker.outbound.say = told
        worker.outbound.work(stop=stop)  # the long-running loop: one cycle
        assert len(said) == 2 and said[1].startswith("2 outbox row(s) of identity provider 'a'")

        change = worker.update_user("alice", {"title": "W2"})  # serve's push of a request
        assert change.outbound is not None and change.outbound.awaiting_rename == {"a": 1}
        assert requests_at(scim2_server)[sent:] == []
    waiting = setup.rows("SELECT label, status, claimed_by FROM outbox WHERE idp = 'a'")
    assert sorted(waiting) == [("alice", "pending", None), ("bob", "pending", None)]
    assert setup.held_by("a")["ledger"] == 0

    cli("sync").ok()  # the new configuration pushes those changes under 'b'
    assert created_at(scim2_server, sent) == []
    titles = {u["userName"]: u.get("title") for u in scim2_server.users()}
    assert titles == {"alice": "W2", "bob": "W1"}
    [group] = scim2_server.groups()  # one 'staff', not two
    assert len(group["members"]) == 2


def test_a_worker_started_before_the_rename_stops_even_if_the_new_name_points_elsewhere(
    cli, setup, scim2_server
):
    """'b' written with another base_url than 'a' had (another spelling of the same
    target, say): the worker's 'a' no longer matches 'b' by target, but the rename came
    after the worker first asked, so it stops pushing to 'a' all the same."""
    provisioned_under_a(cli)
    old = old_configuration(setup)
    with IdentityService(load_config(old)) as worker:
        with worker.unit_of_work(push=False) as uow:
            uow.update_user("alice", {"title": "W0"})
        assert worker.outbound.work(once=True).ok
        setup.configure("b", base_url=scim2_server.base_url + "/elsewhere")
        cli("idp", "rename", "a", "b").ok()
        sent = len(requests_at(scim2_server))
        with worker.unit_of_work(push=False) as uow:
            uow.update_user("alice", {"title": "W1"})
        report = worker.outbound.work(once=True)
        assert requests_at(scim2_server)[sent:] == []
        assert report.to_dict()["awaiting_rename"]["a"]["from"] == "b"
        assert report.to_dict()["awaiting_rename"]["a"]["renamed_away_at"]
    assert setup.rows("SELECT label, status FROM outbox WHERE idp = 'a'") == [("alice", "pending")]


def test_status_counts_the_rows_left_under_a_name_no_longer_configured_as_orphaned(cli, setup):
    """As `outbox list` shows them: no line of the table says they are pending."""
    provisioned_under_a(cli)
    setup.execute(
        "INSERT INTO outbox (idp, kind, local_id, domain, label, enqueued_at, updated_at)"
        " VALUES ('gone', 'user', 'x1', 'PRIMARY', 'carol', '2026-01-01', '2026-01-01')"
    )
    assert [r["status"] for r in cli("outbox", "list", "--json").items()] == ["orphaned"]
    shown = {s["idp"]: s for s in cli("status", "--json").items()}
    assert shown["gone"]["configured"] is False and shown["gone"]["outbox"] == {"orphaned": 1}
    assert shown["a"]["configured"] is True
    status = cli("status").ok()
    assert "gone" not in status.stdout
    assert (
        "warning: 1 outbox row(s) of 'gone', which is not configured, are orphaned: nothing "
        "pushes them (`idprov outbox list --idp gone`)" in " ".join(status.stderr.split())
    )


def test_a_fresh_command_on_the_old_file_never_pushes_under_the_old_name(cli, setup, scim2_server):
    """A cron job still on the old configuration, after a rename whose new entry spells
    the target otherwise (localhost for 127.0.0.1): a fresh process saw the rename as
    old news, the targets did not match, and it pushed under 'a', adopting the
    accounts into a second ledger. A name renamed away is never pushed under."""
    provisioned_under_a(cli)
    old = old_configuration(setup)
    setup.configure("b", base_url=scim2_server.base_url.replace("127.0.0.1", "localhost"))
    cli("idp", "rename", "a", "b").ok()
    sent = len(requests_at(scim2_server))
    stale = cli("--config", str(old), "user", "update", "bob", "-c", "title=W1")
    assert stale.exit_code == 6, stale
    assert "its ledger went to b" in stale.stdout
    assert cli("--config", str(old), "outbox", "work", "--once").exit_code == 6
    assert requests_at(scim2_server)[sent:] == []
    assert setup.held_by("a")["ledger"] == 0  # no second ledger


# ---------------------------------------------------------------- the name given to another IdP


def add_idp(setup: Setup, name: str, base_url: str) -> None:
    """Configure ``name`` at ``base_url`` beside what the file has, for the resident app."""
    path = setup.tmp_path / "idprov.yaml"
    entry = (
        f"  - {{name: {name}, connector: scim2, options: {{base_url: '{base_url}', auth: "
        "bearer, token: 'env:SCIM_TOKEN'}, provisioning_roles: [staff]}\n"
    )
    text = path.read_text().replace("applications:", entry + "applications:")
    text = text.replace("identity_providers: [", f"identity_providers: [{name}, ")
    path.write_text(text)


def tenant(scim2_server: Scim2Peer, base_url: str) -> Iterator[Scim2Peer]:
    headers = {"Authorization": f"Bearer {scim2_server.token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as client:
        yield Scim2Peer(base_url, scim2_server.token, client)


def users_at(scim2_server: Scim2Peer, base_url: str) -> list[str]:
    for peer in tenant(scim2_server, base_url):
        return sorted(u["userName"] for u in peer.users())
    return []


def test_forget_rename_gives_the_name_to_another_idp_and_keeps_old_processes_stopped(
    cli, setup, scim2_server
):
    """After `idp rename a b`, nothing was ever pushed under 'a' again: an administrator
    could not add another identity provider called 'a'. `idp forget-rename a` gives the
    name away, audited; the new 'a' (another target) is pushed to, with a ledger of its
    own, while a worker still on the configuration older than the rename (its 'a' points
    where the renamed one did) pushes nothing, however long it runs."""
    provisioned_under_a(cli)
    old = old_configuration(setup)
    with IdentityService(load_config(old)) as worker:
        assert worker.outbound.work(once=True).ok  # it ran before the rename
        setup.configure("b")
        cli("idp", "rename", "a", "b").ok()
        other = scim2_server.base_url.replace("/v2", "new/v2")
        add_idp(setup, "a", other)
        sent = len(requests_at(scim2_server))
        waited = cli("user", "add", "carol", "-c", "email=carol@example.com", "-r", "staff")
        assert waited.exit_code == 6 and "⏸ a: " in waited.stdout  # not yet
        assert users_at(scim2_server, other) == []

        forgotten = cli("idp", "forget-rename", "a").ok()
        assert "✓ 'a' is free: `idprov idp rename a b`" in forgotten.stdout
        assert f"an entry 'a' that points at scim2 base_url={scim2_server.base_url}" in (
            " ".join(forgotten.stdout.split())
        )
        assert "outbox rows wait under 'a'" in " ".join(forgotten.stdout.split())
        [entry] = cli("log", "--action", "idp.forget_rename", "--json").items()
        assert entry["target"] == "a" and entry["details"]["renamed_to"] == "b"

        cli("sync").ok()  # the new 'a' gets everyone in scope, in a ledger of its own
        assert users_at(scim2_server, other) == ["alice", "bob", "carol"]
        assert setup.held_by("a")["ledger"] == 4 and setup.held_by("b")["ledger"] == 4

        with worker.unit_of_work(push=False) as uow:
            uow.update_user("alice", {"title": "W1"})
        report = worker.outbound.work(once=True)  # the old 'a': still stopped
        assert report.awaiting_rename == {"a": 1}
        assert report.to_dict()["awaiting_rename"]["a"]["from"] == "b"
        stale = cli("--config", str(old), "user", "update", "bob", "-c", "title=W2")
        assert stale.exit_code == 6 and "its ledger went to b" in stale.stdout
        assert cli("--config", str(old), "sync").exit_code == 2
    assert [r for r in requests_at(scim2_server)[sent:] if " POST " in r] == []
    assert users_at(scim2_server, other) == ["alice", "bob", "carol"]

    again = cli("idp", "forget-rename", "a", "--json").error(3)
    assert "given to another identity provider already" in again["message"]
    assert "was not renamed away" in cli("idp", "forget-rename", "zz", "--json").error(3)["message"]


def test_forget_rename_refuses_the_renamed_idp_itself_and_an_unknown_target(cli, setup):
    """An entry 'a' pointing where the renamed 'a' did is that IdP (rename it back); a
    name whose target was never recorded cannot be told from a process older than the
    rename, so it is given away only with --force."""
    provisioned_under_a(cli)
    setup.configure("b")
    cli("idp", "rename", "a", "b").ok()
    add_idp(setup, "a", setup.base_url)
    error = cli("idp", "forget-rename", "a", "--json").error(4)
    assert "it is that identity provider" in error["message"]
    assert "`idprov idp rename b a`" in error["hint"]

    setup.configure("b")
    setup.execute("UPDATE idp_renames SET target = NULL WHERE idp = 'a'")  # a rename of old
    error = cli("idp", "forget-rename", "a", "--json").error(4)
    assert "does not know where 'a' pointed" in error["message"] and "--force" in error["hint"]
    assert setup.rows("SELECT count(*) FROM idp_renames WHERE idp = 'a'") == [(1,)]
    cli("idp", "forget-rename", "a", "--force").ok()
    assert setup.rows("SELECT count(*) FROM idp_renames WHERE idp = 'a'") == [(0,)]


def test_a_rename_after_the_name_was_given_away_leaves_the_new_idp_pushing(
    cli, setup, scim2_server
):
    """The chain: 'a' renamed 'b', 'a' given to another IdP, then 'b' renamed 'c'. The
    rename rewrote the record of 'a' (its ledger went on to 'c'), and a process running
    since, whose 'a' is the new one, must go on pushing to it without a restart, while
    one older than the first rename stays stopped and says where the ledger is now."""
    provisioned_under_a(cli)
    oldest = old_configuration(setup)
    setup.configure("b")
    cli("idp", "rename", "a", "b").ok()
    other = scim2_server.base_url.replace("/v2", "new/v2")
    add_idp(setup, "a", other)
    cli("idp", "forget-rename", "a").ok()
    cli("sync").ok()
    middle = old_configuration(setup)  # new 'a' and 'b'
    with IdentityService(load_config(middle)) as worker:
        assert worker.outbound.work(once=True).ok
        text = (setup.tmp_path / "idprov.yaml").read_text()
        (setup.tmp_path / "idprov.yaml").write_text(
            text.replace("name: b", "name: c").replace(", b]", ", c]")
        )
        cli("idp", "rename", "b", "c").ok()
        with worker.unit_of_work(push=False) as uow:
            uow.update_user("alice", {"title": "N1"})
        report = worker.outbound.work(once=True)
        assert report.awaiting_rename == {"b": 1}  # b is renamed away; a is not
        assert "a" not in report.awaiting_rename
    for peer in tenant(scim2_server, other):
        assert {u["userName"]: u.get("title") for u in peer.users()}["alice"] == "N1"
    stale = cli("--config", str(oldest), "user", "update", "bob", "-c", "title=W2")
    assert stale.exit_code == 6 and "its ledger went to c" in stale.stdout
    assert setup.rows("SELECT renamed_to FROM idp_renames WHERE idp = 'a'") == [("c",)]


def test_a_rename_into_a_name_renamed_away_keeps_the_older_configuration_stopped(
    cli, setup, scim2_server
):
    """'a' renamed 'b', then another IdP 'x' renamed 'a': the rename took 'a' for a name
    in use again and dropped its record, and a cron job on the configuration older than
    the first rename pushed under 'a', to the target 'a' pointed at, through x's ledger
    (ids of another system). Its entry points where the renamed 'a' did: it stays
    stopped; the 'a' that was 'x' is pushed to."""
    provisioned_under_a(cli)
    oldest = old_configuration(setup)
    setup.configure("b")
    cli("idp", "rename", "a", "b").ok()
    other = scim2_server.base_url.replace("/v2", "x/v2")
    add_idp(setup, "x", other)
    cli("sync").ok()
    path = setup.tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace("name: x", "name: a").replace("[x, ", "[a, "))
    cli("idp", "rename", "x", "a").ok()
    sent = len(requests_at(scim2_server))

    stale = cli("--config", str(oldest), "user", "update", "bob", "-c", "title=W2")
    assert stale.exit_code == 6 and "its ledger went to b" in stale.stdout
    assert cli("--config", str(oldest), "sync").exit_code == 2
    assert requests_at(scim2_server)[sent:] == []
    cli("user", "update", "alice", "-c", "title=N1").ok()  # the 'a' that was 'x'
    for peer in tenant(scim2_server, other):
        assert {u["userName"]: u.get("title") for u in peer.users()}["alice"] == "N1"


def test_a_name_given_away_twice_keeps_every_older_configuration_stopped(cli, setup, scim2_server):
    """'a' renamed 'b' (at T1), given away; a second 'a' (at T2) renamed 'd', given away
    again; a third 'a' (at T3) provisioned. The second rename overwrote the target the
    first had kept, so a cron job on the configuration older than the first rename (its
    'a' at T1) pushed under 'a' through the third one's ledger: PATCHes with T3's ids,
    T1's accounts adopted into it, a second group made at T1. Every target a name
    pointed at when it was renamed away stays: both older configurations stay stopped,
    and the third 'a' is pushed to."""
    provisioned_under_a(cli)
    oldest = setup.tmp_path / "oldest.yaml"
    oldest.write_text((setup.tmp_path / "idprov.yaml").read_text())  # 'a' at T1
    setup.configure("b")
    cli("idp", "rename", "a", "b").ok()
    t2 = scim2_server.base_url.replace("/v2", "two/v2")
    add_idp(setup, "a", t2)
    cli("idp", "forget-rename", "a").ok()
    cli("sync").ok()  # the second 'a', at T2
    middle = old_configuration(setup)  # 'a' at T2
    path = setup.tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace("{name: a,", "{name: d,").replace("[a, ", "[d, "))
    cli("idp", "rename", "a", "d").ok()
    cli("idp", "forget-rename", "a").ok()
    t3 = scim2_server.base_url.replace("/v2", "three/v2")
    add_idp(setup, "a", t3)
    cli("sync").ok()  # the third 'a', at T3
    assert users_at(scim2_server, t3) == ["alice", "bob"]
    held = "SELECT kind, local_id, remote_id FROM ledger WHERE idp = 'a' ORDER BY 2"
    ledger = setup.rows(held)
    sent = len(requests_at(scim2_server))

    stale = cli("--config", str(oldest), "user", "update", "bob", "-c", "title=W2")
    assert stale.exit_code == 6 and "its ledger went to b" in stale.stdout, stale
    assert cli("--config", str(oldest), "sync").exit_code == 2
    assert requests_at(scim2_server)[sent:] == []  # nothing at T1
    stale = cli("--config", str(middle), "user", "update", "bob", "-c", "title=W3")
    assert stale.exit_code == 6 and "⏸ a: " in stale.stdout  # its 'b' pushes to T1
    assert "its ledger went to d" in stale.stdout, stale
    for peer in tenant(scim2_server, t2):  # nothing under 'a' at T2
        assert {u["userName"]: u.get("title") for u in peer.users()}["bob"] is None
    assert setup.rows(
        "SELECT kind, local_id, remote_id FROM ledger WHERE idp = 'a' ORDER BY 2"
    ) == (ledger)
    cli("user", "update", "alice", "-c", "title=N1").ok()  # the third 'a' pushes
    for peer in tenant(scim2_server, t3):
        assert {u["userName"]: u.get("title") for u in peer.users()}["alice"] == "N1"


def test_a_rename_into_a_name_whose_target_is_unknown_needs_force(cli, setup, scim2_server):
    """'a' renamed 'b' when nothing had recorded where it pointed (a plugin connector
    never has a target); then 'x' renamed 'a' dropped the record of 'a' without a word,
    and a cron job on the configuration older than the first rename pushed to T1 through
    x's ledger. As forget-rename does, the rename refuses, changing nothing, unless
    --force."""
    provisioned_under_a(cli)
    oldest = old_configuration(setup)
    setup.configure("b")
    cli("idp", "rename", "a", "b").ok()
    setup.execute("UPDATE idp_renames SET target = NULL WHERE idp = 'a'")  # a rename of old
    setup.execute("DELETE FROM idp_rename_targets WHERE idp = 'a'")
    other = scim2_server.base_url.replace("/v2", "x/v2")
    add_idp(setup, "x", other)
    cli("sync").ok()
    path = setup.tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace("{name: x,", "{name: a,").replace("[x, ", "[a, "))
    sent = len(requests_at(scim2_server))

    for dry in ((), ("--dry-run",)):
        error = cli("idp", "rename", "x", "a", *dry, "--json").error(4)
        assert "does not know where 'a' pointed" in error["message"]
        assert "`idprov idp rename a b`" in error["message"]
        assert "--force" in error["hint"] and "another name" in error["hint"]
    assert setup.rows("SELECT renamed_to, freed_at FROM idp_renames WHERE idp = 'a'") == [
        ("b", None)
    ]
    assert setup.held_by("x")["ledger"] == 3 and setup.held_by("a")["ledger"] == 0
    stale = cli("--config", str(oldest), "user", "update", "bob", "-c", "title=W2")
    assert stale.exit_code == 6 and "its ledger went to b" in stale.stdout, stale
    assert requests_at(scim2_server)[sent:] == []

    cli("idp", "rename", "x", "a", "--force").ok()
    assert setup.held_by("a")["ledger"] == 3
    cli("user", "update", "alice", "-c", "title=N1").ok()
    for peer in tenant(scim2_server, other):
        assert {u["userName"]: u.get("title") for u in peer.users()}["alice"] == "N1"


def test_a_name_renamed_back_where_it_pointed_is_pushed_to_again(cli, setup, scim2_server):
    """'a' renamed 'b', then 'b' renamed back 'a' (same target): the kept target goes
    with the record, and a configuration naming 'a' there is pushed to."""
    provisioned_under_a(cli)
    oldest = old_configuration(setup)
    setup.configure("b")
    cli("idp", "rename", "a", "b").ok()
    setup.configure("a")
    cli("idp", "rename", "b", "a").ok()
    assert setup.rows("SELECT count(*) FROM idp_rename_targets WHERE idp = 'a'") == [(0,)]
    cli("--config", str(oldest), "user", "update", "bob", "-c", "title=W1").ok()


def test_forget_rename_refuses_an_entry_where_an_earlier_rename_took_the_name_from(
    cli, setup, scim2_server
):
    """'a' renamed 'b' (at T1), given away; the second 'a' (at T2) renamed 'd'. An entry
    'a' pointing at T1 again is the first IdP, stopped by the first rename whatever
    forget-rename does: it says so, and how to use the name for it, instead of saying the
    name is free."""
    provisioned_under_a(cli)
    setup.configure("b")
    cli("idp", "rename", "a", "b").ok()
    t2 = scim2_server.base_url.replace("/v2", "two/v2")
    add_idp(setup, "a", t2)
    cli("idp", "forget-rename", "a").ok()
    cli("sync").ok()
    path = setup.tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace("{name: a,", "{name: d,").replace("[a, ", "[d, "))
    cli("idp", "rename", "a", "d").ok()
    add_idp(setup, "a", setup.base_url)

    error = cli("idp", "forget-rename", "a", "--json").error(4)
    assert f"points at scim2 base_url={setup.base_url}" in error["message"]
    assert "it is under 'b' now" in error["message"]
    assert "it is that identity provider" in error["message"]
    assert "`idprov idp rename b a`" in error["hint"]
    assert setup.rows("SELECT freed_at FROM idp_renames WHERE idp = 'a'") == [(None,)]


def test_the_rename_merges_two_changes_as_an_enqueue_coalesces_them(cli, setup):
    """A row under both names carries both changes: it keeps the smaller allowance (none
    if either has none), the mark of a change no guard judged yet, and that a password
    was not sent, as a row two changes coalesce into does (the merge took the new row's
    allowance as it was, and dropped the two marks)."""
    provisioned_under_a(cli)
    ids = dict(setup.rows("SELECT label, local_id FROM ledger WHERE idp = 'a' AND kind = 'user'"))
    columns = "(idp, kind, local_id, domain, label, status, enqueued_at, updated_at, allowed,"
    columns += " unjudged, password_unsent)"
    setup.execute(
        f"INSERT INTO outbox {columns} VALUES ('a', 'user', ?, 'PRIMARY', 'alice', 'pending',"
        " '2026-01-01', '2026-01-02', NULL, 1, 0), ('a', 'user', ?, 'PRIMARY', 'bob',"
        " 'pending', '2026-01-01', '2026-01-02', 40, 0, 1)",
        (ids["alice"], ids["bob"]),
    )
    setup.configure("b")
    for name in ("alice", "bob"):
        assert cli("user", "update", name, "-c", "title=Boss").exit_code == 6
    setup.execute("UPDATE outbox SET allowed = 50 WHERE idp = 'b'")
    setup.execute("UPDATE outbox SET unjudged = 1 WHERE idp = 'b' AND label = 'bob'")
    setup.execute("UPDATE outbox SET password_unsent = 1 WHERE idp = 'b' AND label = 'alice'")

    cli("idp", "rename", "a", "b").ok()

    rows = setup.rows(
        "SELECT label, allowed, unjudged, password_unsent FROM outbox WHERE idp = 'b'"
        " ORDER BY label"
    )
    assert rows == [("alice", None, 1, 1), ("bob", 40, 1, 1)]


def test_the_rename_keeps_the_mark_of_a_change_cut_before_its_own_push_judged_it(cli, setup):
    """A change committed under the new name whose own push was cut before its guard
    judged it (its rows marked for that push, :data:`OWN_PUSH`) merged into a row the
    old name had: the merged row carries a change no guard judged, and says so (the
    merge kept only a mark of 1, so the cut change went out a row at a time)."""
    from idprov.provisioning.outbox import OWN_PUSH, UNJUDGED

    provisioned_under_a(cli)
    ids = dict(setup.rows("SELECT label, local_id FROM ledger WHERE idp = 'a' AND kind = 'user'"))
    setup.execute(
        "INSERT INTO outbox (idp, kind, local_id, domain, label, status, enqueued_at,"
        " updated_at, unjudged) VALUES ('a', 'user', ?, 'PRIMARY', 'bob', 'pending',"
        " '2026-01-01', '2026-01-02', 0)",
        (ids["bob"],),
    )
    setup.configure("b")
    assert cli("user", "update", "bob", "-c", "title=Boss").exit_code == 6
    setup.execute(f"UPDATE outbox SET unjudged = {OWN_PUSH} WHERE idp = 'b' AND label = 'bob'")

    cli("idp", "rename", "a", "b").ok()

    rows = setup.rows("SELECT label, unjudged FROM outbox WHERE idp = 'b'")
    assert rows == [("bob", UNJUDGED)]
