"""A PostgreSQL state shared by hosts times the outbox's leases by the database's
clock: a host whose own clock runs ahead does not take rows another host holds on a
live lease (it pushed them a second time, at once), and the lease it writes ends by
the server's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.test_state_postgres import pg_keys

HOLDER = "hostA:3:0123abcd"


def _ahead(minutes: int):
    def stamp(seconds: float = 0.0) -> str:
        moment = datetime.now(UTC) + timedelta(minutes=minutes, seconds=seconds)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return stamp


def test_a_host_whose_clock_is_ahead_leaves_a_live_lease_of_another_host(
    cli, postgres, tmp_path: Path, write_config, monkeypatch
):
    import idprov.db
    import idprov.provisioning.outbox as outbox

    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    monkeypatch.setenv("SCIM_TOKEN", "t")
    write_config(f"""version: 1
data_dir: {tmp_path / "data"}
state: {{{pg_keys(postgres.url, secret, "idprov")}}}
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
    # hostA holds the row for 2 more minutes, by the server's clock
    postgres.execute(
        "UPDATE idprov.outbox SET status = 'pending', next_attempt_at = NULL, claimed_by ="
        f" '{HOLDER}', claimed_until = to_char((clock_timestamp() + interval '2 minutes')"
        """ AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
    )
    # this host's clock runs 10 minutes ahead
    monkeypatch.setattr(outbox, "now", _ahead(10))
    monkeypatch.setattr(outbox, "stamp_in", lambda seconds: _ahead(10)(seconds))
    monkeypatch.setattr(idprov.db, "now", _ahead(10))
    retry = cli("outbox", "retry", "--json")
    assert '"leased"' in retry.stdout, retry
    [(holder,)] = postgres.rows("SELECT claimed_by FROM idprov.outbox")
    assert holder == HOLDER

    # hostA's lease ran out (by the server's clock): this host takes the row, and its
    # own lease ends 5 minutes from the server's now, not from its clock's
    postgres.execute("UPDATE idprov.outbox SET claimed_until = '2000-01-01T00:00:00.000Z'")
    monkeypatch.setattr(outbox, "now", _ahead(-10))
    monkeypatch.setattr(outbox, "stamp_in", lambda seconds: _ahead(-10)(seconds))
    monkeypatch.setattr(idprov.db, "now", _ahead(-10))
    assert cli("outbox", "retry", "--json").exit_code == 6  # taken, sent: the target is down
    [(status, until)] = postgres.rows("SELECT status, next_attempt_at FROM idprov.outbox")
    server_now = datetime.now(UTC)
    assert status == "failed"
    next_try = datetime.fromisoformat(until.replace("Z", "+00:00"))
    assert abs((next_try - server_now).total_seconds()) < 300  # not 10 minutes behind
