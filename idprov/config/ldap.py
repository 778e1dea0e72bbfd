"""Configuration of LDAP userstores (``type: ldap``), apart from the other models so
that commands on the embedded default do not pay for it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from idprov.config.models import UserstoreConfig
from idprov.config.schema import Invalid
from idprov.config.secrets import SecretRef
from idprov.config.urls import refuse_url_credentials

LDAP_ATTRIBUTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)$")
"""An LDAP attribute type: a name (``givenName``) or an OID (``2.5.4.42``)."""
BIND_KEYS = "bind_dn and bind_password: env:NAME (or file:PATH, keyring:NAME)"
"""Where an LDAP userstore's credentials go (never into its url)."""

DEFAULT_LDAP_CLAIMS: dict[str, str] = {
    "email": "mail",
    "given_name": "givenName",
    "family_name": "sn",
    "display_name": "displayName",
    "phone_number": "telephoneNumber",
    "mobile": "mobile",
    "title": "title",
    "department": "departmentNumber",
    "organization": "o",
    "employee_number": "employeeNumber",
    "employee_type": "employeeType",
    "locale": "preferredLanguage",
    "street_address": "street",
    "locality": "l",
    "region": "st",
    "postal_code": "postalCode",
}
"""Claim -> attribute of inetOrgPerson (RFC 2798) and its superclasses. ``department``
is ``departmentNumber``, inetOrgPerson's attribute for it (a code or a name), not
``ou``, which names the container entries; map ``department: ou`` where the directory
does that. Claims without an attribute here (``manager``, a DN in LDAP; ``country``,
not allowed on inetOrgPerson) are refused until ``claim_attributes`` maps them."""


@dataclass(frozen=True)
class LdapUserstoreConfig(UserstoreConfig):
    """A directory server (OpenLDAP, 389 DS, ...) over LDAP: users are entries under
    ``user_search_base``, roles are groups under ``group_search_base``."""

    type: Literal["ldap"] = "ldap"
    url: str = ""
    start_tls: bool = False
    ca_file: str | None = None
    bind_dn: str | None = None
    bind_password: SecretRef | None = None
    user_search_base: str = ""
    user_search_scope: Literal["one", "sub"] = "sub"
    user_object_classes: list[str] = field(
        default_factory=lambda: ["inetOrgPerson", "organizationalPerson", "person", "top"]
    )
    username_attribute: str = "uid"
    claim_attributes: dict[str, str | None] = field(default_factory=dict)
    """Claim -> attribute, over :data:`DEFAULT_LDAP_CLAIMS` (null unmaps a claim)."""
    group_search_base: str = ""
    group_object_class: str = "groupOfNames"
    group_name_attribute: str = "cn"
    member_attribute: str = "member"
    empty_member: str | None = None
    """The member DN an empty group holds (groupOfNames needs one); default: the
    group's own DN. Never shown as a member."""
    connect_timeout: float = 10.0
    timeout: float = 30.0
    page_size: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_connection()
        for key in ("user_search_base", "group_search_base"):
            if "=" not in getattr(self, key):
                raise Invalid("required: a DN such as ou=people,dc=example,dc=com", key)
        self._check_attributes()
        if self.page_size < 1 or self.connect_timeout <= 0 or self.timeout <= 0:
            key = "page_size" if self.page_size < 1 else "timeout"
            raise Invalid("must be greater than 0", key)

    def _check_connection(self) -> None:
        from urllib.parse import urlsplit

        try:
            url = urlsplit(self.url)
            url.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            url = urlsplit("")
        refuse_url_credentials(url, "url", BIND_KEYS)
        scheme = url.scheme.lower()
        if scheme not in ("ldap", "ldaps") or not url.hostname or url.path.strip("/"):
            raise Invalid("expected ldap://HOST[:PORT] or ldaps://HOST[:PORT]", "url")
        if self.start_tls and scheme == "ldaps":
            raise Invalid("start_tls is for ldap:// URLs; ldaps:// is TLS already", "start_tls")
        if self.ca_file and not (self.start_tls or scheme == "ldaps"):
            raise Invalid("ca_file needs ldaps:// or start_tls: true", "ca_file")
        if (self.bind_dn is None) != (self.bind_password is None):
            raise Invalid(
                "give both bind_dn and bind_password, or neither for an anonymous bind",
                "bind_password" if self.bind_dn else "bind_dn",
            )

    def _check_attributes(self) -> None:
        for key in ("username_attribute", "group_name_attribute", "member_attribute"):
            if not LDAP_ATTRIBUTE.match(getattr(self, key)):
                raise Invalid("not an LDAP attribute name", key)
        if not self.user_object_classes:
            raise Invalid("name at least one object class", "user_object_classes")
        targets: dict[str, str] = {}
        for claim, attribute in self.ldap_claims().items():
            if not LDAP_ATTRIBUTE.match(attribute):
                raise Invalid(f"{attribute!r} is not an LDAP attribute name", "claim_attributes")
            clash = targets.setdefault(attribute.lower(), claim)
            if clash != claim or attribute.lower() == self.username_attribute.lower():
                other = clash if clash != claim else "the username"
                raise Invalid(f"{claim} and {other} both map to {attribute}", "claim_attributes")

    def ldap_claims(self) -> dict[str, str]:
        """Claim -> LDAP attribute in effect: the defaults with ``claim_attributes`` over."""
        merged: dict[str, str | None] = {**DEFAULT_LDAP_CLAIMS, **self.claim_attributes}
        return {claim: attr for claim, attr in merged.items() if attr}


CA_FILE_HINT = (
    "give the PEM file of the CA certificate that signs the directory's certificate, or "
    "remove ca_file to trust the system's CAs"
)


def ca_file_problem(path: str) -> str | None:
    """What is wrong with ``path`` as an LDAP store's ``ca_file`` (None: nothing): it
    must be a file idprov can read that holds a certificate (PEM), as `config
    validate` and opening the store both check, in these words."""
    import ssl
    from pathlib import Path

    file = Path(path)
    if not file.exists():
        return "does not exist"
    if not file.is_file():
        return "is not a file"
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        return "holds no certificate (PEM: -----BEGIN CERTIFICATE-----; a key is not one)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None
