"""Mapping expressions on every attribute of every user: what they add to a no-op sync.

All in one run (bench/sync_noop.py's setup): N users (default 100,000) in a fresh
embedded store, two identity providers on two bench/fast_scim2_server.py processes,
provisioned by an initial sync:
  plain — the connector's default mapping ({placeholder} templates);
  expr  — every attribute, and the user name, an expression
          (lower/normalize/join/coalesce/switch/replace/left/format_date...).
Then, timed as whole commands, alternating (median of --runs):
  (a) `idprov sync --idp plain --json`,  (b) `idprov sync --idp expr --json`.
Both must send zero requests. Before each, the ledger's inputs digests are dropped,
so that the sync renders and compares every user (as after a mapping change; with the
digests, a no-op sync renders nobody and the mapping's cost would not show). Prints
both and the ratio b/a (target <= 1.10), of the commands' CPU time (user + system,
which other jobs on a shared machine disturb far less than wall time) and of their
wall time.

Usage: python bench/mapping_expressions.py [--users N] [--runs R]
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

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from import_users import generate  # noqa: E402
from outbound_push import start_server, stop  # noqa: E402
from sync_noop import reset, stats  # noqa: E402

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
EXPRESSIONS = {
    "displayName": "=coalesce(display_name, join(' ', given_name, family_name), UN)",
    "name.givenName": "=normalize(given_name)",
    "name.familyName": "=upper(left(normalize(family_name), 1)) & lower(mid(family_name, 2, 40))",
    'emails[type eq "work"].value': "=lower(strip_spaces(email))",
    'phoneNumbers[type eq "work"].value': "=replace(phone_number, ' ', '')",
    "title": "=switch(title, title, 'Eng', 'Engineer', 'Mgr', 'Manager')",
    "locale": "=coalesce(locale, 'en-US')",
    "timezone": "=if(timezone, timezone, 'UTC')",
    "externalId": "=ID",
    f"{ENTERPRISE}:employeeNumber": "=trim(employee_number)",
    f"{ENTERPRISE}:department": "=upper(department)",
    f"{ENTERPRISE}:organization": "=item(split(email, '@'), 2)",
    f"{ENTERPRISE}:costCenter": "=format_date(cost_center, '%Y')",
}


def idp_yaml(name: str, url: str, expressions: bool) -> str:
    text = (
        f"  - name: {name}\n    connector: scim2\n    options: "
        f"{{base_url: '{url}', auth: bearer, token: env:BENCH_TOKEN}}\n"
    )
    if expressions:
        text += "    username: '=lower(UN)'\n    attributes:\n"
        text += "".join(f"      '{k}': \"{v}\"\n" for k, v in EXPRESSIONS.items())
    return text


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def rendering(cmd: list[str], env: dict[str, str], data: Path) -> tuple[float, float]:
    """:func:`timed`, every user's digest dropped first (the sync renders everyone)."""
    with sqlite3.connect(data / "idprov.db") as conn:
        conn.execute("DELETE FROM ledger_inputs")
    return timed(cmd, env)


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
                + idp_yaml("plain", servers[0][1], False)
                + idp_yaml("expr", servers[1][1], True)
                + "applications:\n  - name: resident\n    identity_providers: [plain, expr]\n"
            )
            env = {**os.environ, "IDPROV_CONFIG": str(config), "BENCH_TOKEN": token}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            csv_path = tmp / "users.csv"
            generate(csv_path, args.users)
            quiet = {"env": env, "check": True, "stdout": subprocess.DEVNULL}
            subprocess.run(
                [exe, "import", "users", str(csv_path), "--create-roles", "--no-push", "--json"],
                **quiet,
            )
            subprocess.run([exe, "sync", "--quiet", "--json"], **quiet)
            for _, url in servers:
                reset(url, token)
            plain, expr = [], []
            for _ in range(args.runs):
                for name, times in (("plain", plain), ("expr", expr)):
                    cmd = [exe, "sync", "--idp", name, "--quiet", "--json"]
                    times.append(rendering(cmd, env, tmp / "data"))
            sent = [stats(url, token) for _, url in servers]
            print(f"{args.users:,} users, all in sync; requests sent: {sent}")
            for i, label in ((1, "CPU"), (0, "wall")):
                mp = statistics.median(t[i] for t in plain)
                me = statistics.median(t[i] for t in expr)
                print(
                    f"{label:>4}: default templates {mp:.2f} s, expressions on every "
                    f"attribute {me:.2f} s (medians of {args.runs}); "
                    f"ratio {me / mp:.3f}x (target <= 1.10x)"
                )
    finally:
        for proc, _ in servers:
            stop(proc)


if __name__ == "__main__":
    main()
