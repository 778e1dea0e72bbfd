"""`idprov serve`: the users an application's JIT logins create are its SCIM client's
users too. A token's scope is its application's userstores, and those its JIT logins
land in are among them (README, "Inbound"): the SCIM client that provisions the same
people (Entra, Okta) looks a JIT-created user up by ``userName`` before it creates
it, and disables it when it is unassigned. Were it hidden, the lookup would find no
one, the create would collide with the hidden name (409) every cycle, and a leaver
would stay enabled. Another application's token does not see them (404)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve_scim import (
    CRM_TOKEN,
    HR_TOKEN,
    Inbound,
    names,
    patch,
    running,
    scim_error,
    serve_config,
)

CRM_JIT = """
    jit:
      - idp: proxy
      - idp: partners-sso
        userstore: PARTNERS"""
"""crm's JIT logins: through ``proxy`` into crm's own userstore (PRIMARY), through
``partners-sso`` into PARTNERS (hr's userstore)."""


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path, crm_extra=CRM_JIT)) as inbound:
        yield inbound


def jit_login(client: Any, idp: str, sub: str) -> dict[str, Any]:
    answer = client.post("/jit/login", json={"idp": idp, "claims": {"sub": sub}})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_jit_user_is_found_and_disabled_by_its_applications_scim_client(served):
    crm, hr = served.client, served.as_token(HR_TOKEN)
    jit_login(crm, "proxy", "jo")
    found = crm.get("/Users", params={"filter": 'userName eq "jo"'})
    assert names(found) == ["jo"]
    jo = found.json()["Resources"][0]["id"]
    disable = {"op": "Replace", "path": "active", "value": False}  # as Entra sends it
    assert patch(crm, f"/Users/{jo}", disable).status_code in (200, 204)
    assert served.local().get_user("jo").claims["active"] == "false"
    scim_error(hr.get(f"/Users/{jo}"), 404)
    assert names(hr.get("/Users", params={"filter": 'userName eq "jo"'})) == []


def test_a_jit_user_in_another_userstore_is_seen_there_with_its_domain(served):
    crm, hr = served.client, served.as_token(HR_TOKEN)
    jit_login(crm, "partners-sso", "pat")
    assert names(crm.get("/Users", params={"filter": 'userName eq "PARTNERS/pat"'})) == [
        "PARTNERS/pat"
    ]
    assert names(hr.get("/Users", params={"filter": 'userName eq "pat"'})) == ["pat"]
