"""Salesforce outbound connector: the REST API's ``User`` sObject, with roles as
permission set assignments or public group memberships.

Salesforce has no SCIM endpoint worth the name for provisioning, so this connector
speaks the REST API (``/services/data/vXX.X``) directly:

- Users are created by ``POST sobjects/User/`` with the fields Salesforce requires
  (``Username``, ``LastName``, ``Email``, ``Alias``, ``ProfileId``, ``TimeZoneSidKey``,
  ``LocaleSidKey``, ``EmailEncodingKey``, ``LanguageLocaleKey``): mapped from claims,
  else derived (``LastName`` and ``Email`` from the username, ``Alias`` from the name)
  or taken from the options. Many creates at once (an import, a sync) go as sObject
  Collections, up to 200 records a request, ``allOrNone: false``, through the
  engine's bulk path. Updates are ``PATCH sobjects/User/{id}``.
- Salesforce never deletes users: deprovisioning deactivates (``IsActive: false``),
  whether the IdP says ``deprovision: delete`` or ``disable``, and a user back in scope
  is re-activated. ``disable`` is the default here: ``delete`` also makes idprov forget
  the remote id. Updates send only the fields that changed, and never ``IsActive``:
  a user an administrator deactivated stays so.
- idprov's mark is ``FederationIdentifier`` (``mark_field``): a user created by idprov
  carries the local id there, so that after a lost reply a look-up can tell idprov's
  user from someone else's. It is written on create alone (and by `idprov idp
  stamp`), never by an update, and a mapping that names that field is refused
  (:meth:`SalesforceConnector.check_mapping`): single sign-on usually maps
  ``FederationIdentifier`` to the e-mail, and then ``mark_field`` names another field.
- Roles are not created in Salesforce: each pushed role is mapped in ``roles`` to an
  existing permission set or public group (by id, or by API name, looked up once).
  Membership is ``PermissionSetAssignment`` or ``GroupMember`` records, created and
  deleted in collections. A role that is renamed leaves the Salesforce object alone;
  a role that is deleted (or no longer pushed) has its assignments and memberships
  removed, the permission set or group itself being left alone. Salesforce gives
  neither to an inactive user: when it refuses users, idprov reads whether they are
  active (the error code is not documented for this), and names the ones deactivated
  there (by someone else: idprov adds only users it holds active) with the fix:
  re-activate them at Salesforce, then ``idprov outbox retry``.

Authentication is OAuth 2.0 at the login host (JWT bearer, client credentials, or the
username-password flow); the token response names the instance that serves the API.
The token is reused until a 401, then fetched again once (see
:mod:`idprov.connectors.oauth`). Salesforce's error arrays (``errorCode``,
``message``, ``fields``) go into the report as Salesforce sent them;
``DUPLICATE_USERNAME`` is a conflict, ``REQUEST_LIMIT_EXCEEDED`` and
``UNABLE_TO_LOCK_ROW`` are retryable.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Container, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from idprov.connectors.base import (
    Account,
    CheckReport,
    Connector,
    GroupSpec,
    MappingInvalid,
    MembersDone,
    RemoteConflict,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
    check_mark,
    created_without_password,
)
from idprov.connectors.changes import changes
from idprov.connectors.http import json_payload, json_reply
from idprov.connectors.oauth import (
    AccessToken,
    TokenCache,
    load_private_key,
    read_key_text,
    request_token,
    send_authorized,
    sign_assertion,
    with_hint,
)
from idprov.connectors.salesforce_api import (
    COLLECTION_LIMIT,
    DUPLICATE_USERNAME_FIX,
    FLOW_HINTS,
    GONE_CODES,
    GROUP_OBJECTS,
    KEY_PREFIXES,
    MEMBERSHIP,
    RoleTarget,
    SalesforceOptions,
    derive_alias,
    error_code,
    is_salesforce_id,
    jwt_claims,
    raise_failed,
    raise_salesforce_error,
    record_error,
    refused,
    salesforce_username,
    soql_literal,
    token_form,
    user_fields,
)
from idprov.secrecy import blank

if TYPE_CHECKING:
    import httpx

    from idprov.connectors.http_client import HttpClient

ADDED_ALREADY = frozenset({"DUPLICATE_VALUE"})
"""The code of a membership record that exists already: the member is in, as asked."""


class SalesforceConnector(Connector):
    """Provision Salesforce users; roles to permission sets or public groups."""

    name = "salesforce"
    description = "Salesforce REST API: User sObjects, permission sets and public groups"
    Options = SalesforceOptions
    options: SalesforceOptions
    client: HttpClient
    default_attributes: ClassVar[Mapping[str, str]] = {
        "FirstName": "{given_name}",
        "LastName": "{family_name}",
        "Email": "{email}",
        "Title": "{title}",
        "Department": "{department}",
        "CompanyName": "{organization}",
        "EmployeeNumber": "{employee_number}",
        "Phone": "{phone_number}",
        "MobilePhone": "{mobile}",
        "Street": "{street_address}",
        "City": "{locality}",
        "State": "{region}",
        "PostalCode": "{postal_code}",
        "Country": "{country}",
    }

    default_deprovision = "disable"
    deletes_groups = False
    members_dangle = False  # users are deactivated, never deleted; a group takes its members

    @classmethod
    def held_back(cls, options: Any) -> frozenset[str]:
        """``mark_field``: written on create alone (:meth:`create_fields`)."""
        mark = getattr(options, "mark_field", None)
        return frozenset({mark.casefold()}) if mark else frozenset()

    @classmethod
    def check_mapping(cls, idp: Any, options: Any) -> None:
        """Also: the mapping may not name ``mark_field`` (idprov's id alone, written on
        create only, :func:`~idprov.connectors.base.check_mark`; ``{ID}`` too). Single
        sign-on usually maps ``FederationIdentifier`` to the e-mail: the hint says how
        to keep that, and what the other ways out would do to it."""
        super().check_mapping(idp, options)
        mark = options.mark_field
        try:
            check_mark(mark, "mark_field", cls.default_attributes, idp.attributes, allow_id=False)
        except MappingInvalid as exc:
            hint = (
                "keep that mapping and set options.mark_field to a User field nothing else "
                "writes (a custom text field such as Idprov_Id__c, made in Setup > Object "
                "Manager > User > Fields & Relationships), or set mark_field: null (then a "
                "create whose reply was lost needs on_conflict: adopt). Do not remove the "
                f"mapping or map {mark} to null or '{{ID}}' instead: new users would get "
                f"idprov's id in {mark} rather than what single sign-on matches, and "
                f"stamping idprov's mark on existing users would replace theirs"
            )
            raise MappingInvalid(str(exc), hint=hint, path=exc.path) from None

    def __init__(self, idp: Any, options: Any, client: Any) -> None:
        super().__init__(idp, options, client)
        self.tokens = TokenCache(self._fetch_token)
        self._key: Any = None
        self._lookups: dict[str, str | None] = {}
        self._lock = threading.Lock()

    # ---- authentication
    def _fetch_token(self) -> AccessToken:
        options = self.options
        assertion = self._assertion() if options.flow == "jwt_bearer" else None
        token = request_token(
            self.client,
            options.token_endpoint,
            token_form(options, assertion),
            f"get a Salesforce access token ({options.flow} flow)",
            FLOW_HINTS[options.flow],
        )
        if not (options.instance_url or token.details.get("instance_url")):
            raise TargetError(
                "the Salesforce token response names no instance_url",
                hint="set instance_url: https://MYDOMAIN.my.salesforce.com in the options",
            )
        return token

    def _assertion(self) -> str:
        with self._lock:
            if self._key is None:
                ref = self.options.private_key
                assert ref is not None  # checked by the options
                self._key = load_private_key(read_key_text(ref), f"private_key {ref}")
            key = self._key
        return sign_assertion(key, jwt_claims(self.options))

    # ---- HTTP
    def _instance(self, token: AccessToken) -> str:
        instance = self.options.instance_url or str(token.details.get("instance_url"))
        return instance.rstrip("/")

    def _base(self, token: AccessToken) -> str:
        return f"{self._instance(token)}/services/data/v{self.options.api_version}"

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        from_instance: bool = False,
    ) -> httpx.Response:
        """``path`` below the REST API's version root; with ``from_instance``, below
        the instance (a ``nextRecordsUrl``, which names the version itself)."""
        headers, content = json_payload(body)
        root = self._instance if from_instance else self._base
        response = send_authorized(
            self.client,
            self.tokens,
            method,
            lambda token: root(token) + path,
            what=what,
            headers=headers,
            content=content,
            params=params,
        )
        raise_salesforce_error(response, what)
        return response

    def _json(self, response: httpx.Response, what: str) -> Any:
        return json_reply(response, what, object_only=False)

    def query(self, soql: str, what: str) -> list[dict[str, Any]]:
        """Every record of a SOQL query: Salesforce returns them in batches (at most
        2,000, often fewer), each but the last with ``done: false`` and the
        ``nextRecordsUrl`` of the next (Query More Results)."""
        data = self._json(self._request("GET", "/query", what, params={"q": soql}), what)
        found: list[dict[str, Any]] = []
        while True:
            if not isinstance(data, dict):
                return found
            found += [r for r in data.get("records") or [] if isinstance(r, dict)]
            following = data.get("nextRecordsUrl")
            if data.get("done") is not False or not isinstance(following, str):
                return found
            if not following.startswith("/services/data/"):
                raise TargetError(
                    f"{what}: the query's nextRecordsUrl is not an API path: {following[:200]}"
                )
            response = self._request("GET", following, what, from_instance=True)
            data = self._json(response, what)

    # ---- checks
    def check(self) -> CheckReport:
        report = CheckReport(
            capabilities={"flow": self.options.flow, "api_version": self.options.api_version}
        )
        try:
            self._request("GET", "/", "read the REST API's resources")
            report.reachable = report.authenticated = True
            token = self.tokens.get()
            report.capabilities["instance_url"] = self._base(token).split("/services/")[0]
        except TargetError as exc:
            report.reachable = exc.status is not None
            report.messages.append(with_hint(exc))
            return report
        if self.idp.deprovision == "delete":
            report.messages.append(
                "Salesforce never deletes users: `deprovision: delete` deactivates them and "
                "forgets their ids; `deprovision: disable` keeps the ids, so that a user "
                "coming back is re-activated"
            )
        report.messages += self._unpushed_roles()
        for role, target in self.options.roles.items():
            try:
                if self._resolve(target) is None:
                    report.messages.append(f"role {role}: no {target.type} named {target.name}")
            except TargetError as exc:
                report.messages.append(f"role {role}: {exc.message}")
        return report

    def _unpushed_roles(self) -> list[str]:
        """A message per role that ``roles`` maps and that is never pushed here."""
        idp = self.idp
        if idp.push_roles == "none":
            why, fix = "push_roles: none", "set push_roles: scoped or all"
        elif idp.push_roles == "scoped" and idp.provisioning_roles is not None:
            why, fix = "not a provisioning role", "add it to provisioning_roles"
        else:
            return []
        pushed = {r.casefold() for r in idp.provisioning_roles or []}
        return [
            f"role {role} is mapped under options.roles but never pushed ({why}): {fix}, "
            f"set push_roles: all, or remove it from options.roles"
            for role in self.options.roles
            if idp.push_roles == "none" or role.casefold() not in pushed
        ]

    # ---- users
    def create_fields(self, account: Account) -> dict[str, Any]:
        """:func:`~idprov.connectors.salesforce_api.user_fields` with the required fields
        only set on creation."""
        fields = user_fields(self.options, account)
        defaults = {
            "Alias": derive_alias(fields.get("FirstName"), fields["LastName"], fields["Username"]),
            "ProfileId": self.profile_id(),
            "TimeZoneSidKey": self.options.time_zone,
            "LocaleSidKey": self.options.locale,
            "LanguageLocaleKey": self.options.language,
            "EmailEncodingKey": self.options.email_encoding,
        }
        mark = self.options.mark_field
        if mark is not None:
            fields[mark] = account.local_id
        return {**defaults, **fields}

    def profile_id(self) -> str:
        if self.options.profile_id:
            return self.options.profile_id
        name = self.options.profile or ""
        found = self._lookup("Profile", "Name", name)
        if found is None:
            raise TargetError(
                f"no Salesforce profile named {name!r}",
                hint="set profile: to a profile's name as Setup > Profiles shows it, or "
                "profile_id:",
            )
        return found

    def create_user(self, account: Account) -> str:
        fields = self.create_fields(account)
        what = f"create user {fields['Username']}"
        try:
            response = self._request("POST", "/sobjects/User/", what, body=fields)
        except RemoteConflict as exc:
            raise self._taken(exc, fields["Username"]) from exc
        data = self._json(response, what)
        if not isinstance(data, dict) or not data.get("id"):
            raise TargetError(f"{what}: created, but the reply holds no id", ambiguous=True)
        self._set_password(str(data["id"]), account, fields["Username"], created=True)
        return str(data["id"])

    def _taken(self, conflict: TargetError, username: str) -> TargetError:
        """``DUPLICATE_USERNAME`` for ``username``: the conflict as it came when a user
        of this org holds it (the engine then looks at it); else another org holds it
        (Salesforce usernames are unique across all orgs), and no adoption or retry can
        help: an error that says how to choose usernames of this org's own."""
        if self._user_record_of(username) is not None:
            return conflict
        fix = DUPLICATE_USERNAME_FIX.format(idp=self.idp.name)
        return TargetError(
            f"{conflict.message}: no user of this org has the username {username}: "
            f"another Salesforce org holds it (usernames are unique across every org): {fix}",
            status=conflict.status,
            hint=fix,
        )

    def _set_password(self, remote_id: str, account: Account, username: str, created: bool) -> None:
        """Send the password given in this command, if configured to. After a create,
        a failure is ambiguous (the user exists): the engine's repeat looks it up, adopts
        it by its mark and sets the password through :meth:`update_user`."""
        if not (self.options.send_password and account.password):
            return
        what = f"set the password of {username}"
        try:
            self._request(
                "POST",
                f"/sobjects/User/{remote_id}/password",
                what,
                body={"NewPassword": account.password},
            )
        except TargetError as exc:
            if not created:
                raise
            raise created_without_password(exc, remote_id) from exc

    def bulk_create_limit(self) -> int:
        return 0 if self.options.bulk == "never" else COLLECTION_LIMIT

    def bulk_threshold(self) -> int:
        return self.options.bulk_threshold

    def create_users(self, accounts: Sequence[Account]) -> list[str | TargetError]:
        """sObject Collections, ``allOrNone: false``, 200 records a request: per
        account its new id, or the error Salesforce gave for that record."""
        records = [{"attributes": {"type": "User"}, **self.create_fields(a)} for a in accounts]
        results: list[str | TargetError] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            batch = records[start : start + COLLECTION_LIMIT]
            replies = self._collection_post(batch, f"create {len(batch)} users")
            for record, reply in zip(batch, replies, strict=True):
                if reply.get("success") and reply.get("id"):
                    results.append(str(reply["id"]))
                    continue
                error = record_error(reply, f"create user {record['Username']}")
                if isinstance(error, RemoteConflict):
                    error = self._taken(error, record["Username"])
                results.append(error)
        return [self._with_password(r, a) for r, a in zip(results, accounts, strict=True)]

    def _with_password(self, result: str | TargetError, account: Account) -> str | TargetError:
        """A created user's id once its password is set (if any); else the error."""
        if isinstance(result, TargetError):
            return result
        try:
            self._set_password(
                result, account, salesforce_username(self.options, account.user_name), created=True
            )
        except TargetError as exc:
            return exc
        return result

    def _collection_post(self, records: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        body = {"allOrNone": False, "records": records}
        replies = self._json(self._request("POST", "/composite/sobjects", what, body=body), what)
        if not isinstance(replies, list) or len(replies) != len(records):
            raise TargetError(
                f"{what}: the reply does not hold one result per record",
                retryable=True,
                ambiguous=True,
            )
        return [r if isinstance(r, dict) else {} for r in replies]

    def find_user(self, user_name: str) -> str | None:
        found = self._user_record(user_name)
        return None if found is None else str(found["Id"])

    def lookup_user(self, account: Account) -> RemoteMatch | None:
        """The user of ``account``'s username; idprov's when its ``mark_field`` holds
        the local id, which idprov alone sets there (:meth:`check_mapping` refuses a
        mapping that fills the field from a claim)."""
        found = self._user_record(account.user_name)
        if found is None:
            return None
        mark = self.options.mark_field
        ours = mark is not None and found.get(mark) == account.local_id
        return RemoteMatch(str(found["Id"]), ours=ours)

    def carries_mark(self, remote: Mapping[str, Any], account: Account) -> bool | None:
        """Whether the user (:meth:`read_user`'s) holds the local id in ``mark_field``
        (None: no mark configured)."""
        mark = self.options.mark_field
        if mark is None:
            return None
        have = {key.casefold(): value for key, value in remote.items()}
        return have.get(mark.casefold()) == account.local_id

    def stamp_mark(self, remote_id: str, account: Account) -> None:
        """A PATCH of ``mark_field`` alone, to the local id."""
        mark = self.options.mark_field
        if mark is None:
            super().stamp_mark(remote_id, account)
            return
        what = f"stamp idprov's mark on user {salesforce_username(self.options, account.user_name)}"
        self._request("PATCH", f"/sobjects/User/{remote_id}", what, body={mark: account.local_id})

    def _user_record(self, user_name: str) -> dict[str, Any] | None:
        return self._user_record_of(salesforce_username(self.options, user_name))

    def _user_record_of(self, name: str) -> dict[str, Any] | None:
        """The user of this org whose Salesforce username is ``name`` (its Id, and its
        mark field), or None."""
        columns = "Id" + (f", {self.options.mark_field}" if self.options.mark_field else "")
        records = self.query(
            f"SELECT {columns} FROM User WHERE Username = {soql_literal(name)}",
            f"look up user {name}",
        )
        return records[0] if records else None

    def read_user(self, remote_id: str) -> dict[str, Any] | None:
        what = f"read user {remote_id}"
        try:
            data = self._json(self._request("GET", f"/sobjects/User/{remote_id}", what), what)
        except RemoteNotFound:
            return None
        return data if isinstance(data, dict) else None

    def drift(self, remote: dict[str, Any], account: Account) -> list[str]:
        """The fields idprov sends (mapped, and ``LastName``/``Email`` derived) whose
        value at Salesforce is not what it sent, and ``active`` when the user is
        deactivated there (by an administrator) while idprov has it active. Field names
        are case-insensitive, as Salesforce's are; ``Email`` is compared without case.
        ``Username`` is left out: an administrator's rename stays (updates keep it).
        So are the mapped fields idprov holds no value in that hold one there
        (:meth:`~Connector.unset`)."""
        have = {key.casefold(): value for key, value in remote.items()}
        out = []
        fields = user_fields(self.options, account)
        sent = {key.casefold() for key in fields}
        for key in self.unset(account):
            if key.casefold() not in sent and have.get(key.casefold()) not in (None, ""):
                out.append(key)
        for key, value in fields.items():
            if key in ("Username", "IsActive"):
                continue
            got = have.get(key.casefold())
            if key.casefold() == "email" and isinstance(got, str) and isinstance(value, str):
                got, value = got.casefold(), value.casefold()
            if got != value:
                out.append(key)
        active = have.get("isactive")
        if isinstance(active, bool) and active != account.active:
            out.append("active")
        return out

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        """PATCH what changed since ``previous`` (:meth:`_change_user`). Without
        ``previous`` (re-activating what idprov deactivated, adopting) every field is
        sent; ``IsActive`` only to re-activate (``account.enable``)."""
        old = None
        if previous is not None:
            old = user_fields(self.options, Account(account.local_id, account.user_name, previous))
        what = f"update user {salesforce_username(self.options, account.user_name)}"
        self._change_user(remote_id, old, account, what)

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """A PATCH with the new ``Username`` and what else changed."""
        old = user_fields(
            self.options, Account(account.local_id, previous_user_name, previous or {})
        )
        new_name = salesforce_username(self.options, account.user_name)
        self._change_user(remote_id, old, account, f"rename user {old['Username']} to {new_name}")

    def _change_user(
        self, remote_id: str, old: Mapping[str, Any] | None, account: Account, what: str
    ) -> None:
        """PATCH the fields whose value changed from ``old`` (the fields last sent;
        None: every field) and clear (null) those mapped before and not now; then the
        password given in this command, if any. ``Username`` goes only when the user
        name changed, ``IsActive`` only to re-activate a user idprov deactivated
        (``account.enable``): a user an administrator renamed or deactivated stays so."""
        fields, removed = changes(old, user_fields(self.options, account))
        fields.pop("IsActive", None)
        if account.enable:
            fields["IsActive"] = True
        fields.update(dict.fromkeys(removed))
        if fields:
            self._request("PATCH", f"/sobjects/User/{remote_id}", what, body=fields)
        username = salesforce_username(self.options, account.user_name)
        self._set_password(remote_id, account, username, created=False)

    def disable_user(self, remote_id: str, account: Account) -> bool | None:
        """Deactivate the user, read first: one already inactive (an administrator
        deactivated it) is left alone, and False says so (idprov never re-activates it)."""
        what = f"deactivate user {salesforce_username(self.options, account.user_name)}"
        try:
            response = self._request(
                "GET", f"/sobjects/User/{remote_id}", what, params={"fields": "IsActive"}
            )
        except RemoteNotFound:
            return None
        if self._json(response, what).get("IsActive") is False:
            return False
        self._deactivate(remote_id, what)
        return True

    def delete_user(self, remote_id: str) -> None:
        """Deactivate: Salesforce does not delete users."""
        self._deactivate(remote_id, f"deactivate user {remote_id}")

    def _deactivate(self, remote_id: str, what: str) -> None:
        try:
            self._request("PATCH", f"/sobjects/User/{remote_id}", what, body={"IsActive": False})
        except RemoteNotFound:
            pass

    # ---- roles
    def _target(self, role: str) -> RoleTarget | None:
        wanted = role.casefold()
        return next((t for r, t in self.options.roles.items() if r.casefold() == wanted), None)

    def group_target(self, display_name: str) -> str | None:
        """The permission set or public group ``options.roles`` maps the role to."""
        target = self._target(display_name)
        if target is None:
            return None
        return f"{target.type} {target.name if target.id is None else target.id}"

    def _resolve(self, target: RoleTarget) -> str | None:
        if target.id is not None:
            return target.id
        if target.type == "permission_set":
            return self._lookup("PermissionSet", "Name", target.name or "")
        return self._lookup("Group", "DeveloperName", target.name or "", "Type = 'Regular'")

    def _lookup(self, sobject: str, column: str, value: str, extra: str = "") -> str | None:
        """The id of the ``sobject`` whose ``column`` is ``value``, asked once."""
        soql = f"SELECT Id FROM {sobject} WHERE {column} = {soql_literal(value)}"
        soql += f" AND {extra}" if extra else ""
        if soql not in self._lookups:
            records = self.query(soql, f"look up {sobject} {value}")
            self._lookups[soql] = str(records[0]["Id"]) if records else None
        return self._lookups[soql]

    def create_group(self, group: GroupSpec) -> str:
        """Nothing is created: the role's configured permission set or public group is
        looked up, and the members are assigned to it."""
        target = self._target(group.display_name)
        if target is None:
            fix = (
                f"map it under options.roles of identity provider {self.idp.name} "
                f"({group.display_name}: {{type: permission_set, name: API_NAME}}, or type: "
                "group), or push only mapped roles (provisioning_roles, push_roles), then "
                "`idprov outbox retry`"
            )
            raise TargetError(
                f"role {group.display_name!r} has no Salesforce permission set or public "
                f"group to go to (Salesforce roles are not created): {fix}",
                hint=fix,
            )
        remote_id = self._resolve(target)
        if remote_id is None:
            what = "permission set" if target.type == "permission_set" else "public group"
            raise TargetError(
                f"role {group.display_name!r}: no {what} with the API name {target.name!r}",
                hint=f"check options.roles of identity provider {self.idp.name}",
            )
        self.change_members(remote_id, group.member_ids, [])
        return remote_id

    def find_group(self, display_name: str) -> str | None:
        target = self._target(display_name)
        return self._resolve(target) if target is not None else None

    def read_group(self, remote_id: str) -> tuple[str, Container[str]] | None:
        """The role's name and the ids of the users (and nested groups) holding the
        permission set or public group ``remote_id``: its ``PermissionSetAssignment``
        or ``GroupMember`` records, every batch. None when no permission set or group
        has that id (deleted at Salesforce; their memberships go with them).

        Salesforce's name of the set or group is not idprov's (it renames nothing
        there): the name given is that of the role ``options.roles`` maps to it, so
        that only a change idprov can undo is reported."""
        prefix = remote_id[:3]
        if prefix not in MEMBERSHIP or not is_salesforce_id(remote_id):
            return None  # neither a permission set nor a group: none of idprov's
        owner, name_field = GROUP_OBJECTS[prefix]
        what = f"read {owner} {remote_id}"
        found = self.query(
            f"SELECT Id, {name_field} FROM {owner} WHERE Id = {soql_literal(remote_id)}", what
        )
        if not found:
            return None
        sobject, set_field, user_field = MEMBERSHIP[prefix]
        records = self.query(
            f"SELECT {user_field} FROM {sobject} WHERE {set_field} = {soql_literal(remote_id)}",
            f"read the members of {owner} {remote_id}",
        )
        members = {str(r[user_field]) for r in records if r.get(user_field)}
        name = str(found[0].get(name_field) or "")
        return self._role_of(prefix, remote_id, name) or name, members

    def _role_of(self, prefix: str, remote_id: str, name: str) -> str | None:
        """The first role ``options.roles`` maps to the permission set or group of
        ``prefix``, ``remote_id`` and API name ``name``."""
        for role, target in self.options.roles.items():
            if KEY_PREFIXES[target.type] != prefix:
                continue
            if target.id is not None and target.id[:15] == remote_id[:15]:
                return role
            if target.name is not None and target.name == name:
                return role
        return None

    def lookup_group(self, group: GroupSpec) -> RemoteMatch | None:
        """The role's permission set or public group. idprov creates nothing there, so
        what the configuration names is what a "create" uses: idprov's to assign."""
        remote_id = self.find_group(group.display_name)
        return None if remote_id is None else RemoteMatch(remote_id, ours=True)

    def rename_group(self, remote_id: str, display_name: str) -> None:
        """Nothing to do: the permission set or group is not idprov's to rename."""

    def delete_group(self, remote_id: str) -> None:
        """Nothing to delete: the permission set or group is not idprov's. The engine
        removes the members idprov assigned first (``deletes_groups`` is False)."""

    def change_members(self, remote_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        """Delete the ``PermissionSetAssignment``/``GroupMember`` records of ``remove``
        and create those of ``add`` (existing ones are fine), in collections. Removals
        go first: a refused addition (a user deactivated at Salesforce) never keeps
        access that was to go. A failure names in ``members_done`` the records made
        and deleted before it (Salesforce applies each record of a collection alone)."""
        if remote_id[:3] not in MEMBERSHIP:
            raise TargetError(
                f"{remote_id} is neither a permission set (0PS...) nor a group (00G...)",
                hint="check options.roles, then `idprov sync` to correct the ledger",
            )
        added: list[str] = []
        removed: list[str] = []
        try:
            for start in range(0, len(remove), COLLECTION_LIMIT):
                self._remove_members(remote_id, remove[start : start + COLLECTION_LIMIT])
                removed += remove[start : start + COLLECTION_LIMIT]
            for start in range(0, len(add), COLLECTION_LIMIT):
                self._add_members(remote_id, add[start : start + COLLECTION_LIMIT], added)
        except TargetError as exc:
            exc.members_done = MembersDone(remote_id, tuple(added), tuple(removed))
            exc.partial = exc.partial or bool(added or removed)
            raise

    def _add_members(self, remote_id: str, users: Sequence[str], added: list[str]) -> None:
        """One collection of membership records (the users the reply says hold one go
        in ``added``); a refusal of users that are inactive at Salesforce says so, and
        how to fix it (:meth:`_inactive_refused`)."""
        sobject, set_field, user_field = MEMBERSHIP[remote_id[:3]]
        records = [
            {"attributes": {"type": sobject}, set_field: remote_id, user_field: user}
            for user in users
        ]
        what = f"add {len(records)} users to {remote_id}"
        replies = self._collection_post(records, what)
        added += [u for u, r in zip(users, replies, strict=True) if _holds(r)]
        failed = {u: r for u, r in zip(users, replies, strict=True) if refused(r, ADDED_ALREADY)}
        inactive = self._inactive(list(failed)) if failed else {}
        if inactive:
            raise self._inactive_refused(remote_id, inactive, failed)
        raise_failed(replies, what, ok=ADDED_ALREADY)

    def _inactive(self, user_ids: list[str]) -> dict[str, str]:
        """Username by id of those of ``user_ids`` that are inactive at Salesforce
        (none if that cannot be read: the refusal is then reported as it came)."""
        try:
            records = self.query(
                "SELECT Id, Username, IsActive FROM User WHERE Id IN "
                f"({', '.join(soql_literal(u) for u in user_ids)})",
                f"read whether {len(user_ids)} users are active",
            )
        except TargetError:
            return {}
        return {str(r["Id"]): str(r.get("Username")) for r in records if r.get("IsActive") is False}

    def _inactive_refused(
        self, remote_id: str, inactive: dict[str, str], failed: dict[str, dict[str, Any]]
    ) -> TargetError:
        """Salesforce refused to give ``inactive`` users (deactivated there: idprov adds
        only users its ledger holds active, and re-activates those it deactivated)
        the permission set or group ``remote_id``; the rest of ``failed`` as sent."""
        one = len(inactive) == 1
        names = ", ".join(sorted(inactive.values()))
        what = (
            f"assign permission set {remote_id} to an inactive user"
            if remote_id.startswith(KEY_PREFIXES["permission_set"])
            else f"add an inactive user to public group {remote_id}"
        )
        errors = [e for u in inactive for e in failed[u].get("errors") or []]
        others = [e for u, r in failed.items() if u not in inactive for e in r.get("errors") or []]
        fix = (
            f"re-activate {'it' if one else 'them'} at Salesforce (Setup > Users > Edit > "
            f"Active), then `idprov outbox retry --idp {self.idp.name}`; or, if "
            f"{'it is' if one else 'they are'} to stay inactive, take this role from "
            f"{'that user' if one else 'those users'} in idprov"
        )
        message = (
            f"{'user' if one else 'users'} {names} {'is' if one else 'are'} deactivated at "
            "Salesforce, not by idprov (idprov never re-activates a user it did not "
            f"deactivate), and Salesforce does not {what} "
            f"({blank(json.dumps(errors, ensure_ascii=False))[:500]}): {fix}"  # blanked, then cut
        )
        if others:
            refused = blank(json.dumps(others, ensure_ascii=False))[:1000]  # blanked, then cut
            message += f"; other users refused: {refused}"
        return TargetError(message, hint=fix)

    def _remove_members(self, remote_id: str, users: Sequence[str]) -> None:
        sobject, set_field, user_field = MEMBERSHIP[remote_id[:3]]
        what = f"remove {len(users)} users from {remote_id}"
        records = self.query(
            f"SELECT Id FROM {sobject} WHERE {set_field} = {soql_literal(remote_id)} "
            f"AND {user_field} IN ({', '.join(soql_literal(u) for u in users)})",
            what,
        )
        if not records:
            return
        ids = ",".join(str(r["Id"]) for r in records)
        response = self._request(
            "DELETE", "/composite/sobjects", what, params={"ids": ids, "allOrNone": "false"}
        )
        replies = self._json(response, what)
        raise_failed(replies if isinstance(replies, list) else [], what, ok=GONE_CODES)


def _holds(reply: dict[str, Any]) -> bool:
    """Whether one record of a membership collection reply says the user holds it:
    made, or there already."""
    codes = {error_code(e) for e in reply.get("errors") or [] if isinstance(e, dict)}
    return bool(reply.get("success")) or bool(codes) and codes <= ADDED_ALREADY
