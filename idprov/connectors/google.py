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
import secrets
import threading
import time
from collections.abc import Container, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from idprov.connectors.base import (
    Account,
    CheckReport,
    Connector,
    GroupSpec,
    MembersDone,
    RemoteConflict,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
)
from idprov.connectors.changes import changes, with_other_items
from idprov.connectors.google_api import (
    API_PATH,
    MARK_TYPE,
    SETUP_HINT,
    TOKEN_URI,
    GoogleOptions,
    ServiceAccount,
    get_path,
    group_local_part,
    group_mark,
    item_kind,
    member_errors,
    raise_google_error,
    set_path,
    with_domain,
)
from idprov.connectors.http import json_payload, json_reply, reply_json
from idprov.connectors.oauth import (
    JWT_BEARER,
    AccessToken,
    TokenCache,
    load_private_key,
    read_key_text,
    request_token,
    send_authorized,
    sign_assertion,
    with_hint,
)
from idprov.connectors.salesforce_api import add_fix
from idprov.errors import SecretError
from idprov.secrecy import hold

if TYPE_CHECKING:
    import httpx

    from idprov.connectors.http_client import HttpClient

REASON_FIXES = {
    "invalid": (
        "Google refused a value idprov sent (the message names it: a name, the password, "
        "the org unit...): check what the identity provider maps there (attributes, "
        "options.org_unit_path), then `idprov outbox retry`"
    ),
    "notFound": (
        "Google knows no such domain or org unit: check options.domain (a domain of this "
        "Google Workspace account: Admin console > Account > Domains) and "
        "options.org_unit_path, then `idprov outbox retry`"
    ),
    "accessNotConfigured": (
        "enable the Admin SDK API in the Google Cloud project of the service account "
        "(APIs & Services > Library), then `idprov outbox retry`"
    ),
    "rateLimitExceeded": (
        "the Directory API's quota is used up for now: idprov tries again by itself; if it "
        "lasts, lower rate_limit or max_concurrency of this identity provider, or ask for a "
        "higher quota (Google Cloud console > APIs & Services > Admin SDK API > Quotas)"
    ),
}
"""What to do about a refusal, by the Directory API's documented error ``reason``
(``duplicate``, and a 404 ``notFound``, are the engine's: it adopts or re-creates)."""
REASON_FIXES["userRateLimitExceeded"] = REASON_FIXES["rateLimitExceeded"]


def _value(value: Any) -> Any:
    """A value as :meth:`GoogleConnector.drift` compares it: an empty one is none."""
    return None if value in ("", [], {}) else value


def reason_fix(response: httpx.Response) -> str | None:
    """What to do about the first reason of Google's error JSON that
    :data:`REASON_FIXES` knows."""
    data = reply_json(response)
    error = data.get("error") if isinstance(data, dict) else None
    errors = error.get("errors") if isinstance(error, dict) else None
    reasons = [e.get("reason") for e in errors or [] if isinstance(e, dict)]
    return next((REASON_FIXES[r] for r in reasons if r in REASON_FIXES), None)


__all__ = [
    "GoogleConnector",
    "GoogleOptions",
    "raise_google_error",
    "set_path",
    "with_domain",
]


