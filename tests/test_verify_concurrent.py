"""`sync --verify` reads the accounts at a target concurrently, within the IdP's
``max_concurrency``, and finds the same drift, in the same order, as reading them one
at a time; the live display is told how far the reads got."""

from __future__ import annotations

import json
import threading

import httpx

from idprov.config import load_config
from idprov.provisioning.service import IdentityService
from idprov.provisioning.verify import verify_idp
from tests.test_sync import scim, seed, write_config  # noqa: F401 - the fixture

USERS = 12
LIMIT = 4


class Gate(httpx.HTTPTransport):
    """The real target, counting the reads of single accounts in flight. With a
    ``hold``, the first reads wait until that many are in flight at once (a reader
    that sends one at a time gets there only by a safety timeout, and is caught by
    the count); ``fail``: remote ids whose read answers 500."""

    def __init__(self, hold: int | None = None, fail: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.hold, self.fail = hold, fail
        self.in_flight = self.peak = self.reads = 0
        self._cond = threading.Condition()
        self._open = hold is None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        head, kind, remote_id = request.url.path.rsplit("/", 2)
        if request.method != "GET" or kind != "Users":
            return super().handle_request(request)
        with self._cond:
            self.in_flight += 1
            self.reads += 1
            self.peak = max(self.peak, self.in_flight)
            if self.hold is not None and self.in_flight >= self.hold:
                self._open = True
                self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._open, timeout=10):
                self._open = True  # one at a time: caught by ``peak``, not waited out
        try:
            if remote_id in self.fail:
                return httpx.Response(500, json={"detail": "boom"})
            return super().handle_request(request)
        finally:
            with self._cond:
                self.in_flight -= 1


def damage(scim) -> dict[str, str]:  # noqa: F811
    """user1 deleted at the target, user2's email changed there; name -> remote id."""
    ids = {u["userName"]: u["id"] for u in scim.users()}
    scim.client.delete(f"/Users/{ids['user1']}")
    scim.client.patch(
        f"/Users/{ids['user2']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "replace", "value": {"emails": [{"value": "x@example.com", "type": "work"}]}}
            ],
        },
    )
    return ids


def verify(transport: Gate, phases: list[tuple[str, int, int]] | None = None) -> dict:
    service = IdentityService(load_config(), http_transport=transport)
    if phases is not None:
        service.phase = lambda name, done, total: phases.append((name, done, total))
    try:
        return verify_idp(service, "scim")
    finally:
        service.close()


def test_reads_overlap_up_to_max_concurrency_and_find_what_one_by_one_finds(
    cli,
    scim,  # noqa: F811
    tmp_path,
):
    write_config(tmp_path, scim.base_url, f"    max_concurrency: {LIMIT}\n")
    seed(cli, USERS)
    ids = damage(scim)
    failing = frozenset({ids["user3"]})

    phases: list[tuple[str, int, int]] = []
    concurrent = Gate(hold=LIMIT, fail=failing)
    found = verify(concurrent, phases)
    assert concurrent.peak == LIMIT  # they overlapped, and never went past the limit
    assert concurrent.reads == USERS

    write_config(tmp_path, scim.base_url, "    max_concurrency: 1\n")
    one_by_one = Gate(fail=failing)
    assert verify(one_by_one) == found and one_by_one.peak == 1

    assert found["checked"] == USERS - 1
    assert found["deleted_remotely"] == ["user1"]
    assert found["changed_remotely"] == [{"user": "user2", "attributes": ["emails"]}]
    assert len(found["errors"]) == 1 and found["errors"][0].startswith("user3: ")
    assert [done for _, done, _ in phases] == list(range(1, USERS + 1))
    assert {(name, total) for name, _, total in phases} == {("reading accounts at scim", USERS)}


def test_sync_verify_reports_the_drift_read_concurrently(cli, scim, tmp_path):  # noqa: F811
    write_config(tmp_path, scim.base_url, f"    max_concurrency: {LIMIT}\n")
    seed(cli, USERS)
    damage(scim)
    run = cli("sync", "--verify", "--detailed-exitcode", "--json")
    assert run.exit_code == 12
    drift = json.loads(run.stdout)["drift"]["scim"]
    assert drift["checked"] == USERS and drift["deleted_remotely"] == ["user1"]
    assert drift["changed_remotely"] == [{"user": "user2", "attributes": ["emails"]}]
