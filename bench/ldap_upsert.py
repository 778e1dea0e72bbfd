"""`idprov import users --mode upsert` changing LDAP users' roles and a claim, in rows/s,
with ``ldapmodify -f`` of the same changes in the same run as a reference.

Each round: two fresh private slapd servers holding N users (default 5,000) in seven
roles, two each (bench/ldap_common.py's data set, added with ``ldapadd``). Then every
user gets a new title and moves to two other roles (``role{(i+1)%7}``,
``role{(i+4)%7}``), alternating which goes first:
  (a) `idprov import users changes.csv --mode upsert --domain CORP --no-push`, end to
      end (its checks, the reads of the current users and roles, the writes, the audit);
  (b) ``ldapmodify -f`` of an LDIF with the same changes: a modify per user (title)
      and one per group replacing its members.
Checks that both directories end equal, and prints rows/s (target >= 2,000) and the
ratio b/a.

Usage: python bench/ldap_upsert.py [--users N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from ldap_common import (
    COLUMNS,
    IDPROV,
    ROLES,
    Run,
    claims_of,
    config_text,
    groups_ldif,
    idprov_env,
    ldap_tool,
    ldapadd,
    report,
    start_slapd,
    timed,
    user_dn,
    users_ldif,
)
from ldap_import import directory

from tests.peers.slapd import GROUPS_DN

TARGET = 2_000
TITLE = "Manager"


def new_roles(i: int) -> list[str]:
    return [f"role{(i + 1) % ROLES}", f"role{(i + 4) % ROLES}"]


def changes_csv(path: Path, count: int) -> None:
    lines = [",".join(["username", *COLUMNS, "roles"])]
    for i in range(count):
        claims = claims_of(i, TITLE)
        lines.append(",".join([f"user{i:07d}", *claims.values(), ";".join(new_roles(i))]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def changes_ldif(count: int) -> str:
    blocks = [
        f"dn: {user_dn(i)}\nchangetype: modify\nreplace: title\ntitle: {TITLE}\n"
        for i in range(count)
    ]
    for r in range(ROLES):
        members = [user_dn(i) for i in range(count) if f"role{r}" in new_roles(i)]
        lines = [f"dn: cn=role{r},{GROUPS_DN}", "changetype: modify", "replace: member"]
        blocks.append("\n".join(lines + [f"member: {m}" for m in members]) + "\n")
    return "\n".join(blocks)


def one_round(count: int, work: Path, flip: bool) -> tuple[Run, Run]:
    users = range(count)
    servers = [start_slapd(work / "ours"), start_slapd(work / "theirs")]
    try:
        for server in servers:
            ldapadd(server, users_ldif(users) + "\n" + groups_ldif(users), work / "all.ldif")
        ours_server, theirs_server = servers
        config = work / "idprov.yaml"
        config.write_text(config_text(ours_server, work))
        changes_csv(work / "changes.csv", count)
        (work / "changes.ldif").write_text(changes_ldif(count), encoding="utf-8")
        ours_cmd = [IDPROV, "import", "users", str(work / "changes.csv"), "--mode", "upsert",
                    "--domain", "CORP", "--no-push", "--quiet", "--json"]  # fmt: skip
        theirs_cmd = ldap_tool(theirs_server, "ldapmodify", "-f", str(work / "changes.ldif"))
        if flip:
            theirs = timed(theirs_server, theirs_cmd)
        ours = timed(ours_server, ours_cmd, idprov_env(config))
        if not flip:
            theirs = timed(theirs_server, theirs_cmd)
        if directory(ours_server) != directory(theirs_server):
            raise SystemExit("the two directories differ after the changes")
    finally:
        for server in servers:
            server.stop()
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ours, theirs = [], []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as name:
            a, b = one_round(args.users, Path(name), flip=i % 2 == 1)
        ours.append(a)
        theirs.append(b)
    print(f"== upsert of {args.users:,} LDAP users, each: a claim and both roles changed")
    a_wall = report("idprov import users --mode upsert (CLI)", ours)
    b_wall = report("ldapmodify -f of the same changes", theirs)
    rates = [args.users / o.wall for o in ours]
    print(
        f"  idprov: {args.users / a_wall:,.0f} rows/s (range {min(rates):,.0f}-{max(rates):,.0f};"
        f" target >= {TARGET:,}); ratio ldapmodify/idprov {b_wall / a_wall:.2f}"
    )
    sys.exit(0 if statistics.median(rates) >= TARGET else 1)


if __name__ == "__main__":
    main()
