"""`sync --verify`'s reads of a slow target: concurrent vs one at a time, in one run.

Provisions N users (default 1,000) to bench/fast_scim2_server.py answering every
request after --delay seconds (default 0.05: a target answering in 50 ms), then times
(a) verify of that IdP as `idprov sync --verify` runs it (``verify_idp``: the
    accounts read concurrently at the IdP's ``max_concurrency``, then the listing
    of the target's users);
(b) the same accounts read one at a time through the same connector (what verify
    did before: one ``read_user`` after another).
Prints both times and the ratio a/b, and checks that (a) read every account and
found no drift.

Usage: python bench/verify_reads.py [--users N] [--delay S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from outbound_push import start_server, stop  # noqa: E402

from idprov.config import load_text  # noqa: E402
from idprov.provisioning.service import IdentityService  # noqa: E402
from idprov.provisioning.verify import verify_idp  # noqa: E402


def config_text(data_dir: str, base_url: str, concurrency: int) -> str:
    return f"""
version: 1
data_dir: {data_dir}
identity_providers:
  - name: slow
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:BENCH_SCIM_TOKEN}}
    provisioning_roles: [staff]
    push_roles: none
    max_concurrency: {concurrency}
applications:
  - name: resident
    identity_providers: [slow]
  - name: loader
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    token = secrets.token_hex(16)
    os.environ["BENCH_SCIM_TOKEN"] = token
    proc, base_url = start_server(token, args.delay)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = load_text(config_text(tmp, base_url, args.concurrency), "bench.yaml")
            names = [f"user{i:06d}" for i in range(args.users)]
            with IdentityService(config, application="loader") as loader:
                loader.add_role("staff")
                for name in names:
                    loader.add_user(name, {"email": f"{name}@example.com"})
            with IdentityService(config) as svc:  # SCIM Bulk: a few slow requests
                result = svc.assign("staff", names)
                assert result.outbound is not None and result.outbound.ok, "push failed"
                start = time.perf_counter()
                report = verify_idp(svc, "slow")
                concurrent = time.perf_counter() - start
                assert report["checked"] == args.users and not report["errors"], report
                assert not report["repairs"] and report["unowned"] == [], "no drift expected"
                connector = svc.connector("slow")
                ids = [e.remote_id for e in svc.state.ledger.for_idp("slow", "user").values()]
                start = time.perf_counter()
                for remote_id in ids:
                    assert connector.read_user(remote_id or "") is not None
                one_by_one = time.perf_counter() - start
    finally:
        stop(proc)
    print(
        f"verify of {args.users:,} users, target answering in {args.delay * 1000:.0f} ms, "
        f"max_concurrency {args.concurrency}: {concurrent:.2f} s; the same reads one at a "
        f"time: {one_by_one:.2f} s; ratio {concurrent / one_by_one:.3f}x "
        f"({one_by_one / concurrent:.1f}x faster)"
    )


if __name__ == "__main__":
    main()
