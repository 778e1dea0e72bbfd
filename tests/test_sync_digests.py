"""A no-op sync skips users by the digest of their inputs, and stays exact: against the
real SCIM server, with the store edited directly (a change made outside idprov)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idprov.provisioning.mapping import UserMapping
from idprov.provisioning.service import IdentityService
from idprov.provisioning.sync import run_sync
from idprov.userstores.base import JsonClaims
from tests.outbound_helpers import idp_yaml, make_service
from tests.peers.scim2 import Scim2Peer

MAPPED = "\n    attributes: {title: '{department}', locale: null}"


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The user ids rendered for a target, in order, by anything in this process."""
    seen: list[str] = []
    real = UserMapping.account

    def counted(self, user, idp_name, previous):  # type: ignore[no-untyped-def]
        seen.append(user.id)
        return real(self, user, idp_name, previous)

    monkeypatch.setattr(UserMapping, "account", counted)
    return seen


@pytest.fixture
def scim(scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    return scim2_server


def open_service(tmp_path: Path, scim: Scim2Peer, extra: str = "") -> IdentityService:
    return make_service(tmp_path, idp_yaml("scim", scim.base_url, extra=extra), ["scim"])


def store(tmp_path: Path) -> sqlite3.Connection:
    """The store, written directly: what a change outside idprov looks like."""
    return sqlite3.connect(tmp_path / "data" / "idprov.db", isolation_level=None)


def requests(scim: Scim2Peer) -> int:
    """Requests this test's tenant answered so far."""
    assert scim.log_path is not None
    tenant = scim.base_url.rsplit("/", 2)[-2]
    return sum(f"/{tenant}/" in line for line in scim.log_path.read_text().splitlines())


@pytest.fixture
def seeded(tmp_path: Path, scim: Scim2Peer) -> Iterator[Path]:
    with open_service(tmp_path, scim, MAPPED) as svc:
        svc.add_role("staff")
        for i in range(4):
            claims = {"email": f"u{i}@example.com", "department": "Ops"}
            svc.add_user(f"user{i}", claims, roles=["staff"])
    yield tmp_path


def test_a_sync_with_nothing_changed_renders_no_user_and_sends_nothing(
    seeded: Path, scim: Scim2Peer, renders: list[str]
) -> None:
    before = requests(scim)
    with open_service(seeded, scim, MAPPED) as svc:
        result = run_sync(svc)
    assert result.plan.empty and renders == [] and requests(scim) == before


def test_a_user_changed_in_the_store_alone_is_rendered_and_sent(
    seeded: Path, scim: Scim2Peer, renders: list[str]
) -> None:
    with store(seeded) as conn:
        conn.execute(
            "UPDATE users SET claims = json_set(claims, '$.department', 'Sales')"
            " WHERE username = 'user2'"
        )
        [(user2,)] = conn.execute("SELECT id FROM users WHERE username = 'user2'").fetchall()
    with open_service(seeded, scim, MAPPED) as svc:
        result = run_sync(svc)
        [item] = result.plan.idps[0].items
        assert (item.label, item.action) == ("user2", "update") and "title" in item.changed
        assert set(renders) == {user2}  # planned, then pushed: that user only
        renders.clear()
        # SQLite's json_set wrote JSON that is not idprov's canonical form: the digest of
        # the text read differs from the pushed claims', so it is decided once more
        assert run_sync(svc).plan.empty and set(renders) <= {user2}
        renders.clear()
        assert run_sync(svc).plan.empty and renders == []
    assert {u["userName"]: u.get("title") for u in scim.users()}["user2"] == "Sales"


def test_a_mapping_change_renders_everyone_again(
    seeded: Path, scim: Scim2Peer, renders: list[str]
) -> None:
    changed = "\n    attributes: {title: 'Dept {department}', locale: null}"
    with open_service(seeded, scim, changed) as svc:
        result = run_sync(svc)
        assert sorted(i.label for i in result.plan.idps[0].items) == [f"user{i}" for i in range(4)]
        assert result.outbound is not None and result.outbound.ok
        renders.clear()
        assert run_sync(svc).plan.empty and renders == []
    assert {u.get("title") for u in scim.users()} == {"Dept Ops"}


def test_a_change_no_mapping_reads_is_decided_once_then_skipped(
    seeded: Path, scim: Scim2Peer, renders: list[str]
) -> None:
    with store(seeded) as conn:
        conn.execute("UPDATE users SET claims = json_set(claims, '$.locale', 'fr')")
    before = requests(scim)
    with open_service(seeded, scim, MAPPED) as svc:
        assert run_sync(svc, dry_run=True).plan.empty and len(renders) == 4
        assert run_sync(svc).plan.empty and len(renders) == 8  # a dry run notes nothing
        assert run_sync(svc).plan.empty and len(renders) == 8
    assert requests(scim) == before


def test_a_role_taken_away_in_the_store_deprovisions_that_user(
    seeded: Path, scim: Scim2Peer
) -> None:
    scoped = MAPPED + "\n    provisioning_roles: [staff]"
    with open_service(seeded, scim, scoped) as svc:
        assert run_sync(svc).plan.empty  # a configuration change: rendered again, the same
    with store(seeded) as conn:
        conn.execute(
            "DELETE FROM user_roles WHERE user_id = (SELECT id FROM users WHERE username = 'user1')"
        )
    with open_service(seeded, scim, scoped) as svc:
        items = run_sync(svc).plan.idps[0].items
    assert {(i.label, i.action) for i in items} == {("user1", "delete"), ("staff", "update")}
    assert sorted(u["userName"] for u in scim.users()) == ["user0", "user2", "user3"]


def test_a_ledger_from_before_the_digests_is_decided_in_full_once(
    seeded: Path, scim: Scim2Peer, renders: list[str]
) -> None:
    with store(seeded) as conn:
        conn.execute("DELETE FROM ledger_inputs")
    with open_service(seeded, scim, MAPPED) as svc:
        assert run_sync(svc).plan.empty and len(renders) == 4
        assert run_sync(svc).plan.empty and len(renders) == 4


def test_the_fingerprint_is_the_same_in_every_process(seeded: Path, scim: Scim2Peer) -> None:
    """A digest that differed between runs would make every sync render everyone."""
    code = (
        "import sys\n"
        "from idprov.connectors import registry\n"
        "from idprov.provisioning.inputs import idp_fingerprint\n"
        "from tests.outbound_helpers import idp_yaml, make_service\n"
        "from pathlib import Path\n"
        "svc = make_service(Path(sys.argv[1]), idp_yaml('scim', sys.argv[2], extra=sys.argv[3]),"
        " ['scim'])\n"
        "idp = svc.idp('scim')\n"
        "print(idp_fingerprint(idp, registry.load(idp.connector)))\n"
    )
    args = [sys.executable, "-c", code, str(seeded), scim.base_url, MAPPED]
    root = Path(__file__).parents[1]
    prints = [
        subprocess.run(args, check=True, capture_output=True, text=True, cwd=root) for _ in (1, 2)
    ]
    assert prints[0].stdout == prints[1].stdout and len(prints[0].stdout.strip()) == 32


def test_a_user_changed_through_idprov_is_not_rendered_again_by_the_sync(
    seeded: Path, scim: Scim2Peer, renders: list[str]
) -> None:
    with open_service(seeded, scim, MAPPED) as svc:
        svc.update_user("user1", {"department": "Legal", "given_name": "Zoë"})
        assert renders  # its push
        renders.clear()
        assert run_sync(svc).plan.empty and renders == []
    assert {u["userName"]: u.get("title") for u in scim.users()}["user1"] == "Legal"


def test_roles_are_inputs_only_where_they_decide_the_scope(
    seeded: Path, scim: Scim2Peer, renders: list[str]
) -> None:
    """No provisioning roles here: a role granted in the store changes the group's
    members, and no user's account (no template reads roles)."""
    with open_service(seeded, scim, MAPPED) as svc:
        svc.add_role("ops")
        renders.clear()
    with store(seeded) as conn:
        conn.execute(
            "INSERT INTO user_roles SELECT u.id, r.id FROM users u, roles r"
            " WHERE u.username = 'user3' AND r.name = 'ops'"
        )
    with open_service(seeded, scim, MAPPED) as svc:
        [item] = run_sync(svc).plan.idps[0].items
        assert (item.label, item.action, item.changed) == ("ops", "update", ["+user3"])
        assert renders == []
    [group] = [g for g in scim.groups() if g["displayName"] == "ops"]
    assert len(group["members"]) == 1


@pytest.mark.parametrize("scope", ["", "\n    provisioning_roles: [staff]"])
def test_a_no_op_sync_reads_no_claims_of_the_users_it_skips(
    seeded: Path, scim: Scim2Peer, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    """Whether a member belongs in its groups (enabled: the `active` claim) is known of
    a user whose inputs did not move from its digest: only users decided in full (one
    disabled, whose entry keeps no digest) have their claims decoded."""
    with open_service(seeded, scim, MAPPED + scope) as svc:
        svc.update_user("user1", {"active": "false"})
        assert run_sync(svc).plan.empty
    decoded: list[dict[str, Any]] = []
    real = JsonClaims._claims

    def counted(self: JsonClaims) -> Any:
        if self._decoded is None:
            decoded.append(json.loads(self.text))
        return real(self)

    monkeypatch.setattr(JsonClaims, "_claims", counted)
    before = requests(scim)
    with open_service(seeded, scim, MAPPED + scope) as svc:
        assert run_sync(svc).plan.empty
    assert requests(scim) == before
    assert [c["email"] for c in decoded] == ["u1@example.com"]
    [group] = scim.groups()
    assert len(group["members"]) == 3
