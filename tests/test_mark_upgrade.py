"""Upgrading to a mark that is idprov's alone (SPML ``mark_attribute``, Salesforce
``mark_field``): what the previous version left behind is handled safely.

Before, a mapping could fill the mark from a claim (an HR number, an e-mail), and an
account another system made holding that value was adopted as created by idprov. Now
`sync --verify` lists such accounts (recorded as idprov's, without idprov's mark), a
deprovision never deletes them, and `idp stamp` / `idp forget-account` settle them.
Taking the mark out of the mapping changes nothing at the target, so no plan shows it
and the deletion guard counts nothing; Salesforce never clears or rewrites its mark
field (single sign-on's ``FederationIdentifier``) on an update.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from idprov.config.models import IdentityProviderConfig
from idprov.connectors.base import MappingInvalid
from idprov.connectors.salesforce import SalesforceConnector
from idprov.connectors.salesforce_api import SalesforceOptions
from tests.peers.salesforce import SalesforceOrg
from tests.peers.spml import Pso, SpmlServer
from tests.test_connector_salesforce import org, service  # noqa: F401 - the fixture
from tests.test_connector_spml import peer, spml_idp  # noqa: F401 - the fixture

__all__ = ["org", "peer"]


def spml_config(tmp_path: Path, server: SpmlServer, options: str, extra: str = "") -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:{spml_idp(server, options, extra)}
applications:
  - name: resident
    identity_providers: [legacy]
""")


def adopted_under_the_old_rule(cli: Any, tmp_path: Path, peer: SpmlServer) -> Any:
    """carol's account, recorded as made by idprov, holding a claim's value where
    idprov's mark goes (as the old version's adoption left another system's account)."""
    spml_config(tmp_path, peer, "      mark_attribute: description\n")
    cli("role", "add", "staff").ok()
    cli("user", "add", "carol", "-c", "family_name=C", "--role", "staff").ok()
    account = peer.accounts()["carol"]
    account.attributes["description"] = ["E7"]
    return account


def test_verify_lists_an_account_without_idprovs_mark_and_a_delete_leaves_it(cli, tmp_path, peer):
    account = adopted_under_the_old_rule(cli, tmp_path, peer)
    drift = cli("sync", "--verify", "--json").json()["drift"]["legacy"]
    assert drift["not_proven"] == ["carol"]
    shown = cli("sync", "--verify").ok().stdout
    assert "without idprov's mark" in shown and "carol" in shown

    deleted = cli("user", "delete", "carol", "--yes")
    assert deleted.exit_code == 6, deleted
    out = " ".join(deleted.stdout.split())
    assert "user carol: delete failed" in out and "lacks idprov's mark" in out
    assert "idprov idp stamp legacy carol" in out
    assert "idprov idp forget-account legacy carol" in out
    assert peer.accounts()["carol"] is account, "another system's account stays"

    cli("idp", "forget-account", "legacy", "carol").ok()
    cli("outbox", "retry").ok()
    assert peer.accounts()["carol"].get("description") == ["E7"]
    assert cli("outbox", "list", "--json").items() == []
    drift = cli("sync", "--verify", "--json").json()["drift"]["legacy"]
    assert drift["not_proven"] == [] and drift["unowned"] == ["carol"]  # never touched


def test_an_account_stamped_as_idprovs_is_deleted(cli, tmp_path, peer):
    adopted_under_the_old_rule(cli, tmp_path, peer)
    carol_id = cli("user", "show", "carol", "--json").json()["id"]
    assert cli("user", "delete", "carol", "--yes").exit_code == 6

    cli("idp", "stamp", "legacy", "carol").ok()
    assert peer.accounts()["carol"].get("description") == [carol_id]
    cli("outbox", "retry").ok()
    assert "carol" not in peer.accounts()


def test_stamp_refuses_an_account_idprov_adopted_and_a_user_the_ledger_does_not_hold(
    cli, tmp_path, peer
):
    peer.store["x-dan"] = Pso(
        "x-dan", {"objectclass": ["inetOrgPerson"], "uid": ["dan"], "cn": ["dan"], "sn": ["D"]}
    )
    options = "      mark_attribute: description\n"
    spml_config(tmp_path, peer, options, "    on_conflict: adopt\n")
    cli("role", "add", "staff").ok()
    cli("user", "add", "dan", "-c", "family_name=D", "--role", "staff").ok()
    error = cli("idp", "stamp", "legacy", "dan", "--json").error(2)
    assert "dan: idprov adopted the account at legacy" in error["message"]
    assert peer.store["x-dan"].get("description") == []
    error = cli("idp", "stamp", "legacy", "nobody", "--json").error(2)
    assert "holds no account of nobody at legacy" in error["message"]
    assert "sync --verify" in error["hint"]


