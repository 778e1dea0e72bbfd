"""SPML 2.0 outbound connector (OASIS SPML v2 with the DSMLv2 profile, over SOAP 1.1).

Older provisioning systems (Oracle/Sun Identity Manager, OpenSPML-based services,
in-house SOAP endpoints) take accounts as SPML 2.0 *provisioning service objects*
(PSOs), each named by a ``psoID``. This module speaks the core operations (add,
modify, delete, lookup, listTargets) and, where the target advertises them, the
search, suspend and password capabilities, as SOAP 1.1 HTTP POSTs to one endpoint.

Messages are built and read with lxml (imported only when a request is made): every
value is escaped by the library, and replies are parsed without DTDs, entities or
network access. The psoID the target returns is the remote id kept in the ledger.
A ``failure`` reply becomes a :class:`~idprov.connectors.base.TargetError` carrying
the target's ``error`` code and ``errorMessage`` text verbatim; a ``pending`` reply
(asynchronous SPML) becomes :class:`RemotePending`, never a success.

Roles go out either as group PSOs whose member attribute lists the members' psoIDs
(``roles: groups``, for directory-backed targets), or as values of a multi-valued
attribute on each member account (``roles: attribute``, for identity managers that
hold role names on the account). In that mode a role has no remote object: its
remote id is its name.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.connectors.base import (
    Account,
    CheckReport,
    Connector,
    GroupSpec,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
)
from idprov.connectors.http import HttpOptions, auth_headers, send
from idprov.connectors.spml_wire import (
    ATTRIBUTE_NAME,
    DSML,
    DSML_PROFILE,
    PASSWORD,
    SEARCH,
    SPML,
    SUSPEND,
    RemotePending,
    SpmlRequest,
    _children,
    _ids,
    dn_value,
    dsml_values,
    pso_data,
    pso_ids,
    read_reply,
)
from idprov.errors import ConfigError

__all__ = ["RemotePending", "SpmlConnector", "SpmlOptions", "dn_value", "dsml_values"]

if TYPE_CHECKING:
    import httpx


def _template(value: str | None, key: str, names: tuple[str, ...]) -> None:
    """Refuse a template that uses no placeholder of ``names``, or another one."""
    if value is None:
        return
    rest = value
    for name in names:
        rest = rest.replace("{" + name + "}", "")
    if "{" in rest or "}" in rest:
        raise Invalid(f"unknown placeholder; use {', '.join('{' + n + '}' for n in names)}", key)
    if rest == value and key != "soap_action":
        raise Invalid(f"must contain {' or '.join('{' + n + '}' for n in names)}", key)


@dataclass(frozen=True)
class SpmlOptions(HttpOptions):
    """Options of an SPML 2.0 identity provider; ``base_url`` is the SOAP endpoint URL
    (plus auth, timeout... of HttpOptions)."""

    target_id: str | None = None
    """The SPML target to provision to (``targetID``), when the provider has several."""
    container_id: str | None = None
    """psoID of the container new accounts and groups are added to (``containerID``)."""
    soap_action: str | None = ""
    """SOAPAction header value; ``{operation}`` becomes the request's element name (e.g.
    ``urn:oasis:names:tc:SPML:2:0:req/{operation}``); null sends no header."""
    synchronous: bool = True
    """Ask for ``executionMode="synchronous"``; false lets the target choose."""
    object_class: str | list[str] = "inetOrgPerson"
    username_attribute: str = "uid"
    """The DSML attribute carrying the account's user name (also used to find it)."""
    pso_id: str | None = None
    """psoID to ask for: a template with ``{username}`` or ``{username_dn}`` (escaped as
    a DN value, RFC 4514). Accounts are then found by lookup. Null: the target assigns
    the psoID, and accounts are found with the search capability."""
    send_password: bool = False
    password_via: Literal["attribute", "capability"] = "attribute"
    """``attribute``: the password goes in the addRequest data; ``capability``: a
    setPasswordRequest (SPML password capability) follows the add."""
    password_attribute: str = "userPassword"
    initial_password: SecretRef | None = None
    """The password new accounts get when the change carries none (env:, file:, keyring:)."""
    disable: Literal["suspend", "attribute"] = "suspend"
    """How ``deprovision: disable`` disables: the suspend capability, or an attribute."""
    disable_attribute: str | None = None
    disable_value: str = "true"
    enable_value: str | None = None
    """Value that re-enables the account; null deletes ``disable_attribute`` instead."""
    roles: Literal["groups", "attribute"] = "groups"
    group_object_class: str = "groupOfNames"
    group_name_attribute: str = "cn"
    member_attribute: str = "member"
    """Group attribute listing the members' psoIDs (``roles: groups``)."""
    group_pso_id: str | None = None
    """psoID template for groups, with ``{name}`` or ``{name_dn}``; null: assigned."""
    role_attribute: str = "roles"
    """Account attribute holding role names (``roles: attribute``)."""
    mark_attribute: str | None = None
    """An account attribute that carries idprov's mark (``employeeNumber``, say): the
    value mapped to it (map it from ``{ID}``), else the local user id, sent when idprov
    creates the account. After a lost reply, only an account holding it is adopted as
    idprov's. Null: no mark, and an ambiguous create needs ``on_conflict: adopt``."""
    group_mark_attribute: str | None = None
    """The same for groups (``roles: groups``; ``description``, say): the role's id."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.object_classes or not all(self.object_classes):
            raise Invalid("name at least one object class", "object_class")
        for key in (
            "username_attribute",
            "password_attribute",
            "group_name_attribute",
            "member_attribute",
            "role_attribute",
            "disable_attribute",
            "mark_attribute",
            "group_mark_attribute",
        ):
            value = getattr(self, key)
            if value is not None and not ATTRIBUTE_NAME.match(value):
                raise Invalid(f"{value!r} is not a DSML attribute name", key)
        _template(self.pso_id, "pso_id", ("username", "username_dn"))
        _template(self.group_pso_id, "group_pso_id", ("name", "name_dn"))
        _template(self.soap_action, "soap_action", ("operation",))
        if self.soap_action is not None and '"' in self.soap_action:
            raise Invalid("write the value without quotes: idprov quotes it", "soap_action")
        if self.disable == "attribute" and self.disable_attribute is None:
            raise Invalid("disable: attribute needs disable_attribute", "disable_attribute")

    @property
    def object_classes(self) -> list[str]:
        return [self.object_class] if isinstance(self.object_class, str) else self.object_class


class SpmlConnector(Connector):
    """Provision to an SPML 2.0 provider (DSMLv2 profile, SOAP 1.1)."""

    name = "spml"
    description = "SPML 2.0 (OASIS) over SOAP 1.1, DSMLv2 profile: accounts and groups or roles"
    Options = SpmlOptions
    options: SpmlOptions
    client: httpx.Client
    default_attributes: ClassVar[Mapping[str, str]] = {
        "cn": "{UN}",
        "sn": "{family_name}",
        "givenName": "{given_name}",
        "displayName": "{display_name}",
        "mail": "{email}",
        "telephoneNumber": "{phone_number}",
        "mobile": "{mobile}",
        "title": "{title}",
        "employeeNumber": "{employee_number}",
        "employeeType": "{employee_type}",
        "departmentNumber": "{department}",
        "o": "{organization}",
        "preferredLanguage": "{locale}",
    }
    """inetOrgPerson attributes (RFC 2798). ``cn`` is required there, so it defaults to
    the username; map ``cn: "{given_name} {family_name}"`` for a full name."""

    def __init__(self, idp: Any, options: Any, client: Any) -> None:
        super().__init__(idp, options, client)
        self._auth: dict[str, str] | None = None
        self._advertised: set[str] | None = None
        self._lock = threading.Lock()
        opts: SpmlOptions = options
        reserved = [
            opts.username_attribute,
            opts.password_attribute,
            opts.role_attribute if opts.roles == "attribute" else None,
            opts.disable_attribute if idp.deprovision == "disable" else None,
            "objectclass",
        ]
        self._reserved = {name.lower() for name in reserved if name}
        mapping = {**self.default_attributes, **idp.attributes}
        for name, template in mapping.items():
            if template is not None and not ATTRIBUTE_NAME.match(name):
                raise ConfigError(
                    f"identity provider {idp.name}, attributes: {name!r} is not a DSML "
                    "attribute name",
                    hint="SPML targets name attributes as LDAP does: givenName, mail, 2.5.4.4",
                )

    # ---- the wire
    def new_request_id(self) -> str:
        """A unique requestID (an xsd:ID, so it may not start with a digit)."""
        return f"idprov-{uuid.uuid4().hex}"

    def request(
        self, what: str, operation: str, namespace: str = SPML, **attrs: Any
    ) -> SpmlRequest:
        mode = "synchronous" if self.options.synchronous else None
        return SpmlRequest(
            what, namespace, operation, self.new_request_id(), executionMode=mode, **attrs
        )

    def call(self, request: SpmlRequest) -> Any:
        """POST ``request``; the response element of its successful reply."""
        headers = {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml"}
        if self.options.soap_action is not None:
            action = self.options.soap_action.replace("{operation}", request.operation)
            headers["SOAPAction"] = f'"{action}"'
        if self._auth is None:
            self._auth = auth_headers(self.options)  # read the secret once
        headers.update(self._auth)
        response = send(
            self.client,
            "POST",
            self.options.base_url,
            what=request.what,
            headers=headers,
            content=request.to_bytes(),
        )
        return read_reply(response, request)

    def _pso_id(self, request: SpmlRequest, pso_id: str) -> None:
        request.pso_id(pso_id, self.options.target_id)

    # ---- generic PSO operations
    def _add(self, what: str, data: Mapping[str, Sequence[str]], pso_id: str | None) -> str:
        """addRequest; the new PSO's psoID (returned, else the one asked for)."""
        request = self.request(
            what, "addRequest", returnData="identifier", targetID=self.options.target_id
        )
        if pso_id is not None:
            self._pso_id(request, pso_id)
        if self.options.container_id is not None:
            request.pso_id(self.options.container_id, self.options.target_id, "containerID")
        request.data(data)
        found = pso_ids(self.call(request)) or ([pso_id] if pso_id else [])
        if not found:
            raise TargetError(
                f"{what}: added, but the reply names no psoID",
                retryable=True,
                ambiguous=True,
            )
        return found[0]

    def _modify(
        self,
        what: str,
        pso_id: str,
        replace: Mapping[str, Sequence[str]] | None = None,
        delete: Mapping[str, Sequence[str]] | None = None,
        add: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not (replace or delete or add):
            return
        request = self.request(what, "modifyRequest", returnData="identifier")
        self._pso_id(request, pso_id)
        request.modification("replace", replace or {})
        request.modification("add", add or {})
        request.modification("delete", delete or {})
        self.call(request)

    def _delete(self, what: str, pso_id: str) -> None:
        request = self.request(what, "deleteRequest")
        self._pso_id(request, pso_id)
        try:
            self.call(request)
        except RemoteNotFound:
            pass  # already gone: what we wanted

    def _lookup(self, what: str, pso_id: str, return_data: str) -> Any | None:
        """The ``pso`` element of a lookupResponse, or None if there is no such PSO."""
        request = self.request(what, "lookupRequest", returnData=return_data)
        self._pso_id(request, pso_id)
        try:
            reply = self.call(request)
        except RemoteNotFound:
            return None
        psos = _children(reply, "pso")
        return psos[0] if psos else reply

    def _lookup_id(self, what: str, pso_id: str) -> str | None:
        pso = self._lookup(what, pso_id, "identifier")
        if pso is None:
            return None
        return next(iter(_ids(pso)), pso_id)

    def search(
        self,
        what: str,
        matches: Iterable[tuple[str, str]],
        limit: int = 0,
        return_data: str = "identifier",
    ) -> list[Any]:
        """The ``pso`` elements whose attributes equal ``matches`` (search capability),
        following the target's result iterator."""
        request = self.request(
            what,
            "searchRequest",
            SEARCH,
            returnData=return_data,
            maxSelect=str(limit) if limit else None,
        )
        query = request.child(None, SEARCH, "query", scope="subTree")
        if self.options.target_id:
            query.set("targetID", self.options.target_id)
        if self.options.container_id is not None:
            request.pso_id(self.options.container_id, self.options.target_id, "basePsoID", query)
        parent = request.child(query, DSML, "filter")
        pairs = list(matches)
        if len(pairs) > 1:
            parent = request.child(parent, DSML, "and")
        for name, value in pairs:
            request.value(request.child(parent, DSML, "equalityMatch", name=name), name, value)
        reply = self.call(request)
        found = _children(reply, "pso")
        while (iterator := next(iter(_children(reply, "iterator")), None)) is not None:
            if limit and len(found) >= limit:
                break
            following = self.request(what, "iterateRequest", SEARCH)
            following.child(None, SEARCH, "iterator", ID=iterator.get("ID"))
            reply = self.call(following)
            found += _children(reply, "pso")
        return found

    def search_ids(
        self, what: str, matches: Iterable[tuple[str, str]], limit: int = 0
    ) -> list[str]:
        found = [pso_id for pso in self.search(what, matches, limit) for pso_id in _ids(pso)]
        return found[:limit] if limit else found

    def _find(
        self, what: str, matches: list[tuple[str, str]], template_id: str | None
    ) -> str | None:
        if template_id is not None:
            return self._lookup_id(what, template_id)
        found = self.search_ids(what, matches, limit=2)
        if len(found) > 1:
            condition = " and ".join(f"{n}={v}" for n, v in matches)
            raise TargetError(
                f"{what}: more than one PSO matches {condition}; idprov cannot tell which",
                hint="make the attribute unique at the target, or set a psoID template",
            )
        return found[0] if found else None

    # ---- accounts
    def account_pso_id(self, user_name: str) -> str | None:
        """The psoID the ``pso_id`` template gives ``user_name`` (None: target-assigned)."""
        template = self.options.pso_id
        if template is None:
            return None
        return template.replace("{username_dn}", dn_value(user_name)).replace(
            "{username}", user_name
        )

    def mapped(self, attributes: Mapping[str, Any]) -> dict[str, list[str]]:
        """The mapped attributes as DSML values, without those the connector owns."""
        out = {}
        for name, value in attributes.items():
            values = dsml_values(value)
            if values and name.lower() not in self._reserved:
                out[name] = values
        return out

    def account_data(self, account: Account) -> dict[str, list[str]]:
        data = {
            "objectclass": self.options.object_classes,
            self.options.username_attribute: [account.user_name],
            **self.mapped(account.attributes),
        }
        mark = self.options.mark_attribute
        if mark is not None and mark.lower() not in {k.lower() for k in data}:
            data[mark] = [account.local_id]
        return data

    def _marked(self, pso: Any, attribute: str | None, value: str | None) -> bool:
        """Whether ``pso`` (returned with its data) holds ``value`` in ``attribute``."""
        if attribute is None or value is None:
            return False
        data = {name.lower(): values for name, values in pso_data(pso).items()}
        return value in data.get(attribute.lower(), [])

    def password(self, account: Account) -> str | None:
        """The password to send with a new account, if configured to: the change's own
        (when the engine passes one), else ``initial_password``. Never logged."""
        if not self.options.send_password:
            return None
        given = getattr(account, "password", None)
        if given:
            return str(given)
        if self.options.initial_password is not None:
            return self.options.initial_password.reveal()
        return None

    def password_given(self, account: Account) -> str | None:
        """The password of `user passwd` (or `user add`) to send on an update."""
        if not self.options.send_password or not account.password:
            return None
        return account.password

    def create_user(self, account: Account) -> str:
        what = f"create user {account.user_name}"
        data = self.account_data(account)
        password = self.password(account)
        if self.options.send_password and self.options.password_via == "capability":
            # every create, with a password this time or not: the setting is wrong
            self._require(PASSWORD, what, "set password_via: attribute (then `idprov user passwd`)")
        if password is not None and self.options.password_via == "attribute":
            data[self.options.password_attribute] = [password]
        remote_id = self._add(what, data, self.account_pso_id(account.user_name))
        if password is not None and self.options.password_via == "capability":
            self._set_password(what, remote_id, password, created=True)
        return remote_id

    def _require(self, namespace: str, what: str, fix: str) -> None:
        """Refuse, before anything is sent, an operation that needs a capability the
        target's listTargets does not advertise (nothing is known: go ahead)."""
        advertised = self._capabilities()
        if advertised is not None and namespace not in advertised:
            raise TargetError(
                f"{what}: the target does not advertise {namespace}, which this needs; "
                "nothing was sent",
                hint=f"{fix}, or ask the target's administrators for the capability",
            )

    def _capabilities(self) -> set[str] | None:
        """The capabilities of the target idprov provisions to (listTargets, read once)."""
        with self._lock:
            if self._advertised is None:
                try:
                    targets = self._targets(
                        self.call(self.request("list targets", "listTargetsRequest"))
                    )
                except TargetError:
                    return None
                target = targets.get(self.options.target_id or "") or next(
                    iter(targets.values()), None
                )
                self._advertised = set(target["capabilities"]) if target else set()
            return self._advertised

    def _set_password(self, what: str, remote_id: str, password: str, created: bool) -> None:
        request = self.request(what, "setPasswordRequest", PASSWORD)
        self._pso_id(request, remote_id)
        request.set_text(request.child(None, PASSWORD, "password"), "the password", password)
        try:
            self.call(request)
        except TargetError as exc:
            if not created:
                raise
            raise TargetError(  # the account exists: a repeat looks it up and adopts it
                f"{exc.message} (the account {remote_id} was created without its password)",
                status=exc.status,
                retryable=exc.retryable,
                ambiguous=True,
                hint=exc.hint or "set it again with `idprov user passwd`",
            ) from exc

    def _user_matches(self, user_name: str) -> list[tuple[str, str]]:
        return [
            ("objectclass", self.options.object_classes[0]),
            (self.options.username_attribute, user_name),
        ]

    def find_user(self, user_name: str) -> str | None:
        matches = self._user_matches(user_name)
        return self._find(f"look up user {user_name}", matches, self.account_pso_id(user_name))

    def lookup_user(self, account: Account) -> RemoteMatch | None:
        """The account of ``account``'s user name, with its data; idprov's when it
        holds idprov's mark (``mark_attribute``)."""
        name = account.user_name
        found = self._find_pso(
            f"look up user {name}", self._user_matches(name), self.account_pso_id(name)
        )
        if found is None:
            return None
        remote_id, pso = found
        mark = self.options.mark_attribute
        value = next(iter(self.account_data(account).get(mark or "", [])), None)
        return RemoteMatch(remote_id, ours=self._marked(pso, mark, value))

    def _find_pso(
        self, what: str, matches: list[tuple[str, str]], template_id: str | None
    ) -> tuple[str, Any] | None:
        """(psoID, pso element with its data) of the one PSO that matches, or None."""
        if template_id is not None:
            pso = self._lookup(what, template_id, "data")
            return None if pso is None else (next(iter(_ids(pso)), template_id), pso)
        psos = self.search(what, matches, limit=2, return_data="data")
        if len(psos) > 1:
            condition = " and ".join(f"{n}={v}" for n, v in matches)
            raise TargetError(
                f"{what}: more than one PSO matches {condition}; idprov cannot tell which",
                hint="make the attribute unique at the target, or set a psoID template",
            )
        if not psos or not _ids(psos[0]):
            return None
        return _ids(psos[0])[0], psos[0]

    def read_user(self, remote_id: str) -> dict[str, Any] | None:
        pso = self._lookup(f"read user {remote_id}", remote_id, "data")
        if pso is None:
            return None
        return {"psoID": remote_id, "data": pso_data(pso)}

    def drift(self, remote: dict[str, Any], account: Account) -> list[str]:
        """Attributes whose values at the target differ from what was sent (any order;
        the target may hold more object classes than idprov sends)."""
        have = {name.lower(): values for name, values in remote.get("data", {}).items()}
        out = []
        for name, values in self.account_data(account).items():
            got = set(have.get(name.lower(), []))
            if not (set(values) <= got if name == "objectclass" else set(values) == got):
                out.append(name)
        return out

    def list_users(self) -> list[tuple[str, str]]:
        """(psoID, user name) of every account of the object class (search capability)."""
        psos = self.search(
            "list users", [("objectclass", self.options.object_classes[0])], return_data="data"
        )
        wanted = self.options.username_attribute.lower()
        out = []
        for pso in psos:
            data = {name.lower(): values for name, values in pso_data(pso).items()}
            out += [(pso_id, (data.get(wanted) or [""])[0]) for pso_id in _ids(pso)]
        return out

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        """Replace what changed since ``previous`` and delete what is no longer mapped.
        Without ``previous`` (re-enabling a disabled account) everything is replaced, and
        the account is resumed or its disable attribute reset."""
        what = f"update user {account.user_name}"
        new = self.mapped(account.attributes)
        if previous is None:
            replace = {self.options.username_attribute: [account.user_name], **new}
            delete: dict[str, list[str]] = {}
            self._reset_disable_attribute(replace, delete)
        else:
            old = self.mapped(previous)
            kept = {k.lower() for k in new}
            replace = {k: v for k, v in new.items() if old.get(k) != v}
            delete = {k: [] for k in old if k.lower() not in kept}
        password = self.password_given(account)
        if password is not None and self.options.password_via == "attribute":
            replace[self.options.password_attribute] = [password]
        if password is not None and self.options.password_via == "capability":
            self._require(PASSWORD, what, "set password_via: attribute")
        self._modify(what, remote_id, replace=replace, delete=delete)
        if password is not None and self.options.password_via == "capability":
            self._set_password(what, remote_id, password, created=False)
        if previous is None and self.options.disable == "suspend" and self._disables():
            request = self.request(what, "resumeRequest", SUSPEND)
            self._pso_id(request, remote_id)
            self.call(request)

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """A modify replacing the naming attribute (and what else changed). The psoID,
        the ledger's remote id, stays: SPML 2.0 core has no operation that changes it,
        and a directory-backed target renames the entry itself when asked to."""
        what = f"rename user {previous_user_name} to {account.user_name}"
        new = self.mapped(account.attributes)
        old = self.mapped(previous or {})
        replace = {k: v for k, v in new.items() if old.get(k) != v}
        replace[self.options.username_attribute] = [account.user_name]
        kept = {k.lower() for k in new}
        delete: dict[str, list[str]] = {k: [] for k in old if k.lower() not in kept}
        self._modify(what, remote_id, replace=replace, delete=delete)

    def _disables(self) -> bool:
        return self.idp.deprovision == "disable"

    def _reset_disable_attribute(
        self, replace: dict[str, list[str]], delete: dict[str, list[str]]
    ) -> None:
        """Add the re-enabling change of ``disable: attribute`` to a modification."""
        name = self.options.disable_attribute
        if self.options.disable != "attribute" or name is None or not self._disables():
            return
        if self.options.enable_value is None:
            delete[name] = []
        else:
            replace[name] = [self.options.enable_value]

    def disable_user(self, remote_id: str, account: Account) -> None:
        what = f"disable user {account.user_name}"
        name = self.options.disable_attribute
        if self.options.disable == "attribute" and name is not None:
            self._modify(what, remote_id, replace={name: [self.options.disable_value]})
            return
        request = self.request(what, "suspendRequest", SUSPEND)
        self._pso_id(request, remote_id)
        self.call(request)

    def delete_user(self, remote_id: str) -> None:
        self._delete(f"delete user {remote_id}", remote_id)

    # ---- roles
    def group_pso_id(self, name: str) -> str | None:
        template = self.options.group_pso_id
        if template is None:
            return None
        return template.replace("{name_dn}", dn_value(name)).replace("{name}", name)

    def create_group(self, group: GroupSpec) -> str:
        what = f"create group {group.display_name}"
        if self.options.roles == "attribute":
            self.change_members(group.display_name, group.member_ids, [])
            return group.display_name
        data = {
            "objectclass": [self.options.group_object_class],
            self.options.group_name_attribute: [group.display_name],
        }
        if group.member_ids:
            data[self.options.member_attribute] = list(group.member_ids)
        if self.options.group_mark_attribute is not None:
            data[self.options.group_mark_attribute] = [group.local_id]
        return self._add(what, data, self.group_pso_id(group.display_name))

    def find_group(self, display_name: str) -> str | None:
        if self.options.roles == "attribute":
            return display_name  # a role is a value, held or not: it always "exists"
        matches = [
            ("objectclass", self.options.group_object_class),
            (self.options.group_name_attribute, display_name),
        ]
        return self._find(f"look up group {display_name}", matches, self.group_pso_id(display_name))

    def lookup_group(self, group: GroupSpec) -> RemoteMatch | None:
        """With ``roles: attribute`` a role is a value, nothing is created: idprov's.
        Else the group PSO, idprov's when it holds ``group_mark_attribute``."""
        name = group.display_name
        if self.options.roles == "attribute":
            return RemoteMatch(name, ours=True)
        matches = [
            ("objectclass", self.options.group_object_class),
            (self.options.group_name_attribute, name),
        ]
        found = self._find_pso(f"look up group {name}", matches, self.group_pso_id(name))
        if found is None:
            return None
        mark = self.options.group_mark_attribute
        return RemoteMatch(found[0], ours=self._marked(found[1], mark, group.local_id))

    def rename_group(self, remote_id: str, display_name: str) -> None:
        what = f"rename group {remote_id} to {display_name}"
        if self.options.roles == "attribute":
            raise TargetError(
                f"{what}: with roles: attribute a role is known at the target by its name, "
                "which is its remote id; renaming it is not supported",
                hint="remove the role from its users, rename it, and assign it again",
            )
        self._modify(what, remote_id, replace={self.options.group_name_attribute: [display_name]})

    def delete_group(self, remote_id: str) -> None:
        what = f"delete group {remote_id}"
        if self.options.roles == "attribute":
            holders = self.search_ids(what, [(self.options.role_attribute, remote_id)])
            self.change_members(remote_id, [], holders)
            return
        self._delete(what, remote_id)

    def change_members(self, remote_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        what = f"change members of group {remote_id}"
        if self.options.roles == "groups":
            member = self.options.member_attribute
            self._modify(
                what,
                remote_id,
                add={member: list(add)} if add else None,
                delete={member: list(remove)} if remove else None,
            )
            return
        role = {self.options.role_attribute: [remote_id]}
        for user in add:
            self._modify(f"give role {remote_id} to user {user}", user, add=role)
        for user in remove:
            try:
                self._modify(f"take role {remote_id} from user {user}", user, delete=role)
            except RemoteNotFound:
                pass  # the account is gone, and the role with it

    # ---- check
    def check(self) -> CheckReport:
        """listTargets: reachability, authentication, each target's profile and
        capabilities, and whether the capabilities these options rely on are there."""
        report = CheckReport()
        request = self.request("list targets", "listTargetsRequest")
        try:
            reply = self.call(request)
        except RemoteNotFound as exc:
            report.reachable, report.authenticated = True, None
            report.messages.append(f"{exc.message}: check base_url, the SOAP endpoint's URL")
            return report
        except TargetError as exc:
            report.reachable = exc.status is not None
            report.messages.append(exc.message)
            return report
        report.reachable = report.authenticated = True
        targets = self._targets(reply)
        report.capabilities = {"targets": targets}
        report.messages += self._check_targets(targets)
        return report

    @staticmethod
    def _targets(reply: Any) -> dict[str, dict[str, Any]]:
        """targetID -> profile and capabilities, from a listTargetsResponse."""
        targets = {}
        for target in _children(reply, "target"):
            capabilities = [
                c.get("namespaceURI", "")
                for group in _children(target, "capabilities")
                for c in _children(group, "capability")
            ]
            targets[target.get("targetID") or ""] = {
                "profile": target.get("profile"),
                "capabilities": capabilities,
            }
        return targets

    def _check_targets(self, targets: dict[str, dict[str, Any]]) -> list[str]:
        wanted = self.options.target_id
        if wanted is not None and wanted not in targets:
            return [f"the provider has no target {wanted!r} (it has: {', '.join(targets)})"]
        target = targets.get(wanted or "") or next(iter(targets.values()), None)
        if target is None:
            return ["the provider lists no targets"]
        messages = []
        if target["profile"] not in (None, DSML, DSML_PROFILE):
            messages.append(f"the target's profile is {target['profile']}, not DSMLv2")
        needed = {SEARCH: self.options.pso_id is None}
        needed[SUSPEND] = self._disables() and self.options.disable == "suspend"
        needed[PASSWORD] = self.options.send_password and self.options.password_via == "capability"
        for namespace, used in needed.items():
            if used and namespace not in target["capabilities"]:
                messages.append(f"the target does not advertise {namespace}, which is needed")
        return messages
