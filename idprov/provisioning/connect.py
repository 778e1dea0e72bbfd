"""Making connectors from identity provider configurations.

An IdP's ``options:`` are validated by its connector's own ``Options`` dataclass,
and its templates checked against the known claims, with the configuration file's
line numbers in any error. That happens when a service opens (only if IdPs are
declared, so the embedded default loads no connector) and in `config validate`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.config.models import Config, IdentityProviderConfig
from idprov.config.schema import Locator, build
from idprov.errors import ConfigError

if TYPE_CHECKING:
    import ssl

    import httpx

    from idprov.connectors.base import Connector
    from idprov.connectors.http import HttpOptions, RateLimiter


@dataclasses.dataclass(frozen=True)
class DisabledIdpProblem:
    """What an IdP with ``enabled: false`` has wrong in its options or mapping: only a
    warning while it stays disabled (nothing is pushed there), refused once enabled."""

    idp: str
    entry: str
    """Where the IdP's entry is (file:line:column)."""
    error: ConfigError

    @property
    def line(self) -> str:
        """The one-line warning of a command other than `config validate` (the same
        for each problem of the IdP)."""
        return (
            f"{self.entry}: identity provider {self.idp} (enabled: false) has options that "
            "are refused once it is enabled: `idprov config validate` says what to change"
        )

    def warning(self) -> ConfigError:
        """The whole problem, for `config validate`."""
        return ConfigError(
            f"{self.error.message} (identity provider {self.idp} has enabled: false: a "
            "warning now, refused once it is enabled)",
            hint=self.error.hint,
        )


def check_identity_providers(config: Config) -> list[DisabledIdpProblem]:
    """Validate every IdP's connector and options in place (options become the
    connector's Options object). Raises ConfigError with file and line; the problems
    of options and mapping (a mark the mapping fills, a missing ``ca_file``) of every
    enabled IdP in one error. Those of an IdP with ``enabled: false`` are returned,
    not raised: nothing is pushed there while it is disabled."""
    from idprov.connectors import registry
    from idprov.provisioning.mapping import check_template

    locator = config.locator or Locator(config.source)
    claims = set(config.claim_definitions())
    checked = []
    problems: list[tuple[IdentityProviderConfig, ConfigError]] = []
    for i, idp in enumerate(config.identity_providers):
        path: tuple[str | int, ...] = ("identity_providers", i)
        try:
            cls = registry.load(idp.connector)
        except ConfigError as exc:
            raise ConfigError(
                exc.message,
                location=locator.where((*path, "connector")),
                key=f"identity_providers[{i}].connector",
                hint=exc.hint,
            ) from None
        options = idp.options
        if isinstance(options, dict):
            options = build(cls.Options, options, locator, (*path, "options"), type(idp))
        for key, template in [
            ("username", idp.username),
            *[(f"attributes.{k}", v) for k, v in idp.attributes.items() if v is not None],
        ]:
            try:
                check_template(template, claims)
            except ValueError as exc:
                raise ConfigError(
                    str(exc),
                    location=locator.where((*path, *key.split(".", 1))),
                    key=f"identity_providers[{i}].{key}",
                ) from None
        problems += [(idp, p) for p in _option_problems(idp, cls, options, locator, i)]
        deprovision = idp.deprovision or cls.default_deprovision
        checked.append(dataclasses.replace(idp, options=options, deprovision=deprovision))
    config.identity_providers = checked
    refused = [problem for idp, problem in problems if idp.enabled]
    if refused:
        raise _all_of(refused)
    entries = {idp.name: locator.where(("identity_providers", i)) for i, idp in enumerate(checked)}
    return [DisabledIdpProblem(idp.name, entries[idp.name], p) for idp, p in problems]


