"""SCIM Bulk for many creates: used when advertised, limits respected, per-operation
failures handled one by one, never a duplicate."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.outbound_helpers import FakeScim, idp_yaml, make_service

BASE = "https://scim.test/v2"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")


def push(tmp_path: Path, fake: FakeScim, count: int, options: str = ""):
    idps = idp_yaml("target", BASE, extra="    provisioning_roles: [staff]\n")
    idps = idps.replace("      auth: bearer\n", "      auth: bearer\n" + options)
    with make_service(
        tmp_path, idps, ["target"], http_transport=fake.transport(), sleep=lambda s: None
    ) as svc:
        svc.add_role("staff")
        names = [f"user{i:03d}" for i in range(count)]
        for name in names:
            svc.add_user(name, {"email": f"{name}@example.com"})
        before = len(fake.requests)
        result = svc.assign("staff", names)
        calls = Counter(
            f"{m} {p.rsplit('/', 1)[-1] if p.endswith(('Bulk', 'Users')) else p}"
            for m, p in fake.requests[before:]
        )
        ledger = {
            name: svc.state.ledger.get("target", "user", svc.get_user(name).id) for name in names
        }
        return result, calls, ledger


def test_many_creates_go_out_in_bulk_within_max_operations(tmp_path):
    fake = FakeScim(bulk_max_operations=10)
    result, calls, ledger = push(tmp_path, fake, 25)
    assert result.outbound.ok
    assert calls["POST Bulk"] == 3 and calls["POST Users"] == 0
    assert len(fake.users) == 25
    assert {e.remote_id for e in ledger.values()} == set(fake.users)
    [group] = fake.groups.values()
    assert len(group["members"]) == 25


def test_few_creates_go_one_by_one(tmp_path):
    fake = FakeScim(bulk_max_operations=10)
    result, calls, _ = push(tmp_path, fake, 5)
    assert result.outbound.ok
    assert calls["POST Bulk"] == 0 and calls["POST Users"] == 5


def test_one_new_user_is_one_request_without_discovery(tmp_path):
    """A `user add` pushes one create: Bulk cannot batch it, so idprov does not ask the
    target's ServiceProviderConfig first (a second round trip, twice the wait on a
    slow link)."""
    fake = FakeScim(bulk_max_operations=10)
    idps = idp_yaml("target", BASE)
    with make_service(tmp_path, idps, ["target"], http_transport=fake.transport()) as svc:
        assert svc.add_user("alice", {"email": "alice@example.com"}).outbound.ok
    assert fake.requests == [("POST", "/v2/Users")]


def test_bulk_never_is_respected(tmp_path):
    fake = FakeScim(bulk_max_operations=10)
    result, calls, _ = push(tmp_path, fake, 12, options="      bulk: never\n")
    assert result.outbound.ok
    assert calls["POST Bulk"] == 0 and calls["POST Users"] == 12


def test_an_existing_user_fails_alone_inside_a_bulk(tmp_path):
    fake = FakeScim(bulk_max_operations=50)
    fake.users["x"] = {"id": "x", "userName": "user007"}
    result, calls, ledger = push(tmp_path, fake, 20)
    report = result.outbound.idps["target"]
    failed = [op for op in report.operations if op.outcome == "failed"]
    assert [op.label for op in failed if op.kind == "user"] == ["user007"]
    assert "did not create it" in failed[0].error
    assert ledger["user007"] is None  # refused: the ledger claims nothing there
    assert sum(1 for e in ledger.values() if e and e.remote_id) == 19
    assert len(fake.users) == 20


def test_a_bulk_request_that_times_out_after_applying_never_duplicates(tmp_path):
    fake = FakeScim(bulk_max_operations=50)
    fake.timeout("POST", after_apply=True)
    result, calls, ledger = push(tmp_path, fake, 15)
    assert result.outbound.ok
    assert len(fake.users) == 15
    assert {e.remote_id for e in ledger.values()} == set(fake.users)
