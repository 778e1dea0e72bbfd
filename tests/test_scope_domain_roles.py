"""A provisioning role written ``DOMAIN/name`` names that userstore's role, as the
README says ("Names are matched as the scope matches them: in any case,
`DOMAIN/name`, `Internal/name`"): a PARTNERS user holding PARTNERS' `partners` role
is provisioned, a PRIMARY user holding a role of the same name is not. A user's roles
are its own domain's by bare name, so the scope compared `PARTNERS/partners` with
`partners` and left every PARTNERS user out (while `config validate` found the role)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.scim2 import Scim2Peer


def configure(tmp_path: Path, scim: Scim2Peer, scope: str) -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: PARTNERS
    path: {tmp_path / "partners.db"}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: {scope}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")


@pytest.mark.parametrize(
    ("scope", "wanted"),
    [
        ("[PARTNERS/partners]", ["pat"]),
        ("[partners]", ["ann", "pat"]),  # a bare name: that role in every userstore
        ("[Partners/Partners]", ["pat"]),  # in any case
    ],
)
def test_a_domain_qualified_provisioning_role_names_that_userstores_role(
    cli, tmp_path, scim2_server, monkeypatch, scope, wanted
):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    configure(tmp_path, scim2_server, scope)
    cli("role", "add", "PARTNERS/partners").ok()
    cli("role", "add", "partners").ok()
    cli("user", "add", "PARTNERS/pat", "--role", "partners").ok()
    cli("user", "add", "ann", "--role", "partners").ok()

    assert sorted(u["userName"] for u in scim2_server.users()) == wanted
    assert cli("plan", "--detailed-exitcode").exit_code == 0  # the sync agrees
    shown = cli("explain", "PARTNERS/pat", "--idp", "scim", "--json").json()
    assert shown["in_scope"] is ("pat" in wanted)
