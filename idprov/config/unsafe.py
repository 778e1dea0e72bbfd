"""Settings that work but expose credentials or data: `config validate` warns about each
(``--strict`` refuses them), `idp test` and `status` repeat the one about TLS checks.

Each is a located :class:`~idprov.errors.ConfigError` whose ``code`` says its kind:

- ``tls_unchecked``: an identity provider with ``verify_tls: false``;
- ``plain_http``: a credential sent over plain ``http://`` to a host beyond loopback;
- ``postgres_tls``: a PostgreSQL database beyond loopback with ``sslmode`` ``disable`` or
  ``require`` (no certificate check);
- ``ldap_plain``: an LDAP bind password sent over ``ldap://`` without ``start_tls`` to a
  host beyond loopback;
- ``file_mode``: a ``file:`` secret every user may read (0644, 0444), or a group idprov
  does not run in, or anyone but its owner may change (readable by a group idprov runs
  in is fine: ``root:idprov 0640``), or a file of keys or CA certificates idprov trusts
  that other users may write.

Only enabled identity providers are looked at: nothing is sent to a disabled one.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from idprov.config.models import path_in_file
from idprov.config.schema import Locator, find_values, key_path
from idprov.config.secrets import SecretRef
from idprov.config.urls import is_loopback, url_host
from idprov.errors import ConfigError

CA_FILE_FIX = (
    "remove verify_tls: false; for a private CA or a self-signed certificate, set "
    "ca_file: /path/to/ca.pem (the PEM of the CA that signs the server's certificate) instead"
)


def unsafe_settings(config: Any) -> list[ConfigError]:
    """Every unsafe setting of ``config`` (see the module docstring), by kind."""
    locator = config.locator or Locator(config.source)
    return [
        *unchecked_tls(config),
        *_plain_http(config, locator),
        *_database_tls(config, locator),
        *_file_modes(config, locator),
    ]


def unchecked_tls(config: Any, name: str | None = None) -> list[ConfigError]:
    """The warning of each enabled identity provider (or only ``name``) whose TLS
    certificate is not checked (``verify_tls: false``)."""
    locator = config.locator or Locator(config.source)
    found = []
    for i, idp in _enabled_idps(config):
        if (name is None or idp.name == name) and _option(idp, "verify_tls", True) is False:
            host = url_host(str(_option(idp, "base_url", ""))) or "the target"
            found.append(
                _warning(
                    "tls_unchecked",
                    f"identity provider {idp.name} has verify_tls: false: the TLS certificate "
                    f"of {host} is not checked, so anyone on the network path can pose as it "
                    "and read the credentials and user data idprov sends it",
                    locator,
                    ("identity_providers", i, "options", "verify_tls"),
                    CA_FILE_FIX,
                )
            )
    return found


def _plain_http(config: Any, locator: Locator) -> Iterator[ConfigError]:
    """Identity providers that send a credential over plain http:// beyond loopback, and
    LDAP userstores that send a bind password over ldap:// without start_tls."""
    for i, idp in _enabled_idps(config):
        if not _sends_credential(idp):
            continue
        for key in _url_keys(idp):
            url = str(_option(idp, key, ""))
            host = url_host(url)
            if url.lower().startswith("http://") and host and not is_loopback(host):
                yield _warning(
                    "plain_http",
                    f"identity provider {idp.name} sends its credentials over plain http:// "
                    f"to {host} ({key}): the credentials and user data cross the network "
                    "unencrypted",
                    locator,
                    ("identity_providers", i, "options", key),
                    "use an https:// URL (plain http:// is fine only to a loopback host: "
                    "localhost, 127.0.0.1, ::1)" + _asked_of_dns(host),
                )
    for i, store in enumerate(config.userstores):
        if store.type != "ldap" or getattr(store, "bind_password", None) is None:
            continue
        host = url_host(store.url)
        plain = store.url.lower().startswith("ldap://") and not store.start_tls
        if plain and host and not is_loopback(host):
            yield _warning(
                "ldap_plain",
                f"userstore {store.domain} binds to {host} over ldap:// without start_tls: "
                "the bind password and user data cross the network unencrypted",
                locator,
                ("userstores", i, "url"),
                "use an ldaps:// URL or set start_tls: true (with ca_file for a private CA)",
            )


