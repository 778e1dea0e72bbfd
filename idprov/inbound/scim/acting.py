"""Who a SCIM request acts as, and how its errors read: the per-thread services of
`idprov serve` (:class:`Backends`), the request being served on this thread
(:func:`acting`, :func:`current_request`), and idprov's errors as SCIM errors with their RFC
7644 status and scimType (:func:`scim_errors`). :mod:`.storage` builds on these.

Each request runs on one thread with the :class:`Backend` of its application (an
``IdentityService`` of that thread's own, since a service holds one SQLite
connection).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scim2_models import (
    Error,
    ForbiddenException,
    InvalidValueException,
    NotFoundException,
    SCIMException,
    UniquenessException,
)

from idprov.errors import (
    ConflictError,
    GuardError,
    IdprovError,
    LockedError,
    NotFoundError,
    PolicyError,
    ReadOnlyError,
    StoreError,
    UsageError,
)
from idprov.inbound.scim import mapping
from idprov.provisioning.external_ids import ExternalIds
from idprov.provisioning.unit_of_work import PendingPush

if TYPE_CHECKING:
    from idprov.config import Config
    from idprov.provisioning.service import IdentityService
    from idprov.provisioning.unit_of_work import UnitOfWork


# ---------------------------------------------------------------- per-thread services
@dataclass
class Backend:
    """One thread's service for one application, with its externalIds."""

    service: IdentityService
    external_ids: ExternalIds
    application: str
    domain: str
    """The application's userstore: where new users land, and what names are relative to."""
    domains: tuple[str, ...] = field(init=False)
    """The userstores the application's requests see and change (its scope, see
    :func:`application_userstores`): users, groups and ids of any other are not found."""

    def __post_init__(self) -> None:
        self.domains = application_userstores(self.service.config, self.application)


class Backends:
    """A :class:`Backend` per (thread, application, view), made on first use and all
    closed together. ``factory(application, view)`` makes the service."""

    def __init__(self, factory: Callable[[str, str], IdentityService]) -> None:
        self.factory = factory
        self._local = threading.local()
        self._all: list[Backend] = []
        self._lock = threading.Lock()

    def get(self, application: str, view: str = "scim") -> Backend:
        mine: dict[tuple[str, str], Backend] = self._local.__dict__.setdefault("backends", {})
        key = (application, view)
        if key not in mine:
            service = self.factory(application, view)
            domain = service.config.application(application).userstore
            mine[key] = Backend(service, ExternalIds(service.state.db), application, domain)
            with self._lock:
                self._all.append(mine[key])
        return mine[key]

    def close(self) -> None:
        with self._lock:
            backends, self._all = self._all, []
        for backend in backends:
            backend.service.close()


def application_userstores(config: Config, application: str) -> tuple[str, ...]:
    """The userstores an application's inbound requests may see and change, in the
    configuration's order: its ``userstore`` and those its JIT logins land in. A user,
    group or id of another userstore is, to its tokens, not there (404)."""
    app = config.application(application)
    wanted = {app.userstore.casefold()}
    wanted |= {j.userstore.casefold() for j in app.jit if j.userstore}
    return tuple(u.domain for u in config.userstores if u.domain.casefold() in wanted)


@dataclass
class Acting:
    """The request being served on this thread: who, and what went out."""

    backend: Backend
    pending: PendingPush = field(default_factory=PendingPush)
    """What this request committed and must push before it answers."""

    @contextmanager
    def changing(self) -> Iterator[UnitOfWork]:
        """One request's writes: one unit of work (one transaction). The push is left
        to the server (:attr:`pending`), which runs it off the writer thread; the rows
        are claimed for it in the request's transaction."""
        with self.backend.service.unit_of_work(push=False, claim=True) as uow:
            yield uow
        self.pending.add(uow.pending(waited_only=True))


_current = threading.local()


@contextmanager
def acting(backend: Backend) -> Iterator[Acting]:
    """Serve what runs inside on this thread as ``backend``'s application."""
    state = Acting(backend)
    _current.state = state
    try:
        yield state
    finally:
        _current.state = None


def current_request() -> Acting:
    """The request being served on this thread."""
    state: Acting | None = getattr(_current, "state", None)
    if state is None:
        raise RuntimeError("no SCIM request is being served on this thread")
    return state


# ---------------------------------------------------------------- errors
@contextmanager
def scim_errors() -> Iterator[None]:
    """Turn idprov's errors into SCIM errors with the RFC 7644 status and scimType."""
    try:
        yield
    except SCIMException:
        raise
    except mapping.InvalidValue as exc:
        raise InvalidValueException(detail=str(exc)) from exc
    except IdprovError as exc:
        raise _scim_error(exc) from exc


CLIENT_HINTS = {
    ConflictError: "look it up with a userName or displayName eq filter and change it"
    " with PUT or PATCH, or choose another name",
}
"""A SCIM client's hint, where idprov's own names a command of its CLI: that is for
an administrator at idprov's host, not for the client that sent the request."""


def _scim_error(exc: IdprovError) -> SCIMException:
    hint = exc.hint
    if hint and "`idprov " in hint:
        hint = next((h for kind, h in CLIENT_HINTS.items() if isinstance(exc, kind)), None)
        hint = hint or "an idprov administrator can look into it with the CLI"
    detail = f"{exc.message} ({hint})" if hint else exc.message
    if isinstance(exc, ConflictError):
        return UniquenessException(detail=detail)
    if isinstance(exc, NotFoundError):
        return NotFoundException(detail=detail)
    if isinstance(exc, ReadOnlyError):
        return ForbiddenException(detail=detail)
    if isinstance(exc, PolicyError | UsageError):
        return InvalidValueException(detail=detail)
    if isinstance(exc, GuardError):  # the change conflicts with what the targets hold
        # its hint says what an administrator runs (CLI flags): not the client's to do
        detail = f"{exc.message} (an idprov administrator can accept it with the CLI)"
        return SCIMException.from_error(Error(status=409, detail=detail))
    status = 503 if isinstance(exc, StoreError | LockedError) else 500
    return SCIMException.from_error(Error(status=status, detail=detail))
