"""Adding users to OpenLDAP: idprov's LDAP userstore vs ``ldapadd``, in one run.

Adds N users (default 10,000; each with mail, givenName, sn, cn, displayName and an
{SSHA} userPassword) to a fresh private slapd (tests/peers/slapd.py's, started from
this script)
(a) through idprov: an LDAP userstore opened by an IdentityService from a config,
    then ``store.add_users(rows)``, its bulk path (pipelined adds on one connection);
(b) with ``ldapadd -f`` of an LDIF file holding the same entries, on another fresh
    database with the same configuration.
Each tool is timed from start to finish (ldapadd's process start included, idprov's
bind included). Checks that both directories hold N users with equal attributes, and
prints entries/s and the ratio a/b (target >= 0.8), the median of --repeat rounds
that alternate which tool goes first, with the CPU time per entry of the client and
of slapd (a steadier figure than wall time on a busy machine). It measures both
slapd's default durability (an fsync per add) and ``dbnosync`` (CPU-bound: the harder
case for a Python client).

Usage: python bench/ldap_add.py [--users N] [--window W] [--durability both|sync|nosync]
       [--repeat R] [--one-by-one M]   (M users through the one-at-a-time add_user too)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from idprov.config import load_text  # noqa: E402
from idprov.provisioning.service import IdentityService  # noqa: E402
from idprov.userstores.passwords import hash_ssha  # noqa: E402
from tests.peers.slapd import PEOPLE_DN, Slapd  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from ldap_common import Run, children_cpu, config_text, slapd_cpu  # noqa: E402

GROUPS_DN = PEOPLE_DN.replace("ou=people", "ou=groups")
CLASSES = ["inetOrgPerson", "organizationalPerson", "person", "top"]


def make_rows(count: int) -> list[tuple[str, dict[str, str], str]]:
    rows = []
    for i in range(count):
        claims = {
            "email": f"user{i:05d}@example.com",
            "given_name": "User",
            "family_name": f"Number{i}",
            "display_name": f"User Number{i}",
        }
        rows.append((f"user{i:05d}", claims, hash_ssha(f"password-{i}")))
    return rows


def ldif_of(rows: list[tuple[str, dict[str, str], str]]) -> str:
    """The entries idprov writes for ``rows``, as LDIF (cn is the display name)."""
    blocks = []
    for username, claims, password in rows:
        lines = [f"dn: uid={username},{PEOPLE_DN}"]
        lines += [f"objectClass: {c}" for c in CLASSES]
        lines += [
            f"uid: {username}",
            f"mail: {claims['email']}",
            f"givenName: {claims['given_name']}",
            f"sn: {claims['family_name']}",
            f"displayName: {claims['display_name']}",
            f"cn: {claims['display_name']}",
            f"userPassword: {password}",
        ]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def fresh_server(workdir: Path, sync: bool) -> Slapd:
    server = Slapd(workdir, dbnosync=not sync)
    server.start()
    server.load_base()
    return server


def run_idprov(server: Slapd, workdir: Path, rows: list, window: int) -> Run:
    with IdentityService(load_text(config_text(server, workdir), "bench.yaml")) as svc:
        store = svc.store("CORP")
        start, cpu, served = time.perf_counter(), time.process_time(), slapd_cpu(server)
        outcomes = store.add_users(rows, window=window)  # type: ignore[attr-defined]
        run = Run(
            time.perf_counter() - start, time.process_time() - cpu, slapd_cpu(server) - served
        )
    failed = [o for o in outcomes if isinstance(o, Exception)]
    if failed:
        raise SystemExit(f"idprov: {len(failed)} rows failed, first: {failed[0]}")
    return run


def run_one_by_one(server: Slapd, workdir: Path, rows: list) -> float:
    with IdentityService(load_text(config_text(server, workdir), "bench.yaml")) as svc:
        store = svc.store("CORP")
        start = time.perf_counter()
        for username, claims, password in rows:
            store.add_user(username, claims, password)
        return time.perf_counter() - start


def run_ldapadd(server: Slapd, workdir: Path, ldif: str) -> Run:
    path = workdir / "users.ldif"
    path.write_text(ldif, encoding="utf-8")
    start, cpu, served = time.perf_counter(), children_cpu(), slapd_cpu(server)
    server.tool("ldapadd", "-f", str(path))
    return Run(time.perf_counter() - start, children_cpu() - cpu, slapd_cpu(server) - served)


def entries(server: Slapd) -> dict[str, dict[str, list[str]]]:
    found = server.search(PEOPLE_DN, "(objectClass=person)", "*", scope="one")
    return {e.dn.lower(): {k: sorted(v) for k, v in e.attributes.items()} for e in found}


def compare(count: int, a: Slapd, b: Slapd) -> None:
    ours, theirs = entries(a), entries(b)
    if len(ours) != count or ours != theirs:
        differ = [dn for dn in ours if ours[dn] != theirs.get(dn)][:3]
        raise SystemExit(f"directories differ: {len(ours)} vs {len(theirs)} entries; {differ}")


def one_round(args: argparse.Namespace, rows: list, ldif: str, sync: bool, flip: bool) -> tuple:
    """(idprov Run, ldapadd Run, one-by-one seconds or None) on fresh servers; ``flip``
    runs ldapadd first."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a, b = fresh_server(work / "a", sync), fresh_server(work / "b", sync)
        try:
            if flip:
                theirs = run_ldapadd(b, work / "b", ldif)
            ours = run_idprov(a, work / "a", rows, args.window)
            if not flip:
                theirs = run_ldapadd(b, work / "b", ldif)
            compare(len(rows), a, b)
        finally:
            a.stop()
            b.stop()
        single = None
        if args.one_by_one:
            c = fresh_server(work / "c", sync)
            try:
                single = run_one_by_one(c, work / "c", rows[: args.one_by_one])
            finally:
                c.stop()
    return ours, theirs, single


