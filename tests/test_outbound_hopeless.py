"""Hopeless errors are not repeated per user: a credentials failure (a wrong token, a
wrong key) stops that IdP's batch after the first, with one message, and leaves the
other rows in the outbox as they were."""

from __future__ import annotations

from pathlib import Path

from tests.outbound_helpers import FakeScim, idp_yaml, make_service
from tests.peers.google import GoogleWorkspace, pem_of, rsa_key

NO_SLEEP = {"sleep": lambda s: None}


def test_a_wrong_scim_token_fails_one_row_and_leaves_the_rest_pending(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", "wrong-token")
    fake = FakeScim("secret-token")
    idps = idp_yaml("target", "https://scim.test/v2", extra="    max_concurrency: 4\n")
    with make_service(
        tmp_path, idps, ["target"], http_transport=fake.transport(), **NO_SLEEP
    ) as svc:
        for i in range(20):
            svc.add_user(f"user{i:02}", {"email": f"u{i}@example.com"})
        fake.requests.clear()
        report = svc.retry_outbox()
        target = report.idps["target"]
        failed = [op for op in target.operations if op.outcome == "failed"]
        assert len(failed) == 1 and target.count("done") == 0
        assert "credentials refused" in failed[0].error and "HTTP 401" in failed[0].error
        assert target.to_dict()["pending"] == 19
        assert len(fake.requests) <= 4  # at most the requests already in flight
        assert len(svc.state.outbox.rows(idps=["target"])) == 20  # nothing dropped


def test_the_cli_prints_one_failure_and_how_many_were_left(tmp_path, monkeypatch):
    from idprov.cli.render import outbound_report

    monkeypatch.setenv("SCIM_TOKEN", "wrong-token")
    fake = FakeScim("secret-token")
    idps = idp_yaml("target", "https://scim.test/v2", extra="    max_concurrency: 1\n")
    with make_service(
        tmp_path, idps, ["target"], http_transport=fake.transport(), **NO_SLEEP
    ) as svc:
        for i in range(5):
            svc.add_user(f"user{i}", {"email": f"u{i}@example.com"})
        fake.requests.clear()
        report = svc.retry_outbox()
        users = [svc.get_user(f"user{i}") for i in range(5)]
        # a refused create, and one never sent, made nothing: no `creating` mark is left
        assert [svc.state.ledger.get("target", "user", u.id) for u in users] == [None] * 5
    # their first creates were refused (401: nothing made there), so none looks first:
    # the Bulk discovery, one create, refused: then none
    assert fake.requests == [("GET", "/v2/ServiceProviderConfig"), ("POST", "/v2/Users")]
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        outbound_report(report)
    text = out.getvalue()
    assert "0 done, 1 failed, 4 left pending" in text
    assert text.count("HTTP 401") == 1


def test_a_wrong_google_key_asks_for_a_token_once(tmp_path, google_workspace: GoogleWorkspace):
    wrong = tmp_path / "google-key.json"
    google_workspace.key, right = rsa_key("other"), google_workspace.key
    wrong.write_text(google_workspace.key_json(), encoding="utf-8")  # signed with another key
    google_workspace.key = right
    assert pem_of(right) not in wrong.read_text()
    idps = f"""
  - name: google
    connector: google
    options:
      base_url: {google_workspace.url}
      credentials: file:{wrong}
      subject: {google_workspace.admin}
    max_concurrency: 4
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
"""
    with make_service(tmp_path, idps, ["google"], **NO_SLEEP) as svc:
        for i in range(12):
            svc.add_user(f"user{i:02}", {"email": f"u{i}@example.com"})
        report = svc.retry_outbox()
    failed = [op for op in report.idps["google"].operations if op.outcome == "failed"]
    assert len(failed) == 1 and "invalid_grant" in failed[0].error
    token_requests = [r for r in google_workspace.requests if r.path == "/token"]
    assert len(token_requests) == 1  # for 12 commands and a retry of 12 rows
    assert not google_workspace.users


def test_an_import_with_a_wrong_token_prints_one_failure_not_one_per_user(
    cli, tmp_path: Path, scim2_server, monkeypatch
):
    monkeypatch.setenv("SCIM_TOKEN", "wrong-token")
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    push_roles: none
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    rows = "".join(f"user{i:03d},u{i}@example.com\n" for i in range(60))
    (tmp_path / "users.csv").write_text("username,email\n" + rows)
    run = cli("import", "users", str(tmp_path / "users.csv"))
    assert run.exit_code == 6, run
    assert run.stdout.count("HTTP 401") == 1, run.stdout
    assert "59 left pending" in run.stdout
    assert "wrong-token" not in run.stdout + run.stderr
    assert len(cli("outbox", "list", "--json").json()["items"]) == 60
