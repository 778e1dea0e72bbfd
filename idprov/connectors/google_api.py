"""What the Google Workspace connector knows of the Directory API: its options
(validated from the identity provider's ``options:``), e-mail patterns, resource paths
such as ``name.givenName``, idprov's marks, and how Google's error JSON becomes idprov's
errors. Used by :mod:`idprov.connectors.google`.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.config.urls import http_url
from idprov.connectors.base import (
    CredentialsRefused,
    GroupSpec,
    RemoteNotFound,
    TargetError,
    Throttled,
)
from idprov.connectors.http import HttpOptions, reply_detail, reply_json, status_error
from idprov.connectors.oauth import check_no_http_auth

if TYPE_CHECKING:
    import httpx

API_ROOT = "https://admin.googleapis.com"
API_PATH = "/admin/directory/v1"
TOKEN_URI = "https://oauth2.googleapis.com/token"
SCOPES = (
    "https://www.googleapis.com/auth/admin.directory.user",
    "https://www.googleapis.com/auth/admin.directory.group",
)
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
SETUP_HINT = (
    "check the service account key, that its client ID has domain-wide delegation for "
    "the scopes in the Google Admin console (Security > API controls), and that "
    "`subject` is an administrator of the domain"
)
MARK_TYPE = "idprov"
"""``customType`` of the ``externalIds`` item holding the local id: idprov's mark."""
_VALUE_PATH = re.compile(r'^(\w+)\[(\w+) eq "([^"]*)"\]\.(\w+)$')
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


def check_pattern(pattern: str, required: str, allowed: set[str], key: str) -> None:
    """Raise Invalid unless ``pattern`` uses ``{required}`` and only ``allowed`` names."""
    names = set(_PLACEHOLDER.findall(pattern))
    unknown = names - allowed
    if unknown:
        known = ", ".join(f"{{{n}}}" for n in sorted(allowed))
        raise Invalid(f"unknown placeholder {{{sorted(unknown)[0]}}} (known: {known})", key)
    if required not in names:
        raise Invalid(f"must contain {{{required}}}", key)


def with_domain(user_name: str, pattern: str, domain: str | None) -> str:
    """``user_name`` made into an email by ``pattern`` (``{UN}``, ``{domain}``), with
    WSO2's rule: a name that already ends in ``@domain`` is kept as it is; in another
    one, ``@`` becomes ``.`` (``ann@partner.org`` -> ``ann.partner.org@example.com``)."""
    if domain and user_name.casefold().endswith("@" + domain.casefold()):
        return user_name.lower()
    local = user_name.replace("@", ".") if domain else user_name
    return pattern.replace("{UN}", local).replace("{domain}", domain or "").lower()


def group_local_part(name: str) -> str:
    """A role name as an email local part: lower case, runs of other characters as '-'."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "group"


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in a Directory API resource: ``name.givenName`` (nested objects) or
    ``phones[type eq "work"].value`` (the item of that type in a list of objects)."""
    if m := _VALUE_PATH.match(path):
        attr, key, match, sub = m.groups()
        items = body.get(attr)
        if not isinstance(items, list):
            items = body[attr] = []
        for item in items:
            if item.get(key) == match:
                item[sub] = value
                return
        items.append({key: match, sub: value})
        return
    head, dot, rest = path.partition(".")
    if dot:
        inner = body.get(head)
        if not isinstance(inner, dict):
            inner = body[head] = {}
        set_path(inner, rest, value)
    else:
        body[head] = value


