"""SCIM 2.0 dialects: what a real target's documentation says it implements.

Real SCIM services implement documented subsets of RFC 7643/7644. A dialect is the
set of defaults a target's documentation calls for; the ``scim2`` connector takes it
from ``options: {dialect: NAME}`` and every setting can still be overridden in
``options`` (``page_size: 25``, ``required_attributes: [...]``, ...).

Each profile names its source. ``rfc`` is the protocol as written (idprov's
behaviour before dialects existed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
