"""An identity provider that no application names is never provisioned to (the CLI,
imports and sync act as `resident`): `config validate` says so, naming it and the fix."""

from __future__ import annotations

import json
from pathlib import Path

IDP = """
  - name: scim-main
    connector: scim2
    options: {base_url: "https://scim.test/v2", auth: bearer, token: env:SCIM_TOKEN}
"""


def write(tmp_path: Path, applications: str = "", enabled: str = "") -> None:
    (tmp_path / "idprov.yaml").write_text(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\nidentity_providers:{IDP}{enabled}"
        + applications
    )


def test_validate_warns_about_an_idp_no_application_uses(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    write(tmp_path)  # identity_providers pasted, applications forgotten
    run = cli("config", "validate", "--strict")
    assert run.exit_code == 0, run
    assert (
        "scim-main is used by no application: nothing is provisioned to it; add it to "
        "applications[].identity_providers"
    ) in run.stdout
    assert "idprov.yaml:4:" in run.stdout  # the line of its name
    result = json.loads(cli("config", "validate", "--json").stdout)
    assert result["unused_identity_providers"] == ["scim-main"]


def test_no_warning_once_resident_or_another_application_uses_it(cli, tmp_path):
    write(tmp_path, "applications:\n  - name: resident\n    identity_providers: [scim-main]\n")
    assert "used by no application" not in cli("config", "validate").stdout
    write(tmp_path, "applications:\n  - name: hr\n    identity_providers: [scim-main]\n")
    assert "used by no application" not in cli("config", "validate").stdout


def test_a_disabled_idp_no_application_uses_is_not_warned_about(cli, tmp_path):
    write(tmp_path, enabled="    enabled: false\n")  # kept on purpose (retired)
    result = json.loads(cli("config", "validate", "--json").stdout)
    assert result["unused_identity_providers"] == []


def test_status_warns_about_it_too(cli, tmp_path):
    write(tmp_path)
    run = cli("status")
    assert run.exit_code == 0, run
    assert "scim-main is used by no application: nothing is provisioned to it" in run.stderr
    assert "applications[].identity_providers" in run.stderr
