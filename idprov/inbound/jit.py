"""Just-in-time (JIT) provisioning: what a federated login does to the local userstore.

When a user logs in to an application through a federated IdP (an OIDC provider, a
SAML IdP), the application's ``jit:`` entry for that IdP says whether the login may
create the user locally, in which userstore, how the IdP's claims (``sub``,
``email``, ``given_name``, ``groups``...) become local claims and roles, and whether
an existing user follows the IdP on every login. The login then goes out, through the
outbox like any change, to the application's identity providers that opted in with
``jit: true`` (as in the model system, outbound JIT provisioning is per IdP).

Claims come from a JSON document (what an authenticating proxy already verified) or
from an OpenID Connect ID token, whose signature is checked against the configured
JWKS file, public key or shared secret, and whose ``iss``, ``aud`` and ``exp`` are
enforced. PyJWT is imported only for ID tokens.

Who a login may be is :mod:`idprov.inbound.jit_trust`'s: a verified token where one
can be verified, and the local user linked to the login's subject, never another.

An update only sets the claims the IdP sent (a login with fewer claims erases
nothing), and only adds or removes the roles the mapping manages (``roles`` values
and ``default_roles``): roles given locally stay.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from idprov.config import Config
from idprov.config.models import JitConfig
from idprov.errors import (
    ConfigError,
    IdprovError,
    NotFoundError,
    PolicyError,
    UsageError,
    from_os_error,
)
from idprov.inbound.jit_trust import (
    UnverifiedClaims,
    linked_user,
    login_origin,
    subject_of,
    verifies_tokens,
)
from idprov.model import ClaimValue, User
from idprov.userstores import policy

if TYPE_CHECKING:
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import IdentityService
    from idprov.provisioning.unit_of_work import PendingPush, UnitOfWork


class TokenRejected(PolicyError):
    """An ID token that does not verify: bad signature, expired, or not for us."""

    code = "token_rejected"


class JitDisabled(PolicyError):
    code = "jit_disabled"


@dataclass
class JitResult:
    """What one login did locally, and what went out."""

    application: str
    idp: str
    action: str
    """``created``, ``updated`` or ``unchanged``."""
    user: User
    claims_changed: list[str] = field(default_factory=list)
    roles_added: list[str] = field(default_factory=list)
    roles_removed: list[str] = field(default_factory=list)
    outbound: OutboundReport | None = None
    pending: PendingPush | None = field(default=None, repr=False)
    """With ``login(push=False)``: what the caller must push."""

    @property
    def outbound_failed(self) -> bool:
        return self.outbound is not None and not self.outbound.ok

    @property
    def outbound_held(self) -> bool:
        """Whether the deletion guard held the login's push (exit 7, as any command)."""
        return self.outbound is not None and bool(self.outbound.held)

    def to_dict(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "idp": self.idp,
            "action": self.action,
            "user": self.user.to_dict(),
            "claims_changed": self.claims_changed,
            "roles_added": self.roles_added,
            "roles_removed": self.roles_removed,
            "outbound": self.outbound.to_dict() if self.outbound is not None else None,
        }


# ---------------------------------------------------------------- configuration
def jit_settings(config: Config, application: str, idp: str) -> JitConfig:
    """The application's JIT settings for federated IdP ``idp``; refused when absent
    or off."""
    app = config.application(application)
    for jit in app.jit:
        if jit.idp == idp:
            if not jit.enabled:
                raise JitDisabled(
                    f"JIT provisioning through {idp!r} is off for application {application!r}",
                    hint=f"set enabled: true in the jit entry of {idp} under {application}",
                )
            return jit
    known = ", ".join(j.idp for j in app.jit) or "none"
    raise NotFoundError(
        f"application {application!r} has no JIT settings for IdP {idp!r}",
        hint=f"add a `jit: [{{idp: {idp}}}]` entry to the application (configured: {known})",
    )


def jit_view(config: Config, application: str) -> Config:
    """``config`` as a JIT login of ``application`` sees it: the application provisions
    only to its identity providers that opted in with ``jit: true``."""
    opted_in = {i.name for i in config.identity_providers if i.jit}
    view = copy.copy(config)
    view.applications = [
        dataclasses.replace(
            a, identity_providers=[n for n in a.identity_providers if n in opted_in]
        )
        if a.name == application
        else a
        for a in config.applications
    ]
    return view


