"""JIT provisioning: `idprov jit login` and POST /jit/login. Claims files and ID tokens
(RS256 against a JWKS file, HS256 against a shared secret), tokens refused for each
reason with a clear message, update-on-login on and off, role mapping, and the outbound
push to exactly the application's IdPs that opted in with ``jit: true``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.test_serve_scim import running

ISSUER = "https://login.example.com"
AUDIENCE = "portal-client"
PORTAL_TOKEN = "portal-token-31337"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
HMAC_SECRET = "a-shared-secret-of-32-bytes-or-more!!"


def config_text(tmp_path: Path, idps: str = "", portal_idps: str = "[]") -> str:
    jwks = {
        "keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1"}]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    pem = EC_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ec.pem").write_bytes(pem)
    return f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:{idps or " []"}
applications:
  - name: portal
    identity_providers: {portal_idps}
    inbound_token: env:PORTAL_TOKEN
    jit:
      - idp: proxy  # an authenticating proxy that verified the claims: no keys here
        roles: {{Engineering: [engineers], Everyone: [staff]}}
        default_roles: [users]
      - idp: mail
        username_claim: email
        link_existing: by_email
      - idp: okta
        issuer: {ISSUER}
        audience: {AUDIENCE}
        jwks_file: {tmp_path / "jwks.json"}
        roles: {{Engineering: [engineers], Everyone: [staff]}}
        default_roles: [users]
      - idp: frozen
        username_claim: email
        update_on_login: false
        roles_claim: null
      - idp: closed
        enabled: false
      - idp: hmac
        issuer: {ISSUER}
        audience: {AUDIENCE}
        shared_secret: env:JIT_HMAC_SECRET
      - idp: pem
        issuer: {ISSUER}
        audience: {AUDIENCE}
        public_key_file: {tmp_path / "ec.pem"}
        algorithms: [ES256]
"""


@pytest.fixture
def portal(tmp_path: Path, write_config, cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PORTAL_TOKEN", PORTAL_TOKEN)
    monkeypatch.setenv("JIT_HMAC_SECRET", HMAC_SECRET)
    path = write_config(config_text(tmp_path))
    for role in ("engineers", "staff", "users", "admins"):
        cli("--config", str(path), "role", "add", role).ok()
    return path


def claims_file(tmp_path: Path, claims: dict[str, Any], name: str = "claims.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(claims))
    return str(path)


ALICE = {
    "sub": "alice",
    "email": "alice@example.com",
    "given_name": "Alice",
    "name": "Alice Liddell",
    "email_verified": True,
    "groups": ["Engineering", "Everyone", "Unmapped"],
}


def login(cli, config: Path, *args: str) -> Any:
    return cli("--config", str(config), "jit", "login", "--app", "portal", *args, "--json")


def id_token(
    key: Any = KEY, algorithm: str = "RS256", kid: str | None = "k1", **claims: Any
) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **ALICE, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": kid} if kid else {}
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


# ---------------------------------------------------------------- claims
def test_claims_file_login_creates_the_user_with_mapped_claims_and_roles(cli, portal, tmp_path):
    result = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE)).json()
    assert result["action"] == "created"
    user = result["user"]
    assert user["username"] == "alice"
    assert user["claims"] == {
        "email": "alice@example.com",
        "given_name": "Alice",
        "display_name": "Alice Liddell",
    }
    assert user["roles"] == ["engineers", "staff", "users"]
    assert result["outbound"] is None
    [entry] = cli("--config", str(portal), "log", "--action", "jit.login", "--json").items()
    assert (entry["application"], entry["target"]) == ("portal", "alice")
    assert entry["details"]["idp"] == "proxy" and entry["details"]["outcome"] == "created"


def test_the_next_login_updates_claims_and_only_the_mapped_roles(cli, portal, tmp_path):
    login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE)).json()
    cli("--config", str(portal), "role", "assign", "admins", "alice").ok()  # given locally
    changed = {**ALICE, "email": "alice@new.example", "groups": ["Everyone"]}
    del changed["given_name"]  # not sent this time: kept, not erased
    result = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, changed)).json()
    assert result["action"] == "updated"
    assert result["claims_changed"] == ["email"]
    assert (result["roles_added"], result["roles_removed"]) == ([], ["engineers"])
    assert result["user"]["roles"] == ["admins", "staff", "users"]
    assert result["user"]["claims"]["given_name"] == "Alice"
    again = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, changed)).json()
    assert again["action"] == "unchanged"


