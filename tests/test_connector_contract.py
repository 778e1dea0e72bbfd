"""The connector contract kit (idprov.testing) run against the five built-in
connectors, each on its strictest test target: the real scim2-server (faults through
an injecting transport), and the loopback SCIM 1.1, SPML, Google and Salesforce peers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from idprov.testing import ConnectorContract, ContractTarget
from idprov.testing.contract import KitRun
from tests.peers.google import GoogleWorkspace
from tests.peers.salesforce import SalesforceOrg
from tests.peers.scim2 import Scim2Peer
from tests.peers.scim11 import Scim11Server
from tests.peers.spml import Pso, SpmlServer


# ---------------------------------------------------------------- SCIM 2.0 (scim2-server)
class InjectingTransport(httpx.BaseTransport):
    """The network, with faults injected for the next matching requests: a lost
    reply (the request is carried out, a 500 comes back) or throttling (a 429)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.faults: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.refuse = False
        """Send every request with a token the server does not know."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse:
            request.headers["Authorization"] = "Bearer revoked"
        with self.lock:
            fault = next(
                (
                    f
                    for f in self.faults
                    if f[0] in ("*", request.method) and f[1] in request.url.path
                ),
                None,
            )
            if fault is not None:
                self.faults.remove(fault)
        if fault is not None and fault[2] == "throttle":
            return httpx.Response(429, json={"detail": "slow down", "status": "429"})
        response = self.inner.handle_request(request)
        if fault is None:
            return response
        response.read()
        response.close()
        return httpx.Response(500, json={"detail": "reply lost", "status": "500"})


class Scim2Target(ContractTarget):
    def __init__(self, peer: Scim2Peer) -> None:
        self.peer = peer
        self.transport = InjectingTransport()

    def identity_provider(self) -> str:
        return f"""  - name: target
    connector: scim2
    options: {{base_url: "{self.peer.base_url}", auth: bearer, token: env:KIT_SCIM_TOKEN}}
"""

    def http_transport(self) -> httpx.BaseTransport:
        return self.transport

    def _user(self, user_name: str) -> dict[str, Any] | None:
        return next((u for u in self.peer.users() if u["userName"] == user_name), None)

    def account(self, user_name: str) -> dict[str, Any] | None:
        user = self._user(user_name)
        return None if user is None else {**user, "active": user.get("active", True)}

    def family_name(self, user_name: str) -> str | None:
        return ((self._user(user_name) or {}).get("name") or {}).get("familyName")

    def members(self, role: str) -> set[str]:
        names = {u["id"]: u["userName"] for u in self.peer.users()}
        group = next((g for g in self.peer.groups() if g["displayName"] == role), None)
        found = (group or {}).get("members") or []
        return {names[m["value"]] for m in found if m["value"] in names}

    def add_foreign_account(self, user_name: str) -> None:
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name}
        self.peer.client.post("/Users", json=body).raise_for_status()

    def lose_next_create_reply(self) -> None:
        self.transport.faults.append(("POST", "/Users", "lost"))

    def refuse_credentials(self) -> None:
        self.transport.refuse = True

    def throttle_next(self, count: int) -> None:
        self.transport.faults += [("*", "/", "throttle")] * count

    def disable_at_target(self, user_name: str) -> None:
        user = self._user(user_name)
        assert user is not None
        patch = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": False}}],
        }
        self.peer.client.patch(f"/Users/{user['id']}", json=patch).raise_for_status()


class TestScim2Contract(ConnectorContract):
    @pytest.fixture
    def contract_target(self, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("KIT_SCIM_TOKEN", scim2_server.token)
        return Scim2Target(scim2_server)


# ---------------------------------------------------------------- SCIM 1.1
class Scim11Target(ContractTarget):
    def __init__(self, peer: Scim11Server) -> None:
        self.peer = peer

    def identity_provider(self) -> str:
        return f"""  - name: target
    connector: scim11
    options: {{base_url: "{self.peer.base_url}", auth: bearer, token: env:KIT_SCIM11_TOKEN}}
