"""Internal roles named in an import into an LDAP userstore: a new directory user's
id is the entry's entryUUID, known only once the directory made it, and its internal
roles must follow it (they were dropped, the import reporting success)."""

from __future__ import annotations

import pytest

from tests.peers.slapd import Directory
from tests.test_guard_ldap import WRITE, corp_config, person
from tests.test_userstore_ldap import add_service_account


@pytest.fixture()
def corp(tmp_path, slapd_factory) -> Directory:
    directory = slapd_factory(extra_config=WRITE)
    add_service_account(directory)
    directory.add(person(directory, "u00"))
    corp_config(tmp_path, directory)
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