def test_update_on_login_off_leaves_an_existing_user_alone(cli, portal, tmp_path):
    first = login(cli, portal, "--idp", "frozen", "--claims", claims_file(tmp_path, ALICE)).json()
    assert first["action"] == "created"
    assert first["user"]["username"] == "alice@example.com"  # username_claim: email
    assert first["user"]["roles"] == []  # roles_claim: null
    changed = {**ALICE, "given_name": "Alicia"}
    second = login(cli, portal, "--idp", "frozen", "--claims", claims_file(tmp_path, changed))
    assert second.json()["action"] == "unchanged"
    assert second.json()["user"]["claims"]["given_name"] == "Alice"


def test_jit_refusals(cli, portal, tmp_path):
    claims = claims_file(tmp_path, ALICE)
    off = login(cli, portal, "--idp", "closed", "--claims", claims).error(5)
    assert "off" in off["message"] and "enabled: true" in off["hint"]
    unknown = login(cli, portal, "--idp", "nope", "--claims", claims).error(3)
    assert "no JIT settings for IdP 'nope'" in unknown["message"]
    no_sub = login(
        cli,
        portal,
        "--idp",
        "proxy",
        "--claims",
        claims_file(tmp_path, {"email": "x@y.z"}, "n.json"),
    )
    assert "'sub'" in no_sub.error(2)["message"]
    bad_email = {**ALICE, "email": "not an email"}
    assert (
        "email"
        in login(
            cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, bad_email, "b.json")
        ).error(5)["message"]
    )
    cli("--config", str(portal), "role", "delete", "engineers", "--yes").ok()
    missing = login(cli, portal, "--idp", "proxy", "--claims", claims).error(3)
    assert "engineers" in missing["message"] and "role add" in missing["hint"]
    assert login(cli, portal, "--idp", "okta").error(2)["message"].startswith("give one of")
    assert cli("--config", str(portal), "user", "list", "--json").json()["total"] == 0


# ---------------------------------------------------------------- trust
def test_claims_for_an_idp_with_token_keys_are_refused_and_audited(cli, portal, tmp_path):
    error = login(cli, portal, "--idp", "okta", "--claims", claims_file(tmp_path, ALICE)).error(5)
    assert error["code"] == "unverified_claims" and "allow_unverified_claims" in error["hint"]
    assert cli("--config", str(portal), "user", "list", "--json").json()["total"] == 0
    [entry] = cli("--config", str(portal), "log", "--action", "jit.refused", "--json").items()
    assert entry["target"] == "alice"
    assert entry["details"] == {
        "idp": "okta",
        "code": "unverified_claims",
        "reason": error["message"],
    }


def test_a_refused_token_is_audited_without_the_token(cli, portal):
    token = id_token(OTHER_KEY)
    assert login(cli, portal, "--idp", "okta", "--id-token", token).error(5)
    [entry] = cli("--config", str(portal), "log", "--action", "jit.refused", "--json").items()
    assert "signature" in entry["details"]["reason"]
    assert token not in json.dumps(entry) and token.split(".")[2] not in json.dumps(entry)


def test_a_token_whose_payload_is_not_a_json_object_is_refused(cli, portal):
    header = jwt.utils.base64url_encode(b'{"alg":"RS256","kid":"k1"}')
    for payload in (b"not json", b"[1, 2]", b"[" * 2000 + b"]" * 2000):
        body = jwt.utils.base64url_encode(payload)
        signing = header + b"." + body
        signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
            signing, KEY
        )
        token = (signing + b"." + jwt.utils.base64url_encode(signature)).decode()
        error = login(cli, portal, "--idp", "okta", "--id-token", token).error(5)
        assert error["code"] == "token_rejected" and "payload" in error["message"], error


