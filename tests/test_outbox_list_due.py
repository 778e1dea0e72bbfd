"""`idprov outbox list` of a failed row whose next try has passed: "due now", and what
to run, not "next try <a time in the past>"."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


@pytest.fixture()
def failed_row(cli, tmp_path: Path, monkeypatch) -> Path:
    """A user whose push failed (nothing listens at the IdP's port); returns the db."""
    monkeypatch.setenv("SCIM_TOKEN", "t")
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:SCIM_TOKEN}}
    retry: {{max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    assert cli("user", "add", "alice").exit_code == 6
    return tmp_path / "data" / "idprov.db"


def _next_try(db: Path, when: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("UPDATE outbox SET next_attempt_at = ?", (when,))
    finally:
        conn.close()


def test_a_row_whose_next_try_has_passed_is_due_now(cli, failed_row):
    _next_try(failed_row, "2020-01-01T00:00:00.000Z")
    run = cli("outbox", "list")
    assert run.exit_code == 0, run
    assert "failed (due now)" in run.stdout
    assert "next try 2020" not in run.stdout
    assert "1 row(s) due now: no worker has taken them yet" in run.stderr
    assert "idprov outbox retry" in run.stderr and "idprov outbox work" in run.stderr
    row = cli("outbox", "list", "--json").items()[0]
    assert row["next_attempt_at"] == "2020-01-01T00:00:00.000Z"  # the data stays as it is


def test_a_row_whose_next_try_is_to_come_shows_when(cli, failed_row):
    _next_try(failed_row, "2999-01-01T00:00:00.000Z")
    run = cli("outbox", "list")
    assert "failed (next try 2999-01-01T00:00:00.000Z)" in run.stdout
    assert "due now" not in run.stdout + run.stderr
