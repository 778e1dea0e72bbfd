"""A strict SCIM 1.1 service provider on loopback, and its ``scim11_server`` fixture.

No maintained SCIM 1.1 provider can be installed for tests, so this one follows the documented
wire format (draft-scim-api-01 and draft-scim-core-schema-01, www.simplecloud.info):
``/Users``, ``/Groups`` and ``/ServiceProviderConfigs``, optionally under ``/v1``; the
``urn:scim:schemas:core:1.0`` schema; 1.1 PATCH (multi-valued values are merged, removed with
``"operation": "delete"``, attributes cleared through ``meta.attributes``); DELETE answering
200; errors as ``{"Errors": [{"description": ..., "code": "404"}]}``.

It is strict on purpose, so connector bugs show: a body must be ``application/json``, list
the core schema and use only known top-level attributes, and group members must exist.
Tests can inject faults (``fail_next``, ``stall_next``) and read the request log.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import secrets
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest

CORE_SCHEMA = "urn:scim:schemas:core:1.0"
ENTERPRISE_SCHEMA = "urn:scim:schemas:extension:enterprise:1.0"
MAX_RESULTS = 100

Resource = dict[str, Any]

USER_ATTRIBUTES = (
    "schemas id externalId meta userName name displayName nickName profileUrl title userType "
    "preferredLanguage locale timezone active password emails phoneNumbers ims photos "
    "addresses groups entitlements roles x509Certificates"
).split() + [ENTERPRISE_SCHEMA]
GROUP_ATTRIBUTES = ["schemas", "id", "externalId", "meta", "displayName", "members"]
MULTI_VALUED = {
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "groups",
    "entitlements",
    "roles",
    "x509Certificates",
    "members",
}
COMPLEX = {"name", "meta", ENTERPRISE_SCHEMA}
READ_ONLY = {"id", "meta", "groups"}


class ScimError(Exception):
    """A request the provider refuses, rendered as a SCIM 1.1 ``Errors`` body."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


class LoggedRequest(NamedTuple):
    """One request as the provider saw it; ``path`` is relative to the root, without /v1."""

    method: str
    path: str
    status: int
    query: str = ""
    body: Any = None


class Fault(NamedTuple):
    """An injected answer (status > 0) or delay (status 0) for the next requests (of
    ``method``, when given); ``applied``: the request is carried out first (its reply
    is lost)."""

    status: int
    headers: dict[str, str]
    body: Any
    delay: float
    method: str | None = None
    applied: bool = False