def test_a_login_never_takes_over_a_local_user_it_did_not_create(cli, portal, tmp_path):
    cli("--config", str(portal), "user", "add", "alice", "-c", "email=boss@example.com").ok()
    before = cli("--config", str(portal), "user", "show", "alice", "--json").json()
    error = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE)).error(4)
    assert error["code"] == "not_linked" and "link_existing" in error["hint"]
    assert cli("--config", str(portal), "user", "show", "alice", "--json").json() == before
    [entry] = cli("--config", str(portal), "log", "--action", "jit.refused", "--json").items()
    assert entry["details"]["code"] == "not_linked"
    # link_existing: by_email takes over only a user whose email is the login's
    mail = {**ALICE, "sub": "okta|00u1", "email": "boss@example.com"}
    cli("--config", str(portal), "user", "add", "boss@example.com", "-c", "email=b@x.org").ok()
    refused = login(cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, mail, "m.json"))
    assert refused.error(4)["code"] == "not_linked"
    cli(
        "--config",
        str(portal),
        "user",
        "update",
        "boss@example.com",
        "-c",
        "email=boss@example.com",
    )
    linked = login(cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, mail, "m.json"))
    assert linked.json()["action"] == "updated"
    unverified = {**mail, "sub": "okta|00u2", "email_verified": False}
    cli("--config", str(portal), "user", "add", "eve@example.com", "-c", "email=boss@example.com")
    assert login(
        cli,
        portal,
        "--idp",
        "mail",
        "--claims",
        claims_file(tmp_path, {**unverified, "email": "eve@example.com"}, "e.json"),
    ).error(4)


def test_the_linked_user_is_renamed_when_the_username_claim_changes(cli, portal, tmp_path):
    first = {**ALICE, "sub": "okta|00u9", "email": "ann@example.com"}
    created = login(cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, first)).json()
    assert created["user"]["username"] == "ann@example.com"
    moved = {**first, "email": "ann.lee@example.com"}
    again = login(cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, moved, "2.json"))
    user = again.json()["user"]
    assert (user["id"], user["username"]) == (created["user"]["id"], "ann.lee@example.com")
    assert user["claims"]["email"] == "ann.lee@example.com"
    cli("--config", str(portal), "user", "show", "ann@example.com").fails(3)
    [entry] = cli("--config", str(portal), "log", "--action", "user.rename", "--json").items()
    assert entry["details"] == {"from": "ann@example.com"}


@pytest.mark.parametrize("verified", ["false", "False", None, 0, "yes"])
def test_by_email_takes_over_only_with_an_email_the_idp_says_it_verified(
    cli, portal, tmp_path, verified
):
    """``email_verified`` sent as the text "false" (as userinfo endpoints and proxies
    send it), or not sent at all, took over the local user with that email (and its
    roles went): only true, or the text "true", is a verification."""
    cli("--config", str(portal), "user", "add", "bob@example.com", "-c", "email=bob@example.com")
    cli("--config", str(portal), "role", "assign", "admins", "bob@example.com").ok()
    mail = {"sub": "okta|00u7", "email": "bob@example.com", "email_verified": verified}
    mail = {k: v for k, v in mail.items() if v is not None}
    error = login(cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, mail)).error(4)
    assert error["code"] == "not_linked" and "email_verified" in error["message"]
    assert "set link_existing" not in error["hint"]  # it is set already
    bob = cli("--config", str(portal), "user", "show", "bob@example.com", "--json").json()
    assert bob["roles"] == ["admins"]
    [entry] = cli("--config", str(portal), "log", "--action", "jit.refused", "--json").items()
    assert (entry["target"], entry["outcome"]) == ("okta|00u7", "refused")
    yes = {**mail, "email_verified": "true"}
    linked = login(cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, yes, "y.json"))
    assert linked.json()["user"]["id"] == bob["id"]


@pytest.mark.parametrize(
    ("groups", "says"),
    [(5, "a number"), (True, "true/false"), ({"a": 1}, "an object"), ([1, 2], "a list")],
)
def test_a_groups_claim_that_is_not_names_is_refused(cli, portal, tmp_path, groups, says):
    """A number or true/false crashed the login ('internal error: TypeError'; a 500 at
    serve); an object's keys became group names."""
    claims = claims_file(tmp_path, {**ALICE, "groups": groups})
    error = login(cli, portal, "--idp", "proxy", "--claims", claims).error(2)
    assert says in error["message"] and "'groups'" in error["message"]
    assert cli("--config", str(portal), "user", "list", "--json").json()["total"] == 0
    [entry] = cli("--config", str(portal), "log", "--action", "jit.refused", "--json").items()
    assert entry["outcome"] == "refused"


