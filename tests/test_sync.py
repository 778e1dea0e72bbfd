"""`idprov sync`, `plan`, `explain`: against the real SCIM server, and with faults."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.provisioning.lock import RunLock
from idprov.provisioning.service import IdentityService
from idprov.provisioning.state import AuditQuery
from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.peers.scim2 import Scim2Peer


def write_config(tmp_path: Path, base_url: str, extra: str = "") -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}
applications:
  - name: resident
    identity_providers: [scim]
""")


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server.base_url)
    return scim2_server


def db(tmp_path: Path) -> sqlite3.Connection:
    """idprov's database, written directly: what a change outside idprov looks like."""
    return sqlite3.connect(tmp_path / "data" / "idprov.db", isolation_level=None)


def names(resources: list[dict], key: str = "userName") -> set[str]:
    return {r[key] for r in resources}


def seed(cli, count: int = 3) -> None:
    cli("role", "add", "staff").ok()
    for i in range(count):
        cli("user", "add", f"user{i}", "-c", f"email=user{i}@example.com", "-r", "staff").ok()


def test_changes_made_outside_idprov_are_pushed_and_nothing_else(cli, scim, tmp_path):
    seed(cli)
    cli("user", "add", "outsider", "-c", "email=o@example.com").ok()
    assert cli("plan", "--json").json()["plan"]["idps"][0]["items"] == []
    with db(tmp_path) as conn:  # edited in the store directly, and a role granted there
        conn.execute(
            "UPDATE users SET claims = json_set(claims, '$.title', 'Boss') WHERE username = 'user0'"
        )
        conn.execute(
            "INSERT INTO user_roles SELECT u.id, r.id FROM users u, roles r"
            " WHERE u.username = 'outsider' AND r.name = 'staff'"
        )
        conn.execute(
            "DELETE FROM user_roles WHERE user_id = (SELECT id FROM users WHERE username = 'user2')"
        )
    plan = cli("plan", "--json").json()["plan"]["idps"][0]
    actions = {(i["label"], i["action"]) for i in plan["items"]}
    assert actions == {
        ("user0", "update"),
        ("outsider", "create"),
        ("user2", "delete"),
        ("staff", "update"),
    }
    assert next(i for i in plan["items"] if i["label"] == "user0")["changed"] == ["title"]
    result = cli("sync", "--json").json()
    assert result["outbound"]["ok"]
    users = {u["userName"]: u for u in scim.users()}
    assert set(users) == {"user0", "user1", "outsider"}
    assert users["user0"]["title"] == "Boss"
    members = {m["value"] for m in scim.groups()[0]["members"]}
    assert members == {users[n]["id"] for n in ("user0", "user1", "outsider")}
    again = cli("sync", "--json", "--detailed-exitcode").json()
    assert again["plan"]["idps"][0]["items"] == [] and again["outbound"]["idps"] == []


def test_a_dry_run_with_changes_pending_exits_11_under_detailed_exitcode(cli, scim, tmp_path):
    """As terraform plan's -detailed-exitcode: one check for cron or CI, "the plan is
    not empty" (a dry run exited 0 whatever its plan held)."""
    seed(cli)
    assert cli("sync", "--dry-run", "--detailed-exitcode").exit_code == 0  # in sync
    assert cli("plan", "--detailed-exitcode").exit_code == 0
    with db(tmp_path) as conn:
        conn.execute(
            "UPDATE users SET claims = json_set(claims, '$.title', 'Boss') WHERE username = 'user0'"
        )
    assert cli("sync", "--dry-run", "--detailed-exitcode").exit_code == 11
    run = cli("plan", "--detailed-exitcode", "--json")
    assert run.exit_code == 11, run
    assert json.loads(run.stdout)["plan"]["idps"][0]["items"][0]["label"] == "user0"
    assert cli("plan").exit_code == 0  # without the flag, as before
    assert "title" not in {u["userName"]: u for u in scim.users()}["user0"]  # nothing sent
    assert cli("sync", "--detailed-exitcode").exit_code == 11  # applied
    assert cli("sync", "--dry-run", "--detailed-exitcode").exit_code == 0


