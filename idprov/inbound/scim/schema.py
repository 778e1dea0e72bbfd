"""What `idprov serve` tells SCIM clients about itself: schemas, resource types and the
service provider configuration.

The schemas are RFC 7643's own (as scim2-server ships them), cut down to what idprov
keeps (see :mod:`.mapping`): an attribute idprov stores keeps its RFC definition;
one it cannot store (``ims``, ``photos``, ``name.formatted``...) is
published as ``readOnly`` and never returned, so a client that sends it is not
refused (RFC 7644 section 3.3 has read-only values in requests ignored) and a client
that reads the schema knows it is not kept. Attributes in no RFC schema are refused
(400 ``invalidSyntax``, as the SCIM interoperability profile asks). ``userName`` is
``readWrite``: a new one renames the user. Group names are unique (roles are).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ETag,
    Filter,
    Patch,
    ResourceType,
    Schema,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
)
from scim2_server.utils import load_default_resource_types, load_default_schemas

from idprov.inbound.scim.mapping import ENTERPRISE, GROUP, USER

MAX_RESULTS = 1000
MAX_OPERATIONS = 1000

KEPT: Mapping[str, Mapping[str, set[str] | None]] = {
    USER: {
        "userName": None,
        "name": {"givenName", "familyName", "middleName"},
        "displayName": None,
        "nickName": None,
        "title": None,
        "userType": None,
        "locale": None,
        "timezone": None,
        "active": None,
        "password": None,
        "emails": {"value", "type"},
        "phoneNumbers": {"value", "type"},
        "addresses": {"streetAddress", "locality", "region", "postalCode", "country", "type"},
        "groups": {"value", "$ref", "display", "type"},
    },
    GROUP: {"displayName": None, "members": {"value", "$ref", "type"}},
    ENTERPRISE: {"employeeNumber": None, "costCenter": None, "organization": None}
    | {"department": None, "manager": {"value", "$ref"}},
}
"""Per schema, the attributes idprov keeps, and of a complex one its kept sub-attributes."""

TYPES = {
    ("emails", "type"): ["work", "home", "other"],
    ("phoneNumbers", "type"): ["work", "mobile"],
    ("addresses", "type"): ["work"],
    ("members", "type"): ["User"],
}
"""The ``canonicalValues`` idprov keeps apart (see :mod:`.mapping`)."""

BEARER = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken,
    name="Bearer token",
    description="A bearer token bound to an idprov application (RFC 6750)",
    primary=True,
)


@functools.cache
def build_provider(max_payload_size: int) -> ScimProvider:
    """The provider description `idprov serve` publishes and validates requests with
    (immutable, so built once per size: building the models takes a tenth of a second)."""
    schemas = [
        Schema.model_validate(_trim(s.model_dump(by_alias=True, exclude_none=True)))
        for s in load_default_schemas().values()
    ]
    resource_types: list[ResourceType] = list(load_default_resource_types().values())
    return ScimProvider.from_discovery(
        schemas, resource_types, config=_config(max_payload_size), policy=POLICY
    )


POLICY = ScimPolicy(unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create)
"""How idprov reads what the RFC leaves to the server, or what clients send against
it: a PATCH ``add`` or ``replace`` to ``emails[type eq "work"].value`` on a user with
no work email adds one, as Microsoft Entra sends it when a mapped attribute first gets
a value (the strict reading, 400 ``noTarget``, failed that user's every update; Okta
and Entra's own reference code met the same). Only ``eq`` comparisons joined by ``and``
describe a value to add; any other filter that matches nothing is still ``noTarget``."""


def _config(max_payload_size: int) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=True, max_operations=MAX_OPERATIONS, max_payload_size=max_payload_size),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=True),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        authentication_schemes=[BEARER],
    )


def _trim(schema: dict[str, Any]) -> dict[str, Any]:
    kept = KEPT[schema["id"]]
    for attribute in schema["attributes"]:
        name = attribute["name"]
        if name not in kept:
            _ignore(attribute)
            continue
        if schema["id"] == GROUP and name == "displayName":
            attribute["uniqueness"] = "server"
        for sub in attribute.get("subAttributes", []):
            if sub["name"] not in (kept[name] or set()):
                _ignore(sub)
            elif (name, sub["name"]) in TYPES:
                sub["canonicalValues"] = TYPES[(name, sub["name"])]
    return schema


def _ignore(attribute: dict[str, Any]) -> None:
    """Publish an attribute idprov does not store as read-only, never returned."""
    attribute["mutability"] = "readOnly"
    attribute["returned"] = "never"
    attribute["description"] = "Not kept by idprov: " + attribute.get("description", "")
    for sub in attribute.get("subAttributes", []):
        _ignore(sub)


# ---------------------------------------------------------------- PATCH values
SCHEMAS_OF = {"User": (USER, ENTERPRISE), "Group": (GROUP,)}
_PATH = re.compile(r"^([A-Za-z][\w$-]*)(\[.*\])?(?:\.([A-Za-z$][\w$-]*))?$", re.DOTALL)


@functools.cache
def ignored_attributes() -> dict[str, dict[str, frozenset[str] | None]]:
    """Per schema: attribute (lower case) -> None when the whole attribute is not kept,
    else the sub-attributes that are not (lower case)."""
    out: dict[str, dict[str, frozenset[str] | None]] = {}
    for schema in load_default_schemas().values():
        kept = KEPT[str(schema.id)]
        table: dict[str, frozenset[str] | None] = {}
        for attribute in schema.attributes or []:
            name = str(attribute.name)
            if name not in kept:
                table[name.lower()] = None
                continue
            subs = {str(s.name) for s in attribute.sub_attributes or []}
            dropped = {s.lower() for s in subs - (kept[name] or subs)}
            if dropped:
                table[name.lower()] = frozenset(dropped)
        out[str(schema.id)] = table
    return out


CLIENT_SCHEMAS = frozenset(
    s.casefold()
    for s in ["http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"]
)
"""Schema URNs that provisioning clients put in documents and that mean nothing here
(Microsoft Entra ID sends this one with every Group it creates): dropped, not refused."""

MANAGER = f"{ENTERPRISE}:manager".casefold()


def _loads(body: bytes) -> Any:
    """The JSON of a body, or None when it is not JSON or nests too deep (the
    service then answers 400 ``invalidSyntax`` with the parser's words)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def drop_client_schemas(body: bytes) -> bytes:
    """A POST or PUT body without the :data:`CLIENT_SCHEMAS` in its ``schemas``."""
    data = _loads(body)
    schemas = data.get("schemas") if isinstance(data, dict) else None
    if not isinstance(schemas, list):
        return body
    kept = [s for s in schemas if not (isinstance(s, str) and s.casefold() in CLIENT_SCHEMAS)]
    if len(kept) == len(schemas):
        return body
    return json.dumps({**data, "schemas": kept}).encode()


def drop_ignored(body: bytes, resource_type: str) -> bytes:
    """A PATCH body without the values of attributes idprov does not keep, inside the
    values it writes (Okta sends ``display`` with each group member), and without the
    operations whose path names one (Entra sends ``roles`` when an application's roles
    are mapped): the same as a POST or PUT, where such values are ignored (RFC 7644
    3.3), so a PATCH that also carries them makes its other changes (it was refused
    whole, 400 ``mutability``, while the POST of the same user was taken). ``/Schemas``
    publishes these attributes as read-only and never returned.

    Microsoft Entra ID's forms become RFC 7644's: ``manager`` given as the manager's id
    alone becomes ``{"value": id}``, a ``remove`` of ``members`` with a value list one
    ``members[value eq "id"]`` removal per member, and the ``name`` its group member
    changes may carry (``"name": "addMember"``, not a member of an RFC 7644 operation)
    goes."""
    data = _loads(body)
    operations = data.get("Operations") if isinstance(data, dict) else None
    if not isinstance(operations, list):
        return body
    schemas = SCHEMAS_OF.get(resource_type, ())
    kept = [o for o in operations if not _names_ignored(o, schemas)]
    if operations and not kept:  # a PATCH of nothing idprov keeps: it changes nothing
        kept = [{"op": "remove", "path": NOTHING[resource_type]}]
    operations = kept
    for operation in operations:
        if isinstance(operation, dict):
            operation.pop("name", None)
        if isinstance(operation, dict) and "value" in operation:
            _manager_by_id(operation)
            _drop_in_operation(operation, schemas)
    data["Operations"] = [o for op in operations for o in _member_removals(op)]
    return json.dumps(data).encode()


NOTHING = {"User": 'emails[value eq ""]', "Group": 'members[value eq ""]'}
"""A PATCH operation that changes nothing (no value is empty: an empty claim is
removed), for a PATCH whose every operation was dropped: RFC 7644 wants at least one,
and the client's PATCH is answered as any PATCH that changes nothing (its ETag kept)."""


def _names_ignored(operation: Any, schemas: tuple[str, ...]) -> bool:
    """Whether an operation's path names an attribute (or a sub-attribute) idprov does
    not keep."""
    path = operation.get("path") if isinstance(operation, dict) else None
    if not isinstance(path, str) or not schemas:
        return False
    schema, rest = _schema_of(path, schemas)
    match = _PATH.match(rest)
    if match is None:
        return False
    table = ignored_attributes()[schema]
    attribute = match.group(1).lower()
    if attribute not in table:
        return False
    subs = table[attribute]
    return subs is None or (match.group(3) is not None and match.group(3).lower() in subs)


def _schema_of(path: str, schemas: tuple[str, ...]) -> tuple[str, str]:
    """The schema a PATCH path is in, and the path within it."""
    schema, rest = schemas[0], path
    for urn in schemas:
        if rest.lower().startswith(urn.lower() + ":"):
            schema, rest = urn, rest[len(urn) + 1 :]
    return schema, rest


def _member_removals(operation: Any) -> list[Any]:
    """Entra's ``{"op": "Remove", "path": "members", "value": [{"value": id}...]}`` as
    one filtered removal per member (RFC 7644 3.5.2.2); any other operation as is."""
    if not isinstance(operation, dict) or not isinstance(operation.get("value"), list):
        return [operation]
    op, path = operation.get("op"), operation.get("path")
    if not (isinstance(op, str) and op.casefold() == "remove"):
        return [operation]
    if not (isinstance(path, str) and path.casefold() == "members"):
        return [operation]
    ids = [m.get("value") for m in operation["value"] if isinstance(m, dict)]
    if not ids or not all(isinstance(i, str) for i in ids):
        return [operation]
    return [{"op": "remove", "path": f"members[value eq {json.dumps(i)}]"} for i in ids]


def _manager_by_id(operation: dict[str, Any]) -> None:
    path = operation.get("path")
    if isinstance(path, str) and path.casefold() == MANAGER:
        if isinstance(operation["value"], str):
            operation["value"] = {"value": operation["value"]}


def _drop_in_operation(operation: dict[str, Any], schemas: tuple[str, ...]) -> None:
    path = operation.get("path")
    if not path:
        if isinstance(operation["value"], dict):
            _drop_in_object(operation["value"], schemas)
        return
    schema, rest = _schema_of(str(path), schemas)
    match = _PATH.match(rest)
    if match and match.group(3) is None:
        _drop_subs(operation, "value", ignored_attributes()[schema].get(match.group(1).lower()))


def _drop_in_object(value: dict[str, Any], schemas: tuple[str, ...]) -> None:
    for key in list(value):
        extension = next((s for s in schemas[1:] if s.lower() == key.lower()), None)
        if extension is not None and isinstance(value[key], dict):
            _drop_in_object(value[key], (extension,))
            continue
        ignored = ignored_attributes()[schemas[0]]
        if key.lower() in ignored and ignored[key.lower()] is None:
            del value[key]
        else:
            _drop_subs(value, key, ignored.get(key.lower()))


def _drop_subs(holder: dict[str, Any], key: str, ignored: frozenset[str] | None) -> None:
    if not ignored:
        return
    items = holder[key] if isinstance(holder[key], list) else [holder[key]]
    for item in items:
        if isinstance(item, dict):
            for sub in [k for k in item if k.lower() in ignored]:
                del item[sub]
