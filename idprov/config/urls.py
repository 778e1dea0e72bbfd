"""What a URL in the configuration may not hold, and where it leads: one rule for every
URL a configuration names (an IdP's ``base_url``, an LDAP ``url``, a PostgreSQL ``url``).

A URL is shown wherever its target is named (`config show`, every error reaching the
target, the outbox, the audit log), so a credential written into it (``user:password@``,
``?access_token=``) would be shown there too, and it would get round the rule that
secrets are references (``env:``, ``file:``, ``keyring:``), never literal values.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, urlsplit

from idprov.config.schema import Invalid

SECRET_QUERY_NAME = re.compile(
    r"token|secret|passw|pwd|api[-_]?key|credential|session|signature|^key$|^sig$|^auth|^code$",
    re.IGNORECASE,
)
"""The name of a query parameter that carries a credential (``access_token``,
``api_key``, ``client_secret``, ``sig``...)."""


def url_credential(url: SplitResult, user_allowed: bool = False) -> str | None:
    """What part of ``url`` holds a credential, in words that never quote it (None:
    none). ``user_allowed``: a user name without a password is not one (PostgreSQL
    names its user in the URL)."""
    if url.password is not None:
        return "a password (user:password@)"
    if url.username is not None and not user_allowed:
        return "a user name (user@)"
    for where, params in (
        ("query", url.query),
        ("fragment", url.fragment),  # #access_token=... (OAuth's implicit flow)
        ("path", ";".join(p for s in url.path.split("/") for p in s.split(";")[1:])),
    ):
        for name, _ in parse_qsl(params.replace(";", "&"), keep_blank_values=True):
            if SECRET_QUERY_NAME.search(name):
                return f"a credential in the {where} parameter {name[:40]!r}"
    return None


def refuse_url_credentials(
    url: str | SplitResult, key: str, instead: str, user_allowed: bool = False
) -> None:
    """Raise :class:`Invalid` naming ``key`` when ``url`` holds a credential (see
    :func:`url_credential`); the message says to set ``instead`` (the secret reference
    keys), and never quotes the URL. A URL that does not parse is left to its own check."""
    try:
        parsed = urlsplit(url) if isinstance(url, str) else url
        found = url_credential(parsed, user_allowed)
    except ValueError:
        return
    if found is not None:
        raise Invalid(
            f"the url holds {found}: a credential is a secret reference of its own, never "
            f"part of the url (which is shown in errors and by `config show`): remove it "
            f"from the url and set {instead}",
            key,
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: the name ``localhost``
    (any case), a loopback address (``127.0.0.0/8``, ``::1``, and ``::ffff:127.0.0.1``,
    IPv4's mapped in IPv6). Not ``localhost.`` nor a name under it (``scim.localhost``):
    RFC 6761 asks resolvers to answer them with loopback, but many (glibc's with
    ``hosts: files dns``, no systemd-resolved) ask DNS, which may answer anything, and
    how the name resolves when validating says nothing of how it will when connecting."""
    import ipaddress

    if host.casefold() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: it may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def http_url(url: str, key: str) -> str:
    """``url`` with its scheme in lower case (``HTTP://`` is ``http://``: schemes are
    case-insensitive); raises :class:`Invalid` naming ``key`` for a URL that is not
    http:// or https://."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise Invalid("must be an http:// or https:// URL", key)
    return f"{scheme.lower()}://{rest}"


def url_host(url: str) -> str | None:
    """The host ``url`` names (None: none, or it does not parse)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
