"""`GET /Users?filter=...` of `idprov serve` at 100,000 users against the same at 1,000.

The filters are those SCIM clients send to find one user before they change it
(Microsoft Entra ID: userName, emails[type eq "work"], externalId; Okta: userName),
and those incremental readers send (meta.lastModified gt), plus a prefix and an
``or``. Each store is the embedded SQLite one, filled through the store's bulk import
(each user with a work email, a display name, an externalId of the reading
application; the last 10 modified later than the rest). `idprov serve` runs as its own
process; one keep-alive ``http.client`` connection asks each filter ``--requests``
times for a random user, after 20 unmeasured requests. Every answer is checked (200,
exactly the expected users). Prints, per filter, the p95 at each size and their ratio:
the issue asks for 100k ≤ 3× 1k.

Usage: python bench/scim_filters.py [--small 1000] [--large 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

TOKEN = "bench-filter-token-1d2c3b4a"
LATE = "2031-01-01T00:00:00.000Z"
"""The last 10 users are modified at this time; the others in 2030."""


def config_text(data_dir: Path) -> str:
    return f"""
version: 1
data_dir: {data_dir}
applications:
  - name: reader
    inbound_token: env:BENCH_FILTER_TOKEN
"""


def fill(data_dir: Path, count: int) -> None:
    """``count`` users through the store's bulk import, with externalIds."""
    from idprov.config import load_text
    from idprov.provisioning.external_ids import ExternalIds
    from idprov.provisioning.service import IdentityService
    from idprov.userstores.base import ImportedUser

    config = load_text(config_text(data_dir), "bench.yaml")
    with IdentityService(config) as service:
        store = service.store("PRIMARY")
        external = ExternalIds(service.state.db)
        for start in range(0, count, 5000):
            batch = [_user(i, ImportedUser) for i in range(start, min(start + 5000, count))]
            with store.transaction():
                store.import_users(batch)
                external.db.conn.executemany(
                    "INSERT INTO inbound_external_ids VALUES ('reader', 'user', ?, ?)",
                    [(u.id, f"ext-{u.username}") for u in batch],
                )
        with store.transaction():
            store._execute(
                "UPDATE users SET modified = ? WHERE username_key >= ?",
                [LATE, f"user{count - 10:07d}"],
            )


def _user(i: int, kind: type) -> object:
    name = f"user{i:07d}"
    claims = {"email": f"{name}@example.com", "display_name": f"User {i}", "active": "true"}
    return kind(str(uuid.uuid4()), name, claims, None, None, False)


FILTERS = {
    "userName eq": lambda i, n: (f'userName eq "user{i:07d}"', [i]),
    "emails[work] eq (Entra)": lambda i, n: (
        f'emails[type eq "work"].value eq "user{i:07d}@example.com"',
        [i],
    ),
    "externalId eq": lambda i, n: (f'externalId eq "ext-user{i:07d}"', [i]),
    "userName sw (10)": lambda i, n: (
        f'userName sw "user{i // 10:06d}"',
        [j for j in range(i // 10 * 10, i // 10 * 10 + 10) if j < n],
    ),
    "meta.lastModified gt (10)": lambda i, n: (
        'meta.lastModified gt "2030-12-31T00:00:00Z"',
        list(range(n - 10, n)),
    ),
    "userName eq or emails eq": lambda i, n: (
        f'userName eq "user{i:07d}" or emails eq "user{(i + 1) % n:07d}@example.com"',
        sorted({i, (i + 1) % n}),
    ),
}


def serve(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    config = data_dir / "bench.yaml"
    config.write_text(config_text(data_dir))
    idprov = str(Path(sys.executable).parent / "idprov")
    env = {**os.environ, "BENCH_FILTER_TOKEN": TOKEN}
    process = subprocess.Popen(
        [idprov, "--config", str(config), "serve", "--port", "0", "--access-log", os.devnull],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, line.split(" at ", 1)[1].split(" ", 1)[0]


def measure(url: str, count: int, requests: int, rng: random.Random) -> dict[str, float]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    p95 = {}
    for label, make in FILTERS.items():
        times = []
        for n in range(requests + 20):
            scim_filter, expected = make(rng.randrange(count), count)
            path = f"{parts.path}/Users?filter={quote(scim_filter)}&attributes=userName"
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = json.loads(response.read())
            elapsed = time.perf_counter() - start
            assert response.status == 200, body
            names = sorted(r["userName"] for r in body.get("Resources", []))
            assert names == [f"user{j:07d}" for j in expected], (scim_filter, names)
            if n >= 20:
                times.append(elapsed)
        p95[label] = statistics.quantiles(times, n=20)[18]
    conn.close()
    return p95


def run(count: int, requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        fill(data_dir, count)
        print(f"  {count:,} users stored in {time.perf_counter() - started:.1f} s", flush=True)
        process, url = serve(data_dir)
        try:
            return measure(url, count, requests, random.Random(count))
        finally:
            process.terminate()
            process.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print(f"baseline: {args.small:,} users")
    small = run(args.small, args.requests)
    print(f"measured: {args.large:,} users")
    large = run(args.large, args.requests)
    print(f"\n{'filter':28} {'p95 small':>10} {'p95 large':>10} {'ratio':>6}")
    worst = 0.0
    for label in FILTERS:
        ratio = large[label] / small[label]
        worst = max(worst, ratio)
        print(f"{label:28} {small[label] * 1000:8.1f}ms {large[label] * 1000:8.1f}ms {ratio:5.2f}×")
    print(f"\nworst ratio {worst:.2f}× (goal ≤ 3×)")


if __name__ == "__main__":
    main()