def _asked_of_dns(host: str) -> str:
    """Why ``localhost.`` or a name under ``localhost`` is not taken for loopback."""
    name = host.casefold().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return (
            f"; {host} is not taken for loopback: this machine's resolver may ask DNS for "
            "it, which may answer any address"
        )
    return ""


def _database_tls(config: Any, locator: Locator) -> Iterator[ConfigError]:
    """PostgreSQL userstores and state beyond loopback without a certificate check."""
    places: list[tuple[str, Any, tuple[str | int, ...]]] = [
        (f"userstore {s.domain}", s, ("userstores", i))
        for i, s in enumerate(config.userstores)
        if s.type == "postgres"
    ]
    if getattr(config.state, "type", None) == "postgres":
        places.append(("idprov's state", config.state, ("state",)))
    for what, db, path in places:
        if db.sslmode not in ("disable", "require") or is_loopback(db.host):
            continue
        risk = (
            "no TLS, so the password and data cross the network unencrypted"
            if db.sslmode == "disable"
            else "TLS without a certificate check, so anyone on the network path can pose "
            "as the server and read the password and data"
        )
        yield _warning(
            "postgres_tls",
            f"{what} connects to {db.host} with sslmode: {db.sslmode}: {risk}",
            locator,
            (*path, "sslmode"),
            "set sslmode: verify-full (with ca_file: the PEM of the CA that signs the "
            "server's certificate, for a private CA); disable and require are fine only "
            "to a loopback host",
        )


def _file_modes(config: Any, locator: Locator) -> Iterator[ConfigError]:
    """``file:`` secrets other users may read or write; key and CA files idprov trusts
    (JIT ``jwks_file`` and ``public_key_file``, ``ca_file``) other users may write."""
    if os.name == "nt":
        return
    for found, ref in find_values(config, SecretRef):
        path = path_in_file(config, found)
        if ref.scheme == "file" and _in_use(config, path):
            name = Path(ref.ref.partition(":")[2]).expanduser()
            exposed = _secret_file_exposed(name)
            if exposed is not None:
                said, fix = exposed
                yield _warning("file_mode", f"secret file {name} {said}", locator, path, fix)
    for path, file in _trusted_files(config):
        mode = _mode(Path(file))
        if mode is not None and mode & 0o022:
            yield _warning(
                "file_mode",
                f"{path[-1]} {file} has mode {mode:04o}: other users of "
                "this machine can replace the keys or CA certificates idprov trusts in it",
                locator,
                path,
                f"chmod 600 {file} (or 644: it need not be secret, but no one else may write it)",
            )


def _secret_file_exposed(name: Path) -> tuple[str, str] | None:
    """What is wrong with the mode of the secret file ``name``, and its fix (None:
    nothing). Readable by its owner and its group is fine when the group is one idprov
    runs in and no other account is in (``root:idprov 0640``, a Kubernetes Secret with
    ``fsGroup``); readable by every user (Docker's 0444, Kubernetes' default 0644), by a
    group idprov is not in, or by one other accounts are in too (``users`` on SUSE,
    ``staff`` on macOS: their primary group, or listed as members), or writable by
    anyone but the owner, is not."""
    try:
        st = name.stat()
    except (OSError, ValueError):
        return None  # missing or unreadable: said by the secret file check
    mode = stat.S_IMODE(st.st_mode)
    own_group = st.st_gid == os.getegid() or st.st_gid in os.getgroups()
    group = _group(st.st_gid)
    readers = "every user of this machine" if mode & 0o004 else ""
    if mode & 0o040 and not readers and not own_group:
        readers = group
    elif mode & 0o040 and not readers and (others := _other_members(st.st_gid, st.st_uid)):
        # idprov's group, but not its alone (users on SUSE, staff on macOS, nogroup)
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if others[5:] else "")
        readers = f"{group}, not idprov alone ({shown}),"
    writers = "every user of this machine" if mode & 0o002 else group if mode & 0o020 else ""
    if not readers and not writers:
        return None
    real = name.resolve()
    shown = f" ({real})" if real != name.absolute() else ""
    if readers and readers == writers:
        risk = f"{readers} can read and change the secret"
    else:
        risk = " and ".join(
            [f"{readers} can read the secret"] * bool(readers)
            + [f"{writers} can change it" if readers else f"{writers} can change the secret"]
            * bool(writers)
        )
    said = f"has mode {mode:04o}{shown}: {risk}"
    if not mode & 0o200:  # read-only: a container's secret mount, chmod will not do
        fix = (
            "mount it readable by idprov alone: mode 0400 (or 0440 with a group only idprov "
            "runs as); in Kubernetes, defaultMode: 0400 (or 0440 with fsGroup) on the "
            "Secret volume; in Docker Compose, mode: 0400 on the secret"
        )
    elif st.st_uid == os.geteuid():
        fix = f"chmod 600 {name} (or chmod 640 and chgrp to a group only idprov runs as)"
    else:
        fix = f"chmod 640 {name}, its group one only idprov runs as (chgrp GROUP {name})"
    return said, fix


