"""`idprov outbox retry` leaves the rows the deletion guard held alone, and says so:
how many, and the commands to look at them and to push them (never "nothing to
provision"). Against the real scim2-server, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import seed
from tests.test_sync import write_config


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server.base_url)
    return scim2_server


def test_retry_says_what_the_guard_holds_and_how_to_push_it(cli, scim):
    seed(30)
    service = IdentityService(load_config())
    try:  # a change made without asking (as an import is): its push over the guard is held
        assert service.unassign("staff", [f"pl{i}" for i in range(1, 26)]).outbound_held
    finally:
        service.close()
    out = cli("outbox", "retry").ok().stdout
    assert "nothing to provision" not in out
    assert "scim: 26 held by the deletion guard" in out
    assert "`idprov outbox list --idp scim --status held`" in out
    assert "`idprov outbox release --idp scim`" in out
    assert len(scim.users()) == 30  # still held: nothing was sent
    cli("outbox", "release", "--yes", "--allow-deletes", "25").ok()
    assert cli("outbox", "retry").ok().stdout.strip() == "nothing to provision"