"""

    def account(self, user_name: str) -> dict[str, Any] | None:
        user = next((u for u in self.peer.users() if u["userName"] == user_name), None)
        return None if user is None else {**user, "active": user.get("active", True)}

    def family_name(self, user_name: str) -> str | None:
        return ((self.account(user_name) or {}).get("name") or {}).get("familyName")

    def members(self, role: str) -> set[str]:
        names = {u["id"]: u["userName"] for u in self.peer.users()}
        group = next((g for g in self.peer.groups() if g["displayName"] == role), None)
        return {
            names[m["value"]] for m in (group or {}).get("members") or [] if m["value"] in names
        }

    def add_foreign_account(self, user_name: str) -> None:
        self.peer.store.create(
            "Users", {"schemas": ["urn:scim:schemas:core:1.0"], "userName": user_name}
        )

    def lose_next_create_reply(self) -> None:
        self.peer.fail_next(500, method="POST", after_apply=True)

    def refuse_credentials(self) -> None:
        self.peer.token = "revoked"

    def throttle_next(self, count: int) -> None:
        self.peer.fail_next(429, count=count)

    def disable_at_target(self, user_name: str) -> None:
        with self.peer.store.lock:
            for user in self.peer.store.resources["Users"].values():
                if user["userName"] == user_name:
                    user["active"] = False


class TestScim11Contract(ConnectorContract):
    @pytest.fixture
    def contract_target(self, scim11_server: Scim11Server, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("KIT_SCIM11_TOKEN", scim11_server.token or "")
        return Scim11Target(scim11_server)


# ---------------------------------------------------------------- SPML 2.0
class SpmlTarget(ContractTarget):
    def __init__(self, peer: SpmlServer) -> None:
        self.peer = peer

    def identity_provider(self) -> str:
        return f"""  - name: target
    connector: spml
    options:
      base_url: {self.peer.url}
      auth: bearer
      token: env:KIT_SPML_TOKEN
      mark_attribute: description
      group_mark_attribute: description
"""

    def account(self, user_name: str) -> dict[str, Any] | None:
        pso = self.peer.accounts().get(user_name)
        return None if pso is None else {"active": not pso.suspended, "pso": pso}

    def family_name(self, user_name: str) -> str | None:
        pso = self.peer.accounts().get(user_name)
        return None if pso is None else next(iter(pso.get("sn")), None)

    def members(self, role: str) -> set[str]:
        group = self.peer.groups().get(role)
        names = {p.pso_id: uid for uid, p in self.peer.accounts().items()}
        return {names[m] for m in (group.get("member") if group else []) if m in names}

    def add_foreign_account(self, user_name: str) -> None:
        attributes = {
            "objectclass": ["inetOrgPerson"],
            "uid": [user_name],
            "cn": ["X"],
            "sn": ["Y"],
        }
        self.peer.store[f"uid={user_name}"] = Pso(f"uid={user_name}", attributes)

    def lose_next_create_reply(self) -> None:
        self.peer.http_next(500, operation="addRequest", apply=True)

    def refuse_credentials(self) -> None:
        self.peer.token = "revoked"

    def throttle_next(self, count: int) -> None:
        self.peer.http_next(429, count=count)

    def disable_at_target(self, user_name: str) -> None:
        self.peer.accounts()[user_name].suspended = True


class TestSpmlContract(ConnectorContract):
    @pytest.fixture
    def contract_target(self, spml_server: SpmlServer, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("KIT_SPML_TOKEN", spml_server.token or "")
        return SpmlTarget(spml_server)


# ---------------------------------------------------------------- Google Workspace
class GoogleTarget(ContractTarget):
    def __init__(self, fake: GoogleWorkspace, key: Path) -> None:
        self.fake = fake
        self.key = key

    def identity_provider(self) -> str:
        return f"""  - name: target
    connector: google
    options:
      base_url: {self.fake.url}
      credentials: file:{self.key}
      subject: {self.fake.admin}
