"""Hosts sharing a PostgreSQL state agree on time by the database server's clock.

Leases (``claimed_until``), next tries and the ages of rows are written by one host
and compared by another. Each host used its own clock: one whose clock ran ahead took
rows another host held on a live lease and pushed them a second time, and pushed a
failed row before its retry was due; one whose clock ran behind left a row whose
lease had ended for as long as it lagged. Now every process on a PostgreSQL state
reads the server's clock offset and times what the state records by it.

These tests run idprov as processes whose clocks are really off, with libfaketime
(Debian's ``faketime``, which `scripts/test` installs), against the private
PostgreSQL cluster and scim2-server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.test_state_postgres import pg_keys

FAKETIME = shutil.which("faketime")
OTHER_HOST = "build-7.example.net:4242:5f0c1d2e3a4b"
"""A drainer on another machine: nothing here can know whether it runs."""


def _config(postgres, tmp_path: Path, base_url: str) -> Path:
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    path = tmp_path / "idprov.yaml"
    path.write_text(f"""version: 1
data_dir: {tmp_path / "data"}
state: {{{pg_keys(postgres.url, secret, "idprov")}}}
identity_providers:
  - name: scim
    connector: scim2
    blocking: false
    options: {{base_url: '{base_url}', auth: bearer, token: env:SCIM_TOKEN, bulk: never}}
    retry: {{max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    return path


def _idprov(config: Path, token: str, *args: str, clock: str | None = None):
    """``idprov ARGS`` as a process; ``clock``: its clock off by that much (``+10m``)."""
    env = {**os.environ, "IDPROV_CONFIG": str(config), "SCIM_TOKEN": token}
    command = [sys.executable, "-m", "idprov", *args]
    if clock is not None:
        assert FAKETIME is not None
        command = [FAKETIME, "-f", clock, *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def _server_stamp(postgres, seconds: int) -> str:
    """The server's now plus ``seconds``, as idprov writes times."""
    [(stamp,)] = postgres.rows(
        "SELECT to_char((clock_timestamp() + make_interval(secs => %s)) AT TIME ZONE 'UTC',"
        """ 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""",
        (seconds,),
    )
    return str(stamp)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture
def pending_alice(postgres, tmp_path, scim2_server):
    """alice added, her row pending for the worker (the IdP does not block)."""
    config = _config(postgres, tmp_path, scim2_server.base_url)
    added = _idprov(config, scim2_server.token, "--no-wait", "user", "add", "alice")
    assert added.returncode == 0, added.stderr
    [(status,)] = postgres.rows("SELECT status FROM idprov.outbox")
    assert status == "pending"
    return config


def test_the_faked_clock_is_really_off():
    """The premise of the tests below: a process under faketime reads another time."""
    assert FAKETIME is not None, "Debian's faketime is needed: scripts/test installs it"
    shown = subprocess.run(
        [str(FAKETIME), "-f", "+10m", sys.executable, "-c", "import time; print(time.time())"],
        capture_output=True,
        text=True,
        check=True,
    )
    ahead = float(shown.stdout) - datetime.now(UTC).timestamp()
    assert 590 < ahead < 610


def test_a_host_whose_clock_runs_ahead_leaves_a_live_lease_of_another_host(
    postgres, scim2_server, pending_alice
):
    # another machine holds alice's row for two more minutes, by the server's clock
    postgres.execute(
        "UPDATE idprov.outbox SET claimed_by = %s, claimed_until = %s",
        (OTHER_HOST, _server_stamp(postgres, 120)),
    )
    ahead = _idprov(
        pending_alice, scim2_server.token, "outbox", "work", "--once", "--json", clock="+10m"
    )
    assert ahead.returncode == 0, ahead.stderr
    assert scim2_server.users() == []  # not pushed a second time beside the holder's push
    [(holder,)] = postgres.rows("SELECT claimed_by FROM idprov.outbox")
    assert holder == OTHER_HOST
    listed = _idprov(pending_alice, scim2_server.token, "outbox", "list", clock="+10m")
    # still leased, as every host sees it (not "due now: no worker has taken them")
    assert "pending (claimed by build-7.example.net pid 4242 until" in listed.stdout
    assert "due now" not in listed.stdout + listed.stderr
    # and its own changes it pushes at once, as any host does
    own = _idprov(pending_alice, scim2_server.token, "user", "add", "bob", clock="+10m")
    assert own.returncode == 0, own.stdout + own.stderr
    assert [u["userName"] for u in scim2_server.users()] == ["bob"]


def test_a_host_whose_clock_runs_behind_takes_a_row_whose_lease_ended(
    postgres, scim2_server, pending_alice
):
    # the other machine's lease ended a second ago, by the server's clock
    postgres.execute(
        "UPDATE idprov.outbox SET claimed_by = %s, claimed_until = %s",
        (OTHER_HOST, _server_stamp(postgres, -1)),
    )
    behind = _idprov(pending_alice, scim2_server.token, "outbox", "work", "--once", clock="-10m")
    assert behind.returncode == 0, behind.stderr
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]
    assert postgres.rows("SELECT count(*) FROM idprov.outbox") == [(0,)]
    # and what it recorded is timed by the server's clock, not ten minutes back
    [(stamp,)] = postgres.rows("SELECT max(at) FROM idprov.audit")
    assert abs((_parse(stamp) - datetime.now(UTC)).total_seconds()) < 60


def test_a_host_whose_clock_runs_ahead_waits_for_a_failed_rows_next_try(
    postgres, scim2_server, pending_alice
):
    # alice's push failed; its next try is two minutes away, by the server's clock
    postgres.execute(
        "UPDATE idprov.outbox SET status = 'failed', attempts = 1, next_attempt_at = %s,"
        " last_error = 'HTTP 503 from the target'",
        (_server_stamp(postgres, 120),),
    )
    ahead = _idprov(pending_alice, scim2_server.token, "outbox", "work", "--once", clock="+10m")
    assert ahead.returncode == 0, ahead.stderr
    assert scim2_server.users() == []
    [(status, attempts)] = postgres.rows("SELECT status, attempts FROM idprov.outbox")
    assert (status, attempts) == ("failed", 1)


def test_a_lease_written_by_a_host_whose_clock_runs_behind_ends_by_the_servers_clock(
    postgres, scim2_server, pending_alice
):
    """The lease a drainer takes runs from the server's now: a host ten minutes behind
    wrote leases that had ended, to every other host, before it began."""
    script = """
import json, sys
from idprov.config import load_config
from idprov.provisioning.service import IdentityService
with IdentityService(load_config(sys.argv[1]), actor="worker") as svc:
    outbox = svc.outbound.state.outbox
    with svc.outbound.state.transaction():
        rows = outbox.due(["scim"], "lagging:1:x", 300.0, 10)
    print(json.dumps([r.claimed_until for r in rows]))
"""
    env = {**os.environ, "SCIM_TOKEN": scim2_server.token}
    ran = subprocess.run(
        [str(FAKETIME), "-f", "-10m", sys.executable, "-c", script, str(pending_alice)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    [until] = json.loads(ran.stdout)
    left = (_parse(until) - datetime.now(UTC)).total_seconds()
    assert timedelta(seconds=left) > timedelta(seconds=240), until  # ~300 s from now
