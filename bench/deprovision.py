"""Deprovisioning many users: requests and time, one sync vs one change per user.

N users (default 600) hold the provisioning role `staff` and two more roles, all
pushed as groups to a minimal fast SCIM 2.0 server (bench/fast_scim2_server.py, its
own process). Then every user is deprovisioned (loses `staff`):
(a) baseline, measured in the same run on a fresh server: one `role unassign` per
    user, each pushed on its own (what N commands, or N SCIM requests, do);
(b) idprov in one go: one `role unassign` of all N (the deletion guard allowed), the
    same push a sync makes: each group is left by all its deprovisioned members in
    one request (split at the connector's member_batch_size, 100), not one per user
    and group.
Prints the requests by kind, the ratio of requests a/b and of time a/b.

Usage: python bench/deprovision.py [--users N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time

import httpx
from outbound_push import server_stats, start_server, stop

from idprov.config import load_text
from idprov.provisioning.service import IdentityService

GROUPS = ("staff", "team-a", "team-b")


def config_text(data_dir: str, base_url: str) -> str:
    return f"""
version: 1
data_dir: {data_dir}
identity_providers:
  - name: fast
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:BENCH_SCIM_TOKEN}}
    provisioning_roles: [staff]
    push_roles: all
applications:
  - name: resident
    identity_providers: [fast]
  - name: loader
"""


def setup(tmp: str, base_url: str, n: int) -> tuple[object, list[str]]:
    config = load_text(config_text(tmp, base_url), "bench.yaml")
    names = [f"user{i:05d}" for i in range(n)]
    with IdentityService(config, application="loader") as loader:
        for role in GROUPS:
            loader.add_role(role)
        for name in names:
            loader.add_user(name, {"email": f"{name}@example.com"}, roles=list(GROUPS))
    with IdentityService(config) as svc:  # push everyone and every group
        from idprov.provisioning.sync import run_sync

        result = run_sync(svc)
        assert result.outbound is not None and result.outbound.ok
    return config, names


def run(n: int, token: str, one_by_one: bool) -> tuple[float, dict]:
    proc, base_url = start_server(token)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config, names = setup(tmp, base_url, n)
            assert server_stats(base_url, token)["users"] == n
            httpx.delete(
                f"{base_url.removesuffix('/v2')}/_stats",
                headers={"Authorization": f"Bearer {token}"},
            )
            with IdentityService(config) as svc:
                svc.allow_deletes = n
                start = time.perf_counter()
                if one_by_one:
                    for name in names:
                        assert svc.unassign("staff", [name]).outbound.ok  # type: ignore[union-attr]
                else:
                    assert svc.unassign("staff", names).outbound.ok  # type: ignore[union-attr]
                elapsed = time.perf_counter() - start
        stats = server_stats(base_url, token)
        assert stats["users"] == 0, "every user must be gone"
        return elapsed, stats["requests"]
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=600)
    args = parser.parse_args()
    token = secrets.token_urlsafe(16)
    os.environ["BENCH_SCIM_TOKEN"] = token
    base_time, base = run(args.users, token, one_by_one=True)
    batch_time, batch = run(args.users, token, one_by_one=False)
    total_base, total_batch = sum(base.values()), sum(batch.values())
    print(f"one change per user: {total_base} requests {base} in {base_time:.2f} s")
    print(f"one change for all:  {total_batch} requests {batch} in {batch_time:.2f} s")
    print(
        f"ratio: {total_base / total_batch:.2f}x fewer requests, {base_time / batch_time:.2f}x "
        f"faster; {len(GROUPS)} groups, {args.users} users"
    )


if __name__ == "__main__":
    main()
