"""What the Salesforce connector knows of Salesforce: its options (validated from the
identity provider's ``options:``), its OAuth token request, usernames and User
fields, ids and SOQL literals, and how its REST API's error arrays become idprov's
errors. Used by :mod:`idprov.connectors.salesforce`.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.config.urls import http_url
from idprov.connectors.base import (
    Account,
    RemoteConflict,
    RemoteNotFound,
    TargetError,
    Throttled,
)
from idprov.connectors.http import HttpOptions, reply_detail, reply_json, status_error
from idprov.connectors.oauth import JWT_BEARER, check_no_http_auth
from idprov.secrecy import blank

if TYPE_CHECKING:
    import httpx

LOGIN_URL = "https://login.salesforce.com"
SANDBOX_LOGIN_URL = "https://test.salesforce.com"
COLLECTION_LIMIT = 200
"""Records per sObject Collections request (Salesforce refuses more)."""
RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
THROTTLE_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "CONCURRENT_REQUEST_LIMIT_EXCEEDED"})
GONE_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})
KEY_PREFIXES = {"permission_set": "0PS", "group": "00G"}
"""Salesforce ids start with their object's key prefix: PermissionSet 0PS, Group 00G."""
MEMBERSHIP = {
    "0PS": ("PermissionSetAssignment", "PermissionSetId", "AssigneeId"),
    "00G": ("GroupMember", "GroupId", "UserOrGroupId"),
}
"""Key prefix -> (membership sObject, its field for the set or group, for the user)."""
GROUP_OBJECTS = {"0PS": ("PermissionSet", "Name"), "00G": ("Group", "DeveloperName")}
"""Key prefix -> (sObject, the field of its API name)."""
SETUP_HINT = (
    "check the connected app (consumer key and secret or certificate), that the user is "
    "pre-authorized for it (JWT bearer: Manage Connected Apps > OAuth policies; client "
    "credentials: a run-as user), and that base_url is the right login host"
)
WRITTEN_FIELDS = (
    "Username",
    "LastName",
    "Email",
    "Alias",
    "IsActive",
    "ProfileId",
    "TimeZoneSidKey",
    "LocaleSidKey",
    "LanguageLocaleKey",
    "EmailEncodingKey",
)
"""The User fields idprov fills itself (required on create, or derived)."""
FLOW_HINTS = {
    "jwt_bearer": (
        "check client_id (the connected app's consumer key), that private_key is the key "
        "of the certificate uploaded to the connected app, that username is pre-authorized "
        "for it (Manage Connected Apps > Edit Policies: Admin approved users are "
        "pre-authorized, with the user's profile added), and that base_url is the right "
        "login host"
    ),
    "client_credentials": (
        "check client_id and client_secret (the connected app's consumer key and secret), "
        "that the connected app has Enable Client Credentials Flow ticked with a Run As "
        "user, and that base_url is the org's My Domain"
    ),
    "password": (
        "check username, password and security_token: Salesforce takes the password with "
        "the user's security token appended (resetting the password sends a new token, as "
        "does Settings > Reset My Security Token; from a trusted IP range none is needed); "
        "and client_id and client_secret (the connected app's consumer key and secret)"
    ),
}
"""What to check, by OAuth flow, when the token endpoint refuses idprov's sign-in."""
DUPLICATE_USERNAME_FIX = (
    "change options.domain or options.username_pattern of identity provider {idp} to "
    "make its usernames your org's alone "
    "(every user's Salesforce username follows; a username need not be a mailbox: "
    "'{{UN}}@{{domain}}.prod' will do), or give this user another user name, then "
    "`idprov outbox retry --idp {idp}`"
)
CODE_FIXES = {
    "LICENSE_LIMIT_EXCEEDED": (
        "the org has no free license of the kind the profile of new users needs: free one "
        "(deactivate a user who left) or buy more (Setup > Company Information lists the "
        "licenses remaining), or set options.profile to a profile of another license, then "
        "`idprov outbox retry`"
    ),
    "INVALID_CROSS_REFERENCE_KEY": (
        "an id idprov sent names no record of this org (the error's fields say which): "
        "check options.profile_id and the ids under options.roles, then `idprov outbox retry`"
    ),
    "FIELD_INTEGRITY_EXCEPTION": (
        "Salesforce refuses the value of the fields the error names, given the user's other "
        "values (a profile the user's license does not allow, say): check what the identity "
        "provider maps to them (attributes, options.profile), then `idprov outbox retry`"
    ),
    "INSUFFICIENT_ACCESS_OR_READONLY": (
        "the integration user may not do this: give it Manage Users (users and public "
        "groups) and Assign Permission Sets (roles mapped to permission sets), by its profile "
        "or a permission set, then `idprov outbox retry`. If it has them, the user changed "
        "is a System Administrator or above the integration user in the role hierarchy, "
        "which no permission lets it edit: change that user in Setup"
    ),
    "REQUEST_LIMIT_EXCEEDED": (
        "with 'TotalRequests Limit exceeded' the org's API allowance for 24 hours is used "
        "up: retrying or a lower rate_limit does not help, it frees up over the next 24 "
        "hours (Setup > Company Information shows the allowance, Setup > System Overview "
        "its use), or ask Salesforce for a higher limit; otherwise too many long requests "
        "run at once: idprov tries again by itself, and a lower max_concurrency of this "
        "identity provider helps"
    ),
}
"""What to do about a refusal, by Salesforce's documented error code (``StatusCode``)."""
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


