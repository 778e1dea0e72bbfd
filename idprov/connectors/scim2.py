"""SCIM 2.0 outbound connector (RFC 7643 resources, RFC 7644 protocol).

Users (core and enterprise extension) and Groups, as ``application/scim+json``.
Attribute paths in the mapping follow SCIM's own syntax: ``title``,
``name.givenName``, ``emails[type eq "work"].value``, and extension attributes by
their full URN (``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department``).
Updates are PATCH operations of only what changed when the target's
ServiceProviderConfig supports PATCH, else a PUT of the resource as the target
holds it with those changes made (what idprov did not change is kept). Group
membership changes are PATCH add/remove operations, split into requests of
``member_batch_size``.

This module is the connector's operations, its look-ups and what makes a remote
object idprov's (the ``externalId`` it sends). The bodies and replies are
:mod:`~idprov.connectors.scim_wire`'s, the requests go through
:mod:`~idprov.connectors.scim_http`, and the options and dialects are
:mod:`~idprov.connectors.scim_dialects`'.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from idprov.connectors.base import (
    Account,
    CheckReport,
    Connector,
    GroupSpec,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
)
from idprov.connectors.http import NOT_THE_TARGET
from idprov.connectors.scim_dialects import (
    Dialect,
    MissingAttribute,
    Scim2Options,
    check_required,
    check_single_valued,
)
from idprov.connectors.scim_http import ScimHttp
from idprov.connectors.scim_wire import (
    ENTERPRISE,
    GROUP,
    PATCH_OP,
    USER,
    VALUE_PATH,
    build_resource,
    bulk_batches,
    bulk_request,
    bulk_results,
    changes,
    created_id,
    drift,
    error_detail,
    filter_literal,
    find_key,
    held_anyway,
    members_patch,
    merged_resource,
    pages,
    patch_body,
)

if TYPE_CHECKING:
    import httpx

    from idprov.connectors.http_client import HttpClient


class MembersByFilter:
    """The members of a group whose target never returns them: ``user_id in members``
    asks the target (``id eq "G" and members eq "U"``)."""

    def __init__(self, connector: Scim2Connector, group_id: str) -> None:
        self.connector = connector
        self.group_id = group_id

    def __contains__(self, user_id: object) -> bool:
        return self.connector._member_by_filter(self.group_id, str(user_id))


class Scim2Connector(Connector):
    """Provision to a SCIM 2.0 service provider."""

    name = "scim2"
    description = "SCIM 2.0 (RFC 7643/7644): Users with the enterprise extension, Groups"
    Options = Scim2Options
    options: Scim2Options
    client: HttpClient
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
        self.http = ScimHttp(
            client,
            options,
            media_type=self.media_type,
            config_path=self.config_path,
            error_detail=self.error_detail,
        )

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
        check_single_valued({**cls.default_attributes_for(options), **idp.attributes}, options)

    def _check_required(self, body: Mapping[str, Any], account: Account) -> None:
        """Fail this user, before any request, if a required attribute is missing."""
        templates = {**self.default_attributes_for(self.options), **self.idp.attributes}
        check_required(body, templates, self.options, f"{account.user_name} at {self.idp.name}")

    def error_detail(self, response: httpx.Response) -> str | None:
        """The target's own error message (see :func:`scim_wire.error_detail`)."""
        return error_detail(response)

    def probe(self, on_interrupt: Any = None) -> Any:
        if self.user_schema != USER:
            return super().probe(on_interrupt)
        from idprov.connectors.scim_probe import run

        return run(self, on_interrupt)

    def check(self) -> CheckReport:
        report = CheckReport()
        try:
            config = self.http.service_provider_config()
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
            self.http.request("GET", "/Users", "list users", params={"count": "1"})
            report.authenticated = True
        except TargetError as exc:
            report.reachable = report.reachable or exc.status is not None
            report.messages.append(exc.message)
            if exc.status == 404:  # a SCIM error or a web server's page: no SCIM there
                report.reachable, report.authenticated = True, None
                report.messages[-1] = (
                    f"{exc.message.removesuffix(f'; {NOT_THE_TARGET}')}: no SCIM endpoint at "
                    f"{self.options.base_url}; check the path of base_url (such as /scim/v2)"
                )
        return report

    # ---- bulk
    def _bulk_settings(self) -> tuple[int, int]:
        """(maxOperations, maxPayloadSize) of Bulk here; (0, 0): no Bulk."""
        if self.settings.bulk == "never" or self.bulk_path is None:
            return 0, 0
        return self.http.bulk_limits()

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
        bodies = [self.user_body(a) for a in sendable]
        for batch in bulk_batches(bodies, max_ops, max_bytes):
            sent += self._bulk_post(batch)
        replies = iter(sent)
        return [refused[i] if i in refused else next(replies) for i in range(len(accounts))]

    def _bulk_post(self, operations: list[dict[str, Any]]) -> list[str | TargetError]:
        what = f"bulk create of {len(operations)} users"
        body = bulk_request(operations)
        response = self.http.request("POST", self.bulk_path or "/Bulk", what, body=body)
        return bulk_results(operations, self.http.json(response, what))

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
        response = self.http.request("POST", "/Users", what, body=body)
        return created_id(response, what)

    def _find_resource(self, path: str, attribute: str, value: str) -> dict[str, Any] | None:
        what = f"look up {attribute} {value}"
        query = {
            "filter": f"{attribute} eq {filter_literal(value)}",
            **self._select("id,externalId"),
        }
        resources = self.http.get(path, what, query).get("Resources") or []
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
            return self.http.get(f"/Users/{remote_id}", f"read user {remote_id}")
        except RemoteNotFound:
            return None

    def drift(self, remote: dict[str, Any], account: Account) -> list[str]:
        """Top-level attributes (and sub-attributes) whose remote value differs, and
        the mapped ones idprov holds no value in that the target does
        (:func:`scim_wire.held_anyway`)."""
        out = drift(self.user_body(account), remote)
        return out + [p for p in held_anyway(remote, self.unset(account)) if p not in out]

    def list_users(self) -> list[tuple[str, str]]:
        """Every user, by pages of ``page_size`` (startIndex/count, or cursors)."""
        found: list[tuple[str, str]] = []
        for page in self._pages("/Users", "list users"):
            found += [(str(r["id"]), str(r.get("userName", ""))) for r in page]
        return found

    def _pages(self, path: str, what: str) -> Iterator[list[dict[str, Any]]]:
        settings = self.settings
        params = {"count": str(settings.page_size), **self._select("userName")}
        return pages(
            lambda query: self.http.get(path, what, query),
            params,
            cursor=settings.paging == "cursor",
        )

    def _select(self, attributes: str) -> dict[str, str]:
        """``attributes=`` to ask for less, where the target accepts it."""
        return {"attributes": attributes} if self.settings.select_attributes else {}

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        """Send what changed since ``previous``; ``active`` only to enable an account
        idprov disabled (``account.enable``): an administrator's disable stays."""
        new = self.user_body(account)
        old = None
        if previous is not None:
            old = self.user_body(Account(account.local_id, account.user_name, previous))
            old["active"] = not account.enable  # enabling: active changes to true
        elif not account.enable:
            new.pop("active")  # everything else is sent (an adoption)
        self._change_user(remote_id, old, new, f"update user {account.user_name}")

    def _change_user(
        self, remote_id: str, old: Mapping[str, Any] | None, new: Mapping[str, Any], what: str
    ) -> None:
        """Send the change from ``old`` to ``new`` (None: everything in ``new``): a PATCH,
        else a PUT of the resource as the target holds it with that change made
        (:func:`scim_wire.merged_resource`), so what an administrator set there and
        idprov did not change is kept. A PATCH replaces a multi-valued attribute whole
        (RFC 7644 has no portable way to change one item: a filtered path that matches
        nothing is an error), so one that changes is read first and sent with the items
        of other types the target holds (an administrator's mobile number beside
        idprov's work one). Nothing changed: nothing is sent."""
        if self.http.supports_patch():
            body = self.patch_body(old, self._with_others(remote_id, old, new, what))
            if body is not None:
                self.http.request("PATCH", f"/Users/{remote_id}", what, body=body)
            return
        current = self._current(remote_id, what)
        body = merged_resource(current, old, new, self.settings.single_valued)
        if body is not None:
            self.http.request("PUT", f"/Users/{remote_id}", what, body=body)

    def _current(self, remote_id: str, what: str) -> dict[str, Any]:
        current = self.read_user(remote_id)
        if current is None:
            raise RemoteNotFound(f"{what}: user {remote_id} is gone", status=404)
        return current

    def _with_others(
        self, remote_id: str, old: Mapping[str, Any] | None, new: Mapping[str, Any], what: str
    ) -> Mapping[str, Any]:
        """``new`` with each multi-valued attribute the change touches holding, beside
        idprov's items, the target's items of the types idprov neither sends nor sent
        (read from the target; only when such an attribute changes)."""
        replace, remove = changes(old, new)
        touched = [
            k
            for k in [*replace, *remove]
            if k not in self.settings.single_valued
            and isinstance(replace.get(k, (old or {}).get(k)), list)
        ]
        if not touched:
            return new
        merged = merged_resource(self._current(remote_id, what), old, new, ()) or {}
        out = dict(new)
        for key in touched:
            value = find_key(merged, key)
            if value:
                out[key] = value
            else:
                out.pop(key, None)
        return out

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """``userName`` in the update with what else changed."""
        what = f"rename user {previous_user_name} to {account.user_name}"
        old = self.user_body(Account(account.local_id, previous_user_name, previous or {}))
        self._change_user(remote_id, old, self.user_body(account), what)

    def disable_user(self, remote_id: str, account: Account) -> bool | None:
        """``active: false``, and nothing else; read first: an account already inactive
        (an administrator disabled it) is left alone, and False says so (idprov then
        never re-enables it)."""
        what = f"disable user {account.user_name}"
        current = self.read_user(remote_id)
        if current is not None and find_key(current, "active") is False:
            return False
        self._change_user(remote_id, {"active": True}, {"active": False}, what)
        return True

    def delete_user(self, remote_id: str) -> None:
        try:
            self.http.request("DELETE", f"/Users/{remote_id}", f"delete user {remote_id}")
        except RemoteNotFound:
            pass  # already gone: what we wanted

    def patch_body(
        self, old: Mapping[str, Any] | None, new: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The update from ``old`` to ``new`` resource bodies (None: nothing changed)."""
        return patch_body(old, new)

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
        response = self.http.request("POST", "/Groups", what, body=body)
        remote_id = created_id(response, what)
        rest = list(group.member_ids[len(first) :])
        if rest:
            self.change_members(remote_id, rest, [])
        return remote_id

    def find_group(self, display_name: str) -> str | None:
        return self._find("/Groups", "displayName", display_name)

    def read_group(self, remote_id: str) -> tuple[str, Container[str]] | None:
        what = f"read group {remote_id}"
        try:
            data = self.http.get(f"/Groups/{remote_id}", what)
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
        if self.http.supports_patch():
            self.http.request(
                "PATCH",
                f"/Groups/{remote_id}",
                what,
                body={
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "replace", "value": {"displayName": display_name}}],
                },
            )
            return
        current = self.http.get(f"/Groups/{remote_id}", what)
        current["displayName"] = display_name
        current.pop("meta", None)
        self.http.request("PUT", f"/Groups/{remote_id}", what, body=current)

    def delete_group(self, remote_id: str) -> None:
        try:
            self.http.request("DELETE", f"/Groups/{remote_id}", f"delete group {remote_id}")
        except RemoteNotFound:
            pass

    def change_members(self, remote_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        what = f"change members of group {remote_id}"
        if not self.http.supports_patch():
            self._put_members(remote_id, add, remove, what)
            return
        size = self.settings.member_batch_size
        for start in range(0, len(add), size):
            self.http.request(
                "PATCH",
                f"/Groups/{remote_id}",
                what,
                body=self.members_patch(add[start : start + size], []),
            )
        for start in range(0, len(remove), size):
            self.http.request(
                "PATCH",
                f"/Groups/{remote_id}",
                what,
                body=self.members_patch([], remove[start : start + size]),
            )

    def members_patch(self, add: Sequence[str], remove: Sequence[str]) -> dict[str, Any]:
        """The update adding ``add`` to a group's members and removing ``remove``."""
        return members_patch(add, remove)

    def _put_members(
        self, remote_id: str, add: Sequence[str], remove: Sequence[str], what: str
    ) -> None:
        if self.settings.group_members == "filter":
            raise TargetError(
                f"{what}: this target never returns a group's members, so they cannot be "
                "replaced with PUT",
                hint="set update_method: patch (or auto) for this identity provider",
            )
        current = self.http.get(f"/Groups/{remote_id}", what)
        members = [m for m in current.get("members") or [] if m.get("value") not in remove]
        present = {m.get("value") for m in members}
        members += [{"value": m} for m in add if m not in present]
        current["members"] = members
        current.pop("meta", None)
        self.http.request("PUT", f"/Groups/{remote_id}", what, body=current)

    def has_member(self, group_id: str, user_id: str) -> bool:
        """Whether the group holds the user (read as :meth:`read_group` reads it)."""
        group = self.read_group(group_id)
        return group is not None and user_id in group[1]

    def _member_by_filter(self, group_id: str, user_id: str) -> bool:
        """``id eq "G" and members eq "U"``: for targets that never return members."""
        what = f"read members of group {group_id}"
        query = f"id eq {filter_literal(group_id)} and members eq {filter_literal(user_id)}"
        return bool(self.http.get("/Groups", what, {"filter": query}).get("Resources"))

    def value_taken(self, attribute: str, value: str, account: Account) -> bool:
        """Whether a user other than ``account``'s own holds ``value`` in ``attribute``
        (a value path such as ``emails[type eq "work"].value`` is asked as
        ``emails.value``)."""
        if m := VALUE_PATH.match(attribute):
            attribute = f"{m.group(1)}.{m.group(4)}"
        found = self._find_resource("/Users", attribute, value)
        match = self._match(found, account.attributes.get("externalId"))
        return match is not None and not match.ours
