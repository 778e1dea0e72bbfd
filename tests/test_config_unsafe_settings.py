"""Settings that work but expose credentials or data are said, never accepted in silence:
`config validate` warns (naming the file, line, key and what it risks, and how to fix
it), `--strict` refuses them; `verify_tls: false` is said by `idp test` and `status`
too. A credential written into a URL is refused when the configuration loads, and no
error quotes it, nor a long value pasted under the wrong key."""

from __future__ import annotations

import json
import os

import pytest

TOKEN = "TOKSECRETbearer777"
UNREACHABLE = "127.0.0.1:18701"  # nothing listens there (ports of this suite: 18700-18719)


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


def refused(cli, path) -> dict[str, str]:
    """The error of `config validate --strict --json` refusing unsafe settings (exit 2,
    on stderr); stdout carries the validate document, ``valid: false``, listing them."""
    run = cli("--config", str(path), "config", "validate", "--strict", "--json")
    assert run.exit_code == 2, run
    document, error = json.loads(run.stdout), json.loads(run.stderr)["error"]
    assert document["valid"] is False and document["refused"] == error
    assert document["unsafe_settings"] == unsafe(cli, path)
    return error


def unsafe(cli, path) -> list[dict[str, str]]:
    run = cli("--config", str(path), "config", "validate", "--json")
    assert run.exit_code == 0, run
    return run.json()["unsafe_settings"]


# ---- 6: verify_tls: false


def test_verify_tls_false_is_warned_by_validate_and_refused_by_strict(cli, write_config, tmp_path):
    path = write_config(
        config(tmp_path, idp("corp", f"https://{UNREACHABLE}/v2", "      verify_tls: false\n"))
    )
    run = cli("--config", str(path), "config", "validate").ok()
    assert (
        f"! {path}:9:7: identity_providers[0].options.verify_tls: identity provider corp has "
        f"verify_tls: false: the TLS certificate of 127.0.0.1 is not checked, so anyone on "
        "the network path can pose as it and read the credentials and user data idprov "
        "sends it\n"
        "  fix: remove verify_tls: false; for a private CA or a self-signed certificate, set "
        "ca_file: /path/to/ca.pem (the PEM of the CA that signs the server's certificate) "
        "instead\n"
    ) in run.stdout
    [found] = unsafe(cli, path)
    assert found["code"] == "tls_unchecked"
    error = refused(cli, path)
    assert error["code"] == "tls_unchecked"
    assert "corp has verify_tls: false" in error["message"] and "ca_file" in error["hint"]


def test_verify_tls_false_is_said_by_idp_test_and_status(cli, write_config, tmp_path):
    path = write_config(
        config(tmp_path, idp("corp", f"https://{UNREACHABLE}/v2", "      verify_tls: false\n"))
    )
    tested = cli("--config", str(path), "idp", "test", "corp")
    assert tested.exit_code == 6, tested
    said = "warning: " + f"{path}:9:7: identity_providers[0].options.verify_tls: identity "
    assert said + "provider corp has verify_tls: false" in tested.stderr
    assert "hint: remove verify_tls: false; for a private CA" in tested.stderr
    as_json = cli("--config", str(path), "idp", "test", "corp", "--json")
    warning = json.loads(as_json.stderr.splitlines()[0])["warning"]
    assert warning["code"] == "tls_unchecked"
    status = cli("--config", str(path), "status").ok()
    assert said + "provider corp has verify_tls: false" in status.stderr
    for run in (tested, as_json, status):
        assert TOKEN not in run.stdout + run.stderr