"""

    def account(self, user_name: str) -> dict[str, Any] | None:
        """The account whose primary email is the user's (Google keeps a renamed
        account's old address as an alias: that is not an account of that name)."""
        email = f"{user_name}@example.com"
        user = self.fake.user(email)
        if user is None or user["primaryEmail"] != email:
            return None
        return {**user, "active": not user["suspended"]}

    def family_name(self, user_name: str) -> str | None:
        return ((self.account(user_name) or {}).get("name") or {}).get("familyName")

    def members(self, role: str) -> set[str]:
        if self.fake.group(f"{role}@example.com") is None:
            return set()
        return {e.partition("@")[0] for e in self.fake.member_emails(f"{role}@example.com")}

    def add_foreign_account(self, user_name: str) -> None:
        self.fake.insert_user(
            {
                "primaryEmail": f"{user_name}@example.com",
                "name": {"givenName": "F", "familyName": "Oe"},
                "password": "x" * 12,
            }
        )

    def lose_next_create_reply(self) -> None:
        self.fake.fail_next(503, method="POST", path="/users", after_apply=True)

    def refuse_credentials(self) -> None:
        self.fake.delegated_scopes = set()  # delegation removed in the Admin console
        self.fake.revoke_tokens()

    def throttle_next(self, count: int) -> None:
        self.fake.fail_next(403, "rateLimitExceeded", count=count)

    def disable_at_target(self, user_name: str) -> None:
        user = self.fake.user(f"{user_name}@example.com")
        assert user is not None
        user["suspended"] = True


class TestGoogleContract(ConnectorContract):
    @pytest.fixture
    def contract_target(self, google_workspace: GoogleWorkspace, tmp_path: Path):
        key = tmp_path / "google-key.json"
        key.write_text(google_workspace.key_json(), encoding="utf-8")
        return GoogleTarget(google_workspace, key)


# ---------------------------------------------------------------- Salesforce
class SalesforceTarget(ContractTarget):
    renames_groups = False  # a role maps to a permission set or group idprov does not own
    deletes_accounts = False  # Salesforce deactivates users

    def __init__(self, org: SalesforceOrg) -> None:
        self.org = org

    def identity_provider(self) -> str:
        return f"""  - name: target
    connector: salesforce
    options:
      base_url: {self.org.login.url}
      domain: example.com
      profile: Standard User
      flow: jwt_bearer
      client_id: {self.org.consumer_key}
      private_key: env:KIT_SF_KEY
      username: {self.org.integration_username}
      roles:
        staff: {{type: permission_set, name: Sales_Ops}}
        team: {{type: group, name: Engineering}}
"""

    def account(self, user_name: str) -> dict[str, Any] | None:
        user = self.org.users().get(f"{user_name}@example.com")
        return None if user is None else {**user, "active": user["IsActive"]}

    def family_name(self, user_name: str) -> str | None:
        return (self.account(user_name) or {}).get("LastName")

    def members(self, role: str) -> set[str]:
        found = self.org.group_members("Engineering") if role == "team" else set()
        return {e.partition("@")[0] for e in found}

    def add_foreign_account(self, user_name: str) -> None:
        self.org._insert(
            "User",
            {
                "Username": f"{user_name}@example.com",
                "LastName": "Foe",
                "Email": "foe@example.com",
                "Alias": "foe",
                "ProfileId": self.org.profile_id("Standard User"),
                "IsActive": True,
            },
        )

    def lose_next_create_reply(self) -> None:
        self.org.fail_next(
            500, "UNKNOWN_EXCEPTION", method="POST", path="/sobjects/User", after_apply=True
        )

    def throttle_next(self, count: int) -> None:
        self.org.fail_next(
            403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", count=count
        )

    def refuse_credentials(self) -> None:
        self.org.preauthorized = False  # the connected app's policy changed
        self.org.revoke_tokens()

    def disable_at_target(self, user_name: str) -> None:
        self.org.users()[f"{user_name}@example.com"]["IsActive"] = False


class TestSalesforceContract(ConnectorContract):
    @pytest.fixture
    def contract_target(self, salesforce_org: SalesforceOrg, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("KIT_SF_KEY", salesforce_org.private_key_pem())
        return SalesforceTarget(salesforce_org)


class UnmarkedSpmlTarget(SpmlTarget):
    """SPML without idprov's mark: a lost reply cannot be told from a foreign account."""

    def identity_provider(self) -> str:
        return super().identity_provider().replace("      mark_attribute: description\n", "")


def test_the_kit_fails_a_connector_that_cannot_recognise_its_own_accounts(
    spml_server: SpmlServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("KIT_SPML_TOKEN", spml_server.token or "")
    kit, target = ConnectorContract(), UnmarkedSpmlTarget(spml_server)
    with kit.open_service(target, tmp_path) as svc:
        svc.add_role("staff")
        with pytest.raises(AssertionError, match="nothing at the target proves it"):
            kit.test_a_create_whose_reply_was_lost_makes_one_account(target, svc, KitRun())
