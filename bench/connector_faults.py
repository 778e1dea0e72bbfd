"""Group membership and throttling figures of issue 14, each against a baseline
measured in the same run, on the loopback Google Workspace of the tests.

(a) one `role assign` that puts N users (default 1,000) in a group: members.insert
    per user, at max_concurrency 8, against the same at max_concurrency 1 (one at a
    time, as before the change); then again at 8 with 20% of the inserts answered
    503 (they resume: no duplicate insert, nothing fails). The fake answers each API
    request after ``--latency`` ms (default 20; Google's own are slower), as a remote
    service would; with 0 it competes with idprov for the same GIL;
(b) 40 title updates right after a burst of 429s, against the same 40 updates with
    no throttling (before the change, a 429 left the run at ~1 request/s: 63 s).

Usage: python bench/connector_faults.py [--members N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from idprov.config import load_text  # noqa: E402
from idprov.provisioning.service import IdentityService  # noqa: E402
from tests.peers.google import GoogleWorkspace  # noqa: E402


def service(fake: GoogleWorkspace, tmp: Path, concurrency: int, extra: str = "") -> IdentityService:
    key = tmp / "key.json"
    key.write_text(fake.key_json(), encoding="utf-8")
    text = f"""
version: 1
data_dir: {tmp / "data"}
identity_providers:
  - name: google
    connector: google
    options: {{base_url: "{fake.url}", credentials: "file:{key}", subject: {fake.admin}}}
    provisioning_roles: [staff]
    push_roles: all
    max_concurrency: {concurrency}
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}
applications:
  - name: resident
    identity_providers: [google]
"""
    return IdentityService(load_text(text, "bench.yaml"))


def slow(fake: GoogleWorkspace, latency: float) -> GoogleWorkspace:
    """The fake, answering each API request after ``latency`` seconds (a remote
    service's round trip; the wait holds no lock)."""
    handle = fake.server.handle

    def delayed(request):  # type: ignore[no-untyped-def]
        if latency and request.path != "/token":
            time.sleep(latency)
        return handle(request)

    fake.server.handle = delayed
    return fake


def run_assign(
    members: int, concurrency: int, fault_percent: int, latency: float
) -> tuple[float, bool, int]:
    """Seconds of the one `role assign`, whether all arrived, and 409s seen."""
    fake = slow(GoogleWorkspace(), latency)
    fake.server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with service(fake, Path(tmp), concurrency) as svc:
                svc.add_role("staff")
                svc.add_role("team")
                names = [f"u{i:05d}" for i in range(members)]
                for name in names:
                    svc.add_user(name, {}, roles=["staff"])
                group = fake.group("team@example.com")["id"]
                if fault_percent:
                    count = members * fault_percent // 100
                    fake.fail_next(503, count=count, method="POST", path=f"/groups/{group}/members")
                before = len(fake.requests)
                start = time.perf_counter()
                result = svc.assign("team", names)
                elapsed = time.perf_counter() - start
                conflicts = sum(1 for r in fake.requests[before:] if r.status == 409)
                arrived = len(fake.members[group]) == members and result.outbound.ok
                return elapsed, arrived, conflicts
    finally:
        fake.server.stop()


def run_updates(throttle: int) -> tuple[float, bool]:
    fake = GoogleWorkspace()
    fake.server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with service(fake, Path(tmp), 8, "    rate_limit: 40\n") as svc:
                svc.add_role("staff")
                for i in range(40):
                    svc.add_user(f"t{i:02d}", {"title": "A"}, roles=["staff"])
                if throttle:
                    fake.fail_next(429, "rateLimitExceeded", count=throttle, method="PATCH")
                start = time.perf_counter()
                ok = all(
                    svc.update_user(f"t{i:02d}", {"title": "B"}).outbound.ok for i in range(40)
                )
                return time.perf_counter() - start, ok
    finally:
        fake.server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=20.0, help="ms per API request")
    args = parser.parse_args()
    latency = args.latency / 1000
    one, ok1, _ = run_assign(args.members, 1, 0, latency)
    eight, ok8, _ = run_assign(args.members, 8, 0, latency)
    faulty, okf, conflicts = run_assign(args.members, 8, 20, latency)
    print(f"(the fake answers each API request after {args.latency:g} ms)")
    print(f"add {args.members} members, concurrency 1 (baseline): {one:.2f} s, all arrived: {ok1}")
    print(f"add {args.members} members, concurrency 8: {eight:.2f} s, all arrived: {ok8}")
    print(f"  ratio (baseline / concurrency 8): {one / eight:.2f}x faster")
    print(
        f"with 20% 503s, concurrency 8: {faulty:.2f} s ({faulty / eight:.2f}x the clean run), "
        f"all arrived: {okf}, duplicate inserts (409): {conflicts}"
    )
    clean, okc = run_updates(0)
    throttled, okt = run_updates(5)
    print(f"40 title updates, no throttling (baseline): {clean:.2f} s, ok: {okc}")
    print(f"40 title updates after 5 x 429: {throttled:.2f} s, ok: {okt}")
    print(f"  ratio (throttled / baseline): {throttled / clean:.2f}x")


if __name__ == "__main__":
    main()
