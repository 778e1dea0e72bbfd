"""The connector contract kit: what every connector must do, checked end to end.

A connector's test suite provides a :class:`ContractTarget` (how to configure idprov
for the target, how to look at what the target holds, and how to make it fail in the
ways the contract is about) and subclasses :class:`ConnectorContract`::

    from idprov.testing import ConnectorContract, ContractTarget

    class OktaTarget(ContractTarget):
        ...  # see the abstract methods

    class TestOktaContract(ConnectorContract):
        @pytest.fixture
        def contract_target(self, okta_sandbox):
            return OktaTarget(okta_sandbox)

pytest then runs every ``test_*`` method below against that target, through idprov's
own library API (:class:`~idprov.provisioning.service.IdentityService`) with a
SQLite state in ``tmp_path``. The kit uses the roles ``staff`` (the IdP's
provisioning role) and ``team`` (a second role pushed as a group), and users whose
names start with ``kit``. What it checks is what a user of idprov relies on:

- the life cycle: create, update, membership, deprovision;
- an account idprov did not create is never taken over (without ``on_conflict:
  adopt``) nor deprovisioned;
- ``deprovision: disable`` and back; an account an administrator disabled at the
  target stays disabled when idprov updates it;
- deleting a role removes the access it gave; renaming it follows (where the
  target names groups);
- a create whose reply was lost makes one account, adopted as idprov's (the
  connector's ``lookup_user`` recognises idprov's mark);
- throttling slows the run down but does not fail it;
- refused credentials fail one operation and leave the IdP's other rows pending.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from idprov.provisioning.service import IdentityService

KIT_IDP = "target"
KIT_SETTINGS = """    provisioning_roles: [staff]
    push_roles: all
    retry: {max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}
