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
SQLite state in ``tmp_path``. It needs pytest (``pip install pytest``), which idprov
itself does not.

The kit uses the roles ``staff`` (the IdP's provisioning role) and ``team`` (a second
role pushed as a group; ``crew`` once renamed), and users named ``kit-<word>-<run>``,
where ``<run>`` is new for every test, so that a long-lived target (a sandbox
organisation) can be used: after each test the kit deletes, through the connector,
the accounts and groups that test made (see :meth:`ConnectorContract.clean_up`). The
role names are fixed: two runs at once against one target collide, and a run that
was killed may leave ``staff``/``team``/``crew`` groups to delete by hand.

What it checks is what a user of idprov relies on:

- the life cycle: create, update (read back at the target), membership, deprovision;
- a user rename renames the account in place (the same remote object, the new name);
- an account idprov did not create is never taken over (without ``on_conflict:
  adopt``) nor deprovisioned;
- ``deprovision: disable`` and back; an account an administrator disabled at the
  target stays disabled when idprov updates it, and when idprov deprovisions it and
  the user comes back (``disable_user`` returns False for an account that was
  disabled already);
- deleting a role removes the access it gave; renaming it follows (where the
  target names groups);
- a create whose reply was lost makes one account, adopted as idprov's (the
  connector's ``lookup_user`` recognises idprov's mark);
- throttling slows the run down but does not fail it;
- refused credentials fail one operation and leave the IdP's other rows pending.
"""

from __future__ import annotations

import secrets
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
    def family_name(self, user_name: str) -> str | None:
        """The family name the target holds on ``user_name``'s account (where the
        IdP's mapping puts the ``family_name`` claim: SCIM ``name.familyName``, an
        LDAP-like ``sn``...), or None. The kit changes it and reads it back."""

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


class KitRun:
    """One test's user names, new for every test (``kit-ann-3f9a1c``), so that tests
    against a long-lived target never meet an earlier test's accounts."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(3)

    def user(self, word: str) -> str:
        return f"kit-{word}-{self.run}"


