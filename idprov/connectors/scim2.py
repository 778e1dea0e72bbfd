"""SCIM 2.0 outbound connector (RFC 7643 resources, RFC 7644 protocol).

Users (core and enterprise extension) and Groups, as ``application/scim+json``.
Attribute paths in the mapping follow SCIM's own syntax: ``title``,
``name.givenName``, ``emails[type eq "work"].value``, and extension attributes by
their full URN (``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department``).
Updates are PATCH operations of only what changed when the target's
ServiceProviderConfig supports PATCH, else a PUT of the whole resource. Group
membership changes are PATCH add/remove operations, split into requests of
``member_batch_size``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from idprov.config.schema import Invalid
from idprov.connectors.base import (
    Account,
    CheckReport,
    Connector,
    GroupSpec,
    MappingInvalid,
    RemoteConflict,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
    Throttled,
)
from idprov.connectors.http import (
    RETRYABLE_STATUS,
    HttpOptions,
    auth_headers,
    json_reply,
    raise_for_status,
    send,
)
from idprov.connectors.scim_dialects import DIALECTS, OVERRIDABLE, Dialect, missing_attribute

if TYPE_CHECKING:
    import httpx

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
_VALUE_PATH = re.compile(r'^(\w+)\[(\w+) eq "([^"]*)"\]\.(\w+)$')


@dataclass(frozen=True)
class Scim2Options(HttpOptions):
    """Options of a SCIM 2.0 identity provider (plus base_url, auth... of HttpOptions).
    Settings left unset take the dialect's value (see idprov.connectors.scim_dialects)."""

    dialect: str = "rfc"
    """What the target implements: ``rfc``, ``aws-identity-center``."""
    update_method: Literal["auto", "patch", "put"] = "auto"
    """``auto``: PATCH if the target's ServiceProviderConfig says it supports it."""
    member_batch_size: int | None = None
    """Members per PATCH request (some targets accept only 100)."""
    send_password: bool | None = None
    """Send the password given to `user add`/`user passwd` (SCIM ``password``)."""
    bulk: Literal["auto", "never"] | None = None
    """``auto``: create many users with SCIM Bulk when the target advertises it."""
    bulk_threshold: int = 10
    """Use Bulk only for at least this many creates at once."""
    page_size: int | None = None
    """Resources per list page."""
    paging: Literal["index", "cursor"] | None = None
    required_attributes: list[str] | None = None
    single_valued: list[str] | None = None
    group_members: Literal["returned", "filter"] | None = None
    select_attributes: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dialect not in DIALECTS:
            raise Invalid(
                f"unknown dialect {self.dialect!r} (known: {', '.join(DIALECTS)})", "dialect"
            )
        overrides: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v
            for k in OVERRIDABLE
            if (v := getattr(self, k)) is not None
        }
        for key in ("member_batch_size", "page_size"):
            if overrides.get(key, 1) < 1:
                raise Invalid("must be at least 1", key)
        if self.bulk_threshold < 2:
            raise Invalid("must be at least 2", "bulk_threshold")
        settings = dataclasses.replace(DIALECTS[self.dialect], **overrides)
        object.__setattr__(self, "_settings", settings)
        for key in OVERRIDABLE:  # what `config show` prints is what is in effect
            value = getattr(settings, key)
            object.__setattr__(self, key, list(value) if isinstance(value, tuple) else value)

    @property
    def settings(self) -> Dialect:
        """The dialect's settings with this IdP's overrides: what the connector does."""
        settings: Dialect = self.__dict__["_settings"]
        return settings


class MembersByFilter:
    """The members of a group whose target never returns them: ``user_id in members``
    asks the target (``id eq "G" and members eq "U"``)."""

    def __init__(self, connector: Scim2Connector, group_id: str) -> None:
        self.connector = connector
        self.group_id = group_id

    def __contains__(self, user_id: object) -> bool:
        return self.connector._member_by_filter(self.group_id, str(user_id))


class MissingAttribute(TargetError):
    """A user lacks an attribute the target requires: refused before any request."""

    code = "missing_attribute"


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