def test_dry_run_changes_nothing_on_either_side(cli, scim, tmp_path):
    seed(cli)
    with db(tmp_path) as conn:
        conn.execute("DELETE FROM user_roles")
    before_remote = (scim.users(), scim.groups())
    before_local = (tmp_path / "data" / "idprov.db").read_bytes()
    out = tmp_path / "plan.json"
    run = cli("sync", "--dry-run", "--out", str(out), "--json")
    assert run.exit_code == 0 and len(run.json()["plan"]["idps"][0]["items"]) == 4
    assert (scim.users(), scim.groups()) == before_remote
    with db(tmp_path) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    assert json.loads(out.read_text())["fingerprint"]
    del before_local


def test_deletion_guard_trips_when_the_store_suddenly_reads_empty(cli, scim, tmp_path):
    write_config(
        tmp_path,
        scim.base_url,
        "    deletion_guard: {max_deletes: 2, max_percent: 50, min_deletes: 2}\n",
    )
    seed(cli, 5)
    with db(tmp_path) as conn:
        conn.execute("DELETE FROM users")
    run = cli("sync", "--json")
    error = run.error(7)
    assert "deletion guard" in error["message"] and "--allow-deletes 5" in error["hint"]
    assert len(scim.users()) == 5
    assert cli("log", "--action", "sync.run", "--json").items()[0]["outcome"] == "refused"
    cli("sync", "--allow-deletes", "5").ok()
    assert scim.users() == []


def test_a_store_that_cannot_be_read_is_never_treated_as_empty(cli, scim, tmp_path):
    broken = tmp_path / "hr.db"
    broken.write_bytes(b"this is not an sqlite database" * 100)
    write_config(tmp_path, scim.base_url)
    text = (
        (tmp_path / "idprov.yaml")
        .read_text()
        .replace(
            "identity_providers:",
            f"userstores:\n  - domain: PRIMARY\n  - domain: HR\n    path: {broken}\n"
            "identity_providers:",
            1,
        )
    )
    (tmp_path / "idprov.yaml").write_text(text)
    seed(cli, 2)
    error = cli("sync", "--json").error(7)
    assert "could not be read" in error["message"] and "HR" in error["message"]
    assert len(scim.users()) == 2


def test_a_second_sync_is_refused_while_one_runs_or_waits(cli, scim, tmp_path):
    seed(cli, 1)
    data = tmp_path / "data"
    with RunLock(data, "sync"):
        error = cli("sync", "--json").error(8)
        assert "pid" in error["message"] and "--wait" in error["hint"]
    lock = RunLock(data, "import")
    lock.__enter__()
    threading.Timer(0.3, lock.__exit__, (None, None, None)).start()
    start = time.monotonic()
    cli("sync", "--wait").ok()
    assert time.monotonic() - start >= 0.25


def test_a_sync_killed_midway_is_finished_by_the_next_without_duplicates(tmp_path, monkeypatch):
    from idprov.provisioning import engine
    from idprov.provisioning.sync import run_sync

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    idps = idp_yaml("target", "https://scim.test/v2")
    with make_service(tmp_path, idps, [], http_transport=fake.transport()) as loader:
        for i in range(30):
            loader.add_user(f"user{i:02d}", {"email": f"u{i}@example.com"})
    original = engine.Engine._finish
    calls = {"n": 0}

    def killed(self, task, attempts, value):
        if calls["n"] == 12:
            raise KeyboardInterrupt
        calls["n"] += 1
        original(self, task, attempts, value)

    monkeypatch.setattr(engine.Engine, "_finish", killed)
    with make_service(tmp_path, idps, ["target"], http_transport=fake.transport()) as svc:
        with pytest.raises(KeyboardInterrupt):
            run_sync(svc)
        [run] = svc.state.audit_entries(AuditQuery(action="sync.run"))
        assert run.outcome == "interrupted"  # not "refused", the deletion guard's word
        from idprov.provisioning.metrics import idp_status

        [status] = idp_status(svc)
        assert (status.last_sync_outcome, status.last_success) == ("interrupted", None)
    monkeypatch.setattr(engine.Engine, "_finish", original)
    with make_service(tmp_path, idps, ["target"], http_transport=fake.transport()) as svc:
        result = run_sync(svc)
        assert result.outbound is not None and result.outbound.ok
        assert run_sync(svc).plan.empty
    assert sorted(u["userName"] for u in fake.users.values()) == [f"user{i:02d}" for i in range(30)]


