"""Whom a JIT login may be: the checks that keep a federated login from acting as a
local user it has no claim to.

- An IdP whose ID tokens idprov can verify (it has a key) is trusted through a
  verified token only; claims alone need ``allow_unverified_claims``.
- A login is its local user through a link (IdP, subject, domain) made by the login
  that created the user (:mod:`idprov.provisioning.jit_links`); a user that a login
  created before links existed is known by that login's audit entry, and a user whose
  add by this login was cut off (recorded, in a directory) is adopted by the add
  when it provably made it (see ``UnitOfWork.add_user``). A login whose
  username is a local user it is not linked to is refused, unless ``link_existing:
  by_email`` allows that user (same email, ``email_verified`` not false).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from idprov.config.models import JitConfig
from idprov.errors import ConflictError, PolicyError, UsageError
from idprov.model import User

if TYPE_CHECKING:
    from idprov.provisioning.service import IdentityService


class UnverifiedClaims(PolicyError):
    """Claims without a token, for an IdP whose tokens idprov can verify."""

    code = "unverified_claims"


class NotLinked(ConflictError):
    """A login whose username is a local user it did not create (nor may take over)."""

    code = "not_linked"


def verifies_tokens(settings: JitConfig) -> bool:
    return bool(settings.jwks_file or settings.public_key_file or settings.shared_secret)


def subject_of(idp_claims: Mapping[str, Any], settings: JitConfig) -> str:
    value = idp_claims.get(settings.subject_claim)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise UsageError(
            f"the login's claims have no usable {settings.subject_claim!r} (the subject)",
            hint=f"the {settings.idp} jit entry links logins by subject_claim "
            f"{settings.subject_claim!r}",
        )
    return str(value).strip()


def linked_user(
    service: IdentityService,
    settings: JitConfig,
    domain: str,
    subject: str,
    username: str,
    idp_claims: Mapping[str, Any],
) -> tuple[bool, User | None]:
    """(whether a link exists, the local user of this login or None for a new one)."""
    from idprov.provisioning.jit_links import JitLinks

    store = service.store(domain)
    user_id = JitLinks(service.state.db).user_id(settings.idp, subject, domain)
    user = store.find_user_by_id(user_id) if user_id else None
    if user is not None:
        return True, user
    existing = store.find_user(username)
    if existing is not None and _pending_add(service, settings, domain, subject, username):
        return False, None  # the add adopts it, if this login's add provably made it
    if existing is not None and _created_before_links(service, settings, existing, subject):
        return False, existing
    if existing is not None and not _may_take_over(existing, idp_claims, settings):
        raise NotLinked(
            f"a local user {existing.qualified_name!r} exists that no login through "
            f"{settings.idp!r} created: the login of subject {subject!r} cannot take it over"
            + _why_not_by_email(existing, idp_claims, settings),
            hint=(
                f"set link_existing: by_email in the {settings.idp} jit entry to link users "
                "whose verified email matches, or rename or remove the local user"
                if settings.link_existing != "by_email"
                else "rename or remove the local user, or have the IdP send email_verified: "
                "true for an address it verified"
            ),
        )
    return False, existing


def login_origin(idp: str, subject: str) -> str:
    """The origin a login's user add is recorded with (see ``UnitOfWork.add_user``)."""
    return f"jit:{idp}:{subject}"


def _pending_add(
    service: IdentityService, settings: JitConfig, domain: str, subject: str, username: str
) -> bool:
    """Whether an add of ``username`` by a login of this subject through this IdP was
    recorded and cut off (in a directory, its answer lost, say): the user may be the
    one it made, which the same login, run again, adopts (the add proves it, or
    refuses the name), links and audits, instead of being locked out of it."""
    write = service.state.directory_writes.find(domain, "add", username)
    return write is not None and write.origin == login_origin(settings.idp, subject)


def _created_before_links(
    service: IdentityService, settings: JitConfig, user: User, subject: str
) -> bool:
    """Whether a login through this IdP created ``user`` before logins were linked:
    the user's last ``user.add``/``user.delete``/``jit.login`` audit entry is that
    login's (outcome ``created``), written in the user's own transaction, so within
    seconds of its creation time; and the subject was the username then
    (``subject_claim`` is ``username_claim``). Such a user is linked at its next
    login, as if it had been then."""
    from idprov.provisioning.state import AuditQuery

    if settings.subject_claim != settings.username_claim or subject != user.username:
        return False
    events = [
        e
        for e in service.state.audit_entries(AuditQuery(target=user.qualified_name, limit=1000))
        if e.target == user.qualified_name
        and e.action in ("user.add", "user.delete", "jit.login")
        and not (e.action == "jit.login" and e.details.get("outcome") != "created")
    ]
    last = events[0] if events else None  # newest first
    return (
        last is not None
        and last.action == "jit.login"
        and last.details.get("idp") == settings.idp
        and _within(last.at, user.created, seconds=5)
    )


def _within(first: str, second: str, seconds: float) -> bool:
    from datetime import datetime

    try:
        a = datetime.fromisoformat(first.replace("Z", "+00:00"))
        b = datetime.fromisoformat(second.replace("Z", "+00:00"))
    except ValueError:
        return False
    return abs((a - b).total_seconds()) <= seconds


def _may_take_over(user: User, idp_claims: Mapping[str, Any], settings: JitConfig) -> bool:
    """``link_existing: by_email``: the login's email is the user's, and the IdP says it
    verified it (``email_verified`` true, or the text "true" as some userinfo endpoints
    and proxies send it). An absent or other value is not a verification: an address
    anyone can type must not open someone else's account."""
    if settings.link_existing != "by_email" or not _verified(idp_claims.get("email_verified")):
        return False
    email, local = idp_claims.get("email"), user.claims.get("email")
    return (
        isinstance(email, str) and isinstance(local, str) and email.casefold() == local.casefold()
    )


def _verified(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().casefold() == "true")


def _why_not_by_email(user: User, idp_claims: Mapping[str, Any], settings: JitConfig) -> str:
    if settings.link_existing != "by_email":
        return ""
    said = idp_claims.get("email_verified")
    if not _verified(said):
        return "; link_existing: by_email needs email_verified true, and this login's is " + (
            "absent" if said is None else repr(said)
        )
    return "; its email is not the local user's"
