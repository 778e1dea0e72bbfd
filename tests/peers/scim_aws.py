"""A strict AWS IAM Identity Center SCIM endpoint on loopback, and its ``aws_scim`` fixture.

No one can run IAM Identity Center locally, so this peer refuses, with a 400
ValidationException, every request its developer guide says the service refuses
(https://docs.aws.amazon.com/singlesignon/latest/developerguide/, pages
"Limitations from SCIM specification", CreateUser, PatchUser, ListUsers, ListGroups,
CreateGroup, PatchGroup):

- filters: only ``eq`` joined by ``and``, on userName, externalId, id (Users) and
  displayName, externalId, ``id and members`` (Groups); a member filter naming a user
  that does not exist is a 404. No /Bulk, /Me or /.search (400).
- lists: no startIndex, attributes or excludedAttributes; ``count`` at most 50;
  pages by ``cursor``/``nextCursor``.
- users: userName, displayName, name.givenName and name.familyName required; no
  password, ims, photos, x509Certificates, entitlements or groups; emails,
  addresses and phoneNumbers hold one value, and the email is primary. PATCH: op
  add/replace/remove only, a path for remove, a value for add/replace, no remove of
  userName or active, one operation at most on each of them.
- groups: displayName required; at most 100 members on create and 100 member
  changes per PATCH; no replace of members, no remove of all members; only
  displayName, members, externalId in a PATCH; GetGroup/ListGroups return no members.

Every refusal is logged in ``violations`` so a test can assert there were none.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peers.google import Loopback, PeerReply, PeerRequest

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PAGE_MAX = 50
MEMBER_CHANGES_MAX = 100
USER_FILTERS = {("userName",), ("externalId",), ("id",), ("id", "manager")}
GROUP_FILTERS = {("displayName",), ("externalId",), ("id",), ("id", "members")}
UNSUPPORTED_USER = ("password", "ims", "photos", "x509Certificates", "entitlements", "groups")
SINGLE_VALUED = ("emails", "addresses", "phoneNumbers")
PATCHABLE_USER = {
    *("userName", "active", "externalId", "displayName", "nickName", "profileUrl", "title"),
    *("userType", "preferredLanguage", "locale", "timezone", "name", "emails", "addresses"),
    *("phoneNumbers", ENTERPRISE),
}
_CLAUSE = re.compile(r'^\s*([A-Za-z][\w.]*) eq ("(?:[^"\\]|\\.)*")\s*$')


class Refused(Exception):
    """A request the service refuses: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _bad(message: str) -> Refused:
    return Refused(400, message)