def test_taking_the_mark_out_of_the_mapping_plans_nothing_and_sends_nothing(cli, tmp_path, peer):
    """The previous version sent employeeNumber from the claim, and it was the mark;
    now the mark is idprov's alone: mapping employeeNumber: null (the hint's way out)
    is no removal of it (the connector never sends its mark in an update)."""
    spml_config(tmp_path, peer, "      mark_attribute: description\n")
    cli("role", "add", "staff").ok()
    for n in range(13):
        cli("user", "add", f"u{n}", "-c", "family_name=F", "-c", f"employee_number=E{n}",
            "--role", "staff").ok()  # fmt: skip
    assert peer.accounts()["u1"].get("employeeNumber") == ["E1"]
    spml_config(
        tmp_path,
        peer,
        "      mark_attribute: employeeNumber\n",
        "    attributes: {employeeNumber: null}\n",
    )
    cli("config", "validate").ok()
    sent = len(peer.requests)
    plan = cli("sync", "--dry-run", "--json").json()["plan"]
    assert [p["items"] for p in plan["idps"]] == [[]]
    assert cli("sync").exit_code == 0  # the deletion guard counted nothing
    assert len(peer.requests) == sent
    assert peer.accounts()["u1"].get("employeeNumber") == ["E1"]
    cli("user", "update", "u1", "-c", "title=X").ok()
    assert peer.accounts()["u1"].get("employeeNumber") == ["E1"]
    assert peer.accounts()["u1"].get("title") == ["X"]


# ---------------------------------------------------------------- Salesforce
SSO = "    attributes:\n      FederationIdentifier: '{email}'\n"


@pytest.mark.parametrize(
    "mapping",
    ["", "    attributes:\n      FederationIdentifier: null\n"],
    ids=["mapping removed", "mapped to null"],
)
def test_salesforce_never_clears_single_sign_ons_federation_identifier(
    tmp_path, org: SalesforceOrg, mapping
):
    """State as the previous version left it: FederationIdentifier sent as the e-mail
    (mark_field elsewhere); then the mark goes back to FederationIdentifier with the
    mapping removed, or null: an update leaves the field alone."""
    org.user_fields["Idprov_Id__c"] = ("string", 255)
    with service(tmp_path, org, options="      mark_field: Idprov_Id__c\n", extra=SSO) as svc:
        svc.add_role("staff")
        svc.add_user("fay", {"email": "fay@corp.test"}, roles=["staff"])
    with service(tmp_path, org, extra=mapping) as svc:
        assert svc.update_user("fay", {"title": "Boss"}).outbound.ok
        patch = org.api_requests("PATCH")[-1].body
        assert patch == {"Title": "Boss"}
        from idprov.provisioning.verify import verify_idp

        assert verify_idp(svc, "sf")["not_proven"] == ["fay"]
        assert org.users()["fay@example.com"]["FederationIdentifier"] == "fay@corp.test"
        org.users()["fay@example.com"]["FederationIdentifier"] = "fay.sso@corp.test"
        report = verify_idp(svc, "sf")  # single sign-on's own change: no drift of idprov's
        assert report["changed_remotely"] == [] and report["repairs"] == []
    assert org.users()["fay@example.com"]["FederationIdentifier"] == "fay.sso@corp.test"


def mark_refusal(template: str) -> MappingInvalid:
    idp = IdentityProviderConfig(
        name="sf", connector="salesforce", attributes={"FederationIdentifier": template}
    )
    options = SalesforceOptions.__new__(SalesforceOptions)
    object.__setattr__(options, "mark_field", "FederationIdentifier")
    with pytest.raises(MappingInvalid) as caught:
        SalesforceConnector.check_mapping(idp, options)
    return caught.value


@pytest.mark.parametrize("template", ["{email}", "{ID}"])
def test_salesforce_refuses_any_mapping_of_the_mark_field_and_offers_safe_ways_out(template):
    refused = mark_refusal(template)
    assert refused.path == ("options", "mark_field")
    hint = refused.hint or ""
    assert "Idprov_Id__c" in hint and "mark_field: null" in hint
    assert "Do not remove the mapping or map FederationIdentifier to null or '{ID}'" in hint
