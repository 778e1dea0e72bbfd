"""SCIM 2.0 dialects: what a real target's documentation says it implements.

Real SCIM services implement documented subsets of RFC 7643/7644. A dialect is the
set of defaults a target's documentation calls for; the ``scim2`` connector takes it
from ``options: {dialect: NAME}`` and every setting can still be overridden in
``options`` (``page_size: 25``, ``required_attributes: [...]``, ...).

Each profile names its source. ``rfc`` is the protocol as written (idprov's
behaviour before dialects existed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from idprov.config.schema import Invalid
from idprov.connectors.base import MappingInvalid, TargetError
from idprov.connectors.http import HttpOptions

AWS_GUIDE = "https://docs.aws.amazon.com/singlesignon/latest/developerguide/"


@dataclass(frozen=True)
class Dialect:
    """The defaults of one kind of SCIM 2.0 target. Field names are the option
    names that override them."""

    name: str
    source: str
    description: str
    bulk: Literal["auto", "never"] = "auto"
    """``auto``: SCIM Bulk for many creates when the target advertises it."""
    page_size: int = 500
    """Resources asked for per list page (``count``)."""
    paging: Literal["index", "cursor"] = "index"
    """``index``: startIndex/count (RFC 7644 3.4.2.4); ``cursor``: ``cursor`` and
    ``nextCursor`` (the IETF draft on SCIM cursor pagination), for targets that refuse
    startIndex."""
    member_batch_size: int = 100
    """Member changes per group PATCH (and members sent with a group create)."""
    send_password: bool = False
    required_attributes: tuple[str, ...] = ()
    """Attribute paths a user must have to be created; a user without one fails
    before any request, naming it."""
    single_valued: tuple[str, ...] = ()
    """Multi-valued attributes the target holds one value of (the primary one)."""
    group_members: Literal["returned", "filter"] = "returned"
    """How membership is read: ``returned`` in the group's ``members``; ``filter``:
    the target never returns members, ask ``id eq "G" and members eq "U"``."""
    select_attributes: bool = True
    """Whether list and filter requests may ask for fewer attributes (``attributes=``)."""
    filter_operators: tuple[str, ...] = ("eq", "ne", "co", "sw", "ew", "pr", "gt", "ge")
    """Filter operators the target accepts (idprov itself sends only ``eq``)."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Default attribute templates over the connector's (fallbacks for required ones)."""


RFC = Dialect(
    "rfc",
    "RFC 7643 and RFC 7644",
    "the protocol as written: Bulk when advertised, PATCH with value-path filters, "
    "members returned with groups",
)

AWS_IDENTITY_CENTER = Dialect(
    "aws-identity-center",
    AWS_GUIDE + "what-is-scim.html (limitations, createuser, listusers, listgroups, patchgroup)",
    "AWS IAM Identity Center: eq filters joined by and; no /Bulk, /Me or /.search; "
    "50 per list page, cursor paging; displayName, name.givenName and name.familyName "
    "required; no password; one email, address and phone number; at most 100 member "
    "changes per group PATCH; groups never return members",
    bulk="never",
    page_size=50,
    paging="cursor",
    member_batch_size=100,
    send_password=False,
    required_attributes=("displayName", "name.givenName", "name.familyName"),
    single_valued=("emails", "addresses", "phoneNumbers"),
    group_members="filter",
    select_attributes=False,
    filter_operators=("eq",),
    attributes={"displayName": "=coalesce(display_name, join(' ', given_name, family_name), UN)"},
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (RFC, AWS_IDENTITY_CENTER)}

OVERRIDABLE = (
    "bulk",
    "page_size",
    "paging",
    "member_batch_size",
    "send_password",
    "required_attributes",
    "single_valued",
    "group_members",
    "select_attributes",
)
"""Dialect settings that ``options`` may override, by the same name."""


