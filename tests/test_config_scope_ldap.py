"""`config validate` checks provisioning_roles against an LDAP userstore's roles (its
groups) as against SQLite's: a typo is named, with the role meant (`sync` would refuse
that IdP's plan). A directory that cannot be read leaves the scopes unchecked, and
validate says so in a warning (it still exits 0: the configuration may be right, and
sync refuses a plan whose userstore cannot be read anyway); --strict refuses it. A
directory is contacted only when an IdP has a scope to check. Against a real slapd."""

from __future__ import annotations

import json

import pytest

from tests.test_guard_ldap import corp_config, group, person
from tests.test_userstore_ldap import add_service_account

IDP = """identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "https://scim.test/v2", auth: bearer, token: env:SCIM_TOKEN}}
{scope}applications:
  - name: resident
    identity_providers: [scim]
"""


@pytest.fixture
def directory(slapd_factory, monkeypatch):
    """A private slapd (it can be stopped) with the groups team0 and team1."""
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    server = slapd_factory()
    add_service_account(server)
    server.add(
        person(server, "u1") + group(server, "team0", ["u1"]) + group(server, "team1", ["u1"])
    )
    return server


def scoped(tmp_path, directory, roles: str | None) -> None:
    scope = f"    provisioning_roles: [{roles}]\n" if roles is not None else ""
    corp_config(tmp_path, directory, IDP.format(scope=scope))


def test_a_scope_naming_no_group_of_the_directory_is_named_with_the_role_meant(
    cli, tmp_path, directory
):
    scoped(tmp_path, directory, "tem1")
    run = cli("config", "validate")
    assert run.exit_code == 0, run
    assert "no userstore has a role 'tem1' (did you mean 'CORP/team1'?)" in run.stdout
    assert "refuse identity provider scim" in run.stdout
    found = cli("config", "validate", "--json").json()["unknown_scope_roles"]
    assert len(found) == 1 and "identity_providers[0].provisioning_roles[0]" in found[0]
    strict = cli("config", "validate", "--strict", "--json")
    assert strict.exit_code == 2, strict
    assert "idprov.yaml:" in json.loads(strict.stderr)["error"]["message"]


@pytest.mark.parametrize("roles", ["team1", "CORP/TEAM0, team1"])
def test_a_scope_naming_the_directorys_groups_validates(cli, tmp_path, directory, roles):
    scoped(tmp_path, directory, roles)
    run = cli("config", "validate", "--strict")
    assert run.exit_code == 0, run
    assert "no userstore has a role" not in run.stdout and "warning" not in run.stderr


def test_a_directory_down_leaves_the_scope_unchecked_and_says_so(cli, tmp_path, directory):
    scoped(tmp_path, directory, "tem1")
    directory.stop()
    run = cli("config", "validate")
    assert run.exit_code == 0, run
    assert "is valid" in run.stdout and "no userstore has a role" not in run.stdout
    said = " ".join(run.stderr.split())
    assert "userstore CORP was not read, so the provisioning_roles of scim were not " in said
    assert "checked against its roles" in said and directory.url.rstrip("/") in said
    result = cli("config", "validate", "--json").json()
    assert result["unknown_scope_roles"] == []
    # not "checked, all fine": which scopes were not checked, and why
    [unchecked] = result["unchecked_scopes"]
    assert unchecked["identity_providers"] == ["scim"] and unchecked["userstore"] == "CORP"
    assert directory.url.rstrip("/") in unchecked["reason"]
    assert "was not read" not in unchecked["reason"]
    strict = cli("config", "validate", "--strict", "--json")
    assert strict.exit_code == 1, strict  # a userstore that could not be used (README)
    error = json.loads(strict.stderr)["error"]
    assert "provisioning_roles of scim were not checked" in error["message"]
    assert error["hint"]


