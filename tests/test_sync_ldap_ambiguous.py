"""Two directory entries holding the same username (``user_search_scope: sub``, a
second ``uid=u01`` under ``ou=contractors``) make the name ambiguous: neither is
provisioned, updated, deprovisioned or taken out of its groups until the name is
unique again; sync says which DNs and how to fix it, and exits 9 so cron notices.
Against a real slapd and the real scim2-server."""

from __future__ import annotations

import json

from tests.test_guard_ldap import corp, person  # noqa: F401 - the fixture

CONTRACTORS = "ou=contractors"


def add_contractor(directory, uid: str, mail: str) -> str:
    """A second entry ``uid`` under ou=contractors,ou=people; its DN."""
    base = f"{CONTRACTORS},{directory.people}"
    if directory.entry(base) is None:
        directory.add(f"dn: {base}\nobjectClass: organizationalUnit\nou: contractors\n\n")
    dn = f"uid={uid},{base}"
    directory.add(
        f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Contractor {uid}\n"
        f"sn: Contractor\ngivenName: Contractor\nmail: {mail}\n\n"
    )
    return dn


def snapshot(scim2_server) -> dict[str, tuple]:
    users = {
        u["userName"]: (u["id"], u.get("externalId"), u["emails"][0]["value"], u["active"])
        for u in scim2_server.users()
    }
    groups = {
        g["displayName"]: sorted(m["value"] for m in g.get("members", []))
        for g in scim2_server.groups()
    }
    return {"users": users, "groups": groups}


def test_a_provisioned_user_whose_name_becomes_ambiguous_is_left_as_it_is(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    scim2_server,
):
    cli("sync").ok()
    before = snapshot(scim2_server)
    dn = add_contractor(corp, "U01", "contractor@example.com")  # another case: the same name
    corp.tool("ldapmodify", input=f"dn: cn=team1,{corp.groups}\nadd: member\nmember: {dn}\n")
    real = f"uid=u01,{corp.people}"  # changed, and out of its group: not pushed either
    corp.tool("ldapmodify", input=f"dn: {real}\nreplace: mail\nmail: new@example.com\n")
    corp.tool("ldapmodify", input=f"dn: cn=team0,{corp.groups}\ndelete: member\nmember: {real}\n")

    plan = cli("plan", "--json")
    assert plan.exit_code == 9, plan
    data = json.loads(plan.stdout)["plan"]
    assert all("u01" not in i["label"].lower() for i in data["idps"][0]["items"])
    (ambiguous,) = data["ambiguous"]
    assert ambiguous["domain"] == "CORP" and ambiguous["username"].lower() == "u01"
    assert sorted(ambiguous["dns"]) == sorted([f"uid=u01,{corp.people}", dn])

    result = cli("sync")
    assert result.exit_code == 9, result
    assert f"uid=u01,{corp.people}" in result.stderr and dn in result.stderr
    assert "user_search_scope" in result.stderr and "unique" in result.stderr
    assert snapshot(scim2_server) == before  # no create, update, disable, member change

    listed = cli("user", "list", "--domain", "CORP")
    assert listed.exit_code == 0, listed
    assert "ambiguous" in listed.stderr and dn in listed.stderr
    assert "ambiguous" not in cli("user", "list", "--domain", "CORP", "--prefix", "u1").stderr
    page = cli("user", "list", "--domain", "CORP", "--limit", "1", "--offset", "2")
    assert dn in page.stderr  # the other entry of the name is on another page

    corp.tool("ldapdelete", dn)  # unique again: u01's own changes go out
    cli("sync").ok()
    after = snapshot(scim2_server)
    assert after["users"]["u01"] == (*before["users"]["u01"][:2], "new@example.com", True)
    assert after["groups"]["CORP/team1"] == before["groups"]["CORP/team1"]
    assert len(after["groups"]["CORP/team0"]) == len(before["groups"]["CORP/team0"]) - 1
    assert cli("plan", "--json").json()["plan"]["idps"][0]["items"] == []


def test_a_new_ambiguous_name_is_not_created_and_the_rest_is_synced(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    scim2_server,
):
    cli("sync").ok()
    corp.add(person(corp, "new1") + person(corp, "dup"))
    add_contractor(corp, "dup", "other@example.com")
    result = cli("sync", "--json")
    assert result.exit_code == 9, result
    names = {u["userName"] for u in scim2_server.users()}
    assert "new1" in names and "dup" not in names
    counts = json.loads(result.stdout)["plan"]["idps"][0]["counts"]
    assert counts == {"user.create": 1}
