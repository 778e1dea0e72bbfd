"""Finding connectors: built-in and third-party alike, through entry points.

A package provides a connector by declaring, in its pyproject.toml::

    [project.entry-points."idprov.connectors"]
    myapp = "my_package.connector:MyAppConnector"

idprov's own connectors are declared the same way in idprov's pyproject.toml, and
also listed here (:data:`BUILTIN`), so that they load from a source checkout that was
never installed (no package metadata). A built-in name is always idprov's own: an
installed package that declares ``scim2`` too is ignored (no package can take over
the pushes of an IdP configured with a built-in connector), and naming a built-in
connector does not scan the installed packages' metadata (12-15 ms of every command
with identity providers). Modules are imported only when their connector is used.
"""

from __future__ import annotations

import importlib
from functools import cache, lru_cache
from typing import TYPE_CHECKING

from idprov.errors import ConfigError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from idprov.connectors.base import Connector

GROUP = "idprov.connectors"
BUILTIN = {
    "scim2": "idprov.connectors.scim2:Scim2Connector",
    "scim11": "idprov.connectors.scim11:Scim11Connector",
    "spml": "idprov.connectors.spml:SpmlConnector",
    "google": "idprov.connectors.google:GoogleConnector",
    "salesforce": "idprov.connectors.salesforce:SalesforceConnector",
}
"""idprov's own connectors: the same as its entry points, for a checkout without them."""


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    found.update({name: _builtin(name) for name in BUILTIN})
    return found


def _builtin(name: str) -> EntryPoint:
    from importlib.metadata import EntryPoint

    return EntryPoint(name, BUILTIN[name], GROUP)


def available() -> list[str]:
    """Names of every installed connector."""
    return sorted(_entry_points())


def entry_point(name: str) -> EntryPoint:
    if name in BUILTIN:
        return _builtin(name)
    eps = _entry_points()
    if name not in eps:
        raise ConfigError(
            f"unknown connector {name!r} (installed: {', '.join(sorted(eps)) or 'none'})",
            hint="check the spelling, or install the package that provides it "
            "(`idprov connector list` shows what is installed)",
        )
    return eps[name]


@cache
def load(name: str) -> type[Connector]:
    """The connector class registered as ``name``. A built-in one is imported without
    importlib.metadata (its import alone cost 11 ms of every command with IdPs)."""
    from idprov.connectors.base import Connector

    if name in BUILTIN:
        module, _, attribute = BUILTIN[name].partition(":")
        cls = getattr(importlib.import_module(module), attribute)
        value = BUILTIN[name]
    else:
        ep = entry_point(name)
        value = ep.value
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break idprov
            raise ConfigError(
                f"connector {name!r} ({value}) failed to load: {exc}",
                hint="reinstall or remove the package that provides it",
            ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigError(f"connector {name!r} ({value}) is not a Connector subclass")
    _check_options(name, cls)
    return cls


def package(name: str) -> str | None:
    """The distribution that provides connector ``name`` (``idprov`` for a built-in),
    or None when it is not known (a module on the path, not an installed package)."""
    if name in BUILTIN:
        return "idprov"
    dist = entry_point(name).dist
    return dist.name if dist is not None else None


def described(name: str) -> str:
    """``name (its package)``, to say whose code an error is in."""
    found = package(name) if name in BUILTIN or name in _entry_points() else None
    return f"{name} ({found})" if found else name


def raised_by(name: str, exc: BaseException) -> bool:
    """Whether ``exc`` was raised in connector ``name``'s own code (a frame of its
    package's modules; idprov's connectors and helpers for a built-in one)."""
    module = BUILTIN[name].partition(":")[0] if name in BUILTIN else load(name).__module__
    top = "idprov.connectors" if name in BUILTIN else module.partition(".")[0]
    tb = exc.__traceback__
    while tb is not None:
        where = str(tb.tb_frame.f_globals.get("__name__", ""))
        if where == top or where.startswith(top + "."):
            return True
        tb = tb.tb_next
    return False


def shadowed() -> list[EntryPoint]:
    """Entry points of installed packages that declare a built-in connector's name:
    ignored (see the module's docstring), and worth telling their author."""
    from importlib.metadata import entry_points

    return [
        ep
        for ep in entry_points(group=GROUP)
        if ep.name in BUILTIN and ep.value != BUILTIN[ep.name]
    ]


def why_ignored(ep: EntryPoint) -> str:
    """Why a package's connector that takes a built-in name is not used (one of
    :func:`shadowed`), for `connector list` and `config validate`."""
    package = ep.dist.name if ep.dist else "a package"
    return (
        f"ignored: {package} declares the connector {ep.name!r} ({ep.value}), a name that "
        f"is idprov's own; its author should rename that entry point"
    )


def _check_options(name: str, cls: type[Connector]) -> None:
    """A connector's ``Options`` must be a dataclass of types the configuration can
    give: refused when the connector loads, not at an operator's first command."""
    import dataclasses

    from idprov.config.schema import SUPPORTED, UnsupportedType, check_types

    options = getattr(cls, "Options", None)
    owner = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise ConfigError(
            f"connector {described(name)}: {owner}.Options is not a dataclass",
            hint="declare Options as a @dataclass(frozen=True), e.g. a subclass of "
            "idprov.connectors.http.HttpOptions (a bug in the connector's package)",
        )
    try:
        check_types(options)
    except UnsupportedType as exc:
        raise ConfigError(
            f"connector {described(name)}: {options.__qualname__}.{exc.field} has type "
            f"{exc.spelled}, which idprov cannot "
            "read from a configuration",
            hint=f"a bug in the connector's package: Options fields may be {SUPPORTED}",
        ) from None
