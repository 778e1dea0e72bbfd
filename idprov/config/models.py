"""The configuration's shape: what a YAML file may say, with defaults and checks.

Every class here is built by :func:`idprov.config.schema.build`, which rejects
unknown keys and reports errors with file, line and key path. Checks that span
several keys live in ``__post_init__``.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from idprov.config.claims import BUILTIN_CLAIMS, ClaimDefinition
from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef

PRIMARY = "PRIMARY"
RESIDENT = "resident"
DOMAIN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _check_pattern(value: str | None, key: str) -> None:
    if value is None:
        return
    try:
        re.compile(value)
    except re.error as exc:
        raise Invalid(f"not a valid regular expression ({exc})", key) from None


@dataclass(frozen=True)
class ClaimConfig(ClaimDefinition):
    """A claim declared in the configuration (beyond the built-in ones)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", self.name):
            raise Invalid("claim names are lower_snake_case, e.g. cost_center", "name")
        _check_pattern(self.pattern, "pattern")
        if self.max_length < 1:
            raise Invalid("must be at least 1", "max_length")


@dataclass(frozen=True)
class PolicyConfig:
    """What a userstore accepts. Defaults are WSO2 Identity Server's."""

    username_pattern: str = r"^[\S]{3,30}$"
    password_pattern: str = r"^[\S]{5,30}$"
    role_name_pattern: str = r"^[\S]{3,30}$"
    required_claims: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("username_pattern", "password_pattern", "role_name_pattern"):
            _check_pattern(getattr(self, key), key)


@dataclass(frozen=True)
class UserstoreConfig:
    """Common keys of every userstore; ``type`` chooses the variant."""

    domain: str = PRIMARY
    type: str = "sqlite"
    description: str = ""
    read_only: bool = False
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    @classmethod
    def variants(cls) -> Mapping[str, builtins.type[UserstoreConfig]]:
        return {"sqlite": SqliteUserstoreConfig}

    def __post_init__(self) -> None:
        if not DOMAIN_PATTERN.match(self.domain) or "/" in self.domain:
            raise Invalid(
                "a domain is letters, digits, '.', '_' or '-' (no '/'), at most 63", "domain"
            )


@dataclass(frozen=True)
class SqliteUserstoreConfig(UserstoreConfig):
    """An SQLite file. Without ``path``: idprov's own database in the data directory."""

    type: Literal["sqlite"] = "sqlite"
    path: str | None = None


@dataclass(frozen=True)
class RetryConfig:
    """How an outbound operation is retried on timeouts, 408, 429 and 5xx."""

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise Invalid("must be at least 1", "max_attempts")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise Invalid("need 0 <= initial_backoff <= max_backoff", "max_backoff")


@dataclass(frozen=True)
class IdentityProviderConfig:
    """An external system changes are provisioned to, through one connector."""

    name: str
    connector: str
    options: dict[str, Any] = field(default_factory=dict)
    provisioning_roles: list[str] | None = None
    attributes: dict[str, str | None] = field(default_factory=dict)
    """Target attribute -> template, over the connector's defaults (null drops one)."""
    username: str = "{UN}"
    push_roles: Literal["scoped", "all", "none"] = "scoped"
    """Which roles become groups: ``scoped``, the provisioning roles (all roles when
    there are none); ``all``; ``none``."""
    deprovision: Literal["delete", "disable"] = "delete"
    on_conflict: Literal["fail", "adopt"] = "fail"
    retry: RetryConfig = field(default_factory=RetryConfig)
    max_concurrency: int = 8
    enabled: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", self.name):
            raise Invalid("IdP names are letters, digits, '.', '_' or '-'", "name")
        if self.max_concurrency < 1:
            raise Invalid("must be at least 1", "max_concurrency")


@dataclass(frozen=True)
class ApplicationConfig:
    """Who asks for a change, and which identity providers its changes go out to."""

    name: str
    identity_providers: list[str] = field(default_factory=list)
    userstore: str = PRIMARY
    description: str = ""


