"""Bulk import into a PostgreSQL userstore against ``COPY`` of the same rows, in one run.

Starts a private PostgreSQL cluster (tests/peers/postgres.py's; full durability:
fsync and synchronous_commit on, unless --no-fsync), generates N users (default
100,000; 8 claims and 2 of 7 roles each, no passwords, bench/import_users.py's file)
and loads them three ways, each into a fresh database with the store's schema:

(a) ``idprov import users``: the CSV import (pre-flight, policies, journal, audit) into
    a ``type: postgres`` PRIMARY store, in-process through the CLI's code;
(b) the store's bulk method alone: ``PostgresUserStore.import_users`` with the same
    rows, batches of --batch-size, one transaction each (what (a) calls per batch);
(c) the baseline: the CSV parsed into rows, then ``COPY users`` and ``COPY
    user_roles`` in one transaction with psycopg, nothing else.

Prints users/s and the ratios a/c and b/c (target >= 0.3), medians of --repeat rounds.
Usage: python bench/postgres_import.py [--users N] [--repeat R] [--batch-size B]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.import_users import CLAIMS, generate  # noqa: E402
from idprov.config import load_text  # noqa: E402
from idprov.inbound.csv_import import CsvImport, ImportOptions  # noqa: E402
from idprov.provisioning.service import IdentityService  # noqa: E402
from idprov.userstores.base import ImportedUser  # noqa: E402
from tests.peers.postgres import Cluster  # noqa: E402

ROLES = [f"role{r}" for r in range(7)]


def fresh_database(cluster: Cluster, workdir: Path) -> str:
    """A new database; returns a configuration whose PRIMARY store lives in it."""
    name = f"b_{uuid.uuid4().hex[:10]}"
    with cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    secret = workdir / "pg-password"
    secret.write_text(cluster.password + "\n")
    return (
        f"data_dir: {workdir / name}\nuserstores:\n  - domain: PRIMARY\n    type: postgres\n"
        f"    url: postgresql://idprov@{cluster.host}:{cluster.port}/{name}\n"
        f"    password: file:{secret}\n    sslmode: disable\n"
    )


def service(cluster: Cluster, workdir: Path) -> IdentityService:
    svc = IdentityService(load_text(fresh_database(cluster, workdir), "bench.yaml"))
    for role in ROLES:
        svc.add_role(role)
    return svc


def through_import(cluster: Cluster, workdir: Path, csv_path: Path, batch: int) -> float:
    with service(cluster, workdir) as svc:
        start = time.perf_counter()
        report = CsvImport(svc, csv_path, ImportOptions(push=False, batch_size=batch)).run()
        elapsed = time.perf_counter() - start
    assert report.rejected == 0 and report.created > 0, report.to_dict()
    return elapsed


def read_rows(csv_path: Path) -> list[list[str]]:
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        return list(reader)


def through_store(cluster: Cluster, workdir: Path, rows: list[list[str]], batch: int) -> float:
    users = [
        ImportedUser(
            str(uuid.uuid4()),
            row[0],
            dict(zip(CLAIMS, row[1:9], strict=True)),
            None,
            row[9].split(";"),
            False,
        )
        for row in rows
    ]
    with service(cluster, workdir) as svc:
        store = svc.store()
        start = time.perf_counter()
        for i in range(0, len(users), batch):
            with store.transaction():
                store.import_users(users[i : i + batch])
        return time.perf_counter() - start


def through_copy(cluster: Cluster, workdir: Path, csv_path: Path) -> tuple[float, float]:
    """(parse and COPY, COPY alone) into the store's schema, in one transaction."""
    with service(cluster, workdir) as svc:
        store = svc.store()
        roles = {r.name: r.id for r in store.list_roles()}
        conn = store.session.connection()  # type: ignore[attr-defined]
        start = time.perf_counter()
        users, links = [], []
        for row in read_rows(csv_path):
            uid = str(uuid.uuid4())
            claims = json.dumps(dict(zip(CLAIMS, row[1:9], strict=True)))
            stamp = "2026-11-30T00:00:00.000Z"
            users.append((uid, row[0], row[0].casefold(), claims, None, stamp, stamp))
            links += [(uid, roles[r]) for r in row[9].split(";")]
        copy_start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            columns = "id, username, username_key, claims, password_hash, created, modified"
            with cur.copy(f"COPY users ({columns}) FROM STDIN") as copy:
                for user in users:
                    copy.write_row(user)
            with cur.copy("COPY user_roles (user_id, role_id) FROM STDIN") as copy:
                for link in links:
                    copy.write_row(link)
        end = time.perf_counter()
    return end - start, end - copy_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    durable = {} if args.no_fsync else {"fsync": "on", "synchronous_commit": "on"}
    cluster = Cluster(durable)
    cluster.start()
    times: dict[str, list[float]] = {"import": [], "store": [], "parse+copy": [], "copy": []}
    try:
        with tempfile.TemporaryDirectory() as name:
            workdir = Path(name)
            csv_path = workdir / "users.csv"
            generate(csv_path, args.users)
            rows = read_rows(csv_path)
            for _ in range(args.repeat):
                parse_copy, copy_only = through_copy(cluster, workdir, csv_path)
                times["parse+copy"].append(parse_copy)
                times["copy"].append(copy_only)
                times["store"].append(through_store(cluster, workdir, rows, args.batch_size))
                times["import"].append(through_import(cluster, workdir, csv_path, args.batch_size))
    finally:
        cluster.remove()
    report(args, {k: statistics.median(v) for k, v in times.items()})


def report(args: argparse.Namespace, median: dict[str, float]) -> None:
    n = args.users
    durability = "fsync off" if args.no_fsync else "fsync on"
    print(f"{n:,} users, median of {args.repeat} rounds, PostgreSQL {durability}")
    for key, label in [
        ("parse+copy", "COPY, CSV parsing included"),
        ("copy", "COPY alone"),
        ("store", "PostgresUserStore.import_users"),
        ("import", "idprov import users"),
    ]:
        print(f"  {label:32s} {n / median[key]:>9,.0f} users/s ({median[key]:.2f} s)")
    print(
        f"ratio, the store's bulk method: {median['copy'] / median['store']:.2f}x of COPY alone "
        "(target >= 0.3x)"
    )
    print(
        f"ratio, idprov import users: {median['parse+copy'] / median['import']:.2f}x of COPY "
        f"with CSV parsing, {median['copy'] / median['import']:.2f}x of COPY alone"
    )


if __name__ == "__main__":
    main()