def open_jit_service(config: Config, application: str, **kwargs: Any) -> IdentityService:
    """A service acting as ``application`` for JIT logins (see :func:`jit_view`)."""
    from idprov.provisioning.service import IdentityService

    return IdentityService(jit_view(config, application), application=application, **kwargs)


# ---------------------------------------------------------------- ID tokens
def read_claims_file(path: str) -> dict[str, Any]:
    """The JSON object of a claims file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:  # missing: exit 3, as every file a command is given
        raise from_os_error(exc, "read the claims file") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        reason = "nested too deeply to read" if isinstance(exc, RecursionError) else exc
        raise UsageError(
            f"claims file {path} is not JSON: {reason}",
            hint='write one JSON object, e.g. {"sub": "alice", "email": "alice@example.com"}',
        ) from exc
    if not isinstance(data, dict):
        raise UsageError(f"claims file {path} holds JSON, but not an object of claims")
    return data


def verify_id_token(token: str, settings: JitConfig) -> dict[str, Any]:
    """The claims of an ID token whose signature, ``iss``, ``aud`` and ``exp`` check
    out against ``settings``; :class:`TokenRejected` saying why not."""
    import jwt

    if not (settings.jwks_file or settings.public_key_file or settings.shared_secret):
        raise UsageError(
            f"no key to verify ID tokens of {settings.idp!r}",
            hint="set jwks_file, public_key_file or shared_secret (with issuer and audience) "
            "in its jit entry, or log in with verified claims instead",
        )
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"the ID token is not a JWT: {exc}") from exc
    key = _signing_key(header, settings)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=settings.signing_algorithms(),
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise _rejection(exc, token, settings) from exc
    return dict(claims)


def _signing_key(header: Mapping[str, Any], settings: JitConfig) -> Any:
    if settings.shared_secret is not None:
        return settings.shared_secret.reveal()
    if settings.public_key_file:
        return public_key(settings)
    path = str(settings.jwks_file)
    kid = header.get("kid")
    matching = [k for k in jwks_keys(path) if kid is None or k.key_id == kid]
    if kid is None and len(matching) > 1:
        raise TokenRejected(
            "the ID token names no key (kid) and the JWKS holds several",
            hint=f"the IdP signs with a key id; check that {path} is its JWKS",
        )
    if not matching:
        raise TokenRejected(
            f"the ID token is signed with key {kid!r}, which is not in {path}",
            hint="the IdP may have rotated its keys: refresh the JWKS file",
        )
    return matching[0]


def check_key_material(settings: JitConfig) -> None:
    """:class:`ConfigError` when the entry's ``jwks_file`` or ``public_key_file``
    cannot be read or holds no usable key (what ``config validate --strict`` checks)."""
    if settings.public_key_file:
        public_key(settings)
    elif settings.jwks_file:
        jwks_keys(settings.jwks_file)


_JWKS_HINT = (
    "write the IdP's JWKS there whole (its jwks_uri document, "
    '{"keys": [{"kty": "RSA", "kid": ..., "n": ..., "e": ...}]}); when rotating it, '
    "write a new file and rename it over the old one, so a login never reads half a file"
)


def jwks_keys(path: str) -> list[Any]:
    """The usable keys (``jwt.PyJWK``) of the JWKS file at ``path``;
    :class:`ConfigError` saying what is wrong with the file otherwise."""
    import jwt

    try:
        data = json.loads(_read(path, "jwks_file"))
    except json.JSONDecodeError as exc:
        said = "it is empty" if not exc.doc.strip() else f"line {exc.lineno}, column {exc.colno}"
        raise ConfigError(
            f"jwks_file {path} is not valid JSON ({said}: {exc.msg})", hint=_JWKS_HINT
        ) from exc
    except RecursionError:
        raise ConfigError(
            f"jwks_file {path} is not valid JSON (nested too deeply to read)", hint=_JWKS_HINT
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ConfigError(
            f'jwks_file {path} is not a JWKS: a JSON object with a "keys" list is needed',
            hint=_JWKS_HINT,
        )
    keys, problems = [], []
    for n, entry in enumerate(data["keys"], 1):
        try:
            if not isinstance(entry, dict):
                raise jwt.InvalidKeyError("not a JSON object")
            keys.append(jwt.PyJWK(entry))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"key {n}: {_key_problem(exc)}")
    if not keys:
        said = "; ".join(problems[:3]) if problems else 'the "keys" list is empty'
        raise ConfigError(f"jwks_file {path} holds no usable key ({said})", hint=_JWKS_HINT)
    return keys


def public_key(settings: JitConfig) -> str:
    """The PEM text of ``public_key_file``, once a signing algorithm of the entry can
    use it; :class:`ConfigError` saying what is wrong with the file otherwise."""
    import jwt

    path = str(settings.public_key_file)
    text = _read(path, "public_key_file")
    for alg in settings.signing_algorithms():
        try:
            jwt.get_algorithm_by_name(alg).prepare_key(text)
            return text
        except (jwt.PyJWTError, ValueError, TypeError, NotImplementedError):
            continue
    raise ConfigError(
        f"public_key_file {path} holds no public key usable with "
        f"{', '.join(settings.signing_algorithms())}"
        + (" (the file is empty)" if not text.strip() else ""),
        hint="write the IdP's public key there as PEM (-----BEGIN PUBLIC KEY-----), of the "
        "type its algorithms need (RSA for RS*/PS*, EC for ES*), or set algorithms",
    )


def _key_problem(exc: Exception) -> str:
    """What is wrong with one JWK, without PyJWT's guess that a library is missing."""
    if isinstance(exc, KeyError):  # PyJWT reads a key type's fields by subscript
        return f"the {exc.args[0]!r} field is missing" if exc.args else "a field is missing"
    text = str(exc).split(". Perhaps")[0].strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _read(path: str, key: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{key} {path} is not text (byte {exc.start} is not UTF-8)",
            hint=f"{key} is read as text: a JSON or PEM file, not a binary (DER) one",
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read {key} {path}: {exc.strerror}",
            hint=f"check the path in the jit entry's {key}, and that idprov may read it",
        ) from exc