def _other_members(gid: int, owner: int) -> list[str]:
    """The accounts in group ``gid`` besides the one idprov runs as and the file's
    ``owner``: listed as its members, or having it as their primary group."""
    import grp
    import pwd

    mine = {os.geteuid(), owner}
    try:
        listed = grp.getgrgid(gid).gr_mem
    except KeyError:
        listed = []
    others = set()
    for name in listed:
        try:
            if pwd.getpwnam(name).pw_uid in mine:
                continue
        except KeyError:
            pass
        others.add(name)
    others |= {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid not in mine}
    return sorted(others)


def _group(gid: int) -> str:
    import grp

    try:
        return f"the members of group {grp.getgrgid(gid).gr_name}"
    except KeyError:
        return f"the members of group {gid}"


def _trusted_files(config: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for n, app in enumerate(config.applications):
        for j, entry in enumerate(app.jit):
            for key in ("jwks_file", "public_key_file"):
                if getattr(entry, key):
                    path = path_in_file(config, ("applications", n, "jit", j, key))
                    yield path, getattr(entry, key)
    for i, store in enumerate(config.userstores):
        if getattr(store, "ca_file", None):
            yield ("userstores", i, "ca_file"), store.ca_file
    if getattr(config.state, "ca_file", None):
        yield ("state", "ca_file"), config.state.ca_file
    for i, idp in _enabled_idps(config):
        if isinstance(_option(idp, "ca_file", None), str):
            yield ("identity_providers", i, "options", "ca_file"), _option(idp, "ca_file", None)


def _in_use(config: Any, path: tuple[str | int, ...]) -> bool:
    """Whether the secret at ``path`` is read: not one of a disabled identity provider."""
    if path[:1] != ("identity_providers",) or len(path) < 2 or not isinstance(path[1], int):
        return True
    return bool(config.identity_providers[path[1]].enabled)


def _mode(path: Path) -> int | None:
    """The permission bits of the file at ``path`` (None: there is none to check)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except (OSError, ValueError):
        return None  # missing or unreadable: said by the secret and key file checks


def _enabled_idps(config: Any) -> Iterator[tuple[int, Any]]:
    for i, idp in enumerate(config.identity_providers):
        if idp.enabled:
            yield i, idp


def _option(idp: Any, key: str, default: Any) -> Any:
    options = idp.options
    if isinstance(options, dict):
        return options.get(key, default)
    return getattr(options, key, default)


def _url_keys(idp: Any) -> list[str]:
    options = idp.options
    if isinstance(options, dict):
        keys = list(options)
    elif dataclasses.is_dataclass(options):
        keys = [f.name for f in dataclasses.fields(options)]
    else:
        keys = []
    return [k for k in keys if k == "url" or k.endswith(("_url", "_uri"))]


def _sends_credential(idp: Any) -> bool:
    """Whether the IdP is sent a credential: an HTTP auth other than none, or any
    secret reference of its options (OAuth client secrets and keys, Google's key)."""
    if _option(idp, "auth", "none") != "none":
        return True
    options = idp.options
    return any(True for _ in find_values(options, SecretRef))


def _warning(
    code: str, message: str, locator: Locator, path: tuple[str | int, ...], hint: str
) -> ConfigError:
    warning = ConfigError(message, location=locator.where(path), key=key_path(path), hint=hint)
    warning.code = code
    return warning
