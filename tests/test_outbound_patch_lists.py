"""``update_method: patch`` (the default) never drops the items an administrator added
to a multi-valued attribute at the target: a PATCH replaces such an attribute whole, so
idprov reads the target's items first and sends its own beside the others' types.
Against the real scim2-server (tests/peers/scim2.py), through the CLI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.peers.scim2 import Scim2Peer
from tests.test_outbound_put import MOBILE, PATCH_OP
from tests.test_outbound_scim2 import by_name, write_config


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server)
    return scim2_server


def phones(scim: Scim2Peer, user: str) -> list[tuple[str, str]]:
    return sorted((p["type"], p["value"]) for p in by_name(scim.users())[user]["phoneNumbers"])


def test_a_changed_work_phone_keeps_the_mobile_an_administrator_added(cli, scim):
    cli("role", "add", "staff").ok()
    cli("user", "add", "ron", "-c", "phone_number=+1 555 0199", "-r", "staff").ok()
    ron = by_name(scim.users())["ron"]
    headers = {"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"}
    both = {"phoneNumbers": [*ron["phoneNumbers"], MOBILE]}
    body = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": both}]}
    assert httpx.patch(
        f"{scim.base_url}/Users/{ron['id']}", json=body, headers=headers, timeout=30
    ).is_success
    cli("user", "update", "ron", "-c", "phone_number=+1 555 0111").ok()
    assert phones(scim, "ron") == [("mobile", "+1 555 0100"), ("work", "+1 555 0111")]
    cli("user", "update", "ron", "--unset", "phone_number").ok()
    assert phones(scim, "ron") == [("mobile", "+1 555 0100")]
