"""A strict Google Workspace on loopback (OAuth token endpoint and Admin SDK Directory
API v1), and its ``google_workspace`` fixture.

No one can run Google Workspace locally, so this peer follows the documented wire
format closely enough to catch connector mistakes:

- ``POST /token`` takes only ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``
  with an ``assertion`` JWT, verified as Google does: RS256 signature against the
  service account key's public half (and its ``kid``), ``aud`` the token URI, ``iss``
  the service account, ``sub`` an administrator of the domain, ``scope`` within what the
  Admin console delegated, at most an hour of life. Errors are OAuth JSON
  (``{"error": "invalid_grant", "error_description": ...}``).
- ``/admin/directory/v1/users``, ``/groups`` and ``/groups/{key}/members`` need a live
  bearer token with the right scope, ``application/json`` bodies with only known
  fields, the fields ``users.insert`` requires (primaryEmail in the domain,
  name.givenName, name.familyName, a password of 8 to 100 characters) and the email
  ``members.insert`` requires; keys may be ids or emails. Errors are Google's
  ``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}``.

Tests inject faults (``fail_next``), revoke tokens mid-run (``revoke_tokens``) and
read the request log. The loopback plumbing (:class:`Loopback`) and :func:`rsa_key`
serve the Salesforce peer too.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
USER_SCOPE = "https://www.googleapis.com/auth/admin.directory.user"
GROUP_SCOPE = "https://www.googleapis.com/auth/admin.directory.group"
API_PATH = "/admin/directory/v1"
USER_FIELDS = {
    "primaryEmail": str,
    "name": dict,
    "password": str,
    "hashFunction": str,
    "changePasswordAtNextLogin": bool,
    "suspended": bool,
    "archived": bool,
    "orgUnitPath": str,
    "includeInGlobalAddressList": bool,
    "ipWhitelisted": bool,
    "recoveryEmail": str,
    "recoveryPhone": str,
    "phones": list,
    "organizations": list,
    "externalIds": list,
    "addresses": list,
    "emails": list,
    "relations": list,
    "locations": list,
    "languages": list,
    "websites": list,
    "customSchemas": dict,
}
ITEM_FIELDS = {
    "phones": {"value", "type", "customType", "primary"},
    "organizations": {
        "name",
        "title",
        "department",
        "costCenter",
        "description",
        "location",
        "symbol",
        "domain",
        "type",
        "customType",
        "primary",
        "fullTimeEquivalent",
    },
    "externalIds": {"value", "type", "customType"},
    "addresses": {
        "type",
        "customType",
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
        "countryCode",
        "formatted",
        "poBox",
        "extendedAddress",
        "primary",
        "sourceIsStructured",
    },
}
NAME_FIELDS = {"givenName", "familyName", "fullName", "displayName"}
GROUP_FIELDS = {"email": str, "name": str, "description": str}


# ---------------------------------------------------------------- loopback plumbing
@dataclass
class PeerRequest:
    """One request as a peer sees it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class PeerReply:
    """A peer's answer: a JSON-able body (bytes as they are; None: empty)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    applied: bool = False
    """For an injected fault: the request is carried out first, then this reply is
    sent instead of the real one (a reply lost after the work was done)."""


class LoggedRequest(NamedTuple):
    method: str
    path: str
    status: int
    query: dict[str, list[str]]
    body: Any


class Loopback:
    """A threaded HTTP/1.1 server on a free loopback port that hands each request to
    ``handle``; a handler that raises answers 500 with the exception, so a peer bug
    reaches the test instead of hanging it."""

    def __init__(self, handle: Callable[[PeerRequest], PeerReply]) -> None:
        self.handle = handle
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> Loopback:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, and close the connections that clients kept alive."""
        self._httpd.shutdown()
        self._httpd.server_close()
        for connection in list(self._httpd.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    block_on_close = False
    daemon_threads = True

    def __init__(self, loopback: Loopback) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.loopback = loopback
        self.connections: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: peers keep their own request logs."""

    def do_GET(self) -> None:
        target = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = PeerRequest(
            self.command,
            target.path,
            parse_qs(target.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            raw,
        )
        try:
            reply = self.server.loopback.handle(request)
        except Exception as exc:  # a peer bug must reach the test as a 500
            reply = PeerReply(500, {"peer_bug": repr(exc)})
        if isinstance(reply.body, bytes):
            payload, content_type = reply.body, "text/plain"
        else:
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            content_type = "application/json; charset=UTF-8"
        self.send_response(reply.status)
        if payload:
            self.send_header("Content-Type", content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


@cache
def rsa_key(label: str) -> Any:
    """An RSA private key (2048 bits) per label, made once per test session."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key: Any) -> str:
    """The unencrypted PKCS#8 PEM text of ``key``."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Fault(NamedTuple):
    method: str | None
    path: str | None
    reply: PeerReply


class Faults:
    """Injected replies for the next matching requests, in order."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, reply: PeerReply, count: int, method: str | None, path: str | None) -> None:
        with self._lock:
            self._faults += [Fault(method, path, reply)] * count

    def take(self, request: PeerRequest) -> PeerReply | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if (fault.method in (None, request.method)) and (
                    fault.path is None or request.path.startswith(fault.path)
                ):
                    del self._faults[i]
                    return fault.reply
        return None


# ---------------------------------------------------------------- Google Workspace
class GoogleError(Exception):
    """A request the Directory API refuses, rendered as Google's error JSON."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def google_error(status: int, message: str, reason: str) -> PeerReply:
    error = {"message": message, "domain": "global", "reason": reason}
    return PeerReply(status, {"error": {"code": status, "message": message, "errors": [error]}})


def oauth_error(status: int, error: str, description: str) -> PeerReply:
    return PeerReply(status, {"error": error, "error_description": description})


@dataclass
class Grant:
    subject: str
    scopes: frozenset[str]


class GoogleWorkspace:
    """The fake: service account, domain, directory state, tokens, faults, log.

    Tests may change ``delegated_scopes`` (what the Admin console granted the service
    account), ``token_lifetime`` (``expires_in`` of new tokens) and ``org_units``."""

    def __init__(self, domain: str = "example.com", admin: str = "admin@example.com") -> None:
        self.domain = domain
        self.admin = admin
        self.client_email = "idprov@idprov-test.iam.gserviceaccount.com"
        self.key = rsa_key("google")
        self.key_id = secrets.token_hex(20)
        self.delegated_scopes = {USER_SCOPE, GROUP_SCOPE}
        self.token_lifetime = 3599
        self.org_units = {"/", "/Staff"}
        self.tokens: dict[str, Grant] = {}
        self.issued: list[str] = []
        """Every access token issued (tests check none leaks into output)."""
        self.token_requests = 0
        self.users: dict[str, dict[str, Any]] = {}
        self.passwords: dict[str, list[str]] = {}
        """User id -> every password set for it (insert, then any patch)."""
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, str]] = {}
        """Group id -> member user id -> role."""
        self.members_page_limit = 200
        """Most members a ``members.list`` page holds (Google: ``maxResults``, at most
        200); a test lowers it to see pages followed."""
        self.requests: list[LoggedRequest] = []
        self.faults = Faults()
        self._lock = threading.RLock()
        self.server = Loopback(self.handle)

    # -- test helpers
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    def private_key_pem(self) -> str:
        return pem_of(self.key)

    def key_json(self) -> str:
        """The service account key file, as the Cloud console downloads it."""
        return json.dumps(
            {
                "type": "service_account",
                "project_id": "idprov-test",
                "private_key_id": self.key_id,
                "private_key": self.private_key_pem(),
                "client_email": self.client_email,
                "client_id": "104200000000000000001",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": self.token_uri,
                "universe_domain": "googleapis.com",
            },
            indent=2,
        )

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (the next API call gets 401)."""
        with self._lock:
            self.tokens.clear()

    def fail_next(
        self,
        status: int,
        reason: str = "backendError",
        message: str | None = None,
        *,
        count: int = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        after_apply: bool = False,
    ) -> None:
        """Answer the next ``count`` matching requests (``path`` relative to the API
        root, or ``/token``) with a Google error of ``status`` and ``reason``; with
        ``after_apply`` the request is carried out first (its reply is lost)."""
        reply = google_error(status, message or f"injected {reason}", reason)
        reply.headers = headers or {}
        reply.applied = after_apply
        full = "/token" if path == "/token" else API_PATH + (path or "")
        self.faults.add(reply, count, method, full)

    def user(self, email: str) -> dict[str, Any] | None:
        return self._find_user(email)

    def group(self, email: str) -> dict[str, Any] | None:
        return self._find_group(email)

    def member_emails(self, group_email: str) -> set[str]:
        group = self._find_group(group_email)
        assert group is not None, group_email
        return {self.users[u]["primaryEmail"] for u in self.members[group["id"]]}

    def api_requests(self, method: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith(API_PATH) and (method is None or r.method == method)
        ]

    # -- dispatch
    def handle(self, request: PeerRequest) -> PeerReply:
        with self._lock:
            reply = self._answer(request)
        body = request.form() if request.path == "/token" else _json_or_text(request.body)
        self.requests.append(
            LoggedRequest(request.method, request.path, reply.status, request.query, body)
        )
        return reply

    def _answer(self, request: PeerRequest) -> PeerReply:
        if request.path == "/token":
            return self.faults.take(request) or self.token(request)
        if not request.path.startswith(API_PATH + "/"):
            return google_error(404, f"Not Found: {request.path}", "notFound")
        header = request.headers.get("authorization", "")
        grant = self.tokens.get(header[7:]) if header.startswith("Bearer ") else None
        if grant is None:
            reply = google_error(401, "Invalid Credentials", "authError")
            reply.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
            return reply
        fault = self.faults.take(request)
        if fault is not None and not fault.applied:
            return fault
        try:
            reply = self.route(request, grant)
        except GoogleError as exc:
            reply = google_error(exc.status, exc.message, exc.reason)
        return fault or reply

    # -- OAuth
    def token(self, request: PeerRequest) -> PeerReply:
        import jwt

        if (
            request.method != "POST"
            or request.content_type() != "application/x-www-form-urlencoded"
        ):
            return oauth_error(400, "invalid_request", "POST a form to the token endpoint")
        form = request.form()
        if form.get("grant_type") != JWT_BEARER:
            return oauth_error(
                400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
            )
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "sub", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidAudienceError:
            return oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        except jwt.PyJWTError as exc:
            return oauth_error(400, "invalid_grant", f"Invalid JWT: {exc}")
        if header.get("kid") not in (None, self.key_id):
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims["iss"] != self.client_email or claims["sub"] != self.admin:
            return oauth_error(400, "invalid_grant", "Invalid email or User ID")
        if claims["exp"] - claims["iat"] > 3600:
            return oauth_error(
                400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)"
            )
        scopes = frozenset(str(claims["scope"]).split())
        if not scopes or not scopes <= self.delegated_scopes:
            return oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
        self.token_requests += 1
        token = "ya29." + secrets.token_urlsafe(32)
        self.tokens[token] = Grant(claims["sub"], scopes)
        self.issued.append(token)
        return PeerReply(
            200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    # -- Directory API
    def route(self, request: PeerRequest, grant: Grant) -> PeerReply:
        parts = [unquote(p) for p in request.path[len(API_PATH) + 1 :].split("/")]
        method = request.method
        scope = {"users": USER_SCOPE, "groups": GROUP_SCOPE}.get(parts[0])
        if scope is None:
            raise GoogleError(404, f"Not Found: {request.path}", "notFound")
        if scope not in grant.scopes:
            raise GoogleError(
                403, "Request had insufficient authentication scopes.", "insufficientPermissions"
            )
        body = self._body(request) if method in ("POST", "PATCH", "PUT") else None
        if parts[0] == "users":
            return self.route_users(method, parts[1:], body, request)
        return self.route_groups(method, parts[1:], body, request)

    def _body(self, request: PeerRequest) -> dict[str, Any]:
        if request.content_type() != "application/json":
            raise GoogleError(400, "Invalid Content-Type: use application/json", "parseError")
        try:
            body = request.json()
        except ValueError:
            raise GoogleError(400, "Parse Error", "parseError") from None
        if not isinstance(body, dict):
            raise GoogleError(400, "Invalid JSON payload received.", "invalid")
        return body

    def route_users(
        self, method: str, parts: list[str], body: Any, request: PeerRequest
    ) -> PeerReply:
        if not parts and method == "GET":
            return PeerReply(200, self.list_users(request))
        if not parts and method == "POST":
            return PeerReply(200, self.insert_user(body))
        if len(parts) != 1:
            raise GoogleError(404, "Not Found", "notFound")
        user = self._find_user(parts[0])
        if user is None:
            raise GoogleError(404, "Resource Not Found: userKey", "notFound")
        if method == "GET":
            return PeerReply(200, _fields(user, request.param("fields")))
        if method == "PATCH":
            return PeerReply(200, self.patch_user(user, body))
        if method == "DELETE":
            del self.users[user["id"]]
            for members in self.members.values():
                members.pop(user["id"], None)
            return PeerReply(204)
        raise GoogleError(405, f"Method {method} not allowed", "badRequest")

    def list_users(self, request: PeerRequest) -> dict[str, Any]:
        customer, domain = request.param("customer"), request.param("domain")
        if customer not in ("my_customer", "C0test") and domain != self.domain:
            raise GoogleError(400, "Bad Request", "badRequest")
        limit = int(request.param("maxResults") or 100)
        users = sorted(self.users.values(), key=lambda u: u["primaryEmail"])[:limit]
        return {"kind": "admin#directory#users", "users": users}

    def _check_user_fields(self, body: dict[str, Any]) -> None:
        for key, value in body.items():
            if key in ("id", "kind", "etag"):
                continue
            expected = USER_FIELDS.get(key)
            if expected is None:
                raise GoogleError(
                    400, f'Invalid JSON payload received. Unknown name "{key}"', "invalid"
                )
            if value is None:
                continue
            if not isinstance(value, expected):
                raise GoogleError(400, f"Invalid value for {key}", "invalid")
            if expected is list:
                self._check_items(key, value)
        name = body.get("name") or {}
        unknown = set(name) - NAME_FIELDS
        if unknown or any(len(str(v)) > 60 for v in name.values()):
            raise GoogleError(400, "Invalid Input: name", "invalid")

    @staticmethod
    def _check_items(key: str, items: list[Any]) -> None:
        allowed = ITEM_FIELDS.get(key)
        for item in items:
            if not isinstance(item, dict):
                raise GoogleError(400, f"Invalid value for {key}: objects expected", "invalid")
            if allowed is not None and set(item) - allowed:
                unknown = sorted(set(item) - allowed)[0]
                raise GoogleError(
                    400, f'Invalid JSON payload received. Unknown name "{unknown}"', "invalid"
                )

    def _check_email(self, email: Any, what: str) -> str:
        if not isinstance(email, str) or "@" not in email:
            raise GoogleError(400, f"Invalid Input: {what}", "invalid")
        if email.rpartition("@")[2].lower() != self.domain:
            raise GoogleError(400, "Domain not found.", "notFound")
        if self._find_user(email) is not None or self._find_group(email) is not None:
            raise GoogleError(409, "Entity already exists.", "duplicate")
        return email.lower()

    def insert_user(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_user_fields(body)
        email = self._check_email(body.get("primaryEmail"), "primary_user_email")
        name = body.get("name") or {}
        for part in ("givenName", "familyName"):
            if not name.get(part):
                raise GoogleError(400, f"Invalid Given/Family Name: {part}", "invalid")
        password = body.get("password")
        if not isinstance(password, str) or not 8 <= len(password) <= 100:
            raise GoogleError(400, "Invalid Password", "invalid")
        self._check_org_unit(body.get("orgUnitPath", "/"))
        user_id = str(10**20 + secrets.randbelow(9 * 10**20))
        self.passwords[user_id] = [password]
        user = {
            "kind": "admin#directory#user",
            "id": user_id,
            "etag": f'"{secrets.token_hex(8)}"',
            "isAdmin": False,
            "isDelegatedAdmin": False,
            "creationTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "suspended": False,
            "archived": False,
            "changePasswordAtNextLogin": False,
            "orgUnitPath": "/",
            "customerId": "C0test",
            "aliases": [],
            **{k: v for k, v in body.items() if k not in ("password", "hashFunction")},
            "primaryEmail": email,
        }
        user["name"] = {**name, "fullName": f"{name['givenName']} {name['familyName']}"}
        self.users[user_id] = user
        return user

    def patch_user(self, user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        self._check_user_fields(body)
        if "password" in body:
            self.passwords[user["id"]].append(body["password"])
        if "orgUnitPath" in body:
            self._check_org_unit(body["orgUnitPath"])
        email = body.get("primaryEmail")
        if email is not None and email.lower() != user["primaryEmail"]:
            if self._find_user(email) not in (None, user):
                raise GoogleError(409, "Entity already exists.", "duplicate")
            user["aliases"].append(user["primaryEmail"])
            user["primaryEmail"] = self._check_email_domain(email)
        for key, value in body.items():
            if key in ("password", "hashFunction", "primaryEmail"):
                continue
            if key == "name" and isinstance(value, dict):
                user["name"].update(value)
                user["name"]["fullName"] = (
                    f"{user['name']['givenName']} {user['name']['familyName']}"
                )
            elif value is None:
                user.pop(key, None)
            else:
                user[key] = value
        return user

    def _check_email_domain(self, email: str) -> str:
        if email.rpartition("@")[2].lower() != self.domain:
            raise GoogleError(400, "Domain not found.", "notFound")
        return email.lower()

    def _check_org_unit(self, path: Any) -> None:
        if path not in self.org_units:
            raise GoogleError(400, "Invalid Input: INVALID_OU_ID", "invalid")

    def _find_user(self, key: str) -> dict[str, Any] | None:
        if key in self.users:
            return self.users[key]
        lowered = key.lower()
        for user in self.users.values():
            if user["primaryEmail"] == lowered or lowered in user["aliases"]:
                return user
        return None

    def _find_group(self, key: str) -> dict[str, Any] | None:
        if key in self.groups:
            return self.groups[key]
        lowered = key.lower()
        for group in self.groups.values():
            if group["email"] == lowered or lowered in group["aliases"]:
                return group
        return None

    # -- groups and members
    def route_groups(
        self, method: str, parts: list[str], body: Any, request: PeerRequest
    ) -> PeerReply:
        if not parts and method == "POST":
            return PeerReply(200, self.insert_group(body))
        if not parts:
            raise GoogleError(405, f"Method {method} not allowed", "badRequest")
        group = self._find_group(parts[0])
        if group is None:
            raise GoogleError(404, "Resource Not Found: groupKey", "notFound")
        if len(parts) == 1:
            return self.route_group(method, group, body)
        if parts[1] != "members" or len(parts) > 3:
            raise GoogleError(404, "Not Found", "notFound")
        members = self.members[group["id"]]
        if len(parts) == 2 and method == "POST":
            return PeerReply(200, self.insert_member(group, body))
        if len(parts) == 2 and method == "GET":
            return PeerReply(200, self.list_members(members, request))
        user = self._find_user(parts[2]) if len(parts) == 3 else None
        if user is None or user["id"] not in members:
            raise GoogleError(404, "Resource Not Found: memberKey", "notFound")
        if method == "DELETE":
            del members[user["id"]]
            return PeerReply(204)
        if method == "GET":
            return PeerReply(200, self._member(user["id"], members[user["id"]]))
        raise GoogleError(405, f"Method {method} not allowed", "badRequest")

    def list_members(self, members: dict[str, str], request: PeerRequest) -> dict[str, Any]:
        """``members.list``: ``maxResults`` (1 to 200) a page, ``nextPageToken`` while
        more are left, taken back as ``pageToken``."""
        wanted = request.param("maxResults") or "200"
        if not wanted.isdigit() or not 1 <= int(wanted) <= 200:
            raise GoogleError(400, "Invalid Input: maxResults", "invalid")
        token = request.param("pageToken") or "p0"
        if not (token.startswith("p") and token[1:].isdigit()):
            raise GoogleError(400, "Invalid Input: pageToken", "invalid")
        start, size = int(token[1:]), min(int(wanted), self.members_page_limit)
        items = sorted((self._member(u, r) for u, r in members.items()), key=lambda m: m["email"])
        page: dict[str, Any] = {"kind": "admin#directory#members"}
        if items[start : start + size]:
            page["members"] = items[start : start + size]
        if start + size < len(items):
            page["nextPageToken"] = f"p{start + size}"
        return page

    def route_group(self, method: str, group: dict[str, Any], body: Any) -> PeerReply:
        if method == "GET":
            return PeerReply(200, group)
        if method == "DELETE":
            del self.groups[group["id"]]
            del self.members[group["id"]]
            return PeerReply(204)
        if method == "PATCH":
            self._check_group_fields(body)
            email = body.get("email")
            if email is not None and email.lower() != group["email"]:
                self._check_email(email, "email")
                group["aliases"].append(group["email"])
                group["email"] = email.lower()
            group.update({k: v for k, v in body.items() if k != "email"})
            return PeerReply(200, group)
        raise GoogleError(405, f"Method {method} not allowed", "badRequest")

    def _check_group_fields(self, body: dict[str, Any]) -> None:
        for key, value in body.items():
            if key not in GROUP_FIELDS:
                raise GoogleError(
                    400, f'Invalid JSON payload received. Unknown name "{key}"', "invalid"
                )
            if not isinstance(value, GROUP_FIELDS[key]):
                raise GoogleError(400, f"Invalid value for {key}", "invalid")
        if len(body.get("name", "")) > 75:
            raise GoogleError(400, "Invalid Input: name", "invalid")

    def insert_group(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_group_fields(body)
        if not body.get("email"):
            raise GoogleError(400, "Missing required field: email", "required")
        email = self._check_email(body["email"], "email")
        group_id = "03" + secrets.token_hex(7)
        group = {
            "kind": "admin#directory#group",
            "id": group_id,
            "etag": f'"{secrets.token_hex(8)}"',
            "email": email,
            "name": body.get("name") or email.partition("@")[0],
            "description": body.get("description", ""),
            "directMembersCount": "0",
            "adminCreated": True,
            "aliases": [],
        }
        self.groups[group_id] = group
        self.members[group_id] = {}
        return group

    def insert_member(self, group: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"email", "role", "type", "delivery_settings"}
        if set(body) - allowed:
            unknown = sorted(set(body) - allowed)[0]
            raise GoogleError(
                400, f'Invalid JSON payload received. Unknown name "{unknown}"', "invalid"
            )
        if not body.get("email"):
            raise GoogleError(400, "Missing required field: memberKey", "required")
        role = body.get("role", "MEMBER")
        if role not in ("MEMBER", "MANAGER", "OWNER"):
            raise GoogleError(400, "Invalid Input: role", "invalid")
        user = self._find_user(body["email"])
        if user is None:
            raise GoogleError(404, "Resource Not Found: memberKey", "notFound")
        members = self.members[group["id"]]
        if user["id"] in members:
            raise GoogleError(409, "Member already exists.", "duplicate")
        members[user["id"]] = role
        group["directMembersCount"] = str(len(members))
        return self._member(user["id"], role)

    def _member(self, user_id: str, role: str) -> dict[str, Any]:
        return {
            "kind": "admin#directory#member",
            "id": user_id,
            "email": self.users[user_id]["primaryEmail"],
            "role": role,
            "type": "USER",
            "status": "ACTIVE",
        }


def _fields(resource: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """A partial response (``fields=id,primaryEmail``: top-level names only)."""
    if not fields:
        return resource
    wanted = {f.strip() for f in fields.split(",")}
    return {k: v for k, v in resource.items() if k in wanted}


def _json_or_text(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@pytest.fixture
def google_workspace() -> Iterator[GoogleWorkspace]:
    """A fresh Google Workspace (domain example.com, admin admin@example.com) on a
    loopback port, stopped after the test."""
    fake = GoogleWorkspace()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()