def _rejection(exc: Exception, token: str, settings: JitConfig) -> TokenRejected:
    import jwt

    try:
        seen = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        seen = {}  # a payload that is not a JSON object: the message below says so
    if isinstance(exc, jwt.ExpiredSignatureError):
        return TokenRejected(
            f"the ID token expired (exp {seen.get('exp')}, leeway {settings.leeway}s)",
            hint="log in again for a fresh token, and check the clocks of both hosts",
        )
    if isinstance(exc, jwt.InvalidAudienceError):
        return TokenRejected(
            f"the ID token is for audience {seen.get('aud')!r}, not {settings.audience!r}",
            hint=f"it was issued to another client; audience is set in the {settings.idp} "
            "jit entry",
        )
    if isinstance(exc, jwt.InvalidIssuerError):
        return TokenRejected(
            f"the ID token was issued by {seen.get('iss')!r}, not {settings.issuer!r}",
            hint=f"issuer is set in the {settings.idp} jit entry",
        )
    if isinstance(exc, jwt.InvalidSignatureError):
        return TokenRejected(
            "the ID token's signature does not verify with the configured key",
            hint="it was signed by another key or altered; check the jwks_file, "
            "public_key_file or shared_secret",
        )
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return TokenRejected(f"the ID token has no {exc.claim!r} claim")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return TokenRejected(
            f"the ID token is signed with an algorithm not allowed here ({exc})",
            hint=f"allowed: {', '.join(settings.signing_algorithms())} (jit algorithms)",
        )
    return TokenRejected(f"the ID token is not valid: {exc}")


# ---------------------------------------------------------------- the login
def attempt(
    service: IdentityService,
    idp: str,
    *,
    claims: Mapping[str, Any] | None = None,
    id_token: str | None = None,
    push: bool = True,
) -> JitResult:
    """A login through ``idp`` with an ID token (verified here) or claims (refused for
    an IdP whose tokens can be verified, unless ``allow_unverified_claims``), as
    :func:`login` does it. A refused login is audited (``jit.refused``, with the
    reason, never the token), then raised."""
    verified: Mapping[str, Any] | None = None
    try:
        settings = jit_settings(service.config, service.application, idp)
        if id_token is not None:
            verified = verify_id_token(id_token, settings)
            return login(service, idp, verified, push)
        if verifies_tokens(settings) and not settings.allow_unverified_claims:
            raise UnverifiedClaims(
                f"IdP {idp!r} has keys to verify ID tokens with: a login through it needs one",
                hint=f"send an id_token, or set allow_unverified_claims: true in the {idp} "
                "jit entry if a trusted proxy verified these claims",
            )
        return login(service, idp, claims or {}, push)
    except IdprovError as exc:
        _audit_refusal(service, idp, verified if verified is not None else claims, exc)
        raise


