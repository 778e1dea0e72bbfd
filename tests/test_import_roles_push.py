"""An import row that takes a role away from a user takes the user out of the role's
group at the targets in the same push, as `role unassign` does (the import queued only
the roles rows ended up with: the group kept the user until a later sync)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.scim2 import Scim2Peer

HEADER = "username,email,roles\n"


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    push_roles: all
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    return scim2_server


def members(scim: Scim2Peer) -> dict[str, list[str]]:
    names = {u["id"]: u["userName"] for u in scim.users()}
    groups = {g["displayName"]: g.get("members", []) for g in scim.groups()}
    return {name: sorted(names[m["value"]] for m in held) for name, held in groups.items() if held}


def load(cli, tmp_path: Path, rows: str, *more: str):
    path = tmp_path / "feed.csv"
    path.write_text(HEADER + rows)
    return cli("import", "users", str(path), "--mode", "upsert", *more)


@pytest.mark.parametrize("cell", ["staff;sales", "sales", ""])
def test_a_role_an_import_row_takes_away_leaves_the_group_at_the_target(cli, scim, tmp_path, cell):
    for role in ("eng", "staff", "sales"):
        cli("role", "add", role).ok()
    run = load(cli, tmp_path, "ann,ann@example.com,eng;staff\nbob,bob@example.com,eng\n")
    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": ["ann", "bob"], "staff": ["ann"]}

    run = load(cli, tmp_path, f"ann,ann@example.com,{cell}\n")

    assert run.exit_code == 0, run.stderr
    wanted = cell.split(";") if cell else []
    after = members(scim)
    assert after["eng"] == ["bob"]  # ann left eng at the target, not at the next sync
    assert after.get("staff", []) == (["ann"] if "staff" in wanted else [])
    assert after.get("sales", []) == (["ann"] if "sales" in wanted else [])
    assert cli("plan", "--detailed-exitcode").exit_code == 0  # nothing left for a sync
    assert cli("outbox", "list", "--json").items() == []
