"""Provisioning roles that name no role: a typo in a scope would deprovision everyone.

An identity provider's ``provisioning_roles`` is its scope: a user holding none of
them is deprovisioned there. A scope role that no userstore has (nor an internal
role) is almost always a typo (``stafff`` for ``staff``), and a sync under it would
delete every account idprov made at that IdP. So that IdP's plan is refused (nothing
is enqueued or sent there; the other IdPs go on), and ``config validate`` says so.

A scope role is read as :func:`~idprov.provisioning.decide.role_pushed` reads it:
case-insensitively; ``DOMAIN/name`` names the role of that userstore,
``Internal/name`` an internal role, and a bare name the role of that name in any
userstore. Only a complete read can tell a role is missing: a userstore that could
not be read refuses the whole plan anyway (no deletions from a failed read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from idprov.errors import ConfigError
from idprov.provisioning.internal_roles import is_internal

if TYPE_CHECKING:
    from idprov.config.models import Config, IdentityProviderConfig
    from idprov.model import Role

KnownRoles = Mapping[tuple[str, str], str]
"""Every role read: (domain, name), both case-folded, to its qualified name."""


def known_roles(roles: Iterable[Role]) -> dict[tuple[str, str], str]:
    """The :data:`KnownRoles` of ``roles``."""
    return {(r.domain.casefold(), r.name.casefold()): r.qualified_name for r in roles}


def unknown_roles(idp: IdentityProviderConfig, known: KnownRoles) -> list[str]:
    """The provisioning roles of ``idp`` that name no role of ``known``."""
    return [r for r in idp.provisioning_roles or [] if not _exists(r, known)]


def _exists(role: str, known: KnownRoles) -> bool:
    domain, sep, name = role.casefold().partition("/")
    if sep and (domain, name) in known:
        return True
    return any(n == role.casefold() and not is_internal(d) for d, n in known)


def scope_error(
    config: Config, idp: IdentityProviderConfig, known: KnownRoles, planned: bool = True
) -> ConfigError | None:
    """Why the plan of ``idp`` is refused (None: every provisioning role exists):
    naming the IdP, the role, its line in the configuration file and the fix
    (``planned``: said of a plan just refused; else of the plans to come)."""
    unknown = unknown_roles(idp, known)
    if not unknown:
        return None
    from idprov.config.schema import Locator

    i = next(n for n, p in enumerate(config.identity_providers) if p.name == idp.name)
    j = next(n for n, r in enumerate(idp.provisioning_roles or []) if r == unknown[0])
    locator = config.locator or Locator(config.source)
    roles = ", ".join(f"{r!r}{_did_you_mean(r, known)}" for r in unknown)
    if planned:
        outcome = f"identity provider {idp.name} is not synced (every account there would "
        outcome += f"be out of its scope); nothing was sent to {idp.name}"
    else:
        outcome = f"`idprov sync` and `idprov plan` refuse identity provider {idp.name} "
        outcome += "(every account there would be out of its scope)"
    return ConfigError(
        f"no userstore has a role {roles}: {outcome}",
        location=locator.where(("identity_providers", i, "provisioning_roles", j)),
        key=f"identity_providers[{i}].provisioning_roles[{j}]",
        hint=f"fix identity_providers[{i}].provisioning_roles, or `idprov role add "
        f"{unknown[0]}` first (a role a scope names must exist)",
    )


def _did_you_mean(role: str, known: KnownRoles) -> str:
    from idprov.spelling import closest

    names = {n: q for (_, n), q in known.items()} | {q.casefold(): q for q in known.values()}
    hit = closest(role, names)
    return f" (did you mean {names[hit]!r}?)" if hit is not None else ""


def scope_errors(
    config: Config, names: Iterable[str], known: KnownRoles, planned: bool = True
) -> dict[str, ConfigError]:
    """The refusal of each IdP of ``names`` whose scope names a role no store has."""
    idps = {p.name: p for p in config.identity_providers}
    found = {n: scope_error(config, idps[n], known, planned) for n in names if n in idps}
    return {n: e for n, e in found.items() if e is not None}