class ConnectorContract:
    """The contract's tests; subclass it and provide a ``contract_target`` fixture."""

    @pytest.fixture
    def contract_target(self) -> ContractTarget:
        raise NotImplementedError("provide a contract_target fixture returning a ContractTarget")

    @pytest.fixture
    def kit(self) -> KitRun:
        return KitRun()

    def configuration(self, target: ContractTarget, tmp_path: Path, extra: str = "") -> str:
        """The YAML the kit gives idprov: the adapter's identity provider, the kit's
        settings (and ``extra``, more IdP settings indented four spaces)."""
        return f"""version: 1
data_dir: {tmp_path / "data"}
identity_providers:
{target.identity_provider().rstrip()}
{KIT_SETTINGS}{extra}
applications:
  - name: resident
    identity_providers: [{KIT_IDP}]
"""

    def open_service(self, target: ContractTarget, tmp_path: Path, extra: str = "") -> Any:
        """An :class:`IdentityService` provisioning to the target (``extra``: more IdP
        settings, indented four spaces). A configuration error shows the YAML."""
        from idprov.config import load_text
        from idprov.errors import ConfigError
        from idprov.provisioning.service import IdentityService

        text = self.configuration(target, tmp_path, extra)
        source = f"contract.yaml (made from {type(target).__name__}.identity_provider())"
        try:
            config = load_text(text, source)
            return IdentityService(
                config, sleep=lambda s: None, http_transport=target.http_transport()
            )
        except ConfigError as exc:
            numbered = "\n".join(f"{n:4} | {line}" for n, line in enumerate(text.splitlines(), 1))
            raise ConfigError(
                f"{exc.message}\n{source}, as the kit made it:\n{numbered}",
                hint=(exc.hint + "; " if exc.hint else "")
                + "identity_provider() returns one list item indented two spaces "
                "(`  - name: target`), its keys indented four (`    connector: ...`)",
            ) from exc

    @pytest.fixture
    def service(self, contract_target: ContractTarget, tmp_path: Path) -> Iterator[IdentityService]:
        with self.open_service(contract_target, tmp_path) as svc:
            try:
                svc.add_role("staff")
                svc.add_role("team")
                yield svc
            finally:
                self.clean_up(svc)

    def clean_up(self, service: IdentityService) -> None:
        """Delete at the target, through the connector, every group and account this
        test's service made or met there (foreign ones the kit made included), so that
        the next test finds the target as it was. Stops quietly at refused
        credentials (the test that refuses them cannot clean up after itself)."""
        from idprov.connectors.base import CredentialsRefused

        try:
            self._delete_at_target(service)
        except CredentialsRefused:
            pass

    def _delete_at_target(self, service: IdentityService) -> None:
        from idprov.model import UserQuery
        from idprov.provisioning.decide import account_for

        connector = service.connector(KIT_IDP)
        ledger = service.state.ledger
        for entry in ledger.for_idp(KIT_IDP, "role").values():
            if entry.remote_id and entry.created_by_idprov:
                connector.delete_group(entry.remote_id)
        remote_ids = {e.remote_id for e in ledger.for_idp(KIT_IDP, "user").values()}
        idp = service.idp(KIT_IDP)
        for user in service.list_users(UserQuery(limit=1000)).items:
            match = connector.lookup_user(account_for(user, idp, type(connector)))
            remote_ids.add(match.remote_id if match else None)
        for remote_id in sorted(r for r in remote_ids if r):
            connector.delete_user(remote_id)

    def remote_id(self, service: IdentityService, user_name: str) -> str | None:
        """The remote id of ``user_name``'s account as the connector finds it now
        (``lookup_user``), not as idprov's ledger remembers it."""
        from idprov.provisioning.decide import account_for

        connector = service.connector(KIT_IDP)
        account = account_for(service.get_user(user_name), service.idp(KIT_IDP), type(connector))
        match = connector.lookup_user(account)
        return None if match is None else match.remote_id

    # ---- life cycle
    def test_life_cycle(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        target, ann = contract_target, kit.user("ann")
        assert_ok(service.add_user(ann, claims(ann), roles=["staff", "team"]))
        account = target.account(ann)
        assert account is not None and account["active"] is True, account
        assert target.members("team") == {ann}
        assert_ok(service.update_user(ann, {"family_name": "Changed"}))
        assert target.family_name(ann) == "Changed", (
            "an update must reach the target: update_user(remote_id, account, previous) "
            "sends what differs from previous"
        )
        assert_ok(service.unassign("team", [ann]))
        assert target.members("team") == set()
        assert_ok(service.unassign("staff", [ann]))
        gone = target.account(ann)
        if target.deletes_accounts:
            assert gone is None, gone
        else:
            assert gone is not None and gone["active"] is False, gone

    def test_renaming_a_user_renames_the_account_in_place(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        target, old, new = contract_target, kit.user("ren"), kit.user("ned")
        assert_ok(service.add_user(old, claims(old), roles=["staff", "team"]))
        before = self.remote_id(service, old)
        assert_ok(service.rename_user(old, new))
        assert target.account(new) is not None, (
            f"no account is named {new} at the target after the rename: rename_user must "
            "give the remote account its new user name"
        )
        assert target.account(old) is None, f"an account is still named {old}"
        assert self.remote_id(service, new) == before, (
            "the renamed account must be the same remote object (renamed in place, never "
            "deleted and created again: that loses its data and history at the target)"
        )
        assert target.members("team") == {new}
        assert target.family_name(new) == old  # the kit's users are named after themselves

    def test_an_account_idprov_did_not_create_is_left_alone(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        foe = kit.user("foe")
        contract_target.add_foreign_account(foe)
        result = service.add_user(foe, claims(foe), roles=["staff"])
        assert result.outbound is not None and not result.outbound.ok
        assert_ok(service.unassign("staff", [foe]), allow_failed=True)
        found = contract_target.account(foe)
        assert found is not None and found["active"] is True, found

    def test_deprovision_disable_and_back(
        self, contract_target: ContractTarget, tmp_path: Path, kit: KitRun
    ) -> None:
        dee = kit.user("dee")
        with self.open_service(contract_target, tmp_path, "    deprovision: disable\n") as svc:
            try:
                svc.add_role("staff")
                assert_ok(svc.add_user(dee, claims(dee), roles=["staff"]))
                assert_ok(svc.unassign("staff", [dee]))
                disabled = contract_target.account(dee)
                assert disabled is not None and disabled["active"] is False, disabled
                assert_ok(svc.assign("staff", [dee]))
                back = contract_target.account(dee)
                assert back is not None and back["active"] is True, back
            finally:
                self.clean_up(svc)

    def test_an_account_an_administrator_disabled_stays_disabled(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        eve = kit.user("eve")
        assert_ok(service.add_user(eve, claims(eve), roles=["staff"]))
        contract_target.disable_at_target(eve)
        assert_ok(service.update_user(eve, {"family_name": "Changed"}))
        found = contract_target.account(eve)
        assert found is not None and found["active"] is False, found

    def test_an_account_an_administrator_disabled_is_not_enabled_when_its_user_comes_back(
        self, contract_target: ContractTarget, tmp_path: Path, kit: KitRun
    ) -> None:
        """Deprovisioned (``deprovision: disable``) after an administrator disabled it,
        then back in scope: idprov enables only what it disabled itself."""
        pat = kit.user("pat")
        with self.open_service(contract_target, tmp_path, "    deprovision: disable\n") as svc:
            try:
                svc.add_role("staff")
                assert_ok(svc.add_user(pat, claims(pat), roles=["staff"]))
                contract_target.disable_at_target(pat)
                assert_ok(svc.unassign("staff", [pat]))
                # back in scope: its groups may refuse an inactive account (Salesforce)
                assert_ok(svc.assign("staff", [pat]), allow_failed=True)
                found = contract_target.account(pat)
                assert found is not None and found["active"] is False, (
                    "idprov enabled an account an administrator had disabled: disable_user "
                    "must read the account first and return False when the target had it "
                    "disabled already (None or True tells idprov that it disabled it)"
                )
            finally:
                self.clean_up(svc)

    # ---- roles
    def test_deleting_a_role_removes_the_access_it_gave(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        bob = kit.user("bob")
        assert_ok(service.add_user(bob, claims(bob), roles=["staff", "team"]))
        assert contract_target.members("team") == {bob}
        assert_ok(service.delete_role("team"))
        assert contract_target.members("team") == set()
        assert contract_target.account(bob) is not None

    def test_renaming_a_role_keeps_its_members(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        """The group follows the new name; where groups are not idprov's to rename, the
        role's group stays as it is, members and all."""
        cal = kit.user("cal")
        assert_ok(service.add_user(cal, claims(cal), roles=["staff", "team"]))
        assert_ok(service.rename_role("team", "crew"))
        group = "crew" if contract_target.renames_groups else "team"
        assert contract_target.members(group) == {cal}

    # ---- faults
    def test_a_create_whose_reply_was_lost_makes_one_account(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        lou = kit.user("lou")
        contract_target.lose_next_create_reply()
        assert_ok(service.add_user(lou, claims(lou), roles=["staff"]))
        user = service.get_user(lou)
        entry = service.state.ledger.get(KIT_IDP, "user", user.id)
        assert entry is not None and entry.created_by_idprov, "adopted as idprov's, by its mark"
        assert contract_target.account(lou) is not None

    def test_throttling_slows_down_but_does_not_fail(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        tim = kit.user("tim")
        contract_target.throttle_next(2)
        assert_ok(service.add_user(tim, claims(tim), roles=["staff"]))
        assert contract_target.account(tim) is not None

    def test_refused_credentials_stop_the_batch_after_the_first(
        self, contract_target: ContractTarget, service: IdentityService, kit: KitRun
    ) -> None:
        try:
            contract_target.refuse_credentials()
        except NotImplementedError:
            pytest.skip("the target adapter cannot refuse credentials on demand")
        for word in ("r1", "r2", "r3"):
            name = kit.user(word)
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
