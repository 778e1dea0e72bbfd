"""Options of an SPML 2.0 identity provider, validated from its ``options:``.

Where the SOAP endpoint is and which target and container to provision to, how
accounts and groups are named (psoID templates, attributes) and found, how passwords,
disabling and roles go out (attributes or SPML capabilities), and which attributes
carry idprov's mark. Used by :mod:`idprov.connectors.spml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.connectors.http import HttpOptions
from idprov.connectors.spml_wire import ATTRIBUTE_NAME


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
    """An account attribute that carries idprov's mark (``description``, say): the
    local user id, sent when idprov creates the account, never changed by an update.
    After a lost reply, only an account holding it is adopted as idprov's. The
    attribute mapping may not fill it (but from ``{ID}``): `config validate` refuses.
    Null: no mark, and an ambiguous create needs ``on_conflict: adopt``."""
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
        self._check_marks()

    def _check_marks(self) -> None:
        """A mark attribute holds idprov's id alone: not one the connector writes else."""
        taken = {
            "mark_attribute": (
                "username_attribute",
                "password_attribute",
                "role_attribute",
                "disable_attribute",
            ),
            "group_mark_attribute": ("group_name_attribute", "member_attribute"),
        }
        for key, others in taken.items():
            mark = getattr(self, key)
            for other in others:
                value = getattr(self, other)
                if mark is not None and value is not None and mark.lower() == value.lower():
                    raise Invalid(
                        f"{mark} is {other} too: the mark must be an attribute that holds "
                        "only idprov's id",
                        key,
                    )

    @property
    def object_classes(self) -> list[str]:
        return [self.object_class] if isinstance(self.object_class, str) else self.object_class
