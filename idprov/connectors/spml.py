"""SPML 2.0 outbound connector (OASIS SPML v2 with the DSMLv2 profile, over SOAP 1.1).

Older provisioning systems (Oracle/Sun Identity Manager, OpenSPML-based services,
in-house SOAP endpoints) take accounts as SPML 2.0 *provisioning service objects*
(PSOs), each named by a ``psoID``. This module speaks the core operations (add,
modify, delete, lookup, listTargets) and, where the target advertises them, the
search, suspend and password capabilities, as SOAP 1.1 HTTP POSTs to one endpoint.

The psoID the target returns is the remote id kept in the ledger. A ``failure``
reply becomes a :class:`~idprov.connectors.base.TargetError` carrying the target's
``error`` code and ``errorMessage`` text verbatim; a ``pending`` reply (asynchronous
SPML) becomes :class:`~idprov.connectors.spml_wire.RemotePending`, never a success.

This module maps accounts and roles onto PSOs and tells which are idprov's (its mark
attributes); the PSO operations are :mod:`~idprov.connectors.spml_psos`', the
messages (built and read with lxml, hardened) :mod:`~idprov.connectors.spml_wire`'s,
the options :mod:`~idprov.connectors.spml_options`'.

Roles go out either as group PSOs whose member attribute lists the members' psoIDs
(``roles: groups``, for directory-backed targets), or as values of a multi-valued
attribute on each member account (``roles: attribute``, for identity managers that
hold role names on the account). In that mode a role has no remote object: its
remote id is its name.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any, ClassVar

from idprov.connectors.base import (
    Account,
    CheckReport,
    GroupSpec,
    RemoteMatch,
    RemoteNotFound,
    TargetError,
    check_mark,
)
from idprov.connectors.spml_options import SpmlOptions
from idprov.connectors.spml_psos import SpmlPsoConnector
from idprov.connectors.spml_wire import (
    ATTRIBUTE_NAME,
    DSML,
    DSML_PROFILE,
    PASSWORD,
    SEARCH,
    SUSPEND,
    dn_value,
    dsml_values,
    ids_of,
    list_targets,
    pso_data,
)
from idprov.errors import ConfigError


class SpmlConnector(SpmlPsoConnector):
    """Provision to an SPML 2.0 provider (DSMLv2 profile, SOAP 1.1)."""

    name = "spml"
    description = "SPML 2.0 (OASIS) over SOAP 1.1, DSMLv2 profile: accounts and groups or roles"
    Options = SpmlOptions
    options: SpmlOptions
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
        self._reserved = self.held_back(options)
        mapping = {**self.default_attributes, **idp.attributes}
        for name, template in mapping.items():
            if template is not None and not ATTRIBUTE_NAME.match(name):
                raise ConfigError(
                    f"identity provider {idp.name}, attributes: {name!r} is not a DSML "
                    "attribute name",
                    hint="SPML targets name attributes as LDAP does: givenName, mail, 2.5.4.4",
                )

    @classmethod
    def held_back(cls, options: Any) -> frozenset[str]:
        """The attributes the connector writes itself, never from the mapping: the user
        name, password, role and disable attributes, the object classes, and idprov's
        mark (written on create alone, :meth:`account_data`)."""
        opts: SpmlOptions = options
        reserved = [
            opts.username_attribute,
            opts.password_attribute,
            opts.role_attribute if opts.roles == "attribute" else None,
            opts.disable_attribute if opts.disable == "attribute" else None,
            opts.mark_attribute,
            "objectclass",
        ]
        return frozenset(name.casefold() for name in reserved if name)

    @classmethod
    def check_mapping(cls, idp: Any, options: Any) -> None:
        """Also: the mapping may not fill ``mark_attribute`` (idprov's id alone)."""
        super().check_mapping(idp, options)
        defaults = cls.default_attributes_for(options)
        check_mark(options.mark_attribute, "mark_attribute", defaults, idp.attributes)

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
            if values and name.casefold() not in self._reserved:
                out[name] = values
        return out

    def account_data(self, account: Account) -> dict[str, list[str]]:
        """What a new account holds: its object classes, user name, the mapped
        attributes and idprov's mark (the local id, never a mapped value)."""
        data = {
            "objectclass": self.options.object_classes,
            self.options.username_attribute: [account.user_name],
            **self.mapped(account.attributes),
        }
        if self.options.mark_attribute is not None:
            data[self.options.mark_attribute] = [account.local_id]
        return data

    def carries_mark(self, remote: Mapping[str, Any], account: Account) -> bool | None:
        """Whether the account (:meth:`read_user`'s) holds the local id in
        ``mark_attribute`` (None: no mark configured)."""
        mark = self.options.mark_attribute
        if mark is None:
            return None
        data = {name.casefold(): values for name, values in remote.get("data", {}).items()}
        return account.local_id in data.get(mark.casefold(), [])

    def stamp_mark(self, remote_id: str, account: Account) -> None:
        """A modify replacing ``mark_attribute`` with the local id, and nothing else."""
        mark = self.options.mark_attribute
        if mark is None:
            super().stamp_mark(remote_id, account)
            return
        what = f"stamp idprov's mark on user {account.user_name}"
        self._modify(what, remote_id, replace={mark: [account.local_id]})

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
        return RemoteMatch(remote_id, ours=self._marked(pso, mark, account.local_id))

    def read_user(self, remote_id: str) -> dict[str, Any] | None:
        """The account's psoID, data and whether it is active (None: the target
        cannot tell; see :meth:`_active`)."""
        what = f"read user {remote_id}"
        pso = self._lookup(what, remote_id, "data")
        if pso is None:
            return None
        data = pso_data(pso)
        return {"psoID": remote_id, "data": data, "active": self._active(what, remote_id, data)}

    def _active(self, what: str, remote_id: str, data: Mapping[str, list[str]]) -> bool | None:
        """Whether the account is active: its ``disable_attribute`` (``disable:
        attribute``), else the suspend capability's activeRequest, where the target
        advertises it. None: the target cannot tell."""
        name = self.options.disable_attribute
        if self.options.disable == "attribute" and name is not None:
            held = {k.lower(): v for k, v in data.items()}.get(name.lower(), [])
            return self.options.disable_value not in held
        if self._lacks(SUSPEND):
            return None
        return self._asked_active(what, remote_id)

    def _asked_active(self, what: str, remote_id: str) -> bool | None:
        """The suspend capability's activeRequest: whether the PSO is active (None: the
        provider implements the capability in part and cannot say)."""
        asked = self.request(what, "activeRequest", SUSPEND)
        self._pso_id(asked, remote_id)
        try:
            known = self.call(asked).get("active")
        except TargetError as exc:  # a provider that suspends but cannot say
            if "SPML unsupportedOperation" not in exc.message:
                raise
            return None
        return {"true": True, "false": False}.get(known or "")

    def drift(self, remote: dict[str, Any], account: Account) -> list[str]:
        """Attributes whose values at the target differ from what was sent (any order;
        the target may hold more object classes than idprov sends). The mark is not
        one: an adopted account never gets it. ``active``: the account is suspended
        (or holds ``disable_value``) at the target while idprov has it enabled. A
        mapped attribute idprov holds no value in (:meth:`~Connector.unset`) is drift
        when the target holds one."""
        have = {name.lower(): values for name, values in remote.get("data", {}).items()}
        data = self.account_data(account)
        data.pop(self.options.mark_attribute or "", None)
        sent = {name.lower() for name in data}
        out = [
            name
            for name in self.unset(account)
            if name.lower() not in sent and any(have.get(name.lower(), []))
        ]
        for name, values in data.items():
            got = set(have.get(name.lower(), []))
            if not (set(values) <= got if name == "objectclass" else set(values) == got):
                out.append(name)
        if account.active and remote.get("active") is False:
            out.append("active")
        return out

    def list_users(self) -> list[tuple[str, str]]:
        """(psoID, user name) of every account of the object class (search capability;
        ``NotImplementedError`` where listTargets leaves it out: nothing is sent that
        the target does not offer, and verify says the accounts were not listed)."""
        if self._lacks(SEARCH):
            raise NotImplementedError
        psos = self.search(
            "list users", [("objectclass", self.options.object_classes[0])], return_data="data"
        )
        wanted = self.options.username_attribute.lower()
        out = []
        for pso in psos:
            data = {name.lower(): values for name, values in pso_data(pso).items()}
            out += [(pso_id, (data.get(wanted) or [""])[0]) for pso_id in ids_of(pso)]
        return out

    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        """Replace what changed since ``previous`` (None: everything) and delete what is
        no longer mapped. The account is resumed, or its disable attribute reset, only
        when idprov enables again an account it disabled (``account.enable``:
        ``deprovision: disable``, or the ``active`` claim whatever ``deprovision``
        says): one an administrator suspended stays so, adopted or repaired."""
        what = f"update user {account.user_name}"
        new = self.mapped(account.attributes)
        delete: dict[str, list[str]] = {}
        if previous is None:
            replace = {self.options.username_attribute: [account.user_name], **new}
        else:
            old = self.mapped(previous)
            kept = {k.lower() for k in new}
            replace = {k: v for k, v in new.items() if old.get(k) != v}
            # with those recorded as sent null (a repair: the target holds a value)
            nulls = [
                k for k, v in previous.items() if v is None and k.casefold() not in self._reserved
            ]
            delete = {k: [] for k in [*old, *nulls] if k.lower() not in kept}
        if account.enable:
            self._reset_disable_attribute(replace, delete)
        password = self.password_given(account)
        if password is not None and self.options.password_via == "attribute":
            replace[self.options.password_attribute] = [password]
        if password is not None and self.options.password_via == "capability":
            self._require(PASSWORD, what, "set password_via: attribute")
        self._modify(what, remote_id, replace=replace, delete=delete)
        if password is not None and self.options.password_via == "capability":
            self._set_password(what, remote_id, password, created=False)
        if account.enable:
            self._resume(what, remote_id)

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

    def _resume(self, what: str, remote_id: str) -> None:
        """Resume the account (``disable: suspend``): idprov may have suspended it for
        ``deprovision: disable`` or for the ``active`` claim. Not asked of a target
        whose listTargets advertises no suspend capability: nothing there was
        suspended by idprov."""
        if self.options.disable != "suspend":
            return
        if self._lacks(SUSPEND):
            return
        request = self.request(what, "resumeRequest", SUSPEND)
        self._pso_id(request, remote_id)
        self.call(request)

    def _reset_disable_attribute(
        self, replace: dict[str, list[str]], delete: dict[str, list[str]]
    ) -> None:
        """Add the re-enabling change of ``disable: attribute`` to a modification."""
        name = self.options.disable_attribute
        if self.options.disable != "attribute" or name is None:
            return
        if self.options.enable_value is None:
            delete[name] = []
        else:
            replace[name] = [self.options.enable_value]

    def disable_user(self, remote_id: str, account: Account) -> bool | None:
        """Suspend the account (or set the disable attribute), read first: one an
        administrator suspended is left alone, and False says so (idprov then never
        resumes it). The Suspend capability's activeRequest, or a lookup of the
        attribute, tells."""
        what = f"disable user {account.user_name}"
        name = self.options.disable_attribute
        if self.options.disable == "attribute" and name is not None:
            pso = self._lookup(what, remote_id, "data")
            held = pso_data(pso).get(name, []) if pso is not None else []
            if self.options.disable_value in held:
                return False
            self._modify(what, remote_id, replace={name: [self.options.disable_value]})
            return True
        known = self._asked_active(what, remote_id)  # None: cannot say, so suspend
        if known is False:
            return False
        request = self.request(what, "suspendRequest", SUSPEND)
        self._pso_id(request, remote_id)
        self.call(request)
        return known

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

    def read_group(self, remote_id: str) -> tuple[str, Container[str]] | None:
        """The group's name and the psoIDs of its members; None when no group PSO has
        the psoID (deleted at the target, or not a group). ``roles: groups``: a lookup
        of the group PSO with its data (core SPML), its ``member_attribute`` read.
        ``roles: attribute``: the role is its name, held by the accounts whose
        ``role_attribute`` holds it, found by the search capability: where the target
        does not advertise it, the members cannot be read (``NotImplementedError``:
        verify says the groups were not checked). Where it cannot say (listTargets
        failed for a moment) the search is sent, as :meth:`list_users` sends it: its
        failure is an error of that group, not every group left unchecked."""
        options = self.options
        if options.roles == "attribute":
            if self._lacks(SEARCH):
                raise NotImplementedError
            what = f"read the holders of role {remote_id}"
            return remote_id, set(self.searchids_of(what, [(options.role_attribute, remote_id)]))
        pso = self._lookup(f"read group {remote_id}", remote_id, "data")
        if pso is None:
            return None
        data = {name.lower(): values for name, values in pso_data(pso).items()}
        classes = {c.lower() for c in data.get("objectclass", [])}
        if classes and options.group_object_class.lower() not in classes:
            return None  # an account, say: no group
        name = (data.get(options.group_name_attribute.lower()) or [""])[0]
        return name, set(data.get(options.member_attribute.lower(), []))

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
            holders = self.searchids_of(what, [(self.options.role_attribute, remote_id)])
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
        targets = list_targets(reply)
        report.capabilities = {"targets": targets}
        report.messages += self._check_targets(targets)
        return report

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
