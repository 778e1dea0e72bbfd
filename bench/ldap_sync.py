"""A no-op `idprov sync` of LDAP users vs ``ldapsearch`` of them, in one run.

A fresh private slapd holds N users (default 5,000) and seven groups, two per user
(bench/ldap_common.py's data set, added with ``ldapadd``); one SCIM 2.0 IdP
(bench/fast_scim2_server.py) gets every user of the resident application. A first
`idprov sync` provisions everyone. Then, alternating which goes first, --rounds times:
  (a) `idprov sync --quiet --json`, everything in sync: it must send no request;
  (b) ``ldapsearch`` of the same user entries with the attributes idprov reads.
Prints the medians, ranges and the ratio a/b (target <= 3).

Usage: python bench/ldap_sync.py [--users N] [--rounds R]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
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
    report,
    start_slapd,
    timed,
    users_ldif,
)
from outbound_push import start_server, stop
from sync_noop import reset, stats

from tests.peers.slapd import PEOPLE_DN

TARGET = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    token = secrets.token_urlsafe(16)
    scim, url = start_server(token)
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        server = start_slapd(work / "slapd")
        try:
            users = range(args.users)
            ldapadd(server, users_ldif(users) + "\n" + groups_ldif(users), work / "all.ldif")
            config = work / "idprov.yaml"
            config.write_text(config_text(server, work, url))
            env = idprov_env(config, token)
            sync = [IDPROV, "sync", "--quiet", "--json"]
            first = timed(server, sync, env)
            print(f"first sync (provisions {args.users:,} users): {first.wall:.1f} s")
            reset(url, token)
            theirs_cmd = ldap_tool(
                server, "ldapsearch", "-LLL", "-b", PEOPLE_DN, "(objectClass=inetOrgPerson)",
                "*", "entryUUID", "createTimestamp", "modifyTimestamp",
            )  # fmt: skip
            ours, theirs = alternate(
                args.rounds, lambda: timed(server, sync, env), lambda: timed(server, theirs_cmd)
            )
            sent = stats(url, token)
        finally:
            server.stop()
            stop(scim)
    print(f"== no-op sync of {args.users:,} LDAP users, 2 roles each; {args.rounds} rounds")
    a = report("idprov sync (all in sync)", ours)
    b = report("ldapsearch of the same entries", theirs)
    each = [o.wall / t.wall for o, t in zip(ours, theirs, strict=True)]
    print(
        f"  ratio idprov/ldapsearch: {a / b:.1f} (range {min(each):.1f}-{max(each):.1f}; "
        f"target <= {TARGET}); requests sent by the no-op syncs: {sent or 'none'}"
    )
    sys.exit(0 if statistics.median(each) <= TARGET and not sent else 1)


if __name__ == "__main__":
    main()
