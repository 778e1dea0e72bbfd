"""What sync, plan, user list and import say when an LDAP userstore cannot be read,
against a real slapd: the store's own hint (a size limit names the directory's
limits, a refused StartTLS the url and start_tls), not a guess; a second import while
the directory is down exits 8 at once when another run holds the lock."""

from __future__ import annotations

import json

import pytest

from idprov.config import load_config
from idprov.provisioning.service import IdentityService
from tests.test_guard_ldap import SVC, WRITE, configure, corp, corp_config, person  # noqa: F401
from tests.test_userstore_ldap import add_service_account


@pytest.fixture
def limited(tmp_path, slapd_factory, scim2_server, monkeypatch):
    """A directory that answers idprov's bind DN 5 entries a search at most (paged
    searches too: OpenLDAP's size.prtotal follows size.hard), with 8 people."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    directory = slapd_factory(extra_config=f'limits dn.exact="{SVC}" size=5\n{WRITE}')
    add_service_account(directory)
    directory.add("".join(person(directory, f"p{i}") for i in range(8)))
    configure(tmp_path, directory, scim2_server)
    return directory


def test_plan_over_a_size_limit_gives_the_hint_user_list_gives(cli, limited):
    listed = cli("user", "list", "--domain", "CORP", "--json").error(1)
    assert "server limit" in listed["message"] and "size.prtotal=unlimited" in listed["hint"]
    limits = listed["hint"].split("; or narrow")[0]  # the store's hint, the listing's after
    for command in (["plan"], ["sync"]):
        error = cli(*command, "--json").error(7)
        assert "could not be read in full" in error["message"]
        assert error["hint"].startswith(limits)
        assert "are the credentials right" not in error["hint"]


def test_a_short_page_over_a_size_limit_says_why_and_how_to_narrow_it(cli, limited):
    """Ordered by name and counted, a page of 3 reads all 8 users: over the limit of 5
    it fails, saying so; a listing narrowed below the limit works."""
    error = cli("user", "list", "--domain", "CORP", "--limit", "3", "--json").error(1)
    assert "reads every matching user" in error["message"]
    assert "size.prtotal=unlimited" in error["hint"] and "--prefix" in error["hint"]
    narrowed = cli("user", "list", "--domain", "CORP", "--prefix", "p1", "--json").json()
    assert [u["username"] for u in narrowed["items"]] == ["p1"]


def test_sync_when_the_server_refuses_start_tls_says_what_to_change(
    cli, tmp_path, slapd_factory, scim2_server, monkeypatch
):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    directory = slapd_factory(extra_config=WRITE)  # no TLS at all
    add_service_account(directory)
    configure(tmp_path, directory, scim2_server)
    path = tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace("    url:", "    start_tls: true\n    url:", 1))
    error = cli("sync", "--json").error(7)
    assert "refused StartTLS" in error["message"]
    assert "ldaps://" in error["hint"] and "start_tls: false" in error["hint"]


def test_an_import_while_another_run_holds_the_lock_exits_8_before_reading(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    (tmp_path / "new.csv").write_text("username,email\nCORP/zed,zed@example.com\n")
    corp.stop()  # reading the directory now fails: the lock must be asked first
    with IdentityService(load_config()) as svc, svc.state.run_lock("sync"):
        error = cli("import", "users", "new.csv", "--json").error(8)
    assert "holds the lock" in error["message"]
    corp.restart()
    result = cli("import", "users", "new.csv", "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout)["created"] == 1
