"""A disabled user and its groups: the push takes it out of them, and a sync then plans
nothing (it planned the user back in, at every run, forever); enabled again, the push
puts it back in them. Against the real SCIM server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.peers.scim2 import Scim2Peer

EVERYONE = ""
"""Every user in scope, every role a group."""
SCOPED = "    provisioning_roles: [staff]\n    push_roles: all\n"
"""Only staff in scope, every role a group."""


def write_config(tmp_path: Path, base_url: str, extra: str, state: str = "") -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
{state}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}
applications:
  - name: resident
    identity_providers: [scim]
""")


@pytest.fixture(
    params=[(EVERYONE, False), (SCOPED, False), (EVERYONE, True)],
    ids=["every-user", "scoped", "every-user-postgres-state"],
)
def scim(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    scim2_server: Scim2Peer,
    monkeypatch: pytest.MonkeyPatch,
) -> Scim2Peer:
    """The IdP, its scope as the parameter says; idprov's state in SQLite, or in
    PostgreSQL (the trial found both alike)."""
    extra, postgres = request.param
    state = ""
    if postgres:
        database = request.getfixturevalue("postgres")
        secret = tmp_path / "pg-password"
        secret.write_text(database.password + "\n")
        state = (
            f"state: {{url: '{database.url}', password: 'file:{secret}', sslmode: disable,"
            " schema: idprov}"
        )
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server.base_url, extra, state)
    return scim2_server


def seed(cli) -> None:
    cli("role", "add", "staff").ok()
    cli("role", "add", "grp2").ok()
    for name in ("x1", "x2"):
        cli(
            "user", "add", name, "-c", f"email={name}@example.com", "-r", "staff", "-r", "grp2"
        ).ok()


def members(scim: Scim2Peer, group: str) -> set[str]:
    """User names in ``group`` at the target."""
    names = {u["id"]: u["userName"] for u in scim.users()}
    [found] = [g for g in scim.groups() if g["displayName"] == group]
    return {names[m["value"]] for m in found.get("members") or []}


def active(scim: Scim2Peer) -> dict[str, bool]:
    return {u["userName"]: u.get("active", True) for u in scim.users()}


def in_sync(cli) -> None:
    """A sync plans nothing, sends nothing, records no change; plan exits 0."""
    result = cli("sync", "--json").json()
    assert result["plan"]["idps"][0]["items"] == [], result["plan"]
    assert result["outbound"]["idps"] == []
    [entry] = cli("log", "--run", result["run"], "--json").items()
    assert entry["details"] == {"scim": {}}, entry
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_disabled_member_leaves_its_groups_and_the_next_sync_plans_nothing(cli, scim):
    seed(cli)
    in_sync(cli)
    assert members(scim, "grp2") == {"x1", "x2"}
    cli("user", "update", "x1", "-c", "active=false").ok()
    assert active(scim)["x1"] is False and members(scim, "grp2") == {"x2"}
    in_sync(cli)
    in_sync(cli)
    assert active(scim)["x1"] is False and members(scim, "grp2") == {"x2"}


def test_a_member_enabled_again_is_put_back_in_its_groups_by_its_push(cli, scim):
    seed(cli)
    cli("user", "update", "x1", "-c", "active=false").ok()
    in_sync(cli)
    cli("user", "update", "x1", "-c", "active=true").ok()
    assert active(scim)["x1"] is True
    assert members(scim, "grp2") == {"x1", "x2"} and members(scim, "staff") == {"x1", "x2"}
    in_sync(cli)


def test_a_member_disabled_for_leaving_scope_is_in_sync_and_back_in_its_groups_on_return(
    cli, scim2_server, tmp_path, monkeypatch
):
    """``deprovision: disable``: the user who loses the IdP's provisioning role is
    disabled there and leaves its groups (grp2 too, which it still holds); given the
    role back, it is enabled and put back in them by that push."""
    scim = scim2_server
    monkeypatch.setenv("SCIM_TOKEN", scim.token)
    write_config(tmp_path, scim.base_url, SCOPED + "    deprovision: disable\n")
    seed(cli)
    cli("role", "unassign", "staff", "x1", "--yes").ok()
    assert active(scim)["x1"] is False
    assert members(scim, "grp2") == {"x2"} and members(scim, "staff") == {"x2"}
    in_sync(cli)
    cli("role", "assign", "staff", "x1").ok()
    assert active(scim)["x1"] is True
    assert members(scim, "grp2") == {"x1", "x2"} and members(scim, "staff") == {"x1", "x2"}
    in_sync(cli)


def test_a_member_disabled_outside_idprov_is_planned_out_of_its_groups(cli, scim, tmp_path):
    """Disabled in the store directly: the plan disables it and takes it out of its
    groups, as the push does; applied, nothing is left to do."""
    seed(cli)
    with sqlite3.connect(tmp_path / "data" / "idprov.db", isolation_level=None) as conn:
        conn.execute(
            "UPDATE users SET claims = json_set(claims, '$.active', 'false') WHERE username = 'x1'"
        )
    items = cli("plan", "--json").json()["plan"]["idps"][0]["items"]
    planned = {(i["label"], i["action"], tuple(i["changed"])) for i in items}
    assert planned == {
        ("x1", "disable", ()),
        ("grp2", "update", ("-x1",)),
        ("staff", "update", ("-x1",)),
    }
    assert cli("sync", "--json").json()["outbound"]["ok"]
    assert active(scim)["x1"] is False and members(scim, "grp2") == {"x2"}
    in_sync(cli)
