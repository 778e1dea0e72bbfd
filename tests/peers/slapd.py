"""The ``slapd`` fixture: a private OpenLDAP server on loopback, for the LDAP userstore tests.

Each server has a ``slapd.conf`` and an mdb database of its own in a temporary directory
(the system's /etc/ldap database is never used), listens on a free loopback port and runs
in the foreground (``-d 0``), so the process started is slapd itself and SIGTERM stops it.
One server serves the session: the ``slapd`` fixture gives each test a fresh subtree
of it (``ou=t<random>`` holding ``ou=people`` and ``ou=groups``), so tests see nothing
of each other. A test that stops, restarts or configures the server asks for
``private_slapd`` or ``slapd_factory`` instead: a server of its own, started in about
60 ms. Both are :class:`Directory` objects.

Tests inspect the directory with the OpenLDAP tools, independently of ldap3:
:meth:`Slapd.search` runs ``ldapsearch`` and parses its LDIF. The benchmark imports
:class:`Slapd` too.
"""

from __future__ import annotations

import base64
import ctypes
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
PEOPLE_DN = f"ou=people,{SUFFIX}"
GROUPS_DN = f"ou=groups,{SUFFIX}"
STARTUP_TIMEOUT = 10.0
START_ATTEMPTS = 3
INSTALL_HINT = (
    "install OpenLDAP's server and tools: apt-get update && "
    "DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils (scripts/test does)"
)

CONFIG_TEMPLATE = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
modulepath {modules}
moduleload back_mdb
pidfile {workdir}/slapd.pid
loglevel none
{tls}
database mdb
maxsize 1073741824
suffix "{suffix}"
rootdn "{root_dn}"
rootpw "{root_password}"
directory {workdir}/db
index objectClass eq
index uid,cn,mail eq,sub
index member eq
index entryUUID eq
{sync}
{extra}
"""

BASE_LDIF = """\
dn: {suffix}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {people}
objectClass: organizationalUnit
ou: people

