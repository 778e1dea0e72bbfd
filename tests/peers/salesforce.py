"""A strict Salesforce org on loopback (login host and instance), and its
``salesforce_org`` fixture.

No one can run Salesforce locally, so this peer follows the documented wire format of
the REST API closely enough to catch connector mistakes. Like the real service it has
two hosts: the login host, whose ``/services/oauth2/token`` answers the token grants,
and the instance, whose URL comes back in the token response.

- Token endpoint: a form POST. ``urn:ietf:params:oauth:grant-type:jwt-bearer`` needs an
  RS256 ``assertion`` signed with the key of the certificate uploaded to the connected
  app, ``iss`` its consumer key, ``sub`` an active, pre-authorized user, ``aud`` the
  login URL (``https://login.salesforce.com``), ``exp`` at most a few minutes ahead;
  ``client_credentials`` needs the consumer key and secret and a run-as user;
  ``password`` needs both plus the username and password with the security token
  appended. Errors are OAuth JSON (``{"error", "error_description"}``).
- Instance, ``/services/data/vXX.X`` (known versions only), bearer tokens only:
  ``sobjects/User`` (POST, GET, PATCH; DELETE is refused: users cannot be deleted),
  ``sobjects/PermissionSetAssignment`` and ``sobjects/GroupMember``, ``query`` (the
  SOQL subset idprov uses: ``SELECT f, ... FROM T WHERE f = 'v' AND f IN ('v', ...)``),
  and sObject Collections (``composite/sobjects``: POST with ``allOrNone`` and at most
  200 records, DELETE by ``ids``). User fields are checked for existence, type,
  length, restricted picklists, references and the required set; usernames are unique
  across active and inactive users. An inactive user cannot be given a permission set
  or a group membership (``INACTIVE_OWNER_OR_USER``, ``inactive_member_error``).
  Errors are Salesforce's arrays (``[{"message", "errorCode", "fields"}]``;
  ``statusCode`` inside collection results).

Tests inject faults (``fail_next``), revoke sessions mid-run (``revoke_tokens``: the
next call gets 401 ``INVALID_SESSION_ID``) and read the request log.
"""

from __future__ import annotations

import copy
import re
import secrets
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.peers.google import (
    JWT_BEARER,
    Faults,
    LoggedRequest,
    Loopback,
    PeerReply,
    PeerRequest,
    _json_or_text,
    oauth_error,
    pem_of,
    rsa_key,
)