"""


class ContractTarget(ABC):
    """A connector's target as the kit sees it. Names are idprov's user and role
    names; the adapter maps them to what the target holds (an email, a psoID...)."""

    renames_groups: bool = True
    """False where a role's group is not idprov's to rename (Salesforce)."""
    deletes_accounts: bool = True
    """False where ``deprovision: delete`` deactivates instead (Salesforce)."""

    @abstractmethod
    def identity_provider(self) -> str:
        """The YAML of one identity provider named ``target`` (a list item, indented
        two spaces: ``  - name: target``), its connector and options; without
        ``provisioning_roles``, ``push_roles`` and ``retry``, which the kit adds."""

    @abstractmethod
    def account(self, user_name: str) -> dict[str, Any] | None:
        """The account of idprov user ``user_name`` at the target, with at least
        ``active`` (bool), or None if there is none."""

    @abstractmethod
    def members(self, role: str) -> set[str]:
        """idprov user names of the members of role ``role``'s group at the target
        (empty when there is no such group)."""

    @abstractmethod
    def add_foreign_account(self, user_name: str) -> None:
        """Make, at the target, an account for ``user_name`` that idprov did not make."""

    @abstractmethod
    def lose_next_create_reply(self) -> None:
        """The next user create is carried out, but its reply is lost (a 5xx, a
        garbled reply, a timeout: whatever the target can be made to do)."""

    @abstractmethod
    def throttle_next(self, count: int) -> None:
        """The next ``count`` requests are throttled (429, or the target's own way)."""

    @abstractmethod
    def disable_at_target(self, user_name: str) -> None:
        """An administrator disables ``user_name``'s account at the target."""

    def refuse_credentials(self) -> None:
        """From now on the target refuses idprov's credentials (a revoked token, a
        removed grant). Optional: without it, that check is skipped."""
        raise NotImplementedError

    def http_transport(self) -> httpx.BaseTransport | None:
        """An httpx transport for idprov's requests to the target (None: the network).
        Tests of a target that cannot fail on demand can wrap the real transport in
        one that injects faults, as idprov's own tests of scim2-server do."""
        return None


class ConnectorContract:
    """The contract's tests; subclass it and provide a ``contract_target`` fixture."""

    @pytest.fixture
    def contract_target(self) -> ContractTarget:
        raise NotImplementedError("provide a contract_target fixture returning a ContractTarget")

    def open_service(self, target: ContractTarget, tmp_path: Path, extra: str = "") -> Any:
        """An :class:`IdentityService` provisioning to the target (``extra``: more IdP
        settings, indented four spaces)."""
        from idprov.config import load_text
        from idprov.provisioning.service import IdentityService

        text = f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
{target.identity_provider().rstrip()}
{KIT_SETTINGS}{extra}
applications:
  - name: resident
    identity_providers: [{KIT_IDP}]
"""
        return IdentityService(
            load_text(text, "contract.yaml"),
            sleep=lambda s: None,
            http_transport=target.http_transport(),
        )

    @pytest.fixture
    def service(self, contract_target: ContractTarget, tmp_path: Path) -> Iterator[Any]:
        with self.open_service(contract_target, tmp_path) as svc:
            svc.add_role("staff")
            svc.add_role("team")
            yield svc

    # ---- life cycle
    def test_life_cycle(self, contract_target: ContractTarget, service: IdentityService) -> None:
        target = contract_target
        assert_ok(service.add_user("kit-ann", claims("kit-ann"), roles=["staff", "team"]))
        account = target.account("kit-ann")
        assert account is not None and account["active"] is True, account
        assert target.members("team") == {"kit-ann"}
        assert_ok(service.update_user("kit-ann", {"title": "Lead"}))
        assert_ok(service.unassign("team", ["kit-ann"]))
        assert target.members("team") == set()
        assert_ok(service.unassign("staff", ["kit-ann"]))
        gone = target.account("kit-ann")
        if target.deletes_accounts:
            assert gone is None, gone
        else:
            assert gone is not None and gone["active"] is False, gone

    def test_an_account_idprov_did_not_create_is_left_alone(
        self, contract_target: ContractTarget, service: IdentityService
    ) -> None:
        contract_target.add_foreign_account("kit-foe")
        result = service.add_user("kit-foe", claims("kit-foe"), roles=["staff"])
        assert result.outbound is not None and not result.outbound.ok
        assert_ok(service.unassign("staff", ["kit-foe"]), allow_failed=True)
        foe = contract_target.account("kit-foe")
        assert foe is not None and foe["active"] is True, foe

    def test_deprovision_disable_and_back(
        self, contract_target: ContractTarget, tmp_path: Path
    ) -> None:
        with self.open_service(contract_target, tmp_path, "    deprovision: disable\n") as svc:
            svc.add_role("staff")
            assert_ok(svc.add_user("kit-dee", claims("kit-dee"), roles=["staff"]))
            assert_ok(svc.unassign("staff", ["kit-dee"]))
            disabled = contract_target.account("kit-dee")
            assert disabled is not None and disabled["active"] is False, disabled
            assert_ok(svc.assign("staff", ["kit-dee"]))
        back = contract_target.account("kit-dee")
        assert back is not None and back["active"] is True, back

    def test_an_account_an_administrator_disabled_stays_disabled(
        self, contract_target: ContractTarget, service: IdentityService
    ) -> None:
        assert_ok(
            service.add_user("kit-eve", {**claims("kit-eve"), "title": "Clerk"}, roles=["staff"])
        )
        contract_target.disable_at_target("kit-eve")
        assert_ok(service.update_user("kit-eve", {"title": "Manager"}))
        eve = contract_target.account("kit-eve")
        assert eve is not None and eve["active"] is False, eve

    # ---- roles
    def test_deleting_a_role_removes_the_access_it_gave(
        self, contract_target: ContractTarget, service: IdentityService
    ) -> None:
        assert_ok(service.add_user("kit-bob", claims("kit-bob"), roles=["staff", "team"]))
        assert contract_target.members("team") == {"kit-bob"}
        assert_ok(service.delete_role("team"))
        assert contract_target.members("team") == set()
        assert contract_target.account("kit-bob") is not None

    def test_renaming_a_role_keeps_its_members(
        self, contract_target: ContractTarget, service: IdentityService
    ) -> None:
        """The group follows the new name; where groups are not idprov's to rename, the
        role's group stays as it is, members and all."""
        assert_ok(service.add_user("kit-cal", claims("kit-cal"), roles=["staff", "team"]))
        assert_ok(service.rename_role("team", "crew"))
        group = "crew" if contract_target.renames_groups else "team"
        assert contract_target.members(group) == {"kit-cal"}

    # ---- faults
    def test_a_create_whose_reply_was_lost_makes_one_account(
        self, contract_target: ContractTarget, service: IdentityService
    ) -> None:
        contract_target.lose_next_create_reply()
        assert_ok(service.add_user("kit-lou", claims("kit-lou"), roles=["staff"]))
        user = service.get_user("kit-lou")
        entry = service.state.ledger.get(KIT_IDP, "user", user.id)
        assert entry is not None and entry.created_by_idprov, "adopted as idprov's, by its mark"
        assert contract_target.account("kit-lou") is not None

    def test_throttling_slows_down_but_does_not_fail(
        self, contract_target: ContractTarget, service: IdentityService
    ) -> None:
        contract_target.throttle_next(2)
        assert_ok(service.add_user("kit-tim", claims("kit-tim"), roles=["staff"]))
        assert contract_target.account("kit-tim") is not None

    def test_refused_credentials_stop_the_batch_after_the_first(
        self, contract_target: ContractTarget, service: IdentityService
    ) -> None:
        try:
            contract_target.refuse_credentials()
        except NotImplementedError:
            pytest.skip("the target adapter cannot refuse credentials on demand")
        for name in ("kit-r1", "kit-r2", "kit-r3"):
            service.add_user(name, claims(name), roles=["staff"])
        report = service.retry_outbox([KIT_IDP])
        target = report.idps[KIT_IDP]
        failed = [op for op in target.operations if op.outcome == "failed"]
        assert len(failed) == 1, [op.error for op in failed]
        assert "credentials refused" in (failed[0].error or ""), failed[0].error
        assert target.to_dict()["pending"] == target.total - 1
        assert len(service.outbox_rows([KIT_IDP])) == target.total


def claims(user_name: str) -> dict[str, str]:
    """The claims the kit gives its users (names: targets often require them)."""
    return {"given_name": "Kit", "family_name": user_name, "email": f"{user_name}@example.com"}


def assert_ok(result: Any, allow_failed: bool = False) -> None:
    """The change's outbound report has no failure (unless ``allow_failed``)."""
    outbound = result.outbound
    if outbound is None or allow_failed:
        return
    failures = [
        f"{op.kind} {op.label}: {op.operation}: {op.error}"
        for report in outbound.idps.values()
        for op in report.operations
        if op.outcome == "failed"
    ]
    assert not failures, failures
