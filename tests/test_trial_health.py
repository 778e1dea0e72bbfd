"""What `status` and `outbox list` say when a secret is missing: the cause, and that
nothing was sent."""

from __future__ import annotations

import pytest


@pytest.fixture
def synced(cli, tmp_path, scim2_server, monkeypatch):
    """The tour's state: alice and bob hold staff, synced to scim-main."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim-main
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
applications:
  - name: resident
    identity_providers: [scim-main]
""")
    cli("role", "add", "staff").ok()
    for name in ("alice", "bob"):
        cli("user", "add", name, "-c", f"email={name}@example.com", "--role", "staff").ok()


def test_status_names_the_missing_secret_not_the_group_waiting_for_its_member(
    cli, synced, monkeypatch
):
    monkeypatch.delenv("SCIM_TOKEN")
    added = cli("user", "add", "gina", "-c", "email=g@example.com", "--role", "staff")
    assert added.exit_code == 6 and "secret env:SCIM_TOKEN is not set" in added.stdout
    # the worker then pushes the group alone: it waits for gina, whose push failed
    worked = cli("outbox", "work", "--once")
    assert worked.exit_code == 6 and "role staff" in worked.stdout
    assert "members not provisioned at scim-main yet: gina" in cli("outbox", "list").stdout
    (health,) = [row["health"] for row in cli("status", "--json").items()]
    assert health.startswith("failing since ")
    assert health.endswith("secret env:SCIM_TOKEN is not set"), health


def test_outbox_list_says_a_failed_row_was_never_sent(cli, synced, monkeypatch):
    monkeypatch.delenv("SCIM_TOKEN")
    added = cli("user", "add", "gina", "-c", "email=g@example.com", "--role", "staff")
    assert added.exit_code == 6 and "secret env:SCIM_TOKEN is not set" in added.stdout
    header, *rows = cli("outbox", "list").stdout.splitlines()
    shown = {row.split("\t")[2]: row.split("\t")[4] for row in rows}
    assert header.split("\t")[4] == "attempts"
    assert shown == {"gina": "0 (not sent)", "staff": "0"}  # staff: pending, not failed
    (gina,) = [r for r in cli("outbox", "list", "--json").items() if r["label"] == "gina"]
    assert gina["attempts"] == 0
