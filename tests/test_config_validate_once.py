"""`config validate` reads the configuration once: one read of the file and one build
of every identity provider's connector and options (its state check made a service
that loaded and built them all again), and says what it said."""

from __future__ import annotations

from pathlib import Path

CONFIG = """version: 1
data_dir: {tmp}/data
identity_providers:
  - name: scim-main
    connector: scim2
    options: {{base_url: "https://scim.test/v2", auth: bearer, token: env:SCIM_TOKEN}}
  - name: scim-old
    connector: scim2
    enabled: false
    options:
      base_url: https://old.test/v2
      auth: bearer
      token: env:SCIM_TOKEN
      ca_file: {tmp}/missing-ca.pem
applications:
  - name: resident
    identity_providers: [scim-main]
"""


def test_validate_reads_the_file_and_builds_the_connectors_once(cli, tmp_path, monkeypatch):
    from idprov.config import loader
    from idprov.provisioning import connect

    (tmp_path / "idprov.yaml").write_text(CONFIG.format(tmp=tmp_path))
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    reads: list[Path] = []
    checks: list[object] = []
    load_file, check = loader.load_file, connect.check_identity_providers
    monkeypatch.setattr(loader, "load_file", lambda path: reads.append(path) or load_file(path))
    monkeypatch.setattr(
        connect, "check_identity_providers", lambda config: checks.append(config) or check(config)
    )

    result = cli("config", "validate", "--json").json()
    assert result["identity_providers"] == ["scim-main", "scim-old"]
    (problem,) = result["disabled_idp_problems"]
    assert "scim-old" in problem and "missing-ca.pem" in problem
    assert len(reads) == 1 and len(checks) == 1

    shown = cli("config", "validate").ok()
    assert shown.stdout.count("missing-ca.pem") == 1 and "missing-ca.pem" not in shown.stderr
    assert len(reads) == 2 and len(checks) == 2
