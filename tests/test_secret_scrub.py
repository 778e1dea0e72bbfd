"""`idprov secret scrub`: the credentials an earlier release stored when a target echoed
them in its error (the audit log, the outbox, `status`) are blanked after the upgrade."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idprov.config import load_config
from idprov.provisioning.service import IdentityService

PASSWORD = 'Horse"Battery-5566778899'
TOKEN = "tok-SECRET-1234567890"
SHORT = "abc123"
BASIC = base64.b64encode(f"idprov-svc:{PASSWORD}".encode()).decode()
NOW = "2026-11-30T10:00:00.000Z"


def config_text(tmp_path: Path, state: str) -> str:
    return f"""version: 1
data_dir: {tmp_path / "data"}
{state}
identity_providers:
  - name: echo
    connector: scim2
    options: {{base_url: "http://127.0.0.1:19041/v2", auth: basic, username: idprov-svc,
               password: "file:{tmp_path / "echo-password"}"}}
  - name: corp
    connector: scim2
    options: {{base_url: "http://127.0.0.1:19042/v2", auth: bearer, token: env:CORP_TOKEN}}
  - name: short
    connector: scim2
    options: {{base_url: "http://127.0.0.1:19043/v2", auth: bearer, token: env:SHORT_TOKEN}}
applications:
  - name: resident
    identity_providers: []
"""


class Setup:
    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of the state, SQLite or PostgreSQL, read as the service reads it."""
        with IdentityService(load_config()) as svc:
            return [tuple(r) for r in svc.state.db.execute(sql, list(params)).fetchall()]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with IdentityService(load_config()) as svc, svc.state.transaction():
            svc.state.db.execute(sql, list(params))

    def texts(self) -> str:
        """Every text the scrub looks at, in one string."""
        rows = self.rows("SELECT last_error FROM outbox") + self.rows(
            "SELECT last_error FROM idp_health"
        )
        rows += self.rows("SELECT details FROM audit")
        return "\n".join(str(r[0]) for r in rows)


