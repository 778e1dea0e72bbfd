"""TLS and credential failures of an LDAP userstore say what is wrong, against a real
slapd serving ldaps and StartTLS: an ldaps:// url on the plain LDAP port is a TLS
handshake that failed (not a server that "cannot be reached"), a ca_file that holds a
key holds no certificate, both configuration errors (exit 2, as a certificate not
accepted); a refused bind password is a userstore that cannot be used (exit 1, as for
PostgreSQL). `config validate` refuses a ca_file that is missing, not a file, or holds
no certificate, with the file, line and key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from idprov.errors import ConfigError, ExitCode, StoreError
from tests.peers.slapd import Directory
from tests.test_userstore_ldap import open_store, secret  # noqa: F401 - the fixture


def ldap_yaml(tmp_path: Path, directory: Directory, url: str, ca_file: str | None) -> str:
    """A configuration with a CORP store on ``directory`` at ``url`` (root bind)."""
    password = tmp_path / "bind-password"
    password.write_text(directory.root_password + "\n")
    ca = f"    ca_file: {ca_file}\n" if ca_file else ""
    return (
        f"version: 1\ndata_dir: {tmp_path / 'data'}\nuserstores:\n  - domain: PRIMARY\n"
        f"  - domain: CORP\n    type: ldap\n    url: {url}\n{ca}"
        f'    bind_dn: "{directory.root_dn}"\n    bind_password: file:{password}\n'
        f'    user_search_base: "{directory.people}"\n'
        f'    group_search_base: "{directory.groups}"\n'
    )


@pytest.fixture
def secure(slapd_factory: Callable[..., Directory]) -> Directory:
    return slapd_factory(tls=True)


def test_ldaps_to_the_plain_ldap_port_says_the_tls_handshake_failed(
    secure,
    open_store,  # noqa: F811 - the fixture imported above
    cli,
    write_config,
    tmp_path,
):
    wrong = secure.url.replace("ldap://", "ldaps://")  # the port speaks plain LDAP
    with pytest.raises(ConfigError) as info:
        open_store(secure, url=wrong).find_user("alice")
    assert info.value.exit_code == ExitCode.USAGE
    assert "TLS handshake failed" in info.value.message and wrong in info.value.message
    assert "cannot be reached" not in info.value.message
    assert "ldaps port" in info.value.hint and "start_tls: true" in info.value.hint
    write_config(ldap_yaml(tmp_path, secure, wrong, None))
    error = cli("user", "list", "--domain", "CORP", "--json").error(2)
    assert "TLS handshake failed" in error["message"]


def test_a_ca_file_holding_a_key_holds_no_certificate(
    secure,
    open_store,  # noqa: F811 - the fixture imported above
    cli,
    write_config,
    tmp_path,
):
    key = str(secure.server.workdir / "tls" / "server.key")
    with pytest.raises(ConfigError) as info:
        open_store(secure, url=secure.ldaps_url, ca_file=key).find_user("alice")
    assert f"ca_file {key} holds no certificate" in info.value.message
    assert "cannot be reached" not in info.value.message
    assert "PEM file of the CA certificate" in info.value.hint
    path = write_config(ldap_yaml(tmp_path, secure, secure.ldaps_url, key))
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:8:")
    assert (
        "userstores[1].ca_file" in error["message"] and "holds no certificate" in error["message"]
    )
    assert "PEM file of the CA certificate" in error["hint"]
    write_config(ldap_yaml(tmp_path, secure, secure.ldaps_url, str(secure.ca_file)))
    cli("config", "validate").ok()
    assert cli("user", "list", "--domain", "CORP", "--json").json()["items"] == []


@pytest.mark.parametrize(
    ("ca_file", "problem"),
    [("missing-ca.pem", "does not exist"), (".", "is not a file")],
)
def test_config_validate_refuses_an_ldap_ca_file_it_cannot_use(
    cli, write_config, tmp_path, slapd, ca_file, problem
):
    named = str(tmp_path / ca_file)
    path = write_config(ldap_yaml(tmp_path, slapd, "ldaps://127.0.0.1:1/", named))
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:8:")
    assert f"ca_file {named} {problem}" in error["message"]
    assert "remove ca_file" in error["hint"]


def test_a_wrong_bind_password_is_a_store_that_cannot_be_used_as_for_postgresql(
    slapd,
    open_store,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    wrong = secret(tmp_path, "not-the-password")
    with pytest.raises(StoreError) as info:
        open_store(bind_password=wrong).find_user("alice")
    assert info.value.exit_code == ExitCode.ERROR
    assert "invalidCredentials" in info.value.message and slapd.url in info.value.message
    assert "bind_dn" in info.value.hint and wrong.ref in info.value.hint
    assert "not-the-password" not in info.value.message + info.value.hint
