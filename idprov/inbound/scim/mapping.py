"""SCIM User and Group documents <-> idprov users (claims) and roles.

One table, read both ways, so that what a client writes is what it reads back:

| SCIM attribute | claim |
| --- | --- |
| userName | the username (``DOMAIN/name`` outside PRIMARY); a new one renames |
| name.givenName / familyName / middleName | given_name / family_name / middle_name |
| displayName, nickName, title, userType | display_name, nickname, title, employee_type |
| locale, timezone | locale, timezone |
| active | active (true/false in any case; no claim means active) |
| emails[type eq "work"].value | email |
| emails[type eq "other"].value (several) | emails |
| phoneNumbers[type eq "work"/"mobile"].value | phone_number / mobile |
| addresses[type eq "work"].streetAddress / locality / region | street_address / locality / region |
| addresses[type eq "work"].postalCode / country | postal_code / country |
| enterprise employeeNumber / costCenter | employee_number / cost_center |
| enterprise organization / department | organization / department |
| enterprise manager.value (a User id) | manager (that user's name) |
| password (write-only) | the password hash |
| groups (read-only) | the user's roles |

``active`` is shown when the claim is set (a SCIM create without it sets it true),
read as the push reads it (:mod:`idprov.provisioning.active`: ``TRUE``, ``False``; a
value that cannot be read shows false, the user being taken as disabled);
users made elsewhere without the claim are active, but show no ``active``, so that a
PATCH that removes it reads back as removed. A Group is a role: ``displayName`` its
name, ``members`` its users by id. Which value is ``primary`` is not kept (the
attribute is accepted and ignored). An email of another type than work, or a second
untyped one, is kept as ``other``; a phone number or an address of a type with no
claim is refused rather than silently dropped.
``externalId`` belongs to the client that sent it (RFC 7643 section 3.1) and is kept
per application beside the user, not as a claim (see :mod:`.storage`).

Documents are plain JSON dicts here: the pydantic models stay in :mod:`.storage`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from idprov.config.claims import ClaimDefinition
from idprov.model import ClaimValue, Role, User
from idprov.provisioning.active import is_active
from idprov.userstores.policy import claim_value_ok, trimmed

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

SIMPLE = {
    "displayName": "display_name",
    "nickName": "nickname",
    "title": "title",
    "userType": "employee_type",
    "locale": "locale",
    "timezone": "timezone",
}
NAME = {"givenName": "given_name", "familyName": "family_name", "middleName": "middle_name"}
ENTERPRISE_ATTRIBUTES = {
    "employeeNumber": "employee_number",
    "costCenter": "cost_center",
    "organization": "organization",
    "department": "department",
}
EMAIL_TYPES = {"work": "email", "home": "home_email", "other": "emails"}
PHONE_TYPES = {"work": "phone_number", "mobile": "mobile"}
ADDRESS = {
    "streetAddress": "street_address",
    "locality": "locality",
    "region": "region",
    "postalCode": "postal_code",
    "country": "country",
}
MAPPED_CLAIMS = frozenset(
    [
        *SIMPLE.values(),
        *NAME.values(),
        *ENTERPRISE_ATTRIBUTES.values(),
        *EMAIL_TYPES.values(),
        *PHONE_TYPES.values(),
        *ADDRESS.values(),
        "active",
        "manager",
    ]
)
"""The claims SCIM clients see and replace; a PUT leaves every other claim alone."""


class InvalidValue(ValueError):
    """A document idprov cannot hold as it is (SCIM ``invalidValue``)."""


@dataclass
class UserInput:
    """What a SCIM User document asks idprov to store."""

    user_name: str
    claims: dict[str, ClaimValue] = field(default_factory=dict)
    password: str | None = None
    external_id: str | None = None
    manager_id: str | None = None
    """``manager.value`` of the enterprise extension: the id of another User."""


@dataclass
class GroupInput:
    """What a SCIM Group document asks idprov to store."""

    display_name: str
    member_ids: list[str] = field(default_factory=list)
    external_id: str | None = None


# ---------------------------------------------------------------- idprov -> SCIM
def user_document(
    user: User,
    user_name: str,
    external_id: str | None,
    groups: Iterable[tuple[str, str]],
    manager_id: str | None = None,
) -> dict[str, Any]:
    """The SCIM User (without ``meta``) of ``user``, named ``user_name``, in the roles
    ``groups`` (id, name), with its manager's user id when it has one."""
    claims = user.claims
    doc: dict[str, Any] = {"schemas": [USER], "id": user.id}
    if external_id:
        doc["externalId"] = external_id
    doc["userName"] = user_name
    name = {attr: claims[claim] for attr, claim in NAME.items() if claims.get(claim)}
    if name:
        doc["name"] = name
    doc.update({attr: claims[claim] for attr, claim in SIMPLE.items() if claims.get(claim)})
    if "active" in claims:  # one that cannot be read is inactive, as the push takes it
        doc["active"] = is_active(claims)
    _put(doc, "emails", _typed_values(claims, EMAIL_TYPES))
    _put(doc, "phoneNumbers", _typed_values(claims, PHONE_TYPES))
    address = {attr: claims[claim] for attr, claim in ADDRESS.items() if claims.get(claim)}
    if address:
        doc["addresses"] = [{**address, "type": "work"}]
    groups_ = [
        {"value": i, "$ref": f"Groups/{i}", "display": label, "type": "direct"}
        for i, label in groups
    ]
    _put(doc, "groups", groups_)
    enterprise: dict[str, Any] = {
        a: claims[c] for a, c in ENTERPRISE_ATTRIBUTES.items() if claims.get(c)
    }
    if manager_id is not None:
        enterprise["manager"] = {"value": manager_id, "$ref": f"Users/{manager_id}"}
    if enterprise:
        doc["schemas"].append(ENTERPRISE)
        doc[ENTERPRISE] = enterprise
    return doc


