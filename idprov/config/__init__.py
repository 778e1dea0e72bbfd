"""Configuration: YAML to validated models, discovery, the embedded default, secrets."""

from idprov.config.loader import discover, load_config, load_file, load_text
from idprov.config.models import (
    PRIMARY,
    RESIDENT,
    ApplicationConfig,
    ClaimConfig,
    Config,
    IdentityProviderConfig,
    PolicyConfig,
    SqliteUserstoreConfig,
    UserstoreConfig,
)

__all__ = [
    "PRIMARY",
    "RESIDENT",
    "ApplicationConfig",
    "ClaimConfig",
    "Config",
    "IdentityProviderConfig",
    "PolicyConfig",
    "SqliteUserstoreConfig",
    "UserstoreConfig",
    "discover",
    "load_config",
    "load_file",
    "load_text",
]
