"""python-ldap vs ldap3 vs idprov's own BER path (ldap_bulk on ldap3's socket), in one run.

For the choice of LDAP client library (issue 17): on a fresh private slapd, N users
(default 10,000; bench/ldap_common.py's data set) are
  (1) added, 16 requests in flight: python-ldap ``add_ext``/``result3`` (asynchronous,
      on OpenLDAP's libldap), ldap3 (one synchronous add at a time: its asynchronous
      strategies decode no faster), ldap_bulk's pipeline;
  (2) read back with a paged search of every user attribute (page size 500).
Each is measured --rounds times on a fresh database (adds) or the same one (search),
printing wall and client CPU per entry, and the import time of each library.
python-ldap has no wheel on PyPI: it builds against libldap2-dev and libsasl2-dev
with a C compiler; run this with a Python that has it (the others are skipped).

Usage: python bench/ldap_clients.py [--users N] [--rounds R]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ldap_common import COLUMNS, ROOT, claims_of, ldapadd, start_slapd, user_dn, users_ldif

from tests.peers.slapd import PEOPLE_DN, Slapd

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
try:
    import ldap  # python-ldap
    from ldap.controls import SimplePagedResultsControl
except ImportError:
    ldap = None

sys.path.insert(0, str(ROOT))
from idprov.userstores import ldap_bulk  # noqa: E402

CLASSES = [b"inetOrgPerson", b"organizationalPerson", b"person", b"top"]
ATTRS = ["uid", *COLUMNS.values(), "cn", "entryUUID", "createTimestamp", "modifyTimestamp"]
WINDOW, PAGE = 16, 500


def entry(i: int) -> tuple[str, dict[str, list[bytes]]]:
    attrs = {COLUMNS[c]: [v.encode()] for c, v in claims_of(i).items()}
    attrs["uid"] = [f"user{i:07d}".encode()]
    attrs["cn"] = [claims_of(i)["display_name"].encode()]
    return user_dn(i), attrs


def ldap3_connection(server: Slapd) -> ldap3.Connection:
    host = ldap3.Server(server.url.rstrip("/"), get_info=ldap3.NONE)
    return ldap3.Connection(host, server.root_dn, server.root_password, auto_bind=True)


def add_python_ldap(server: Slapd, count: int) -> None:
    conn = ldap.initialize(server.url)
    conn.simple_bind_s(server.root_dn, server.root_password)
    pending: list[int] = []
    for i in range(count):
        dn, attrs = entry(i)
        pending.append(conn.add_ext(dn, [("objectClass", CLASSES), *attrs.items()]))
        if len(pending) >= WINDOW:
            conn.result3(pending.pop(0))
    for message_id in pending:
        conn.result3(message_id)
    conn.unbind_s()


def add_ldap3(server: Slapd, count: int) -> None:
    conn = ldap3_connection(server)
    for i in range(count):
        dn, attrs = entry(i)
        conn.add(dn, [c.decode() for c in CLASSES], attrs)
    conn.unbind()


def add_bulk(server: Slapd, count: int) -> None:
    conn = ldap3_connection(server)
    classes = ldap_bulk.encode_attribute("objectClass", CLASSES)
    pipeline = ldap_bulk.Pipeline(conn.socket, WINDOW)
    replies = pipeline.run(count, lambda i, mid: ldap_bulk.encode_add(mid, *entry(i), classes))
    assert all(r is not None and r.result == 0 for r in replies)
    conn.unbind()


def search_python_ldap(server: Slapd) -> int:
    conn = ldap.initialize(server.url)
    conn.simple_bind_s(server.root_dn, server.root_password)
    control, found = SimplePagedResultsControl(True, size=PAGE, cookie=b""), 0
    while True:
        message_id = conn.search_ext(PEOPLE_DN, ldap.SCOPE_ONELEVEL, "(objectClass=inetOrgPerson)",
                                     ATTRS, serverctrls=[control])  # fmt: skip
        _, data, _, controls = conn.result3(message_id)
        found += len(data)
        control.cookie = next(c.cookie for c in controls if c.controlType == control.controlType)
        if not control.cookie:
            conn.unbind_s()
            return found


def search_ldap3(server: Slapd) -> int:
    conn = ldap3_connection(server)
    found = conn.extend.standard.paged_search(PEOPLE_DN, "(objectClass=inetOrgPerson)",
        ldap3.LEVEL, attributes=ATTRS, paged_size=PAGE, generator=True)  # fmt: skip
    count = sum(1 for _ in found)
    conn.unbind()
    return count


def search_bulk(server: Slapd) -> int:
    conn = ldap3_connection(server)
    pipeline = ldap_bulk.Pipeline(conn.socket, 1)
    flt = ldap_bulk.equality("objectClass", "inetOrgPerson")
    cookie, found = b"", 0
    while True:
        (reply,) = pipeline.run(1, functools.partial(page, flt, cookie))
        assert reply is not None and reply.result == 0
        found, cookie = found + len(reply.entries), reply.cookie
        if not cookie:
            conn.unbind()
            return found


def page(search_filter: bytes, cookie: bytes, _: int, message_id: int) -> bytes:
    """The request for one page of every user, after ``cookie``."""
    controls = ldap_bulk.paged(PAGE, cookie)
    return ldap_bulk.encode_search(message_id, PEOPLE_DN, "one", search_filter, ATTRS, controls)


def measure(run: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def line(label: str, count: int, runs: list[tuple[float, float]]) -> None:
    walls = [w for w, _ in runs]
    cpu = statistics.median(c for _, c in runs) / count * 1e6
    print(f"  {label:40} wall {statistics.median(walls):6.2f} s "
          f"(range {min(walls):.2f}-{max(walls):.2f}), client CPU {cpu:5.0f} us/entry")  # fmt: skip


def import_ms(module: str) -> str:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True)  # fmt: skip
    last = done.stderr.strip().splitlines()[-1:] or ["?"]
    return f"{int(last[0].split('|')[1]) / 1000:.0f} ms" if "|" in last[0] else "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    adders = {"python-ldap add_ext/result3": add_python_ldap, "ldap3 add": add_ldap3,
              "ldap_bulk pipeline": add_bulk}  # fmt: skip
    searchers = {"python-ldap search_ext": search_python_ldap, "ldap3 paged_search": search_ldap3,
                 "ldap_bulk paged search": search_bulk}  # fmt: skip
    if ldap is None:
        print("python-ldap is not installed here: its rows are skipped")
        adders = {k: v for k, v in adders.items() if "python-ldap" not in k}
        searchers = {k: v for k, v in searchers.items() if "python-ldap" not in k}
    adds: dict[str, list[tuple[float, float]]] = {k: [] for k in adders}
    searches: dict[str, list[tuple[float, float]]] = {k: [] for k in searchers}
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        for r in range(args.rounds):
            for label, add in adders.items():
                server = start_slapd(work / f"{r}-{len(adds[label])}-{add.__name__}")
                try:
                    adds[label].append(measure(functools.partial(add, server, args.users)))
                finally:
                    server.stop()
        server = start_slapd(work / "search")
        try:
            ldapadd(server, users_ldif(range(args.users)), work / "users.ldif")
            for _ in range(args.rounds):
                for label, search in searchers.items():
                    searches[label].append(measure(functools.partial(search, server)))
        finally:
            server.stop()
    print(f"== {args.users:,} entries, {args.rounds} rounds; slapd with dbnosync")
    print(" adds, 16 in flight (ldap3: one at a time)")
    for label, runs in adds.items():
        line(label, args.users, runs)
    print(" paged search of every user attribute")
    for label, runs in searches.items():
        line(label, args.users, runs)
    print(f" import time: python-ldap {import_ms('ldap')}, ldap3 {import_ms('ldap3')}")


if __name__ == "__main__":
    main()