def _option_problems(
    idp: IdentityProviderConfig,
    cls: type[Connector],
    options: Any,
    locator: Locator,
    index: int,
) -> list[ConfigError]:
    """What is wrong with the options and mapping of ``idp`` (the ``index``-th entry)
    for its connector ``cls``: a ``ca_file`` that is not a file, a mapping the
    connector refuses."""
    from idprov.connectors.base import MappingInvalid

    path, prefix = ("identity_providers", index), f"identity_providers[{index}]."
    found = []
    ca_file = getattr(options, "ca_file", None)
    if ca_file and not Path(ca_file).expanduser().is_file():
        found.append(
            ConfigError(
                f"ca_file {ca_file} does not exist or is not a file",
                location=locator.where((*path, "options", "ca_file")),
                key=f"{prefix}options.ca_file",
                hint="give the path of the PEM file holding the CA certificate(s) that sign "
                "the target's certificate, or remove ca_file to trust the system's CAs",
            )
        )
    try:
        cls.check_mapping(idp, options)
    except MappingInvalid as exc:
        found.append(
            ConfigError(
                str(exc),
                location=locator.where((*path, *exc.path)),
                key=prefix + ".".join(exc.path),
                hint=exc.hint,
            )
        )
    return found


def _all_of(errors: list[ConfigError]) -> ConfigError:
    """One error for all of ``errors`` (the one itself when it is alone), each with
    where it is and how to fix it, so that none is found only once another is fixed."""
    if len(errors) == 1:
        return errors[0]
    lines = [f"- {e.message}" + (f"\n  fix: {e.hint}" if e.hint else "") for e in errors]
    return ConfigError(
        f"{len(errors)} problems in identity providers' options:\n" + "\n".join(lines),
        hint="fix each as its line says (an identity provider with enabled: false only warns)",
    )


def open_connector(
    idp: IdentityProviderConfig,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    shared: SharedPerIdp | None = None,
) -> Connector:
    """The connector for ``idp``, with an HTTP client of its own if it speaks HTTP:
    its pace, slots and TLS context are ``shared``'s for the IdP, or its own."""
    from idprov.connectors import registry
    from idprov.connectors.http import HttpOptions, RateLimiter
    from idprov.connectors.http_client import per_thread_client

    cls = registry.load(idp.connector)
    options: Any = idp.options
    if isinstance(options, dict):
        options = build(
            cls.Options, options, Locator(f"identity provider {idp.name}"), ("options",)
        )
    client = limiter = None
    if cls.uses_http and isinstance(options, HttpOptions):
        if shared is not None:
            limiter, tls = shared.limiter(idp), shared.tls(idp.name, options)
        else:
            limiter = RateLimiter(idp.rate_limit, sleep=sleep, concurrency=idp.max_concurrency)
            tls = None
        client = per_thread_client(options, transport, limiter, tls)
    connector = cls(idp, options, client)
    connector.limiter = limiter
    return connector


class SharedPerIdp:
    """What all the services of one server share per IdP. `idprov serve` opens a
    service per thread and application, each with connectors and threads of its own;
    sharing one :class:`~idprov.connectors.http.RateLimiter` per IdP, the IdP gets at
    most ``max_concurrency`` requests in flight and the ``rate_limit`` pace (slowed
    for all when it throttles) from the whole process, as its configuration promises,
    not from each service. They also share its TLS context (making one reads every
    CA certificate: 10–20 ms, for each of the dozens of connectors a server opens)."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._sleep = sleep
        self._lock = threading.Lock()
        self._limiters: dict[str, RateLimiter] = {}
        self._tls: dict[str, ssl.SSLContext] = {}

    def tls(self, name: str, options: HttpOptions) -> ssl.SSLContext:
        """The TLS context of IdP ``name``'s clients."""
        from idprov.connectors.http_client import tls_context

        with self._lock:
            if name not in self._tls:
                self._tls[name] = tls_context(options)
            return self._tls[name]

    def limiter(self, idp: IdentityProviderConfig) -> RateLimiter:
        """The pace and the slots of every HTTP connector to ``idp``."""
        from idprov.connectors.http import RateLimiter

        with self._lock:
            if idp.name not in self._limiters:
                self._limiters[idp.name] = RateLimiter(
                    idp.rate_limit, sleep=self._sleep, concurrency=idp.max_concurrency
                )
            return self._limiters[idp.name]
