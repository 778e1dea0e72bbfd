"""The ``manager`` claim holds a username: one rule for which user it names.

A value is bare (a user of the holder's own userstore) or ``DOMAIN/name``, and names
compare as usernames do everywhere in idprov, ignoring case (``Boss`` is ``boss``).
The rule serves a rename or delete of a manager (its reports follow or lose the
claim), `user list --claim manager=NAME`, and the check that a manager given by name
exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idprov.model import Condition, QualifiedName, User, UserQuery

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
    return named is not None and (
        named.domain.casefold() == manager.domain.casefold()
        and named.name.casefold() == manager.name.casefold()
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