def missing_attribute(body: Mapping[str, object], path: str) -> bool:
    """Whether the resource ``body`` lacks a value at ``path`` (``name.givenName``,
    ``urn:...:User:department``)."""
    if path.startswith("urn:"):
        urn, _, attr = path.rpartition(":")
        holder = body.get(urn)
        return not (isinstance(holder, dict) and holder.get(attr) not in (None, "", []))
    value: object = body
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value in (None, "", [], {})


class MissingAttribute(TargetError):
    """A user lacks an attribute the target requires: refused before any request."""

    code = "missing_attribute"


def check_required(
    body: Mapping[str, object], templates: Mapping[str, str | None], options: Scim2Options, who: str
) -> None:
    """Raise MissingAttribute for the first of the dialect's required attributes that
    the resource ``body`` of user ``who`` lacks (``templates``: the IdP's mapping)."""
    for path in options.settings.required_attributes:
        if missing_attribute(body, path):
            mapped = templates.get(path)
            raise MissingAttribute(
                f"create user {who}: {path} is required "
                f"(dialect {options.dialect}) and the mapping "
                f"{f'{mapped!r} gives' if mapped else 'has'} no value for this user; "
                f"give the user the claim, or map a fallback in attributes "
                f"({path}: '=coalesce(...)')",
                hint=f"give the user the claim, or map a fallback in attributes, e.g. "
                f'{path}: "=coalesce(...)"',
            )


def check_single_valued(templates: Mapping[str, str | None], options: Scim2Options) -> None:
    """Raise MappingInvalid when the mapping ``templates`` fills two values of an
    attribute the target holds one of."""
    for name in options.settings.single_valued:
        paths = [p for p, t in templates.items() if t is not None and p.startswith(name + "[")]
        if len(paths) > 1:
            raise MappingInvalid(
                f"{name} holds one value at this target (dialect {options.dialect}), "
                f"but the mapping fills {len(paths)}: {', '.join(paths)}",
                hint="keep one (set the others to null in attributes), or override "
                "single_valued in options",
            )


@dataclass(frozen=True)
class Scim2Options(HttpOptions):
    """Options of a SCIM 2.0 identity provider (plus base_url, auth... of HttpOptions).
    Settings left unset take the dialect's value (see idprov.connectors.scim_dialects)."""

    dialect: str = "rfc"
    """What the target implements: ``rfc``, ``aws-identity-center``."""
    update_method: Literal["auto", "patch", "put"] = "auto"
    """``auto``: PATCH if the target's ServiceProviderConfig says it supports it."""
    member_batch_size: int | None = None
    """Members per PATCH request (some targets accept only 100)."""
    send_password: bool | None = None
    """Send the password given to `user add`/`user passwd` (SCIM ``password``)."""
    bulk: Literal["auto", "never"] | None = None
    """``auto``: create many users with SCIM Bulk when the target advertises it."""
    bulk_threshold: int = 10
    """Use Bulk only for at least this many creates at once."""
    page_size: int | None = None
    """Resources per list page."""
    paging: Literal["index", "cursor"] | None = None
    required_attributes: list[str] | None = None
    single_valued: list[str] | None = None
    group_members: Literal["returned", "filter"] | None = None
    select_attributes: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dialect not in DIALECTS:
            raise Invalid(
                f"unknown dialect {self.dialect!r} (known: {', '.join(DIALECTS)})", "dialect"
            )
        overrides: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v
            for k in OVERRIDABLE
            if (v := getattr(self, k)) is not None
        }
        for key in ("member_batch_size", "page_size"):
            if overrides.get(key, 1) < 1:
                raise Invalid("must be at least 1", key)
        if self.bulk_threshold < 2:
            raise Invalid("must be at least 2", "bulk_threshold")
        settings = dataclasses.replace(DIALECTS[self.dialect], **overrides)
        object.__setattr__(self, "_settings", settings)
        for key in OVERRIDABLE:  # what `config show` prints is what is in effect
            value = getattr(settings, key)
            object.__setattr__(self, key, list(value) if isinstance(value, tuple) else value)

    @property
    def settings(self) -> Dialect:
        """The dialect's settings with this IdP's overrides: what the connector does."""
        settings: Dialect = self.__dict__["_settings"]
        return settings
