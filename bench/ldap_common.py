"""What the LDAP benchmarks share: a private slapd (tests/peers/slapd.py's), a data set
of users with roles as CSV (for `idprov import users`) and as LDIF (the entries idprov
writes for it, for ``ldapadd``), an idprov config naming the directory, and timing of
whole commands with the CPU time of the client and of slapd.

The data set: user i is ``user{i:07d}`` with eight claims (bench/import_users.py's
columns) and roles ``role{i % 7}`` and ``role{(i + 3) % 7}``; the LDIF's groups are
groupOfNames entries holding their members' DNs, as idprov writes them.
"""

from __future__ import annotations

import csv
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peers.slapd import GROUPS_DN, PEOPLE_DN, Slapd  # noqa: E402

ROLES = 7
CLASSES = ["inetOrgPerson", "organizationalPerson", "person", "top"]
COLUMNS = {
    "email": "mail",
    "given_name": "givenName",
    "family_name": "sn",
    "display_name": "displayName",
    "title": "title",
    "department": "departmentNumber",
    "employee_number": "employeeNumber",
    "phone_number": "telephoneNumber",
}
IDPROV = str(Path(sys.executable).parent / "idprov")


def claims_of(i: int, title: str = "Engineer") -> dict[str, str]:
    name = f"user{i:07d}"
    return {
        "email": f"{name}@example.com",
        "given_name": "Given",
        "family_name": f"Family{i}",
        "display_name": f"Given Family{i}",
        "title": title,
        "department": f"dept{i % 50}",
        "employee_number": str(100000 + i),
        "phone_number": f"+1555{i:07d}",
    }


def roles_of(i: int) -> list[str]:
    return [f"role{i % ROLES}", f"role{(i + 3) % ROLES}"]


def write_csv(path: Path, users: range, title: str = "Engineer", roles: bool = True) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["username", *COLUMNS, *(["roles"] if roles else [])])
        for i in users:
            extra = [";".join(roles_of(i))] if roles else []
            out.writerow([f"user{i:07d}", *claims_of(i, title).values(), *extra])


def user_dn(i: int) -> str:
    return f"uid=user{i:07d},{PEOPLE_DN}"


def users_ldif(users: range) -> str:
    blocks = []
    for i in users:
        lines = [f"dn: {user_dn(i)}", *(f"objectClass: {c}" for c in CLASSES)]
        lines.append(f"uid: user{i:07d}")
        lines += [f"{COLUMNS[claim]}: {value}" for claim, value in claims_of(i).items()]
        lines.append(f"cn: {claims_of(i)['display_name']}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def groups_ldif(users: range) -> str:
    """The seven groups with their members (a group with none holds itself, as idprov's
    placeholder)."""
    members: dict[str, list[str]] = {f"role{r}": [] for r in range(ROLES)}
    for i in users:
        for role in roles_of(i):
            members[role].append(user_dn(i))
    blocks = []
    for role, dns in members.items():
        dn = f"cn={role},{GROUPS_DN}"
        lines = [f"dn: {dn}", "objectClass: groupOfNames", f"cn: {role}"]
        lines += [f"member: {m}" for m in dns or [dn]]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def start_slapd(workdir: Path, sync: bool = False) -> Slapd:
    """A fresh private slapd holding the suffix, ou=people and ou=groups."""
    server = Slapd(workdir, dbnosync=not sync)
    server.start()
    server.load_base()
    return server


def ldapadd(server: Slapd, ldif: str, path: Path) -> None:
    path.write_text(ldif, encoding="utf-8")
    server.tool("ldapadd", "-f", str(path))


def config_text(server: Slapd, workdir: Path, idp_url: str | None = None) -> str:
    """An idprov config: the embedded PRIMARY store, CORP on ``server``, and (with
    ``idp_url``) one SCIM 2.0 IdP every change of the resident application goes to."""
    secret = workdir / "bind-password"
    secret.write_text(server.root_password + "\n")
    text = f"""version: 1
data_dir: {workdir / "state"}
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    url: {server.url}
    bind_dn: {server.root_dn}
    bind_password: file:{secret}
    user_search_base: {PEOPLE_DN}
    group_search_base: {GROUPS_DN}
"""
    if idp_url:
        text += (
            "identity_providers:\n  - name: fast\n    connector: scim2\n"
            f"    options: {{base_url: '{idp_url}', auth: bearer, token: env:BENCH_TOKEN}}\n"
            "applications:\n  - name: resident\n    identity_providers: [fast]\n"
        )
    return text


def idprov_env(config: Path, token: str = "") -> dict[str, str]:
    env = {**os.environ, "IDPROV_CONFIG": str(config), "BENCH_TOKEN": token}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


@dataclass
class Run:
    """One timed command: wall seconds, CPU seconds of the client and of slapd."""

    wall: float
    client_cpu: float
    server_cpu: float


def slapd_cpu(server: Slapd) -> float:
    """CPU seconds slapd has used so far (user + system, from /proc)."""
    assert server.process is not None
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(server: Slapd, command: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run ``command`` to the end (output discarded, failure fatal) and time it."""
    start, cpu, served = time.perf_counter(), children_cpu(), slapd_cpu(server)
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed ({done.returncode}): {done.stderr}")
    return Run(time.perf_counter() - start, children_cpu() - cpu, slapd_cpu(server) - served)


def ldap_tool(server: Slapd, name: str, *args: str) -> list[str]:
    """The command line of an OpenLDAP client bound as the root DN."""
    from tests.peers.slapd import find_tool

    return [find_tool(name), "-x", "-H", server.url, "-D", server.root_dn, "-w",
            server.root_password, *args]  # fmt: skip


def alternate(
    rounds: int, ours: Callable[[], Run], theirs: Callable[[], Run]
) -> tuple[list[Run], list[Run]]:
    """``rounds`` of both, alternating which goes first."""
    a, b = [], []
    for i in range(rounds):
        if i % 2:
            b.append(theirs())
            a.append(ours())
        else:
            a.append(ours())
            b.append(theirs())
    return a, b


def report(label: str, runs: list[Run]) -> float:
    """Print the median and range of wall time and the median CPU; returns the median."""
    walls = [r.wall for r in runs]
    wall = statistics.median(walls)
    client = statistics.median(r.client_cpu for r in runs)
    server = statistics.median(r.server_cpu for r in runs)
    print(
        f"  {label:44} {wall:6.2f} s (range {min(walls):.2f}-{max(walls):.2f}); "
        f"CPU client {client:.2f} s, slapd {server:.2f} s"
    )
    return wall


def ratios(ours: list[Run], theirs: list[Run]) -> str:
    """Each round's baseline/ours (higher is better for idprov)."""
    return ", ".join(f"{t.wall / o.wall:.2f}" for o, t in zip(ours, theirs, strict=True))
