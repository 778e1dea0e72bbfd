"""Bulk import throughput and memory, against the raw SQLite limit, in one run.

1. Generates N users (default 100,000; 8 claims and 2 roles each, no passwords).
2. (a) `idprov import users FILE --no-push` run as a user runs it (a process, the
   command's own batch size), into a fresh embedded store; (b) what a user would reach
   for instead: `sqlite-utils insert DB users FILE --csv` (no checks, no roles, no
   audit, no outbox); (c) the raw limit: the same rows into the same schema with
   sqlite3 executemany in one transaction (users and their role rows). Prints users/s
   and the ratios a/b (target >= 1.0) and a/c (target >= 0.5).
3. --passwords P: P users with a password column, and the KDF's own hashes/s on all
   cores (a process pool hashing the same number of passwords): ratio target >= 0.85.
4. --rss N: peak RSS of a separate `idprov import users` process for an N-row file
   (target < 300 MB for 1,000,000).
5. --scale 10000,30000,100000: the CLI import and the raw limit at each size, each into
   a fresh store, as µs/user and marginal µs/user between sizes (linear growth: a
   marginal cost that stays flat as the size grows).

Usage: python bench/import_users.py [--users N] [--passwords P] [--rss N] [--scale N,N,...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from idprov.config import load_text
from idprov.inbound.csv_hashing import hash_many
from idprov.inbound.csv_import import CsvImport, ImportOptions
from idprov.provisioning.service import IdentityService
from idprov.userstores.sqlite import MIGRATIONS

CLAIMS = [
    "email",
    "given_name",
    "family_name",
    "display_name",
    "title",
    "department",
    "employee_number",
    "phone_number",
]


def generate(path: Path, n: int, passwords: bool = False) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["username", *CLAIMS, "roles", *(["password"] if passwords else [])])
        for i in range(n):
            name = f"user{i:07d}"
            w.writerow(
                [
                    name,
                    f"{name}@example.com",
                    "Given",
                    f"Family{i}",
                    f"Given Family{i}",
                    "Engineer",
                    f"dept{i % 50}",
                    str(100000 + i),
                    f"+1555{i:07d}",
                    f"role{i % 7};role{(i + 3) % 7}",
                    *([f"pw-{i:07d}"] if passwords else []),
                ]
            )


def config(tmp: Path) -> IdentityService:
    return IdentityService(load_text(f"version: 1\ndata_dir: {tmp}\n", "bench.yaml"))


def through_idprov(csv_path: Path, tmp: Path) -> float:
    with config(tmp) as svc:
        for r in range(7):
            svc.add_role(f"role{r}")
        start = time.perf_counter()
        report = CsvImport(svc, csv_path, ImportOptions(push=False, batch_size=5000)).run()
        elapsed = time.perf_counter() - start
    assert report.rejected == 0 and report.created > 0, report.to_dict()
    return elapsed


def through_cli(csv_path: Path, tmp: Path) -> float:
    """`idprov import users` as a process, the roles made first (not timed)."""
    env = {**os.environ, "IDPROV_DATA_DIR": str(tmp), "IDPROV_CONFIG": ""}
    exe = str(Path(sys.executable).parent / "idprov")
    with config(tmp) as svc:
        for r in range(7):
            svc.add_role(f"role{r}")
    start = time.perf_counter()
    subprocess.run(
        [exe, "import", "users", str(csv_path), "--no-push", "--quiet", "--json"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def through_sqlite_utils(csv_path: Path, tmp: Path) -> float:
    """`sqlite-utils insert DB users FILE --csv`: a generic loader, no checks."""
    exe = str(Path(sys.executable).parent / "sqlite-utils")
    start = time.perf_counter()
    subprocess.run(
        [exe, "insert", str(tmp / "generic.db"), "users", str(csv_path), "--csv"], check=True
    )
    return time.perf_counter() - start


def raw_limit(csv_path: Path, tmp: Path) -> tuple[float, float]:
    """(parse and insert, insert alone): the rows read from the CSV into tuples, then
    executemany in one transaction; the second figure times executemany only."""
    import sqlite_utils

    path = tmp / "raw.db"
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for _, apply in MIGRATIONS:
        apply(db)
    roles = {f"role{r}": str(uuid.uuid4()) for r in range(7)}
    db.conn.executemany(
        "INSERT INTO roles (id, name, name_key, created, modified) VALUES (?, ?, ?, 'x', 'x')",
        [(i, n, n) for n, i in roles.items()],
    )
    start = time.perf_counter()
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        users, links = [], []
        for row in reader:
            uid = str(uuid.uuid4())
            claims = json.dumps(dict(zip(header[1:9], row[1:9], strict=True)))
            users.append((uid, row[0], row[0], claims, None, "x", "x"))
            links += [(uid, roles[r]) for r in row[9].split(";")]
    insert_start = time.perf_counter()
    db.execute("BEGIN")
    db.conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)", users)
    db.conn.executemany("INSERT INTO user_roles VALUES (?, ?)", links)
    db.execute("COMMIT")
    end = time.perf_counter()
    return end - start, end - insert_start


def kdf_rate(n: int) -> float:
    passwords = [f"pw-{i:07d}" for i in range(n)]
    chunks = [passwords[i : i + 64] for i in range(0, n, 64)]
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(hash_many, chunks))
    return n / (time.perf_counter() - start)


def peak_rss(n: int, tmp: Path) -> float:
    path = tmp / "rss.csv"
    generate(path, n)
    env = {**os.environ, "IDPROV_DATA_DIR": str(tmp / "rss-data")}
    exe = Path(sys.executable).parent / "idprov"
    subprocess.run(
        [
            str(exe),
            "import",
            "users",
            str(path),
            "--create-roles",
            "--quiet",
            "--no-push",
            "--json",
        ],
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def scale(sizes: list[int]) -> None:
    """`idprov import users` and the raw limit at each size: µs/user, marginal µs/user."""
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            path = tmp / "users.csv"
            generate(path, n)
            raw, _ = raw_limit(path, tmp)
            rows.append((n, through_cli(path, tmp / "idprov"), raw))
    print("users      import s  µs/user  marginal µs/user | raw s  µs/user  marginal")
    previous = None
    for n, ours, raw in rows:
        marginal = marginal_raw = "-"
        if previous is not None:
            more = n - previous[0]
            marginal = f"{(ours - previous[1]) / more * 1e6:.1f}"
            marginal_raw = f"{(raw - previous[2]) / more * 1e6:.1f}"
        print(
            f"{n:>9,}  {ours:8.2f}  {ours / n * 1e6:7.1f}  {marginal:>16} | "
            f"{raw:5.2f}  {raw / n * 1e6:7.1f}  {marginal_raw:>8}"
        )
        previous = (n, ours, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--passwords", type=int, default=0)
    parser.add_argument("--rss", type=int, default=0)
    parser.add_argument("--scale", help="sizes, comma-separated (e.g. 10000,30000,100000)")
    args = parser.parse_args()
    if args.scale:
        scale([int(n) for n in args.scale.split(",")])
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        path = tmp / "users.csv"
        generate(path, args.users)
        raw, insert_only = raw_limit(path, tmp)
        generic = through_sqlite_utils(path, tmp)
        ours = through_cli(path, tmp / "idprov")
        n = args.users
        print(f"raw: csv parse + executemany: {n / raw:,.0f} users/s ({raw:.2f} s)")
        print(f"raw: executemany alone:       {n / insert_only:,.0f} users/s ({insert_only:.2f} s)")
        print(f"sqlite-utils insert --csv:    {n / generic:,.0f} users/s ({generic:.2f} s)")
        print(f"idprov import users (CLI):    {n / ours:,.0f} users/s ({ours:.2f} s)")
        print(
            f"ratios: {generic / ours:.2f}x of sqlite-utils insert --csv (target >= 1.0x), "
            f"{raw / ours:.2f}x of parse+executemany (target >= 0.5x), "
            f"{insert_only / ours:.2f}x of executemany alone"
        )
        if args.passwords:
            pw_path = tmp / "pw.csv"
            generate(pw_path, args.passwords, passwords=True)
            kdf = kdf_rate(args.passwords)
            with_pw = args.passwords / through_idprov(pw_path, tmp / "idprov-pw")
            print(
                f"with passwords: {with_pw:,.0f} users/s; scrypt alone on "
                f"{os.cpu_count()} cores: {kdf:,.0f} hashes/s; ratio {with_pw / kdf:.2f}x "
                "(target >= 0.85x)"
            )
        if args.rss:
            print(
                f"peak RSS importing {args.rss:,} rows: {peak_rss(args.rss, tmp):,.0f} MB "
                "(target < 300 MB)"
            )


if __name__ == "__main__":
    main()
