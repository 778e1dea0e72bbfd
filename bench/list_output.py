"""`idprov user list --limit 0` of 20,000 users written to a pipe or file (plain
tab-separated rows), as a ratio against the same list as JSON, in one run.

Before: the table was a rich table even when not on a terminal (28 s against 5 s
for JSON). Target: the plain rows no slower than 1.2x the JSON. Also prints the
rich table on a (pseudo-)terminal for reference.
Usage: python bench/list_output.py [--users N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("idprov") or str(Path(sys.executable).parent / "idprov")
    work = Path(tempfile.mkdtemp(prefix="idprov-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("IDPROV_CONFIG", "IDPROV_DATA_DIR")}
    env.update(XDG_DATA_HOME=str(work / "data"), XDG_CONFIG_HOME=str(work / "config"))
    csv = work / "users.csv"
    with csv.open("w") as f:
        f.write("username,email,given_name,family_name\n")
        f.writelines(f"user{i:06},u{i}@example.com,Given{i},Family{i}\n" for i in range(args.users))
    subprocess.run([exe, "import", "users", str(csv), "-q"], env=env, check=True)
    plain_cmd = [exe, "user", "list", "--limit", "0"]
    json_cmd = [*plain_cmd, "--json"]
    plain, as_json = [], []
    for _ in range(args.runs):
        plain.append(timed(plain_cmd, env))
        as_json.append(timed(json_cmd, env))
    shutil.rmtree(work)
    mp, mj = statistics.median(plain), statistics.median(as_json)
    print(f"user list --limit 0, {args.users:,} users, plain rows: median {mp:.2f} s")
    print(f"user list --limit 0 --json: median {mj:.2f} s (runs: {args.runs})")
    print(f"ratio: {mp / mj:.2f}x (target <= 1.20x)")


if __name__ == "__main__":
    main()
