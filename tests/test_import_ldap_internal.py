"""Internal roles named in an import into an LDAP userstore: a new directory user's
id is the entry's entryUUID, known only once the directory made it, and its internal
roles must follow it (they were dropped, the import reporting success)."""

from __future__ import annotations

import pytest

from tests.peers.slapd import Directory
from tests.test_guard_ldap import WRITE, person
from tests.test_userstore_ldap import SERVICE_PASSWORD, add_service_account

SVC = "cn=svc,dc=example,dc=com"


@pytest.fixture()
def corp(tmp_path, slapd_factory, write_config) -> Directory:
    directory = slapd_factory(extra_config=WRITE)
    add_service_account(directory)
    directory.add(person(directory, "u00"))
    secret = tmp_path / "bind-password"
    secret.write_text(SERVICE_PASSWORD + "\n")
    write_config(
        f"""version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    url: {directory.url}
    bind_dn: "{SVC}"
    bind_password: file:{secret}
    user_search_base: "{directory.people}"
    group_search_base: "{directory.groups}"
"""
    )
    return directory


def test_new_and_existing_directory_users_get_their_internal_roles(cli, corp, tmp_path):
    cli("role", "add", "Internal/auditors").ok()
    csv = tmp_path / "users.csv"
    csv.write_text(
        "username,given_name,family_name,roles\n"
        "CORP/newbie,N,B,Internal/auditors\n"
        "CORP/u00,U,Z,Internal/auditors\n"
    )
    report = cli("import", "users", str(csv), "--mode", "upsert", "--json").ok().json()
    assert (report["created"], report["updated"]) == (1, 1)
    members = cli("role", "show", "Internal/auditors", "--json").json()["members"]
    assert sorted(members) == ["CORP/newbie", "CORP/u00"]
    assert cli("user", "show", "CORP/newbie", "--json").json()["roles"] == ["Internal/auditors"]
