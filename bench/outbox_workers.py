"""Outbox workers sharing a PostgreSQL state: four worker processes against one, in one run.

Starts a private PostgreSQL cluster (tests/peers/postgres.py's; fsync and
synchronous_commit on, unless --no-fsync) and bench/fast_scim2_server.py answering every
request after --delay seconds (default 0.02: a target that answers in 20 ms). N users
(default 20,000) are imported once into a ``type: postgres`` userstore, with the state
(``state: {url: ...}``) in the same database and a non-blocking SCIM 2.0 IdP (Bulk off:
single creates), so that N creates wait in the outbox; every run drains a fresh copy of
that database (CREATE DATABASE ... TEMPLATE) into a fresh server:

(a) one worker process;
(b) four worker processes at once;
(c) four again, one of them killed with SIGKILL once half the rows are done: its claims
    run out after its lease (--lease seconds) and the others finish its rows.

A worker is ``Outbound.work()`` (what `idprov outbox work` runs) in a process of its own,
``max_concurrency`` --concurrency (default 1: one request at a time, so that the figure
is about processes; with 2 the runs need CPU a loaded 2-core machine may not have),
claiming --batch rows at a time (default: the worker's, 500). Time runs
from the moment every worker of a run is ready (imported, connected) until the outbox is
empty. After every run the server must hold each user exactly once (N ``POST /Users`` 201,
no 409: nothing pushed twice), the outbox must be empty and the ledger hold N active
entries (nothing lost). Prints creates/s and the ratio b/a (target >= 3.2).

Usage: python bench/outbox_workers.py [--users N] [--concurrency C] [--no-fsync]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from idprov.config import load_config  # noqa: E402
from idprov.db import DatabasePool  # noqa: E402
from idprov.inbound.csv_import import CsvImport, ImportOptions  # noqa: E402
from idprov.provisioning.outbound import WORK_BATCH  # noqa: E402
from idprov.provisioning.service import IdentityService  # noqa: E402
from idprov.provisioning.state import StateStore  # noqa: E402
from tests.peers.postgres import Cluster  # noqa: E402

HERE = Path(__file__).parent
TOKEN = "bench-token"


def config_text(cluster: Cluster, workdir: Path, database: str, base_url: str, c: int) -> str:
    secret = workdir / "pg-password"
    secret.write_text(cluster.password + "\n")
    url = f"postgresql://idprov@{cluster.host}:{cluster.port}/{database}"
    keys = f"url: '{url}', password: 'file:{secret}', sslmode: disable"
    return f"""version: 1
data_dir: {workdir / "data"}
state: {{{keys}, schema: idprov}}
userstores:
  - {{domain: PRIMARY, type: postgres, {keys}, schema: directory}}
identity_providers:
  - name: target
    connector: scim2
    blocking: false
    max_concurrency: {c}
    options: {{base_url: '{base_url}', auth: bearer, token: env:BENCH_SCIM_TOKEN, bulk: never}}
applications:
  - name: resident
    identity_providers: [target]