def test_a_login_that_renames_or_changes_only_roles_is_audited_as_its_user(cli, portal, tmp_path):
    first = {**ALICE, "sub": "okta|00u5", "email": "cy@example.com", "groups": ["Everyone"]}
    login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, first)).json()
    more = {**first, "groups": ["Everyone", "Engineering"]}
    result = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, more, "2.json"))
    assert result.json()["action"] == "updated"
    moved = {**first, "sub": "okta|00u6", "email": "dee@example.com"}
    login(cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, moved, "3.json")).json()
    renamed = {**moved, "email": "dee.lee@example.com"}
    again = login(
        cli, portal, "--idp", "mail", "--claims", claims_file(tmp_path, renamed, "4.json")
    )
    assert again.json()["action"] == "updated"  # it said "unchanged"
    entries = cli("--config", str(portal), "log", "--action", "jit.login", "--json").items()
    assert [e["target"] for e in entries[:3]] == [
        "dee.lee@example.com",
        "dee@example.com",
        "okta|00u5",
    ]
    assert entries[0]["details"]["renamed_from"] == "dee@example.com"


# ---------------------------------------------------------------- ID tokens
def test_an_id_token_with_a_valid_signature_logs_in(cli, portal, tmp_path):
    result = login(cli, portal, "--idp", "okta", "--id-token", id_token()).json()
    assert result["action"] == "created" and result["user"]["username"] == "alice"
    token_file = tmp_path / "token.jwt"
    token_file.write_text(id_token(given_name="Al") + "\n")
    again = login(cli, portal, "--idp", "okta", "--id-token", f"@{token_file}").json()
    assert again["claims_changed"] == ["given_name"]


def test_an_hs256_token_checks_against_the_shared_secret(cli, portal):
    token = id_token(HMAC_SECRET, "HS256", kid=None)
    assert login(cli, portal, "--idp", "hmac", "--id-token", token).json()["action"] == "created"
    forged = id_token("another-secret-of-32-bytes-or-more!!!", "HS256", kid=None)
    assert (
        "signature" in login(cli, portal, "--idp", "hmac", "--id-token", forged).error(5)["message"]
    )


def test_an_es256_token_checks_against_a_pem_public_key(cli, portal):
    token = id_token(EC_KEY, "ES256", kid=None)
    assert login(cli, portal, "--idp", "pem", "--id-token", token).json()["action"] == "created"
    rsa_signed = id_token(KEY, "RS256", kid=None)
    error = login(cli, portal, "--idp", "pem", "--id-token", rsa_signed).error(5)
    assert "algorithm not allowed" in error["message"]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: id_token(OTHER_KEY), "signature does not verify"),
        (lambda: id_token(exp=int(time.time()) - 3600), "expired"),
        (lambda: id_token(aud="someone-else"), "audience 'someone-else'"),
        (lambda: id_token(iss="https://evil.example"), "issued by 'https://evil.example'"),
        (lambda: id_token(kid="k9"), "key 'k9', which is not in"),
        (lambda: id_token(exp=None), "no 'exp' claim"),
        (lambda: id_token(HMAC_SECRET, "HS256"), "algorithm not allowed"),
        (
            lambda: jwt.encode({**ALICE, "iss": ISSUER, "aud": AUDIENCE}, None, algorithm="none"),
            "algorithm not allowed",
        ),
        (lambda: "not.a.jwt", "not a JWT"),
    ],
    ids=[
        "wrong-key",
        "expired",
        "audience",
        "issuer",
        "unknown-kid",
        "no-exp",
        "hs256-confusion",
        "alg-none",
        "garbage",
    ],
)
def test_bad_id_tokens_are_refused_with_the_reason(cli, portal, token, reason):
    error = login(cli, portal, "--idp", "okta", "--id-token", token()).error(5)
    assert error["code"] == "token_rejected"
    assert reason in error["message"], error
    assert cli("--config", str(portal), "user", "list", "--json").json()["total"] == 0


