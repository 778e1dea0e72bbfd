"""`idprov sync` when everything is already in sync, against `idprov user list --json`.

All in one run: N users (default 100,000) in a fresh embedded store, two identity
providers (two bench/fast_scim2_server.py processes), an initial sync that
provisions everyone. Then, timed as whole commands (median of --runs):
  (a) `idprov sync --json` — it must send zero requests (counted at both servers),
  (b) `idprov user list --limit 0 --json` — reading and printing the same users.
Prints both and the ratio a/b (target <= 2). Then 1% of users are changed directly
in the store and one more sync must send exactly those updates, to each IdP.

Usage: python bench/sync_noop.py [--users N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from import_users import generate  # noqa: E402
from outbound_push import start_server, stop  # noqa: E402


def stats(base_url: str, token: str) -> dict[str, int]:
    data = httpx.get(
        f"{base_url.removesuffix('/v2')}/_stats", headers={"Authorization": f"Bearer {token}"}
    ).json()
    return {k: v for k, v in data["requests"].items() if not k.startswith("GET /Service")}


def reset(base_url: str, token: str) -> None:
    httpx.delete(
        f"{base_url.removesuffix('/v2')}/_stats", headers={"Authorization": f"Bearer {token}"}
    )


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    token = secrets.token_urlsafe(16)
    servers = [start_server(token), start_server(token)]
    exe = str(Path(sys.executable).parent / "idprov")
    try:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            config = tmp / "idprov.yaml"
            config.write_text(
                f"version: 1\ndata_dir: {tmp / 'data'}\nidentity_providers:\n"
                + "".join(
                    f"  - name: idp{i}\n    connector: scim2\n    options: "
                    f"{{base_url: '{url}', auth: bearer, token: env:BENCH_TOKEN}}\n"
                    for i, (_, url) in enumerate(servers)
                )
                + "applications:\n  - name: resident\n    identity_providers: "
                "[idp0, idp1]\n"
            )
            env = {**os.environ, "IDPROV_CONFIG": str(config), "BENCH_TOKEN": token}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            csv_path = tmp / "users.csv"
            generate(csv_path, args.users)
            subprocess.run(
                [
                    exe,
                    "import",
                    "users",
                    str(csv_path),
                    "--create-roles",
                    "--no-push",
                    "--quiet",
                    "--json",
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            subprocess.run(
                [exe, "sync", "--quiet", "--json"], env=env, check=True, stdout=subprocess.DEVNULL
            )
            for _, url in servers:
                reset(url, token)
            sync_times, list_times = [], []
            for _ in range(args.runs):
                sync_times.append(timed([exe, "sync", "--quiet", "--json"], env))
                list_times.append(timed([exe, "user", "list", "--limit", "0", "--json"], env))
            sent = [stats(url, token) for _, url in servers]
            ms, ml = statistics.median(sync_times), statistics.median(list_times)
            print(f"{args.users:,} users, 2 IdPs, all in sync")
            print(f"idprov sync:                   median {ms:.2f} s; requests sent: {sent}")
            print(f"idprov user list --json:       median {ml:.2f} s")
            print(f"ratio: {ms / ml:.2f}x (target <= 2x)")
            changed = args.users // 100
            with sqlite3.connect(tmp / "data" / "idprov.db") as conn:
                conn.execute(
                    "UPDATE users SET claims = json_set(claims, '$.title', 'Changed')"
                    f" WHERE rowid IN (SELECT rowid FROM users LIMIT {changed})"
                )
            for _, url in servers:
                reset(url, token)
            start = time.perf_counter()
            subprocess.run(
                [exe, "sync", "--quiet", "--json"], env=env, check=True, stdout=subprocess.DEVNULL
            )
            elapsed = time.perf_counter() - start
            sent = [stats(url, token) for _, url in servers]
            ok = all(s == {"PATCH /Users/{id}": changed} for s in sent)
            print(
                f"after changing {changed:,} users: sync {elapsed:.2f} s, sent {sent} "
                f"-> {'exactly the changed users' if ok else 'NOT exactly the changed users'}"
            )
    finally:
        for proc, _ in servers:
            stop(proc)


if __name__ == "__main__":
    main()
