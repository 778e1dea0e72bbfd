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

from idprov.config.claims import BUILTIN_CLAIMS, RESERVED_CLAIM_NAMES, ClaimDefinition
from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef

PRIMARY = "PRIMARY"
PushRoles = Literal["scoped", "all", "none"]
"""Which roles become groups at an identity provider (``push_roles``)."""
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


POLICY_PRESETS: Mapping[str, Mapping[str, str]] = {
    "default": {
        # Email- and UPN-shaped names up to RFC 5321's 254 characters.
        "username_pattern": r"^\S{1,254}$",
        # NIST SP 800-63B 5.1.1.2: at least 8 characters, at least 64 allowed, spaces
        # and all of Unicode accepted, no composition rules.
        "password_pattern": r"^[^\x00-\x1f\x7f]{8,256}$",
        # Group names of SCIM clients hold spaces ("Sales EMEA").
        "role_name_pattern": r"^(?=.{1,254}$)\S(.*\S)?$",
    },
    "wso2": {
        # WSO2 Identity Server's defaults.
        "username_pattern": r"^[\S]{3,30}$",
        "password_pattern": r"^[\S]{5,30}$",
        "role_name_pattern": r"^[\S]{3,30}$",
    },
}
"""Named sets of patterns; ``policy: {preset: wso2}`` opts into WSO2's."""


@dataclass(frozen=True)
class PolicyConfig:
    """What a userstore accepts: a preset's patterns, each replaceable one by one."""

    preset: Literal["default", "wso2"] = "default"
    username_pattern: str = ""
    password_pattern: str = ""
    role_name_pattern: str = ""
    required_claims: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key, pattern in POLICY_PRESETS[self.preset].items():
            if not getattr(self, key):
                object.__setattr__(self, key, pattern)
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
        from idprov.config.ldap import LdapUserstoreConfig  # only when a file names one
        from idprov.config.postgres import PostgresUserstoreConfig

        return {
            "sqlite": SqliteUserstoreConfig,
            "ldap": LdapUserstoreConfig,
            "postgres": PostgresUserstoreConfig,
        }

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
class StateConfig:
    """Where idprov keeps its own state, when not in the data directory's SQLite file
    (the default, which needs no key): ``state: {url: postgresql://...}``."""

    type: str = "postgres"

    @classmethod
    def variants(cls) -> Mapping[str, builtins.type[StateConfig]]:
        from idprov.config.postgres import PostgresStateConfig  # only when a file names one

        return {"postgres": PostgresStateConfig}


@dataclass(frozen=True)
class AuditConfig:
    """The audit log's retention: ``audit: {keep_days: 400}`` removes the entries older
    than that at each `idprov sync` (see idprov/provisioning/retention.py). Without it,
    every entry is kept."""

    keep_days: int | None = None

    def __post_init__(self) -> None:
        if self.keep_days is not None and not 1 <= self.keep_days <= 36_500:
            raise Invalid(
                "must be between 1 and 36500 (days, 100 years); leave it out to keep every entry",
                "keep_days",
            )