dn: {groups}
objectClass: organizationalUnit
ou: groups
"""


def find_tool(name: str) -> str:
    """The path of an OpenLDAP program; slapd lives in /usr/sbin, often not on PATH."""
    found = shutil.which(name)
    for candidate in (found, f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError(f"{name} is not installed; {INSTALL_HINT}")


SERVER_NAMES = "IP:127.0.0.1,DNS:localhost"


def make_certificates(directory: Path, names: str = SERVER_NAMES) -> str:
    """A CA (``ca.pem``) and a server certificate it signed for ``names`` (its
    subjectAltName: 127.0.0.1 and localhost), made with openssl in ``directory``;
    returns slapd's TLS configuration lines."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "san.cnf").write_text(f"subjectAltName={names}\n")
    steps = [
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=idprov test CA"],
        ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf"],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(["openssl", *step], cwd=directory, capture_output=True, check=True)
    return (
        f"TLSCACertificateFile {directory}/ca.pem\n"
        f"TLSCertificateFile {directory}/server.pem\n"
        f"TLSCertificateKeyFile {directory}/server.key\n"
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if the test process dies without its teardown."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 is PR_SET_PDEATHSIG


@dataclass
class LdapEntry:
    """One entry as ``ldapsearch`` printed it; attribute names are lower-cased."""

    dn: str
    attributes: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> list[str]:
        """The values of attribute ``name`` (any case); empty if it has none."""
        return self.attributes.get(name.lower(), [])

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None


def parse_ldif(text: str) -> list[LdapEntry]:
    """Entries of unwrapped LDIF (``ldapsearch -LLL -o ldif-wrap=no``); ``::`` is base64."""
    entries: list[LdapEntry] = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith("#")]
        if not lines:
            continue
        entry = LdapEntry(_ldif_value(lines[0])[1])
        for line in lines[1:]:
            name, value = _ldif_value(line)
            entry.attributes.setdefault(name.lower(), []).append(value)
        entries.append(entry)
    return entries


def _ldif_value(line: str) -> tuple[str, str]:
    name, _, rest = line.partition(":")
    if rest.startswith(":"):
        return name, base64.b64decode(rest[1:].strip()).decode("utf-8", "replace")
    return name, rest.strip()


class Slapd:
    """One private slapd: its config, database and log under ``workdir``, on a free port."""

    def __init__(
        self,
        workdir: Path,
        *,
        dbnosync: bool = True,
        extra_config: str = "",
        tls: bool = False,
        certificate_names: str = SERVER_NAMES,
    ) -> None:
        self.workdir = workdir
        self.dbnosync = dbnosync
        self.extra_config = extra_config
        """More lines for the database section (limits, access rules...)."""
        self.tls = tls
        """Serve StartTLS on ``url`` and TLS on ``ldaps_url``, with a certificate for
        127.0.0.1 and localhost from a CA of its own (``ca_file``)."""
        self.certificate_names = certificate_names
        """The names the certificate is for (tests of host name checks change them)."""
        self.ldaps_url = ""
        self.ca_file = workdir / "tls" / "ca.pem"
        self.suffix = SUFFIX
        self.root_dn = ROOT_DN
        self.root_password = secrets.token_urlsafe(16)
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = workdir / "slapd.conf"
        self.log_path = workdir / "slapd.log"

    def write_config(self) -> None:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(
                schema="/etc/ldap/schema",
                modules="/usr/lib/ldap",
                workdir=self.workdir,
                suffix=self.suffix,
                root_dn=self.root_dn,
                root_password=self.root_password,
                sync="dbnosync" if self.dbnosync else "",
                tls=make_certificates(self.workdir / "tls", self.certificate_names)
                if self.tls
                else "",
                extra=self.extra_config,
            ),
            encoding="utf-8",
        )

    def start(self) -> None:
        """Start slapd, retrying on another port if the chosen one was taken."""
        self.write_config()
        for _ in range(START_ATTEMPTS):
            self.url = f"ldap://127.0.0.1:{free_port()}/"
            self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}/" if self.tls else ""
            if self._try_start():
                return
        log = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"slapd did not start; its output ends with:\n{log}")

    def restart(self) -> None:
        """Stop slapd and start it again on the same URL, with the same database."""
        self.stop()
        if not self._try_start():
            log = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"slapd did not restart; its output ends with:\n{log}")

    def _try_start(self) -> bool:
        self.process = self._launch()
        if self._wait_until_answering():
            return True
        self.stop()
        return False

    def _launch(self) -> subprocess.Popen[bytes]:
        urls = f"{self.url} {self.ldaps_url}".strip()
        command = [find_tool("slapd"), "-f", str(self.config_path), "-h", urls, "-d", "0"]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def _wait_until_answering(self) -> bool:
        """Poll until a root bind with ``ldapwhoami`` works (trying a TCP connection first,
        which is cheaper); False if slapd exits or the time is up."""
        assert self.process is not None
        port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.003)
                continue
            if self.tool("ldapwhoami", check=False).returncode == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        """SIGTERM slapd and wait for it (SIGKILL if it lingers). Safe to call twice."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tool(
        self,
        name: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        bind: tuple[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run an OpenLDAP client (``ldapadd``, ``ldapsearch``...) bound as the root DN, or
        as ``bind`` (DN, password)."""
        dn, password = bind or (self.root_dn, self.root_password)
        command = [find_tool(name), "-x", "-H", self.url, "-D", dn, "-w", password, *args]
        done = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=600, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{name} {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def load_base(self) -> None:
        """Add the suffix entry, ``ou=people`` and ``ou=groups``."""
        ldif = BASE_LDIF.format(suffix=self.suffix, people=PEOPLE_DN, groups=GROUPS_DN)
        self.tool("ldapadd", input=ldif)

    def search(
        self, base: str, search_filter: str = "(objectClass=*)", *attrs: str, scope: str = "sub"
    ) -> list[LdapEntry]:
        """``ldapsearch`` as the root DN; [] when ``base`` does not exist."""
        done = self.tool(
            "ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-s", scope, "-b", base,
            search_filter, *attrs, check=False,
        )  # fmt: skip
        if done.returncode == 32:  # noSuchObject
            return []
        if done.returncode != 0:
            raise RuntimeError(f"ldapsearch -b {base} {search_filter}: {done.stderr.strip()}")
        return parse_ldif(done.stdout)

    def entry(self, dn: str, *attrs: str) -> LdapEntry | None:
        """The entry at ``dn`` (with operational attributes when named), or None."""
        found = self.search(dn, "(objectClass=*)", *(attrs or ("*", "+")), scope="base")
        return found[0] if found else None


class Directory:
    """What a test gets: a subtree of its own (``base``, with ``people`` and ``groups``
    below it) on a slapd, and the server's tools to look at it. Only a directory on a
    private server may :meth:`stop` or :meth:`restart` it."""

    def __init__(self, server: Slapd, base: str, private: bool) -> None:
        self.server = server
        self.base = base
        self.people = f"ou=people,{base}"
        self.groups = f"ou=groups,{base}"
        self.private = private
        self.url, self.suffix = server.url, server.suffix
        self.root_dn, self.root_password = server.root_dn, server.root_password
        self.ldaps_url, self.ca_file = server.ldaps_url, server.ca_file

    def tool(self, name: str, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return self.server.tool(name, *args, **options)

    def search(self, base: str, *args: str, scope: str = "sub") -> list[LdapEntry]:
        return self.server.search(base, *args, scope=scope)

    def entry(self, dn: str, *attrs: str) -> LdapEntry | None:
        return self.server.entry(dn, *attrs)

    def add(self, ldif: str) -> None:
        """``ldapadd`` of LDIF text as the root DN."""
        self.server.tool("ldapadd", input=ldif)

    def stop(self) -> None:
        self._own().stop()

    def restart(self) -> None:
        self._own().restart()

    def _own(self) -> Slapd:
        if not self.private:
            raise RuntimeError("the shared slapd serves other tests: use private_slapd")
        return self.server


def _subtree_ldif(base: str) -> str:
    name = base.split(",")[0].partition("=")[2]
    return (
        f"dn: {base}\nobjectClass: organizationalUnit\nou: {name}\n\n"
        f"dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n"
    )


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The session's shared slapd; tests want ``slapd`` (a fresh subtree of it)."""
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    try:
        server.start()
        server.load_base()
        yield server
    finally:
        server.stop()


@pytest.fixture
def slapd(slapd_server: Slapd) -> Directory:
    """A fresh, empty subtree ``ou=t<random>,dc=example,dc=com`` with ``ou=people`` and
    ``ou=groups`` below it, on the session's shared slapd (about 10 ms a test)."""
    base = f"ou=t{secrets.token_hex(6)},{slapd_server.suffix}"
    slapd_server.tool("ldapadd", input=_subtree_ldif(base))
    return Directory(slapd_server, base, private=False)


@pytest.fixture
def slapd_factory(tmp_path: Path) -> Iterator[Callable[..., Directory]]:
    """Private servers (about 40 ms each), which a test may stop or configure:
    ``slapd_factory(extra_config="limits users size.hard=5", tls=True)``. Each holds
    ``ou=people`` and ``ou=groups`` under the suffix; all are stopped at the end."""
    servers: list[Slapd] = []

    def start(
        extra_config: str = "", tls: bool = False, certificate_names: str = SERVER_NAMES
    ) -> Directory:
        server = Slapd(
            tmp_path / f"slapd{len(servers)}",
            extra_config=extra_config,
            tls=tls,
            certificate_names=certificate_names,
        )
        servers.append(server)
        server.start()
        server.load_base()
        return Directory(server, server.suffix, private=True)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def private_slapd(slapd_factory: Callable[..., Directory]) -> Directory:
    """A slapd of this test's own, which it may stop and restart."""
    return slapd_factory()
