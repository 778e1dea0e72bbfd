"""Listing users across userstores as a stream: every domain's total first, then the
users one domain after another (in configuration order), each batch given its
internal roles, so that listing every user holds one batch in memory, not all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, islice

from idprov.model import PageStream, User, UserQuery
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
    )


def _with_roles(
    users: Iterator[User], with_internal_roles: Callable[[list[User]], list[User]]
) -> Iterator[User]:
    while batch := list(islice(users, BATCH)):
        yield from with_internal_roles(batch)
