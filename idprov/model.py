"""Plain data types shared by every layer: users, roles, qualified names, pages.

No behaviour beyond conversion to JSON-ready dicts; no imports of other layers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PRIMARY = "PRIMARY"
ClaimValue = str | list[str]


def new_id() -> str:
    """A new stable id: a UUID of version 7 (RFC 9562: 48 bits of Unix milliseconds,
    a counter, then random bits). Ids made one after another sort one after another,
    so a bulk import appends to the stores' indexes instead of touching pages all
    over them. Unique, not secret: nothing relies on ids being unguessable."""
    import random
    import time

    global _last_ms, _sequence
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:  # same millisecond (or a clock step back): count on from the last
        ms, _sequence = _last_ms, _sequence + 1
        if _sequence > 0xFFF:
            ms, _sequence = ms + 1, 0
    else:
        _sequence = 0
    _last_ms = ms
    value = (ms << 80) | (0x7 << 76) | (_sequence << 64) | (0b10 << 62) | random.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_last_ms = 0
_sequence = 0


@dataclass(frozen=True)
class QualifiedName:
    """``DOMAIN/name``: a user or role and the userstore domain it lives in."""

    domain: str
    name: str

    @classmethod
    def parse(cls, text: str, default_domain: str | None = None) -> QualifiedName:
        """Split ``DOMAIN/name``; a bare name is in ``default_domain`` (or PRIMARY)."""
        domain, sep, name = text.partition("/")
        if sep:
            return cls(domain, name)
        return cls(default_domain or PRIMARY, text)

    def __str__(self) -> str:
        return self.name if self.domain.upper() == PRIMARY else f"{self.domain}/{self.name}"

    def relative_to(self, domain: str) -> str:
        """The name as seen from ``domain``: bare in it, else ``DOMAIN/name``."""
        return (
            self.name
            if self.domain.casefold() == domain.casefold()
            else f"{self.domain}/{self.name}"
        )


@dataclass
class User:
    """A user as a userstore holds it. ``claims`` maps claim names to values."""

    id: str
    domain: str
    username: str
    claims: Mapping[str, ClaimValue] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    has_password: bool = False
    created: str = ""
    modified: str = ""

    @property
    def qualified_name(self) -> str:
        return str(QualifiedName(self.domain, self.username))

    def to_dict(self) -> dict[str, Any]:
        """Every field, in order; claims and roles copied one level deep (not
        ``asdict``'s deep copy, which cost a listing of 100,000 users seconds)."""
        return {
            "id": self.id,
            "domain": self.domain,
            "username": self.username,
            "claims": dict(self.claims),
            "roles": self.roles[:],
            "has_password": self.has_password,
            "created": self.created,
            "modified": self.modified,
        }


@dataclass
class Role:
    """A named set of users in one userstore domain."""

    id: str
    domain: str
    name: str
    member_count: int = 0
    members: list[str] | None = None
    created: str = ""
    modified: str = ""

    @property
    def qualified_name(self) -> str:
        return str(QualifiedName(self.domain, self.name))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.members is None:
            del data["members"]
        return data


@dataclass(frozen=True)
class Condition:
    """A condition a userstore checks itself, to read only the users that may match:
    ``attribute`` (``username``, ``id``, ``created``, ``modified`` or ``claim:NAME``)
    compared by ``op`` (``eq``, ``sw``, ``ew``, ``co``, ``pr``, ``ge``, ``le``; ``in``
    one of ``values``), ignoring case; or ``and``/``or`` of ``terms``. A store returns
    at least the users that match (more is allowed: callers check exactly)."""

    op: str
    attribute: str = ""
    value: str = ""
    values: tuple[str, ...] = ()
    terms: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class UserQuery:
    """Which users to list: claim equality filters, a role, a condition (see
    :class:`Condition`), paging (0-based offset)."""

    claims: dict[str, str] = field(default_factory=dict)
    role: str | None = None
    username_prefix: str | None = None
    limit: int | None = 100
    offset: int = 0
    where: Condition | None = None


@dataclass
class Page:
    """A page of results and the total number of matches."""

    items: list[Any]
    total: int
    offset: int
    limit: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [i.to_dict() for i in self.items],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
        }


@dataclass
class AmbiguousName:
    """A username that several entries of one userstore hold (a directory searched in
    its whole subtree can have two ``uid=alice``): which of them a name means cannot
    be told, so none of them is provisioned, updated or deprovisioned until it is
    unique again."""

    domain: str
    username: str
    entries: list[str]
    """Where each entry is (a directory's DNs)."""
    ids: list[str]
    """The entries' stable ids."""
    attribute: str = "username"
    """What holds the name (a directory's ``username_attribute``)."""

    @property
    def message(self) -> str:
        return (
            f"{len(self.entries)} entries have {self.attribute}={self.username!r} in the "
            f"{self.domain} userstore: " + "; ".join(self.entries) + ": none of them is "
            "provisioned (created, updated or deprovisioned) while the name is ambiguous"
        )

    @property
    def hint(self) -> str:
        return (
            f"make {self.attribute} unique in the directory (rename or remove the entry "
            f"that should not be {self.domain}/{self.username}), or narrow "
            "user_search_base or user_search_scope; the next sync then provisions it"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "username": self.username,
            "dns": self.entries[:],
            "ids": self.ids[:],
        }


@dataclass
class PageStream:
    """A page whose items are read as they are consumed, once, in order (a listing of
    every user need not be held in memory). ``total`` is known before the first item;
    ``domains`` are those the items come from."""

    items: Iterator[Any]
    total: int
    offset: int
    limit: int | None
    domains: list[str] = field(default_factory=list)
    ambiguous: list[AmbiguousName] = field(default_factory=list)
    """Names of the page that several entries hold (see :class:`AmbiguousName`)."""

    def page(self) -> Page:
        """The items read into a :class:`Page`."""
        return Page(list(self.items), self.total, self.offset, self.limit)

    def to_dict(self) -> dict[str, Any]:
        """:meth:`Page.to_dict`'s shape, the items still an iterator."""
        return {
            "items": (i.to_dict() for i in self.items),
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
        }