# ---------------------------------------------------------------- outbound
def jit_target(scim2_server, monkeypatch, extra: str = "") -> str:
    """The IdP ``target`` (scim2-server) where JIT users go (``jit: true``)."""
    monkeypatch.setenv("OUT_TOKEN", scim2_server.token)
    monkeypatch.setenv("PORTAL_TOKEN", PORTAL_TOKEN)
    return f"""
  - name: target
    connector: scim2
    jit: true{extra}
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:OUT_TOKEN}}"""


def test_a_jit_login_goes_out_only_to_idps_that_opted_in(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    idps = (
        jit_target(scim2_server, monkeypatch)
        + """
  - name: elsewhere
    connector: scim2
    options: {base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:OUT_TOKEN}
    retry: {max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.01}"""
    )
    config = write_config(config_text(tmp_path, idps, "[target, elsewhere]"))
    result = login(cli, config, "--idp", "frozen", "--claims", claims_file(tmp_path, ALICE)).json()
    assert [i["idp"] for i in result["outbound"]["idps"]] == ["target"]
    assert result["outbound"]["ok"] is True
    [remote] = scim2_server.users()
    assert remote["userName"] == "alice@example.com"
    assert remote["name"]["givenName"] == "Alice"


def test_a_jit_login_whose_push_is_held_exits_7_as_any_command(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    """The IdP's scope left alice out (a change in the configuration): her login's
    deprovision waits for sync, and the login says so with exit 7 (it exited 0)."""
    idps = jit_target(scim2_server, monkeypatch, "\n    provisioning_roles: [staff]")
    config = write_config(config_text(tmp_path, idps, "[target]"))
    for role in ("engineers", "staff", "users"):
        cli("--config", str(config), "role", "add", role).ok()
    login(cli, config, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE)).ok()
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]
    config.write_text(config.read_text().replace("roles: [staff]", "roles: [admins]"))
    again = {**ALICE, "given_name": "Alicia"}
    held = login(cli, config, "--idp", "proxy", "--claims", claims_file(tmp_path, again))
    assert held.exit_code == 7, held
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]


def hr_config(
    tmp_path: Path, write_config, cli, scim2_server, monkeypatch, extra: str = ""
) -> Path:
    """``hr``, an IdP without ``jit: true`` scoped to ``staff``, where the resident
    application (the CLI) provisions; the portal's JIT logins go nowhere."""
    monkeypatch.setenv("OUT_TOKEN", scim2_server.token)
    monkeypatch.setenv("PORTAL_TOKEN", PORTAL_TOKEN)
    idps = f"""
  - name: hr
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:OUT_TOKEN}}
    provisioning_roles: [staff]{extra}"""
    text = config_text(tmp_path, idps, "[]")
    config = write_config(
        text.replace(
            "applications:\n",
            "applications:\n  - name: resident\n    identity_providers: [hr]\n",
            1,
        )
    )
    for role in ("engineers", "staff", "users"):
        cli("--config", str(config), "role", "add", role).ok()
    return config


def members_by_name(scim2_server, group: str) -> list[str]:
    """The userNames of ``group``'s members at the target."""
    names = {u["id"]: u["userName"] for u in scim2_server.users()}
    [found] = [g for g in scim2_server.groups() if g["displayName"] == group]
    return sorted(names[m["value"]] for m in found.get("members") or [])


def test_a_role_assign_provisions_a_jit_member_never_pushed_to_an_idp_without_jit(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    """A JIT user in a provisioning role of an IdP without ``jit: true`` was never
    pushed there. The next push of that role's group (here a role assign of another
    user) creates the JIT user there first, then the group with both members: no
    failure, no sync needed."""
    config = hr_config(tmp_path, write_config, cli, scim2_server, monkeypatch)
    login(cli, config, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE)).json()
    assert scim2_server.users() == []  # the login went to no IdP
    cli("--config", str(config), "user", "add", "bob").ok()  # out of hr's scope: not sent
    assigned = cli("--config", str(config), "role", "assign", "staff", "bob", "--json")
    assert assigned.exit_code == 0, assigned.stdout
    [hr] = assigned.json()["outbound"]["idps"]
    done = sorted((op["kind"], op["label"], op["operation"]) for op in hr["operations"])
    assert done == [
        ("role", "staff", "members"),
        ("user", "alice", "create"),
        ("user", "bob", "create"),
    ]
    assert sorted(u["userName"] for u in scim2_server.users()) == ["alice", "bob"]
    assert members_by_name(scim2_server, "staff") == ["alice", "bob"]
    assert cli("--config", str(config), "outbox", "list", "--json").items() == []
    plan = cli("--config", str(config), "sync", "--dry-run", "--json").json()["plan"]
    assert [(p["idp"], p["items"]) for p in plan["idps"]] == [("hr", [])]  # nothing left


