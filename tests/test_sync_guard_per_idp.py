"""`idprov sync` with the deletion guard tripped at one identity provider: that IdP's
plan is held, the others' are pushed (exit 7 still: something was held)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.scim2 import Scim2Peer, Scim2Process, new_tenant
from tests.test_metrics import samples

GUARD = "    deletion_guard: {max_deletes: 2, max_percent: 50, min_deletes: 2}\n"


@pytest.fixture()
def bee(scim2_server_process: Scim2Process) -> Iterator[Scim2Peer]:
    """A second tenant of the session's SCIM server: the other IdP's target."""
    with new_tenant(scim2_server_process) as peer:
        yield peer


@pytest.fixture()
def two(tmp_path: Path, scim2_server: Scim2Peer, bee: Scim2Peer, monkeypatch) -> Scim2Peer:
    """scim-a (staff, a tight guard) and scim-bee (eng); returns scim-a's target."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim-a
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
{GUARD}
  - name: scim-bee
    connector: scim2
    options: {{base_url: "{bee.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [eng]
applications:
  - name: resident
    identity_providers: [scim-a, scim-bee]
""")
    return scim2_server


def changed_outside_idprov(cli, tmp_path: Path) -> None:
    """5 staff users gone from the store (over scim-a's guard); at scim-bee, a title
    changed and a user granted eng (an update, a create and a group change)."""
    cli("role", "add", "staff").ok()
    cli("role", "add", "eng").ok()
    for i in range(5):
        cli("user", "add", f"user{i}", "-c", f"email=user{i}@example.com", "-r", "staff").ok()
    cli("user", "add", "b1", "-c", "email=b1@example.com", "-r", "eng").ok()
    cli("user", "add", "b2", "-c", "email=b2@example.com").ok()
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db", isolation_level=None)
    try:
        conn.execute("DELETE FROM users WHERE username LIKE 'user%'")
        conn.execute(
            "UPDATE users SET claims = json_set(claims, '$.title', 'Boss') WHERE username = 'b1'"
        )
        conn.execute(
            "INSERT INTO user_roles SELECT u.id, r.id FROM users u, roles r"
            " WHERE u.username = 'b2' AND r.name = 'eng'"
        )
    finally:
        conn.close()


def test_a_guard_trip_at_one_idp_holds_it_and_pushes_the_others(cli, two, bee, tmp_path):
    changed_outside_idprov(cli, tmp_path)
    metrics = tmp_path / "idprov.prom"
    run = cli("sync", "--json", "--metrics", str(metrics))
    assert run.exit_code == 7, run
    result = json.loads(run.stdout)
    assert result["held"] == ["scim-a"]
    found = samples(metrics)
    assert found[("idprov_guard_trips", (("command", "sync"), ("idp", "scim-a")))] == 1
    assert ("idprov_guard_trips", (("command", "sync"), ("idp", "scim-bee"))) not in found
    last = "idprov_last_successful_sync_timestamp_seconds"
    assert found[(last, (("command", "sync"), ("idp", "scim-a")))] == 0  # never
    assert found[(last, (("command", "sync"), ("idp", "scim-bee")))] > 0
    finish = "idprov_run_finished_timestamp_seconds"
    assert (finish, (("command", "sync"), ("outcome", "guard_tripped"))) in found
    error = json.loads(run.stderr)["error"]
    assert "will delete 5 users at scim-a" in error["message"]
    assert "nothing was sent to scim-a (held); scim-bee was synced" in error["message"]
    assert "--allow-deletes 5" in error["hint"] and "idprov sync --idp scim-bee" in error["hint"]
    assert len(two.users()) == 5  # held: nothing sent to scim-a
    users = {u["userName"]: u for u in bee.users()}
    assert set(users) == {"b1", "b2"} and users["b1"]["title"] == "Boss"
    assert {m["value"] for m in bee.groups()[0]["members"]} == {u["id"] for u in users.values()}
    entry = cli("log", "--action", "sync.run", "--json").items()[0]
    assert entry["outcome"] == "refused" and entry["details"]["scim-a"]["held"] == 6
    status = {s["idp"]: s for s in cli("status", "--json").items()}
    assert status["scim-a"]["last_sync_outcome"] == "refused"
    assert status["scim-a"]["last_success"] is None
    assert status["scim-bee"]["last_sync_outcome"] == "ok"
    assert status["scim-bee"]["last_success"] == entry["at"]
    cli("sync", "--allow-deletes", "5").ok()
    assert two.users() == []


def test_the_rich_view_names_the_idp_held_and_the_others_synced(cli, two, bee, tmp_path):
    changed_outside_idprov(cli, tmp_path)
    run = cli("sync")
    assert run.exit_code == 7, run
    assert "✓ scim-bee: 3 done" in run.stdout
    assert "nothing was sent to scim-a (held); scim-bee was synced" in run.stderr
    assert "idprov sync --allow-deletes 5" in run.stderr
    assert "idprov sync --idp scim-bee" in run.stderr


def test_a_saved_plan_over_the_guard_is_still_refused_whole(cli, two, bee, tmp_path):
    changed_outside_idprov(cli, tmp_path)
    plan = tmp_path / "plan.json"
    cli("plan", "--out", str(plan)).ok()
    error = cli("sync", "--apply", str(plan), "--json").error(7)
    assert error["message"].endswith("nothing was changed")
    assert "meanwhile `idprov sync --idp scim-bee` syncs the others" in error["hint"]
    assert len(two.users()) == 5 and {u["userName"] for u in bee.users()} == {"b1"}
