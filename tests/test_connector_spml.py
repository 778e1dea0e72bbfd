"""The SPML 2.0 connector against the strict SPML provider under tests/peers, and its wire
format against the request and response samples under tests/samples/spml."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from idprov.config.models import IdentityProviderConfig
from idprov.connectors.base import Account, RemoteConflict, TargetError
from idprov.connectors.spml import SpmlConnector
from idprov.connectors.spml_wire import RemotePending, dn_value
from idprov.errors import ConfigError
from idprov.provisioning.connect import open_connector
from idprov.provisioning.service import IdentityService
from idprov.provisioning.state import AuditQuery
from tests.outbound_helpers import make_service
from tests.peers.spml import DSML, PASSWORD, SEARCH, SPML, SUSPEND, Pso, SpmlServer

SAMPLES = Path(__file__).parent / "samples" / "spml"
ALICE = {"email": "alice@example.com", "given_name": "Alice", "family_name": "Liddell"}


def spml_idp(server: SpmlServer, options: str = "", extra: str = "", timeout: float = 2) -> str:
    """An IdP ``legacy`` provisioning users with the role ``staff`` to ``server``."""
    return f"""
  - name: legacy
    connector: spml
    options:
      base_url: {server.url}
      auth: bearer
      token: env:SPML_TOKEN
      timeout: {timeout}
{options}    provisioning_roles: [staff]
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}"""


@pytest.fixture()
def peer(spml_server: SpmlServer, monkeypatch: pytest.MonkeyPatch) -> SpmlServer:
    monkeypatch.setenv("SPML_TOKEN", spml_server.token or "")
    return spml_server


def service(
    tmp_path: Path, server: SpmlServer, options: str = "", extra: str = "", timeout: float = 2
) -> IdentityService:
    idp = spml_idp(server, options, extra, timeout)
    return make_service(tmp_path, idp, ["legacy"], sleep=lambda s: None)


def user_op(result: Any, kind: str = "user") -> Any:
    return next(o for o in result.outbound.idps["legacy"].operations if o.kind == kind)


def sent(peer: SpmlServer, operation: str) -> list[Any]:
    """The request elements of every ``operation`` the peer received."""
    out = []
    for request in peer.requests:
        if request.operation == operation:
            body = etree.fromstring(request.body.encode())
            out.append(body[0][0])
    return out


def dsml(element: Any, path: str) -> list[Any]:
    return element.findall(path, {"spml": SPML, "dsml": DSML})


def write_config(tmp_path: Path, server: SpmlServer) -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:{spml_idp(server)}
applications:
  - name: resident
    identity_providers: [legacy]
""")


# ---------------------------------------------------------------- lifecycle
def test_full_lifecycle_through_the_cli(cli, peer, tmp_path):
    write_config(tmp_path, peer)
    cli("role", "add", "staff").ok()
    args = ["-c", "email=alice@example.com", "-c", "given_name=Alice", "-c", "family_name=L"]
    out = cli("user", "add", "alice", *args, "-c", "title=Dev", "--role", "staff").ok()
    assert "legacy: 2 done" in out.stdout
    alice = peer.accounts()["alice"]
    assert alice.attributes["objectclass"] == ["inetOrgPerson"]
    assert alice.get("mail") == ["alice@example.com"] and alice.get("sn") == ["L"]
    assert alice.get("cn") == ["alice"] and alice.get("title") == ["Dev"]
    assert peer.groups()["staff"].get("member") == [alice.pso_id]

    cli("user", "update", "alice", "-c", "title=CTO", "--unset", "email").ok()
    alice = peer.accounts()["alice"]
    assert alice.get("title") == ["CTO"] and alice.get("mail") == []
    modify = sent(peer, "modifyRequest")[-1]
    replaced = dsml(modify, "spml:modification[@modificationMode='replace']/dsml:modification")
    deleted = dsml(modify, "spml:modification[@modificationMode='delete']/dsml:modification")
    assert [(m.get("name"), m.get("operation")) for m in replaced] == [("title", "replace")]
    assert [(m.get("name"), len(m)) for m in deleted] == [("mail", 0)]

    cli("user", "add", "bob", "-c", "email=bob@example.com", "-c", "family_name=B").ok()
    assert "bob" not in peer.accounts()
    cli("role", "assign", "staff", "bob").ok()
    bob = peer.accounts()["bob"]
    assert set(peer.groups()["staff"].get("member")) == {alice.pso_id, bob.pso_id}
    cli("role", "unassign", "staff", "bob").ok()
    assert "bob" not in peer.accounts()
    assert peer.groups()["staff"].get("member") == [alice.pso_id]

    cli("user", "delete", "alice", "--yes").ok()
    assert peer.accounts() == {}
    assert peer.groups()["staff"].get("member") == []
    assert "searchRequest" not in peer.operations(), "no look-ups when nothing went wrong"
    ids = [r.request_id for r in peer.requests]
    assert len(set(ids)) == len(ids) and all(i.startswith("idprov-") for i in ids)


def test_a_renamed_user_is_a_modify_of_the_naming_attribute(tmp_path, peer):
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        svc.add_user("fred", {**ALICE, "email": "f@example.com"}, roles=["staff"])
        fred = peer.accounts()["fred"]
        result = svc.rename_user("fred", "frederick")
        assert result.outbound.ok, result.outbound.to_dict()
        renamed = peer.accounts()["frederick"]
        assert renamed.pso_id == fred.pso_id and "fred" not in peer.accounts()
        modify = sent(peer, "modifyRequest")[-1]
        replaced = dsml(modify, "spml:modification[@modificationMode='replace']/dsml:modification")
        assert [m.get("name") for m in replaced] == ["cn", "uid"]  # cn is made from the name
        assert renamed.get("cn") == ["frederick"] and renamed.get("mail") == ["f@example.com"]
        assert peer.groups()["staff"].get("member") == [fred.pso_id]


