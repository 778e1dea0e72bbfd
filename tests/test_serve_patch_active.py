"""`idprov serve`: a user's ``active`` changes only when a request sends true or
false. A PUT that leaves it out keeps it; a PATCH that removes it (or replaces it with
null) is refused with 400 ``invalidValue``: without the claim a user is active, so
clearing it enabled a disabled user at every target, and keeping it while answering
200 would contradict RFC 7644 §3.5.2.2 (a removed attribute is unassigned). Entra and
Okta disable with ``replace active false`` (or Okta's PUT), never with a remove."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve_scim import (
    CRM_TOKEN,
    HR_TOKEN,
    USER,
    Inbound,
    new_user,
    patch,
    running,
    scim_error,
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


CLEARING_ACTIVE = [
    {"op": "remove", "path": "active"},
    {"op": "Remove", "path": "active"},
    {"op": "remove", "path": f"{USER}:active"},
    {"op": "replace", "path": "active", "value": None},
    {"op": "replace", "value": {"active": None}},
]
"""Every way a PATCH says "leave this user without ``active``"."""


@pytest.mark.parametrize("operation", CLEARING_ACTIVE)
@pytest.mark.parametrize("active", [False, True])
def test_a_patch_clearing_active_is_refused_and_changes_nothing(pushing, operation, active):
    """A user is enabled or disabled: a PATCH that would leave it without ``active`` is
    a 400 naming the request to send instead, whatever the user's state (it cleared an
    enabled user's claim, and kept a disabled one's while answering 200), and nothing
    changes here or at the targets."""
    served, target = pushing
    client = served.client
    user = new_user(client, "the.user", active=active)
    before = remote_active(target, "the.user")
    detail = scim_error(patch(client, f"/Users/{user['id']}", operation), 400, "invalidValue")
    assert "replace it with false" in detail and '"value": false' in detail
    assert client.get(f"/Users/{user['id']}").json()["active"] is active
    assert served.local().get_user("the.user").claims["active"] == str(active).lower()
    assert remote_active(target, "the.user") == before == ([True] if active else [])


def test_a_patch_that_leaves_active_alone_keeps_it_and_true_or_false_set_it(
    pushing: tuple[Inbound, Any],
) -> None:
    """What Entra and Okta send: ``replace active false`` disables, ``true`` enables;
    a PATCH of other attributes keeps ``active`` as it is, as a PUT without it does."""
    served, target = pushing
    client = served.client
    off = new_user(client, "off.user", active=False)
    retitle = {"op": "replace", "value": {"title": "Ex"}}
    assert patch(client, f"/Users/{off['id']}", retitle).status_code in (200, 204)
    assert client.get(f"/Users/{off['id']}").json()["active"] is False
    assert remote_active(target, "off.user") == []  # a disabled user is not created there
    enable = {"op": "replace", "path": "active", "value": True}
    assert patch(client, f"/Users/{off['id']}", enable).status_code in (200, 204)
    assert client.get(f"/Users/{off['id']}").json()["active"] is True
    assert remote_active(target, "off.user") == [True]
    disable = {"op": "Replace", "path": "active", "value": False}  # as Entra sends it
    assert patch(client, f"/Users/{off['id']}", disable).status_code in (200, 204)
    assert served.local().get_user("off.user").claims["active"] == "false"
    assert remote_active(target, "off.user") == [False]