@dataclass(frozen=True)
class RetryConfig:
    """How an outbound operation is retried on timeouts, 408, 429 and 5xx."""

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    row_initial_backoff: float = 30.0
    """The outbox worker's schedule for a failed row: wait this long after its first
    failed drain, doubling after each one, up to ``row_max_backoff``."""
    row_max_backoff: float = 3600.0
    quarantine_after: float = 3600.0
    """An IdP where every operation has failed for this many seconds is quarantined:
    the worker tries it only once per ``row_max_backoff`` until one succeeds."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise Invalid("must be at least 1", "max_attempts")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise Invalid("need 0 <= initial_backoff <= max_backoff", "max_backoff")
        if self.row_initial_backoff < 0 or self.row_max_backoff < self.row_initial_backoff:
            raise Invalid("need 0 <= row_initial_backoff <= row_max_backoff", "row_max_backoff")
        if self.quarantine_after <= 0:
            raise Invalid("must be positive (seconds)", "quarantine_after")

    def row_delay(self, failures: int) -> float:
        """Seconds the worker waits before draining a row again after its
        ``failures``-th failed drain."""
        return min(
            self.row_max_backoff, self.row_initial_backoff * 2.0 ** min(max(failures - 1, 0), 40)
        )


@dataclass(frozen=True)
class GuardThreshold:
    """One kind of destructive change: more than ``max_deletes`` of them at an IdP,
    or (from ``min_deletes`` on) more than ``max_percent`` of what is there, trips."""

    max_deletes: int = 100
    max_percent: float = 20.0
    min_deletes: int = 10

    def __post_init__(self) -> None:
        if self.max_deletes < 0 or self.min_deletes < 0:
            raise Invalid("must be 0 or more", "max_deletes")
        if not 0 <= self.max_percent <= 100:
            raise Invalid("must be between 0 and 100", "max_percent")


@dataclass(frozen=True)
class GuardConfig:
    """The deletion guard of every destructive change at one IdP, whatever command
    causes it (see idprov/provisioning/guard.py). The top-level keys are for user
    deprovisions; ``groups`` (group deletions), ``memberships`` (members removed from
    groups) and ``attributes`` (users losing an attribute that was sent) have their
    own. Over a threshold, sync refuses and other changes are held for confirmation,
    unless ``--allow-deletes N``."""

    max_deletes: int = 100
    max_percent: float = 20.0
    min_deletes: int = 10
    groups: GuardThreshold = field(
        default_factory=lambda: GuardThreshold(max_deletes=10, max_percent=25.0, min_deletes=3)
    )
    memberships: GuardThreshold = field(
        default_factory=lambda: GuardThreshold(max_deletes=1000, max_percent=20.0, min_deletes=50)
    )
    attributes: GuardThreshold = field(default_factory=GuardThreshold)

    def __post_init__(self) -> None:
        GuardThreshold(self.max_deletes, self.max_percent, self.min_deletes)

    @property
    def users(self) -> GuardThreshold:
        return GuardThreshold(self.max_deletes, self.max_percent, self.min_deletes)


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
    push_roles: PushRoles = "scoped"
    """Which roles become groups: ``scoped``, the provisioning roles (all roles when
    there are none); ``all``; ``none``."""
    deprovision: Literal["delete", "disable"] | None = None
    """What happens to an account that leaves scope. None (not given): the
    connector's default, ``delete`` (``disable`` for Salesforce, which never deletes)."""
    on_conflict: Literal["fail", "adopt"] = "fail"
    retry: RetryConfig = field(default_factory=RetryConfig)
    max_concurrency: int = 8
    rate_limit: float | None = None
    """At most this many requests per second to this IdP (None: no limit); a 429 slows
    it down further."""
    deletion_guard: GuardConfig = field(default_factory=GuardConfig)
    enabled: bool = True
    blocking: bool = True
    """True: a change (a command, a SCIM request) returns after its push to this IdP.
    False: the change and its outbox rows are committed and the worker pushes them;
    CLI commands still wait for them unless ``--no-wait``."""
    description: str = ""
    jit: bool = False
    """Whether users that a JIT login creates or updates go out to this IdP (an opt-in,
    as in the model system); other changes go out whatever this says."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", self.name):
            raise Invalid("IdP names are letters, digits, '.', '_' or '-'", "name")
        if self.max_concurrency < 1:
            raise Invalid("must be at least 1", "max_concurrency")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise Invalid("must be positive (requests per second)", "rate_limit")
        self._check_urls()
        self._check_role_targets()

    def _check_urls(self) -> None:
        """No credential in a URL of the options (``base_url``, ``token_url``...): it
        would be shown wherever the target is named (see :mod:`idprov.config.urls`)."""
        from idprov.config.urls import refuse_url_credentials

        if not isinstance(self.options, dict):
            return  # options the connector built: checked as the dict they were built from
        for key, value in self.options.items():
            if isinstance(value, str) and (key == "url" or key.endswith(("_url", "_uri"))):
                refuse_url_credentials(value, f"options.{key}", IDP_SECRET_KEYS)

    def _check_role_targets(self) -> None:
        """Salesforce creates no groups: a role it is pushed goes to the permission set
        or public group that ``options.roles`` maps it to, so each provisioning role
        pushed there (``push_roles: scoped``) needs one, or every change touching it
        fails at the push."""
        if self.connector != "salesforce" or self.push_roles != "scoped":
            return
        options = self.options
        roles = options.get("roles") if isinstance(options, dict) else getattr(options, "roles", {})
        mapped = {str(r).casefold() for r in roles or {}}
        for i, role in enumerate(self.provisioning_roles or []):
            if role.casefold() not in mapped:
                raise Invalid(
                    f"provisioning role {role!r} is pushed to Salesforce (push_roles: scoped) "
                    "but options.roles maps it to no permission set or public group; add "
                    f"`{role}: {{type: permission_set, name: API_NAME}}` (or type: group) "
                    "under options.roles, or set push_roles: none to push no roles",
                    f"provisioning_roles[{i}]",
                )


IDP_SECRET_KEYS = (
    "the IdP's secret reference keys instead (token or password; client_secret, "
    "private_key or credentials for Salesforce and Google) to env:NAME, file:PATH or "
    "keyring:NAME"
)
"""Where an identity provider's credentials go (never into a URL of its options)."""