def is_salesforce_id(value: str) -> bool:
    """Whether ``value`` is a Salesforce id (15 or 18 letters and digits): SOQL
    refuses anything else where an id goes."""
    return bool(_ID.match(value))


def soql_literal(value: str) -> str:
    """A SOQL string literal: quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def derive_alias(first: str | None, last: str, username: str) -> str:
    """Salesforce's ``Alias`` (at most 8 characters): the first name's initial and the
    last name, else the username's local part; ASCII letters and digits, lower case."""

    def ascii_alnum(text: str) -> str:
        plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        return re.sub(r"[^0-9a-z]", "", plain.lower())

    alias = ascii_alnum((first or "")[:1] + last) or ascii_alnum(username.partition("@")[0])
    return (alias or "user")[:8]


@dataclass(frozen=True, kw_only=True)
class RoleTarget:
    """Where an idprov role goes in Salesforce: a permission set or a public group,
    by id or by API name (``PermissionSet.Name``, ``Group.DeveloperName``)."""

    type: Literal["permission_set", "group"]
    id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.id is None) == (self.name is None):
            raise Invalid("give either id or name (the API name)", "id")
        prefix = KEY_PREFIXES[self.type]
        if self.id is not None and not (_ID.match(self.id) and self.id.startswith(prefix)):
            raise Invalid(f"a {self.type} id is 15 or 18 characters starting {prefix}", "id")