def test_a_ca_file_instead_is_not_warned(cli, write_config, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    ca.chmod(0o644)
    path = write_config(
        config(tmp_path, idp("corp", f"https://{UNREACHABLE}/v2", f"      ca_file: {ca}\n"))
    )
    assert unsafe(cli, path) == []
    assert "verify_tls" not in cli("--config", str(path), "status").ok().stderr


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
        (
            "https://scim.example.com/v2#access_token=FragTokSecret88",
            "a credential in the fragment parameter 'access_token'",
        ),
        (
            "https://scim.example.com/v2;jsessionid=MatrixSecret77",
            "a credential in the path parameter 'jsessionid'",
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


# ---- 9: credentials and data in clear beyond loopback


def test_plain_http_to_a_remote_host_with_a_credential_is_warned(cli, write_config, tmp_path):
    path = write_config(
        config(
            tmp_path,
            idp("remote", "http://scim.example.com/v2")
            + idp("local", "http://localhost:18703/v2")
            + idp("loop", "http://127.0.0.1:18703/v2")
            + "  - name: open\n    connector: scim2\n    options:\n"
            "      base_url: http://open.example.com/v2\n      auth: none\n",
        )
    )
    run = cli("--config", str(path), "config", "validate").ok()
    assert (
        f"! {path}:6:7: identity_providers[0].options.base_url: identity provider remote sends "
        "its credentials over plain http:// to scim.example.com (base_url): the credentials "
        "and user data cross the network unencrypted\n"
        "  fix: use an https:// URL (plain http:// is fine only to a loopback host: localhost, "
        "127.0.0.1, ::1)\n"
    ) in run.stdout
    assert [w["code"] for w in unsafe(cli, path)] == ["plain_http"]  # not local, loop, open
    error = refused(cli, path)
    assert error["code"] == "plain_http"


@pytest.mark.parametrize(
    "base_url",
    [
        "http://LocalHost:18703/v2",
        "http://[::ffff:127.0.0.1]:18703/v2",
        "HTTP://127.0.0.1:18703/v2",
    ],
)
def test_plain_http_to_loopback_is_not_warned_however_it_is_written(
    cli, write_config, tmp_path, base_url
):
    """`localhost` in any case is loopback, so is IPv4's loopback mapped in IPv6; a
    scheme is case-insensitive (`HTTP://` was refused)."""
    path = write_config(config(tmp_path, idp("local", base_url)))
    cli("--config", str(path), "config", "validate", "--strict").ok()


@pytest.mark.parametrize("host", ["localhost.", "scim.localhost"])
def test_plain_http_to_a_name_under_localhost_is_warned_it_may_go_to_dns(
    cli, write_config, tmp_path, host
):
    """`scim.localhost` and `localhost.` were taken for loopback (RFC 6761), but a
    resolver with `hosts: files dns` and no systemd-resolved asks DNS for them, which
    may answer any address: the bearer token would go there in clear."""
    path = write_config(config(tmp_path, idp("local", f"http://{host}:18703/v2")))
    (warning,) = unsafe(cli, path)
    assert warning["code"] == "plain_http" and f"to {host} (base_url)" in warning["message"]
    assert warning["hint"].endswith(
        f"; {host} is not taken for loopback: this machine's resolver may ask DNS for it, "
        "which may answer any address"
    )
    assert refused(cli, path)["code"] == "plain_http"


def test_postgres_without_a_certificate_check_beyond_loopback_is_warned(
    cli, write_config, tmp_path, monkeypatch
):
    monkeypatch.setenv("F7_PGPW", "PgPwSecret55")
    store = """  - domain: {domain}
    type: postgres
    url: postgresql://hr@{host}/hr
    password: env:F7_PGPW
    sslmode: {mode}
    connect_timeout: 1
"""
    path = write_config(
        f"data_dir: {tmp_path / 'data'}\nuserstores:\n  - domain: PRIMARY\n"
        + store.format(domain="HR", host="db.invalid", mode="require")
        + store.format(domain="OLD", host="db.invalid", mode="disable")
        + store.format(domain="LOCAL", host="127.0.0.1:18704", mode="disable")
        + store.format(domain="CHECKED", host="db.invalid", mode="verify-full")
    )
    run = cli("--config", str(path), "config", "validate").ok()
    assert (
        f"! {path}:8:5: userstores[1].sslmode: userstore HR connects to db.invalid with "
        "sslmode: require: TLS without a certificate check, so anyone on the network path can "
        "pose as the server and read the password and data\n"
        "  fix: set sslmode: verify-full (with ca_file: the PEM of the CA that signs the "
        "server's certificate, for a private CA); disable and require are fine only to a "
        "loopback host\n"
    ) in run.stdout
    assert (
        f"! {path}:14:5: userstores[2].sslmode: userstore OLD connects to db.invalid with "
        "sslmode: disable: no TLS, so the password and data cross the network unencrypted\n"
    ) in run.stdout
    assert "LOCAL connects" not in run.stdout and "CHECKED connects" not in run.stdout
    error = refused(cli, path)
    assert error["code"] == "postgres_tls" and error["message"].startswith("2 unsafe settings")
    assert "PgPwSecret55" not in run.stdout + run.stderr


# ---- 10: secret and key files other users may read or write


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_file_others_can_read_is_warned_naming_chmod(cli, write_config, tmp_path):
    secret = tmp_path / "token.txt"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o644)
    text = config(tmp_path, idp("corp", "https://scim.example.com/v2"))
    path = write_config(text.replace("env:F7_TOKEN", f"file:{secret}"))
    run = cli("--config", str(path), "config", "validate").ok()
    fix = f"chmod 600 {secret} (or chmod 640 and chgrp to a group only idprov runs as)"
    assert (
        f"! {path}:8:7: identity_providers[0].options.token: secret file {secret} has mode "
        f"0644: every user of this machine can read the secret\n  fix: {fix}\n"
    ) in run.stdout
    error = refused(cli, path)
    assert error["code"] == "file_mode" and error["hint"] == fix
    assert TOKEN not in run.stdout + run.stderr
    secret.chmod(0o600)
    cli("--config", str(path), "config", "validate", "--strict").ok()


def secret_file_config(write_config, tmp_path, secret) -> str:
    text = config(tmp_path, idp("corp", "https://scim.example.com/v2"))
    return write_config(text.replace("env:F7_TOKEN", f"file:{secret}"))


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_file_readable_by_idprovs_own_group_passes_strict(cli, write_config, tmp_path):
    """`root:idprov 0640` is how a service reads its secrets: --strict refused it, and
    its fix (chmod 600) would have made the file unreadable to idprov."""
    secret = tmp_path / "token.txt"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o640)
    path = secret_file_config(write_config, tmp_path, secret)
    cli("--config", str(path), "config", "validate", "--strict").ok()
    assert unsafe(cli, path) == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_file_readable_by_a_group_idprov_is_not_in_is_warned(
    cli, write_config, tmp_path, monkeypatch
):
    import grp

    secret = tmp_path / "token.txt"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o640)
    gid = secret.stat().st_gid
    monkeypatch.setattr(os, "getegid", lambda: gid + 1)
    monkeypatch.setattr(os, "getgroups", lambda: [gid + 1])
    path = secret_file_config(write_config, tmp_path, secret)
    (warning,) = unsafe(cli, path)
    assert warning["message"].endswith(
        f": secret file {secret} has mode 0640: the members of group "
        f"{grp.getgrgid(gid).gr_name} can read the secret"
    )


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_file_0640_with_a_group_other_accounts_are_in_is_warned(
    cli, write_config, tmp_path, monkeypatch
):
    """idprov's group is fine for 0640 only if idprov is its only member: a primary group
    many accounts share (`users` on SUSE, `staff` on macOS, `nogroup` here: nobody's)
    lets all of them read the secret."""
    import grp
    import pwd

    gid = pwd.getpwnam("nobody").pw_gid
    others = sorted(
        {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid != os.geteuid()}
        | set(grp.getgrgid(gid).gr_mem)
    )
    secret = tmp_path / "token.txt"
    secret.write_text(TOKEN + "\n")
    os.chown(secret, os.geteuid(), gid)
    secret.chmod(0o640)
    monkeypatch.setattr(os, "getegid", lambda: gid)  # idprov runs with that group
    path = secret_file_config(write_config, tmp_path, secret)
    (warning,) = unsafe(cli, path)
    assert warning["message"].endswith(
        f": secret file {secret} has mode 0640: the members of group "
        f"{grp.getgrgid(gid).gr_name}, not idprov alone ({', '.join(others[:5])}), can read "
        "the secret"
    )
    assert "a group only idprov runs as" in warning["hint"]
    assert refused(cli, path)["code"] == "file_mode"


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_mounted_read_only_for_everyone_is_warned_with_a_mount_fix(
    cli, write_config, tmp_path
):
    """A Kubernetes Secret volume (defaultMode 0644, a `..data` link) or a Docker secret
    (0444): chmod cannot change a read-only mount, the fix is the mount's mode; and the
    message no longer says others can change a file no one can write."""
    data = tmp_path / "secrets" / "..2026_12_01"
    data.mkdir(parents=True)
    (data / "token").write_text(TOKEN + "\n")
    (data / "token").chmod(0o444)
    (tmp_path / "secrets" / "..data").symlink_to(data.name)
    secret = tmp_path / "secrets" / "token"
    secret.symlink_to("..data/token")
    path = secret_file_config(write_config, tmp_path, secret)
    (warning,) = unsafe(cli, path)
    assert warning["message"].endswith(
        f": secret file {secret} has mode 0444 ({data / 'token'}): every user of this "
        "machine can read the secret"
    )
    assert "defaultMode: 0400" in warning["hint"] and "chmod" not in warning["hint"]
    assert cli("--config", str(path), "config", "validate", "--strict").exit_code == 2
    (data / "token").chmod(0o440)  # the mount's mode fixed: readable by the group idprov runs as
    cli("--config", str(path), "config", "validate", "--strict").ok()


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_file_its_group_can_change_is_warned(cli, write_config, tmp_path):
    import grp

    secret = tmp_path / "token.txt"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o660)
    path = secret_file_config(write_config, tmp_path, secret)
    (warning,) = unsafe(cli, path)
    group = grp.getgrgid(secret.stat().st_gid).gr_name
    assert warning["message"].endswith(
        f": secret file {secret} has mode 0660: the members of group {group} can change the secret"
    )


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_jit_key_file_others_can_write_is_warned(cli, write_config, tmp_path):
    from cryptography.hazmat.primitives import serialization

    from tests.test_jit import EC_KEY

    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        EC_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    pem.chmod(0o666)
    path = write_config(f"""data_dir: {tmp_path / "data"}
applications:
  - name: portal
    jit:
      - idp: okta
        issuer: https://okta.example.com
        audience: portal
        public_key_file: {pem}
""")
    run = cli("--config", str(path), "config", "validate").ok()
    assert (
        f"! {path}:8:9: applications[0].jit[0].public_key_file: public_key_file {pem} has mode "
        "0666: other users of this machine can replace the keys or CA certificates idprov "
        f"trusts in it\n  fix: chmod 600 {pem} (or 644: it need not be secret, but no one "
        "else may write it)\n"
    ) in run.stdout
    pem.chmod(0o644)  # a public key may be read by anyone
    cli("--config", str(path), "config", "validate", "--strict").ok()


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


