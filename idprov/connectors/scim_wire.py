"""SCIM's wire format: the bodies idprov sends and how it reads the replies.

Plain functions with no connection state, shared by the ``scim2`` and ``scim11``
connectors and the probe: resource bodies from attribute paths (``name.givenName``,
``emails[type eq "work"].value``, extension attributes by their full URN), PatchOp
bodies, filter literals, the target's error message, the id of a created resource,
list paging (startIndex/count or cursors), and SCIM Bulk requests and replies.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import RemoteConflict, TargetError, Throttled
from idprov.connectors.changes import changes, other_items, with_other_items
from idprov.connectors.changes import removed_paths as removed_paths  # scim11's
from idprov.connectors.http import RETRYABLE_STATUS, reply_json, reply_text
from idprov.secrecy import blank

if TYPE_CHECKING:
    import httpx

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
ERROR_MEMBERS = frozenset({"status", "detail", "scimtype", "errors"})
"""What makes a reply a SCIM error: SCIM 2.0's ``status``, ``detail``, ``scimType``
(RFC 7644 3.12), SCIM 1.1's ``Errors``."""
VALUE_PATH = re.compile(r'^(\w+)\[(\w+) eq "([^"]*)"\]\.(\w+)$')
"""``emails[type eq "work"].value``: attribute, key, match, sub-attribute."""
BULK_ENVELOPE = 200
"""Bytes a Bulk request takes besides its operations (schemas, brackets)."""


def filter_literal(value: str) -> str:
    """A SCIM filter string literal (RFC 7644 3.4.2.2: JSON string rules)."""
    return json.dumps(value, ensure_ascii=False)