@dataclass(frozen=True, kw_only=True)
class SalesforceOptions(HttpOptions):
    """Options of a Salesforce identity provider. ``base_url`` is the login host
    (production, ``https://test.salesforce.com`` for sandboxes, or the org's My
    Domain); ``username`` and ``password`` are the integration user's."""

    base_url: str = LOGIN_URL
    auth: Literal["none", "basic", "bearer", "header"] = field(default="none", repr=False)
    token: SecretRef | None = field(default=None, repr=False)
    header_name: str = field(default="Authorization", repr=False)
    """``auth``, ``token`` and ``header_name`` are refused or unused here (sign-in is
    OAuth, by ``flow``): ``config show`` leaves them out (``repr=False``)."""
    flow: Literal["jwt_bearer", "client_credentials", "password"] = "jwt_bearer"
    client_id: str
    """The connected app's consumer key."""
    client_secret: SecretRef | None = None
    private_key: SecretRef | None = None
    """PEM private key whose certificate is uploaded to the connected app (JWT bearer)."""
    security_token: SecretRef | None = None
    """Appended to the password (username-password flow) unless the IP is trusted."""
    token_url: str | None = None
    """Default: ``{base_url}/services/oauth2/token``."""
    audience: str | None = None
    """JWT ``aud``; default: the sandbox login URL for sandbox hosts, else production's."""
    instance_url: str | None = None
    """Overrides the instance URL of the token response."""
    api_version: str = "60.0"
    domain: str | None = None
    username_pattern: str = "{UN}@{domain}"
    profile: str | None = None
    """Profile name for new users (e.g. ``Standard User``), looked up once."""
    profile_id: str | None = None
    time_zone: str = "GMT"
    locale: str = "en_US"
    language: str = "en_US"
    email_encoding: str = "UTF-8"
    roles: dict[str, RoleTarget] = field(default_factory=dict)
    """idprov role name -> permission set or public group."""
    bulk: Literal["auto", "never"] = "auto"
    bulk_threshold: int = 10
    send_password: bool = False
    """Set the password given to `user add`/`user passwd` through the REST API's
    password resource (``POST sobjects/User/{id}/password``)."""
    mark_field: str | None = "FederationIdentifier"
    """The User field that carries idprov's mark: the local user id, set when idprov
    creates the user. A look-up after a lost reply adopts only a user whose field holds
    it. No claim may be mapped to it (single sign-on's ``FederationIdentifier``: then
    name a field only idprov writes, such as a custom ``Idprov_Id__c``). Null: no mark
    (then a lost reply needs ``on_conflict: adopt``)."""

    def __post_init__(self) -> None:
        check_no_http_auth(self, "salesforce", "set flow: and its credentials")
        super().__post_init__()
        self._check_flow()
        for key in ("token_url", "audience", "instance_url"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, http_url(value, key))
        if not re.fullmatch(r"\d{2,3}\.\d", self.api_version):
            raise Invalid("a REST API version such as 60.0", "api_version")
        if self.bulk_threshold < 2:
            raise Invalid("must be at least 2", "bulk_threshold")
        self._check_mark_field()
        self._check_new_users()

    def _check_mark_field(self) -> None:
        mark = self.mark_field
        if mark is None:
            return
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", mark):
            raise Invalid("a User field's API name, such as FederationIdentifier", "mark_field")
        if mark.casefold() in {f.casefold() for f in WRITTEN_FIELDS}:
            raise Invalid(
                f"idprov writes {mark} itself: name a field only the mark goes in, such as "
                "FederationIdentifier or a custom Idprov_Id__c",
                "mark_field",
            )

    def _check_new_users(self) -> None:
        if (self.profile is None) == (self.profile_id is None):
            raise Invalid("give profile (a name such as Standard User) or profile_id", "profile")
        if self.profile_id is not None and not _ID.match(self.profile_id):
            raise Invalid("a Salesforce id: 15 or 18 letters and digits", "profile_id")
        names = set(_PLACEHOLDER.findall(self.username_pattern))
        if "UN" not in names or names - {"UN", "domain"}:
            raise Invalid("uses {UN} and may use {domain}, nothing else", "username_pattern")
        if "domain" in names and not self.domain:
            raise Invalid("username_pattern uses {domain}: set domain (e.g. example.com)", "domain")

    def _check_flow(self) -> None:
        needs = {
            "jwt_bearer": ("private_key", "username"),
            "client_credentials": ("client_secret",),
            "password": ("client_secret", "username", "password"),
        }[self.flow]
        for key in needs:
            if getattr(self, key) is None:
                raise Invalid(f"flow: {self.flow} needs {', '.join(needs)}", key)
        host = urlsplit(self.base_url).hostname or ""
        if self.flow == "client_credentials" and host in (
            "login.salesforce.com",
            "test.salesforce.com",
        ):
            raise Invalid(
                "the client credentials flow works only at the org's My Domain: set base_url "
                "to https://MYDOMAIN.my.salesforce.com",
                "base_url",
            )

    @property
    def token_endpoint(self) -> str:
        return self.token_url or self.base_url.rstrip("/") + "/services/oauth2/token"

    @property
    def jwt_audience(self) -> str:
        if self.audience:
            return self.audience
        host = urlsplit(self.base_url).hostname or ""
        sandbox = host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com")
        return SANDBOX_LOGIN_URL if sandbox else LOGIN_URL


def salesforce_username(options: SalesforceOptions, user_name: str) -> str:
    """The Salesforce username: the pattern, with WSO2's rule for names that hold an
    ``@`` already (kept if they end in ``@domain``, else ``@`` becomes ``.``)."""
    domain = options.domain
    if domain and user_name.casefold().endswith("@" + domain.casefold()):
        return user_name.lower()
    local = user_name.replace("@", ".") if domain else user_name
    return options.username_pattern.replace("{UN}", local).replace("{domain}", domain or "").lower()


def user_fields(options: SalesforceOptions, account: Account) -> dict[str, Any]:
    """The User fields idprov keeps in step: mapped ones (a list is joined with
    ';', as multi-select picklists are), ``Username``, ``IsActive``, and the
    required ``LastName`` and ``Email`` from the username when not mapped. Never
    ``mark_field``: idprov writes its mark on create alone (and `idprov idp stamp`),
    so no update clears or rewrites it (a single sign-on ``FederationIdentifier``)."""
    mark = (options.mark_field or "").casefold()
    fields = {
        key: ";".join(map(str, value)) if isinstance(value, list) else value
        for key, value in account.attributes.items()
        if key.casefold() != mark
    }
    name = salesforce_username(options, account.user_name)
    fields["Username"] = name
    fields.setdefault("LastName", name.partition("@")[0])
    fields.setdefault("Email", name)
    fields["IsActive"] = account.active
    return fields