def test_role_rename_and_delete(tmp_path, peer):
    with service(tmp_path, peer, extra="    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("engineers")
        svc.add_user("erin", {**ALICE, "email": "e@example.com"}, roles=["staff", "engineers"])
        svc.rename_role("engineers", "builders")
        erin = peer.accounts()["erin"]
        assert set(peer.groups()) == {"staff", "builders"}
        assert peer.groups()["builders"].get("member") == [erin.pso_id]
        svc.delete_role("builders")
        assert set(peer.groups()) == {"staff"}


# ---------------------------------------------------------------- failures
def test_the_cli_shows_the_targets_error_message_and_keeps_the_row(cli, peer, tmp_path):
    write_config(tmp_path, peer)
    cli("role", "add", "staff").ok()
    text = "Employee <E-1> & 'friends' are on legal hold — contactez la DRH"
    peer.fail_next("customError", text, operation="addRequest")
    run = cli("user", "add", "alice", "-c", "family_name=L", "--role", "staff")
    assert run.exit_code == 6, run
    assert f"SPML customError: {text}" in run.stdout
    rows = cli("outbox", "list", "--json").items()
    [row] = [r for r in rows if r["kind"] == "user"]
    assert row["last_error"] == f"create user alice: SPML customError: {text}"
    cli("outbox", "retry").ok()
    assert set(peer.accounts()) == {"alice"}


def test_failure_text_reaches_the_report_and_the_outbox_verbatim(tmp_path, peer):
    text = 'Department <R&D> is locked by "HR" — réessayez après 18h'
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        peer.fail_next("customError", text, operation="addRequest")
        result = svc.add_user("alice", ALICE, roles=["staff"])
        op = user_op(result)
        assert op.outcome == "failed" and op.attempts == 1
        assert op.error == f"create user alice: SPML customError: {text}"
        [row] = [r for r in svc.outbox_rows(status="failed") if r.kind == "user"]
        assert row.last_error == op.error


def test_schema_violation_at_the_target_is_reported_not_retried(tmp_path, peer):
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        result = svc.add_user("nosn", {"email": "n@example.com"}, roles=["staff"])
        op = user_op(result)
        assert op.error == "create user nosn: SPML customError: object class violation: sn required"
        assert op.attempts == 1 and peer.accounts() == {}


def test_an_existing_account_is_a_conflict_unless_adopted(tmp_path, peer):
    theirs = {"objectclass": ["inetOrgPerson"], "uid": ["alice"], "cn": ["A"], "sn": ["Other"]}
    peer.store["someone-else"] = Pso("someone-else", theirs)
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        op = user_op(svc.add_user("alice", ALICE, roles=["staff"]))
        assert op.outcome == "failed" and op.attempts == 1
        assert "legacy refused to create user 'alice'" in op.error
        assert "(create user alice: SPML alreadyExists: uid alice is taken)" in op.error
    adopt = "    on_conflict: adopt\n    push_roles: none\n"
    with service(tmp_path / "adopting", peer, extra=adopt) as svc:
        svc.add_role("staff")
        result = svc.add_user("alice", ALICE, roles=["staff"])
        assert result.outbound.ok
        entry = svc.state.ledger.get("legacy", "user", svc.get_user("alice").id)
        assert entry.remote_id == "someone-else" and not entry.created_by_idprov


def test_pending_is_not_success_and_the_next_sync_adopts(tmp_path, peer):
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        peer.pending_next(operation="addRequest")  # carried out later by the provider
        result = svc.add_user("alice", ALICE, roles=["staff"])
        op = user_op(result)
        assert op.outcome == "failed" and op.attempts == 1
        assert "SPML status pending" in op.error and "outbox" in op.error
        user = svc.get_user("alice")
        assert svc.state.ledger.get("legacy", "user", user.id).remote_id is None
        assert {r.kind for r in svc.outbox_rows()} == {"user", "role"}
        report = svc.retry_outbox()
        assert report.ok
        entry = svc.state.ledger.get("legacy", "user", user.id)
        assert entry.remote_id == peer.accounts()["alice"].pso_id and entry.created_by_idprov
        assert len(peer.accounts()) == 1 and svc.outbox_rows() == []


def test_soap_server_fault_is_retried_and_client_fault_is_not(tmp_path, peer):
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        peer.fault_next("database busy", operation="addRequest")
        op = user_op(svc.add_user("alice", ALICE, roles=["staff"]))
        assert op.outcome == "done" and op.attempts == 2
        assert len(peer.accounts()) == 1
        peer.fault_next("schema rejects <x> & y", code="soap:Client", operation="addRequest")
        op = user_op(svc.add_user("bob", {**ALICE, "email": "b@example.com"}, roles=["staff"]))
        assert op.outcome == "failed" and op.attempts == 1 and op.status == 500
        assert op.error == "create user bob: SOAP fault soap:Client: schema rejects <x> & y"


ADOPT = "    on_conflict: adopt\n"
"""SPML accounts carry no mark of idprov's (no externalId): after an ambiguous failure
an account found at the target is taken over only with ``on_conflict: adopt``."""


def test_garbled_reply_after_the_target_acted_is_not_taken_over_without_adopt(tmp_path, peer):
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        peer.http_next(200, b"<html>proxy says hi", operation="addRequest", apply=True)
        op = user_op(svc.add_user("alice", ALICE, roles=["staff"]))
        assert op.outcome == "failed" and "nothing at the target proves it" in op.error
    assert len(peer.accounts()) == 1, "looked before creating again: no duplicate"


def test_garbled_reply_after_the_target_acted_is_retried_without_a_duplicate(tmp_path, peer):
    with service(tmp_path, peer, extra=ADOPT) as svc:
        svc.add_role("staff")
        peer.http_next(200, b"<html>proxy says hi", operation="addRequest", apply=True)
        result = svc.add_user("alice", ALICE, roles=["staff"])
        assert result.outbound.ok and user_op(result).attempts == 2
        attempts = svc.audit_log(AuditQuery(action="outbound.create"))
        assert any("the reply is not XML" in (a.details["error"] or "") for a in attempts)
    assert len(peer.accounts()) == 1
    assert "searchRequest" in peer.operations(), "looked before creating again"


def test_non_xml_reply_every_time_fails_with_the_reply_quoted(tmp_path, peer):
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        peer.http_next(200, b"Hello, this is not SOAP", operation="addRequest", count=3)
        op = user_op(svc.add_user("alice", ALICE, roles=["staff"]))
        assert op.outcome == "failed" and op.attempts == 3
        assert "the reply is not XML" in op.error and "Hello, this is not SOAP" in op.error


def test_503_and_timeouts_are_retried(tmp_path, peer):
    with service(tmp_path, peer, extra=ADOPT, timeout=0.3) as svc:
        svc.add_role("staff")
        peer.http_next(503, operation="addRequest", count=2)
        result = svc.add_user("alice", ALICE, roles=["staff"])
        assert result.outbound.ok and user_op(result).attempts == 3
        peer.stall_next(1.0, operation="addRequest")
        result = svc.add_user("bob", {**ALICE, "email": "b@example.com"}, roles=["staff"])
        assert result.outbound.ok and user_op(result).attempts == 2
        attempts = svc.audit_log(AuditQuery(action="outbound.create", target="bob"))
        assert any("timed out" in (a.details["error"] or "") for a in attempts)
    assert set(peer.accounts()) == {"alice", "bob"}


def test_wrong_token_is_reported_without_the_token(tmp_path, peer, monkeypatch):
    monkeypatch.setenv("SPML_TOKEN", "not-the-token")
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        op = user_op(svc.add_user("alice", ALICE, roles=["staff"]))
        assert op.status == 401 and op.attempts == 1
        assert "not-the-token" not in str(op.to_dict())


def test_a_refused_token_names_the_secret_to_check(tmp_path, peer, monkeypatch):
    """A 401 says which secret to check, as the SCIM connectors' do (it said only
    "HTTP 401: authentication required")."""
    monkeypatch.setenv("SPML_TOKEN", "not-the-token")
    with service(tmp_path, peer) as svc:
        op = user_op(svc.add_role("staff"), "role")
        assert op.status == 401 and "HTTP 401" in op.error
        assert "check the secret options.token names (env:SPML_TOKEN)" in op.error
        assert "not-the-token" not in str(op.to_dict())


def test_basic_auth_and_soap_action_per_operation(tmp_path, peer, monkeypatch):
    peer.token, peer.basic = None, ("idprov", "pa55-wörd")
    peer.soap_action = '"urn:oasis:names:tc:SPML:2:0:req/{operation}"'
    monkeypatch.setenv("SPML_PASSWORD", "pa55-wörd")
    options = (
        "      soap_action: 'urn:oasis:names:tc:SPML:2:0:req/{operation}'\n"
        "      username: idprov\n      password: env:SPML_PASSWORD\n"
    )
    idp = spml_idp(peer, options).replace("auth: bearer", "auth: basic")
    idp = idp.replace("      token: env:SPML_TOKEN\n", "")
    with make_service(tmp_path, idp, ["legacy"], sleep=lambda s: None) as svc:
        svc.add_role("staff")
        assert svc.add_user("alice", ALICE, roles=["staff"]).outbound.ok
    actions = {r.operation: r.soap_action for r in peer.requests}
    assert actions["addRequest"] == '"urn:oasis:names:tc:SPML:2:0:req/addRequest"'
    assert actions["modifyRequest"] == '"urn:oasis:names:tc:SPML:2:0:req/modifyRequest"'


def test_no_soap_action_header_when_null(tmp_path, peer):
    peer.soap_action = None
    with service(tmp_path, peer, options="      soap_action: null\n") as svc:
        svc.add_role("staff")
        assert svc.add_user("alice", ALICE, roles=["staff"]).outbound.ok


# ---------------------------------------------------------------- values and passwords
def test_xml_special_characters_and_unicode_round_trip(tmp_path, peer):
    claims = {
        "email": "o'brien+<x>@example.com",
        "given_name": 'Zoë "Z" Ångström',
        "family_name": "山田 & <Söhne> ]]>",
        "title": "R&D <lead> 🙂",
        "department": "Fa\u00e7ade \u00a7 <42>",
    }
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        result = svc.add_user("o'brien&<co>", claims, roles=["staff"])
        assert result.outbound.ok
        account = peer.accounts()["o'brien&<co>"]
        assert account.get("givenName") == [claims["given_name"]]
        assert account.get("sn") == [claims["family_name"]]
        assert account.get("title") == [claims["title"]]
        assert account.get("mail") == [claims["email"]]
        assert account.get("departmentNumber") == [claims["department"]]
        read = svc.connector("legacy").read_user(account.pso_id)
        assert read["data"]["title"] == [claims["title"]] and read["psoID"] == account.pso_id
        assert svc.connector("legacy").find_user("o'brien&<co>") == account.pso_id
    adds = [r.body for r in peer.requests if r.operation == "addRequest"]
    assert any("山田 &amp; &lt;Söhne&gt; ]]&gt;" in body for body in adds)


def test_no_password_is_sent_unless_configured(tmp_path, peer, monkeypatch):
    monkeypatch.setenv("SPML_INITIAL", "Initial-Pässw0rd")
    with service(tmp_path, peer, options="      initial_password: env:SPML_INITIAL\n") as svc:
        svc.add_role("staff")
        assert svc.add_user("alice", ALICE, password="Local-pw1", roles=["staff"]).outbound.ok
    assert peer.accounts()["alice"].get("userPassword") == []
    assert not any("Pässw0rd" in r.body or "Local-pw1" in r.body for r in peer.requests)


@pytest.mark.parametrize("via", ["attribute", "capability"])
def test_password_is_sent_when_configured_and_never_logged(tmp_path, peer, monkeypatch, via):
    secret = "S3cret-<&>-Pässw0rd"
    monkeypatch.setenv("SPML_INITIAL", secret)
    options = (
        "      send_password: true\n      initial_password: env:SPML_INITIAL\n"
        f"      password_via: {via}\n"
    )
    with service(tmp_path, peer, options=options) as svc:
        svc.add_role("staff")
        result = svc.add_user("alice", ALICE, roles=["staff"])
        assert result.outbound.ok
        svc.update_user("alice", {"title": "Dev"})
        audit = [e.details for e in svc.audit_log(AuditQuery())]
    alice = peer.accounts()["alice"]
    if via == "attribute":
        assert alice.get("userPassword") == [secret]
    else:
        assert alice.password == secret and alice.get("userPassword") == []
        assert "setPasswordRequest" in peer.operations()
    carrying = [r.operation for r in peer.requests if "Pässw0rd" in r.body]
    assert carrying == (["addRequest"] if via == "attribute" else ["setPasswordRequest"])
    assert secret not in str(audit) and "Pässw0rd" not in str(result.to_dict())
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert "Pässw0rd".encode() not in path.read_bytes(), path


# ---------------------------------------------------------------- modes
def test_deprovision_by_suspend_and_resume(tmp_path, peer):
    with service(tmp_path, peer, extra="    deprovision: disable\n") as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        svc.unassign("staff", ["alice"])
        alice = peer.accounts()["alice"]
        assert alice.suspended and peer.groups()["staff"].get("member") == []
        [request] = sent(peer, "suspendRequest")
        assert request.tag == f"{{{SUSPEND}}}suspendRequest"
        svc.assign("staff", ["alice"])
        assert not peer.accounts()["alice"].suspended
        assert peer.groups()["staff"].get("member") == [alice.pso_id]


def test_active_false_then_true_resumes_the_account_with_deprovision_delete(tmp_path, peer):
    """active=false suspends whatever ``deprovision`` says; active=true resumes it (the
    account stayed suspended when deprovision was delete, the default)."""
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        assert svc.update_user("alice", {"active": "false"}).outbound.ok
        assert peer.accounts()["alice"].suspended
        result = svc.update_user("alice", {"active": "true"})
        assert result.outbound.ok, result.outbound.to_dict()
        assert not peer.accounts()["alice"].suspended
        assert "deleteRequest" not in peer.operations()


def test_active_false_then_true_resets_the_disable_attribute_with_deprovision_delete(
    tmp_path, peer
):
    peer.extra_attributes = {"accountDisabled"}
    options = (
        "      disable: attribute\n      disable_attribute: accountDisabled\n"
        "      disable_value: 'TRUE'\n      enable_value: 'FALSE'\n"
    )
    with service(tmp_path, peer, options) as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        svc.update_user("alice", {"active": "false"})
        assert peer.accounts()["alice"].get("accountDisabled") == ["TRUE"]
        assert svc.update_user("alice", {"active": "true"}).outbound.ok
        assert peer.accounts()["alice"].get("accountDisabled") == ["FALSE"]


def test_a_provider_without_active_requests_still_suspends(tmp_path, peer):
    """disable_user asks whether the PSO is active first (activeRequest); a provider
    that implements the Suspend capability only in part answers unsupportedOperation,
    and the suspend goes ahead as before the read was added."""
    peer.without.add("activeRequest")
    with service(tmp_path, peer, extra="    deprovision: disable\n") as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        assert svc.unassign("staff", ["alice"]).outbound.ok
        assert peer.accounts()["alice"].suspended
        svc.assign("staff", ["alice"])
        assert not peer.accounts()["alice"].suspended


def test_deprovision_by_an_attribute(tmp_path, peer):
    peer.extra_attributes = {"accountDisabled"}
    options = (
        "      disable: attribute\n      disable_attribute: accountDisabled\n"
        "      disable_value: 'TRUE'\n      enable_value: 'FALSE'\n"
    )
    with service(tmp_path, peer, options, extra="    deprovision: disable\n") as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        assert peer.accounts()["alice"].get("accountDisabled") == []
        svc.unassign("staff", ["alice"])
        assert peer.accounts()["alice"].get("accountDisabled") == ["TRUE"]
        svc.assign("staff", ["alice"])
        assert peer.accounts()["alice"].get("accountDisabled") == ["FALSE"]
    assert "suspendRequest" not in peer.operations()


def test_roles_as_an_account_attribute(tmp_path, peer):
    peer.extra_attributes = {"roles"}
    with service(tmp_path, peer, "      roles: attribute\n", "    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("auditors")
        svc.add_user("alice", ALICE, roles=["staff", "auditors"])
        svc.add_user("bob", {**ALICE, "email": "b@example.com"}, roles=["staff"])
        assert sorted(peer.accounts()["alice"].get("roles")) == ["auditors", "staff"]
        assert peer.accounts()["bob"].get("roles") == ["staff"]
        assert peer.groups() == {}
        svc.update_user("alice", {"title": "Boss"})
        assert sorted(peer.accounts()["alice"].get("roles")) == ["auditors", "staff"]
        svc.unassign("auditors", ["alice"])
        assert peer.accounts()["alice"].get("roles") == ["staff"]
        svc.assign("auditors", ["bob"])
        assert sorted(peer.accounts()["bob"].get("roles")) == ["auditors", "staff"]
        op = user_op(svc.rename_role("auditors", "reviewers"), "role")
        assert op.outcome == "failed" and "renaming it is not supported" in op.error
        svc.delete_role("reviewers")
        assert peer.accounts()["bob"].get("roles") == ["staff"]
        assert peer.accounts()["alice"].get("roles") == ["staff"]


def test_pso_id_template_target_id_and_container(tmp_path, peer):
    peer.require_target_id = True
    options = (
        "      target_id: directory\n"
        "      pso_id: 'uid={username_dn},ou=people,dc=example,dc=com'\n"
        "      group_pso_id: 'cn={name_dn},ou=groups,dc=example,dc=com'\n"
        "      container_id: 'dc=example,dc=com'\n"
    )
    with service(tmp_path, peer, options, extra=ADOPT) as svc:
        svc.add_role("staff")
        peer.http_next(503, operation="addRequest", apply=True)
        result = svc.add_user("smith,j", ALICE, roles=["staff"])
        assert result.outbound.ok
        remote = svc.state.ledger.get("legacy", "user", svc.get_user("smith,j").id).remote_id
        assert remote == r"uid=smith\,j,ou=people,dc=example,dc=com"
        assert peer.groups()["staff"].pso_id == "cn=staff,ou=groups,dc=example,dc=com"
        assert peer.accounts()["smith,j"].container == "dc=example,dc=com"
    assert "searchRequest" not in peer.operations() and "lookupRequest" in peer.operations()
    assert {a.get("targetID") for a in sent(peer, "addRequest")} == {"directory"}


def test_search_follows_the_result_iterator(tmp_path, peer):
    peer.extra_attributes = {"roles"}
    peer.page_size = 2
    with service(tmp_path, peer, "      roles: attribute\n", "    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_role("auditors")
        for name in ("ann", "ben", "cid", "dan", "eve"):
            claims = {**ALICE, "email": f"{name}@example.com"}
            svc.add_user(name, claims, roles=["staff", "auditors"])
        svc.delete_role("auditors")
    assert all(a.get("roles") == ["staff"] for a in peer.accounts().values())
    assert peer.operations().count("iterateRequest") == 2


def test_list_users_and_drift_for_verify(tmp_path, peer):
    with service(tmp_path, peer) as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        conn = svc.connector("legacy")
        alice = peer.accounts()["alice"]
        assert conn.list_users() == [(alice.pso_id, "alice")]
        sent_attrs = {"cn": "alice", "sn": "Liddell", "mail": "alice@example.com"}
        account = Account("id", "alice", {**sent_attrs, "givenName": "Alice"})
        assert conn.drift(conn.read_user(alice.pso_id), account) == []
        alice.attributes["sn"] = ["Changed"]
        alice.attributes["objectclass"].append("top")
        assert conn.drift(conn.read_user(alice.pso_id), account) == ["sn"]
        assert conn.read_user("no-such-pso") is None


def test_idp_test_lists_targets_and_missing_capabilities(tmp_path, peer):
    with service(tmp_path, peer, extra="    deprovision: disable\n") as svc:
        report = svc.test_idp("legacy")
        assert report.ok and report.messages == []
        target = report.capabilities["targets"]["directory"]
        assert target["profile"] == DSML
        peer.capabilities = set()
        report = svc.test_idp("legacy")
        assert report.ok and len(report.messages) == 2
        assert "search" in report.messages[0] and "suspend" in report.messages[1]


# ---------------------------------------------------------------- wire format
def connector(transport: httpx.MockTransport, **options: Any) -> SpmlConnector:
    idp = IdentityProviderConfig(
        "legacy",
        "spml",
        {"base_url": "https://idm.example.com/spml", "auth": "none", **options},
    )
    made = open_connector(idp, transport)
    assert isinstance(made, SpmlConnector)
    made.new_request_id = lambda: "idprov-0001"  # type: ignore[method-assign]
    return made


def canonical(xml: bytes) -> str:
    return ElementTree.canonicalize(xml_data=xml.decode(), strip_text=True)


def replying(sample: str, seen: list[bytes]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
        assert request.headers["SOAPAction"] == '""'
        status = 500 if "fault" in sample else 200
        return httpx.Response(status, content=(SAMPLES / sample).read_bytes())

    return httpx.MockTransport(handle)


def test_add_request_matches_its_sample_and_the_reply_gives_the_pso_id():
    seen: list[bytes] = []
    conn = connector(replying("add_response_success.xml", seen), target_id="directory")
    account = Account(
        "id-1",
        "zoë",
        {"cn": "zoë", "sn": "Ångström & <Söhne>", "mail": ["z@example.com", "zoe@example.com"]},
    )
    assert conn.create_user(account) == "uid=zoë,ou=people,dc=example,dc=com"
    expected = (SAMPLES / "add_request_account_with_special_characters.xml").read_bytes()
    assert canonical(seen[0]) == canonical(expected)


def test_modify_request_matches_its_sample():
    seen: list[bytes] = []
    conn = connector(replying("modify_response_success.xml", seen))
    account = Account("id-1", "zoe", {"cn": "zoe", "sn": "Smith", "title": "CTO"})
    previous = {"cn": "zoe", "sn": "Smith", "title": "Dev", "mail": "z@example.com"}
    conn.update_user("uid=zoe,ou=people,dc=example,dc=com", account, previous)
    expected = (SAMPLES / "modify_request_replace_changed_delete_removed.xml").read_bytes()
    assert canonical(seen[0]) == canonical(expected)


def test_search_request_matches_its_sample_and_finds_one():
    seen: list[bytes] = []
    conn = connector(replying("search_response_one_account.xml", seen))
    assert conn.find_user("zoe") == "uid=zoe,ou=people,dc=example,dc=com"
    expected = (SAMPLES / "search_request_account_by_username.xml").read_bytes()
    assert canonical(seen[0]) == canonical(expected)


def test_the_sample_requests_are_what_the_peer_accepts(peer):
    zoe = {
        "objectclass": ["inetOrgPerson"],
        "uid": ["zoe"],
        "cn": ["zoe"],
        "sn": ["Smith"],
        "title": ["Dev"],
        "mail": ["z@example.com"],
    }
    peer.store["uid=zoe,ou=people,dc=example,dc=com"] = Pso(
        "uid=zoe,ou=people,dc=example,dc=com", zoe
    )
    headers = {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": '""',
        "Authorization": f"Bearer {peer.token}",
    }
    for n, sample in enumerate(sorted(SAMPLES.glob("*_request_*.xml"))):
        body = sample.read_bytes().replace(b"idprov-0001", f"idprov-{n}".encode())
        reply = httpx.post(peer.url, content=body, headers=headers, timeout=30)
        assert reply.status_code == 200, sample
        assert peer.requests[-1].outcome == "success", (sample, reply.text)
    assert peer.accounts()["zoe"].get("title") == ["CTO"]
    assert peer.accounts()["zoë"].get("mail") == ["z@example.com", "zoe@example.com"]


@pytest.mark.parametrize(
    ("sample", "error", "message"),
    [
        (
            "add_response_failure_already_exists.xml",
            RemoteConflict,
            "create user zoe: SPML alreadyExists: An account with uid 'zoe' already exists",
        ),
        (
            "add_response_pending.xml",
            RemotePending,
            "create user zoe: accepted but not carried out yet (SPML status pending, request "
            "idprov-0001); left in the outbox for the next `idprov sync`",
        ),
        (
            "soap_fault_server.xml",
            TargetError,
            "create user zoe: SOAP fault soap:Server: Provisioning engine unavailable "
            "(ORA-12541: TNS:no listener)",
        ),
    ],
)
def test_failure_samples_become_errors(sample, error, message):
    conn = connector(replying(sample, []))
    with pytest.raises(error) as caught:
        conn.create_user(Account("id-1", "zoe", {"cn": "zoe", "sn": "Z"}))
    assert type(caught.value) is error and caught.value.message == message
    assert caught.value.retryable is (sample == "soap_fault_server.xml")


def test_replies_with_a_dtd_are_refused_unread(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top-secret")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]>'
        f'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        f'<addResponse xmlns="{SPML}" status="failure"><errorMessage>&e;</errorMessage>'
        "</addResponse></soap:Body></soap:Envelope>"
    ).encode()
    conn = connector(httpx.MockTransport(lambda r: httpx.Response(200, content=body)))
    with pytest.raises(TargetError) as caught:
        conn.create_user(Account("id-1", "zoe", {"cn": "zoe", "sn": "Z"}))
    assert "carries a DTD" in caught.value.message
    assert "top-secret" not in caught.value.message


def test_a_reply_to_another_request_is_refused():
    body = (SAMPLES / "add_response_success.xml").read_bytes().replace(b"0001", b"0002")
    conn = connector(httpx.MockTransport(lambda r: httpx.Response(200, content=body)))
    with pytest.raises(TargetError, match="not idprov-0001"):
        conn.create_user(Account("id-1", "zoe", {"cn": "zoe", "sn": "Z"}))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pso_id": "uid=x"}, "pso_id: must contain {username} or {username_dn}"),
        ({"group_pso_id": "cn={nom}"}, "group_pso_id: unknown placeholder"),
        ({"disable": "attribute"}, "disable_attribute: disable: attribute needs"),
        ({"soap_action": '"x"'}, "soap_action: write the value without quotes"),
        ({"member_attribute": "a b"}, "member_attribute: 'a b' is not a DSML attribute name"),
        ({"mark_attribute": "UID"}, "mark_attribute: UID is username_attribute too"),
        ({"group_mark_attribute": "cn"}, "group_mark_attribute: cn is group_name_attribute"),
    ],
)
def test_options_are_checked(options, message):
    with pytest.raises(ConfigError) as caught:
        connector(httpx.MockTransport(lambda r: httpx.Response(500)), **options)
    assert message in caught.value.message


def test_mapped_attribute_names_are_checked():
    options = {"base_url": "https://idm.example.com/spml", "auth": "none"}
    idp = IdentityProviderConfig("legacy", "spml", options, attributes={"e mail": "{email}"})
    with pytest.raises(ConfigError, match="'e mail' is not a DSML attribute name"):
        open_connector(idp)


def test_dn_escaping():
    assert dn_value('a,b+c"d\\e<f>g;h=i') == 'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i'
    assert dn_value(" #x ") == "\\ #x\\ "
    assert dn_value("#a\\ ") == "\\#a\\\\\\ "


def test_importing_the_connector_does_not_import_lxml(run_python):
    done = run_python("import sys, idprov.connectors.spml; print('lxml' in sys.modules)")
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------- marks, passwd, capabilities
MARK = "      mark_attribute: employeeNumber\n    attributes:\n      employeeNumber: '{ID}'\n"


def test_a_lost_add_reply_is_adopted_by_idprovs_mark(tmp_path, peer):
    with service(tmp_path, peer, options=MARK) as svc:
        svc.add_role("staff")
        peer.http_next(200, b"<html>proxy says hi", operation="addRequest", apply=True)
        result = svc.add_user("alice", ALICE, roles=["staff"])
        assert result.outbound.ok, result.outbound.to_dict()
        entry = svc.state.ledger.get("legacy", "user", svc.get_user("alice").id)
        local_id = svc.get_user("alice").id
    assert entry.created_by_idprov
    account_adds = [r for r in peer.requests if r.operation == "addRequest" and "alice" in r.body]
    assert len(account_adds) == 1, "never sent twice"
    assert peer.accounts()["alice"].get("employeeNumber") == [local_id]


def test_an_account_without_the_mark_is_not_taken_over(tmp_path, peer):
    peer.store["uid=alice"] = Pso(
        "uid=alice",
        {"objectclass": ["inetOrgPerson"], "uid": ["alice"], "cn": ["A"], "sn": ["L"]},
    )
    with service(tmp_path, peer, options=MARK) as svc:
        svc.add_role("staff")
        peer.http_next(503, operation="addRequest")
        op = user_op(svc.add_user("alice", ALICE, roles=["staff"]))
        assert op.outcome == "failed" and "nothing at the target proves it" in op.error
        svc.unassign("staff", ["alice"])
    assert "deleteRequest" not in peer.operations()
    assert peer.accounts()["alice"].get("cn") == ["A"]


@pytest.mark.parametrize("via", ["attribute", "capability"])
def test_user_passwd_sends_the_password(tmp_path, peer, via):
    options = f"      send_password: true\n      password_via: {via}\n"
    with service(tmp_path, peer, options=options) as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        peer.requests.clear()
        result = svc.set_password("alice", "N3w-Pässw0rd")
        assert result.outbound.ok and result.outbound.idps["legacy"].count("done") == 1
    alice = peer.accounts()["alice"]
    if via == "attribute":
        assert alice.get("userPassword") == ["N3w-Pässw0rd"]
        assert peer.operations() == ["modifyRequest"]
    else:
        assert alice.password == "N3w-Pässw0rd"
        assert "setPasswordRequest" in peer.operations()


def test_a_password_capability_the_target_lacks_fails_before_anything_is_sent(tmp_path, peer):
    peer.capabilities = {SEARCH, SUSPEND}
    options = "      send_password: true\n      password_via: capability\n"
    with service(tmp_path, peer, options=options) as svc:
        svc.add_role("staff")
        op = user_op(svc.add_user("alice", ALICE, roles=["staff"], password="Pw-123456"))
        assert op.outcome == "failed" and PASSWORD in op.error and "nothing was sent" in op.error
        report = svc.retry_outbox(["legacy"])
        assert not report.ok  # never "done" without its password
        assert len(svc.outbox_rows(["legacy"], "failed")) >= 1
    assert not [r for r in peer.requests if r.operation == "addRequest" and "alice" in r.body]
    assert peer.accounts() == {}


def test_idp_test_accepts_the_spml_dsml_profile_uri(tmp_path, peer):
    peer.profile = "urn:oasis:names:tc:SPML:2:0:DSML"
    with service(tmp_path, peer) as svc:
        report = svc.test_idp("legacy")
    assert report.ok and report.messages == []


def test_a_mark_the_mapping_fills_from_a_claim_is_refused(cli, write_config):
    """The README's own example: mark_attribute employeeNumber, which the default
    mapping fills from employee_number. The mark was the HR number then, and idprov
    took another system's account holding it for its own (adopted, then deleted)."""
    path = write_config(
        "identity_providers:\n"
        "  - name: legacy\n"
        "    connector: spml\n"
        "    options:\n"
        "      base_url: https://spml.example.com\n      auth: none\n"
        "      mark_attribute: employeeNumber\n"
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:7:")
    assert "mark_attribute employeeNumber" in error["message"]
    assert "'{employee_number}', the default mapping" in error["message"]
    assert "employeeNumber: null" in error["hint"] and "mark_attribute" in error["hint"]


@pytest.mark.parametrize("mapped", ["null", "'{ID}'"])
def test_a_mark_mapped_from_idprovs_id_or_not_at_all_is_accepted(cli, write_config, mapped):
    write_config(
        "identity_providers:\n"
        "  - name: legacy\n"
        "    connector: spml\n"
        "    options:\n"
        "      base_url: https://spml.example.com\n      auth: none\n"
        "      mark_attribute: EMPLOYEENUMBER\n"
        "    attributes:\n"
        f"      employeeNumber: {mapped}\n"
    )
    cli("config", "validate").ok()


def test_the_mark_holds_idprovs_id_whatever_the_mapping_says():
    """Past validation (a plugin's check, a library caller), the connector itself
    never lets the mapping fill the mark, nor an update change it, and adopts only an
    account whose mark is the user's local id."""
    idp = IdentityProviderConfig(
        "legacy",
        "spml",
        {"base_url": "https://idm.example.com/spml", "auth": "none", "mark_attribute": "mail"},
    )
    made = SpmlConnector(idp, SpmlConnector.Options(**idp.options), None)
    account = Account("id-1", "carol", {"mail": "carol@example.com", "sn": "C"})
    assert made.account_data(account)["mail"] == ["id-1"]
    assert made.mapped(account.attributes) == {"sn": ["C"]}


# ---------------------------------------------------------------- sync --verify
def test_verify_reports_a_member_removed_at_the_target_and_repair_puts_it_back(cli, peer, tmp_path):
    """verify said "not verified: the spml connector cannot read groups": a member an
    administrator took out of the group PSO went unreported. A lookup of the group
    (core SPML) reads its member attribute."""
    write_config(tmp_path, peer)
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "family_name=L", "--role", "staff").ok()
    cli("user", "add", "bob", "-c", "family_name=B", "--role", "staff").ok()
    clean = cli("sync", "--verify", "--json").ok().json()["drift"]["legacy"]
    assert clean["groups_checked"] == 1 and clean["repairs"] == []  # no false drift
    assert clean.get("unverifiable") is None

    staff = peer.groups()["staff"]
    bob = peer.accounts()["bob"].pso_id
    staff.attributes["member"] = [m for m in staff.get("member") if m != bob]
    assert "not verified" not in cli("sync", "--verify").ok().stdout
    report = cli("sync", "--verify", "--json").ok().json()["drift"]["legacy"]
    assert report["errors"] == [] and report["groups_checked"] == 1
    assert report["groups_changed_remotely"] == [{"group": "staff", "missing_members": ["bob"]}]

    cli("sync", "--verify", "--repair").ok()
    assert bob in peer.groups()["staff"].get("member")
    assert cli("sync", "--verify", "--json").ok().json()["drift"]["legacy"]["repairs"] == []


def test_verify_reports_a_group_deleted_at_the_target(cli, peer, tmp_path):
    write_config(tmp_path, peer)
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "family_name=L", "--role", "staff").ok()
    with peer.lock:
        del peer.store[peer.groups()["staff"].pso_id]
    report = cli("sync", "--verify", "--json").ok().json()["drift"]["legacy"]
    assert report["errors"] == [] and report["groups_deleted_remotely"] == ["staff"]
    cli("sync", "--verify", "--repair").ok()
    assert peer.accounts()["alice"].pso_id in peer.groups()["staff"].get("member")


def test_verify_of_roles_held_as_an_attribute_searches_their_holders(tmp_path, peer):
    """roles: attribute: a role's members are the accounts holding its name, found
    with the search capability; one whose value an administrator removed is missing."""
    from idprov.provisioning.verify import verify_idp

    peer.extra_attributes = {"roles"}
    with service(tmp_path, peer, "      roles: attribute\n", "    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        svc.add_user("bob", {"family_name": "B"}, roles=["staff"])
        assert verify_idp(svc, "legacy")["repairs"] == []
        del peer.accounts()["bob"].attributes["roles"]
        report = verify_idp(svc, "legacy")
    assert report["errors"] == []
    assert report["groups_changed_remotely"] == [{"group": "staff", "missing_members": ["bob"]}]


def test_verify_without_the_search_capability_leaves_attribute_roles_not_verified(
    cli, peer, tmp_path
):
    """roles: attribute at a target that does not advertise search: the holders of a
    role cannot be found, and nothing is sent that the target did not offer."""
    peer.extra_attributes = {"roles"}
    idp = spml_idp(peer, "      roles: attribute\n      pso_id: 'uid={username}'\n")
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
identity_providers:{idp}
applications:
  - name: resident
    identity_providers: [legacy]
""")
    peer.capabilities = {SUSPEND, PASSWORD}
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "family_name=L", "--role", "staff").ok()
    peer.requests.clear()
    shown = cli("sync", "--verify").ok().stdout
    assert "not verified: the spml connector cannot read groups" in shown
    assert "searchRequest" not in [r.operation for r in peer.requests]


def test_verify_reports_an_account_an_administrator_suspended(cli, peer, tmp_path):
    write_config(tmp_path, peer)
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "family_name=L", "--role", "staff").ok()
    cli("user", "add", "bob", "-c", "family_name=B", "--role", "staff").ok()
    peer.accounts()["alice"].suspended = True
    report = cli("sync", "--verify", "--json").ok().json()["drift"]["legacy"]
    assert report["disabled_remotely"] == ["alice"] and report["changed_remotely"] == []
    assert report["repairs"] == []
    assert "disabled at the target" in cli("sync", "--verify").ok().stdout


def test_verify_reports_an_account_disabled_by_the_disable_attribute(tmp_path, peer):
    peer.extra_attributes = {"accountDisabled"}
    options = (
        "      disable: attribute\n      disable_attribute: accountDisabled\n"
        "      disable_value: 'TRUE'\n"
    )
    with service(tmp_path, peer, options) as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        conn = svc.connector("legacy")
        alice = peer.accounts()["alice"]
        sent = svc.state.ledger.get("legacy", "user", svc.get_user("alice").id).sent
        account = Account("id", "alice", sent["attributes"])  # what idprov sent
        assert conn.drift(conn.read_user(alice.pso_id), account) == []
        alice.attributes["accountDisabled"] = ["TRUE"]
        assert conn.drift(conn.read_user(alice.pso_id), account) == ["active"]


def test_repair_keeps_an_account_an_administrator_suspended_suspended(cli, peer, tmp_path):
    """alice suspended at the target and her sn changed: `sync --verify --repair`
    replaces sn alone (it forgot what was sent, and the push replaced everything and
    resumed her)."""
    write_config(tmp_path, peer)
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "family_name=L", "--role", "staff").ok()
    alice = peer.accounts()["alice"]
    alice.suspended = True
    alice.attributes["sn"] = ["Changed"]
    peer.requests.clear()
    cli("sync", "--verify", "--repair").ok()
    alice = peer.accounts()["alice"]
    assert alice.suspended is True and alice.attributes["sn"] == ["L"]
    assert "resumeRequest" not in [r.operation for r in peer.requests]


def test_adopting_an_account_an_administrator_suspended_keeps_it_suspended(tmp_path, peer):
    """on_conflict: adopt takes over another system's carol, suspended there: she is
    updated to what idprov sends, and stays suspended (the adoption resumed her)."""
    data = {"objectclass": ["inetOrgPerson"], "uid": ["carol"], "cn": ["carol"], "sn": ["C"]}
    peer.store["x-carol"] = Pso("x-carol", data, suspended=True)
    with service(tmp_path, peer, extra="    on_conflict: adopt\n") as svc:
        svc.add_role("staff")
        assert svc.add_user("carol", {"family_name": "Carol"}, roles=["staff"]).outbound.ok
    assert peer.store["x-carol"].suspended is True
    assert peer.store["x-carol"].attributes["sn"] == ["Carol"]
    assert "resumeRequest" not in [r.operation for r in peer.requests]


def test_verify_finds_and_repair_deletes_values_the_target_holds_where_idprov_holds_none(
    cli, peer, tmp_path
):
    """alice has no title or mail here; the target holds both (an administrator set
    them, or it kept what idprov deleted), and a description idprov does not map.
    Verify names the two; the repair deletes them alone and keeps the description."""
    write_config(tmp_path, peer)
    peer.extra_attributes = {"description"}
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "family_name=L", "--role", "staff").ok()
    account = peer.accounts()["alice"]
    account.attributes.update(title=["Boss"], mail=["a@x.test"], description=["hers"])
    report = cli("sync", "--verify", "--json").ok().json()["drift"]["legacy"]
    assert report["changed_remotely"] == [{"user": "alice", "attributes": ["mail", "title"]}]
    peer.requests.clear()
    cli("sync", "--verify", "--repair").ok()
    [modify] = [r for r in peer.requests if r.operation == "modifyRequest"]
    assert modify.body.count("<dsml:modification") == 2
    account = peer.accounts()["alice"]
    assert not account.get("title") and not account.get("mail")
    assert account.get("description") == ["hers"] and account.get("sn") == ["L"]
    assert cli("sync", "--verify", "--json").ok().json()["drift"]["legacy"]["repairs"] == []


def test_verify_of_attribute_roles_when_list_targets_fails_for_a_moment_checks_them(tmp_path, peer):
    """roles: attribute: a listTargets that failed for a moment (the capabilities
    cannot be told) made verify say "the spml connector cannot read groups" and skip
    every group, as if the target lacked search; list_users searched all the same."""
    from idprov.provisioning.verify import verify_idp

    peer.extra_attributes = {"roles"}
    with service(tmp_path, peer, "      roles: attribute\n", "    push_roles: all\n") as svc:
        svc.add_role("staff")
        svc.add_user("alice", ALICE, roles=["staff"])
        svc.add_user("bob", {"family_name": "B"}, roles=["staff"])
        del peer.accounts()["bob"].attributes["roles"]
    with service(tmp_path, peer, "      roles: attribute\n", "    push_roles: all\n") as svc:
        peer.fault_next("listTargets is down", operation="listTargetsRequest", count=5)
        report = verify_idp(svc, "legacy")
    assert report["unverifiable"] is None, report
    assert report["groups_changed_remotely"] == [{"group": "staff", "missing_members": ["bob"]}]