def _audit_refusal(
    service: IdentityService, idp: str, claims: Mapping[str, Any] | None, exc: IdprovError
) -> None:
    """``jit.refused`` with the reason; the subject only when it came as a claim."""
    subject = (claims or {}).get("sub")
    details = {"idp": idp, "code": exc.code, "reason": exc.message}
    try:
        with service.unit_of_work() as uow:
            target = str(subject) if subject else f"{idp}:?"
            uow.audit("jit.refused", target, details, outcome="refused")
    except IdprovError:
        pass  # the store itself failed: the original error says more


def login(
    service: IdentityService, idp: str, idp_claims: Mapping[str, Any], push: bool = True
) -> JitResult:
    """Create or update the local user of a login through ``idp`` with the IdP's
    (already verified) claims, as ``service``'s application, and push it out (with
    ``push=False``, the result's ``pending`` is left for the caller to push). The user
    is the one linked to the login's subject; a first login links the user it creates,
    or an existing one only as ``link_existing`` allows (:class:`NotLinked` if not)."""
    settings = jit_settings(service.config, service.application, idp)
    app = service.config.application(service.application)
    domain = settings.userstore or app.userstore
    username = _username(idp_claims, settings, domain)
    subject = subject_of(idp_claims, settings)
    claims = _local_claims(service, idp_claims, settings)
    wanted, managed = _roles(idp_claims, settings)
    linked, existing = linked_user(service, settings, domain, subject, username, idp_claims)
    with service.unit_of_work(push=push, claim=True) as uow:  # one transaction, one push
        if existing is None:
            origin = login_origin(idp, subject)
            added = uow.add_user(
                username, claims, roles=sorted(wanted), domain=domain, origin=origin
            )
            user = cast(User, added.entity)
            outcome = _Outcome("created", sorted(claims), sorted(wanted), [])
            uow.link_login(idp, subject, domain, user.id)
        else:
            if not linked:
                uow.link_login(idp, subject, domain, existing.id)
            before = existing.qualified_name
            existing = _follow_rename(uow, existing, username, settings)
            if settings.update_on_login:
                outcome = _update(uow, existing, claims, wanted, managed)
            else:
                outcome = _Outcome("unchanged", [], [], [])
            if existing.qualified_name != before:  # the IdP's username changed
                outcome = dataclasses.replace(outcome, action="updated", renamed_from=before)
            username = existing.username
            user = existing
        _audit(uow, idp, user.qualified_name, outcome)
    return JitResult(
        service.application,
        idp,
        outcome.action,
        service.get_user(username, domain),
        outcome.claims,
        outcome.added,
        outcome.removed,
        uow.outbound if any(r.changed for r in uow.results) else None,
        pending=None if push else uow.pending(waited_only=True),
    )


def _follow_rename(uow: UnitOfWork, user: User, username: str, settings: JitConfig) -> User:
    """The linked user renamed when the IdP's username claim changed."""
    if user.username == username or not settings.update_on_login:
        return user
    return cast(User, uow.rename_user(user.username, username, user.domain).entity)


@dataclass
class _Outcome:
    action: str
    claims: list[str]
    added: list[str]
    removed: list[str]
    renamed_from: str | None = None


def _update(
    uow: UnitOfWork,
    user: User,
    claims: dict[str, ClaimValue],
    wanted: set[str],
    managed: set[str],
) -> _Outcome:
    changed = {k: v for k, v in claims.items() if not policy.same_claim(user.claims.get(k), v)}
    if changed:
        uow.update_user(user.username, changed, domain=user.domain)
    held = {r.casefold(): r for r in user.roles}
    dropped = {m.casefold() for m in managed} - {w.casefold() for w in wanted}
    added = sorted(r for r in wanted if r.casefold() not in held)
    removed = sorted(held[k] for k in held if k in dropped)
    for role in added:
        uow.assign(role, [user.username], domain=user.domain)
    for role in removed:
        uow.unassign(role, [user.username], domain=user.domain)
    action = "updated" if changed or added or removed else "unchanged"
    return _Outcome(action, sorted(changed), added, removed)


