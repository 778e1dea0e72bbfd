"""A credential written into a URL is refused when the configuration loads, and no
error quotes it, nor a long value pasted under the wrong key."""

from __future__ import annotations

import pytest

TOKEN = "TOKSECRETbearer777"


def idp(name: str, base_url: str, extra: str = "") -> str:
    return f"""  - name: {name}
    connector: scim2
    options:
      base_url: {base_url}
      auth: bearer
      token: env:F7_TOKEN
{extra}"""


def config(tmp_path, idps: str, rest: str = "") -> str:
    names = [line.split(": ")[1] for line in idps.splitlines() if line.startswith("  - name:")]
    apps = f"applications:\n  - name: resident\n    identity_providers: [{', '.join(names)}]\n"
    return f"data_dir: {tmp_path / 'data'}\nidentity_providers:\n{idps}{apps}{rest}"


@pytest.fixture(autouse=True)
def _token(monkeypatch):
    monkeypatch.setenv("F7_TOKEN", TOKEN)


# ---- 7: credentials inside URLs


@pytest.mark.parametrize(
    ("base_url", "holds"),
    [
        ("https://svc:UrlPwSecret77@scim.example.com/v2", "a password (user:password@)"),
        ("https://UrlUserSecret77@scim.example.com/v2", "a user name (user@)"),
        (
            "https://scim.example.com/v2?access_token=QueryTokSecret88",
            "a credential in the query parameter 'access_token'",
        ),
        (
            "https://scim.example.com/v2?tenant=7&api_key=QueryTokSecret88",
            "a credential in the query parameter 'api_key'",
        ),
    ],
)
def test_a_credential_in_base_url_is_refused_without_quoting_it(
    cli, write_config, tmp_path, base_url, holds
):
    path = write_config(config(tmp_path, idp("corp", base_url)))
    for args in (("config", "validate"), ("config", "show"), ("status",)):
        run = cli("--config", str(path), *args)
        assert run.exit_code == 2, run
        assert run.stderr.startswith(
            f"error: {path}:6:7: identity_providers[0].options.base_url: the url holds {holds}"
        )
        assert (
            "a credential is a secret reference of its own, never part of the url (which is "
            "shown in errors and by `config show`): remove it from the url and set the IdP's "
            "secret reference keys instead (token or password; client_secret, private_key or "
            "credentials for Salesforce and Google) to env:NAME, file:PATH or keyring:NAME"
        ) in run.stderr
        assert "Secret77" not in run.stdout + run.stderr
        assert "Secret88" not in run.stdout + run.stderr


def test_a_query_without_a_credential_is_kept(cli, write_config, tmp_path):
    path = write_config(config(tmp_path, idp("corp", "https://scim.example.com/v2?tenant=42")))
    cli("--config", str(path), "config", "validate", "--strict").ok()


def test_a_credential_in_a_salesforce_token_url_is_refused(cli, write_config, tmp_path):
    path = write_config(f"""data_dir: {tmp_path / "data"}
identity_providers:
  - name: sf
    connector: salesforce
    options:
      flow: client_credentials
      base_url: https://acme.my.salesforce.com
      client_id: abc
      client_secret: env:F7_TOKEN
      token_url: https://acme.my.salesforce.com/token?client_secret=SfSecret99
""")
    run = cli("--config", str(path), "config", "validate")
    assert run.exit_code == 2, run
    assert f"{path}:10:7: identity_providers[0].options.token_url: the url holds a " in run.stderr
    assert "SfSecret99" not in run.stdout + run.stderr


def test_a_credential_in_an_ldap_url_is_refused_without_quoting_it(cli, write_config, tmp_path):
    path = write_config(f"""data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    url: ldap://u:LdapUrlPwSecret@127.0.0.1:18702
    user_search_base: ou=people,dc=example,dc=com
    group_search_base: ou=groups,dc=example,dc=com
""")
    run = cli("--config", str(path), "config", "validate")
    assert run.exit_code == 2, run
    assert run.stderr.startswith(
        f"error: {path}:6:5: userstores[1].url: the url holds a password (user:password@): "
        "a credential is a secret reference of its own, never part of the url (which is "
        "shown in errors and by `config show`): remove it from the url and set bind_dn and "
        "bind_password: env:NAME (or file:PATH, keyring:NAME)"
    )
    assert "LdapUrlPwSecret" not in run.stdout + run.stderr


# ---- 11: no error quotes a long value, nor one shaped like a credential


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (
            "Bearer eyJhbGciOiJSUzI1NiJ9.PastedTokenSecret",
            "got a string of 45 characters (not quoted, in case it is a secret)",
        ),
        ("Bearer Pasted7", "got a string of 14 characters (not quoted, in case it is a secret)"),
        ("baerer", "got str 'baerer'"),
    ],
)
def test_a_value_under_the_wrong_key_is_quoted_only_when_short(
    cli, write_config, tmp_path, value, says
):
    text = config(tmp_path, idp("corp", "https://scim.example.com/v2"))
    path = write_config(text.replace("auth: bearer", f"auth: {value}"))
    run = cli("--config", str(path), "config", "validate")
    assert run.exit_code == 2, run
    assert run.stderr.startswith(
        f"error: {path}:7:7: identity_providers[0].options.auth: expected one of 'none', "
        f"'basic', 'bearer', 'header', {says}\n"
    )
    if value != "baerer":
        assert "Pasted" not in run.stderr


def test_a_yaml_tag_is_not_quoted(cli, write_config, tmp_path):
    text = config(tmp_path, idp("corp", "https://scim.example.com/v2"))
    path = write_config(text.replace("token: env:F7_TOKEN", "token: !PastedTagSecret"))
    run = cli("--config", str(path), "config", "validate")
    assert run.exit_code == 2, run
    assert run.stderr == (
        f"error: {path}:8:14: invalid YAML: a value that starts with ! is a YAML tag, which "
        "is not supported\nhint: put the value in quotes if it is text; a secret is a "
        "reference (env:NAME...)\n"
    )