def _put(doc: dict[str, Any], key: str, values: list[dict[str, Any]]) -> None:
    if values:
        doc[key] = values


def _typed_values(claims: Mapping[str, ClaimValue], types: Mapping[str, str]) -> list[dict]:
    out: list[dict[str, Any]] = []
    for kind, claim in types.items():
        value = claims.get(claim)
        for item in value if isinstance(value, list) else [value] if value else []:
            out.append({"value": item, "type": kind})
    return out


def group_document(
    role: Role, display_name: str, member_ids: Iterable[str], external_id: str | None
) -> dict[str, Any]:
    """The SCIM Group (without ``meta``) of ``role``, named ``display_name``, with these
    member user ids."""
    doc: dict[str, Any] = {"schemas": [GROUP], "id": role.id}
    if external_id:
        doc["externalId"] = external_id
    doc["displayName"] = display_name
    members = [{"value": i, "$ref": f"Users/{i}", "type": "User"} for i in sorted(member_ids)]
    _put(doc, "members", members)
    return doc


def with_meta(doc: dict[str, Any], resource_type: str, created: str, modified: str) -> dict:
    """``doc`` with its ``meta``: the version is a hash of everything else, so it changes
    exactly when what a client can read changes (and is the same in every process)."""
    meta = {"resourceType": resource_type, "version": version_of(doc)}
    if created:
        meta["created"] = created
    if modified:
        meta["lastModified"] = modified
    return {**doc, "meta": meta}


def version_of(doc: Mapping[str, Any]) -> str:
    """A weak ETag of a document (RFC 7232: same content, same tag)."""
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f'W/"{hashlib.sha256(text.encode()).hexdigest()[:20]}"'


# ---------------------------------------------------------------- SCIM -> idprov
def read_user(doc: Mapping[str, Any]) -> UserInput:
    """The username, mapped claims, password and externalId of a validated User
    document. Absent attributes give absent claims. Raises :class:`InvalidValue`."""
    user_name = doc.get("userName")
    if not isinstance(user_name, str) or not user_name.strip():
        raise InvalidValue("userName is required")
    _check_value_counts(doc)
    claims: dict[str, ClaimValue] = {}
    name = doc.get("name") or {}
    _take(claims, {NAME[k]: v for k, v in name.items() if k in NAME})
    _take(claims, {SIMPLE[k]: v for k, v in doc.items() if k in SIMPLE})
    enterprise = doc.get(ENTERPRISE) or {}
    _take(
        claims,
        {ENTERPRISE_ATTRIBUTES[k]: v for k, v in enterprise.items() if k in ENTERPRISE_ATTRIBUTES},
    )
    if isinstance(doc.get("active"), bool):
        claims["active"] = "true" if doc["active"] else "false"
    claims.update(_read_emails(doc.get("emails") or []))
    claims.update(_read_phones(doc.get("phoneNumbers") or []))
    claims.update(_read_addresses(doc.get("addresses") or []))
    manager = enterprise.get("manager") or {}
    manager_id = manager.get("value") if isinstance(manager, dict) else None
    return UserInput(
        user_name,  # as sent: what the store's name policy refuses is a 400, not trimmed
        claims,
        doc.get("password"),
        _external_id(doc),
        str(manager_id) if manager_id else None,
    )


MOST_VALUES = 100
"""The most values a multi-valued attribute of a User (``emails``, ``phoneNumbers``,
``addresses``...) may hold in a request."""
EXTERNAL_ID = ClaimDefinition("externalId")
"""The rules of an ``externalId``: a claim's (its length, no control characters)."""