def _audit(uow: UnitOfWork, idp: str, target: str, outcome: _Outcome) -> None:
    """One audit entry per login, whatever it changed (who logged in, through what)."""
    uow.audit(
        "jit.login",
        target,
        {
            "idp": idp,
            "outcome": outcome.action,
            "claims": outcome.claims,
            "roles_added": outcome.added,
            "roles_removed": outcome.removed,
            **({"renamed_from": outcome.renamed_from} if outcome.renamed_from else {}),
        },
    )


def _username(idp_claims: Mapping[str, Any], settings: JitConfig, domain: str) -> str:
    """The login's username, from the claim ``username_claim`` names; refused when it
    names a userstore other than ``domain``, where the entry's logins land."""
    value = idp_claims.get(settings.username_claim)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise UsageError(
            f"the login's claims have no usable {settings.username_claim!r} for the username",
            hint=f"the {settings.idp} jit entry takes the username from username_claim "
            f"{settings.username_claim!r}",
        )
    username = str(value).strip()
    named, sep, _ = username.partition("/")
    if sep and named.casefold() != domain.casefold():
        raise UsageError(
            f"the login's username {username[:200]!r} (claim {settings.username_claim!r}) "
            f"names userstore {named[:64]!r}, but logins through {settings.idp!r} land in "
            f"userstore {domain}",
            hint=f"send the username without 'DOMAIN/', or with {domain}/; the userstore "
            f"is set by userstore in the {settings.idp} jit entry (or the application's)",
        )
    return username


def _local_claims(
    service: IdentityService, idp_claims: Mapping[str, Any], settings: JitConfig
) -> dict[str, ClaimValue]:
    out: dict[str, ClaimValue] = {}
    for local, remote in settings.local_claims().items():
        if remote not in idp_claims or idp_claims[remote] in (None, "", []):
            continue
        definition = service.claims.get(local)
        multi = definition is not None and definition.multi_valued
        value = _claim_value(idp_claims[remote], multi, remote)
        if value:
            out[local] = value
    return out


def _claim_value(value: Any, multi: bool, remote: str) -> ClaimValue:
    """The local claim's value of an IdP claim: its texts, without those that are
    empty once trimmed (``""`` or ``[]``: no value). The core trims what it keeps
    (:func:`~idprov.userstores.policy.trimmed`)."""
    values = value if isinstance(value, list) else [value]
    texts = [t for v in values if policy.trimmed(t := _text(v, remote))]
    if multi:
        return texts
    if len(texts) > 1:
        raise UsageError(f"the IdP's claim {remote!r} has {len(texts)} values; one is needed")
    return texts[0] if texts else ""


def _text(value: Any, remote: str) -> str:
    """A claim's value as text (the core trims it as it keeps it: ``"Ops "`` from an
    IdP is ``Ops``, and the next login with ``Ops`` changes nothing)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise UsageError(f"the IdP's claim {remote!r} is not text, a number or true/false")


def _kind_of(value: Any) -> str:
    """What a claim's value is, for a refusal (never the whole value: it may be long)."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list holding something other than text"
    return type(value).__name__


def _roles(idp_claims: Mapping[str, Any], settings: JitConfig) -> tuple[set[str], set[str]]:
    """(the roles this login gives, every role the mapping manages)."""
    groups: Any = idp_claims.get(settings.roles_claim) if settings.roles_claim else None
    groups = [groups] if isinstance(groups, str) else [] if groups is None else groups
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise UsageError(
            f"the IdP's claim {settings.roles_claim!r} is {_kind_of(groups)}: it must be a "
            "group name or a list of group names",
            hint=f"check what the IdP sends as {settings.roles_claim!r}, or change roles_claim "
            f"in the {settings.idp} jit entry",
        )
    wanted = set(settings.default_roles)
    for group in groups:
        wanted.update(settings.roles.get(str(group), []))
    managed = set(settings.default_roles) | {r for rs in settings.roles.values() for r in rs}
    return wanted, managed