def token_form(options: SalesforceOptions, assertion: str | None) -> dict[str, str]:
    """The token request of the options' OAuth flow (``assertion``: the signed JWT
    of the JWT bearer flow). It holds secrets: never log it."""
    form = {"grant_type": JWT_BEARER if options.flow == "jwt_bearer" else options.flow}
    if options.flow == "jwt_bearer":
        form["assertion"] = assertion or ""
    else:
        form["client_id"] = options.client_id
        form["client_secret"] = _reveal(options.client_secret)
    if options.flow == "password":
        form["username"] = options.username or ""
        form["password"] = _reveal(options.password) + _reveal(options.security_token)
    return form


def jwt_claims(options: SalesforceOptions) -> dict[str, Any]:
    """The claims of the JWT bearer flow's assertion, valid for three minutes."""
    return {
        "iss": options.client_id,
        "sub": options.username,
        "aud": options.jwt_audience,
        "exp": int(time.time()) + 180,
    }


def _reveal(ref: SecretRef | None) -> str:
    return ref.reveal() if ref is not None else ""


def error_code(error: Any) -> str:
    """An error's code: ``errorCode`` in REST replies, ``statusCode`` in collections."""
    if not isinstance(error, dict):
        return ""
    return str(error.get("errorCode") or error.get("statusCode") or "")


def code_fix(codes: Iterable[str]) -> str | None:
    """What to do about the first of ``codes`` that :data:`CODE_FIXES` knows."""
    return next((CODE_FIXES[c] for c in codes if c in CODE_FIXES), None)


def add_fix(error: TargetError, fix: str | None) -> TargetError:
    """``error``, its message ending with ``fix`` (what to do), its hint ``fix``,
    unless there is none or ``error`` has another hint already. Salesforce's and
    Google's refusals, by their documented code (:data:`CODE_FIXES`)."""
    if fix is None or error.hint not in (None, fix):
        return error
    if fix not in error.message:
        error.message = f"{error.message}; {fix}"
        error.args = (error.message,)
    error.hint = fix
    return error


def record_error(reply: Mapping[str, Any], what: str) -> TargetError:
    """The error of one record of a collection reply, its ``errors`` array as sent
    (and what to do, :func:`add_fix`)."""
    errors = reply.get("errors") or []
    listed = [error_code(e) for e in errors]
    codes = set(listed)
    message = f"{what}: {blank(json.dumps(errors, ensure_ascii=False))[:2000]}"  # blanked, then cut
    if "DUPLICATE_USERNAME" in codes:
        return RemoteConflict(message)
    if codes & GONE_CODES:
        return RemoteNotFound(message)
    if codes & THROTTLE_CODES:
        return add_fix(Throttled(message), code_fix(listed))
    return add_fix(TargetError(message, retryable=bool(codes & RETRYABLE_CODES)), code_fix(listed))


def raise_salesforce_error(response: httpx.Response, what: str) -> None:
    """Turn a REST API error into the right TargetError, with Salesforce's error array
    (``[{"message", "errorCode", "fields"}]``) as sent."""
    status = response.status_code
    if status < 400:
        return
    data = reply_json(response)
    listed = [error_code(e) for e in data] if isinstance(data, list) else []
    codes = set(listed)
    error = status_error(
        response,
        f"{what}: HTTP {status}: {reply_detail(response, data)}",
        conflict="DUPLICATE_USERNAME" in codes,
        gone=bool(codes & GONE_CODES),
        throttled=bool(codes & THROTTLE_CODES),
        retryable=bool(codes & RETRYABLE_CODES),
        refused_hint="the token was refused even when new: " + SETUP_HINT
        if status == 401
        else code_fix(listed)
        or "the integration user lacks a permission (Manage Users, API Enabled...)",
    )
    if isinstance(error, RemoteConflict | RemoteNotFound):
        raise error  # the engine's to judge (adopt, re-create)
    raise add_fix(error, code_fix(listed))


def refused(reply: Any, ok: frozenset[str] | set[str]) -> bool:
    """Whether one record of a collection reply failed other than with an ``ok`` code."""
    return (
        isinstance(reply, dict)
        and not reply.get("success")
        and not {error_code(e) for e in reply.get("errors") or []} <= set(ok)
    )


def raise_failed(replies: list[Any], what: str, ok: frozenset[str] | set[str]) -> None:
    """Raise for the records of a collection reply that failed other than with an
    ``ok`` code."""
    failed = [r for r in replies if refused(r, ok)]
    if failed:
        errors = [e for r in failed for e in r.get("errors") or []]
        raise record_error({"errors": errors}, what)
