"""Refusals worded for whoever reads them: a JIT login's username naming another
userstore is said in the login's terms (not a CLI flag an HTTP client never gave),
and a name that Unicode writes otherwise names the character it holds."""

from __future__ import annotations

from tests import test_jit
from tests.test_jit import PORTAL_TOKEN, claims_file, login
from tests.test_serve_scim import running

portal = test_jit.portal


def test_a_login_whose_username_names_another_userstore_says_where_logins_land(
    cli, portal, tmp_path
):
    claims = claims_file(tmp_path, {**test_jit.ALICE, "sub": "PARTNERS/alice"})
    error = login(cli, portal, "--idp", "proxy", "--claims", claims).error(2)
    assert "--domain" not in error["message"] + (error["hint"] or "")
    assert error["message"] == (
        "the login's username 'PARTNERS/alice' (claim 'sub') names userstore 'PARTNERS', "
        "but logins through 'proxy' land in userstore PRIMARY"
    )
    from idprov.config import load_config

    with running(load_config(str(portal))) as inbound:
        client = inbound.as_token(PORTAL_TOKEN)
        body = {"idp": "proxy", "claims": {**test_jit.ALICE, "sub": "PARTNERS/alice"}}
        answer = client.post("/jit/login", json=body)
        assert answer.status_code == 400
        assert "--domain" not in answer.text and "names userstore 'PARTNERS'" in answer.text
    same = claims_file(tmp_path, {**test_jit.ALICE, "sub": "primary/alice"}, "same.json")
    assert login(cli, portal, "--idp", "proxy", "--claims", same).json()["action"] == "created"


def test_a_kelvin_sign_is_named_not_called_a_combining_accent(cli):
    refused = cli("user", "add", "\u212aelvin").fails(5)
    assert "U+212A (KELVIN SIGN), which Unicode writes as 'K'" in refused
    assert "combining accent" not in refused
    assert "combining accent" in cli("user", "add", "jose\u0301").fails(5)
