"""idprov: identity provisioning. Userstores in, SCIM/SPML/SaaS targets out.

The library API: ``from idprov import open_service`` gives an
:class:`~idprov.provisioning.service.IdentityService` over a configuration. Names are
imported on first use so that ``import idprov`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from idprov.config import Config, load_config
    from idprov.errors import IdprovError
    from idprov.model import Role, User, UserQuery
    from idprov.provisioning.service import IdentityService, open_service

_LAZY = {
    "Config": "idprov.config",
    "load_config": "idprov.config",
    "IdprovError": "idprov.errors",
    "User": "idprov.model",
    "Role": "idprov.model",
    "UserQuery": "idprov.model",
    "IdentityService": "idprov.provisioning.service",
    "open_service": "idprov.provisioning.service",
}

__all__ = [
    "Config",
    "IdentityService",
    "IdprovError",
    "Role",
    "User",
    "UserQuery",
    "__version__",
    "load_config",
    "open_service",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'idprov' has no attribute {name!r}")