DEFAULT_JIT_CLAIMS: dict[str, str] = {
    "email": "email",
    "given_name": "given_name",
    "family_name": "family_name",
    "middle_name": "middle_name",
    "display_name": "name",
    "nickname": "nickname",
    "phone_number": "phone_number",
    "locale": "locale",
    "timezone": "zoneinfo",
}
"""Local claim -> OpenID Connect standard claim (OIDC Core 1.0, section 5.1)."""

ASYMMETRIC_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


@dataclass(frozen=True)
class JitConfig:
    """Just-in-time provisioning of the users who log in to an application through one
    federated IdP: where they land, how the IdP's claims and groups map to local claims
    and roles, and how its ID tokens are verified."""

    idp: str
    """The federated IdP, as `idprov jit login --idp` and POST /jit/login name it."""
    enabled: bool = True
    userstore: str | None = None
    """Domain new users land in (default: the application's userstore)."""
    username_claim: str = "sub"
    subject_claim: str = "sub"
    """The IdP's stable id of the person: a login is linked to its local user by it."""
    link_existing: Literal["never", "by_email"] = "never"
    """Whether a first login may take over a local user it did not create: ``by_email``
    when the user's email claim equals the login's (``email_verified`` not false)."""
    allow_unverified_claims: bool = False
    """Accept claims (not an ID token) for an IdP that has keys to verify tokens with."""
    claims: dict[str, str | None] = field(default_factory=dict)
    """Local claim -> the IdP's claim, over :data:`DEFAULT_JIT_CLAIMS` (null drops one)."""
    roles_claim: str | None = "groups"
    roles: dict[str, list[str]] = field(default_factory=dict)
    """The IdP's group -> the local roles its members get."""
    default_roles: list[str] = field(default_factory=list)
    update_on_login: bool = True
    """Whether an existing user's claims and mapped roles follow the IdP on each login."""
    issuer: str | None = None
    audience: str | None = None
    jwks_file: str | None = None
    public_key_file: str | None = None
    shared_secret: SecretRef | None = None
    algorithms: list[str] | None = None
    """Accepted signing algorithms (default: RS256 and ES256 for keys, HS256 for a secret)."""
    leeway: int = 30
    """Seconds of clock difference tolerated on exp, iat and nbf."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", self.idp):
            raise Invalid("IdP names are letters, digits, '.', '_' or '-'", "idp")
        keys = [k for k in ("jwks_file", "public_key_file", "shared_secret") if getattr(self, k)]
        if len(keys) > 1:
            raise Invalid(f"give one of jwks_file, public_key_file, shared_secret, not {keys}")
        if keys and not (self.issuer and self.audience):
            raise Invalid(
                "ID tokens are checked against issuer and audience: set both",
                "audience" if self.issuer else "issuer",
            )
        allowed = HMAC_ALGORITHMS if self.shared_secret else ASYMMETRIC_ALGORITHMS
        for alg in self.algorithms or []:
            if alg not in allowed:  # never "none", never HS* with a public key
                raise Invalid(
                    f"{alg!r} is not allowed with {keys[0] if keys else 'a public key'}"
                    f" (allowed: {', '.join(allowed)})",
                    "algorithms",
                )
        if self.leeway < 0:
            raise Invalid("must be 0 or more", "leeway")

    def local_claims(self) -> dict[str, str]:
        """Local claim -> IdP claim in effect: the defaults with ``claims`` over."""
        merged: dict[str, str | None] = {**DEFAULT_JIT_CLAIMS, **self.claims}
        return {local: remote for local, remote in merged.items() if remote}

    def signing_algorithms(self) -> list[str]:
        if self.algorithms:
            return list(self.algorithms)
        return ["HS256"] if self.shared_secret else ["RS256", "ES256"]


@dataclass(frozen=True)
class ApplicationConfig:
    """Who asks for a change, and which identity providers its changes go out to."""

    name: str
    identity_providers: list[str] = field(default_factory=list)
    userstore: str = PRIMARY
    description: str = ""
    inbound_token: SecretRef | None = None
    """The bearer token with which `idprov serve` lets programs act as this application."""
    jit: list[JitConfig] = field(default_factory=list)
    """Federated IdPs whose logins provision users just in time."""

    def __post_init__(self) -> None:
        _unique([j.idp for j in self.jit], "jit", "idp")


@dataclass
class Config:
    """A whole, validated configuration. ``source`` says where it came from."""

    version: Literal[1] = 1
    data_dir: str | None = None
    claims: list[ClaimConfig] = field(default_factory=list)
    userstores: list[UserstoreConfig] = field(default_factory=list)
    identity_providers: list[IdentityProviderConfig] = field(default_factory=list)
    applications: list[ApplicationConfig] = field(default_factory=list)
    state: StateConfig | None = None
    """idprov's own state elsewhere than ``<data_dir>/idprov.db`` (PostgreSQL)."""
    audit: AuditConfig = field(default_factory=AuditConfig)
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
            if claim.name in RESERVED_CLAIM_NAMES:
                raise Invalid(
                    f"{claim.name!r} cannot be a claim name: {RESERVED_CLAIM_NAMES[claim.name]}; "
                    "give the claim another name (reserved: "
                    f"{', '.join(sorted(RESERVED_CLAIM_NAMES))})",
                    f"claims[{i}].name",
                )
        for i, store in enumerate(self.userstores):
            if store.domain.casefold() == "internal":
                raise Invalid(
                    "the domain Internal is idprov's own, for roles that hold users "
                    "of several domains; choose another name",
                    f"userstores[{i}].domain",
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
            _check_jit(app, f"applications[{i}]", domains, known_claims)

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

    def unused_identity_providers(self) -> list[tuple[int, IdentityProviderConfig]]:
        """(index, IdP) of each enabled identity provider that no application names:
        nothing is provisioned to it (the CLI, imports and sync act as `resident`)."""
        used = {name for app in self.applications for name in app.identity_providers}
        return [
            (i, idp)
            for i, idp in enumerate(self.identity_providers)
            if idp.enabled and idp.name not in used
        ]

    def secret_refs(self) -> list[SecretRef]:
        """Every secret reference in the configuration (for `config validate`)."""
        from idprov.config.schema import to_data

        found: list[SecretRef] = []
        _collect_secrets(self.userstores, found)
        _collect_secrets(self.applications, found)
        _collect_secrets(self.state, found)
        for idp in self.identity_providers:
            _collect_secrets(to_data(idp.options), found)
        return found


def path_in_file(config: Config, path: tuple[Any, ...]) -> tuple[Any, ...]:
    """``path`` into ``config`` as the file writes it: the `resident` application,
    added first when the file does not declare it, moves every other by one."""
    if len(path) < 2 or path[0] != "applications" or not isinstance(path[1], int):
        return path
    marks = config.locator.marks if config.locator else {}
    declared = {k[1] for k in marks if len(k) > 1 and k[0] == "applications"}
    added = len(config.applications) - len(declared) if declared else 0
    return ("applications", path[1] - added, *path[2:])


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


def _check_jit(app: ApplicationConfig, where: str, domains: set[str], claims: set[str]) -> None:
    for j, jit in enumerate(app.jit):
        if jit.userstore is not None and jit.userstore not in domains:
            raise Invalid(
                f"unknown userstore domain {jit.userstore!r}", f"{where}.jit[{j}].userstore"
            )
        for local in jit.claims:
            if local not in claims:
                raise Invalid(f"{local!r} is not a known claim", f"{where}.jit[{j}].claims")


def _unique(values: list[str], section: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise Invalid(f"duplicate {key} {value!r}", f"{section}[{i}].{key}")
        seen.add(value)


def __getattr__(name: str) -> Any:
    """The LDAP and PostgreSQL userstores' configurations live in idprov.config.ldap and
    idprov.config.postgres, imported only when used (the embedded default never needs
    them)."""
    if name in ("LdapUserstoreConfig", "DEFAULT_LDAP_CLAIMS", "LDAP_ATTRIBUTE"):
        from idprov.config import ldap

        return getattr(ldap, name)
    if name == "PostgresUserstoreConfig":
        from idprov.config import postgres

        return postgres.PostgresUserstoreConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
