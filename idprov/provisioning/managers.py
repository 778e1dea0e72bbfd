"""The ``manager`` claim holds a username: one rule for which user it names.

A value is bare (a user of the holder's own userstore) or ``DOMAIN/name``, and names
compare as usernames do everywhere in idprov, ignoring case (``Boss`` is ``boss``).
The rule serves a rename or delete of a manager (its reports follow or lose the
claim), `user list --claim manager=NAME`, and the check that a manager given by name
exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from idprov.errors import NotFoundError
from idprov.model import ClaimValue, Condition, QualifiedName, User, UserQuery

if TYPE_CHECKING:
    from idprov.provisioning.service import IdentityService
    from idprov.userstores import UserStore

CLAIM = "manager"


def named_by(user: User) -> QualifiedName | None:
    """The user that ``user``'s manager claim names (None: it has none)."""
    value = user.claims.get(CLAIM)
    if not isinstance(value, str) or not value:
        return None
    return QualifiedName.parse(value, user.domain)


def names(user: User, manager: QualifiedName) -> bool:
    """Whether ``user``'s manager claim names ``manager``."""
    named = named_by(user)
    return named is not None and _same(named, manager)


def _same(a: QualifiedName, b: QualifiedName) -> bool:
    return a.domain.casefold() == b.domain.casefold() and a.name.casefold() == b.name.casefold()


def check_named(service: IdentityService, claims: Mapping[str, ClaimValue], user: str) -> None:
    """Refuse a manager claim given to ``user`` (``DOMAIN/name``) that names no user:
    a typo would link the user to nobody, or to whoever takes the name next. The user
    itself may be named (the head of an organisation manages itself)."""
    value = claims.get(CLAIM)
    if not isinstance(value, str) or not (value := value.strip()):  # as it is kept
        return
    holder = QualifiedName.parse(user)
    named = QualifiedName.parse(value, holder.domain)
    if _same(named, holder):
        return
    domains = [u.domain for u in service.config.userstores]
    if named.domain.casefold() not in {d.casefold() for d in domains}:
        raise NotFoundError(
            f"claim 'manager' of user {holder}: {value!r} names domain {named.domain}, "
            "which no userstore has (the claim holds a username, or DOMAIN/username)",
            hint=f"the domains are {', '.join(domains)}",
        )
    if service.store(named.domain).find_user(named.name) is None:
        raise NotFoundError(
            f"claim 'manager' of user {holder}: no user {named.name!r} in the "
            f"{named.domain} userstore (the claim holds a username)",
            hint=f"add the manager first (`idprov user add {named}`), or name an existing "
            "user (`idprov user list`); a user of another userstore is DOMAIN/username",
        )


def condition(manager: QualifiedName, store: UserStore) -> Condition:
    """What ``store`` is asked for the users naming ``manager`` (at least those: the
    stores compare lower-cased; :func:`names` checks each exactly)."""
    qualified = f"{manager.domain}/{manager.name}"
    mine = store.domain.casefold() == manager.domain.casefold()
    spellings = (manager.name, qualified) if mine else (qualified,)
    return Condition("or", terms=tuple(Condition("eq", f"claim:{CLAIM}", s) for s in spellings))


def reports_of(service: IdentityService, manager: QualifiedName) -> list[User]:
    """The users whose manager claim names ``manager``, whom a rename or a delete of
    that user changes too, as a directory keeps a manager link: a name left behind
    would name nobody, or whoever takes the name next. A read-only userstore's users
    keep theirs (idprov cannot write there; the name is resolved when it is read), and
    a userstore that maps no manager claim is not searched."""
    reports = []
    for config in service.config.userstores:
        if config.read_only:
            continue
        store = service.store(config.domain)
        if store.keeps_claim(CLAIM):
            query = UserQuery(limit=None, where=condition(manager, store))
            reports += [u for u in store.list_users(query).items if names(u, manager)]
    return reports