def test_an_ldap_bind_password_in_clear_beyond_loopback_is_warned(cli, write_config, tmp_path):
    secret = tmp_path / "bind-password"
    secret.write_text("LdapBindSecret66\n")
    secret.chmod(0o600)
    store = """  - domain: {domain}
    type: ldap
    url: {url}
    bind_dn: cn=svc,dc=example,dc=com
    bind_password: file:{secret}
    user_search_base: ou=people,dc=example,dc=com
    group_search_base: ou=groups,dc=example,dc=com
{extra}"""
    path = write_config(
        f"data_dir: {tmp_path / 'data'}\nuserstores:\n  - domain: PRIMARY\n"
        + store.format(domain="CORP", url="ldap://ldap.invalid", secret=secret, extra="")
        + store.format(
            domain="TLS", url="ldap://ldap.invalid", secret=secret, extra="    start_tls: true\n"
        )
        + store.format(domain="LOOP", url="ldap://127.0.0.1:18705", secret=secret, extra="")
    )
    run = cli("--config", str(path), "config", "validate").ok()
    assert (
        f"! {path}:6:5: userstores[1].url: userstore CORP binds to ldap.invalid over ldap:// "
        "without start_tls: the bind password and user data cross the network unencrypted\n"
        "  fix: use an ldaps:// URL or set start_tls: true (with ca_file for a private CA)\n"
    ) in run.stdout
    assert [w["code"] for w in unsafe(cli, path)] == ["ldap_plain"]  # not TLS, not LOOP
    assert "LdapBindSecret66" not in run.stdout + run.stderr
