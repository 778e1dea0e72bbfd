"""Secret references: configuration names where a secret lives, never the secret.

``env:NAME`` reads an environment variable, ``file:PATH`` a file (first line, trailing
newline stripped), ``keyring:SERVICE/NAME`` the operating system's keyring (the
``keyring`` package, imported only when such a reference is used). A
:class:`SecretRef` never shows its value in ``repr``, ``str`` or JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from idprov.errors import SecretError
from idprov.secrecy import hold

KEYRING_SERVICE = "idprov"
SCHEMES = ("env", "file", "keyring")


@dataclass(frozen=True)
class SecretRef:
    """A reference such as ``env:SCIM_TOKEN``; :meth:`reveal` reads the value."""

    ref: str

    @classmethod
    def __config_parse__(cls, value: object) -> SecretRef:
        if not isinstance(value, str):
            raise ValueError("expected a secret reference (env:NAME, file:PATH or keyring:NAME)")
        scheme, sep, rest = value.partition(":")
        if not sep or scheme not in SCHEMES or not rest:
            raise ValueError(
                "secrets are references, not literal values: write env:NAME, file:PATH or "
                "keyring:SERVICE/NAME (store one with `idprov secret set NAME`)"
            )
        return cls(value)

    def __repr__(self) -> str:
        return f"SecretRef({self.ref!r})"

    def __str__(self) -> str:
        return self.ref

    @property
    def scheme(self) -> str:
        return self.ref.partition(":")[0]

    def reveal(self) -> str:
        """The secret's value. Raises :class:`SecretError` naming the reference.
        The value is held while this reference exists (:func:`idprov.secrecy.hold`):
        blanked in any error built from what a target says, should it echo it."""
        scheme, _, rest = self.ref.partition(":")
        if scheme == "env":
            value = _from_env(rest)
        elif scheme == "file":
            value = _from_file(rest)
        else:
            service, _, name = rest.rpartition("/")
            value = get_keyring_secret(name, service or KEYRING_SERVICE)
        hold(self, value)
        return value

    def status(self) -> str:
        """``set`` or ``missing``, for `config show`; reads the value but never returns it."""
        try:
            self.reveal()
        except SecretError:
            return "missing"
        return "set"


def _from_env(name: str) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        raise SecretError(
            f"secret env:{name} is not set",
            hint=f"export {name}=... in the environment that runs idprov",
        )
    return value


def _from_file(path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SecretError(
            f"secret file:{path} cannot be read: file {path} does not exist",
            hint="create the file (mode 0600) with the secret on its first line, or correct "
            "the path",
        ) from exc
    except OSError as exc:
        raise SecretError(
            f"secret file:{path} cannot be read: {exc.strerror}",
            hint="create the file (mode 0600) with the secret on its first line",
        ) from exc
    except UnicodeDecodeError:
        # from None: the error's own text quotes the file's bytes, which are the secret.
        raise SecretError(
            f"secret file:{path} is not UTF-8 text",
            hint="write the secret as UTF-8 text on the file's first line (a half-written "
            "or binary file reads this way)",
        ) from None
    value = text.splitlines()[0] if text else ""
    if not value:
        raise SecretError(
            f"secret file:{path} is empty", hint="put the secret on the file's first line"
        )
    return value


def _keyring():  # type: ignore[no-untyped-def]
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError as exc:  # pragma: no cover - keyring is a dependency
        raise SecretError("the keyring package is not installed") from exc
    backend = keyring.get_keyring()
    # The null backend stores nothing and finds nothing: as unusable as the fail one.
    if isinstance(backend, fail.Keyring | null.Keyring) or "fail" in type(backend).__module__:
        raise SecretError(
            "no usable keyring backend on this machine (common on servers without a "
            "desktop session)",
            hint="use env:NAME or file:PATH references instead, or install and configure "
            "a keyring backend (see `keyring --list-backends`)",
        )
    return keyring


def get_keyring_secret(name: str, service: str = KEYRING_SERVICE) -> str:
    kr = _keyring()
    try:
        value = kr.get_password(service, name)
    except Exception as exc:  # keyring backends raise their own types
        raise SecretError(f"keyring lookup of {service}/{name} failed: {exc}") from exc
    if value is None:
        raise SecretError(
            f"secret keyring:{service}/{name} is not in the keyring",
            hint=f"store it with `idprov secret set {name}`",
        )
    return value


def set_keyring_secret(name: str, value: str, service: str = KEYRING_SERVICE) -> str:
    """Store ``value`` under ``service/name``; returns the reference to put in config."""
    kr = _keyring()
    try:
        kr.set_password(service, name, value)
    except Exception as exc:
        raise SecretError(f"keyring refused to store {service}/{name}: {exc}") from exc
    return f"keyring:{service}/{name}"
