"""Plain data types shared by every layer: users, roles, qualified names, pages.

No behaviour beyond conversion to JSON-ready dicts; no imports of other layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PRIMARY = "PRIMARY"
ClaimValue = str | list[str]


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


@dataclass
class User:
    """A user as a userstore holds it. ``claims`` maps claim names to values."""

    id: str
    domain: str
    username: str
    claims: dict[str, ClaimValue] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    has_password: bool = False
    created: str = ""
    modified: str = ""

    @property
    def qualified_name(self) -> str:
        return str(QualifiedName(self.domain, self.username))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
class UserQuery:
    """Which users to list: claim equality filters, a role, paging (1-based offset)."""

    claims: dict[str, str] = field(default_factory=dict)
    role: str | None = None
    username_prefix: str | None = None
    limit: int | None = 100
    offset: int = 0


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
