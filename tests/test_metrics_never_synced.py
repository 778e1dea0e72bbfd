"""`--metrics`: an identity provider that never had a successful sync has
``idprov_last_successful_sync_timestamp_seconds`` 0 (Prometheus' "never"), so that the
README's alert on its age fires for it; a disabled one, which nothing syncs, has none."""

from __future__ import annotations

from pathlib import Path

from tests.test_metrics import samples

LAST = "idprov_last_successful_sync_timestamp_seconds"


def test_an_idp_never_synced_has_its_last_success_at_zero(cli, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", "t")
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: down
    connector: scim2
    options: {{base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:SCIM_TOKEN}}
    retry: {{max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.05}}
  - name: retired
    connector: scim2
    enabled: false
    options: {{base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:SCIM_TOKEN}}
applications:
  - name: resident
    identity_providers: [down, retired]
""")
    assert cli("user", "add", "alice").exit_code == 6
    metrics = tmp_path / "idprov.prom"
    assert cli("sync", "--metrics", str(metrics)).exit_code == 6
    found = samples(metrics)
    assert found[(LAST, (("command", "sync"), ("idp", "down")))] == 0
    assert (LAST, (("command", "sync"), ("idp", "retired"))) not in found
    assert cli("status", "--json").items()[0]["last_success"] is None  # status says never