def build_resource(schema: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A resource body from attribute paths (see module docstring)."""
    body: dict[str, Any] = {"schemas": [schema]}
    for path, value in attributes.items():
        if path.startswith("urn:"):
            urn, _, attr = path.rpartition(":")
            ext = body.setdefault(urn, {})
            if urn not in body["schemas"]:
                body["schemas"].append(urn)
            _set(ext, attr, value)
        else:
            _set(body, path, value)
    return body


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    if m := VALUE_PATH.match(path):
        attr, key, match, sub = m.groups()
        items = target.setdefault(attr, [])
        for item in items:
            if item.get(key) == match:
                item[sub] = value
                return
        item = {key: match, sub: value}
        if not items:
            item["primary"] = True
        items.append(item)
        return
    head, dot, rest = path.partition(".")
    if dot:
        _set(target.setdefault(head, {}), rest, value)
    else:
        target[head] = value


def find_key(obj: Any, name: str) -> Any:
    """``obj[name]``, with SCIM's case-insensitive attribute names."""
    if not isinstance(obj, dict):
        return None
    lowered = name.lower()
    return next((v for k, v in obj.items() if k.lower() == lowered), None)


def patch_body(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """PatchOp from ``old`` to ``new`` resource bodies (None: nothing changed).
    Complex attributes change sub-attribute by sub-attribute, so attributes set
    outside idprov are left alone; multi-valued ones are replaced whole."""
    replace, remove = changes(old, new)
    if not replace and not remove:
        return None
    operations: list[dict[str, Any]] = [{"op": "remove", "path": p} for p in remove]
    if replace:
        operations.append({"op": "replace", "value": replace})
    return {"schemas": [PATCH_OP], "Operations": operations}


def merged_resource(
    current: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    single_valued: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The body of a PUT that makes the change from ``old`` to ``new`` (the same
    :func:`changes` a PATCH sends) to ``current``, the resource as the target holds
    it: what idprov does not send, or sent and did not change, is kept as it is there
    (an administrator's title, an account they disabled). In a multi-valued attribute
    the items of types idprov neither sends nor sent are kept too (a mobile number
    beside idprov's work one), except in ``single_valued`` ones. None: no change."""
    replace, remove = changes(old, new)
    if not replace and not remove:
        return None
    body = copy.deepcopy({k: v for k, v in current.items() if k.lower() != "meta"})
    before = dict(old or {})
    for path in remove:
        _drop(body, path, before.get(path), path in single_valued)
    for key, value in replace.items():
        _put(body, key, value, before.get(key), key in single_valued)
    extensions = {k for k in [*current, *new] if k.startswith("urn:")}  # emptied: dropped
    schemas = dict.fromkeys([*(find_key(current, "schemas") or []), *new.get("schemas", [])])
    body[_spelled(body, "schemas")] = [s for s in schemas if s not in extensions or s in body]
    return body


def _spelled(obj: Mapping[str, Any], name: str) -> str:
    """``name`` as ``obj`` spells it (SCIM attribute names ignore case)."""
    return next((k for k in obj if k.lower() == name.lower()), name)


def _put(body: dict[str, Any], key: str, value: Any, before: Any, whole: bool) -> None:
    """Set ``key`` in ``body``: a complex value sub-attribute by sub-attribute, a
    multi-valued one beside the items of other types (:func:`with_other_items`)."""
    key = _spelled(body, key)
    have = body.get(key)
    if isinstance(value, dict):
        merged = dict(have) if isinstance(have, dict) else {}
        merged.update({_spelled(merged, k): v for k, v in value.items()})
        body[key] = merged
    elif isinstance(value, list) and isinstance(have, list) and not whole:
        body[key] = with_other_items(value, have, before)
    else:
        body[key] = value


def _drop(body: dict[str, Any], path: str, before: Any, whole: bool) -> None:
    """Remove ``path`` (``title``, ``name.givenName``, ``urn:...:User:department``)
    from ``body``; of a multi-valued attribute only the items of types idprov sent."""
    sep = ":" if path.startswith("urn:") else "."
    parent, _, attr = path.rpartition(sep)
    holder = find_key(body, parent) if parent else body
    if not isinstance(holder, dict):
        return
    attr = _spelled(holder, attr)
    have = holder.get(attr)
    kept = other_items(have, before) if isinstance(have, list) and not whole else []
    if kept:
        holder[attr] = kept
    else:
        holder.pop(attr, None)
    if parent and not holder:
        body.pop(_spelled(body, parent), None)


def members_patch(add: Sequence[str], remove: Sequence[str]) -> dict[str, Any]:
    """PatchOp adding members ``add`` and removing ``remove`` (by value filters)."""
    operations: list[dict[str, Any]] = []
    if add:
        operations.append({"op": "add", "path": "members", "value": [{"value": m} for m in add]})
    operations += [
        {"op": "remove", "path": f"members[value eq {filter_literal(m)}]"} for m in remove
    ]
    return {"schemas": [PATCH_OP], "Operations": operations}


def drift(expected: Mapping[str, Any], remote: Mapping[str, Any]) -> list[str]:
    """Top-level attributes (and sub-attributes) of ``expected`` whose ``remote``
    value differs; a multi-valued one differs when a wanted (type, value) is missing."""
    out = []
    for key, value in expected.items():
        if key == "schemas":
            continue
        have = find_key(remote, key)
        if isinstance(value, dict):
            have = have if isinstance(have, dict) else {}
            out += [f"{key}.{k}" for k, v in value.items() if find_key(have, k) != v]
        elif isinstance(value, list):
            wanted = {(i.get("type"), i.get("value")) for i in value if isinstance(i, dict)}
            got = {(i.get("type"), i.get("value")) for i in have or [] if isinstance(i, dict)}
            if not wanted <= got:
                out.append(key)
        elif have != value:
            out.append(key)
    return out


def held_anyway(remote: Mapping[str, Any], paths: Sequence[str]) -> list[str]:
    """The mapping ``paths`` that idprov holds no value in (``title``, ``name.givenName``,
    ``emails[type eq "work"].value``, ``urn:...:User:department``) where ``remote``
    holds one, named as :func:`drift` names them (``emails``, ``urn:...:User.department``).
    Of a multi-valued attribute only the items of the path's type count: a mobile
    number beside idprov's work one is not idprov's."""
    out: list[str] = []
    for path in paths:
        prefix, holder, rest = "", remote, path
        if path.startswith("urn:"):
            urn, _, rest = path.rpartition(":")
            prefix, holder = f"{urn}.", find_key(remote, urn)
        if m := VALUE_PATH.match(rest):
            attr, key, match, sub = m.groups()
            items = find_key(holder, attr)
            name = prefix + attr
            value: Any = [
                find_key(item, sub)
                for item in (items if isinstance(items, list) else [])
                if str(find_key(item, key)).lower() == match.lower()
            ]
            value = [v for v in value if v not in (None, "")]
        else:
            name, value = prefix + rest, holder
            for part in rest.split("."):
                value = find_key(value, part)
        if value not in (None, "", [], {}) and name not in out:
            out.append(name)
    return out


def error_detail(
    response: httpx.Response, read: Callable[[Any], str | None] | None = None
) -> str | None:
    """The target's own error message: ``read`` from the reply's JSON (default
    :func:`scim2_error`), else the start of its text; None for a success."""
    if response.status_code < 400:
        return None
    try:
        data = response.json()
    except ValueError:
        return reply_text(response) or None
    return (read or scim2_error)(data)


def scim_error_reply(response: httpx.Response) -> bool:
    """Whether an error reply is a SCIM error: the service provider's own answer, its
    404 the proof that a resource is gone. A page from a web server or proxy (HTML, a
    gateway's JSON of its own) is not: a wrong base_url answers 404 to everything."""
    data = reply_json(response)
    if not isinstance(data, dict):
        return False
    schemas = data.get("schemas")
    if isinstance(schemas, list) and ERROR in schemas:
        return True
    return any(str(key).lower() in ERROR_MEMBERS for key in data)


def scim2_error(data: Any) -> str:
    """A SCIM 2.0 error reply's message: ``detail`` and ``scimType``."""
    if isinstance(data, dict):
        detail = data.get("detail") or data.get("message")
        scim_type = data.get("scimType")
        if detail or scim_type:
            return f"{detail or ''}{f' (scimType {scim_type})' if scim_type else ''}".strip()
    return blank(json.dumps(data, ensure_ascii=False))[:300]  # blanked, then cut


def created_id(response: httpx.Response, what: str) -> str:
    """The new resource's id: from the body, else from the Location header."""
    try:
        data = response.json()
        if isinstance(data, dict) and data.get("id"):
            return str(data["id"])
    except ValueError:
        pass
    location = response.headers.get("Location", "").rstrip("/")
    if location:
        return location.rsplit("/", 1)[-1]
    raise TargetError(
        f"{what}: created, but the reply holds no id (invalid JSON, no Location)",
        status=response.status_code,
        retryable=True,
        ambiguous=True,
    )


def pages(
    fetch: Callable[[dict[str, str]], dict[str, Any]], params: Mapping[str, str], cursor: bool
) -> Iterator[list[dict[str, Any]]]:
    """The ``Resources`` of each list page that ``fetch(params)`` returns, by
    startIndex/count (RFC 7644 3.4.2.4) or, with ``cursor``, ``cursor``/``nextCursor``."""
    query = dict(params)
    next_cursor: str | None = "" if cursor else None
    start = 1
    while True:
        if next_cursor is None:
            query["startIndex"] = str(start)
        else:
            query["cursor"] = next_cursor
        data = fetch(query)
        resources = data.get("Resources") or []
        yield resources
        start += len(resources)
        if next_cursor is not None:
            next_cursor = data.get("nextCursor")
            if not next_cursor:
                return
        elif not resources or start > int(data.get("totalResults", 0)):
            return


def bulk_batches(
    bodies: Sequence[dict[str, Any]], max_ops: int, max_bytes: int
) -> list[list[dict[str, Any]]]:
    """One Bulk POST /Users operation per body (``bulkId`` its index), split so that
    no request holds more than ``max_ops`` operations or ``max_bytes`` (0: no limit)."""
    batches: list[list[dict[str, Any]]] = [[]]
    size = BULK_ENVELOPE
    for i, body in enumerate(bodies):
        op = {"method": "POST", "path": "/Users", "bulkId": str(i), "data": body}
        op_size = len(json.dumps(op, ensure_ascii=False).encode()) + 2
        if batches[-1] and (
            len(batches[-1]) >= max_ops or (max_bytes and size + op_size > max_bytes)
        ):
            batches.append([])
            size = BULK_ENVELOPE
        batches[-1].append(op)
        size += op_size
    return [b for b in batches if b]


def bulk_request(operations: list[dict[str, Any]]) -> dict[str, Any]:
    """A BulkRequest body of ``operations``."""
    return {"schemas": [BULK_REQUEST], "Operations": operations}


def bulk_results(
    operations: list[dict[str, Any]], reply: Mapping[str, Any]
) -> list[str | TargetError]:
    """Per operation sent, in order: the created user's id or its error."""
    replies = {str(op.get("bulkId")): op for op in reply.get("Operations") or []}
    return [bulk_result(op, replies.get(op["bulkId"])) for op in operations]


def bulk_result(sent: dict[str, Any], reply: dict[str, Any] | None) -> str | TargetError:
    """The created user's id from its Bulk reply operation, else its error (no reply
    or no location: ambiguous, the user may exist)."""
    name = sent["data"]["userName"]
    if reply is None:
        return TargetError(
            f"create user {name}: no reply in the bulk response", retryable=True, ambiguous=True
        )
    status = _bulk_status(reply.get("status"))
    if 200 <= status < 300:
        location = str(reply.get("location") or "").rstrip("/")
        if location:
            return location.rsplit("/", 1)[-1]
        return TargetError(
            f"create user {name}: no location in the bulk reply", retryable=True, ambiguous=True
        )
    detail = reply.get("response") or {}
    message = f"create user {name}: HTTP {status}"
    if isinstance(detail, dict) and (detail.get("detail") or detail.get("scimType")):
        message += f": {detail.get('detail') or ''} (scimType {detail.get('scimType')})"
    if status == 409:
        return RemoteConflict(message, status=status)
    if status == 429:
        return Throttled(message, status=status)
    return TargetError(
        message, status=status, retryable=status in RETRYABLE_STATUS, ambiguous=status >= 500
    )


def _bulk_status(field: Any) -> int:
    """A Bulk reply operation's status: ``"201"``, or SCIM 1.1's ``{"code": "201"}``."""
    if isinstance(field, dict):
        field = field.get("code")
    try:
        return int(str(field))
    except ValueError:
        return 0
