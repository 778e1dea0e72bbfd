"""Listing users across userstores as a stream: every domain's total first, then the
users one domain after another (in configuration order), each batch given its
internal roles, so that listing every user holds one batch in memory, not all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, islice

from idprov.model import Condition, PageStream, QualifiedName, User, UserQuery
from idprov.provisioning import managers
from idprov.userstores.base import UserStore

BATCH = 500
"""Users given their internal roles in one query."""


def stream_users(
    stores: Sequence[UserStore],
    query: UserQuery,
    with_internal_roles: Callable[[list[User]], list[User]],
) -> PageStream:
    """``query``'s page over ``stores`` in turn: the offset skips users of the first
    stores, the limit counts users of all."""
    parts: list[PageStream] = []
    skip, remaining = query.offset, query.limit
    for store in stores:
        part = store.stream_users(dataclasses.replace(query, limit=remaining, offset=skip))
        parts.append(part)
        shown = max(part.total - skip, 0)
        skip = max(skip - part.total, 0)
        remaining = None if remaining is None else max(remaining - shown, 0)
    items = chain.from_iterable(p.items for p in parts)
    return PageStream(
        _with_roles(items, with_internal_roles),
        sum(p.total for p in parts),
        query.offset,
        query.limit,
        [d for p in parts for d in p.domains],
        [a for p in parts for a in p.ambiguous],
    )


def stream_reports(
    stores: Sequence[UserStore],
    query: UserQuery,
    manager: QualifiedName,
    with_internal_roles: Callable[[list[User]], list[User]],
) -> PageStream:
    """:func:`stream_users` of a query for the users whose manager claim names
    ``manager``, compared as usernames are (:func:`managers.names`: any case, bare or
    ``DOMAIN/name``; the claim filter of other claims is exact). The stores find the
    users that may match, through the claim's index; each is checked, then paged."""
    rest = {k: v for k, v in query.claims.items() if k != managers.CLAIM}
    found: list[User] = []
    for store in (s for s in stores if s.keeps_claim(managers.CLAIM)):
        where = managers.condition(manager, store)
        if query.where is not None:
            where = Condition("and", terms=(query.where, where))
        asked = dataclasses.replace(query, claims=rest, where=where, limit=None, offset=0)
        found += [u for u in store.list_users(asked).items if managers.names(u, manager)]
    end = None if query.limit is None else query.offset + query.limit
    page = found[query.offset : end]
    domains = list(dict.fromkeys(u.domain for u in page))
    items = _with_roles(iter(page), with_internal_roles)
    return PageStream(items, len(found), query.offset, query.limit, domains)


def _with_roles(
    users: Iterator[User], with_internal_roles: Callable[[list[User]], list[User]]
) -> Iterator[User]:
    while batch := list(islice(users, BATCH)):
        yield from with_internal_roles(batch)
