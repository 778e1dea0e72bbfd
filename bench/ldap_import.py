"""Importing users with roles into LDAP: `idprov import users` vs ``ldapadd -f``, in one run.

N users (default 10,000), two of seven roles each (bench/ldap_common.py's data set).
Each round starts two fresh private slapd servers (same configuration; ``dbnosync``
unless --sync) and times, alternating which goes first, whole commands:
  (a) `idprov import users users.csv --domain CORP --create-roles --no-push`, end to
      end: its checks, the directory writes, the audit, the import journal;
  (b) ``ldapadd -f`` of the same entries as LDIF: the users, then the seven groups
      with their members (what idprov writes).
Checks that both directories then hold the same users and the same members, and
prints medians, ranges and the ratio b/a (target >= 0.8). With --users-only, no roles
column and no groups.

Usage: python bench/ldap_import.py [--users N] [--rounds R] [--sync] [--users-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from ldap_common import (
    IDPROV,
    Run,
    config_text,
    groups_ldif,
    idprov_env,
    ldap_tool,
    report,
    start_slapd,
    timed,
    users_ldif,
    write_csv,
)

from tests.peers.slapd import GROUPS_DN, PEOPLE_DN, Slapd

TARGET = 0.8


def directory(server: Slapd) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[str]]]:
    """Users (attributes idprov writes) and members of each group, as ldapsearch sees them."""
    users = {
        e.dn.lower(): {k: sorted(v) for k, v in e.attributes.items() if k != "userpassword"}
        for e in server.search(PEOPLE_DN, "(objectClass=person)", "*", scope="one")
    }
    groups = {
        (e.first("cn") or "").lower(): sorted(m.lower() for m in e.get("member"))
        for e in server.search(GROUPS_DN, "(objectClass=groupOfNames)", "cn", "member")
    }
    return users, groups


def one_round(args: argparse.Namespace, work: Path, flip: bool) -> tuple[Run, Run]:
    users = range(args.users)
    ours_server = start_slapd(work / "ours", sync=args.sync)
    theirs_server = start_slapd(work / "theirs", sync=args.sync)
    try:
        config = work / "idprov.yaml"
        config.write_text(config_text(ours_server, work))
        csv_path, ldif_path = work / "users.csv", work / "all.ldif"
        write_csv(csv_path, users, roles=not args.users_only)
        groups = "" if args.users_only else "\n" + groups_ldif(users)
        ldif_path.write_text(users_ldif(users) + groups, encoding="utf-8")
        ours_cmd = [IDPROV, "import", "users", str(csv_path), "--domain", "CORP",
                    "--create-roles", "--no-push", "--quiet", "--json"]  # fmt: skip
        theirs_cmd = ldap_tool(theirs_server, "ldapadd", "-f", str(ldif_path))
        env = idprov_env(config)
        if flip:
            theirs = timed(theirs_server, theirs_cmd)
        ours = timed(ours_server, ours_cmd, env)
        if not flip:
            theirs = timed(theirs_server, theirs_cmd)
        if directory(ours_server) != directory(theirs_server):
            raise SystemExit("the two directories differ after the import")
    finally:
        ours_server.stop()
        theirs_server.stop()
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sync", action="store_true", help="slapd fsyncs (no dbnosync)")
    parser.add_argument("--users-only", action="store_true")
    args = parser.parse_args()
    ours, theirs = [], []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as name:
            a, b = one_round(args, Path(name), flip=i % 2 == 1)
        ours.append(a)
        theirs.append(b)
    what = "users only" if args.users_only else "users with 2 of 7 roles each"
    durability = "fsync per write" if args.sync else "dbnosync"
    print(f"== LDAP import of {args.users:,} {what}; {durability}; {args.rounds} rounds")
    a_wall = report("idprov import users (CLI, end to end)", ours)
    b_wall = report("ldapadd -f (users" + ("" if args.users_only else " + groups") + ")", theirs)
    each = [t.wall / o.wall for o, t in zip(ours, theirs, strict=True)]
    print(
        f"  ratio ldapadd/idprov: {b_wall / a_wall:.2f} (range {min(each):.2f}-{max(each):.2f};"
        f" target >= {TARGET}); idprov {args.users / a_wall:,.0f} users/s"
    )
    sys.exit(0 if statistics.median(each) >= TARGET else 1)


if __name__ == "__main__":
    main()