@pytest.fixture(params=["sqlite", "postgres"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    monkeypatch.setenv("CORP_TOKEN", TOKEN)
    monkeypatch.setenv("SHORT_TOKEN", SHORT)
    (tmp_path / "echo-password").write_text(PASSWORD + "\n")
    (tmp_path / "echo-password").chmod(0o600)
    state = ""
    if request.param == "postgres":
        database = request.getfixturevalue("postgres")
        secret = tmp_path / "pg-password"
        secret.write_text(database.password + "\n")
        secret.chmod(0o600)
        state = (
            f"state: {{url: '{database.url}', password: 'file:{secret}', sslmode: disable,"
            " schema: idprov}"
        )
    (tmp_path / "idprov.yaml").write_text(config_text(tmp_path, state))
    yield Setup()


def leaked_as_the_old_release_stored(cli, setup: Setup) -> None:
    """The rows an earlier release wrote when ``echo`` quoted the Basic credentials
    (and ``corp`` the token) in its 400: the outbox, the health table, the audit log
    (JSON-escaped, and escaped twice in a JSON detail quoted in it)."""
    cli("user", "add", "alice").ok()
    error = f"create user alice: HTTP 400: bad request; credentials idprov-svc:{PASSWORD} not valid"
    for idp, text in [
        ("echo", error),
        ("corp", f"HTTP 401: token {TOKEN} expired; Authorization: Basic {BASIC}"),
        ("short", f"HTTP 400: token {SHORT} refused"),
    ]:
        setup.execute(
            "INSERT INTO outbox (idp, kind, local_id, domain, label, status, attempts,"
            " last_error, enqueued_at, updated_at) VALUES (?, 'user', ?, 'PRIMARY', 'alice',"
            " 'failed', 3, ?, ?, ?)",
            (idp, f"id-{idp}", text, NOW, NOW),
        )
    setup.execute(
        "INSERT INTO idp_health (idp, failing_since, last_failure_at, last_error)"
        " VALUES ('echo', ?, ?, ?)",
        (NOW, NOW, error),
    )
    quoted = json.dumps({"detail": error})
    for details in [{"error": error}, {"error": "HTTP 400", "body": quoted}, {"ok": "nothing"}]:
        setup.execute(
            "INSERT INTO audit (at, actor, application, action, target, outcome, details)"
            " VALUES (?, 'ann', 'resident', 'outbound.create', 'alice', 'failed', ?)",
            (NOW, json.dumps(details, ensure_ascii=False, sort_keys=True)),
        )


def test_scrub_blanks_what_an_earlier_release_stored_and_says_to_rotate(cli, setup):
    leaked_as_the_old_release_stored(cli, setup)
    assert PASSWORD in cli("log", "--json", "--limit", "0").stdout.replace('\\"', '"')

    before = setup.texts()
    found = cli("secret", "scrub", "--dry-run", "--json").json()
    assert found["rows"] == {"outbox": 2, "idp_health": 1, "audit": 2}
    assert found["dry_run"] is True and found["found"] == 5 and found["short"] == 1
    assert setup.texts() == before  # a dry run changes nothing

    shown = cli("secret", "scrub").ok().stdout
    assert "outbox: 2 row(s) blanked" in shown and "audit: 2 row(s) blanked" in shown
    assert "idp_health: 1 row(s) blanked" in shown
    assert "rotate" in shown and "1 secret(s) shorter than 8" in shown
    after = setup.texts()
    for spelled in (PASSWORD, json.dumps(PASSWORD)[1:-1], "Battery-5566778899", TOKEN, BASIC):
        assert spelled not in after
    assert "credentials *** not valid" in after and "Basic ***" in after
    assert f"token {SHORT} refused" in after  # a short secret is not looked for

    log = cli("log", "--json", "--limit", "0").stdout
    assert "5566778899" not in log and TOKEN not in log
    outbox = cli("outbox", "list", "--json").stdout
    assert "5566778899" not in outbox and TOKEN not in outbox
    entries = [e for e in cli("log", "--json").items() if e["action"] == "secret.scrub"]
    assert [e["details"] for e in entries] == [
        {"rows": {"outbox": 2, "idp_health": 1, "audit": 2}, "secrets": found["secrets"]}
    ]
    assert found["secrets"] >= 4  # password, token, Basic user:password and its base64
    for entry in setup.rows("SELECT details FROM audit"):  # every entry still JSON
        json.loads(entry[0])

    again = cli("secret", "scrub", "--json").json()
    assert again["found"] == 0
    assert "no stored text holds any" in cli("secret", "scrub").ok().stdout


def test_a_secret_that_cannot_be_read_is_named_not_looked_for(cli, setup, monkeypatch):
    leaked_as_the_old_release_stored(cli, setup)
    monkeypatch.delenv("CORP_TOKEN")
    result = cli("secret", "scrub", "--json").json()
    assert result["unresolved"] == ["env:CORP_TOKEN"]
    assert result["rows"]["outbox"] == 2
    assert TOKEN in setup.texts()  # corp's row keeps the token idprov cannot read now
    shown = cli("secret", "scrub").ok().stdout
    assert "env:CORP_TOKEN cannot be read" in shown


def test_other_encoders_spellings_are_found_and_blanked(cli, setup):
    """.NET's `\\u0022`, PHP's `\\/`, lower-case percent escapes: not looked for (nor
    blanked) by the scrub, PostgreSQL's LIKE being case-sensitive too."""
    cli("user", "add", "alice").ok()
    for idp, text in [
        ("echo", 'HTTP 400: {"detail":"bad Horse\\u0022Battery-5566778899"}'),
        ("corp", "HTTP 400: form was password=Horse%22Battery-5566778899&x=%2f%2b"),
    ]:
        setup.execute(
            "INSERT INTO outbox (idp, kind, local_id, domain, label, status, attempts,"
            " last_error, enqueued_at, updated_at) VALUES (?, 'user', ?, 'PRIMARY', 'alice',"
            " 'failed', 3, ?, ?, ?)",
            (idp, f"id-{idp}", text, NOW, NOW),
        )
    found = cli("secret", "scrub", "--json").json()
    assert found["rows"]["outbox"] == 2
    assert "5566778899" not in setup.texts()


def test_audit_keys_that_blank_alike_are_all_kept(cli, setup):
    """Two keys of an audit entry's details blanked to the same text: one of them, and
    its value, was dropped."""
    cli("user", "add", "alice").ok()
    details = {TOKEN: "a", "x": {f"k {PASSWORD}": 1, f"k {TOKEN}": 2}}
    setup.execute(
        "INSERT INTO audit (at, actor, application, action, target, outcome, details)"
        " VALUES (?, 'ann', 'resident', 'outbound.create', 'alice', 'failed', ?)",
        (NOW, json.dumps(details, sort_keys=True)),
    )
    assert cli("secret", "scrub", "--json").json()["rows"]["audit"] == 1
    (row,) = setup.rows("SELECT details FROM audit WHERE action = 'outbound.create'")
    assert json.loads(row[0]) == {"***": "a", "x": {"k ***": 1, "k *** (2)": 2}}