def test_a_second_run_sends_no_request(tmp_path, monkeypatch):
    from idprov.provisioning.sync import run_sync

    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    with make_service(
        tmp_path,
        idp_yaml("target", "https://scim.test/v2"),
        ["target"],
        http_transport=fake.transport(),
    ) as svc:
        for i in range(5):
            svc.add_user(f"user{i}", {"email": f"u{i}@example.com"})
        before = len(fake.requests)
        result = run_sync(svc)
        assert result.plan.empty and len(fake.requests) == before


def test_saved_plan_applies_exactly_or_is_refused(cli, scim, tmp_path):
    seed(cli, 2)
    with db(tmp_path) as conn:
        conn.execute("UPDATE users SET claims = json_set(claims, '$.title', 'X')")
    plan = tmp_path / "plan.json"
    cli("plan", "--out", str(plan)).ok()
    with db(tmp_path) as conn:
        conn.execute(
            "UPDATE users SET claims = json_set(claims, '$.title', 'Y') WHERE username = 'user0'"
        )
    error = cli("sync", "--apply", str(plan), "--json").error(4)
    assert "out of date" in error["message"]
    assert {u.get("title") for u in scim.users()} == {None}
    cli("plan", "--out", str(plan)).ok()
    cli("sync", "--apply", str(plan)).ok()
    assert {u["userName"]: u.get("title") for u in scim.users()} == {"user0": "Y", "user1": "X"}


def test_a_saved_plan_edited_by_hand_is_refused_not_applied_as_computed(cli, scim, tmp_path):
    """An item taken out of a saved plan (a deletion the operator struck out after
    review) was applied all the same: idprov applied what it computed, and only
    checked the fingerprint the file carried."""
    seed(cli, 2)
    with db(tmp_path) as conn:
        conn.execute("DELETE FROM user_roles")  # both out of scope, not yet pushed
    plan = tmp_path / "plan.json"
    cli("plan", "--out", str(plan)).ok()
    data = json.loads(plan.read_text())
    [items] = [p["items"] for p in data["idps"]]
    data["idps"][0]["items"] = [i for i in items if i["label"] != "user0"]
    plan.write_text(json.dumps(data))
    error = cli("sync", "--apply", str(plan), "--allow-deletes", "2", "--json").error(4)
    assert "changed after it was made" in error["message"]
    assert sorted(u["userName"] for u in scim.users()) == ["user0", "user1"]
    cli("plan", "--out", str(plan)).ok()  # its application is part of it too
    data = json.loads(plan.read_text())
    plan.write_text(json.dumps({**data, "application": "nope"}))
    error = cli("sync", "--apply", str(plan), "--allow-deletes", "2", "--json").error(4)
    assert "changed after it was made" in error["message"]


def test_explain_says_why(cli, scim):
    seed(cli, 1)
    cli("user", "add", "bob", "-c", "email=bob@example.com").ok()
    data = cli("explain", "bob", "--idp", "scim", "--json").json()
    assert not data["in_scope"] and "none of the provisioning roles" in data["why"]
    assert data["ledger"] is None and data["decision"]["action"] == "none"
    data = cli("explain", "user0", "--idp", "scim", "--json").json()
    assert data["in_scope"] and data["ledger"]["remote_id"]
    assert data["would_send"]["attributes"]['emails[type eq "work"].value'] == ("user0@example.com")


def test_verify_reports_drift_and_what_is_not_ours(cli, scim):
    seed(cli, 3)
    users = {u["userName"]: u for u in scim.users()}
    scim.client.delete(f"/Users/{users['user1']['id']}")
    scim.client.patch(
        f"/Users/{users['user2']['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"title": "Hacked", "active": False}}],
        },
    )
    scim.client.post(
        "/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "stranger"},
    )
    drift = cli("sync", "--dry-run", "--verify", "--json").json()["drift"]["scim"]
    assert drift["deleted_remotely"] == ["user1"]
    # disabled there by an administrator: reported, not drift to repair (--repair
    # re-enabled it, against "idprov never re-enables an account it did not disable");
    # the title they set is drift: idprov maps title and holds none for user2
    assert drift["disabled_remotely"] == ["user2"]
    assert drift["changed_remotely"] == [{"user": "user2", "attributes": ["title"]}]
    assert drift["unowned"] == ["stranger"]
    shown = cli("sync", "--verify", "--repair").ok().stdout
    assert "disabled at the target (an administrator's doing" in shown and "user2" in shown
    users = {u["userName"]: u for u in scim.users()}
    assert users["user2"]["active"] is False and users["user1"]["active"] is True
    assert "title" not in users["user2"]


