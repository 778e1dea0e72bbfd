"""Listing LDAP users: `idprov user list --domain CORP --limit 0 --json` vs ``ldapsearch``.

A fresh private slapd holds N users (default 10,000) and seven groups, two per user
(bench/ldap_common.py's data set, added with ``ldapadd``). Timed as whole commands,
alternating which goes first, --rounds times:
  (a) idprov's listing, every user with its claims and roles, as JSON;
  (b) ``ldapsearch`` of the same user entries with the attributes idprov reads
      (all user attributes, entryUUID and the timestamps), as LDIF.
Checks that idprov listed every user with its two roles, then prints the medians,
ranges and the ratio b/a (target >= 0.33). Also times a page, `idprov user list
--domain CORP --limit 50 --json` (its walk reads every user's name to order them).

Usage: python bench/ldap_list.py [--users N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ldap_common import (
    IDPROV,
    alternate,
    config_text,
    groups_ldif,
    idprov_env,
    ldap_tool,
    ldapadd,
    ratios,
    report,
    roles_of,
    start_slapd,
    timed,
    users_ldif,
)

from tests.peers.slapd import PEOPLE_DN

TARGET = 0.33


def check(listing: str, count: int) -> None:
    users = json.loads(listing)["items"]
    if len(users) != count:
        raise SystemExit(f"idprov listed {len(users)} users, not {count}")
    for user in users:
        i = int(user["username"].removeprefix("user"))
        if sorted(user["roles"]) != sorted(roles_of(i)) or len(user["claims"]) != 8:
            raise SystemExit(f"{user['username']} listed wrong: {user}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        server = start_slapd(work / "slapd")
        try:
            users = range(args.users)
            ldapadd(server, users_ldif(users) + "\n" + groups_ldif(users), work / "all.ldif")
            config = work / "idprov.yaml"
            config.write_text(config_text(server, work))
            env = idprov_env(config)
            ours_cmd = [IDPROV, "user", "list", "--domain", "CORP", "--limit", "0", "--json"]
            listing = subprocess.run(ours_cmd, env=env, capture_output=True, text=True)
            if listing.returncode:
                raise SystemExit(listing.stderr)
            check(listing.stdout, args.users)
            theirs_cmd = ldap_tool(
                server, "ldapsearch", "-LLL", "-b", PEOPLE_DN, "(objectClass=inetOrgPerson)",
                "*", "entryUUID", "createTimestamp", "modifyTimestamp",
            )  # fmt: skip
            ours, theirs = alternate(
                args.rounds, lambda: timed(server, ours_cmd, env), lambda: timed(server, theirs_cmd)
            )
            page_cmd = [*ours_cmd[:5], "--limit", "50", "--json"]
            page = [timed(server, page_cmd, env) for _ in range(args.rounds)]
        finally:
            server.stop()
    print(f"== {args.users:,} LDAP users, 2 roles each; {args.rounds} rounds")
    a = report("idprov user list --domain CORP --limit 0 --json", ours)
    b = report("ldapsearch of the same entries", theirs)
    report("idprov user list --domain CORP --limit 50 --json", page)
    each = [t.wall / o.wall for o, t in zip(ours, theirs, strict=True)]
    print(
        f"  ratio ldapsearch/idprov: {b / a:.2f} (rounds: {ratios(ours, theirs)}; "
        f"range {min(each):.2f}-{max(each):.2f}; target >= {TARGET})"
    )
    sys.exit(0 if statistics.median(each) >= TARGET else 1)


if __name__ == "__main__":
    main()
