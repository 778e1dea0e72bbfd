"""`idprov user list --json --limit 0` of N users (SQLite), as a ratio against reading
the same rows with sqlite3 and writing them with `json.dumps`, in one run; and peak
memory at two sizes (the listing is streamed: it must not grow with the users).

For each size (default 10,000 and 100,000 users, 8 claims and 2 roles each, made by
`idprov import users`), runs alternately, `--runs` times:
  (a) `idprov user list --json --limit 0` (the indented document it always wrote),
  (b) `idprov user list --limit 0` into a pipe (tab-separated rows),
  (c) a plain script: sqlite3 reads users and their roles, `json.loads` the claims,
      `json.dumps` one document of the same shape (compact: the C encoder),
each into /dev/null, and prints the medians of wall time, CPU time (user + system)
and peak RSS, and the ratios a/c. Target: a/c <= 1.5; a's RSS flat from the small
size to the large one. Usage: python bench/list_json.py [--sizes 10000 100000] [--runs 3]
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

from import_users import generate

BASELINE = """
import json, sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
roles = {}
for user, role in conn.execute(
    "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
    " ORDER BY r.name_key"
):
    roles.setdefault(user, []).append(role)
rows = conn.execute(
    "SELECT id, username, claims, password_hash, created, modified FROM users"
    " ORDER BY username_key"
)
items = [
    {"id": i, "domain": "PRIMARY", "username": u, "claims": json.loads(c),
     "roles": roles.get(i, []), "has_password": p is not None, "created": cr, "modified": m}
    for i, u, c, p, cr, m in rows
]
document = {"items": items, "total": len(items), "offset": 0, "limit": None}
sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\\n")
"""


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one run."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{cmd[:4]} failed with exit code {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def populate(work: Path, users: int, exe: str) -> dict[str, str]:
    """A data directory with ``users`` users; the environment that uses it."""
    env = {k: v for k, v in os.environ.items() if k not in ("IDPROV_CONFIG", "IDPROV_DATA_DIR")}
    env.update(XDG_DATA_HOME=str(work / "data"), XDG_CONFIG_HOME=str(work / "config"))
    csv = work / "users.csv"
    generate(csv, users)
    cmd = [exe, "import", "users", str(csv), "--create-roles", "--no-push", "-q"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return env


def run_size(users: int, runs: int, exe: str) -> int:
    """Print one size's figures; return idprov's median peak RSS (KiB)."""
    work = Path(tempfile.mkdtemp(prefix="idprov-bench-"))
    try:
        env = populate(work, users, exe)
        db = str(work / "data" / "idprov" / "idprov.db")
        commands = {
            "idprov user list --json --limit 0": [exe, "user", "list", "--json", "--limit", "0"],
            "idprov user list --limit 0 (rows, a pipe)": [exe, "user", "list", "--limit", "0"],
            "sqlite3 + json.dumps": [sys.executable, "-c", BASELINE, db],
        }
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, cmd in commands.items():
                results[name].append(measured(cmd, env))
    finally:
        shutil.rmtree(work)
    medians = {
        name: [statistics.median(r[i] for r in rs) for i in range(3)]
        for name, rs in results.items()
    }
    print(f"{users:,} users, medians of {runs}:")
    for name, (wall, cpu, rss) in medians.items():
        walls = ", ".join(f"{r[0]:.2f}" for r in results[name])
        print(
            f"  {name}: wall {wall:.2f} s ({walls}), CPU {cpu:.2f} s, peak RSS {rss / 1024:.0f} MB"
        )
    ours, base = medians["idprov user list --json --limit 0"], medians["sqlite3 + json.dumps"]
    wall, cpu = ours[0] / base[0], ours[1] / base[1]
    print(f"  ratio --json / baseline: wall {wall:.2f}x, CPU {cpu:.2f}x (target <= 1.5x)")
    return int(ours[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    exe = shutil.which("idprov") or str(Path(sys.executable).parent / "idprov")
    rss = {users: run_size(users, args.runs, exe) for users in args.sizes}
    small, large = min(rss), max(rss)
    print(
        f"peak RSS of --json: {rss[small] / 1024:.0f} MB at {small:,} users, "
        f"{rss[large] / 1024:.0f} MB at {large:,} ({rss[large] / rss[small]:.2f}x; target: flat)"
    )


if __name__ == "__main__":
    main()
