"""`idprov serve`: a disabled user stays disabled unless a request sends
``active: true``. A PATCH that removes ``active`` or replaces it with null cleared
the claim, and a user without it is active: the user was created, enabled, at the
targets. PATCH now follows PUT's rule (one rule, in the storage)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve_scim import (
    CRM_TOKEN,
    HR_TOKEN,
    Inbound,
    new_user,
    patch,
    running,
    serve_config,
)


@pytest.fixture
def pushing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scim2_server: Any) -> Iterator[Any]:
    """crm's changes go to a real SCIM server before each response."""
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    monkeypatch.setenv("OUT_TOKEN", scim2_server.token)
    idps = f"""
  - name: target
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:OUT_TOKEN}}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.02}}"""
    with running(serve_config(tmp_path, idps, "[target]")) as served:
        yield served, scim2_server


def remote_active(target: Any, name: str) -> list[Any]:
    """The target's ``active`` of each account named ``name`` (none: not there)."""
    return [u.get("active") for u in target.users() if u["userName"] == name]


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "remove", "path": "active"},
        {"op": "replace", "path": "active", "value": None},
        {"op": "Remove", "path": "active"},
    ],
)
def test_a_patch_clearing_active_keeps_a_disabled_user_disabled(pushing, operation):
    served, target = pushing
    client = served.client
    user = new_user(client, "off.user", active=False)
    before = remote_active(target, "off.user")
    answer = patch(client, f"/Users/{user['id']}", operation)
    assert answer.status_code in (200, 204), answer.text
    assert client.get(f"/Users/{user['id']}").json()["active"] is False
    assert served.local().get_user("off.user").claims["active"] == "false"
    assert remote_active(target, "off.user") == before
    assert True not in remote_active(target, "off.user")
    found = client.get("/Users", params={"filter": "active eq false"}).json()
    assert [r["userName"] for r in found.get("Resources", [])] == ["off.user"]


def test_a_patch_clearing_active_keeps_an_enabled_user_enabled_and_true_enables(
    pushing: tuple[Inbound, Any],
) -> None:
    served, target = pushing
    client = served.client
    user = new_user(client, "on.user", active=True)
    answer = patch(client, f"/Users/{user['id']}", {"op": "remove", "path": "active"})
    assert answer.status_code in (200, 204), answer.text
    assert client.get(f"/Users/{user['id']}").json().get("active") in (None, True)
    assert remote_active(target, "on.user") == [True]
    off = new_user(client, "back.user", active=False)
    enable = {"op": "replace", "path": "active", "value": True}
    assert patch(client, f"/Users/{off['id']}", enable).status_code in (200, 204)
    assert client.get(f"/Users/{off['id']}").json()["active"] is True
    assert remote_active(target, "back.user") == [True]
