"""Google Workspace outbound connector: the Admin SDK Directory API (v1).

Google Workspace accounts cannot be provisioned over SCIM, so this connector speaks
the Directory API's own REST resources:

- Users: ``users.insert`` with a random password (Google requires one; people sign in
  through single sign-on or get a reset) and ``changePasswordAtNextLogin`` as
  configured; ``users.patch`` for updates, never touching the password; deprovisioning
  by ``users.delete``, or by ``suspended: true`` when the IdP says ``deprovision:
  disable`` (the account comes back, unsuspended, when the user is in scope again).
  The ledger keeps Google's immutable user id, so a changed primary email follows.
- Roles become groups (``groups.insert``, ``groups.patch``, ``groups.delete``) whose
  email comes from a pattern; members are added (``members.insert``, by email) and
  removed (``members.delete``, by user id) one request each.

Authentication is a service account with domain-wide delegation: a JWT signed with
its key is exchanged at the token URI for a token that acts as the admin named in
``subject`` (see :mod:`idprov.connectors.oauth`). Rate limits (429, and 403 with
reason ``rateLimitExceeded`` or ``userRateLimitExceeded``) and 5xx are retryable;
Google's error JSON goes into the report as Google sent it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.connectors.base import (
    Account,
    CheckReport,
    Connector,
    CredentialsRefused,
    GroupSpec,
    RemoteConflict,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
    Throttled,
)
from idprov.connectors.http import RETRYABLE_STATUS, HttpOptions, json_reply, retry_after
from idprov.connectors.oauth import (
    JWT_BEARER,
    AccessToken,
    TokenCache,
    check_no_http_auth,
    load_private_key,
    read_key_text,
    request_token,
    send_authorized,
    sign_assertion,
)
from idprov.errors import SecretError

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


@dataclass(frozen=True, kw_only=True)
class GoogleOptions(HttpOptions):
    """Options of a Google Workspace identity provider. ``base_url`` is the API root."""

    base_url: str = API_ROOT
    auth: Literal["none", "basic", "bearer", "header"] = "none"
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
        self._check_identity()
        if self.token_uri is not None and not self.token_uri.startswith(("https://", "http://")):
            raise Invalid("must be an http:// or https:// URL", "token_uri")
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


class GoogleConnector(Connector):
    """Provision to Google Workspace through the Admin SDK Directory API."""

    name = "google"
    description = "Google Workspace (Admin SDK Directory API): users, groups, members"
    Options = GoogleOptions
    options: GoogleOptions
    client: httpx.Client
    default_attributes: ClassVar[Mapping[str, str]] = {
        "name.givenName": "{given_name}",
        "name.familyName": "{family_name}",
        'phones[type eq "work"].value': "{phone_number}",
        'phones[type eq "mobile"].value': "{mobile}",
        'organizations[type eq "work"].title': "{title}",
        'organizations[type eq "work"].department': "{department}",
        'organizations[type eq "work"].name': "{organization}",
        'organizations[type eq "work"].costCenter': "{cost_center}",
        'externalIds[type eq "organization"].value': "{employee_number}",
        'addresses[type eq "work"].streetAddress': "{street_address}",
        'addresses[type eq "work"].locality': "{locality}",
        'addresses[type eq "work"].region': "{region}",
        'addresses[type eq "work"].postalCode': "{postal_code}",
        'addresses[type eq "work"].country': "{country}",
    }
    create_only: ClassVar[frozenset[str]] = frozenset(
        {"password", "hashFunction", "changePasswordAtNextLogin"}
    )
    """Fields sent when an account is created, never on update."""

    def __init__(self, idp: Any, options: Any, client: Any) -> None:
        super().__init__(idp, options, client)
        self.tokens = TokenCache(self._fetch_token)
        self._account: ServiceAccount | None = None
        self._account_lock = threading.Lock()
        self._emails: dict[str, str] = {}
        """Google user id -> primary email, as last seen (members are added by email)."""
        self._members_done: dict[str, set[tuple[str, str]]] = {}
        """Group id -> membership changes done by a change that failed in part."""
        self._members_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # ---- authentication
    def service_account(self) -> ServiceAccount:
        """The key material, read from its secret reference once."""
        with self._account_lock:
            if self._account is None:
                self._account = self._read_service_account()
            return self._account

    def _read_service_account(self) -> ServiceAccount:
        ref = self.options.credentials
        assert ref is not None  # checked by the options
        text = read_key_text(ref)
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                raise SecretError(
                    f"credentials {ref} is not valid JSON",
                    hint="give the JSON key file exactly as downloaded from the Google Cloud "
                    "console (IAM > Service accounts > Keys)",
                ) from None
            if not isinstance(data, dict) or data.get("type") != "service_account":
                raise SecretError(
                    f"credentials {ref} is not a service account key (no type: service_account)",
                    hint="create a key of a service account, not an OAuth client",
                )
            pem, email = str(data.get("private_key", "")), data.get("client_email")
            key_id, key_uri = data.get("private_key_id"), data.get("token_uri")
        else:
            pem, email, key_id, key_uri = text, None, None, None
        client_email = self.options.client_email or email
        if not client_email:
            raise SecretError(
                f"credentials {ref} holds a bare private key: the service account's email "
                "is unknown",
                hint="set client_email: in the identity provider's options, or use the JSON key",
            )
        key = load_private_key(pem, f"credentials {ref}")
        token_uri = self.options.token_uri or key_uri or TOKEN_URI
        return ServiceAccount(str(client_email), key, key_id, str(token_uri))

    def _fetch_token(self) -> AccessToken:
        account = self.service_account()
        now = int(time.time())
        claims = {
            "iss": account.client_email,
            "sub": self.options.subject,
            "scope": " ".join(self.options.scopes),
            "aud": account.token_uri,
            "iat": now,
            "exp": now + 3600,
        }
        assertion = sign_assertion(account.key, claims, account.key_id)
        return request_token(
            self.client,
            account.token_uri,
            {"grant_type": JWT_BEARER, "assertion": assertion},
            f"get a Google access token for {self.options.subject}",
            SETUP_HINT,
        )

    # ---- HTTP
    def _url(self, path: str) -> str:
        return self.options.base_url.rstrip("/") + API_PATH + path

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body, ensure_ascii=False).encode()
        response = send_authorized(
            self.client,
            self.tokens,
            method,
            self._url(path),
            what=what,
            headers=headers,
            content=content,
            params=params,
        )
        raise_google_error(response, what)
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        data: dict[str, Any] = json_reply(response, what)
        return data

    def _created_id(self, response: httpx.Response, what: str) -> str:
        remote_id = self._json(response, what).get("id")
        if not remote_id:
            raise TargetError(
                f"{what}: created, but the reply holds no id", retryable=True, ambiguous=True
            )
        return str(remote_id)

    # ---- checks
    def check(self) -> CheckReport:
        report = CheckReport(
            capabilities={
                "customer": self.options.customer,
                "domain": self.options.email_domain,
                "subject": self.options.subject,
                "scopes": list(self.options.scopes),
            }
        )
        try:
            self._request(
                "GET",
                "/users",
                "list users",
                params={"customer": self.options.customer, "maxResults": "1"},
            )
            report.reachable = report.authenticated = True
        except TargetError as exc:
            report.reachable = exc.status is not None
            report.messages.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
        return report

    # ---- users
    def primary_email(self, user_name: str) -> str:
        return with_domain(user_name, self.options.primary_email, self.options.email_domain)

    def user_body(self, account: Account, *, create: bool) -> dict[str, Any]:
        """The Directory API user resource for ``account``. A missing given or family
        name (both required) is the user name's local part, as WSO2 does. The
        ``externalIds`` list always holds idprov's mark (the local id, custom type
        ``idprov``): a look-up after a lost reply proves the account idprov's."""
        body: dict[str, Any] = {}
        for path, value in account.attributes.items():
            if create or path.split(".", 1)[0] not in self.create_only:
                set_path(body, path, ", ".join(value) if isinstance(value, list) else value)
        email = self.primary_email(account.user_name)
        body["primaryEmail"] = email
        name = body.get("name")
        if not isinstance(name, dict):
            name = body["name"] = {}
        local = email.partition("@")[0]
        name.setdefault("givenName", local)
        name.setdefault("familyName", local)
        body.setdefault("externalIds", []).append(
            {"type": "custom", "customType": MARK_TYPE, "value": account.local_id}
        )
        body["suspended"] = not account.active
        if create:
            given = account.password if self.options.send_password else None
            body.setdefault("password", given or secrets.token_urlsafe(24))
            body.setdefault("changePasswordAtNextLogin", self.options.change_password_at_next_login)
            if self.options.org_unit_path:
                body.setdefault("orgUnitPath", self.options.org_unit_path)
        return body

    def create_user(self, account: Account) -> str:
        body = self.user_body(account, create=True)
        what = f"create user {body['primaryEmail']}"
        response = self._request("POST", "/users", what, body=body)
        remote_id = self._created_id(response, what)
        self._emails[remote_id] = body["primaryEmail"]
        return remote_id

    def find_user(self, user_name: str) -> str | None:
        found = self._user_by_email(self.primary_email(user_name))
        return None if found is None else str(found["id"])

    def lookup_user(self, account: Account) -> RemoteMatch | None:
        """The account of ``account``'s primary email; idprov's when its ``externalIds``
        hold idprov's mark with this very local id."""
        found = self._user_by_email(self.primary_email(account.user_name))
        if found is None:
            return None
        mark = {"type": "custom", "customType": MARK_TYPE, "value": account.local_id}
        return RemoteMatch(str(found["id"]), ours=mark in (found.get("externalIds") or []))

    def _user_by_email(self, email: str) -> dict[str, Any] | None:
        what = f"look up user {email}"
        try:
            response = self._request(
                "GET",
                f"/users/{quote(email)}",
                what,
                params={"fields": "id,primaryEmail,externalIds"},
            )
        except RemoteNotFound:
            return None
        found = self._json(response, what)
        if not found.get("id"):
            return None
        self._emails[str(found["id"])] = email
        return found

    def read_user(self, remote_id: str) -> dict[str, Any] | None:
        what = f"read user {remote_id}"
        try:
            return self._json(self._request("GET", f"/users/{quote(remote_id)}", what), what)
        except RemoteNotFound:
            return None

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        """``users.patch`` with the fields whose value changed since ``previous`` (never
        the password, never ``suspended``: an account suspended by an administrator
        stays suspended). Fields mapped before and not now are cleared: lists with
        ``[]``, others with null. Without ``previous`` (re-enabling what idprov
        suspended, adopting) every field is sent, ``suspended: false`` included."""
        body = self.user_body(account, create=False)
        if previous is not None:
            old = self.user_body(
                Account(account.local_id, account.user_name, previous), create=False
            )
            new = body  # primaryEmail always: the user name may have changed
            body = {
                k: v
                for k, v in new.items()
                if k == "primaryEmail" or (old.get(k) != v and k != "suspended")
            }
            for key in old.keys() - new.keys():
                body[key] = [] if isinstance(old[key], list) else None
        email = self.primary_email(account.user_name)
        if account.password is not None and self.options.send_password:
            body["password"] = account.password  # `user passwd`: sent once, never kept
        if body:
            self._request("PATCH", f"/users/{quote(remote_id)}", f"update user {email}", body=body)
        self._emails[remote_id] = email

    def disable_user(self, remote_id: str, account: Account) -> None:
        """Suspend the account. One that is gone cannot sign in either: not an error."""
        try:
            self._request(
                "PATCH",
                f"/users/{quote(remote_id)}",
                f"suspend user {self.primary_email(account.user_name)}",
                body={"suspended": True},
            )
        except RemoteNotFound:
            pass

    def delete_user(self, remote_id: str) -> None:
        try:
            self._request("DELETE", f"/users/{quote(remote_id)}", f"delete user {remote_id}")
        except RemoteNotFound:
            pass  # already gone: what we wanted
        self._emails.pop(remote_id, None)

    # ---- groups
    def group_email(self, display_name: str) -> str:
        return (
            self.options.group_email.replace("{name}", group_local_part(display_name))
            .replace("{domain}", self.options.email_domain)
            .lower()
        )

    def create_group(self, group: GroupSpec) -> str:
        email = self.group_email(group.display_name)
        what = f"create group {email}"
        body = {"email": email, "name": group.display_name, "description": group_mark(group)}
        remote_id = self._created_id(self._request("POST", "/groups", what, body=body), what)
        self.change_members(remote_id, group.member_ids, [])
        return remote_id

    def find_group(self, display_name: str) -> str | None:
        found = self._group_by_email(self.group_email(display_name))
        return None if found is None else str(found["id"])

    def lookup_group(self, group: GroupSpec) -> RemoteMatch | None:
        """The group of the role's email; idprov's when its description is the mark
        idprov gave it (:func:`group_mark`)."""
        found = self._group_by_email(self.group_email(group.display_name))
        if found is None:
            return None
        return RemoteMatch(str(found["id"]), ours=found.get("description") == group_mark(group))

    def _group_by_email(self, email: str) -> dict[str, Any] | None:
        what = f"look up group {email}"
        try:
            found = self._json(self._request("GET", f"/groups/{quote(email)}", what), what)
        except RemoteNotFound:
            return None
        return found if found.get("id") else None

    def rename_group(self, remote_id: str, display_name: str) -> None:
        """Set the group's name and, by the pattern, its email (Google keeps the old
        address as an alias, so mail to it still arrives)."""
        email = self.group_email(display_name)
        self._request(
            "PATCH",
            f"/groups/{quote(remote_id)}",
            f"rename group {remote_id} to {display_name}",
            body={"name": display_name, "email": email},
        )

    def delete_group(self, remote_id: str) -> None:
        try:
            self._request("DELETE", f"/groups/{quote(remote_id)}", f"delete group {remote_id}")
        except RemoteNotFound:
            pass

    def change_members(self, remote_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        """``members.insert`` per added user, ``members.delete`` per removed one, up to
        ``max_concurrency`` at once. "Already a member" and "not a member" are done.
        When some fail, the ones done are remembered and the error is ``partial``: the
        engine's repeat sends only the rest."""
        jobs = [("add", u) for u in add] + [("remove", u) for u in remove]
        with self._members_lock:
            done = set(self._members_done.get(remote_id, set()))
        todo = [job for job in jobs if job not in done]
        results = list(self._member_pool().map(lambda job: self._member_job(remote_id, job), todo))
        errors = [e for e in results if e is not None]
        with self._members_lock:
            if not errors:
                self._members_done.pop(remote_id, None)
                return
            kept = self._members_done.setdefault(remote_id, set())
            kept.update(job for job, e in zip(todo, results, strict=True) if e is None)
        raise member_errors(errors, len(todo))

    def _member_pool(self) -> ThreadPoolExecutor:
        with self._members_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.idp.max_concurrency, thread_name_prefix=f"idprov-{self.idp.name}-members"
                )
            return self._pool

    def _member_job(self, remote_id: str, job: tuple[str, str]) -> TargetError | None:
        """One membership change; its error, or None when it is done."""
        verb, user_id = job
        group = quote(remote_id)
        try:
            if verb == "add":
                email = self._member_email(user_id)
                self._request(
                    "POST",
                    f"/groups/{group}/members",
                    f"add {email} to group {remote_id}",
                    body={"email": email, "role": "MEMBER"},
                )
            else:
                self._request(
                    "DELETE",
                    f"/groups/{group}/members/{quote(user_id)}",
                    f"remove user {user_id} from group {remote_id}",
                )
        except RemoteConflict:
            return None  # already a member
        except RemoteNotFound as exc:
            if "groupKey" in exc.message:
                return exc  # the group is gone: the engine re-creates it
            if verb == "remove":
                return None  # not a member (or no such user): nothing to remove
            return exc
        except TargetError as exc:
            return exc
        return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _member_email(self, user_id: str) -> str:
        """The user's primary email (members.insert takes an email, not an id)."""
        if user_id in self._emails:
            return self._emails[user_id]
        what = f"read user {user_id} (to add it to a group)"
        response = self._request(
            "GET", f"/users/{quote(user_id)}", what, params={"fields": "id,primaryEmail"}
        )
        email = self._json(response, what).get("primaryEmail")
        if not email:
            raise TargetError(f"{what}: the reply holds no primaryEmail", retryable=True)
        self._emails[user_id] = str(email)
        return str(email)


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
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(data, dict):
        detail = json.dumps(data, ensure_ascii=False)[:2000]
    else:
        detail = response.text.strip()[:300] or "(empty reply)"
    reasons = set()
    if isinstance(error, dict):
        reasons = {e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)}
    message = f"{what}: HTTP {status}: {detail}"
    if status == 409 or "duplicate" in reasons:
        raise RemoteConflict(message, status=status)
    if status == 404:
        raise RemoteNotFound(message, status=status)
    if status == 429 or (status == 403 and reasons & RATE_LIMIT_REASONS):
        raise Throttled(message, status=status, retry_after=retry_after(response))
    if status in (401, 403):
        raise CredentialsRefused(message, status=status, hint=SETUP_HINT)
    raise TargetError(
        message,
        status=status,
        retryable=status in RETRYABLE_STATUS,
        retry_after=retry_after(response),
        ambiguous=status >= 500,
    )