@dataclass
class Config:
    """A whole, validated configuration. ``source`` says where it came from."""

    version: Literal[1] = 1
    data_dir: str | None = None
    claims: list[ClaimConfig] = field(default_factory=list)
    userstores: list[UserstoreConfig] = field(default_factory=list)
    identity_providers: list[IdentityProviderConfig] = field(default_factory=list)
    applications: list[ApplicationConfig] = field(default_factory=list)
    source: str = field(default="<embedded default>", compare=False, init=False)
    locator: Any = field(default=None, compare=False, init=False, repr=False)
    """Where each key is in the source file (a schema.Locator), for later checks."""

    def __post_init__(self) -> None:
        if not self.userstores:
            self.userstores = [SqliteUserstoreConfig()]
        self._check_unique()
        self._check_references()  # before `resident` is added: errors keep their indexes
        if not any(a.name == RESIDENT for a in self.applications):
            self.applications = [ApplicationConfig(RESIDENT), *self.applications]

    def _check_unique(self) -> None:
        _unique([u.domain.casefold() for u in self.userstores], "userstores", "domain")
        _unique([c.name for c in self.claims], "claims", "name")
        _unique([i.name for i in self.identity_providers], "identity_providers", "name")
        _unique([a.name for a in self.applications], "applications", "name")
        builtin = {c.name for c in BUILTIN_CLAIMS}
        for i, claim in enumerate(self.claims):
            if claim.name in builtin:
                raise Invalid(
                    f"claim {claim.name!r} is built in; choose another name",
                    f"claims[{i}].name",
                )
        if not any(u.domain == PRIMARY for u in self.userstores):
            raise Invalid(f"one userstore must have domain {PRIMARY}", "userstores")

    def _check_references(self) -> None:
        known_claims = set(self.claim_definitions())
        for i, store in enumerate(self.userstores):
            for claim in store.policy.required_claims:
                if claim not in known_claims:
                    raise Invalid(
                        f"required claim {claim!r} is not a known claim",
                        f"userstores[{i}].policy.required_claims",
                    )
        idps = {i.name for i in self.identity_providers}
        domains = {u.domain for u in self.userstores}
        for i, app in enumerate(self.applications):
            for name in app.identity_providers:
                if name not in idps:
                    raise Invalid(
                        f"unknown identity provider {name!r} (declared: "
                        f"{', '.join(sorted(idps)) or 'none'})",
                        f"applications[{i}].identity_providers",
                    )
            if app.userstore not in domains:
                raise Invalid(
                    f"unknown userstore domain {app.userstore!r}", f"applications[{i}].userstore"
                )

    def claim_definitions(self) -> dict[str, ClaimDefinition]:
        """Every claim idprov knows here, built-in first, by name."""
        claims: dict[str, ClaimDefinition] = {c.name: c for c in BUILTIN_CLAIMS}
        claims.update({c.name: c for c in self.claims})
        return claims

    def userstore(self, domain: str) -> UserstoreConfig:
        for store in self.userstores:
            if store.domain.casefold() == domain.casefold():
                return store
        from idprov.errors import NotFoundError

        raise NotFoundError(
            f"no userstore with domain {domain!r}",
            hint="declared domains: " + ", ".join(u.domain for u in self.userstores),
        )

    def application(self, name: str) -> ApplicationConfig:
        for app in self.applications:
            if app.name == name:
                return app
        from idprov.errors import NotFoundError

        raise NotFoundError(
            f"no application named {name!r}",
            hint="declared applications: " + ", ".join(a.name for a in self.applications),
        )

    def secret_refs(self) -> list[SecretRef]:
        """Every secret reference in the configuration (for `config validate`)."""
        from idprov.config.schema import to_data

        found: list[SecretRef] = []
        _collect_secrets(self.userstores, found)
        for idp in self.identity_providers:
            _collect_secrets(to_data(idp.options), found)
        return found


def _collect_secrets(obj: Any, found: list[SecretRef]) -> None:
    if isinstance(obj, SecretRef):
        found.append(obj)
    elif isinstance(obj, list | tuple):
        for item in obj:
            _collect_secrets(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _collect_secrets(item, found)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            _collect_secrets(getattr(obj, name), found)


def _unique(values: list[str], section: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise Invalid(f"duplicate {key} {value!r}", f"{section}[{i}].{key}")
        seen.add(value)
