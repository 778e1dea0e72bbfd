"""Shared fixtures: an isolated home for every test, and the CLI run in-process.

Every test gets its own config and data directories under ``tmp_path`` and runs
with ``tmp_path`` as the working directory, so no test reads or writes the real
home. The ``cli`` fixture runs ``idprov.cli.main.app`` through Typer's runner,
with standard output and standard error kept apart (Typer 0.28 vendors its own
click, whose runner always captures the two separately: ``result.stdout`` and
``result.stderr``; ``result.output`` interleaves them).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

# The SCIM peers the outbound tests run against (each module is a pytest plugin).
pytest_plugins = (
    "tests.peers.scim2",
    "tests.peers.scim11",
    "tests.peers.spml",
    "tests.peers.slapd",
    "tests.peers.postgres",
    "tests.peers.google",
    "tests.peers.salesforce",
    "tests.peers.scim_aws",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME, XDG and idprov's own variables under ``tmp_path``; chdir there;
    no keyring."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in ("IDPROV_CONFIG", "IDPROV_DATA_DIR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    # Wide enough that rich tables never truncate a cell the tests look for.
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("NO_COLOR", "1")
    # Never the developer's real keyring: "no usable backend" unless a test installs one.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    from keyring.backends import fail

    monkeypatch.setattr("keyring.core._keyring_backend", fail.Keyring())
    monkeypatch.chdir(tmp_path)
    # The rich console is created once per process; make each test build its own.
    monkeypatch.setattr("idprov.cli.tables._console", None)
    # The secrets blanked in errors are the process's: one test's token is not the next's
    # (a token "t" still held blanked the t of a later test's "hasn't").
    from idprov.secrecy import forget_all

    forget_all()
    # a PostgreSQL state sets the process's clock offset: the next test's is its own
    monkeypatch.setattr("idprov.db._clock_offset", 0.0)
    return tmp_path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Where the embedded default keeps idprov.db in these tests."""
    return tmp_path / "xdg-data" / "idprov"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The user config directory (``$XDG_CONFIG_HOME/idprov``) in these tests."""
    return tmp_path / "xdg-config" / "idprov"


class Run:
    """What one ``idprov`` invocation did: exit code, stdout and stderr apart."""

    def __init__(self, result: Result):
        self.result = result
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr

    def __repr__(self) -> str:
        return f"<Run exit={self.exit_code} stdout={self.stdout!r} stderr={self.stderr!r}>"

    def ok(self) -> Run:
        """Assert exit 0 (showing both streams when not); returns self."""
        assert self.exit_code == 0, self
        return self

    def json(self) -> Any:
        """Assert exit 0; stdout parsed as exactly one JSON document."""
        self.ok()
        return json.loads(self.stdout)

    def items(self) -> list[Any]:
        """Assert exit 0; the ``items`` of the one JSON document (every list's shape)."""
        document = self.json()
        assert isinstance(document, dict) and "items" in document, document
        return list(document["items"])

    def error(self, exit_code: int) -> dict[str, Any]:
        """The ``{"error": {...}}`` document of a failed --json run, checking its shape:
        the given exit code, nothing on stdout, one JSON document on stderr."""
        assert self.exit_code == exit_code, self
        assert self.stdout == "", self
        document = json.loads(self.stderr)
        assert list(document) == ["error"], document
        assert set(document["error"]) == {"code", "message", "hint"}, document
        return document["error"]

    def refusal(self, exit_code: int) -> dict[str, Any]:
        """The error of `config validate --strict --json` refusing: the given exit code,
        the validate document on stdout (``valid: false``, every finding, the refusal)
        and the ``{"error": {...}}`` document on stderr, the same refusal."""
        assert self.exit_code == exit_code, self
        document, error = json.loads(self.stdout), self.error_document()
        assert document["valid"] is False and document["refused"] == error, document
        return error

    def error_document(self) -> dict[str, Any]:
        document = json.loads(self.stderr)
        assert list(document) == ["error"], document
        assert set(document["error"]) == {"code", "message", "hint"}, document
        return document["error"]

    def fails(self, exit_code: int) -> str:
        """Assert the exit code and that stderr says why; returns stderr."""
        assert self.exit_code == exit_code, self
        assert self.stderr.strip(), self
        return self.stderr


Cli = Callable[..., Run]


@pytest.fixture
def cli() -> Cli:
    """Run ``idprov ARGS...`` in-process and return a :class:`Run`.

    An exception other than SystemExit escaping the app, or idprov's own
    "internal error" report of one, is a bug, not an exit code: the test fails
    (run it with IDPROV_DEBUG=1 for the traceback).
    """
    from idprov.cli.main import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Run:
        result = runner.invoke(app, list(args), input=input, prog_name="idprov")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        if "internal error:" in result.stderr:
            pytest.fail(f"idprov {' '.join(args)}: {result.stderr}")
        return Run(result)

    return invoke


class State:
    """Counts of what is in an idprov database, read with plain sqlite3."""

    def __init__(self, path: Path):
        self.path = path

    def counts(self) -> dict[str, int]:
        """Rows per table; all zero when the file does not exist (nothing written)."""
        tables = ("users", "roles", "user_roles", "audit")
        if not self.path.exists():
            return dict.fromkeys(tables, 0)
        conn = sqlite3.connect(self.path)
        try:
            existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            return {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in existing else 0
                for t in tables
            }
        finally:
            conn.close()

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def dump(self) -> list[tuple[Any, ...]]:
        """Every row of the users, roles, memberships and audit tables, for equality."""
        if not self.path.exists():
            return []
        existing = {r[0] for r in self.rows("SELECT name FROM sqlite_master")}
        return [
            (table, *row)
            for table in ("users", "roles", "user_roles", "audit")
            if table in existing
            for row in self.rows(f"SELECT * FROM {table} ORDER BY 1, 2")
        ]


@pytest.fixture
def state(data_dir: Path) -> State:
    """The default idprov.db (embedded PRIMARY userstore and audit log)."""
    return State(data_dir / "idprov.db")


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML text to a file (default ``tmp_path/idprov.yaml``) and return its path."""

    def write(text: str, path: Path | str = "idprov.yaml") -> Path:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    return write


WSO2_POLICY = "userstores:\n  - domain: PRIMARY\n    policy: {preset: wso2}\n"


@pytest.fixture
def wso2(write_config: Callable[..., Path]) -> Path:
    """The embedded store with WSO2 Identity Server's patterns (the documented opt-in
    ``policy: {preset: wso2}``): names of 3 to 30, passwords of 5 to 30 non-blanks."""
    return write_config(WSO2_POLICY)


class MemoryKeyring:
    """Just enough of a keyring backend for tests: a dict."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, name: str) -> str | None:
        return self.items.get((service, name))

    def set_password(self, service: str, name: str, value: str) -> None:
        self.items[(service, name)] = value


@pytest.fixture
def keyring_backend(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """Install a keyring backend for one test: ``"memory"``, ``"fail"`` or ``"null"``
    (keyring's own backends for "no keyring here"). Returns the backend."""
    import keyring.core
    from keyring.backends import fail, null

    def use(kind: str) -> Any:
        backend = {"memory": MemoryKeyring, "fail": fail.Keyring, "null": null.Keyring}[kind]()
        monkeypatch.setattr(keyring.core, "_keyring_backend", backend)
        return backend

    return use


@pytest.fixture
def run_python(tmp_path: Path) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Run Python code in a fresh interpreter, in ``tmp_path``, with this test's
    environment and the same idprov package as the test process."""
    import idprov

    package_root = str(Path(idprov.__file__).resolve().parents[1])

    def run(code: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run
