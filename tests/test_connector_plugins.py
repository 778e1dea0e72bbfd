"""What a third-party connector's author and its operators see: plugins (variants of
the SCIM 2.0 connector, installed under a package of their own, acme-idprov) with
options of tuple and set types, an options type idprov cannot configure, a bug, no
check, a built-in's name; each through the CLI, against the real scim2-server."""

from __future__ import annotations

import importlib.metadata
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from idprov.connectors import registry
from idprov.connectors.base import Account, Connector
from idprov.connectors.scim2 import Scim2Connector, Scim2Options
from tests.peers.scim2 import Scim2Peer
from tests.plugins import entry_points


@dataclass(frozen=True)
class TupleOptions(Scim2Options):
    scopes: tuple[str, ...] = ()
    labels: frozenset[str] = frozenset()


class TupleScim2(Scim2Connector):
    name = "acme-tuple"
    Options = TupleOptions


@dataclass(frozen=True)
class PathOptions(Scim2Options):
    spool: pathlib.Path | None = None


class PathScim2(Scim2Connector):
    name = "acme-path"
    Options = PathOptions


class BuggyScim2(Scim2Connector):
    name = "acme-buggy"

    def create_user(self, account: Account) -> str:
        return {}["boom"]  # type: ignore[no-any-return]


class NoCheckScim2(Scim2Connector):
    """Neither a check nor a probe: what a connector gets from the base class."""

    name = "acme-nocheck"
    check = Connector.check
    probe = Connector.probe


class Impostor(Scim2Connector):
    name = "scim2"


PLUGINS = {
    "acme-tuple": TupleScim2,
    "acme-path": PathScim2,
    "acme-buggy": BuggyScim2,
    "acme-nocheck": NoCheckScim2,
    "scim2": Impostor,
}


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plugins, as the entry points of an installed package named acme-idprov."""
    info = tmp_path / "acme_idprov-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-idprov\nVersion: 1.0\n")
    dist = importlib.metadata.PathDistribution(info)
    eps = [
        importlib.metadata.EntryPoint(name, f"{__name__}:{cls.__name__}", registry.GROUP)._for(dist)
        for name, cls in PLUGINS.items()
    ]
    with entry_points(monkeypatch, eps):
        yield


@pytest.fixture
def configure(
    write_config: Callable[..., Path], scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    monkeypatch.setenv("ACME_TOKEN", scim2_server.token)

    def write(connector: str, options: str = "") -> Path:
        return write_config(
            "version: 1\n"
            "identity_providers:\n"
            "  - name: people\n"
            f"    connector: {connector}\n"
            "    options:\n"
            f"      base_url: {scim2_server.base_url}\n"
            "      auth: bearer\n"
            "      token: env:ACME_TOKEN\n"
            f"{options}"
            "applications:\n"
            "  - name: resident\n"
            "    identity_providers: [people]\n"
        )

    return write


def test_tuple_and_set_options_are_read_from_lists(cli, acme, configure):
    configure("acme-tuple", "      scopes: [users, groups]\n      labels: [a, b, a]\n")
    cli("config", "validate", "--strict").ok()
    options = cli("config", "show", "--json").json()["identity_providers"][0]["options"]
    assert (options["scopes"], options["labels"]) == (["users", "groups"], ["a", "b"])
    cli("user", "add", "zed", "-c", "email=zed@example.com").ok()
    assert cli("idp", "test", "people").ok()
    configure("acme-tuple", "      scopes: users\n")
    error = cli("config", "validate", "--json").error(2)
    assert "idprov.yaml:9:" in error["message"]
    assert "options.scopes: expected a list of a string" in error["message"]


def test_an_options_type_idprov_cannot_read_is_the_connectors_error_when_it_loads(
    cli, acme, configure
):
    """Refused when the connector loads, with or without the option set: named as
    the connector's (and its package's) mistake, with the types that work."""
    configure("acme-path")
    error = cli("config", "validate", "--json").error(2)
    assert "idprov.yaml:4:5: identity_providers[0].connector: " in error["message"]
    assert "connector acme-path (acme-idprov): PathOptions.spool has type" in error["message"]
    assert "tuple[X, ...]" in error["hint"] and "frozenset[X]" in error["hint"]
    assert "internal error" not in error["message"]
    (row,) = [r for r in cli("connector", "list", "--json").items() if r["name"] == "acme-path"]
    assert row["loaded"] is False and "PathOptions.spool" in row["description"]


def test_a_connectors_bug_names_the_connector_and_its_package(cli, acme, configure, monkeypatch):
    configure("acme-buggy")
    run = cli("user", "add", "zed")
    assert run.exit_code == 6, run
    assert (
        "a bug in the connector acme-buggy (acme-idprov), not in idprov: KeyError: 'boom'"
        in run.stdout
    )
    assert "Traceback" not in run.stderr
    (row,) = cli("outbox", "list", "--json").items()
    assert "acme-buggy (acme-idprov)" in row["last_error"]
    monkeypatch.setenv("IDPROV_DEBUG", "1")
    run = cli("outbox", "retry")
    assert "a bug in the connector acme-buggy (acme-idprov)" in run.stderr
    assert "Traceback (most recent call last)" in run.stderr
    assert 'return {}["boom"]' in run.stderr  # the line to fix, in the plugin's file


def test_a_connector_without_a_check_is_not_called_unreachable(cli, acme, configure):
    configure("acme-nocheck")
    out = cli("idp", "test", "people").ok().stdout
    assert "reachable      unknown (this connector has no check)" in out
    assert "the acme-nocheck connector has no check" in out
    report = cli("idp", "test", "people", "--json").json()
    assert (report["checked"], report["ok"]) == (False, False)


def test_probe_on_a_connector_that_is_not_scim_is_a_usage_error(cli, acme, configure):
    configure("acme-nocheck")
    error = cli("idp", "test", "people", "--probe", "--json").error(2)
    assert error["message"] == (
        "--probe is for SCIM 2.0 targets; the acme-nocheck connector has no conformance probe"
    )


def test_connector_list_names_every_package_and_an_ignored_builtin_name(cli, acme, configure):
    rows = cli("connector", "list", "--json").items()
    packages = {r["name"]: r["package"] for r in rows if not r["ignored"]}
    assert packages["scim2"] == packages["salesforce"] == "idprov"
    assert packages["acme-tuple"] == "acme-idprov"
    (ignored,) = [r for r in rows if r["ignored"]]
    assert (ignored["name"], ignored["package"], ignored["loaded"]) == (
        "scim2",
        "acme-idprov",
        False,
    )
    assert "ignored: acme-idprov declares the connector 'scim2'" in ignored["description"]
    assert "ignored: acme-idprov declares the connector 'scim2'" in cli(
        "connector", "list"
    ).ok().stdout.replace("\n", " ")
    configure("scim2")
    out = cli("config", "validate").ok().stdout
    assert "! ignored: acme-idprov declares the connector 'scim2'" in out


def test_a_missing_secret_in_a_plugins_options_is_located(cli, acme, configure, monkeypatch):
    configure("acme-tuple")
    monkeypatch.delenv("ACME_TOKEN")
    out = cli("config", "validate").ok().stdout
    assert "idprov.yaml:8:" in out and "identity_providers[0].options.token" in out
    error = cli("config", "validate", "--strict", "--json").refusal(2)
    assert "idprov.yaml:8:" in error["message"]
    assert (
        "identity_providers[0].options.token: secret env:ACME_TOKEN cannot be read"
        in (error["message"])
    )