def _check_value_counts(doc: Mapping[str, Any]) -> None:
    for attribute, values in doc.items():
        if attribute not in ("schemas", "groups") and isinstance(values, list):
            if len(values) > MOST_VALUES:
                raise InvalidValue(
                    f"{attribute}: {len(values)} values; idprov takes at most {MOST_VALUES} "
                    "per attribute"
                )


def _external_id(doc: Mapping[str, Any]) -> str | None:
    """The ``externalId`` of a document, checked as a claim's value is."""
    value = doc.get("externalId")
    if value is None or claim_value_ok(EXTERNAL_ID, value):
        return value
    if len(value) > EXTERNAL_ID.max_length:
        raise InvalidValue(
            f"externalId: {len(value)} characters long; the limit is {EXTERNAL_ID.max_length}"
        )
    raise InvalidValue(
        "externalId: it contains control characters, or a character that does not show at"
        " its start or end (a zero-width space, a byte order mark); send it without them"
    )


def claim_text(value: Any) -> str:
    """A SCIM value as a claim's text; ``""`` (no value) when nothing is left of it
    once trimmed. The core trims what it keeps (:func:`~idprov.userstores.policy.trimmed`:
    ``" Ops "`` is ``Ops`` whichever way it comes in, and sent again it changes
    nothing). Names (``userName``, a Group's ``displayName``) and ``externalId`` are
    kept as sent: a client looks them up as it sent them."""
    text = "" if value is None else str(value)
    return text if trimmed(text) else ""


def _take(claims: dict[str, ClaimValue], values: Mapping[str, Any]) -> None:
    for claim, value in values.items():
        if text := claim_text(value):
            claims[claim] = text


def _entries(values: list[Any]) -> list[tuple[str, str]]:
    """(type, value) of each entry with a value."""
    out = []
    for entry in values:
        if value := claim_text(entry.get("value")):
            out.append(((entry.get("type") or "").strip().lower(), value))
    return out


def _read_emails(values: list[Any]) -> dict[str, ClaimValue]:
    email: str | None = None
    home: str | None = None
    others: list[str] = []
    untyped: list[str] = []
    for kind, value in _entries(values):
        if kind in ("work", "home"):
            if (email if kind == "work" else home) is not None:
                claim = EMAIL_TYPES[kind]
                raise InvalidValue(
                    f"emails: idprov keeps one {kind} address (claim {claim}); "
                    'give the others type "other"'
                )
            email, home = (value, home) if kind == "work" else (email, value)
        elif kind == "other":
            others.append(value)
        elif kind:
            raise InvalidValue(
                f'emails: idprov keeps no {kind!r} address (types kept: "work", "home", "other")'
            )
        else:
            untyped.append(value)
    if email is None and untyped:
        email = untyped.pop(0)
    others += untyped
    claims: dict[str, ClaimValue] = {}
    if email is not None:
        claims["email"] = email
    if home is not None:
        claims["home_email"] = home
    if others:
        claims["emails"] = others
    return claims


def _read_phones(values: list[Any]) -> dict[str, ClaimValue]:
    claims: dict[str, ClaimValue] = {}
    untyped = []
    for kind, value in _entries(values):
        if not kind:
            untyped.append(value)
            continue
        claim = PHONE_TYPES.get(kind)
        if claim is None:
            raise InvalidValue(
                f'phoneNumbers: idprov keeps no {kind!r} number (types kept: "work", "mobile")'
            )
        if claim in claims:
            raise InvalidValue(f"phoneNumbers: idprov keeps one {kind!r} number")
        claims[claim] = value
    for value in untyped:
        free = [c for c in PHONE_TYPES.values() if c not in claims]
        if not free:
            raise InvalidValue("phoneNumbers: idprov keeps one work and one mobile number")
        claims[free[0]] = value
    return claims


def _read_addresses(values: list[Any]) -> dict[str, ClaimValue]:
    if not values:
        return {}
    if len(values) > 1:
        raise InvalidValue("addresses: idprov keeps one address, of type work")
    address = values[0]
    kind = (address.get("type") or "work").lower()
    if kind != "work":
        raise InvalidValue(f"addresses: idprov keeps a work address, not a {kind!r} one")
    claims: dict[str, ClaimValue] = {}
    _take(claims, {ADDRESS[k]: v for k, v in address.items() if k in ADDRESS})
    return claims


def read_group(doc: Mapping[str, Any]) -> GroupInput:
    """The name, member user ids and externalId of a validated Group document."""
    name = doc.get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue("displayName is required")
    ids: list[str] = []
    for member in doc.get("members") or []:
        kind = (member.get("type") or "User").strip()
        if kind.casefold() != "user":
            raise InvalidValue(f"members: idprov roles hold users only, not {kind!r}")
        value = member.get("value")
        if not value:
            raise InvalidValue("members: each member needs the value of a User id")
        if value not in ids:
            ids.append(str(value))
    return GroupInput(name, ids, _external_id(doc))
