"""The ``active`` claim as a directory spells it: LDAP's Boolean is ``TRUE``/``FALSE``,
and a directory's administrator may write ``False``, ``no`` or ``0``. One reading
(:mod:`idprov.provisioning.active`) decides for the push, the sync, `idprov explain`
and `idprov serve`: true and false in any case; anything else cannot be read, and
the user is taken as disabled (never created or enabled on a value nobody can vouch
for), the value named in the decision's reason. A real slapd, pushed to the real
scim2-server, and served by a real `idprov serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from idprov.config import load_text
from idprov.provisioning.active import is_active, truth
from tests.peers.scim2 import Scim2Peer
from tests.peers.slapd import Directory
from tests.test_guard_ldap import corp_config
from tests.test_serve_scim import CRM_TOKEN, running

ACTIVE = "    claim_attributes: {active: businessCategory}\n"
VALUES = {"h00": "FALSE", "h01": "False", "h02": "no", "h03": "0", "h04": "TRUE", "h05": None}
"""What the directory's administrator writes in each user's businessCategory."""
SCIM_IDP = """identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{url}", auth: bearer, token: env:SCIM_TOKEN}}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
"""


def set_active(directory: Directory, uid: str, value: str | None) -> None:
    change = "delete: businessCategory\n"
    if value is not None:
        change = f"replace: businessCategory\nbusinessCategory: {value}\n"
    ldif = f"dn: uid={uid},{directory.people}\nchangetype: modify\n{change}\n"
    directory.tool("ldapmodify", input=ldif)


@pytest.fixture
def corp(tmp_path: Path, slapd: Directory, scim2_server: Scim2Peer, monkeypatch, cli) -> Directory:
    """CORP users h00..h05, active at the target; then the directory's administrator
    writes VALUES."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    rest = ACTIVE + SCIM_IDP.format(url=scim2_server.base_url)
    corp_config(tmp_path, slapd, rest, bind=(slapd.root_dn, slapd.root_password))
    for uid in VALUES:
        cli("user", "add", f"CORP/{uid}", "-c", "active=true").ok()
    assert active_at(scim2_server) == dict.fromkeys(VALUES, True)
    for uid, value in VALUES.items():
        set_active(slapd, uid, value)
    return slapd


def active_at(scim: Scim2Peer) -> dict[str, bool]:
    return {u["userName"]: u.get("active", True) for u in scim.users()}


def test_false_as_a_directory_spells_it_disables_the_account_and_a_value_unread_too(
    cli, corp, scim2_server
):
    plan = cli("plan", "--json").json()["plan"]["idps"][0]["items"]
    planned = {i["label"]: (i["action"], i["reason"]) for i in plan}
    assert {k: a for k, (a, _) in planned.items()} == dict.fromkeys(
        ["CORP/h00", "CORP/h01", "CORP/h02", "CORP/h03"], "disable"
    )
    assert planned["CORP/h00"][1] == "disabled locally"
    assert "active is 'no', neither true nor false: taken as disabled" in planned["CORP/h02"][1]
    assert "'0'" in planned["CORP/h03"][1]
    cli("sync").ok()
    assert active_at(scim2_server) == {
        "h00": False,
        "h01": False,
        "h02": False,
        "h03": False,
        "h04": True,
        "h05": True,
    }
    explained = cli("explain", "CORP/h02", "--idp", "scim", "--json").json()
    assert "'no'" in explained["decision"]["reason"]
    assert explained["decision"]["action"] == "none"
    set_active(corp, "h02", "true")  # fixed: enabled again
    cli("sync").ok()
    assert active_at(scim2_server)["h02"] is True


def test_a_user_whose_active_cannot_be_read_is_never_created(cli, corp, scim2_server):
    corp.add(
        f"dn: uid=h07,{corp.people}\nobjectClass: inetOrgPerson\nuid: h07\ncn: h07\n"
        "sn: h07\nbusinessCategory: yes\n\n"
    )
    explained = cli("explain", "CORP/h07", "--idp", "scim", "--json").json()
    assert explained["decision"]["action"] == "none"
    assert "active is 'yes', neither true nor false" in explained["decision"]["reason"]
    cli("sync").ok()
    assert "h07" not in active_at(scim2_server)


def test_idprov_serve_shows_and_filters_active_as_the_sync_decides_it(tmp_path, corp, monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    text = (
        (tmp_path / "idprov.yaml")
        .read_text()
        .replace(
            "applications:\n  - name: resident\n    identity_providers: [scim]\n",
            "applications:\n  - name: crm\n    userstore: CORP\n    inbound_token: env:CRM_TOKEN\n",
        )
    )
    with running(load_text(text, "serve.yaml", tmp_path)) as served:
        users = served.client.get("/Users").json()["Resources"]
        shown = {u["userName"]: u.get("active") for u in users}
        disabled = served.client.get("/Users", params={"filter": "active eq false"}).json()
        enabled = served.client.get("/Users", params={"filter": "active eq true"}).json()
    assert shown == {
        "h00": False,
        "h01": False,
        "h02": False,
        "h03": False,
        "h04": True,
        "h05": None,
    }
    assert sorted(u["userName"] for u in disabled.get("Resources", [])) == [
        "h00",
        "h01",
        "h02",
        "h03",
    ]
    assert [u["userName"] for u in enabled.get("Resources", [])] == ["h04"]


def test_active_written_in_capitals_is_taken_and_disables_at_once(cli, corp, scim2_server):
    """A spreadsheet's FALSE (or an administrator's) is accepted and pushed as false."""
    cli("user", "update", "CORP/h04", "-c", "active=FALSE").ok()
    assert active_at(scim2_server)["h04"] is False
    cli("user", "update", "CORP/h04", "-c", "active=True").ok()
    assert active_at(scim2_server)["h04"] is True
    cli("user", "update", "CORP/h04", "-c", "active=yes").fails(5)


@pytest.mark.parametrize(
    ("value", "read"),
    [("TRUE", True), ("false", False), (" False ", False), (["FALSE"], False), ("no", None)],
)
def test_one_reading_of_a_boolean_claim(value, read):
    assert truth(value) is read
    assert is_active({"active": value}) is (read is True)
    assert is_active({}) is True
