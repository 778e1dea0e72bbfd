"""Who a request of `idprov serve` is: its bearer token, as an application's
configured ``inbound_token`` (kept as a SHA-256 digest, id ``config``, scope write) or
as a token of `idprov token create` (looked up per request, so a revoked one stops
at once; with its id and scope). A ``file:`` inbound_token is read again when its file
changes (:class:`ConfiguredTokens`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from idprov.config import Config
from idprov.errors import ConfigError
from idprov.provisioning.tokens import Caller


def bearer_tokens(
    config: Config, applications: Sequence[str] | None = None, issued: Iterable[str] = ()
) -> dict[str, str]:
    """SHA-256 hex digest of each application's inbound token -> application name.
    ``applications`` limits it to those (each must have a token, in the configuration
    or among the ``issued`` ones: applications with a live `idprov token`)."""
    issued = set(issued)
    wanted = list(applications) if applications else None
    digests: dict[str, str] = {}
    for app in config.applications:
        if wanted is not None and app.name not in wanted:
            continue
        if app.inbound_token is None:
            if wanted is not None and app.name not in issued:
                raise ConfigError(
                    f"application {app.name!r} has no inbound_token",
                    hint=f"add `inbound_token: env:SCIM_TOKEN_{app.name.upper()}` (or file:, "
                    f"keyring:) to application {app.name} in {config.source}",
                )
            continue
        digest = _digest(app.inbound_token.reveal())
        if digest in digests:
            raise ConfigError(
                f"applications {digests[digest]!r} and {app.name!r} have the same inbound token",
                hint="a token decides the application: give each its own",
            )
        digests[digest] = app.name
    for name in wanted or []:
        config.application(name)  # NotFoundError for an unknown name
    if not digests and not issued:
        raise ConfigError(
            "no application has an inbound token, so no client could authenticate",
            hint="make one with `idprov token create --app NAME`, or add e.g. "
            f"`inbound_token: env:IDPROV_SCIM_TOKEN` to an application in {config.source}",
        )
    return digests


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConfiguredTokens:
    """The digests of :func:`bearer_tokens`, read again when a ``file:`` token's file
    changes (its inode, size or modification time: a file rewritten in place, or
    replaced by a rename), so a rotated token takes effect at the next request and the
    old one stops, with no restart. A file that cannot be read then (half written,
    removed) keeps the tokens as they were, with a warning; its next change is read."""

    def __init__(
        self, config: Config, applications: Sequence[str] | None, issued: Iterable[str]
    ) -> None:
        import threading

        self._config, self._applications, self._issued = config, applications, set(issued)
        self._lock = threading.Lock()
        self._paths = [
            Path(a.inbound_token.ref.partition(":")[2]).expanduser()
            for a in config.applications
            if a.inbound_token is not None and a.inbound_token.scheme == "file"
        ]
        self._stamps = self._stamp()
        self.digests = bearer_tokens(config, applications, self._issued)

    def current(self) -> dict[str, str]:
        """Digest -> application, as the token files say now."""
        if not self._paths:
            return self.digests
        stamps = self._stamp()
        if stamps != self._stamps:
            with self._lock:
                if stamps != self._stamps:
                    self._stamps = stamps
                    self._read_again()
        return self.digests

    def _read_again(self) -> None:
        try:
            self.digests = bearer_tokens(self._config, self._applications, self._issued)
        except ConfigError as exc:
            logging.getLogger("idprov.serve").warning(
                "inbound tokens not read again, the previous ones stay in use: %s (%s)",
                exc.message,
                exc.hint,
            )

    def _stamp(self) -> list[tuple[int, int, int] | None]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                found = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((found.st_ino, found.st_size, found.st_mtime_ns))
        return stamps


class IssuedTokens:
    """Tokens made by `idprov token create`, looked up per request (so a revoked one
    stops at once) on a connection of their own."""

    def __init__(self, config: Config) -> None:
        import threading

        from idprov.db import DatabasePool
        from idprov.provisioning.state import StateStore

        self._lock = threading.Lock()
        self._pool = DatabasePool()
        self._state = StateStore.open(config, self._pool)

    def applications(self) -> set[str]:
        from idprov.provisioning.tokens import InboundTokens

        with self._lock:
            return InboundTokens(self._state.db).applications()

    def caller(self, token: str) -> Caller | None:
        from idprov.provisioning.tokens import InboundTokens

        with self._lock:
            return InboundTokens(self._state.db).caller(token)

    def close(self) -> None:
        self._state.close()
        self._pool.close()


def authenticate(
    authorization: str | None,
    tokens: dict[str, str],
    issued: IssuedTokens,
    only: set[str] | None,
) -> Caller | None:
    """Who the token of an Authorization header is (among ``tokens``, digests of the
    configured ones, then the ``issued`` ones; of an application in ``only``), or None."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    digest = _digest(token.strip())
    found = None
    for known, application in tokens.items():
        if hmac.compare_digest(known, digest):
            found = Caller("config", application, "write")
    if found is None:
        found = issued.caller(token.strip())
    if found is not None and only is not None and found.application not in only:
        return None
    return found