def removed_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Attribute paths set in ``old`` and absent from ``new``: whole attributes, and
    sub-attributes of complex ones (``name.givenName``, ``urn:...:User:department``)."""
    removed: list[str] = []
    for key, before in old.items():
        if key in ("schemas", "id") or not (isinstance(before, dict) or key not in new):
            continue
        value = new.get(key)
        if isinstance(before, dict) and (isinstance(value, dict) or key.startswith("urn:")):
            after = value if isinstance(value, dict) else {}
            sep = ":" if key.startswith("urn:") else "."
            removed += [f"{key}{sep}{k}" for k in before if k not in after]
        elif key not in new:
            removed.append(key)
    return removed


def _find_key(obj: Any, name: str) -> Any:
    """``obj[name]``, with SCIM's case-insensitive attribute names."""
    if not isinstance(obj, dict):
        return None
    lowered = name.lower()
    return next((v for k, v in obj.items() if k.lower() == lowered), None)


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    if m := _VALUE_PATH.match(path):
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


class Scim2Connector(Connector):
    """Provision to a SCIM 2.0 service provider."""

    name = "scim2"
    description = "SCIM 2.0 (RFC 7643/7644): Users with the enterprise extension, Groups"
    Options = Scim2Options
    options: Scim2Options
    client: httpx.Client
    default_attributes: ClassVar[Mapping[str, str]] = {
        "displayName": "{display_name}",
        "name.givenName": "{given_name}",
        "name.familyName": "{family_name}",
        'emails[type eq "work"].value': "{email}",
        'phoneNumbers[type eq "work"].value': "{phone_number}",
        "title": "{title}",
        "locale": "{locale}",
        "timezone": "{timezone}",
        "externalId": "{ID}",
        f"{ENTERPRISE}:employeeNumber": "{employee_number}",
        f"{ENTERPRISE}:department": "{department}",
        f"{ENTERPRISE}:organization": "{organization}",
        f"{ENTERPRISE}:costCenter": "{cost_center}",
    }
    media_type = "application/scim+json"
    user_schema = USER
    group_schema = GROUP
    config_path = "/ServiceProviderConfig"
    bulk_path: str | None = "/Bulk"

    def __init__(self, idp: Any, options: Any, client: Any) -> None:
        super().__init__(idp, options, client)
        self._config: dict[str, Any] | None = None
        self._auth: dict[str, str] | None = None
        self._lock = threading.Lock()

    # ---- dialect
    @property
    def settings(self) -> Dialect:
        """What this target implements: the dialect with the IdP's overrides."""
        return self.options.settings

    @classmethod
    def default_attributes_for(cls, options: Any) -> Mapping[str, str]:
        profile = getattr(options, "settings", None)
        extra = profile.attributes if profile is not None else {}
        return {**cls.default_attributes, **extra} if extra else cls.default_attributes

    def accepts_password(self) -> bool:
        return self.settings.send_password

    @classmethod
    def check_mapping(cls, idp: Any, options: Any) -> None:
        """A mapping that fills two values of an attribute the target holds one of."""
        templates = {**cls.default_attributes_for(options), **idp.attributes}
        for name in options.settings.single_valued:
            paths = [p for p, t in templates.items() if t is not None and p.startswith(name + "[")]
            if len(paths) > 1:
                raise MappingInvalid(
                    f"{name} holds one value at this target (dialect {options.dialect}), "
                    f"but the mapping fills {len(paths)}: {', '.join(paths)}",
                    hint="keep one (set the others to null in attributes), or override "
                    "single_valued in options",
                )

    def _check_required(self, body: Mapping[str, Any], account: Account) -> None:
        """Fail this user, before any request, if a required attribute is missing."""
        for path in self.settings.required_attributes:
            if missing_attribute(body, path):
                templates = {**self.default_attributes_for(self.options), **self.idp.attributes}
                mapped = templates.get(path)
                raise MissingAttribute(
                    f"create user {account.user_name} at {self.idp.name}: {path} is required "
                    f"(dialect {self.options.dialect}) and the mapping "
                    f"{f'{mapped!r} gives' if mapped else 'has'} no value for this user; "
                    f"give the user the claim, or map a fallback in attributes "
                    f"({path}: '=coalesce(...)')",
                    hint=f"give the user the claim, or map a fallback in attributes, e.g. "
                    f'{path}: "=coalesce(...)"',
                )

    # ---- HTTP
    def _url(self, path: str) -> str:
        return self.options.base_url.rstrip("/") + path

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        headers = {"Accept": f"{self.media_type}, application/json"}
        if body is not None:
            headers["Content-Type"] = self.media_type
        if auth:
            if self._auth is None:
                self._auth = auth_headers(self.options)  # read the secret once
            headers.update(self._auth)
        content = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        response = send(
            self.client,
            method,
            self._url(path),
            what=what,
            headers=headers,
            content=content,
            params=params,
        )
        raise_for_status(response, what, self.error_detail(response))
        return response

    def error_detail(self, response: httpx.Response) -> str | None:
        """The target's own error message (SCIM 2.0: ``detail`` and ``scimType``)."""
        if response.status_code < 400:
            return None
        try:
            data = response.json()
        except ValueError:
            return response.text.strip()[:300] or None
        if isinstance(data, dict):
            detail = data.get("detail") or data.get("message")
            scim_type = data.get("scimType")
            if detail or scim_type:
                return f"{detail or ''}{f' (scimType {scim_type})' if scim_type else ''}".strip()
        return json.dumps(data)[:300]

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        data: dict[str, Any] = json_reply(response, what)
        return data

    def _created_id(self, response: httpx.Response, what: str) -> str:
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

    # ---- capabilities
    def service_provider_config(self) -> dict[str, Any]:
        """The target's ServiceProviderConfig, read once per connector."""
        with self._lock:
            if self._config is None:
                response = self._request("GET", self.config_path, "read ServiceProviderConfig")
                self._config = self._json(response, "read ServiceProviderConfig")
            return self._config

    def supports_patch(self) -> bool:
        if self.options.update_method != "auto":
            return self.options.update_method == "patch"
        try:
            return bool(self.service_provider_config().get("patch", {}).get("supported"))
        except TargetError as exc:
            if exc.status in (404, 501):
                return False
            raise

    def probe(self, on_interrupt: Any = None) -> Any:
        if self.user_schema != USER:
            return super().probe(on_interrupt)
        from idprov.connectors.scim_probe import run

        return run(self, on_interrupt)

    def check(self) -> CheckReport:
        report = CheckReport()
        try:
            config = self.service_provider_config()
            report.reachable = True
            report.capabilities = {
                k: config.get(k)
                for k in ("patch", "bulk", "filter", "etag", "sort", "changePassword")
                if k in config
            }
        except TargetError as exc:
            report.reachable = exc.status is not None
            report.messages.append(exc.message)
        try:
            self._request("GET", "/Users", "list users", params={"count": "1"})
            report.authenticated = True
        except RemoteNotFound as exc:
            report.reachable, report.authenticated = True, None
            report.messages.append(
                f"{exc.message}: no SCIM endpoint at {self.options.base_url}; check the path "
                "of base_url (such as /scim/v2)"
            )
        except TargetError as exc:
            report.reachable = report.reachable or exc.status is not None
            report.messages.append(exc.message)
        return report

    # ---- bulk
    def _bulk_settings(self) -> tuple[int, int]:
        """(maxOperations, maxPayloadSize) the target advertises; (0, 0): no Bulk."""
        if self.settings.bulk == "never" or self.bulk_path is None:
            return 0, 0
        bulk = self.service_provider_config().get("bulk") or {}
        if not bulk.get("supported"):
            return 0, 0
        return int(bulk.get("maxOperations") or 0), int(bulk.get("maxPayloadSize") or 0)

    def bulk_create_limit(self) -> int:
        return self._bulk_settings()[0]

    def bulk_threshold(self) -> int:
        return self.options.bulk_threshold

    def create_users(self, accounts: Sequence[Account]) -> list[str | TargetError]:
        """POST /Bulk with one operation per account, split so that no request goes
        over the target's maxOperations or maxPayloadSize. An account that lacks a
        required attribute gets its MissingAttribute and is not sent."""
        max_ops, max_bytes = self._bulk_settings()
        refused: dict[int, TargetError] = {}
        for i, account in enumerate(accounts):
            try:
                self._check_required(self.user_body(account), account)
            except MissingAttribute as exc:
                refused[i] = exc
        sendable = [a for i, a in enumerate(accounts) if i not in refused]
        sent: list[str | TargetError] = []
        for batch in self._bulk_batches(sendable, max_ops, max_bytes):
            sent += self._bulk_post(batch)
        replies = iter(sent)
        return [refused[i] if i in refused else next(replies) for i in range(len(accounts))]

    def _bulk_batches(
        self, accounts: Sequence[Account], max_ops: int, max_bytes: int
    ) -> list[list[dict[str, Any]]]:
        batches: list[list[dict[str, Any]]] = [[]]
        size = 200  # envelope
        for i, account in enumerate(accounts):
            op = {
                "method": "POST",
                "path": "/Users",
                "bulkId": str(i),
                "data": self.user_body(account),
            }
            op_size = len(json.dumps(op, ensure_ascii=False).encode()) + 2
            if batches[-1] and (
                len(batches[-1]) >= max_ops or (max_bytes and size + op_size > max_bytes)
            ):
                batches.append([])
                size = 200
            batches[-1].append(op)
            size += op_size
        return [b for b in batches if b]

    def _bulk_post(self, operations: list[dict[str, Any]]) -> list[str | TargetError]:
        what = f"bulk create of {len(operations)} users"
        response = self._request(
            "POST",
            self.bulk_path or "/Bulk",
            what,
            body={"schemas": [BULK_REQUEST], "Operations": operations},
        )
        replies = {
            str(op.get("bulkId")): op for op in self._json(response, what).get("Operations") or []
        }
        return [self._bulk_result(op, replies.get(op["bulkId"])) for op in operations]

    def _bulk_result(self, sent: dict[str, Any], reply: dict[str, Any] | None) -> str | TargetError:
        name = sent["data"]["userName"]
        if reply is None:
            return TargetError(
                f"create user {name}: no reply in the bulk response", retryable=True, ambiguous=True
            )
        status_field = reply.get("status")
        if isinstance(status_field, dict):  # SCIM 1.1 style {"code": "201"}
            status_field = status_field.get("code")
        try:
            status = int(str(status_field))
        except ValueError:
            status = 0
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

    # ---- users
    def user_body(self, account: Account, remote_id: str | None = None) -> dict[str, Any]:
        body = build_resource(self.user_schema, account.attributes)
        body["userName"] = account.user_name
        body["active"] = account.active
        if account.password is not None and self.settings.send_password:
            body["password"] = account.password
        if remote_id is not None:
            body["id"] = remote_id
        return body

    def create_user(self, account: Account) -> str:
        what = f"create user {account.user_name}"
        body = self.user_body(account)
        self._check_required(body, account)
        response = self._request("POST", "/Users", what, body=body)
        return self._created_id(response, what)

    def _find_resource(self, path: str, attribute: str, value: str) -> dict[str, Any] | None:
        what = f"look up {attribute} {value}"
        response = self._request(
            "GET",
            path,
            what,
            params={
                "filter": f"{attribute} eq {filter_literal(value)}",
                **self._select("id,externalId"),
            },
        )
        resources = self._json(response, what).get("Resources") or []
        return dict(resources[0]) if resources else None

    def _find(self, path: str, attribute: str, value: str) -> str | None:
        found = self._find_resource(path, attribute, value)
        return None if found is None else str(found["id"])

    def _match(self, found: dict[str, Any] | None, mark: Any) -> RemoteMatch | None:
        """Ours when the resource carries the externalId idprov sends for it."""
        if found is None:
            return None
        ours = mark is not None and str(found.get("externalId")) == str(mark)
        return RemoteMatch(str(found["id"]), ours=ours)

    def find_user(self, user_name: str) -> str | None:
        return self._find("/Users", "userName", user_name)

    def lookup_user(self, account: Account) -> RemoteMatch | None:
        found = self._find_resource("/Users", "userName", account.user_name)
        return self._match(found, account.attributes.get("externalId"))

    def read_user(self, remote_id: str) -> dict[str, Any] | None:
        try:
            response = self._request("GET", f"/Users/{remote_id}", f"read user {remote_id}")
        except RemoteNotFound:
            return None
        return self._json(response, f"read user {remote_id}")

    def drift(self, remote: dict[str, Any], account: Account) -> list[str]:
        """Top-level attributes (and sub-attributes) whose remote value differs."""
        expected = self.user_body(account)
        out = []
        for key, value in expected.items():
            if key == "schemas":
                continue
            have = _find_key(remote, key)
            if isinstance(value, dict):
                have = have if isinstance(have, dict) else {}
                out += [f"{key}.{k}" for k, v in value.items() if _find_key(have, k) != v]
            elif isinstance(value, list):
                wanted = {(i.get("type"), i.get("value")) for i in value if isinstance(i, dict)}
                got = {(i.get("type"), i.get("value")) for i in have or [] if isinstance(i, dict)}
                if not wanted <= got:
                    out.append(key)
            elif have != value:
                out.append(key)
        return out

    def list_users(self) -> list[tuple[str, str]]:
        """Every user, by pages of ``page_size`` (startIndex/count, or cursors)."""
        found: list[tuple[str, str]] = []
        for page in self._pages("/Users", "list users"):
            found += [(str(r["id"]), str(r.get("userName", ""))) for r in page]
        return found

    def _pages(self, path: str, what: str) -> Iterator[list[dict[str, Any]]]:
        settings = self.settings
        params = {"count": str(settings.page_size), **self._select("userName")}
        cursor = "" if settings.paging == "cursor" else None
        start = 1
        while True:
            if cursor is None:
                params["startIndex"] = str(start)
            else:
                params["cursor"] = cursor
            data = self._json(self._request("GET", path, what, params=params), what)
            resources = data.get("Resources") or []
            yield resources
            start += len(resources)
            if cursor is not None:
                cursor = data.get("nextCursor")
                if not cursor:
                    return
            elif not resources or start > int(data.get("totalResults", 0)):
                return

    def _select(self, attributes: str) -> dict[str, str]:
        """``attributes=`` to ask for less, where the target accepts it."""
        return {"attributes": attributes} if self.settings.select_attributes else {}

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        what = f"update user {account.user_name}"
        new = self.user_body(account)
        if not self.supports_patch():
            self._put_user(remote_id, account, previous, what)
            return
        old = None
        if previous is not None:
            old = self.user_body(Account(account.local_id, account.user_name, previous))
        body = self.patch_body(old, new)
        if body is not None:
            self._request("PATCH", f"/Users/{remote_id}", what, body=body)

    def _put_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None, what: str
    ) -> None:
        """PUT the whole resource. With ``previous`` (a plain update) the account's
        current ``active`` is read and kept: a PUT must not re-enable an account that
        an administrator disabled."""
        body = self.user_body(account, remote_id)
        if previous is not None:
            current = self.read_user(remote_id)
            if current is None:
                raise RemoteNotFound(f"{what}: user {remote_id} is gone", status=404)
            if isinstance(_find_key(current, "active"), bool):
                body["active"] = _find_key(current, "active")
        self._request("PUT", f"/Users/{remote_id}", what, body=body)

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """``userName`` in the PATCH with what else changed (a PUT without PATCH)."""
        what = f"rename user {previous_user_name} to {account.user_name}"
        if not self.supports_patch():
            self._put_user(remote_id, account, previous, what)
            return
        old = self.user_body(Account(account.local_id, previous_user_name, previous or {}))
        body = self.patch_body(old, self.user_body(account))
        if body is not None:
            self._request("PATCH", f"/Users/{remote_id}", what, body=body)

    def disable_user(self, remote_id: str, account: Account) -> None:
        what = f"disable user {account.user_name}"
        if self.supports_patch():
            self._request(
                "PATCH",
                f"/Users/{remote_id}",
                what,
                body=self.patch_body({"active": True}, {"active": False}),
            )
        else:
            disabled = Account(account.local_id, account.user_name, account.attributes, False)
            self._request(
                "PUT", f"/Users/{remote_id}", what, body=self.user_body(disabled, remote_id)
            )

    def delete_user(self, remote_id: str) -> None:
        try:
            self._request("DELETE", f"/Users/{remote_id}", f"delete user {remote_id}")
        except RemoteNotFound:
            pass  # already gone: what we wanted

    def patch_body(
        self, old: Mapping[str, Any] | None, new: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """PatchOp from ``old`` to ``new`` resource bodies (None: nothing changed).
        Complex attributes change sub-attribute by sub-attribute, so attributes set
        outside idprov are left alone; multi-valued ones are replaced whole."""
        old = dict(old or {})
        replace: dict[str, Any] = {}
        for key, value in new.items():
            if key in ("schemas", "id"):
                continue
            before = old.get(key)
            if isinstance(value, dict):
                before = before if isinstance(before, dict) else {}
                changed = {k: v for k, v in value.items() if before.get(k) != v}
                if changed:
                    replace[key] = changed
            elif before != value:
                replace[key] = value
        remove = removed_paths(old, new)
        if not replace and not remove:
            return None
        operations: list[dict[str, Any]] = [{"op": "remove", "path": p} for p in remove]
        if replace:
            operations.append({"op": "replace", "value": replace})
        return {"schemas": [PATCH_OP], "Operations": operations}

    # ---- groups
    def create_group(self, group: GroupSpec) -> str:
        what = f"create group {group.display_name}"
        first = list(group.member_ids[: self.settings.member_batch_size])
        body: dict[str, Any] = {
            "schemas": [self.group_schema],
            "displayName": group.display_name,
            "externalId": group.local_id,
            "members": [{"value": m} for m in first],
        }
        response = self._request("POST", "/Groups", what, body=body)
        remote_id = self._created_id(response, what)
        rest = list(group.member_ids[len(first) :])
        if rest:
            self.change_members(remote_id, rest, [])
        return remote_id

    def find_group(self, display_name: str) -> str | None:
        return self._find("/Groups", "displayName", display_name)

    def read_group(self, remote_id: str) -> tuple[str, Container[str]] | None:
        what = f"read group {remote_id}"
        try:
            data = self._json(self._request("GET", f"/Groups/{remote_id}", what), what)
        except RemoteNotFound:
            return None
        if self.settings.group_members == "filter":  # never returned: asked one by one
            return str(data.get("displayName", "")), MembersByFilter(self, remote_id)
        members = data.get("members") or []
        ids = {str(m["value"]) for m in members if isinstance(m, dict) and m.get("value")}
        return str(data.get("displayName", "")), ids

    def lookup_group(self, group: GroupSpec) -> RemoteMatch | None:
        found = self._find_resource("/Groups", "displayName", group.display_name)
        return self._match(found, group.local_id)

    def rename_group(self, remote_id: str, display_name: str) -> None:
        what = f"rename group {remote_id} to {display_name}"
        if self.supports_patch():
            self._request(
                "PATCH",
                f"/Groups/{remote_id}",
                what,
                body={
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "replace", "value": {"displayName": display_name}}],
                },
            )
            return
        current = self._json(self._request("GET", f"/Groups/{remote_id}", what), what)
        current["displayName"] = display_name
        current.pop("meta", None)
        self._request("PUT", f"/Groups/{remote_id}", what, body=current)

    def delete_group(self, remote_id: str) -> None:
        try:
            self._request("DELETE", f"/Groups/{remote_id}", f"delete group {remote_id}")
        except RemoteNotFound:
            pass

    def change_members(self, remote_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        what = f"change members of group {remote_id}"
        if not self.supports_patch():
            self._put_members(remote_id, add, remove, what)
            return
        size = self.settings.member_batch_size
        for start in range(0, len(add), size):
            self._request(
                "PATCH",
                f"/Groups/{remote_id}",
                what,
                body=self.members_patch(add[start : start + size], []),
            )
        for start in range(0, len(remove), size):
            self._request(
                "PATCH",
                f"/Groups/{remote_id}",
                what,
                body=self.members_patch([], remove[start : start + size]),
            )

    def members_patch(self, add: Sequence[str], remove: Sequence[str]) -> dict[str, Any]:
        operations: list[dict[str, Any]] = []
        if add:
            operations.append(
                {"op": "add", "path": "members", "value": [{"value": m} for m in add]}
            )
        operations += [
            {"op": "remove", "path": f"members[value eq {filter_literal(m)}]"} for m in remove
        ]
        return {"schemas": [PATCH_OP], "Operations": operations}

    def _put_members(
        self, remote_id: str, add: Sequence[str], remove: Sequence[str], what: str
    ) -> None:
        if self.settings.group_members == "filter":
            raise TargetError(
                f"{what}: this target never returns a group's members, so they cannot be "
                "replaced with PUT",
                hint="set update_method: patch (or auto) for this identity provider",
            )
        current = self._json(self._request("GET", f"/Groups/{remote_id}", what), what)
        members = [m for m in current.get("members") or [] if m.get("value") not in remove]
        present = {m.get("value") for m in members}
        members += [{"value": m} for m in add if m not in present]
        current["members"] = members
        current.pop("meta", None)
        self._request("PUT", f"/Groups/{remote_id}", what, body=current)

    def has_member(self, group_id: str, user_id: str) -> bool:
        """Whether the group holds the user (read as :meth:`read_group` reads it)."""
        group = self.read_group(group_id)
        return group is not None and user_id in group[1]

    def _member_by_filter(self, group_id: str, user_id: str) -> bool:
        """``id eq "G" and members eq "U"``: for targets that never return members."""
        what = f"read members of group {group_id}"
        query = f"id eq {filter_literal(group_id)} and members eq {filter_literal(user_id)}"
        response = self._request("GET", "/Groups", what, params={"filter": query})
        return bool(self._json(response, what).get("Resources"))

    def value_taken(self, attribute: str, value: str, account: Account) -> bool:
        """Whether a user other than ``account``'s own holds ``value`` in ``attribute``
        (a value path such as ``emails[type eq "work"].value`` is asked as
        ``emails.value``)."""
        if m := _VALUE_PATH.match(attribute):
            attribute = f"{m.group(1)}.{m.group(4)}"
        found = self._find_resource("/Users", attribute, value)
        match = self._match(found, account.attributes.get("externalId"))
        return match is not None and not match.ours