def get_path(body: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in a Directory API resource, read as :func:`set_path`
    writes it (``name.familyName``, ``phones[type eq "work"].value``); None if absent."""
    if m := _VALUE_PATH.match(path):
        attr, key, match, sub = m.groups()
        items = body.get(attr)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get(key) == match:
                return item.get(sub)
        return None
    head, dot, rest = path.partition(".")
    value = body.get(head)
    if dot:
        return get_path(value, rest) if isinstance(value, dict) else None
    return value


def item_kind(item: Mapping[str, Any]) -> Hashable:
    """What makes an item of a user's list (``phones``, ``organizations``,
    ``externalIds``...) another's or idprov's: its ``type``, and for ``custom`` its
    ``customType`` (idprov's mark is custom type ``idprov``; an administrator's custom
    type ``badge`` is not idprov's)."""
    kind = str(item.get("type")).lower()
    return (kind, item.get("customType") if kind == "custom" else None)


@dataclass(frozen=True, kw_only=True)
class GoogleOptions(HttpOptions):
    """Options of a Google Workspace identity provider. ``base_url`` is the API host's
    root (``https://admin.googleapis.com``, no path: idprov adds ``/admin/directory/v1``)."""

    base_url: str = API_ROOT
    auth: Literal["none", "basic", "bearer", "header"] = field(default="none", repr=False)
    token: SecretRef | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: SecretRef | None = field(default=None, repr=False)
    header_name: str = field(default="Authorization", repr=False)
    """HTTP authentication keys, refused or unused here (sign-in is the service
    account's): ``config show`` leaves them out (``repr=False``)."""
    credentials: SecretRef | None = None
    """Required: the service account's JSON key (as Google issues it), or its private
    key as PEM (then ``client_email`` is needed too)."""
    subject: str
    """The administrator the service account acts as (domain-wide delegation)."""
    client_email: str | None = None
    """The service account's email; default: the JSON key's ``client_email``."""
    domain: str | None = None
    """The Workspace domain of new accounts and groups; default: the subject's."""
    customer: str = "my_customer"
    token_uri: str | None = None
    """Default: the JSON key's ``token_uri``, else Google's."""
    scopes: list[str] = field(default_factory=lambda: list(SCOPES))
    primary_email: str = "{UN}@{domain}"
    group_email: str = "{name}@{domain}"
    org_unit_path: str | None = None
    """Where new accounts are created (e.g. ``/Staff``); default: the root unit."""
    change_password_at_next_login: bool = False
    send_password: bool = False
    """Send the password given to `user add`/`user passwd` (else new accounts get a
    random one, and people sign in through single sign-on or a reset)."""

    def __post_init__(self) -> None:
        check_no_http_auth(self, "google", "credentials: the service account key")
        super().__post_init__()
        if urlsplit(self.base_url).path.strip("/"):
            raise Invalid(
                f"must be the API host's root, such as {API_ROOT}: idprov adds "
                f"{API_PATH} itself (remove the path from base_url)",
                "base_url",
            )
        self._check_identity()
        if self.token_uri is not None:
            object.__setattr__(self, "token_uri", http_url(self.token_uri, "token_uri"))
        if not self.scopes:
            raise Invalid("name at least the admin.directory.user scope", "scopes")
        if not self.customer:
            raise Invalid("must not be empty (my_customer: the admin's own account)", "customer")
        check_pattern(self.primary_email, "UN", {"UN", "domain"}, "primary_email")
        check_pattern(self.group_email, "name", {"name", "domain"}, "group_email")

    def _check_identity(self) -> None:
        if self.credentials is None:
            raise Invalid(
                "required: a secret reference to the service account's JSON key, such as "
                "file:/etc/idprov/google-key.json or env:GOOGLE_KEY",
                "credentials",
            )
        for key in ("username", "password"):
            if getattr(self, key) is not None:
                raise Invalid("not used by the google connector (it uses `credentials`)", key)
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", self.subject):
            raise Invalid("must be the email of an administrator of the domain", "subject")
        if self.domain is not None and not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]+", self.domain):
            raise Invalid("must be a domain name such as example.com", "domain")

    @property
    def email_domain(self) -> str:
        return self.domain or self.subject.rpartition("@")[2]


@dataclass(frozen=True)
class ServiceAccount:
    """What signing needs from the key: who signs, with which key, for which endpoint."""

    client_email: str
    key: Any = field(repr=False)
    key_id: str | None
    token_uri: str


def member_errors(errors: Sequence[TargetError], attempted: int) -> TargetError:
    """One error for the membership changes that failed: the group's absence, else
    throttling, else refused credentials, else the first, with how many failed."""
    gone = [e for e in errors if isinstance(e, RemoteNotFound) and "groupKey" in e.message]
    telling = [e for e in errors if isinstance(e, Throttled | CredentialsRefused)]
    chosen: TargetError = (gone or telling or list(errors))[0]
    message = f"{chosen.message} ({len(errors)} of {attempted} membership changes failed)"
    return type(chosen)(
        message,
        status=chosen.status,
        retryable=all(e.retryable for e in errors),
        retry_after=chosen.retry_after,
        hint=chosen.hint,
        partial=len(errors) < attempted,
    )


def group_mark(group: GroupSpec) -> str:
    """The description idprov gives a group it creates: its mark (with the role's id)."""
    return f"Managed by idprov (role {group.local_id})"


def raise_google_error(response: httpx.Response, what: str) -> None:
    """Turn a Directory API error into the right TargetError, with Google's error JSON
    (``error.code``, ``error.message``, ``error.errors[].reason``) as sent."""
    status = response.status_code
    if status < 400:
        return
    data = reply_json(response)
    error = data.get("error") if isinstance(data, dict) else None
    reasons = set()
    if isinstance(error, dict):
        reasons = {e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)}
    raise status_error(
        response,
        f"{what}: HTTP {status}: {reply_detail(response, data)}",
        conflict="duplicate" in reasons,
        gone=status == 404 and isinstance(error, dict),  # Google's own error, no proxy's
        throttled=status == 403 and bool(reasons & RATE_LIMIT_REASONS),
        refused_hint=SETUP_HINT,
    )