def test_a_role_push_brings_no_jit_member_out_of_the_idps_scope(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    """Where the role is pushed but a JIT member is not in the IdP's scope (holds none
    of its provisioning roles), the member is not created there nor put in the group,
    as today; the push succeeds."""
    config = hr_config(
        tmp_path, write_config, cli, scim2_server, monkeypatch, "\n    push_roles: all"
    )
    outsider = {**ALICE, "sub": "erin", "email": "erin@example.com", "groups": []}
    login(cli, config, "--idp", "proxy", "--claims", claims_file(tmp_path, outsider)).json()
    login(cli, config, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE)).json()
    added = cli("--config", str(config), "user", "add", "bob", "--role", "staff", "--role", "users")
    assert added.exit_code == 0, added.stdout
    assert sorted(u["userName"] for u in scim2_server.users()) == ["alice", "bob"]
    assert members_by_name(scim2_server, "users") == ["alice", "bob"]  # erin: users only
    assert members_by_name(scim2_server, "staff") == ["alice", "bob"]


def test_a_jit_member_whose_own_create_fails_is_named_with_why(
    cli, tmp_path, write_config, scim2_server, monkeypatch
):
    """The member's create, brought by the role's push, is refused (an account of that
    name, not idprov's, is there already): the role's push fails naming the member and
    where its own push's error is; once that is resolved, a retry finishes both."""
    config = hr_config(tmp_path, write_config, cli, scim2_server, monkeypatch)
    login(cli, config, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE)).json()
    theirs = scim2_server.client.post(
        "/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"},
    )
    assert theirs.status_code == 201, theirs.text
    added = cli("--config", str(config), "user", "add", "bob", "--role", "staff")
    assert added.exit_code == 6, added.stdout
    assert "members not provisioned at hr yet: alice" in added.stdout
    assert "alice (their own push failed" in added.stdout
    assert "idprov outbox list --idp hr" in added.stdout
    rows = cli("--config", str(config), "outbox", "list", "--json").items()
    assert sorted((r["kind"], r["label"], r["status"]) for r in rows) == [
        ("role", "staff", "failed"),
        ("user", "alice", "failed"),
    ]
    assert members_by_name(scim2_server, "staff") == ["bob"]
    scim2_server.client.delete(f"/Users/{theirs.json()['id']}").raise_for_status()
    cli("--config", str(config), "outbox", "retry").ok()
    assert members_by_name(scim2_server, "staff") == ["alice", "bob"]


def test_a_login_over_http_leaves_a_non_blocking_idps_push_to_the_worker(
    tmp_path, write_config, cli, monkeypatch
):
    """The reply does not wait for a ``blocking: false`` IdP: it says the change is
    queued there, the access log line too, and the row waits in the outbox."""
    from idprov.config import load_config

    monkeypatch.setenv("PORTAL_TOKEN", PORTAL_TOKEN)
    monkeypatch.setenv("OUT_TOKEN", "out-token")
    idps = """
  - name: later
    connector: scim2
    jit: true
    blocking: false
    options: {base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:OUT_TOKEN}"""
    config = write_config(config_text(tmp_path, idps, "[later]"))
    with running(load_config(str(config))) as inbound:
        client = inbound.as_token(PORTAL_TOKEN)
        created = client.post("/jit/login", json={"idp": "mail", "claims": ALICE})
        assert created.status_code == 201, created.text
        assert created.json()["outbound"]["queued"] == {"later": 1}
        assert "POST /v2/jit/login 201" in inbound.log.getvalue()
        assert "outbound=queued:1" in inbound.log.getvalue()
    rows = cli("--config", str(config), "outbox", "list", "--json").items()
    assert [(r["idp"], r["label"]) for r in rows] == [("later", "alice@example.com")]


