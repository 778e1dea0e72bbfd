"""`idprov sync` when everything is already in sync, against `idprov user list --json`.

All in one run: N users (default 100,000) in a fresh embedded store, two identity
providers (two bench/fast_scim2_server.py processes), an initial sync that
provisions everyone. Then, timed as whole commands, alternating (median and range of
--runs):
  (a) `idprov sync --quiet --json` — it must send zero requests (counted at both
      servers); its peak RSS is measured too (target <= 150 MB at 100k users),
  (b) `idprov user list --limit 0 --json` — reading and printing the same users.
Prints both and the ratio a/b (target <= 1.0). Then 1% of users are changed directly
in the store and one more sync must send exactly those updates, to each IdP.

--scale 10000,30000,100000 repeats the no-op sync (and the listing) at each size from
scratch and prints µs/user, and the marginal µs/user between sizes: linear growth
means a marginal cost that stays flat as the size grows.

--list-with PATH times the listing with another idprov executable (another branch's
.venv/bin/idprov, say) on the same data, for a baseline that moved.

Usage: python bench/sync_noop.py [--users N] [--runs R] [--scale N,N,...] [--list-with PATH]
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from import_users import generate  # noqa: E402
from outbound_push import start_server, stop  # noqa: E402

EXE = str(Path(sys.executable).parent / "idprov")
SYNC = [EXE, "sync", "--quiet", "--json"]
LIST = [EXE, "user", "list", "--limit", "0", "--json"]  # --list-with replaces EXE


def stats(base_url: str, token: str) -> dict[str, int]:
    data = httpx.get(
        f"{base_url.removesuffix('/v2')}/_stats", headers={"Authorization": f"Bearer {token}"}
    ).json()
    return {k: v for k, v in data["requests"].items() if not k.startswith("GET /Service")}


def reset(base_url: str, token: str) -> None:
    httpx.delete(
        f"{base_url.removesuffix('/v2')}/_stats", headers={"Authorization": f"Bearer {token}"}
    )


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one run of ``cmd``, its output discarded."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024


@dataclass
class Setup:
    """A data directory with ``users`` users provisioned to two fresh servers."""

    users: int
    tmp: Path
    token: str = field(default_factory=lambda: "t" + secrets.token_urlsafe(16))
    """Never starting with "-", which the servers' command line would take for an option."""
    servers: list = field(default_factory=list)

    def __enter__(self) -> Setup:
        self.servers = [start_server(self.token), start_server(self.token)]
        config = self.tmp / "idprov.yaml"
        config.write_text(
            f"version: 1\ndata_dir: {self.tmp / 'data'}\nidentity_providers:\n"
            + "".join(
                f"  - name: idp{i}\n    connector: scim2\n    options: "
                f"{{base_url: '{url}', auth: bearer, token: env:BENCH_TOKEN}}\n"
                for i, (_, url) in enumerate(self.servers)
            )
            + "applications:\n  - name: resident\n    identity_providers: [idp0, idp1]\n"
        )
        self.env = {**os.environ, "IDPROV_CONFIG": str(config), "BENCH_TOKEN": self.token}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        csv_path = self.tmp / "users.csv"
        generate(csv_path, self.users)
        load = [EXE, "import", "users", str(csv_path), "--create-roles", "--no-push"]
        self.run([*load, "--quiet", "--json"])
        self.run(SYNC)
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        for proc, _ in self.servers:
            stop(proc)

    def run(self, cmd: list[str]) -> None:
        subprocess.run(cmd, env=self.env, check=True, stdout=subprocess.DEVNULL)

    def reset(self) -> None:
        for _, url in self.servers:
            reset(url, self.token)

    def sent(self) -> list[dict[str, int]]:
        return [stats(url, self.token) for _, url in self.servers]


def alternate(setup: Setup, runs: int) -> tuple[list[float], list[float], list[float]]:
    """(sync seconds, sync peak MB, listing seconds), sync and listing alternating."""
    sync_s, sync_mb, list_s = [], [], []
    for _ in range(runs):
        seconds, mb = measured(SYNC, setup.env)
        sync_s.append(seconds)
        sync_mb.append(mb)
        list_s.append(measured(LIST, setup.env)[0])
    return sync_s, sync_mb, list_s


def spread(values: list[float], unit: str = "s") -> str:
    return f"median {statistics.median(values):.2f} {unit} ({min(values):.2f}–{max(values):.2f})"


def one_size(users: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as name, Setup(users, Path(name)) as setup:
        sync_s, sync_mb, list_s = alternate(setup, runs)
        sent = setup.sent()
        ratios = [s / ls for s, ls in zip(sync_s, list_s, strict=True)]
        print(f"{users:,} users, 2 IdPs, all in sync ({runs} runs, alternating)")
        print(f"idprov sync:             {spread(sync_s)}; requests sent: {sent}")
        print(f"  peak RSS:              {spread(sync_mb, 'MB')} (target <= 150 MB)")
        print(f"idprov user list --json: {spread(list_s)}")
        print(
            f"ratio: {statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f}) "
            "(target <= 1.0x, 0 requests)"
        )
        changed = users // 100
        with sqlite3.connect(setup.tmp / "data" / "idprov.db") as conn:
            conn.execute(
                "UPDATE users SET claims = json_set(claims, '$.title', 'Changed')"
                f" WHERE rowid IN (SELECT rowid FROM users LIMIT {changed})"
            )
        setup.reset()
        elapsed, _ = measured(SYNC, setup.env)
        sent = setup.sent()
        ok = all(s == {"PATCH /Users/{id}": changed} for s in sent)
        print(
            f"after changing {changed:,} users: sync {elapsed:.2f} s, sent {sent} "
            f"-> {'exactly the changed users' if ok else 'NOT exactly the changed users'}"
        )


def scale(sizes: list[int], runs: int) -> None:
    """The no-op sync and the listing at each size: µs/user, and marginal µs/user."""
    rows = []
    for users in sizes:
        with tempfile.TemporaryDirectory() as name, Setup(users, Path(name)) as setup:
            sync_s, sync_mb, list_s = alternate(setup, runs)
            assert setup.sent() == [{}, {}], setup.sent()
        rows.append((users, statistics.median(sync_s), max(sync_mb), statistics.median(list_s)))
    print(f"no-op sync, 2 IdPs, median of {runs} runs per size (0 requests at every size)")
    print("users     sync s  µs/user  marginal µs/user  peak MB | list s  µs/user  marginal")
    previous = None
    for users, sync_s, mb, list_s in rows:
        marginal = "-"
        marginal_list = "-"
        if previous is not None:
            more = users - previous[0]
            marginal = f"{(sync_s - previous[1]) / more * 1e6:.1f}"
            marginal_list = f"{(list_s - previous[3]) / more * 1e6:.1f}"
        print(
            f"{users:>7,}  {sync_s:6.2f}  {sync_s / users * 1e6:7.1f}  {marginal:>16}  "
            f"{mb:7.0f} | {list_s:6.2f}  {list_s / users * 1e6:7.1f}  {marginal_list:>8}"
        )
        previous = (users, sync_s, mb, list_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", help="sizes, comma-separated (e.g. 10000,30000,100000)")
    parser.add_argument("--list-with", help="the idprov executable whose listing is timed")
    args = parser.parse_args()
    if args.list_with:
        LIST[0] = args.list_with
    if args.scale:
        scale([int(n) for n in args.scale.split(",")], args.runs)
    else:
        one_size(args.users, args.runs)


if __name__ == "__main__":
    main()
