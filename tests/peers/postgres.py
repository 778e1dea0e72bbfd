"""The ``postgres`` fixture: a private PostgreSQL cluster on loopback, for the userstore
tests (and the benchmark, which imports :class:`Cluster`).

The cluster is Debian's ``postgresql`` server binaries (``/usr/lib/postgresql/N/bin``;
scripts/test installs the package when they are missing) run on a data directory of
its own under a temporary directory, never the system's cluster. ``initdb`` refuses to
run as root, and CI runs as root: then the cluster runs as the ``postgres`` system user,
in a directory it owns. The server runs in the foreground, so the process started is
the postmaster itself (SIGINT: fast shutdown), and Linux stops it if the test process
dies without its teardown.

Connections over TCP need a password (scram-sha-256), so the tests exercise the
userstore's password secret; the superuser is ``idprov``. One cluster serves the
session; each test gets a database of its own (:class:`Database`), dropped afterwards.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SUPERUSER = "idprov"
STARTUP_TIMEOUT = 30.0
INSTALL_HINT = (
    "install PostgreSQL's server: apt-get update && DEBIAN_FRONTEND=noninteractive "
    "apt-get install -y postgresql (scripts/test does)"
)


def server_bin() -> Path:
    """The newest installed PostgreSQL server's binary directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if not found:
        raise RuntimeError(f"PostgreSQL's initdb is not installed; {INSTALL_HINT}")
    return Path(found[-1]).parent


def _version(path: str) -> int:
    return int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Ask Linux to stop the child (fast shutdown) if the test process dies."""
    ctypes.CDLL(None).prctl(1, signal.SIGINT)  # 1 is PR_SET_PDEATHSIG


class Cluster:
    """A private PostgreSQL cluster: ``start()``, ``connect()``, ``stop()``."""

    def __init__(self, settings: dict[str, str] | None = None, tls: bool = False) -> None:
        self.bin = server_bin()
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.workdir = Path(tempfile.mkdtemp(prefix="idprov-pg-"))
        self.password = secrets.token_urlsafe(16)
        self.settings = {"fsync": "off", "synchronous_commit": "off", **(settings or {})}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        if self.owner:
            shutil.chown(self.workdir, self.owner)
        self.ca_file = self._make_certificates() if tls else None

    def _make_certificates(self) -> str:
        """A CA and a server certificate for 127.0.0.1 (the slapd peer's), readable by
        the server only; TLS on. Returns the CA file's path."""
        from tests.peers.slapd import make_certificates

        tls = self.workdir / "tls"
        make_certificates(tls)
        for path in [tls, *tls.iterdir()]:
            if self.owner:
                shutil.chown(path, self.owner)
        (tls / "server.key").chmod(0o600)
        self.settings.update(
            ssl="on", ssl_cert_file=str(tls / "server.pem"), ssl_key_file=str(tls / "server.key")
        )
        return str(tls / "ca.pem")

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def _run_as_owner(self) -> dict[str, Any]:
        if self.owner is None:
            return {}
        entry = pwd.getpwnam(self.owner)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def init(self) -> None:
        pwfile = self.workdir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.owner:
            shutil.chown(pwfile, self.owner)
        command = [
            str(self.bin / "initdb"), "-D", str(self.workdir / "data"), "-U", SUPERUSER,
            "--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, **self._run_as_owner())
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        """initdb (once) and start the server on a free port, retrying if it was taken."""
        if not (self.workdir / "data").exists():
            self.init()
        for _ in range(3):
            self.port = free_port()
            if self._try_start():
                return
        log = (self.workdir / "log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"postgres did not start; its log ends with:\n{log}")

    def _try_start(self) -> bool:
        options = [f"-c{k}={v}" for k, v in self.settings.items()]
        command = [
            str(self.bin / "postgres"), "-D", str(self.workdir / "data"), "-p", str(self.port),
            "-k", str(self.workdir), "-clisten_addresses=127.0.0.1", *options,
        ]  # fmt: skip
        with (self.workdir / "log").open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                **self._run_as_owner(),
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                self.connect("postgres").close()
                return True
            except Exception:  # noqa: BLE001 - not accepting connections yet
                time.sleep(0.02)
        self.stop()
        return False

    def connect(self, dbname: str = "postgres", **options: Any) -> Any:
        """A psycopg connection as the superuser, autocommit."""
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=dbname,
            sslmode="disable",
            autocommit=True,
            **options,
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT), and wait; SIGKILL if it lingers. Safe to call twice."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Database:
    """What a test gets: a fresh database of its own on the session's cluster."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.host, self.port = cluster.host, cluster.port
        self.user, self.password = SUPERUSER, cluster.password
        self.url = f"postgresql://{SUPERUSER}@{cluster.host}:{cluster.port}/{name}"

    def connect(self) -> Any:
        return self.cluster.connect(self.name)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a connection of its own (independent of the store under test)."""
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self.connect() as conn:
            conn.execute(sql, params)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """The session's private cluster; tests want ``postgres`` (a database of their own)."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres(postgres_cluster: Cluster) -> Iterator[Database]:
    """A fresh, empty database ``t_<random>`` on the session's cluster, dropped after."""
    name = f"t_{secrets.token_hex(6)}"
    with postgres_cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield Database(postgres_cluster, name)
    finally:
        with postgres_cluster.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
