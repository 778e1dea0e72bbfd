"""A JIT IdP's key file that is missing, empty, half written (a rotation caught
mid-write) or holds no usable key is the server's configuration at fault: the login is
refused with which file and what is wrong with it (never a traceback, an 'internal
error', or PyJWT's guess that a library is missing), audited as ``jit.refused``, and
``config validate --strict`` finds it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import test_jit
from tests.test_jit import PORTAL_TOKEN, id_token, login
from tests.test_serve_scim import running

portal = test_jit.portal

BROKEN_JWKS = [
    ('{"keys": [', "is not valid JSON (line 1, column 11"),
    ("", "is not valid JSON (it is empty"),
    ("[]", 'is not a JWKS: a JSON object with a "keys" list is needed'),
    ('{"keys": []}', 'holds no usable key (the "keys" list is empty)'),
    ('{"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}', "holds no usable key"),
    (
        '{"keys": ["k1", {"kty": "XX"}]}',
        "holds no usable key (key 1: not a JSON object; key 2: Unsupported kty: XX)",
    ),
    ('{"keys": [{"kty": "oct"}]}', "holds no usable key (key 1: the 'k' field is missing)"),
    ("[" * 100_000, "is not valid JSON (nested too deeply to read)"),
]


@pytest.mark.parametrize(("content", "says"), BROKEN_JWKS)
def test_a_broken_jwks_file_refuses_the_login_naming_the_file(cli, portal, tmp_path, content, says):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(content)
    error = login(cli, portal, "--idp", "okta", "--id-token", id_token()).error(2)
    assert error["code"] == "config"
    assert f"jwks_file {jwks} {says}" in error["message"]
    assert "Perhaps" not in error["message"] and "cryptography" not in error["message"]
    assert "JWKS" in error["hint"]
    [entry] = cli("--config", str(portal), "log", "--action", "jit.refused", "--json").items()
    assert entry["details"]["code"] == "config"
    assert str(jwks) in entry["details"]["reason"]
    assert cli("--config", str(portal), "user", "list", "--json").json()["total"] == 0


def test_a_public_key_file_that_is_not_a_key_is_the_configuration_not_the_token(
    cli, portal, tmp_path
):
    from tests.test_jit import EC_KEY

    (tmp_path / "ec.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n")
    token = id_token(EC_KEY, "ES256")
    error = login(cli, portal, "--idp", "pem", "--id-token", token).error(2)
    assert error["code"] == "config"
    assert f"public_key_file {tmp_path / 'ec.pem'} holds no public key" in error["message"]


def test_a_broken_jwks_file_is_a_clean_500_at_serve_and_audited(cli, portal, tmp_path, capfd):
    from idprov.config import load_config

    (tmp_path / "jwks.json").write_text('{"keys": [')
    with running(load_config(str(portal))) as inbound:
        client = inbound.as_token(PORTAL_TOKEN)
        answer = client.post("/jit/login", json={"idp": "okta", "id_token": id_token()})
        assert answer.status_code == 500
        assert answer.headers["content-type"].startswith("application/json")
        error = answer.json()["error"]
        assert error["code"] == "config"
        assert "is not valid JSON (line 1, column 11" in error["message"]
    assert "Traceback" not in capfd.readouterr().err
    [entry] = cli("--config", str(portal), "log", "--action", "jit.refused", "--json").items()
    assert entry["details"]["code"] == "config"


@pytest.mark.parametrize(
    "content", [None, '{"keys": [', "[]", '{"keys": [{"kty": "oct"}]}', "[" * 100_000]
)
def test_config_validate_strict_checks_the_jwks_file(cli, portal, tmp_path, content):
    jwks: Path = tmp_path / "jwks.json"
    if content is None:
        jwks.unlink()
    else:
        jwks.write_text(content)
    error = cli("--config", str(portal), "config", "validate", "--strict", "--json").refusal(2)
    assert str(jwks) in error["message"]
    line = 1 + next(
        n for n, text in enumerate(portal.read_text().splitlines()) if "jwks_file:" in text
    )
    assert error["message"].startswith(f"{portal}:{line}:9: applications[0].jit[2].jwks_file: ")
    warned = cli("--config", str(portal), "config", "validate")
    warned.ok()
    assert str(jwks) in warned.stdout + warned.stderr
