"""A bounded load test of `idprov serve`: 8 SCIM clients create 2,000 users at once.

`idprov serve` runs as its own process (as in production: it does not share the GIL
with the clients) on loopback, acting for an application whose identity provider is
bench/fast_scim2_server.py, run as a process of its own (in a thread of this one, it
shared the GIL with the clients and slowed the figure). Each client is a
thread with one keep-alive ``http.client`` connection (the cheapest client here, so
that the figure is the server's) POSTing new users, each with a work email and a name.

Checked at the end: every response 201 and none 5xx; the server lists exactly the
users sent (none lost, none doubled); the outbound target holds every one of them
(each created before its response was sent); the outbox is empty and the ledger has
a remote id for each. Prints requests/s and latency percentiles. ``--compare`` also
measures, in the same run (these machines are shared and noisy), idprov without an
identity provider (the cost of the push) and scim2-server's in-memory reference
storage on the same ASGI server (the cost of idprov's core and SQLite).

Usage: python bench/serve_load.py [--users 2000] [--clients 8] [--workers 1,2] [--compare]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from outbound_push import server_stats, start_server, stop  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def config_text(data_dir: str, target: str | None, blocking: bool = True) -> str:
    idps = (
        f"""
identity_providers:
  - name: fast
    connector: scim2
    blocking: {"true" if blocking else "false"}
    options: {{base_url: "{target}", auth: bearer, token: env:BENCH_TARGET_TOKEN}}
"""
        if target
        else ""
    )
    return f"""
version: 1
data_dir: {data_dir}
{idps}
applications:
  - name: loader
    identity_providers: [{"fast" if target else ""}]
    inbound_token: env:BENCH_INBOUND_TOKEN
"""


BASELINE = """
import uvicorn
from scim2_models import ScimProvider
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.utils import (
    load_default_resource_types, load_default_schemas, load_default_service_provider_config
)
from idprov.inbound.serve_http import base_url, bind

provider = ScimProvider.from_discovery(
    load_default_schemas().values(),
    load_default_resource_types().values(),
    config=load_default_service_provider_config(),
)
sock = bind("127.0.0.1", 0)
print("baseline at", base_url(sock), "for -", flush=True)
config = uvicorn.Config(ASGIApplication(AsyncInMemoryStorage(), provider), log_level="warning")
uvicorn.Server(config).run(sockets=[sock])
"""
"""The baseline: scim2-server's reference in-memory storage, same ASGI server, no idprov."""


def start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server process; its first line says `... at URL ...`."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if " at " not in line:
        process.kill()
        raise SystemExit(f"{command[0]} did not start: {line!r}")
    return process, line.split(" at ", 1)[1].split(" ", 1)[0]


def serve_command(config: Path, workers: int) -> list[str]:
    idprov = Path(sys.executable).parent / "idprov"
    command = [str(idprov), "--config", str(config), "serve", "--port", "0"]
    command += ["--workers", str(workers)]
    return command + ["--access-log", str(config.parent / "access.log")]