class GoogleConnector(Connector):
    """Provision to Google Workspace through the Admin SDK Directory API."""

    name = "google"
    description = "Google Workspace (Admin SDK Directory API): users, groups, members"
    Options = GoogleOptions
    options: GoogleOptions
    client: HttpClient
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
        headers, content = json_payload(body)
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
        try:
            raise_google_error(response, what)
        except (RemoteConflict, RemoteNotFound):
            raise  # the engine's to judge (adopt, re-create)
        except TargetError as exc:
            fix = reason_fix(response)
            if fix is not None and exc.hint == SETUP_HINT:
                exc.hint = None  # the reason says more than the generic 403 advice
            raise add_fix(exc, fix) from None
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
            report.messages.append(with_hint(exc))
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
            if "password" not in body:
                given = account.password if self.options.send_password else None
                if not given:  # a random one nobody knows, blanked in errors all the same
                    given = secrets.token_urlsafe(24)
                    hold(account, given)  # while the account is pushed
                body["password"] = given
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

    def drift(self, remote: dict[str, Any], account: Account) -> list[str]:
        """The paths idprov maps (and the names it derives) whose value at Google is not
        what it sent (``name.familyName``...), and ``active`` when the account is
        suspended there (by an administrator) while idprov has it active. The primary
        email is left out: an administrator's rename is followed by the Google id. A
        mapped path idprov holds no value in (:meth:`~Connector.unset`) is drift when
        Google holds one there."""
        expected = self.user_body(account, create=False)
        mapped = [p for p in account.attributes if p.split(".", 1)[0] not in self.create_only]
        unset = [p for p in self.unset(account) if p.split(".", 1)[0] not in self.create_only]
        paths = dict.fromkeys(["name.givenName", "name.familyName", *mapped, *unset])
        out = [p for p in paths if _value(get_path(remote, p)) != _value(get_path(expected, p))]
        if bool(remote.get("suspended")) == account.active:
            out.append("active")
        return out

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        """``users.patch`` with what changed since ``previous`` (:meth:`_change_user`).
        Without ``previous`` (re-enabling what idprov suspended, adopting) every field
        is sent; ``suspended: false`` only to re-enable (``account.enable``)."""
        old = None
        if previous is not None:
            old = self.user_body(
                Account(account.local_id, account.user_name, previous), create=False
            )
        what = f"update user {self.primary_email(account.user_name)}"
        self._change_user(remote_id, old, account, what)

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """``users.patch`` with the new ``primaryEmail`` (made from the user name) and
        what else changed; Google keeps the old address as an alias."""
        old = self.user_body(
            Account(account.local_id, previous_user_name, previous or {}), create=False
        )
        new_email = self.primary_email(account.user_name)
        what = f"rename user {self.primary_email(previous_user_name)} to {new_email}"
        self._change_user(remote_id, old, account, what)

    def _change_user(
        self, remote_id: str, old: Mapping[str, Any] | None, account: Account, what: str
    ) -> None:
        """Send the fields whose value changed from ``old`` (the body last sent; None:
        every field) to ``account``'s, never the password unless given in this command,
        and ``suspended`` only to enable an account idprov suspended (``account.enable``):
        an account an administrator suspended or renamed stays so. Fields mapped before
        and not now are cleared (null). Google's ``users.patch`` replaces a list whole,
        so when one changes the user is read first and sent with the items of kinds
        idprov neither sends nor sent (an administrator's school organization beside
        idprov's work one)."""
        new = self.user_body(account, create=False)
        body, removed = changes(old, new)
        body.pop("suspended", None)
        if account.enable:
            body["suspended"] = False
        for path in removed:
            head, _, sub = path.partition(".")
            if sub:
                body.setdefault(head, {})[sub] = None
            else:
                body[head] = [] if isinstance((old or {}).get(head), list) else None
        lists = [key for key, value in body.items() if isinstance(value, list)]
        if lists:
            current = self._current(remote_id, what)
            for key in lists:
                have = current.get(key)
                before = (old or {}).get(key)
                body[key] = with_other_items(new.get(key) or [], have or [], before, item_kind)
        if account.password is not None and self.options.send_password:
            body["password"] = account.password  # `user passwd`: sent once, never kept
        if body:
            self._request("PATCH", f"/users/{quote(remote_id)}", what, body=body)
        if "primaryEmail" in body:
            self._emails[remote_id] = body["primaryEmail"]

    def _current(self, remote_id: str, what: str) -> dict[str, Any]:
        """The user as Google holds it; RemoteNotFound (the engine re-creates it)."""
        current = self.read_user(remote_id)
        if current is None:
            raise RemoteNotFound(f"{what}: user {remote_id} is gone", status=404)
        return current

    def disable_user(self, remote_id: str, account: Account) -> bool | None:
        """Suspend the account, read first: one suspended already (by an administrator)
        is left alone, and False says so (idprov never unsuspends it). One that is gone
        cannot sign in either: not an error."""
        what = f"suspend user {self.primary_email(account.user_name)}"
        user = quote(remote_id)
        try:
            response = self._request("GET", f"/users/{user}", what, params={"fields": "suspended"})
            if self._json(response, what).get("suspended") is True:
                return False
            self._request("PATCH", f"/users/{user}", what, body={"suspended": True})
        except RemoteNotFound:
            return None
        return True

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

    def read_group(self, remote_id: str) -> tuple[str, Container[str]] | None:
        """The group's name and the ids of its user members; None if it is gone."""
        what = f"read group {remote_id}"
        try:
            group = self._json(self._request("GET", f"/groups/{quote(remote_id)}", what), what)
            return str(group.get("name", "")), self._user_members(remote_id, what)
        except RemoteNotFound:
            return None

    def _user_members(self, remote_id: str, what: str) -> set[str]:
        """The ids of the group's members of type ``USER`` (``members.list``, by pages
        of 200). Groups and the whole customer are left out: no account of idprov's."""
        members: set[str] = set()
        page: dict[str, Any] = {}
        while True:
            params = {"maxResults": "200"}
            if page.get("nextPageToken"):
                params["pageToken"] = str(page["nextPageToken"])
            path = f"/groups/{quote(remote_id)}/members"
            page = self._json(self._request("GET", path, what, params=params), what)
            members.update(
                str(m["id"])
                for m in page.get("members") or []
                if isinstance(m, dict) and m.get("type") == "USER" and m.get("id")
            )
            if not page.get("nextPageToken"):
                return members

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
        When some fail, the error is ``partial`` and its ``members_done`` names the ones
        done: the engine records them, and its repeat sends only the rest."""
        todo = [("add", u) for u in add] + [("remove", u) for u in remove]
        results = list(self._member_pool().map(lambda job: self._member_job(remote_id, job), todo))
        errors = [e for e in results if e is not None]
        if not errors:
            return
        done = [job for job, e in zip(todo, results, strict=True) if e is None]
        error = member_errors(errors, len(todo))
        error.members_done = MembersDone(
            remote_id,
            tuple(u for verb, u in done if verb == "add"),
            tuple(u for verb, u in done if verb == "remove"),
        )
        raise error

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
