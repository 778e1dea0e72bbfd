"""What a user's push was made from: a digest of its inputs, to skip unchanged users.

A user's account at an identity provider is a pure function of the user as read (id,
domain, name, claims; its roles too where they decide the scope: at an IdP with
provisioning roles) and of the IdP's mapping (its configuration, its connector's
default attributes, idprov's version). The ledger keeps, next to the hash of what was
last sent, the digest of these inputs (:func:`inputs_digest`); a sync renders and
compares only the users whose inputs moved. A change made at the target behind
idprov's back is not an input: `sync --verify` reads the targets to find those.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from idprov.userstores.base import JsonClaims
from idprov.userstores.sql_read import claims_json

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.connectors.base import Connector
    from idprov.model import User


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _encode(data: Any) -> bytes:
    return _ENCODER.encode(data).encode()


def by_roles(idp: IdentityProviderConfig) -> bool:
    """Whether users' roles are inputs at ``idp``: they decide nothing but the scope,
    and only provisioning roles make one (no template reads roles)."""
    return idp.provisioning_roles is not None


def user_digest(user: User, roles: bool) -> str:
    """The digest of everything of ``user`` a mapping (and with ``roles``, a scope) can
    read. Claims are taken as the canonical JSON idprov stores them in, or as the text
    a store holds (not decoded: a text that is not idprov's canonical form differs from
    the decoded claims' digest, which costs one full decision, never a wrong skip)."""
    claims = user.claims
    text = claims.text if isinstance(claims, JsonClaims) else claims_json(claims)
    held = sorted(user.roles) if roles else None
    head = repr((user.id, user.domain, user.username, held))  # self-delimiting
    return hashlib.blake2b((head + text).encode(), digest_size=16).hexdigest()


RENDERING = 3
"""Raise it with any change to idprov's code that changes what a mapping renders for
the same user and configuration (a template function, a connector's defaults), or how a
user is decided (2: an `active` claim of false disables the account; 3: in any case,
and one that cannot be read too): every
user is then rendered again once, as after an upgrade."""

_FINGERPRINTS: dict[int, tuple[Any, type, str]] = {}


def idp_fingerprint(idp: IdentityProviderConfig, connector: type[Connector]) -> str:
    """The digest of what decides a user's account and scope at ``idp``: a change of
    any of it (or an upgrade of idprov) renders every user again, once. Computed once
    per configuration object."""
    cached = _FINGERPRINTS.get(id(idp))
    if cached is not None and cached[0] is idp and cached[1] is connector:
        return cached[2]
    from idprov import __version__

    data = {
        "idprov": [__version__, RENDERING],
        "idp": [idp.name, idp.connector, idp.options, idp.provisioning_roles],
        "mapping": [idp.username, idp.attributes],
        "connector": [connector.__module__, connector.__qualname__],
        "defaults": dict(connector.default_attributes_for(idp.options)),
    }
    digest = hashlib.blake2b(_encode(data), digest_size=16).hexdigest()
    if len(_FINGERPRINTS) > 256:  # configurations reloaded many times: start again
        _FINGERPRINTS.clear()
    _FINGERPRINTS[id(idp)] = (idp, connector, digest)
    return digest


def user_inputs(idp: IdentityProviderConfig, connector: type[Connector], user: User) -> str:
    """The inputs digest of ``user`` at ``idp`` (:func:`inputs_digest`, in one call)."""
    return inputs_digest(idp_fingerprint(idp, connector), user_digest(user, by_roles(idp)))


def inputs_digest(fingerprint: str, user: str) -> str:
    """What the ledger keeps: one user's inputs at one IdP (both digests, side by side)."""
    return fingerprint + user