"""


def seed(cluster: Cluster, workdir: Path, users: int) -> str:
    """A database holding ``users`` users whose creates wait in the outbox."""
    name = f"seed_{uuid.uuid4().hex[:8]}"
    with cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    path = workdir / "seed.yaml"
    path.write_text(config_text(cluster, workdir, name, "http://127.0.0.1:9/v2", 1))
    csv_path = workdir / "users.csv"
    lines = [f"user{i:06d},u{i}@example.com" for i in range(users)]
    csv_path.write_text("username,email\n" + "\n".join(lines) + "\n")
    with IdentityService(load_config(str(path))) as svc:
        report = CsvImport(svc, csv_path, ImportOptions(push=False, batch_size=5000)).run()
        assert report.created == users, report.to_dict()
        assert len(svc.outbox_rows()) == users
    return name


def worker(config_path: str, lease: float, batch: int) -> None:
    """One worker process: ready, wait for the go on stdin, work until the outbox is
    empty (a watcher on a connection of its own says when)."""
    config = load_config(config_path)
    with IdentityService(config, actor="worker") as svc:
        svc.outbound.lease, svc.outbound.batch = lease, batch
        svc.outbound.state.outbox.count()  # connected, migrated
        watcher = StateStore.open(config, DatabasePool())
        stop = threading.Event()
        print("ready", flush=True)
        sys.stdin.readline()
        thread = threading.Thread(target=_watch, args=(watcher, stop), daemon=True)
        thread.start()
        svc.outbound.work(stop=stop)
        watcher.close()


def _watch(state: StateStore, stop: threading.Event) -> None:
    while state.outbox.count():
        time.sleep(0.1)
    stop.set()


def start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, str(HERE / "fast_scim2_server.py"), "--port", "0"]
    command += ["--token", TOKEN, "--delay", str(delay)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip().rsplit(" ", 1)[-1] + "/v2"


def run(
    args: argparse.Namespace,
    cluster: Cluster,
    workdir: Path,
    seed_db: str,
    workers: int,
    kill: bool = False,
) -> float:
    """Drain a copy of the seed with ``workers`` processes; returns the seconds taken."""
    name = f"run_{uuid.uuid4().hex[:8]}"
    with cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {seed_db}")
    server, base_url = start_server(args.delay)
    path = workdir / f"{name}.yaml"
    path.write_text(config_text(cluster, workdir, name, base_url, args.concurrency))
    env = {**os.environ, "BENCH_SCIM_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, __file__, "--worker", str(path)]
    command += ["--lease", str(args.lease), "--batch", str(args.batch)]
    procs = [
        subprocess.Popen(command, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        if kill:
            _kill_midway(cluster, name, procs[0], args.users)
        for proc in procs[1:] if kill else procs:
            assert proc.wait() == 0, "a worker failed"
        elapsed = time.perf_counter() - start
        check(cluster, name, base_url, args.users)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        server.terminate()
        server.communicate(timeout=10)
    return elapsed


def _kill_midway(cluster: Cluster, database: str, victim: subprocess.Popen[str], n: int) -> None:
    with cluster.connect(database) as conn:
        while conn.execute("SELECT count(*) FROM idprov.outbox").fetchone()[0] > n // 2:
            time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()


def check(cluster: Cluster, database: str, base_url: str, n: int) -> None:
    """Every user at the target once, no create twice, nothing left, nothing lost."""
    stats = httpx.get(base_url.removesuffix("/v2") + "/_stats").json()
    statuses = {k: v for k, v in stats["statuses"].items() if k.startswith("POST /Users")}
    assert stats["users"] == n, stats
    assert statuses == {"POST /Users 201": n}, f"creates by status: {statuses}"
    with cluster.connect(database) as conn:
        left = conn.execute("SELECT count(*) FROM idprov.outbox").fetchone()[0]
        active = conn.execute(
            "SELECT count(*) FROM idprov.ledger WHERE state = 'active' AND remote_id IS NOT NULL"
        ).fetchone()[0]
    assert (left, active) == (0, n), f"outbox {left} rows, ledger {active} active"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--batch", type=int, default=WORK_BATCH)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.lease, args.batch)
        return
    durable = {} if args.no_fsync else {"fsync": "on", "synchronous_commit": "on"}
    cluster = Cluster(durable)
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as name:
            workdir = Path(name)
            seed_db = seed(cluster, workdir, args.users)
            one = run(args, cluster, workdir, seed_db, 1)
            four = run(args, cluster, workdir, seed_db, 4)
            killed = run(args, cluster, workdir, seed_db, 4, kill=True)
    finally:
        cluster.remove()
    report(args, one, four, killed)


def report(args: argparse.Namespace, one: float, four: float, killed: float) -> None:
    n = args.users
    durability = "fsync off" if args.no_fsync else "fsync on"
    print(
        f"{n:,} single creates, target answering in {args.delay * 1000:.0f} ms, "
        f"max_concurrency {args.concurrency} per worker, PostgreSQL {durability}"
    )
    for label, seconds in [
        ("1 worker", one),
        ("4 workers", four),
        ("4 workers, 1 killed midway", killed),
    ]:
        print(f"  {label:28s} {n / seconds:>7,.0f} creates/s ({seconds:.1f} s)")
    print("  every run: each user created once (no 409), outbox empty, ledger complete")
    print(f"ratio, 4 workers / 1 worker: {one / four:.2f}x (target >= 3.2x)")


if __name__ == "__main__":
    main()