def test_without_a_scope_the_directory_is_not_contacted(cli, tmp_path, directory):
    scoped(tmp_path, directory, None)
    directory.stop()
    run = cli("config", "validate", "--strict")
    assert run.exit_code == 0, run
    assert "was not read" not in run.stderr


@pytest.fixture
def tls_directory(slapd_factory, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    server = slapd_factory(tls=True)
    add_service_account(server)
    server.add(person(server, "u1") + group(server, "team1", ["u1"]))
    return server


@pytest.mark.parametrize("refusal", ["bind", "tls"])
def test_strict_refuses_a_directory_it_could_not_read_with_exit_1_whatever_the_cause(
    cli, tmp_path, tls_directory, refusal
):
    """A refused bind and an untrusted certificate alike: a userstore that could not be
    used, exit 1 (the TLS failure exited 2, a configuration error)."""
    scope = IDP.format(scope="    provisioning_roles: [tem1]\n")
    if refusal == "bind":
        corp_config(tmp_path, tls_directory, scope, bind=("cn=svc,dc=example,dc=com", "wrong"))
    else:  # ldaps:// to a server whose CA is not given
        corp_config(tmp_path, tls_directory, scope, url=tls_directory.ldaps_url)
    run = cli("config", "validate")
    assert run.exit_code == 0 and "was not read" in run.stderr, run
    assert cli("config", "validate", "--json").json()["unchecked_scopes"][0]["userstore"] == "CORP"
    strict = cli("config", "validate", "--strict", "--json")
    assert strict.exit_code == 1, strict
    assert "provisioning_roles of scim were not checked" in strict.stderr


def test_a_directory_that_never_answers_is_read_with_a_short_timeout(
    cli, tmp_path, directory, monkeypatch
):
    """A directory that takes the connection and never answers: validate waits at most
    CHECK_TIMEOUT seconds for it (its timeout: 30 s), and says it was not read."""
    import socket

    from idprov.cli import config_cmd
    from idprov.userstores import open_userstore

    opened: list[tuple[float, float]] = []

    def opening(config, *args):
        opened.append((config.connect_timeout, config.timeout))
        return open_userstore(config, *args)

    monkeypatch.setattr("idprov.userstores.open_userstore", opening)
    monkeypatch.setattr(config_cmd, "CHECK_TIMEOUT", 0.5)
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", 18902))
    hole.listen(8)
    try:
        corp_config(
            tmp_path,
            directory,
            IDP.format(scope="    provisioning_roles: [tem1]\n"),
            url="ldap://127.0.0.1:18902/",
        )
        run = cli("config", "validate")
    finally:
        hole.close()
    assert run.exit_code == 0 and "was not read" in run.stderr, run
    assert (0.5, 0.5) in opened


def test_strict_says_every_finding_before_it_refuses_the_first(cli, tmp_path, directory):
    """A directory that could not be read refused `--strict` at once, and the unsafe
    setting behind it (verify_tls: false) was said only once the directory was back:
    an administrator fixed one, ran again, met the next. Every finding is said (the
    document on stdout with --json), then the first is refused, exit 1, naming how
    many more there are."""
    unsafe = IDP.format(scope="    provisioning_roles: [team1]\n").replace(
        "token: env:SCIM_TOKEN}", "token: env:SCIM_TOKEN, verify_tls: false}"
    )
    corp_config(tmp_path, directory, unsafe)
    directory.stop()
    error = cli("config", "validate", "--strict", "--json").refusal(1)
    assert "provisioning_roles of scim were not checked" in error["message"]
    assert "--strict refuses 1 more finding(s), listed above" in error["hint"]
    document = json.loads(cli("config", "validate", "--strict", "--json").stdout)
    assert [s["code"] for s in document["unsafe_settings"]] == ["tls_unchecked"], document
    run = cli("config", "validate", "--strict")
    assert run.exit_code == 1, run
    assert "verify_tls" in run.stdout and "is valid" not in run.stdout, run
    assert "were not checked" in run.stderr, run
