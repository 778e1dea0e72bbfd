"""Outbound push throughput: idprov vs a plain httpx loop, in one run.

Pushes N new users (default 5,000) to a minimal fast SCIM 2.0 server
(bench/fast_scim2_server.py, run as its own process so it does not share the GIL)
(a) through idprov: the users exist locally, then one `role assign` of a
    provisioning role puts all of them in scope, and idprov creates them remotely
    (outbox, ledger, audit and all), at the IdP's max_concurrency; the role is not
    pushed as a group (``push_roles: none``), so both sides send the same 5,000
    creates and nothing else;
(b) through a plain loop of httpx POSTs of the same bodies, with the same
    concurrency (a thread pool sharing one httpx.Client).
Each run gets a fresh server. Prints users/s for both and the ratio a/b (target
>= 0.8), and checks at the server that every user arrived exactly once.

Usage: python bench/outbound_push.py [--users N] [--concurrency C] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from idprov.config import load_text
from idprov.connectors.base import Account
from idprov.provisioning.service import IdentityService

HERE = Path(__file__).parent


def start_server(token: str, delay: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    """bench/fast_scim2_server.py as a process (answering after ``delay`` seconds)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fast_scim2_server.py"), "--port", "0", f"--token={token}"]
        + (["--delay", str(delay)] if delay else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.rsplit(" ", 1)[-1].rstrip("/") + "/v2"


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)


def server_stats(base_url: str, token: str) -> dict:
    return httpx.get(
        f"{base_url.removesuffix('/v2')}/_stats", headers={"Authorization": f"Bearer {token}"}
    ).json()


def config_text(data_dir: str, base_url: str, concurrency: int, bulk: str = "auto") -> str:
    return f"""
version: 1
data_dir: {data_dir}
identity_providers:
  - name: fast
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:BENCH_SCIM_TOKEN, bulk: {bulk}}}
    provisioning_roles: [staff]
    push_roles: none
    max_concurrency: {concurrency}
applications:
  - name: resident
    identity_providers: [fast]
  - name: loader
"""


def through_idprov(n: int, concurrency: int, token: str, bulk: str) -> tuple[float, dict]:
    proc, base_url = start_server(token)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = load_text(config_text(tmp, base_url, concurrency, bulk), "bench.yaml")
            names = [f"user{i:06d}" for i in range(n)]
            with IdentityService(config, application="loader") as loader:
                loader.add_role("staff")
                for name in names:
                    loader.add_user(
                        name,
                        {
                            "email": f"{name}@example.com",
                            "given_name": "Bench",
                            "family_name": name,
                        },
                    )
            with IdentityService(config) as svc:
                start = time.perf_counter()
                result = svc.assign("staff", names)
                elapsed = time.perf_counter() - start
            assert result.outbound is not None and result.outbound.ok, "push failed"
        stats = server_stats(base_url, token)
        assert stats["users"] == n, "every user must arrive exactly once"
        return elapsed, stats["requests"]
    finally:
        stop(proc)


def through_loop(n: int, concurrency: int, token: str) -> float:
    from idprov.connectors.scim2 import Scim2Connector

    proc, base_url = start_server(token)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        connector = Scim2Connector.__new__(Scim2Connector)
        bodies = [
            connector.user_body(
                Account(
                    str(i),
                    f"user{i:06d}",
                    {
                        'emails[type eq "work"].value': f"user{i:06d}@example.com",
                        "name.givenName": "Bench",
                        "name.familyName": f"user{i:06d}",
                    },
                )
            )
            for i in range(n)
        ]
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        with httpx.Client(limits=limits, timeout=10) as client:

            def post(body: dict) -> None:
                client.post(f"{base_url}/Users", json=body, headers=headers).raise_for_status()

            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(post, bodies))
            elapsed = time.perf_counter() - start
        assert server_stats(base_url, token)["users"] == n
        return elapsed
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=3, help="loop and idprov alternate, this many times each"
    )
    args = parser.parse_args()
    token = secrets.token_urlsafe(16)
    os.environ["BENCH_SCIM_TOKEN"] = token
    n = args.users
    ratios = []
    for _ in range(args.rounds):  # alternating: a shared machine's load hits both alike
        loop = through_loop(n, args.concurrency, token)
        single, single_calls = through_idprov(n, args.concurrency, token, "never")
        ratios.append(loop / single)
        print(
            f"plain httpx loop, {n} POSTs: {n / loop:,.0f} users/s ({loop:.2f} s); "
            f"idprov, one POST per user: {n / single:,.0f} users/s ({single:.2f} s), "
            f"requests {dict(single_calls)}: {loop / single:.2f}x",
            flush=True,
        )
    bulk, bulk_calls = through_idprov(n, args.concurrency, token, "auto")
    print(
        f"idprov, SCIM Bulk (the default): {n / bulk:,.0f} users/s ({bulk:.2f} s)"
        f"  requests {dict(bulk_calls)}: {loop / bulk:.2f}x of the last loop"
    )
    print(
        f"ratio, same requests: {min(ratios):.2f}-{max(ratios):.2f}x of the plain loop, "
        f"median {statistics.median(ratios):.2f}x (target >= 0.80x); "
        f"concurrency {args.concurrency}"
    )


if __name__ == "__main__":
    main()