def now() -> str:
    """Return the current time as SCIM 1.1 writes it (xsd:dateTime, UTC)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def find_key(obj: dict[str, Any], name: str) -> str | None:
    """Return the key of ``obj`` matching ``name`` case-insensitively (SCIM names are)."""
    lowered = name.lower()
    return next((key for key in obj if key.lower() == lowered), None)


# Filters: attrPath op value, with and/or and parentheses (draft-scim-api-01 3.2.2.1).

TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+)')
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "co": lambda a, b: isinstance(a, str) and b in a,
    "sw": lambda a, b: isinstance(a, str) and a.startswith(b),
    "gt": lambda a, b: type(a) is type(b) and a > b,
    "ge": lambda a, b: type(a) is type(b) and a >= b,
    "lt": lambda a, b: type(a) is type(b) and a < b,
    "le": lambda a, b: type(a) is type(b) and a <= b,
}
Predicate = Callable[[Resource], bool]


def parse_filter(text: str) -> Predicate:
    """Compile a SCIM 1.1 filter into a predicate over resources, or raise a 400."""
    tokens = TOKEN.findall(text)
    predicate, rest = _parse_or(tokens)
    if rest:
        raise ScimError(400, f"Unexpected {rest[0]!r} in filter")
    return predicate


def _either(left: Predicate, right: Predicate) -> Predicate:
    return lambda resource: left(resource) or right(resource)


def _both(left: Predicate, right: Predicate) -> Predicate:
    return lambda resource: left(resource) and right(resource)


def _parse_or(tokens: list[str]) -> tuple[Predicate, list[str]]:
    left, tokens = _parse_and(tokens)
    while tokens and tokens[0].lower() == "or":
        right, tokens = _parse_and(tokens[1:])
        left = _either(left, right)
    return left, tokens


def _parse_and(tokens: list[str]) -> tuple[Predicate, list[str]]:
    left, tokens = _parse_comparison(tokens)
    while tokens and tokens[0].lower() == "and":
        right, tokens = _parse_comparison(tokens[1:])
        left = _both(left, right)
    return left, tokens


def _parse_comparison(tokens: list[str]) -> tuple[Predicate, list[str]]:
    if tokens and tokens[0] == "(":
        inner, rest = _parse_or(tokens[1:])
        if not rest or rest[0] != ")":
            raise ScimError(400, "Missing ')' in filter")
        return inner, rest[1:]
    if len(tokens) >= 2 and tokens[1].lower() == "pr":
        return _present(tokens[0]), tokens[2:]
    if len(tokens) < 3 or tokens[1].lower() not in COMPARISONS:
        raise ScimError(400, f"Invalid filter near {' '.join(tokens[:3])!r}")
    path, compare, wanted = tokens[0], COMPARISONS[tokens[1].lower()], _literal(tokens[2])
    exact = path.lower() == "id"

    def predicate(resource: Resource) -> bool:
        return any(
            compare(*_folded(value, wanted, exact)) for value in attribute_values(resource, path)
        )

    return predicate, tokens[3:]


def _present(path: str) -> Predicate:
    def predicate(resource: Resource) -> bool:
        return any(v not in (None, "", [], {}) for v in attribute_values(resource, path))

    return predicate


def _literal(token: str) -> Any:
    try:
        return json.loads(token)
    except ValueError:
        raise ScimError(400, f"Invalid filter value {token!r}") from None


def _folded(value: Any, wanted: Any, exact: bool) -> tuple[Any, Any]:
    if isinstance(value, str) and isinstance(wanted, str) and not exact:
        return value.lower(), wanted.lower()
    return value, wanted


def attribute_values(resource: Resource, path: str) -> list[Any]:
    """Return the values at ``name`` or ``name.sub``; a multi-valued attribute gives many."""
    values: list[Any] = [resource]
    for part in path.split("."):
        found = [v[k] for v in values if isinstance(v, dict) and (k := find_key(v, part))]
        values = [v for value in found for v in (value if isinstance(value, list) else [value])]
    if path.lower() in {name.lower() for name in MULTI_VALUED}:
        values = [v.get("value") if isinstance(v, dict) else v for v in values]
    return values


class Scim11Store:
    """The users and groups, and the rules of creating, replacing, patching and deleting."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.lock = threading.Lock()
        self.resources: dict[str, dict[str, Resource]] = {"Users": {}, "Groups": {}}
        self.versions = itertools.count(1)

    def create(self, kind: str, body: Resource) -> Resource:
        """Add a resource from a validated body and return it."""
        resource = {key: value for key, value in body.items() if key not in READ_ONLY}
        with self.lock:
            self._check(kind, resource, None)
            resource["id"] = str(uuid.uuid4())
            created = now()
            resource["meta"] = {
                "created": created,
                "lastModified": created,
                "location": f"{self.base_url}/{kind}/{resource['id']}",
            }
            self._stamp(resource)
            self.resources[kind][resource["id"]] = resource
            return self.render(kind, resource)

    def replace(self, kind: str, rid: str, body: Resource, if_match: str | None) -> Resource:
        """Replace every writable attribute of a resource (PUT)."""
        with self.lock:
            current = self._get(kind, rid, if_match)
            resource = {key: value for key, value in body.items() if key not in READ_ONLY}
            resource.update(id=rid, meta=current["meta"])
            self._check(kind, resource, rid)
            self._stamp(resource)
            self.resources[kind][rid] = resource
            return self.render(kind, resource)

    def patch(self, kind: str, rid: str, body: Resource, if_match: str | None) -> Resource:
        """Apply a SCIM 1.1 PATCH: clear ``meta.attributes``, then merge the body."""
        with self.lock:
            resource = copy.deepcopy(self._get(kind, rid, if_match))
            cleared = _meta_attributes(body)
            for path in cleared:
                _clear(resource, path)
            for name, value in body.items():
                if name not in READ_ONLY and name != "schemas":
                    _merge(resource, name, value, name.lower() in cleared)
            self._check(kind, resource, rid)
            self._stamp(resource)
            self.resources[kind][rid] = resource
            return self.render(kind, resource)

    def delete(self, kind: str, rid: str, if_match: str | None) -> None:
        """Remove a resource, and remove it from the groups it was a member of."""
        with self.lock:
            self._get(kind, rid, if_match)
            del self.resources[kind][rid]
            for group in self.resources["Groups"].values():
                members = group.get("members", [])
                if any(m.get("value") == rid for m in members):
                    group["members"] = [m for m in members if m.get("value") != rid]
                    self._stamp(group)

    def get(self, kind: str, rid: str) -> Resource:
        """Return one resource, or raise a 404."""
        with self.lock:
            return self.render(kind, self._get(kind, rid, None))

    def search(
        self, kind: str, predicate: Predicate | None, for_client: bool = True
    ) -> list[Resource]:
        """Return the resources matching a filter, oldest first."""
        with self.lock:
            shown = [self.render(kind, r, for_client) for r in self.resources[kind].values()]
        return [r for r in shown if predicate is None or predicate(r)]

    def render(self, kind: str, resource: Resource, for_client: bool = True) -> Resource:
        """Return a copy of a resource, with a user's groups; clients never see passwords."""
        shown = copy.deepcopy(resource)
        if for_client:
            shown.pop("password", None)
        if kind == "Users":
            groups = [
                {"value": gid, "display": group.get("displayName")}
                for gid, group in self.resources["Groups"].items()
                if any(m.get("value") == resource["id"] for m in group.get("members", []))
            ]
            if groups:
                shown["groups"] = groups
        return shown

    def _get(self, kind: str, rid: str, if_match: str | None) -> Resource:
        resource = self.resources[kind].get(rid)
        if resource is None:
            raise ScimError(404, f"Resource {rid} not found")
        if if_match not in (None, "*", resource["meta"]["version"]):
            raise ScimError(412, f"Resource {rid} has changed: version mismatch")
        return resource

    def _stamp(self, resource: Resource) -> None:
        resource["meta"]["version"] = f'W/"{next(self.versions)}"'
        resource["meta"]["lastModified"] = now()

    def _check(self, kind: str, resource: Resource, rid: str | None) -> None:
        """Enforce required attributes, userName uniqueness and existing group members."""
        if kind == "Users":
            name = resource.get("userName")
            if not isinstance(name, str) or not name:
                raise ScimError(400, "Attribute 'userName' is required")
            for other in self.resources["Users"].values():
                if other["id"] != rid and other["userName"].lower() == name.lower():
                    raise ScimError(409, f"userName '{name}' is already taken")
            return
        if not isinstance(resource.get("displayName"), str):
            raise ScimError(400, "Attribute 'displayName' is required")
        for member in resource.get("members", []):
            value = member.get("value")
            if value not in self.resources["Users"] and value not in self.resources["Groups"]:
                raise ScimError(400, f"Member {value!r} is neither a User nor a Group")