LOGIN_AUDIENCE = "https://login.salesforce.com"
VERSIONS = ("58.0", "59.0", "60.0", "61.0")
COLLECTION_LIMIT = 200
PREFIXES = {
    "User": "005",
    "Profile": "00e",
    "PermissionSet": "0PS",
    "Group": "00G",
    "PermissionSetAssignment": "0Pa",
    "GroupMember": "011",
}
TIME_ZONES = {"GMT", "Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles"}
LOCALES = {"en_US", "en_GB", "fr_FR", "de_DE"}
LANGUAGES = {"en_US", "fr", "de", "ja"}
ENCODINGS = {"UTF-8", "ISO-8859-1"}
USER_FIELDS: dict[str, tuple[str, Any]] = {
    "Username": ("email", 80),
    "LastName": ("string", 80),
    "FirstName": ("string", 40),
    "MiddleName": ("string", 40),
    "Email": ("email", 128),
    "Alias": ("string", 8),
    "CommunityNickname": ("string", 40),
    "ProfileId": ("reference", "Profile"),
    "UserRoleId": ("reference", "UserRole"),
    "ManagerId": ("reference", "User"),
    "TimeZoneSidKey": ("picklist", TIME_ZONES),
    "LocaleSidKey": ("picklist", LOCALES),
    "LanguageLocaleKey": ("picklist", LANGUAGES),
    "EmailEncodingKey": ("picklist", ENCODINGS),
    "IsActive": ("boolean", None),
    "ReceivesInfoEmails": ("boolean", None),
    "Title": ("string", 80),
    "Department": ("string", 80),
    "Division": ("string", 80),
    "CompanyName": ("string", 80),
    "EmployeeNumber": ("string", 20),
    "Phone": ("string", 40),
    "MobilePhone": ("string", 40),
    "Street": ("string", 255),
    "City": ("string", 40),
    "State": ("string", 80),
    "PostalCode": ("string", 20),
    "Country": ("string", 80),
    "FederationIdentifier": ("string", 512),
}
REQUIRED_USER_FIELDS = (
    "Username",
    "LastName",
    "Email",
    "Alias",
    "TimeZoneSidKey",
    "LocaleSidKey",
    "EmailEncodingKey",
    "LanguageLocaleKey",
    "ProfileId",
)
QUERYABLE = {
    "User": {"Id", *USER_FIELDS},
    "Profile": {"Id", "Name"},
    "PermissionSet": {"Id", "Name", "Label"},
    "Group": {"Id", "DeveloperName", "Name", "Type"},
    "PermissionSetAssignment": {"Id", "PermissionSetId", "AssigneeId"},
    "GroupMember": {"Id", "GroupId", "UserOrGroupId"},
}
MEMBERSHIP_FIELDS = {
    "PermissionSetAssignment": {"PermissionSetId": "PermissionSet", "AssigneeId": "User"},
    "GroupMember": {"GroupId": "Group", "UserOrGroupId": "User"},
}
_ALNUM = string.ascii_letters + string.digits
_STRING = r"'((?:[^'\\]|\\.)*)'"
_CONDITION = re.compile(
    rf"\s*(\w+)\s*(?:=\s*{_STRING}|IN\s*\(\s*({_STRING}(?:\s*,\s*{_STRING})*)\s*\))\s*",
    re.IGNORECASE,
)
_QUERY = re.compile(
    r"^\s*SELECT\s+(.+?)\s+FROM\s+(\w+)(?:\s+WHERE\s+(.+?))?(?:\s+LIMIT\s+(\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)


class SalesforceError(Exception):
    """A refusal, rendered as Salesforce's error array (``errorCode`` in REST replies,
    ``statusCode`` in collection results)."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or []

    def rest(self) -> PeerReply:
        error = {"message": self.message, "errorCode": self.code, "fields": self.fields}
        return PeerReply(self.status, [error])

    def record(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def new_id(sobject: str) -> str:
    """An 18-character id with the object's key prefix."""
    return PREFIXES[sobject] + "5g" + "".join(secrets.choice(_ALNUM) for _ in range(13))


def unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


class SalesforceOrg:
    """The fake org: connected app, users, permission sets, groups, sessions, faults.

    Tests may change ``preauthorized`` (the integration user may use the connected app
    by JWT), ``run_as`` (client credentials flow enabled) and ``audience``."""

    def __init__(self) -> None:
        self.consumer_key = "3MVG9" + secrets.token_urlsafe(30)
        self.consumer_secret = secrets.token_hex(32)
        self.integration_username = "integration@example.com.idprov"
        self.password = "pw-" + secrets.token_urlsafe(12)
        self.security_token = secrets.token_urlsafe(18)
        self.key = rsa_key("salesforce")
        self.audience = LOGIN_AUDIENCE
        self.preauthorized = True
        self.run_as = True
        self.advertised_instance_url: str | None = None
        self.inactive_member_error = (
            "INACTIVE_OWNER_OR_USER",
            "operation performed with inactive user",
        )
        """What a membership record (permission set assignment, group member) of an
        inactive user is refused with: the API's status code for "the user or record
        owner is not active". Salesforce documents no code for this very case, so
        tests may change it (a connector must not depend on it)."""
        """The instance_url of token responses; default: the instance's real URL."""
        self.org_id = "00D5g" + secrets.token_hex(5)
        self.objects: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in PREFIXES}
        self.sessions: set[str] = set()
        self.issued: list[str] = []
        self.grants: list[str] = []
        """The grant type of every successful token request."""
        self.requests: list[LoggedRequest] = []
        self.passwords: dict[str, list[str]] = {}
        """User id -> every password set through the password resource."""
        self.faults = Faults()
        self.licenses: int | None = None
        """User licenses of the org (active users, the integration user among them):
        a new active user past them is refused with ``LICENSE_LIMIT_EXCEEDED``."""
        self.query_batch = 2000
        """Records per batch of a query's reply: Salesforce returns at most 2,000 and
        may return fewer (by the records' size); the rest come by ``nextRecordsUrl``."""
        self.locators: dict[str, list[dict[str, Any]]] = {}
        self.user_fields: dict[str, tuple[str, Any]] = dict(USER_FIELDS)
        """The User fields of this org: the standard ones, and custom fields (API names
        ending ``__c``) a test adds, as an administrator does in Setup > Object Manager."""
        self.taken_elsewhere: set[str] = set()
        """Usernames (lower case) of users of other Salesforce orgs: unique across every
        org, they are refused here too, and no query of this org finds them."""
        self._lock = threading.RLock()
        self.login = Loopback(self.handle_login)
        self.instance = Loopback(self.handle_instance)
        for name in ("Standard User", "System Administrator"):
            self._insert("Profile", {"Name": name})
        for name, label in (("Sales_Ops", "Sales Ops"), ("Support_Agent", "Support Agent")):
            self._insert("PermissionSet", {"Name": name, "Label": label})
        for name in ("All_Staff", "Engineering"):
            self._insert("Group", {"DeveloperName": name, "Name": name, "Type": "Regular"})
        self.integration_user_id = self._insert(
            "User",
            {
                "Username": self.integration_username,
                "LastName": "Integration",
                "Email": "integration@example.com",
                "Alias": "integ",
                "ProfileId": self.profile_id("System Administrator"),
                "IsActive": True,
            },
        )

    # -- test helpers
    def private_key_pem(self) -> str:
        return pem_of(self.key)

    def profile_id(self, name: str) -> str:
        return self._by("Profile", "Name", name)["Id"]

    def permission_set_id(self, name: str) -> str:
        return self._by("PermissionSet", "Name", name)["Id"]

    def group_id(self, name: str) -> str:
        return self._by("Group", "DeveloperName", name)["Id"]

    def users(self) -> dict[str, dict[str, Any]]:
        """Provisioned users (not the integration user) by username."""
        return {
            u["Username"]: u
            for u in self.objects["User"].values()
            if u["Id"] != self.integration_user_id
        }

    def assignees(self, permission_set: str) -> set[str]:
        ps = self.permission_set_id(permission_set)
        return {
            self.objects["User"][a["AssigneeId"]]["Username"]
            for a in self.objects["PermissionSetAssignment"].values()
            if a["PermissionSetId"] == ps
        }

    def group_members(self, group: str) -> set[str]:
        gid = self.group_id(group)
        return {
            self.objects["User"][m["UserOrGroupId"]]["Username"]
            for m in self.objects["GroupMember"].values()
            if m["GroupId"] == gid
        }

    def delete_container(self, sobject: str, name: str) -> None:
        """Delete a permission set or group (by API name) as Setup does: its
        assignments or memberships go with it."""
        field = "Name" if sobject == "PermissionSet" else "DeveloperName"
        rid = self._by(sobject, field, name)["Id"]
        membership, link = {
            "PermissionSet": ("PermissionSetAssignment", "PermissionSetId"),
            "Group": ("GroupMember", "GroupId"),
        }[sobject]
        with self._lock:
            del self.objects[sobject][rid]
            records = self.objects[membership]
            for mid in [m for m, r in records.items() if r[link] == rid]:
                del records[mid]

    def revoke_tokens(self) -> None:
        """End every session: the next API call gets 401 INVALID_SESSION_ID."""
        with self._lock:
            self.sessions.clear()

    def fail_next(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        count: int = 1,
        method: str | None = None,
        path: str | None = None,
        after_apply: bool = False,
    ) -> None:
        """Answer the next ``count`` matching API requests (``path``: relative to
        ``/services/data/vXX.X``, a prefix) with Salesforce's error array; with
        ``after_apply`` the request is carried out first (its reply is lost)."""
        reply = SalesforceError(status, code, message or f"injected {code}").rest()
        reply.applied = after_apply
        self.faults.add(reply, count, method, path)

    def api_requests(self, method: str | None = None, path: str = "") -> list[LoggedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith("/services/data/")
            and r.path.split("/", 4)[-1].startswith(path.lstrip("/"))
            and (method is None or r.method == method)
        ]

    # -- login host
    def handle_login(self, request: PeerRequest) -> PeerReply:
        with self._lock:
            if request.path != "/services/oauth2/token":
                reply = PeerReply(404, b"Not Found")
            elif request.method != "POST" or request.content_type() != (
                "application/x-www-form-urlencoded"
            ):
                reply = oauth_error(400, "invalid_request", "must use HTTP POST with a form")
            else:
                reply = self.token(request.form())
        self.requests.append(LoggedRequest(request.method, request.path, reply.status, {}, None))
        return reply

    def token(self, form: dict[str, str]) -> PeerReply:
        grant = form.get("grant_type")
        if grant == JWT_BEARER:
            refusal = self._check_assertion(form.get("assertion", ""))
        elif grant == "client_credentials":
            refusal = self._check_client(form) or (
                None
                if self.run_as
                else oauth_error(400, "invalid_grant", "no client credentials user enabled")
            )
        elif grant == "password":
            refusal = self._check_client(form) or self._check_password(form)
        else:
            refusal = oauth_error(400, "unsupported_grant_type", "grant type not supported")
        if refusal is not None:
            return refusal
        token = f"{self.org_id}!{secrets.token_urlsafe(40)}"
        self.sessions.add(token)
        self.issued.append(token)
        self.grants.append(str(grant))
        return PeerReply(
            200,
            {
                "access_token": token,
                "instance_url": self.advertised_instance_url or self.instance.url,
                "id": f"{self.login.url}/id/{self.org_id}/{self.integration_user_id}",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
                "signature": secrets.token_urlsafe(32),
                "scope": "api",
            },
        )

    def _check_assertion(self, assertion: str) -> PeerReply | None:
        import jwt

        try:
            claims = jwt.decode(
                assertion,
                self.key.public_key(),
                algorithms=["RS256"],
                audience=self.audience,
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.InvalidAudienceError:
            return oauth_error(400, "invalid_grant", "audience is invalid")
        except jwt.ExpiredSignatureError:
            return oauth_error(400, "invalid_grant", "expired authorization code")
        except jwt.PyJWTError:
            return oauth_error(400, "invalid_grant", "invalid assertion")
        if claims["exp"] > time.time() + 300:
            return oauth_error(400, "invalid_grant", "invalid assertion")
        if claims["iss"] != self.consumer_key:
            return oauth_error(400, "invalid_client_id", "client identifier invalid")
        user = self._user_by_name(str(claims["sub"]))
        if user is None or not user["IsActive"]:
            return oauth_error(400, "invalid_grant", "invalid assertion")
        if not self.preauthorized:
            return oauth_error(400, "invalid_grant", "user hasn't approved this consumer")
        return None

    def _check_client(self, form: dict[str, str]) -> PeerReply | None:
        if form.get("client_id") != self.consumer_key:
            return oauth_error(400, "invalid_client_id", "client identifier invalid")
        if not secrets.compare_digest(form.get("client_secret", ""), self.consumer_secret):
            return oauth_error(400, "invalid_client", "invalid client credentials")
        return None

    def _check_password(self, form: dict[str, str]) -> PeerReply | None:
        expected = self.password + self.security_token
        if form.get("username") != self.integration_username or not secrets.compare_digest(
            form.get("password", ""), expected
        ):
            return oauth_error(400, "invalid_grant", "authentication failure")
        return None

    # -- instance
    def handle_instance(self, request: PeerRequest) -> PeerReply:
        with self._lock:
            reply = self._answer(request)
        self.requests.append(
            LoggedRequest(
                request.method,
                request.path,
                reply.status,
                request.query,
                _json_or_text(request.body),
            )
        )
        return reply

    def _answer(self, request: PeerRequest) -> PeerReply:
        m = re.match(r"^/services/data/v(\d+\.\d)(/.*)?$", request.path)
        if m is None or m.group(1) not in VERSIONS:
            return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist").rest()
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.sessions:
            reply = SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid").rest()
            reply.headers["WWW-Authenticate"] = 'Token realm="sfdc"'
            return reply
        rest = m.group(2) or "/"
        fault = self.faults.take(replace(request, path=rest))
        if fault is not None and not fault.applied:
            return fault
        try:
            reply = self.route(request, rest, m.group(1))
        except SalesforceError as exc:
            reply = exc.rest()
        return fault or reply

    def route(self, request: PeerRequest, rest: str, version: str) -> PeerReply:
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if not parts and method == "GET":
            base = f"/services/data/v{version}"
            return PeerReply(
                200,
                {k: f"{base}/{k}" for k in ("sobjects", "query", "composite", "limits")},
            )
        if parts == ["query"] and method == "GET":
            return PeerReply(200, self.query(request.param("q") or "", version))
        if len(parts) == 2 and parts[0] == "query" and method == "GET":
            return PeerReply(200, self.query_more(parts[1], version))
        if parts == ["composite", "sobjects"]:
            return self.collections(request)
        if len(parts) in (2, 3) and parts[0] == "sobjects":
            return self.sobject(request, parts[1], parts[2] if len(parts) == 3 else None)
        if len(parts) == 4 and parts[:2] == ["sobjects", "User"] and parts[3] == "password":
            return self.set_password(request, parts[2])
        raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")

    def _body(self, request: PeerRequest) -> Any:
        if request.content_type() != "application/json":
            raise SalesforceError(
                415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json"
            )
        try:
            return request.json()
        except ValueError:
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Unexpected character") from None

    def sobject(self, request: PeerRequest, sobject: str, rid: str | None) -> PeerReply:
        if sobject not in ("User", "PermissionSetAssignment", "GroupMember"):
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        method = request.method
        if rid is None and method == "POST":
            body = self._body(request)
            if not isinstance(body, dict):
                raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected an object")
            return PeerReply(201, {"id": self.create(sobject, body), "success": True, "errors": []})
        record = self.objects[sobject].get(rid or "")
        if record is None:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        if method == "GET":
            return PeerReply(200, self._out(sobject, record))
        if method == "PATCH" and sobject == "User":
            self.update_user(record, self._body(request))
            return PeerReply(204)
        if method == "DELETE":
            self.delete(sobject, record["Id"])
            return PeerReply(204)
        raise SalesforceError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")

    def set_password(self, request: PeerRequest, user_id: str) -> PeerReply:
        """``POST sobjects/User/{id}/password`` with ``{"NewPassword": ...}``: 204."""
        if request.method != "POST":
            raise SalesforceError(
                405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed"
            )
        if user_id not in self.objects["User"]:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        body = self._body(request)
        if not isinstance(body, dict) or set(body) != {"NewPassword"}:
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected {NewPassword}")
        password = body["NewPassword"]
        if not isinstance(password, str) or len(password) < 8:
            raise SalesforceError(
                400, "INVALID_NEW_PASSWORD", "Your password must be at least 8 characters long."
            )
        self.passwords.setdefault(user_id, []).append(password)
        return PeerReply(204)

    # -- records
    def _insert(self, sobject: str, fields: dict[str, Any]) -> str:
        rid = new_id(sobject)
        self.objects[sobject][rid] = {"Id": rid, **fields}
        return rid

    def _by(self, sobject: str, field: str, value: str) -> dict[str, Any]:
        return next(r for r in self.objects[sobject].values() if r.get(field) == value)

    def _user_by_name(self, username: str) -> dict[str, Any] | None:
        wanted = username.lower()
        return next(
            (u for u in self.objects["User"].values() if u["Username"].lower() == wanted), None
        )

    def _out(self, sobject: str, record: dict[str, Any]) -> dict[str, Any]:
        url = f"/services/data/v{VERSIONS[-1]}/sobjects/{sobject}/{record['Id']}"
        return {"attributes": {"type": sobject, "url": url}, **record}

    def create(self, sobject: str, fields: dict[str, Any]) -> str:
        if sobject == "User":
            return self.create_user(fields)
        if sobject in MEMBERSHIP_FIELDS:
            return self.create_membership(sobject, fields)
        raise SalesforceError(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")

    def delete(self, sobject: str, rid: str) -> None:
        if sobject not in MEMBERSHIP_FIELDS:
            raise SalesforceError(
                400, "INVALID_TYPE_FOR_OPERATION", f"entity type {sobject} cannot be deleted"
            )
        del self.objects[sobject][rid]

    def create_user(self, fields: dict[str, Any]) -> str:
        self._check_user_fields(fields)
        missing = [f for f in REQUIRED_USER_FIELDS if fields.get(f) in (None, "")]
        if missing:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        self._check_unique(fields["Username"], None)
        active = sum(1 for u in self.objects["User"].values() if u.get("IsActive"))
        if fields.get("IsActive", True) and self.licenses is not None and active >= self.licenses:
            raise SalesforceError(400, "LICENSE_LIMIT_EXCEEDED", "License Limit Exceeded")
        return self._insert("User", {"IsActive": True, **fields})

    def update_user(self, record: dict[str, Any], fields: Any) -> None:
        if not isinstance(fields, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected an object")
        self._check_user_fields(fields)
        cleared = [f for f in REQUIRED_USER_FIELDS if f in fields and fields[f] in (None, "")]
        if cleared:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(cleared)}]",
                cleared,
            )
        if "Username" in fields:
            self._check_unique(fields["Username"], record["Id"])
        for key, value in fields.items():
            if value is None:
                record.pop(key, None)
            else:
                record[key] = value

    def _check_user_fields(self, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if name == "attributes":
                continue
            if name not in self.user_fields:
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type User"
                )
            if value is not None:
                self._check_value(name, value)

    def _check_value(self, name: str, value: Any) -> None:
        kind, rule = self.user_fields[name]
        if kind == "boolean":
            if not isinstance(value, bool):
                raise SalesforceError(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of boolean from VALUE_STRING value {value}",
                )
            return
        if not isinstance(value, str):
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of string from {type(value).__name__} value",
            )
        if kind in ("string", "email") and len(value) > rule:
            raise SalesforceError(
                400,
                "STRING_TOO_LONG",
                f"{name}: data value too large: {value} (max length={rule})",
                [name],
            )
        if kind == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            code = "INVALID_EMAIL_ADDRESS" if name == "Email" else "INVALID_NEW_VALUE"
            raise SalesforceError(400, code, f"{name}: invalid email address: {value}", [name])
        if kind == "picklist" and value not in rule:
            raise SalesforceError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{name}: bad value for restricted picklist field: {value}",
                [name],
            )
        if kind == "reference" and value not in self.objects.get(rule, {}):
            raise SalesforceError(
                400,
                "INVALID_CROSS_REFERENCE_KEY",
                f"{name}: id value of incorrect type: {value}",
                [name],
            )

    def _check_unique(self, username: str, own_id: str | None) -> None:
        other = self._user_by_name(username)
        elsewhere = username.lower() in self.taken_elsewhere
        if elsewhere or (other is not None and other["Id"] != own_id):
            raise SalesforceError(
                400,
                "DUPLICATE_USERNAME",
                "Duplicate Username.<br>The username already exists in this or another "
                "Salesforce organization. Usernames must be unique across all Salesforce "
                "organizations. To resolve, use a different username (it doesn't need to "
                "match the user's email address).",
                ["Username"],
            )

    def create_membership(self, sobject: str, fields: dict[str, Any]) -> str:
        references = MEMBERSHIP_FIELDS[sobject]
        for name in fields:
            if name != "attributes" and name not in references:
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}"
                )
        for name, target in references.items():
            if fields.get(name) not in self.objects[target]:
                raise SalesforceError(
                    400,
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"invalid cross reference id: {fields.get(name)}",
                    [name],
                )
        user_field = list(references)[1]
        if not self.objects["User"][fields[user_field]]["IsActive"]:
            code, message = self.inactive_member_error
            raise SalesforceError(400, code, message)
        values = {k: fields[k] for k in references}
        for existing in self.objects[sobject].values():
            if all(existing[k] == v for k, v in values.items()):
                raise SalesforceError(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {user_field} duplicates value on record with id: "
                    f"{existing['Id']}",
                    [user_field],
                )
        return self._insert(sobject, values)

    # -- sObject Collections
    def collections(self, request: PeerRequest) -> PeerReply:
        if request.method == "POST":
            return self.collection_create(self._body(request))
        if request.method == "DELETE":
            ids = [i for i in (request.param("ids") or "").split(",") if i]
            all_or_none = (request.param("allOrNone") or "false").lower() == "true"
            return self._all_or_none(
                [lambda rid=rid: self._delete_any(rid) for rid in ids], ids, all_or_none
            )
        raise SalesforceError(
            405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed"
        )

    def collection_create(self, body: Any) -> PeerReply:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected {allOrNone, records}")
        records = body["records"]
        if not isinstance(body.get("allOrNone", False), bool):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "allOrNone must be a boolean")
        if len(records) > COLLECTION_LIMIT:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        for record in records:
            sobject = (
                (record.get("attributes") or {}).get("type") if isinstance(record, dict) else None
            )
            if not sobject:
                raise SalesforceError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        actions = [
            lambda r=record: self.create(
                r["attributes"]["type"], {k: v for k, v in r.items() if k != "attributes"}
            )
            for record in records
        ]
        return self._all_or_none(actions, [None] * len(records), body.get("allOrNone", False))

    def _delete_any(self, rid: str) -> str:
        for sobject, records in self.objects.items():
            if rid in records:
                self.delete(sobject, rid)
                return rid
        raise SalesforceError(400, "ENTITY_IS_DELETED", "entity is deleted")

    def _all_or_none(
        self, actions: list[Any], ids: list[str | None], all_or_none: bool
    ) -> PeerReply:
        if len(actions) > COLLECTION_LIMIT:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        snapshot = copy.deepcopy(self.objects) if all_or_none else None
        results: list[dict[str, Any]] = []
        for action, rid in zip(actions, ids, strict=True):
            try:
                results.append({"id": action(), "success": True, "errors": []})
            except SalesforceError as exc:
                results.append({"id": rid, "success": False, "errors": [exc.record()]})
        if snapshot is not None and not all(r["success"] for r in results):
            self.objects = snapshot
            rolled_back = {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the "
                "request was using AllOrNone header",
                "fields": [],
            }
            results = [
                r if not r["success"] else {"id": None, "success": False, "errors": [rolled_back]}
                for r in results
            ]
        return PeerReply(200, results)

    # -- SOQL
    def query(self, soql: str, version: str = VERSIONS[-1]) -> dict[str, Any]:
        m = _QUERY.match(soql)
        if m is None:
            raise SalesforceError(400, "MALFORMED_QUERY", f"unexpected token: {soql[:40]}")
        fields = [f.strip() for f in m.group(1).split(",")]
        sobject = m.group(2)
        if sobject not in self.objects:
            raise SalesforceError(
                400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported."
            )
        conditions = self._conditions(m.group(3) or "")
        for field in [*fields, *(f for f, _ in conditions)]:
            known = {"Id", *self.user_fields} if sobject == "User" else QUERYABLE[sobject]
            if field not in known:
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{field}' on entity '{sobject}'"
                )
        for field, values in conditions:
            bad = [v for v in values if _is_id_field(field) and not _ID.match(v)]
            if bad:
                raise SalesforceError(
                    400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {bad[0]}"
                )
        found = [
            r
            for r in self.objects[sobject].values()
            if all(_matches(field, r.get(field), values) for field, values in conditions)
        ]
        if m.group(4):
            found = found[: int(m.group(4))]
        records = [
            {**{"attributes": self._out(sobject, r)["attributes"]}, **{f: r.get(f) for f in fields}}
            for r in found
        ]
        return self._batch(records, len(records), version)

    def _batch(self, records: list[dict[str, Any]], total: int, version: str) -> dict[str, Any]:
        """The first ``query_batch`` records; a query locator for the rest."""
        reply: dict[str, Any] = {"totalSize": total, "done": True}
        if len(records) > self.query_batch:
            done = total - len(records) + self.query_batch
            locator = f"01g5g{secrets.token_hex(6)}-{done}"
            self.locators[locator] = records[self.query_batch :]
            reply["done"] = False
            reply["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}"
        reply["records"] = records[: self.query_batch]
        return reply

    def query_more(self, locator: str, version: str) -> dict[str, Any]:
        """Query More Results: the next batch of a query locator (used once)."""
        rest = self.locators.pop(locator, None)
        if rest is None:
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        done = int(locator.rsplit("-", 1)[1])
        return self._batch(rest, done + len(rest), version)

    @staticmethod
    def _conditions(where: str) -> list[tuple[str, set[str]]]:
        conditions: list[tuple[str, set[str]]] = []
        position = 0
        while position < len(where):
            m = _CONDITION.match(where, position)
            if m is None:
                raise SalesforceError(
                    400, "MALFORMED_QUERY", f"unexpected token: {where[position:][:40]}"
                )
            field, equal, listed = m.group(1), m.group(2), m.group(3)
            values = (
                {unescape(equal)}
                if equal is not None
                else {unescape(v) for v in re.findall(_STRING, listed or "")}
            )
            conditions.append((field, values))
            position = m.end()
            rest = re.match(r"AND\s+", where[position:], re.IGNORECASE)
            if rest is None and position < len(where):
                raise SalesforceError(
                    400, "MALFORMED_QUERY", f"unexpected token: {where[position:][:40]}"
                )
            if rest is not None:
                position += rest.end()
        return conditions


_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def _is_id_field(field: str) -> bool:
    """Id and the reference fields (``PermissionSetId``, ``AssigneeId``...)."""
    return field.endswith("Id")


def _matches(field: str, value: Any, wanted: set[str]) -> bool:
    """A SOQL equality: ids match by their case-sensitive first 15 characters (an
    18-character id and its 15-character form are the same record); other values
    without regard to case."""
    if _is_id_field(field):
        return value is not None and str(value)[:15] in {v[:15] for v in wanted}
    return str(value if value is not None else "").lower() in {v.lower() for v in wanted}


@pytest.fixture
def salesforce_org() -> Iterator[SalesforceOrg]:
    """A fresh Salesforce org (login host and instance on loopback ports), stopped
    after the test."""
    org = SalesforceOrg()
    org.login.start()
    org.instance.start()
    try:
        yield org
    finally:
        org.login.stop()
        org.instance.stop()