class Client:
    """One keep-alive connection, POSTing users and timing each request."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.prefix = parts.path
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = json.dumps(body).encode() if body is not None else None
        self.connection.request(method, self.prefix + path, payload, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}

    def create(self, names: list[str]) -> list[tuple[int, float]]:
        out = []
        for name in names:
            body = {
                "schemas": [USER],
                "userName": name,
                "name": {"givenName": "Load", "familyName": name},
                "emails": [{"value": f"{name}@example.com", "type": "work"}],
            }
            start = time.perf_counter()
            status, _ = self.request("POST", "/Users", body)
            out.append((status, time.perf_counter() - start))
        self.connection.close()
        return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its children (`--workers`) have used so
    far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


def load(
    url: str, token: str, users: int, clients: int, pid: int
) -> tuple[float, list[float], float]:
    """Create ``users`` users from ``clients`` threads; check that all were created.
    Returns the wall time, the latencies and the server's CPU seconds per request."""
    names = [f"load{i:05d}" for i in range(users)]
    shares = [names[i::clients] for i in range(clients)]
    cpu = cpu_seconds(pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        batches = list(pool.map(lambda share: Client(url, token).create(share), shares))
    elapsed = time.perf_counter() - start
    cpu = (cpu_seconds(pid) - cpu) / users
    results = [r for batch in batches for r in batch]
    statuses = sorted({s for s, _ in results})
    assert statuses == [201], f"statuses: {statuses}"
    _, listing = Client(url, token).request("GET", "/Users?count=0")
    assert listing["totalResults"] == users, f"lost or doubled: {listing['totalResults']}"
    return elapsed, sorted(t for _, t in results), cpu


def summary(label: str, users: int, elapsed: float, latencies: list[float], cpu: float) -> str:
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    return (
        f"{label}: {users / elapsed:,.0f} requests/s ({users} users, {elapsed:.2f} s; "
        f"latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
        f"server CPU {cpu * 1000:.2f} ms per request)"
    )


def run_idprov(
    users: int, clients: int, outbound: bool, blocking: bool = True, workers: int = 1
) -> tuple[float, float, str]:
    """Load `idprov serve` (with or without an outbound IdP) and check everything.
    Returns requests/s, the server's CPU seconds per request, and a summary."""
    target_token, inbound_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    target, target_url = start_server(target_token) if outbound else (None, None)
    env = {**os.environ, "BENCH_TARGET_TOKEN": target_token, "BENCH_INBOUND_TOKEN": inbound_token}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "idprov.yaml"
        config.write_text(config_text(str(Path(tmp) / "data"), target_url, blocking))
        process, url = start(serve_command(config, workers), env)
        try:
            elapsed, latencies, cpu = load(url, inbound_token, users, clients, process.pid)
            if not blocking:
                drained = wait_for_worker(Path(tmp) / "data" / "idprov.db")
        finally:
            process.terminate()
            process.wait(30)
        db = sqlite3.connect(Path(tmp) / "data" / "idprov.db")
        outbox = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        ledger = db.execute("SELECT count(*) FROM ledger WHERE remote_id IS NOT NULL").fetchone()[0]
        db.close()
    label = "idprov serve, outbound to a SCIM target" if outbound else "idprov serve, no IdP"
    if outbound and not blocking:
        label = "idprov serve, outbound to a blocking: false SCIM target"
    if workers > 1:
        label += f", {workers} workers"
    text = summary(label, users, elapsed, latencies, cpu) + "; no 5xx, none lost"
    if not blocking:
        text += f"; the worker emptied the outbox {drained:.1f} s after the last response"
    if target is not None:
        stats = server_stats(target_url, target_token)
        stop(target)
        assert stats["users"] == users, f"outbound: {stats['users']} of {users} arrived"
        assert outbox == 0 and ledger == users, f"outbox {outbox}, ledger {ledger}"
        text += f"; all {stats['users']} at the target, outbox empty"
    return users / elapsed, cpu, text


def wait_for_worker(db_path: Path, limit: float = 300.0) -> float:
    """Seconds until the server's outbox worker has pushed every row."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        db = sqlite3.connect(db_path)
        left = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        db.close()
        if left == 0:
            return time.perf_counter() - start
        time.sleep(0.1)
    raise SystemExit(f"the outbox worker did not drain the outbox in {limit:.0f} s")


def run_baseline(users: int, clients: int) -> tuple[float, float, str]:
    process, url = start([sys.executable, "-c", BASELINE], dict(os.environ))
    try:
        elapsed, latencies, cpu = load(url, "-", users, clients, process.pid)
    finally:
        process.terminate()
        process.wait(30)
    text = summary("baseline, scim2-server in memory", users, elapsed, latencies, cpu)
    return users / elapsed, cpu, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also measure idprov without an IdP, and scim2-server in memory (the baseline)",
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="idprov serve --workers (processes); a list (1,2) measures each in the run",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    measured = {}
    for workers in counts:
        kinds = [("blocking", True, True)]
        if args.compare:
            kinds += [("non-blocking", True, False), ("no IdP", False, True)]
        for kind, outbound, blocking in kinds:
            rate, cpu, text = run_idprov(
                args.users, args.clients, outbound, blocking=blocking, workers=workers
            )
            measured[workers, kind] = rate, cpu
            print(text, flush=True)
    if not args.compare:
        return
    baseline, baseline_cpu, text = run_baseline(args.users, args.clients)
    print(text)
    for workers in counts:
        ratios = ", ".join(
            f"{rate / baseline:.2f}x {kind} ({cpu / baseline_cpu:.1f}x the CPU per request)"
            for (count, kind), (rate, cpu) in measured.items()
            if count == workers
        )
        print(f"--workers {workers}: {ratios}")
    print("(CPU per request is steadier than throughput on a shared machine)")


if __name__ == "__main__":
    main()
