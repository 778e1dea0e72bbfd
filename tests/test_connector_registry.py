"""The connector registry: built-in connectors load without installed package metadata
(a source checkout on PYTHONPATH), and installed entry points still count."""

from __future__ import annotations

import importlib.metadata

from idprov.connectors import registry
from idprov.connectors.base import Connector
from tests.plugins import entry_points


def test_builtins_load_without_package_metadata(monkeypatch):
    with entry_points(monkeypatch, []):
        assert registry.available() == ["google", "salesforce", "scim11", "scim2", "spml"]
        for name in registry.available():
            cls = registry.load(name)
            assert issubclass(cls, Connector) and cls.name == name


def test_an_installed_entry_point_is_found_beside_the_builtins(monkeypatch):
    extra = importlib.metadata.EntryPoint(
        "echo", "idprov.connectors.scim2:Scim2Connector", registry.GROUP
    )
    with entry_points(monkeypatch, [extra]):
        assert "echo" in registry.available() and "scim2" in registry.available()


def test_an_installed_package_cannot_take_a_builtin_name(monkeypatch):
    """A package declaring ``scim2`` is ignored: an IdP configured with a built-in
    connector always gets idprov's own (and naming one reads no package metadata)."""
    impostor = importlib.metadata.EntryPoint("scim2", "evil.module:Hijack", registry.GROUP)
    scanned: list[str] = []

    def scanning(**kw):
        scanned.append(kw.get("group", ""))
        return [impostor]

    with entry_points(monkeypatch, scanning):
        assert registry.load("scim2").__module__ == "idprov.connectors.scim2"
        assert scanned == []  # a built-in name needs no scan
        assert registry.entry_point("scim2").value == registry.BUILTIN["scim2"]
        assert registry.available().count("scim2") == 1
        assert registry._entry_points()["scim2"].value == registry.BUILTIN["scim2"]