def test_every_run_is_in_the_audit_log(cli, scim):
    seed(cli, 1)
    result = cli("sync", "--json").json()
    [entry] = cli("log", "--run", result["run"], "--json").items()
    assert entry["action"] == "sync.run" and entry["run"] == result["run"]
    service = IdentityService(load_config())
    service.close()


def test_a_read_that_misses_a_user_never_plans_its_deprovision(cli, scim, monkeypatch):
    """A read racing a change (an offset page shifting under a deletion) can miss an
    entry that still exists: it is looked up by id before it is planned for deletion."""
    from idprov.userstores.sql import SqlUserStore

    seed(cli, 3)
    real = SqlUserStore.iter_users

    def short(self, batch=1000, roles=True):
        for users in real(self, batch, roles):
            yield [u for u in users if u.username != "user1"]

    monkeypatch.setattr(SqlUserStore, "iter_users", short)
    items = cli("plan", "--json").json()["plan"]["idps"][0]["items"]
    assert items == []
    cli("sync").ok()
    assert len(scim.users()) == 3


def test_a_file_that_is_not_a_saved_plan_says_what_is_wrong(cli, scim, tmp_path):
    seed(cli, 2)
    with db(tmp_path) as conn:
        conn.execute("UPDATE users SET claims = json_set(claims, '$.title', 'X')")
    good = tmp_path / "plan.json"
    cli("plan", "--out", str(good)).ok()
    saved = json.loads(good.read_text())
    assert saved["idps"][0]["items"], saved
    saved["idps"][0]["items"][0]["kind"] = 5
    cases = {
        "missing.json": (None, 3, "No such file or directory"),
        "adir": (None, 2, "Is a directory"),
        "list.json": ("[]", 2, "top level: expected a JSON object"),
        "cut.json": ('{"application": "resident",', 2, "not JSON (line 1, column 28"),
        "idp.json": (
            '{"application": "resident", "idps": [{"name": 5}], "source_errors": []}',
            2,
            "idps[0].idp: missing",
        ),
        "item.json": (json.dumps(saved), 2, "idps[0].items[0].kind: expected text"),
    }
    (tmp_path / "adir").mkdir()
    for name, (text, code, says) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        error = cli("sync", "--apply", name, "--json").error(code)
        assert name in error["message"] and says in error["message"], error
        for python in ("Errno", "list indices", "('idp')", "KeyError", "TypeError"):
            assert python not in error["message"]
        if code == 2 and name != "adir":
            assert f"idprov plan --out {name}" in error["hint"]
    assert "idprov plan --out missing.json" in cli("sync", "--apply", "missing.json").stderr
    assert {u.get("title") for u in scim.users()} == {None}


def test_plan_out_is_private_and_makes_no_directories(cli, tmp_path):
    error = cli("plan", "--out", "no/such/plan.json", "--json").error(3)
    assert error["message"] == f"directory {Path('no/such')} does not exist"
    assert not (tmp_path / "no").exists()
    plan = tmp_path / "plan.json"
    plan.write_text("old")
    plan.chmod(0o644)
    cli("plan", "--out", str(plan)).ok()
    assert plan.stat().st_mode & 0o777 == 0o600
    assert json.loads(plan.read_text())["application"] == "resident"


def test_the_log_shows_a_syncs_counts_as_json_not_a_python_repr(cli, scim, tmp_path):
    seed(cli, 1)
    with db(tmp_path) as conn:  # a change for the sync to push
        conn.execute("UPDATE users SET claims = json_set(claims, '$.title', 'X')")
    cli("sync").ok()
    line = cli("log", "--action", "sync.run").ok().stdout.splitlines()[1]  # the newest
    assert 'scim={"done":1' in line and "{'" not in line, line


def test_sync_of_a_disabled_idp_by_name_says_it_is_disabled(
    cli, scim2_server, tmp_path, monkeypatch
):
    """`sync --idp X` of an IdP with `enabled: false` said "in sync: nothing to do" and
    exited 0, which a cron job reads as success: it is refused, saying why."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server.base_url, "    enabled: false")
    seed(cli)
    for command in (["sync"], ["plan"]):
        error = cli(*command, "--idp", "scim", "--json").error(2)
        assert error["message"] == "identity provider scim is disabled (enabled: false)"
        assert "enabled: true" in error["hint"]
    assert scim2_server.users() == []