def _meta_attributes(body: Resource) -> set[str]:
    meta = body.get("meta", {})
    if not isinstance(meta, dict) or set(meta) - {"attributes"}:
        raise ScimError(400, "Only 'meta.attributes' can be sent in a PATCH")
    names = meta.get("attributes", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ScimError(400, "'meta.attributes' must be a list of attribute names")
    return {name.lower() for name in names}


def _clear(resource: Resource, path: str) -> None:
    """Remove an attribute, or a sub-attribute given as ``attribute.sub`` (or, for an
    extension schema, as ``urn:...:1.0:sub``: the URN itself holds dots)."""
    if path.startswith("urn:"):
        name, _, sub = path.rpartition(":")
        if find_key(resource, name) is None:
            name, sub = path, ""
    else:
        name, _, sub = path.partition(".")
    if name in READ_ONLY:
        raise ScimError(400, f"Attribute '{name}' is read-only")
    key = find_key(resource, name)
    if key is not None and not sub:
        del resource[key]
    elif key is not None and isinstance(resource[key], dict):
        sub_key = find_key(resource[key], sub)
        if sub_key is not None:
            del resource[key][sub_key]
        if not resource[key]:
            del resource[key]


def _merge(resource: Resource, name: str, value: Any, cleared: bool) -> None:
    """Merge one PATCH attribute: replace singular, merge complex, add/delete multi-valued."""
    if name in MULTI_VALUED:
        values = resource.setdefault(name, [])
        for item in value:
            _merge_value(values, item, ignore_delete=cleared)
        if not values:
            del resource[name]
    elif name in COMPLEX and isinstance(resource.get(name), dict):
        resource[name].update(value)
    else:
        resource[name] = value


def _merge_value(values: list[Resource], item: Resource, ignore_delete: bool) -> None:
    item = dict(item)
    operation = item.pop("operation", None)
    if operation not in (None, "delete"):
        raise ScimError(400, f"Unknown operation {operation!r}")
    key = "value" if "value" in item else None
    matches = [v for v in values if (v.get(key) == item[key] if key else v == item)]
    if operation == "delete":
        if not ignore_delete and not matches:
            raise ScimError(400, f"No value {item.get('value', item)!r} to delete")
        values[:] = [v for v in values if v not in matches]
        return
    if item.get("primary") is True:
        for other in values:
            other.pop("primary", None)
    if matches:
        matches[0].update(item)
    else:
        values.append(item)


def validate_body(kind: str, body: Any) -> Resource:
    """Check a POST, PUT or PATCH body and return it with canonically spelled attributes."""
    if not isinstance(body, dict):
        raise ScimError(400, "The body must be a JSON object")
    allowed = USER_ATTRIBUTES if kind == "Users" else GROUP_ATTRIBUTES
    schemas = body.get(find_key(body, "schemas") or "schemas")
    if not isinstance(schemas, list) or CORE_SCHEMA not in schemas:
        raise ScimError(400, f"'schemas' must list {CORE_SCHEMA}")
    known = {CORE_SCHEMA, ENTERPRISE_SCHEMA} if kind == "Users" else {CORE_SCHEMA}
    if unknown := [schema for schema in schemas if schema not in known]:
        raise ScimError(400, f"Unknown schemas for {kind}: {unknown}")
    canonical: Resource = {}
    for key, value in body.items():
        name = next((a for a in allowed if a.lower() == key.lower()), None)
        if name is None:
            raise ScimError(400, f"Unknown attribute '{key}'")
        if name in MULTI_VALUED and not (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        ):
            raise ScimError(400, f"Attribute '{name}' must be a list of objects")
        if name in COMPLEX and not isinstance(value, dict):
            raise ScimError(400, f"Attribute '{name}' must be an object")
        canonical[name] = value
    if ENTERPRISE_SCHEMA in canonical and ENTERPRISE_SCHEMA not in schemas:
        raise ScimError(400, f"'schemas' must list {ENTERPRISE_SCHEMA} to use it")
    if "active" in canonical and not isinstance(canonical["active"], bool):
        raise ScimError(400, "Attribute 'active' must be a boolean")
    return canonical


class Scim11Server:
    """The SCIM 1.1 provider: its configuration, store, request log and fault injection.

    Tests may change ``token`` (bearer; None refuses bearer), ``basic`` ((user, password);
    None refuses basic auth), ``patch_supported`` and ``max_results`` at any time.
    """

    def __init__(self) -> None:
        self.token: str | None = secrets.token_urlsafe(24)
        self.basic: tuple[str, str] | None = ("idprov", secrets.token_urlsafe(12))
        self.patch_supported = True
        self.max_results = MAX_RESULTS
        self.requests: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = PeerHTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.root_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.base_url = f"{self.root_url}/v1"
        self.store = Scim11Store(self.base_url)

    def start(self) -> Scim11Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, and close the connections that clients kept alive."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._thread.join(timeout=5)

    def users(self) -> list[Resource]:
        """Return every stored user, password included, with the groups it is in."""
        return self.store.search("Users", None, for_client=False)

    def groups(self) -> list[Resource]:
        """Return every stored group."""
        return self.store.search("Groups", None, for_client=False)

    def fail_next(
        self,
        status: int,
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        method: str | None = None,
        after_apply: bool = False,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` instead of serving them.

        ``body`` is sent as JSON, or as is if bytes (say, a proxy's HTML page); it defaults
        to a SCIM 1.1 error. ``headers`` can add ``Retry-After`` or a ``Content-Type``.
        """
        if body is None:
            body = {"Errors": [{"description": "Injected failure", "code": str(status)}]}
        self._add_faults(count, Fault(status, headers or {}, body, 0.0, method, after_apply))

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Serve the next ``count`` requests normally, after ``seconds`` (for timeouts)."""
        self._add_faults(count, Fault(0, {}, None, seconds))

    def _add_faults(self, count: int, fault: Fault) -> None:
        with self._faults_lock:
            self._faults.extend([fault] * count)

    def take_fault(self, method: str | None = None) -> Fault | None:
        with self._faults_lock:
            for i, fault in enumerate(self._faults):
                if fault.method in (None, method):
                    return self._faults.pop(i)
            return None

    def authorized(self, header: str | None) -> bool:
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() == "bearer" and self.token is not None:
            return secrets.compare_digest(credentials, self.token)
        if scheme.lower() == "basic" and self.basic is not None:
            expected = base64.b64encode(":".join(self.basic).encode()).decode()
            return secrets.compare_digest(credentials, expected)
        return False

    def service_provider_configs(self) -> Resource:
        """The 1.1 ServiceProviderConfigs document (note the plural name)."""
        schemes = []
        if self.token is not None:
            schemes.append({"name": "OAuth Bearer Token", "type": "oauthbearertoken"})
        if self.basic is not None:
            schemes.append({"name": "HTTP Basic", "type": "httpbasic"})
        return {
            "schemas": [CORE_SCHEMA],
            "patch": {"supported": self.patch_supported},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": self.max_results},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": True},
            "xmlDataFormat": {"supported": False},
            "authenticationSchemes": schemes,
        }

    def dispatch(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, if_match: str | None
    ) -> tuple[int, Any]:
        """Serve an authorized request; return the status and the JSON body."""
        parts = path.strip("/").split("/")
        kind, rid = parts[0], (parts[1] if len(parts) == 2 else None)
        if parts == ["ServiceProviderConfigs"] and method == "GET":
            return 200, self.service_provider_configs()
        if parts == ["Bulk"]:
            raise ScimError(501, "Bulk is not supported")
        if kind not in ("Users", "Groups") or len(parts) > 2:
            raise ScimError(404, f"No endpoint at {path}")
        store = self.store
        if rid is None and method == "GET":
            return 200, self.list_response(kind, query)
        if rid is None and method == "POST":
            return 201, store.create(kind, validate_body(kind, body))
        if rid is None:
            raise ScimError(405, f"{method} is not allowed on /{kind}")
        if method == "GET":
            return 200, store.get(kind, rid)
        if method == "PUT":
            return 200, store.replace(kind, rid, validate_body(kind, body), if_match)
        if method == "PATCH" and not self.patch_supported:
            raise ScimError(501, "PATCH is not supported")
        if method == "PATCH":
            return 200, store.patch(kind, rid, validate_body(kind, body), if_match)
        if method == "DELETE":
            store.delete(kind, rid, if_match)
            return 200, None
        raise ScimError(405, f"{method} is not allowed on /{kind}/{rid}")

    def list_response(self, kind: str, query: dict[str, list[str]]) -> Resource:
        """Answer a list or filter query, one page of at most ``max_results``."""
        text = query.get("filter", [""])[0]
        found = self.store.search(kind, parse_filter(text) if text else None)
        try:
            start = max(int(query.get("startIndex", ["1"])[0]), 1)
            count = min(int(query.get("count", [str(self.max_results)])[0]), self.max_results)
        except ValueError:
            raise ScimError(400, "startIndex and count must be integers") from None
        page = found[start - 1 : start - 1 + max(count, 0)]
        if "attributes" in query:
            wanted = {a.strip().lower() for a in query["attributes"][0].split(",")}
            wanted |= {"id", "schemas"}
            page = [{k: v for k, v in r.items() if k.lower() in wanted} for r in page]
        return {
            "schemas": [CORE_SCHEMA],
            "totalResults": len(found),
            "itemsPerPage": len(page),
            "startIndex": start,
            "Resources": page,
        }


class PeerHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows its connections, to close kept-alive ones on stop."""

    block_on_close = False

    def __init__(self, peer: Scim11Server) -> None:
        super().__init__(("127.0.0.1", 0), Scim11Handler)
        self.peer = peer
        self.connections: set[socket.socket] = set()

    def close_connections(self) -> None:
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore connections that clients or :meth:`close_connections` cut."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Scim11Handler(BaseHTTPRequestHandler):
    """The HTTP/1.1 (keep-alive) front of :class:`Scim11Server`."""

    protocol_version = "HTTP/1.1"
    server_version = "scim11-test-peer"
    disable_nagle_algorithm = True
    timeout = 30

    server: PeerHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet; requests are in ``Scim11Server.requests``."""

    def do_GET(self) -> None:
        self.serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def serve(self) -> None:
        peer = self.server.peer
        target = urlsplit(self.path)
        path = target.path.removeprefix("/v1") if target.path.startswith("/v1/") else target.path
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers: dict[str, str] = {}
        fault = peer.take_fault(self.command)
        if fault is not None:
            peer.stopping.wait(fault.delay)
        if fault is None or not fault.status or fault.applied:
            status, body, headers = self.answer(peer, path, target.query, raw)
        if fault is not None and fault.status:
            status, body, headers = fault.status, fault.body, fault.headers
        logged_body = _json_or_text(raw) if raw else None
        peer.requests.append(LoggedRequest(self.command, path, status, target.query, logged_body))
        self.respond(status, body, headers)

    def answer(
        self, peer: Scim11Server, path: str, query: str, raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Authenticate, parse and dispatch; turn refusals into SCIM 1.1 errors."""
        try:
            if path != "/ServiceProviderConfigs" and not peer.authorized(
                self.headers.get("Authorization")
            ):
                raise ScimError(401, "Authentication required")
            body = self.parse_body(raw)
            status, result = peer.dispatch(
                self.command, path, parse_qs(query), body, self.headers.get("If-Match")
            )
        except ScimError as error:
            errors = {"Errors": [{"description": error.description, "code": str(error.status)}]}
            return error.status, errors, self.challenge(peer) if error.status == 401 else {}
        except Exception as error:  # a bug here must reach the test as a 500, not a hang
            return 500, {"Errors": [{"description": repr(error), "code": "500"}]}, {}
        headers = {}
        if isinstance(result, dict) and "meta" in result:
            headers["ETag"] = result["meta"]["version"]
            if status == 201:
                headers["Location"] = result["meta"]["location"]
        return status, result, headers

    def parse_body(self, raw: bytes) -> Any:
        if self.command not in ("POST", "PUT", "PATCH"):
            return None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ScimError(400, f"Content-Type must be application/json, not {content_type!r}")
        try:
            return json.loads(raw)
        except ValueError:
            raise ScimError(400, "The body is not valid JSON") from None

    @staticmethod
    def challenge(peer: Scim11Server) -> dict[str, str]:
        schemes = ['Bearer realm="scim11"'] if peer.token is not None else []
        schemes += ['Basic realm="scim11"'] if peer.basic is not None else []
        return {"WWW-Authenticate": ", ".join(schemes)} if schemes else {}

    def respond(self, status: int, body: Any, headers: dict[str, str]) -> None:
        """Send the whole answer; bytes bodies go out as they are, others as JSON."""
        if isinstance(body, bytes):
            payload, content_type = body, "text/plain"
        else:
            payload = b"" if body is None else json.dumps(body).encode()
            content_type = "application/json"
        headers = {"Content-Type": content_type, **headers} if payload else headers
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@pytest.fixture
def scim11_server() -> Iterator[Scim11Server]:
    """A fresh, empty SCIM 1.1 provider on a loopback port, stopped after the test."""
    server = Scim11Server().start()
    try:
        yield server
    finally:
        server.stop()
