"""Importing into one role, with push, as the role grows: does each batch of users cost
the same whatever the role already holds?

A fresh embedded store and bench/fast_scim2_server.py; the role `staff` is pushed as a
group. `idprov import users` (a process, as a user runs it) of --step new users (default
30,000), all in `staff`, is run --steps times (default 4), each on top of the last. The
baseline is the first step, measured in the same run: prints each step's CPU (user +
system) and its ratio to the first (linear growth: every ratio near 1.0; a role push
that re-reads the whole group per batch makes them climb).

Usage: python bench/import_role_growth.py [--step N] [--steps K]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from outbound_push import start_server, stop

TOKEN = "bench-token"


def config_text(data_dir: str, base_url: str) -> str:
    return f"""
version: 1
data_dir: {data_dir}
identity_providers:
  - name: fast
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:BENCH_SCIM_TOKEN}}
applications:
  - name: resident
    identity_providers: [fast]
"""


def write_step(path: Path, start: int, count: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["username", "email", "given_name", "family_name", "roles"])
        for i in range(start, start + count):
            w.writerow([f"u{i:07d}", f"u{i}@example.com", "Given", "Family", "staff"])


def idprov(env: dict[str, str], *args: str) -> float:
    """Run ``idprov ARGS``; its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "idprov", *args], env=env, capture_output=True, text=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"idprov {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=30_000)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    server, base_url = start_server(TOKEN)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "idprov.yaml"
            config.write_text(config_text(str(Path(tmp) / "data"), base_url))
            env = {**os.environ, "IDPROV_CONFIG": str(config), "BENCH_SCIM_TOKEN": TOKEN}
            idprov(env, "role", "add", "staff")
            costs = []
            for k in range(args.steps):
                path = Path(tmp) / f"step{k}.csv"
                write_step(path, k * args.step, args.step)
                costs.append(idprov(env, "import", "users", str(path), "--quiet"))
                ratio = costs[-1] / costs[0]
                print(
                    f"step {k + 1}: {args.step:,} users into staff on top of {k * args.step:,}:"
                    f" CPU {costs[-1]:.1f} s, {ratio:.2f}x of the first step"
                )
    finally:
        stop(server)
    print(f"ratio of the last step to the first: {costs[-1] / costs[0]:.2f}x (linear: ~1.0x)")


if __name__ == "__main__":
    main()