def measure(args: argparse.Namespace, rows: list, ldif: str, sync: bool) -> float:
    """Median of ``--repeat`` rounds (alternating which tool goes first); prints them."""
    rounds = [one_round(args, rows, ldif, sync, flip=i % 2 == 1) for i in range(args.repeat)]
    n = len(rows)
    label = "fsync per add (slapd default)" if sync else "dbnosync"
    print(f"== {n} users, {label}, median of {args.repeat}")
    ours = report(f"idprov add_users (window {args.window})", n, [r[0] for r in rounds])
    theirs = report("ldapadd -f", n, [r[1] for r in rounds])
    if args.one_by_one:
        rate = args.one_by_one / statistics.median(r[2] for r in rounds)
        print(f"  {'idprov add_user, one by one':32} {rate:7.0f} entries/s")
    each = ", ".join(f"{r[1].wall / r[0].wall:.2f}" for r in rounds)
    print(f"  ratio idprov/ldapadd: {theirs / ours:.2f} (rounds: {each}; target >= 0.8)")
    return theirs / ours


def report(label: str, n: int, runs: list[Run]) -> float:
    """Print the median wall time, rate and CPU per entry; returns the wall time."""
    wall = statistics.median(r.wall for r in runs)
    client = statistics.median(r.client_cpu for r in runs) / n * 1e6
    server = statistics.median(r.server_cpu for r in runs) / n * 1e6
    print(
        f"  {label:32} {wall:6.2f} s {n / wall:7.0f} entries/s   CPU per entry: "
        f"client {client:4.0f} us, slapd {server:4.0f} us"
    )
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--durability", choices=["both", "sync", "nosync"], default="both")
    parser.add_argument("--one-by-one", type=int, default=0, metavar="M")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = make_rows(args.users)
    ldif = ldif_of(rows)
    modes = {"both": [True, False], "sync": [True], "nosync": [False]}[args.durability]
    ratios = [measure(args, rows, ldif, sync) for sync in modes]
    sys.exit(0 if min(ratios) >= 0.8 else 1)


if __name__ == "__main__":
    main()
