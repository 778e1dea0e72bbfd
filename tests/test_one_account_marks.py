"""`sync --verify`, `idp stamp` and `idp forget-account` on a merged ledger: one
account that an adoption of an earlier version recorded for two local users.

Verify lists it with its users and the command that settles it (and neither judges
nor repairs it: each user's drift is the other's attributes); stamp refuses to mark
it as one user's while the ledger maps it to another too; forget-account of the one
whose account it is not settles it, saying who keeps it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from idprov.config import load_text
from idprov.provisioning.service import IdentityService
from tests.peers.spml import SpmlServer
from tests.test_connector_spml import peer, spml_idp  # noqa: F401 - the fixture

__all__ = ["peer"]

MARK = "      mark_attribute: description\n"


def configure(tmp_path: Path, server: SpmlServer) -> str:
    text = f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:{spml_idp(server, MARK)}
applications:
  - name: resident
    identity_providers: [legacy]
"""
    (tmp_path / "idprov.yaml").write_text(text)
    return text


def merged(cli: Any, tmp_path: Path, server: SpmlServer, adopted: bool = True) -> str:
    """carol's account, which the ledger maps to dave too (dave ``adopted`` it, or it
    is recorded as made by idprov for both, as a mark filled from a shared claim
    made an earlier version's adoption think). Returns its remote id."""
    text = configure(tmp_path, server)
    cli("role", "add", "staff").ok()
    cli("user", "add", "carol", "-c", "family_name=C", "--role", "staff").ok()
    cli("user", "add", "dave", "-c", "family_name=D", "--role", "staff").ok()
    with IdentityService(load_text(text, "idprov.yaml")) as svc:
        ledger = svc.state.ledger
        entries = {e.label: e for e in ledger.for_idp("legacy", "user").values()}
        carol, dave = entries["carol"], entries["dave"]
        with svc.state.transaction():
            ledger.record(
                dataclasses.replace(dave, remote_id=carol.remote_id, created_by_idprov=not adopted)
            )
    assert carol.remote_id is not None
    return carol.remote_id


def test_verify_lists_an_account_of_two_local_users_with_the_command_that_settles_it(
    cli, tmp_path, peer
):
    remote_id = merged(cli, tmp_path, peer)
    peer.accounts()["carol"].attributes["sn"] = ["Changed"]  # drift: never "repaired"
    drift = cli("sync", "--verify", "--json").json()["drift"]["legacy"]
    assert drift["shared"] == [
        {
            "remote_id": remote_id,
            "users": ["carol", "dave"],
            "keeps": "carol",
            "fix": "the account is carol's (idprov created it; the others adopted it): "
            "`idprov idp forget-account legacy dave`",
        }
    ]
    assert drift["repairs"] == [] and drift["changed_remotely"] == []
    run = cli("sync", "--verify", "--detailed-exitcode")
    assert run.exit_code == 12  # drift found: cron sees it
    shown = " ".join(run.stdout.split())
    assert "one account, 2 local users carol, dave" in shown
    assert "`idprov idp forget-account legacy dave`" in shown

    repaired = cli("sync", "--verify", "--repair", "--json").json()
    assert repaired["drift"]["legacy"]["repairs"] == []
    assert peer.accounts()["carol"].attributes["sn"] == ["Changed"]  # nothing sent over it

    forgot = cli("idp", "forget-account", "legacy", "dave")
    said = " ".join(forgot.ok().stdout.split())
    assert "dave's account is carol's" in said
    assert cli("idp", "forget-account", "legacy", "nobody", "--json").exit_code == 2
    drift = cli("sync", "--verify", "--json").json()["drift"]["legacy"]
    assert drift["shared"] == []
    cli("sync").ok()  # carol's attributes go back to carol's account
    assert peer.accounts()["carol"].attributes["sn"] == ["C"]


def test_verify_leaves_the_choice_to_an_operator_when_idprov_made_it_for_both(cli, tmp_path, peer):
    merged(cli, tmp_path, peer, adopted=False)
    drift = cli("sync", "--verify", "--json").json()["drift"]["legacy"]
    [shared] = drift["shared"]
    assert shared["keeps"] is None
    assert shared["fix"] == (
        "check at the target whose account it is, then `idprov idp forget-account legacy "
        "USER...` of the others (of carol, dave)"
    )


def test_stamp_refuses_an_account_the_ledger_maps_to_another_user_too(cli, tmp_path, peer):
    merged(cli, tmp_path, peer, adopted=False)
    before = list(peer.accounts()["carol"].attributes.get("description", []))
    error = cli("idp", "stamp", "legacy", "dave", "--json").error(2)
    message = " ".join(error["message"].split())
    assert "dave's account at legacy" in message and "is also carol's" in message
    assert "Nothing was stamped" in message
    assert "`idprov idp forget-account legacy USER` of the other" in error["hint"]
    assert peer.accounts()["carol"].attributes.get("description", []) == before


def test_forgetting_both_users_of_a_merged_account_says_no_one_keeps_it(cli, tmp_path, peer):
    """`forget-account legacy carol dave` said "carol's account is dave's: idprov's
    next push of dave ... sends its own attributes to it again", though dave was
    forgotten by the same command and the ledger holds neither."""
    merged(cli, tmp_path, peer)
    shown = " ".join(cli("idp", "forget-account", "legacy", "carol", "dave").ok().stdout.split())
    assert "forgot carol, dave" in shown and "account is" not in shown, shown