# ---------------------------------------------------------------- POST /jit/login
def test_jit_login_over_http(tmp_path, portal, monkeypatch):
    from idprov.config import load_config

    with running(load_config(str(portal))) as inbound:
        client = inbound.as_token(PORTAL_TOKEN)
        created = client.post("/jit/login", json={"idp": "okta", "id_token": id_token()})
        assert created.status_code == 201, created.text
        assert created.json()["user"]["roles"] == ["engineers", "staff", "users"]
        updated = client.post(
            "/jit/login", json={"idp": "okta", "id_token": id_token(given_name="Al")}
        )
        assert (updated.status_code, updated.json()["action"]) == (200, "updated")
        unverified = client.post(
            "/jit/login", json={"idp": "okta", "claims": {**ALICE, "groups": ["Admins"]}}
        )
        assert unverified.status_code == 403
        assert unverified.json()["error"]["code"] == "unverified_claims"
        expired = client.post("/jit/login", json={"idp": "okta", "id_token": id_token(exp=1)})
        assert expired.status_code == 403
        assert expired.json()["error"]["code"] == "token_rejected"
        assert "expired" in expired.json()["error"]["message"]
        assert client.post("/jit/login", json={"idp": "nope", "claims": ALICE}).status_code == 404
        assert client.post("/jit/login", json={"idp": "okta"}).status_code == 400
        deep = b'{"idp": "okta", "claims": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        nested = client.post(
            "/jit/login", content=deep, headers={"Content-Type": "application/json"}
        )
        assert nested.status_code == 400 and "nests too deep" in nested.json()["error"]["message"]
        assert (
            client.post(
                "/jit/login", content=b"{", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert (
            client.post(
                "/jit/login", content=b"x", headers={"Content-Type": "text/plain"}
            ).status_code
            == 415
        )
        assert client.get("/jit/login").status_code == 405
        anonymous = inbound.as_token("wrong")
        refused = anonymous.post("/jit/login", json={"idp": "okta", "claims": ALICE})
        assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers
        log = inbound.log.getvalue()
        assert " POST /v2/jit/login 201 " in log and "app=portal" in log
        root = inbound.url.removesuffix("/v2") + "/jit/login"
        body = {"idp": "okta", "id_token": id_token()}
        again = httpx.post(root, json=body, headers=client.headers)
        assert again.status_code == 200
        assert id_token()[:20] not in log


def test_a_user_a_login_created_before_links_existed_is_linked_at_its_next_login(
    cli, portal, tmp_path
):
    import sqlite3

    created = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE))
    user_id = created.json()["user"]["id"]
    database = tmp_path / "data" / "idprov.db"
    with sqlite3.connect(database) as conn:  # as an idprov without links left it
        conn.execute("DELETE FROM jit_links")
    again = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE))
    assert again.json()["user"]["id"] == user_id
    with sqlite3.connect(database) as conn:
        links = conn.execute("SELECT idp, subject, user_id FROM jit_links").fetchall()
    assert links == [("proxy", "alice", user_id)]
    # deleted and made again by hand: that user is not the login's
    cli("--config", str(portal), "user", "delete", "alice", "--yes").ok()
    cli("--config", str(portal), "user", "add", "alice").ok()
    with sqlite3.connect(database) as conn:
        conn.execute("DELETE FROM jit_links")
    refused = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, ALICE))
    assert refused.error(4)["code"] == "not_linked"


@pytest.mark.parametrize("text", ["[" * 100_000, "{", ""], ids=["nested", "cut", "empty"])
def test_a_claims_file_that_is_not_json_is_refused_naming_it(cli, portal, tmp_path, text):
    path = tmp_path / "claims.json"
    path.write_text(text)
    error = login(cli, portal, "--idp", "proxy", "--claims", str(path)).error(2)
    assert f"claims file {path} is not JSON" in error["message"]


@pytest.mark.parametrize("option", ["--claims", "--id-token"])
def test_a_missing_claims_or_token_file_is_not_found_naming_it(cli, portal, tmp_path, option):
    """A file that is not there exits 3 (not found), as every file a command is given
    (`import users`), naming it with the fix; it exited 2 (a usage error)."""
    path = tmp_path / "nowhere" / "login.json"
    value = str(path) if option == "--claims" else f"@{path}"
    error = login(cli, portal, "--idp", "proxy", option, value).error(3)
    assert str(path) in error["message"] and "No such file" in error["message"]
    assert "check the path" in error["hint"]