class AwsScim:
    """The fake's state: users, groups (with members kept apart), request log."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(16)
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, set[str]] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.violations: list[str] = []
        self.hold = threading.Event()
        """Cleared by a test to make requests that ``hold_when`` picks wait (to interrupt
        a run mid-way); ``waiting`` is set when one does."""
        self.hold.set()
        self.hold_when: Any = lambda request: request.method == "POST"
        self.broken_deletes = False
        """Set by a test: every DELETE gets a 500 (to see what a client leaves behind)."""
        self.waiting = threading.Event()
        self._lock = threading.RLock()
        self.server = Loopback(self.handle)

    @property
    def base_url(self) -> str:
        return self.server.url + "/scim/v2"

    def handle(self, request: PeerRequest) -> PeerReply:
        if not self.hold.is_set() and self.hold_when(request):
            self.waiting.set()
            self.hold.wait(30)
        with self._lock:
            try:
                reply = self._answer(request)
            except Refused as exc:
                if exc.status == 400:
                    self.violations.append(f"{request.method} {request.path}: {exc.message}")
                reply = PeerReply(
                    exc.status,
                    {"schemas": [ERROR], "status": str(exc.status), "detail": exc.message},
                )
        self.requests.append((request.method, request.path, reply.status))
        return reply

    def _answer(self, request: PeerRequest) -> PeerReply:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise Refused(401, "UnauthorizedException: invalid bearer token")
        if request.method == "DELETE" and self.broken_deletes:
            raise Refused(500, "InternalServerException: injected")
        path = request.path.removeprefix("/scim/v2")
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise Refused(404, "no such endpoint")
        if parts[0] in ("Bulk", "Me", ".search") or parts[-1] == ".search":
            raise _bad(f"/{parts[-1]} is not supported")
        if parts == ["ServiceProviderConfig"]:
            return PeerReply(200, service_provider_config())
        if parts[0] in ("Schemas", "ResourceTypes"):
            return PeerReply(200, discovery(parts[0]))
        body = request.json() if request.body else None
        if parts[0] == "Users":
            return self._users(request, parts[1:], body)
        if parts[0] == "Groups":
            return self._groups(request, parts[1:], body)
        raise Refused(404, f"no endpoint {path}")

    # ---------------------------------------------------------------- users
    def _users(self, request: PeerRequest, rest: list[str], body: Any) -> PeerReply:
        method = request.method
        if not rest and method == "GET":
            return self._list(request, self.users, USER_FILTERS, self._user_matches)
        if not rest and method == "POST":
            return PeerReply(201, self._create_user(body))
        user = self.users.get(rest[0]) if rest else None
        if user is None:
            raise Refused(404, "ResourceNotFoundException: user not found")
        if method == "GET":
            return PeerReply(200, user)
        if method == "DELETE":
            del self.users[rest[0]]
            for members in self.members.values():
                members.discard(rest[0])
            return PeerReply(204)
        if method == "PUT":
            check_user(body)
            self._unique_user(body["userName"], rest[0])
            self.users[rest[0]] = {**body, "id": rest[0]}
            return PeerReply(200, self.users[rest[0]])
        if method == "PATCH":
            self.users[rest[0]] = patch_user(user, body)
            return PeerReply(204)
        raise _bad(f"{method} is not supported here")

    def _create_user(self, body: Any) -> dict[str, Any]:
        check_user(body)
        self._unique_user(body["userName"], None)
        new_id = uuid.uuid4().hex
        self.users[new_id] = {**body, "id": new_id, "active": body.get("active", True)}
        return self.users[new_id]

    def _unique_user(self, name: str, own: str | None) -> None:
        for uid, user in self.users.items():
            if uid != own and user["userName"].casefold() == name.casefold():
                raise Refused(409, "ConflictException: user already exists")

    def _user_matches(self, user: dict[str, Any], clauses: list[tuple[str, str]]) -> bool:
        return all(str(_get(user, attr)) == value for attr, value in clauses)

    # ---------------------------------------------------------------- groups
    def _groups(self, request: PeerRequest, rest: list[str], body: Any) -> PeerReply:
        method = request.method
        if not rest and method == "GET":
            return self._list(request, self.groups, GROUP_FILTERS, self._group_matches)
        if not rest and method == "POST":
            return PeerReply(201, self._create_group(body))
        group = self.groups.get(rest[0]) if rest else None
        if group is None:
            raise Refused(404, "ResourceNotFoundException: group not found")
        if method == "GET":
            return PeerReply(200, {**group, "members": []})
        if method == "DELETE":
            del self.groups[rest[0]]
            del self.members[rest[0]]
            return PeerReply(204)
        if method == "PATCH":
            self._patch_group(rest[0], body)
            return PeerReply(204)
        raise _bad(f"{method} /Groups/ID is not supported")

    def _create_group(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("displayName"):
            raise _bad("displayName is required")
        members = [m.get("value") for m in body.get("members") or []]
        if len(members) > MEMBER_CHANGES_MAX:
            raise _bad(f"at most {MEMBER_CHANGES_MAX} members can be added in one request")
        if any(g["displayName"] == body["displayName"] for g in self.groups.values()):
            raise Refused(409, "ConflictException: group already exists")
        new_id = uuid.uuid4().hex
        self.groups[new_id] = {
            "schemas": [GROUP],
            "id": new_id,
            "displayName": body["displayName"],
            "externalId": body.get("externalId"),
        }
        self.members[new_id] = {m for m in members if m}
        return {**self.groups[new_id], "members": []}

    def _group_matches(self, group: dict[str, Any], clauses: list[tuple[str, str]]) -> bool:
        for attr, value in clauses:
            if attr == "members":
                if value not in self.users:
                    raise Refused(404, "ResourceNotFoundException: no such member")
                if value not in self.members[group["id"]]:
                    return False
            elif str(group.get(attr)) != value:
                return False
        return True

    def _patch_group(self, group_id: str, body: Any) -> None:
        operations = _operations(body)
        changes = 0
        for op in operations:
            kind, path, value = op.get("op", "").lower(), op.get("path"), op.get("value")
            target = (path or "").split("[")[0]
            if path is None and isinstance(value, dict):
                if set(value) - {"displayName", "externalId", "id"}:
                    raise _bad("only displayName, members and externalId can be patched")
                self.groups[group_id].update({k: v for k, v in value.items() if k != "id"})
                continue
            if target not in ("displayName", "externalId", "members"):
                raise _bad("only displayName, members and externalId can be patched")
            if target != "members":
                self.groups[group_id][target] = value
                continue
            changes += self._member_op(group_id, kind, path, value)
        if changes > MEMBER_CHANGES_MAX:
            raise _bad(f"at most {MEMBER_CHANGES_MAX} membership changes in one request")

    def _member_op(self, group_id: str, kind: str, path: str, value: Any) -> int:
        members = self.members[group_id]
        if kind == "replace":
            raise _bad("replacing all members is not supported")
        if kind == "add":
            values = [m.get("value") for m in value or []]
            members.update(v for v in values if v)
            return len(values)
        if kind != "remove":
            raise _bad(f"unsupported op {kind!r}")
        match = re.fullmatch(r'members\[value eq ("(?:[^"\\]|\\.)*")\]', path)
        if match:
            members.discard(json.loads(match.group(1)))
            return 1
        if path == "members" and value:
            values = [m.get("value") for m in value]
            members.difference_update(values)
            return len(values)
        raise _bad("removing all members is not supported")

    # ---------------------------------------------------------------- lists
    def _list(
        self, request: PeerRequest, store: dict[str, dict[str, Any]], allowed: set, matches: Any
    ) -> PeerReply:
        for name in ("startIndex", "attributes", "excludedAttributes", "sortBy"):
            if request.param(name) is not None:
                raise _bad(f"{name} is not supported")
        count = int(request.param("count") or PAGE_MAX)
        if not 1 <= count <= PAGE_MAX:
            raise _bad(f"count must be between 1 and {PAGE_MAX}")
        clauses = parse_filter(request.param("filter"), allowed)
        found = [dict(r) for r in store.values() if matches(r, clauses)]
        if store is self.groups:
            found = [{**g, "members": []} for g in found]
        cursor = request.param("cursor")
        start = int(cursor) if cursor else 0
        page = found[start : start + count]
        reply: dict[str, Any] = {"schemas": [LIST], "itemsPerPage": len(page), "Resources": page}
        if cursor is None:
            reply.update(totalResults=len(found), startIndex=1)
        elif start + count < len(found):
            reply["nextCursor"] = str(start + count)
        return PeerReply(200, reply)


def parse_filter(text: str | None, allowed: set) -> list[tuple[str, str]]:
    """``attr eq "value"`` clauses joined by ``and``; 400 for anything else."""
    if text is None:
        return []
    clauses = []
    for part in re.split(r"\s+and\s+", text):
        match = _CLAUSE.match(part)
        if match is None:
            raise _bad(f"unsupported filter {text!r}: only eq joined by and")
        clauses.append((match.group(1), json.loads(match.group(2))))
    if tuple(sorted(a for a, _ in clauses)) not in {tuple(sorted(c)) for c in allowed}:
        raise _bad(f"unsupported filter combination {text!r}")
    return clauses


def check_user(body: Any) -> None:
    if not isinstance(body, dict) or USER not in (body.get("schemas") or []):
        raise _bad("the request must list the User schema")
    for name in ("userName", "displayName"):
        if not body.get(name):
            raise _bad(f"{name} is required")
    for name in ("givenName", "familyName"):
        if not (body.get("name") or {}).get(name):
            raise _bad(f"name.{name} is required")
    for name in UNSUPPORTED_USER:
        if name in body:
            raise _bad(f"{name} is not supported")
    check_single_values(body)


def check_single_values(body: dict[str, Any]) -> None:
    for name in SINGLE_VALUED:
        values = body.get(name) or []
        if len(values) > 1:
            raise _bad(f"{name} holds a single value")
    emails = body.get("emails") or []
    if emails and not emails[0].get("primary"):
        raise _bad("the email must be marked primary")


def patch_user(user: dict[str, Any], body: Any) -> dict[str, Any]:
    operations = _operations(body)
    seen = [_op_target(op) for op in operations]
    for name in ("userName", "active"):
        if seen.count(name) > 1:
            raise _bad(f"several operations on {name}")
    updated = json.loads(json.dumps(user))
    for op, target in zip(operations, seen, strict=True):
        kind, path, value = op.get("op", "").lower(), op.get("path"), op.get("value")
        if kind not in ("add", "replace", "remove"):
            raise _bad(f"unsupported op {kind!r}")
        if kind == "remove" and not path:
            raise _bad("remove needs a path")
        if kind != "remove" and value is None:
            raise _bad(f"{kind} needs a value")
        if target is not None and target not in PATCHABLE_USER:
            raise _bad(f"{target} cannot be modified")
        if kind == "remove" and target in ("userName", "active"):
            raise _bad(f"{target} cannot be removed")
        _apply(updated, kind, path, value)
    check_single_values(updated)
    return updated


def _op_target(op: dict[str, Any]) -> str | None:
    path = op.get("path")
    if not path:
        value = op.get("value")
        return next(iter(value), None) if isinstance(value, dict) and len(value) == 1 else None
    if path.startswith("urn:"):
        return ENTERPRISE if path.startswith(ENTERPRISE) else path
    if " eq " in path and not re.search(r'\[\w+ eq "', path):
        raise _bad("only eq is supported in path filters")
    return re.split(r"[.\[]", path)[0]


def _apply(user: dict[str, Any], kind: str, path: str | None, value: Any) -> None:
    if path is None:
        for key, item in value.items():
            if isinstance(item, dict) and isinstance(user.get(key), dict):
                user[key].update(item)
            else:
                user[key] = item
        return
    if path.startswith("urn:"):
        urn, _, attr = path.rpartition(":")
        holder = user.setdefault(urn, {})
        holder.pop(attr, None) if kind == "remove" else holder.update({attr: value})
        return
    head, _, sub = path.partition(".")
    if kind == "remove":
        (user.get(head) or {}).pop(sub, None) if sub else user.pop(head, None)
    elif sub:
        user.setdefault(head, {})[sub] = value
    else:
        user[head] = value


def _operations(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("Operations"), list):
        raise _bad("a PatchOp with Operations is required")
    for op in body["Operations"]:
        if not isinstance(op, dict) or not op.get("op"):
            raise _bad("every operation needs op")
    return body["Operations"]


def _get(resource: dict[str, Any], attr: str) -> Any:
    value: Any = resource
    for part in attr.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def service_provider_config() -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 1, "maxPayloadSize": 1048576},
        "filter": {"supported": True, "maxResults": PAGE_MAX},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [{"type": "oauthbearertoken", "primary": True}],
    }


def discovery(kind: str) -> dict[str, Any]:
    if kind == "ResourceTypes":
        resources: list[dict[str, Any]] = [
            {"id": "User", "name": "User", "endpoint": "/Users", "schema": USER},
            {"id": "Group", "name": "Group", "endpoint": "/Groups", "schema": GROUP},
        ]
    else:
        required = [
            {"name": "userName", "type": "string", "required": True},
            {"name": "displayName", "type": "string", "required": True},
            {
                "name": "name",
                "type": "complex",
                "required": True,
                "subAttributes": [
                    {"name": "givenName", "type": "string", "required": True},
                    {"name": "familyName", "type": "string", "required": True},
                ],
            },
        ]
        resources = [{"id": USER, "name": "User", "attributes": required}]
    return {"schemas": [LIST], "totalResults": len(resources), "Resources": resources}


@pytest.fixture
def aws_scim() -> Iterator[AwsScim]:
    """A fresh strict IAM Identity Center SCIM endpoint on a loopback port."""
    fake = AwsScim()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.hold.set()
        fake.server.stop()
