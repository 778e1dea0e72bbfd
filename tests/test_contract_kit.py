"""The contract kit catches the connector bugs a plugin author makes: each test runs
one of the kit's checks against a faulty variant of the SCIM 2.0 connector (installed
as a plugin of its own) on the real scim2-server, and expects it to fail, saying why.
And the kit leaves the target as it found it, so it can run against a long-lived one."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from idprov.connectors import registry
from idprov.connectors.base import Account
from idprov.connectors.scim2 import Scim2Connector
from idprov.errors import ConfigError
from idprov.testing import ConnectorContract
from idprov.testing.contract import KitRun
from tests.peers.scim2 import Scim2Peer
from tests.plugins import entry_points
from tests.test_connector_contract import Scim2Target


class NoBoolScim2(Scim2Connector):
    """Follows the old README table: ``disable_user`` returns nothing."""

    name = "scim2-nobool"

    def disable_user(self, remote_id: str, account: Account) -> bool | None:
        super().disable_user(remote_id, account)
        return None


class NoRenameScim2(Scim2Connector):
    """Drops every user rename."""

    name = "scim2-norename"

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        return None


class NoUpdateScim2(Scim2Connector):
    """Sends an update only when told to send everything (``previous`` None)."""

    name = "scim2-noupdate"

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        if previous is None:
            super().update_user(remote_id, account, previous)


class RecreatingScim2(Scim2Connector):
    """Renames by deleting the account and creating another."""

    name = "scim2-recreating"

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        self.delete_user(remote_id)
        self.create_user(account)


MUTANTS = {cls.name: cls for cls in (NoBoolScim2, NoRenameScim2, NoUpdateScim2, RecreatingScim2)}


@pytest.fixture
def mutants(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The faulty connectors, installed as a plugin package's entry points are."""
    eps = [
        importlib.metadata.EntryPoint(name, f"{__name__}:{cls.__name__}", registry.GROUP)
        for name, cls in MUTANTS.items()
    ]
    with entry_points(monkeypatch, eps):
        yield


class MutantTarget(Scim2Target):
    def __init__(self, peer: Scim2Peer, connector: str) -> None:
        super().__init__(peer)
        self.connector = connector

    def identity_provider(self) -> str:
        return (
            super().identity_provider().replace("connector: scim2", f"connector: {self.connector}")
        )


@pytest.fixture
def target_of(scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch, mutants: None):
    monkeypatch.setenv("KIT_SCIM_TOKEN", scim2_server.token)
    return lambda connector: MutantTarget(scim2_server, connector)


def run_check(check: str, target: Scim2Target, tmp_path: Path, own_service: bool = False) -> None:
    """Run one of the kit's checks as pytest would (fixtures, then the clean-up)."""
    kit = ConnectorContract()
    test = getattr(kit, check)
    if own_service:
        test(target, tmp_path, KitRun())
        return
    with kit.open_service(target, tmp_path) as svc:
        svc.add_role("staff")
        svc.add_role("team")
        try:
            test(target, svc, KitRun())
        finally:
            kit.clean_up(svc)


def test_the_kit_fails_a_connector_whose_disable_does_not_say_already_disabled(target_of, tmp_path):
    """H1: an account an administrator disabled, deprovisioned and back in scope, is
    enabled again by idprov when ``disable_user`` returns None."""
    check = "test_an_account_an_administrator_disabled_is_not_enabled_when_its_user_comes_back"
    with pytest.raises(AssertionError, match="must read the account first and return False"):
        run_check(check, target_of("scim2-nobool"), tmp_path, own_service=True)
    run_check(check, target_of("scim2"), tmp_path / "ok", own_service=True)


def test_the_kit_fails_a_connector_that_drops_updates(target_of, tmp_path):
    with pytest.raises(AssertionError, match="an update must reach the target"):
        run_check("test_life_cycle", target_of("scim2-noupdate"), tmp_path)


def test_the_kit_fails_a_connector_that_drops_renames(target_of, tmp_path):
    with pytest.raises(AssertionError, match="no account is named kit-ned-.* after the rename"):
        run_check(
            "test_renaming_a_user_renames_the_account_in_place",
            target_of("scim2-norename"),
            tmp_path,
        )


def test_the_kit_fails_a_connector_that_renames_by_delete_and_create(target_of, tmp_path):
    with pytest.raises(AssertionError, match="must be the same remote object"):
        run_check(
            "test_renaming_a_user_renames_the_account_in_place",
            target_of("scim2-recreating"),
            tmp_path,
        )


def test_the_kit_leaves_the_target_as_it_found_it(scim2_server, monkeypatch, tmp_path):
    """M2: every test's names are its own, and what a test made is deleted after it
    (the foreign account, the renamed group and disabled accounts too), so the kit can
    run again and again against one long-lived target."""
    monkeypatch.setenv("KIT_SCIM_TOKEN", scim2_server.token)
    target = Scim2Target(scim2_server)
    assert KitRun().user("ann") != KitRun().user("ann")
    for round in ("first", "second"):  # the second run meets nothing of the first's
        for check in (
            "test_life_cycle",
            "test_an_account_idprov_did_not_create_is_left_alone",
            "test_renaming_a_role_keeps_its_members",
            "test_renaming_a_user_renames_the_account_in_place",
        ):
            run_check(check, target, tmp_path / round / check)
        run_check("test_deprovision_disable_and_back", target, tmp_path / round, True)
        assert (scim2_server.users(), scim2_server.groups()) == ([], [])


class BadlyIndentedTarget(Scim2Target):
    def identity_provider(self) -> str:
        return "- name: target\n  connector: scim2\n"


def test_a_bad_identity_provider_yaml_is_shown(scim2_server, tmp_path):
    """L6: the kit's configuration is not a file one can open; its error shows it,
    with line numbers, and says how the adapter's YAML is indented."""
    with pytest.raises(ConfigError) as caught:
        ConnectorContract().open_service(BadlyIndentedTarget(scim2_server), tmp_path)
    message, hint = caught.value.message, caught.value.hint or ""
    assert "made from BadlyIndentedTarget.identity_provider()" in message
    assert "   4 | - name: target" in message
    assert "indented two spaces (`  - name: target`)" in hint
