"""`idprov serve`: the inbound SCIM 2.0 endpoint and ``POST /jit/login``, as one ASGI
application over the core service.

Who is asking: every request but ``/ServiceProviderConfig`` carries a bearer token,
and the token decides the application (``inbound_token`` in its configuration):
new users land in that application's userstore and every change goes out to that
application's identity providers before the response is sent. The tokens are read
once at start and kept only as SHA-256 digests (a ``file:`` one is read again when
its file changes). No token, or a wrong one: 401 with
``WWW-Authenticate``.

Threads: the event loop only reads and writes HTTP. Every write (POST, PUT, PATCH,
DELETE, Bulk, JIT logins) runs its local transaction on one writer thread, in arrival
order; then its push (to the application's *blocking* identity providers) runs on a
pool of pusher threads, and the response is sent when the push is done. Reads run on
a small pool of reader threads. Each thread has its own ``IdentityService`` per
application (a service holds one SQLite connection), so reads see committed data
only. One writer makes every SCIM write atomic as a whole (a PATCH reads, applies
and writes with nothing in between) and keeps the outbox in the order of the
changes; the pushes of concurrent requests overlap, and no database lock is held
while a target answers. Rows of non-blocking IdPs, and rows that failed, are pushed
by the outbox worker that runs beside the server (:meth:`InboundServer.start_worker`),
on each IdP's retry schedule. bench/serve_load.py measures it.

Limits: request bodies over ``max_body`` bytes get 413 before they are read (the
same figure is Bulk's maxPayloadSize). An access log line per request (time, client,
method, path, status, duration, application, token id, outbound outcome) goes to
stderr or a file; never a header, a query string (filters hold personal data) or a
body. A token's scope (``read``: GET and searches only) is enforced before a request
is read, and its id is the actor of what the request changes (``scim:<id>``).

The ASGI and socket plumbing (bodies, responses, binding, uvicorn) is
:mod:`~idprov.inbound.serve_http`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast
from urllib.parse import parse_qsl

from scim2_models import (
    ForbiddenException,
    PayloadTooLargeException,
    SCIMException,
    UnauthorizedException,
)
from scim2_server.applications.base import BaseApplication
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from scim2_server.service import is_json_media_type

from idprov.config import Config
from idprov.errors import (
    ConfigError,
    ConflictError,
    IdprovError,
    NotFoundError,
    PolicyError,
    ReadOnlyError,
    StoreError,
    UsageError,
)
from idprov.inbound.push_queue import PushQueue
from idprov.inbound.scim.acting import Backends, acting
from idprov.inbound.scim.protocol import IdprovScimHandler, IdprovScimService
from idprov.inbound.scim.schema import build_provider
from idprov.inbound.scim.storage import IdprovStorage
from idprov.inbound.serve_auth import ConfiguredTokens, IssuedTokens, authenticate
from idprov.inbound.serve_http import (
    Receive,
    Scope,
    Send,
    client_base_url,
    read_body,
    request_path,
    send_json,
)
from idprov.provisioning.connect import SharedPerIdp
from idprov.provisioning.tokens import Caller
from idprov.text import escaped

if TYPE_CHECKING:
    import socket
    from pathlib import Path

    import httpx

    from idprov.inbound.push_relay import RelayClient, RelayServer
    from idprov.inbound.serve_workers import WriterLock
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.service import IdentityService
    from idprov.provisioning.unit_of_work import PendingPush

T = TypeVar("T")

Reply = tuple[int, dict[str, str], dict[str, Any] | None]
"""Status, headers and JSON body of a response."""

DEFAULT_MAX_BODY = 1_048_576
DEFAULT_READERS = 4
DEFAULT_PUSHERS = 8
"""Requests whose pushes may be in flight at once (each to every blocking IdP)."""
JIT_PATHS = ("/jit/login", "/v2/jit/login")
READ_ONLY_TOKEN = "this token's scope is read: it may read and search, not change anything"
WRITES = {Operation.create, Operation.replace, Operation.patch, Operation.delete, Operation.bulk}


# ---------------------------------------------------------------- access log
class AccessLog:
    """One line per request to a text stream (stderr or a file opened for append)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def log_field(value: object) -> str:
    """``value`` as one field of a log line: the characters a terminal would act on or
    a reader not see (:data:`idprov.text.UNSAFE`, as the CLI's views escape them),
    whitespace and the backslash as Python escapes (``\\n``, ``\\x1b``, ``\\x20``,
    ``\\\\``), so what a client sends (a path decoded from ``%0a``, ``%1b[``,
    ``%20``) can neither forge a line or a field nor reach a terminal as a control
    sequence."""
    return escaped(value, also=r"\s\\")


@dataclass
class Served:
    """What the access log says of one request."""

    status: int = 500
    application: str = "-"
    outbound: str = "-"
    token: str = "-"
    """The id of the token used (``config``: an application's inbound_token)."""


# ---------------------------------------------------------------- the application
class InboundServer:
    """The ASGI application of `idprov serve`. ``close()`` (or the ASGI lifespan's
    shutdown) stops its threads and closes its services."""

    def __init__(
        self,
        config: Config,
        *,
        applications: Sequence[str] | None = None,
        access_log: TextIO | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        readers: int = DEFAULT_READERS,
        pushers: int = DEFAULT_PUSHERS,
        http_transport: httpx.BaseTransport | None = None,
        take_turns: WriterLock | None = None,
    ) -> None:
        self.config = config
        self.take_turns = take_turns
        """`serve --workers` over a directory: the lock the workers' writes take turns on
        (see :func:`~idprov.inbound.serve_workers.writes_take_turns`)."""
        self.issued = IssuedTokens(config)
        self.only = set(applications) if applications else None
        self.tokens = ConfiguredTokens(config, applications, self.issued.applications())
        self.max_body = max_body
        self.http_transport = http_transport
        provider = build_provider(max_body)
        self.scim = IdprovScimService(provider)
        self.handler = IdprovScimHandler(self.scim, IdprovStorage(provider))
        self.backends = Backends(self._open_service)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="idprov-writer")
        self.readers = ThreadPoolExecutor(readers, thread_name_prefix="idprov-reader")
        self.pushers = ThreadPoolExecutor(pushers, thread_name_prefix="idprov-pusher")
        self.push_queue = PushQueue(self.pushers, self._push_now)
        self.relay: RelayClient | None = None
        """`serve --workers`: the connection to the outbox worker, which pushes this
        worker's changes (see :meth:`push_through`)."""
        self._relay_server: RelayServer | None = None
        self.shared = SharedPerIdp()
        """Each IdP's ``max_concurrency``, ``rate_limit`` and TLS context, for the whole
        process (every thread's and application's service)."""
        self.log = AccessLog(access_log or sys.stderr)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def applications(self) -> list[str]:
        return sorted({*self.tokens.current().values(), *self.issued.applications()})

    def _open_service(self, application: str, view: str) -> IdentityService:
        from idprov.provisioning.service import IdentityService

        config = self.config
        if view == "jit":
            from idprov.inbound.jit import jit_view

            config = jit_view(config, application)
        service = IdentityService(
            config,
            application=application,
            actor=view,
            http_transport=self.http_transport,
            wait="blocking",
        )
        service.outbound.shared = self.shared
        if self.relay is not None:
            service.outbound.pushed_by = self.relay.claim_name
        return service

    def push_through(self, path: Path) -> None:
        """In a worker of `serve --workers`: have the outbox worker (listening at
        ``path``) push this worker's changes, while it is reachable (see
        :mod:`~idprov.inbound.push_relay`). Call before serving."""
        from idprov.inbound.push_relay import CONNECT_SECONDS, RelayClient

        self.relay = RelayClient(path)
        if not self.relay.connect():
            logging.getLogger("idprov.serve").warning(
                "the outbox worker did not answer within %.0f s (see its errors above): "
                "this worker pushes its own changes until it does, so an IdP may get "
                "more than its max_concurrency",
                CONNECT_SECONDS,
            )

    def push_for_workers(self, listener: socket.socket) -> None:
        """In the outbox worker of `serve --workers`: push the workers' changes they
        send on ``listener`` (the supervisor's socket), those of one caller drained
        together whichever worker sent them."""
        from idprov.inbound.push_relay import RelayServer

        self.warm()
        self._relay_server = RelayServer(listener, self.push_queue.submit, self._give_back)
        self._relay_server.start()

    def warm(self) -> None:
        """In a process that pushes: load the HTTP stack and make each IdP's TLS
        context now (~0.1 s: importing httpx, reading the CA certificates), not at the
        expense of the first request that waits for a push."""
        from idprov.connectors.http import HttpOptions
        from idprov.provisioning.connect import check_identity_providers

        check_identity_providers(self.config)  # what each service does: options built
        for idp in self.config.identity_providers:
            if idp.enabled and isinstance(idp.options, HttpOptions):
                import idprov.connectors.http_wire  # noqa: F401 - httpx and its transport

                try:
                    self.shared.tls(idp.name, idp.options)
                except IdprovError as exc:  # its pushes fail, each with this error
                    logging.getLogger("idprov.serve").warning(
                        "identity provider %s: %s", idp.name, exc.message
                    )

    def _give_back(self, prefix: str, keep: set[str]) -> None:
        """In the outbox worker: release the claims a worker made for a connection that
        closed, but those of the changes it sent (their drains finish them)."""
        state = self.backends.get(self.applications[0], "worker").service.state
        with state.transaction():
            state.outbox.release_prefix(prefix, keep)

    def wait_for_workers(self, seconds: float) -> None:
        """In the outbox worker, stopping: keep pushing for the workers until they are
        gone (they stop at the same time, and finish their requests first)."""
        if self._relay_server is not None:
            self._relay_server.wait_for_workers(seconds)

    @property
    def has_outbox_work(self) -> bool:
        """Whether an outbox worker has anything to do: there are identity providers,
        and an application to act as (with none, nothing is served or pushed)."""
        return bool(self.config.identity_providers and self.applications)

    def start_worker(self) -> None:
        """Run the outbox worker in a thread until :meth:`close`: it pushes rows that
        no request pushes (non-blocking IdPs, failures, rows a crash left), each when
        its IdP's retry schedule says."""
        if self._worker is not None or not self.has_outbox_work:
            return
        self.warm()
        self._worker = threading.Thread(target=self._work, name="idprov-worker", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        """The worker's loop (:func:`~idprov.provisioning.outbound.keep_working`): an
        error is logged in one line and the worker starts again after a pause."""
        from idprov.provisioning.outbound import keep_working

        log = logging.getLogger("idprov.serve")

        def work() -> None:
            backend = self.backends.get(self.applications[0], "worker")
            backend.service.outbound.say = log.warning
            backend.service.outbound.work(stop=self._stop)

        keep_working(work, self._stop, lambda text, bug: log.error(text, exc_info=bug))

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self.writer.shutdown(wait=True)
        self.pushers.shutdown(wait=True)
        self.readers.shutdown(wait=True)
        self.backends.close()
        self.issued.close()

    # -- ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        served = Served()
        try:
            status, headers, body = await self._http(scope, receive, served)
        finally:  # logged before the response leaves: a client never outruns its line
            self._log(scope, served, time.perf_counter() - start)
        await send_json(send, status, headers, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.relay is not None:
                    self.relay.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.relay is not None:
                    await self.relay.close()
                await asyncio.get_running_loop().run_in_executor(None, self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _log(self, scope: Scope, served: Served, seconds: float) -> None:
        client = scope.get("client") or ("-", 0)
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fields = (client[0], scope.get("method"), scope.get("path"), served.status)
        self.log.write(
            f"{stamp} {' '.join(log_field(f) for f in fields)} {seconds * 1000:.1f}ms"
            f" app={log_field(served.application)} token={log_field(served.token)}"
            f" outbound={log_field(served.outbound)}"
        )

    async def _http(self, scope: Scope, receive: Receive, served: Served) -> Reply:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        path = request_path(scope)
        if path in JIT_PATHS:
            return await self._jit(scope, receive, headers, served)
        request = ScimRequest(
            method=scope["method"],
            base_url=client_base_url(scope, headers),
            path=BaseApplication.split_path(path),
            query=dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
            headers=headers,
        )
        response = await self._scim(request, receive, served)
        served.status = int(response.status)
        return int(response.status), response.headers, response.body

    async def _scim(self, request: ScimRequest, receive: Receive, served: Served) -> ScimResponse:
        try:
            operation: Operation | None = self.scim.match(request).operation
        except SCIMException:
            operation = None  # answered by the handler, once authenticated
        if operation is not Operation.service_provider_config:
            caller = self._authenticate(request.header("Authorization"))
            if caller is None:
                return self._finish(request, self.scim.error_response(UnauthorizedException()))
            served.application, served.token = caller.application, caller.token_id
            if operation in WRITES and caller.scope != "write":
                return self.scim.error_response(ForbiddenException(detail=READ_ONLY_TOKEN))
        else:  # open to all: any application's view serves it, even with no token left
            caller = Caller("-", self.config.applications[0].name, "read")
        body = await read_body(receive, request, self.max_body)
        if body is None:
            error = PayloadTooLargeException(
                detail=f"the request body exceeds {self.max_body} bytes"
            )
            return self._finish(request, self.scim.error_response(error))
        request.body = body
        loop = asyncio.get_running_loop()
        if operation in WRITES:
            written = loop.run_in_executor(self.writer, self._write, self._handle, request, caller)
            response, pending = await written
        else:
            response, pending = await loop.run_in_executor(
                self.readers, self._handle, request, caller
            )
        report = await self._push(caller, "scim", pending)
        served.outbound = _outbound_outcome(report)
        return response

    async def _push(self, caller: Caller, view: str, pending: PendingPush) -> OutboundReport | None:
        """Push what a request committed, on a pusher thread (no lock held), together
        with the changes of concurrent requests of the same caller (see push_queue);
        the rows left to the outbox worker are noted as queued."""
        report = None
        if pending.rows:
            key = (caller.application, view, caller.token_id)
            report = await self._push_here_or_there(key, pending)
        if pending.queued:
            from idprov.provisioning.results import OutboundReport

            report = report if report is not None else OutboundReport()
            for row, idp in pending.queued:
                report.note("queued", idp, row)
        return report

    async def _push_here_or_there(
        self, key: tuple[str, str, str], pending: PendingPush
    ) -> OutboundReport | None:
        """The outbox worker pushes what was claimed for it (`serve --workers`), else
        a pusher thread here. A change that cannot reach the outbox worker gives back
        its claims (those still held under its names) and is pushed here."""
        if self.relay is not None and self.relay.carries(pending):
            from idprov.inbound.push_relay import NotSent

            try:
                return await self.relay.push(key, pending)
            except NotSent:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self.pushers, self._unclaim, key, pending)
                pending = dataclasses.replace(pending, claims=[])
        return await asyncio.wrap_future(self.push_queue.submit(key, pending))

    def _unclaim(self, key: tuple[str, str, str], pending: PendingPush) -> None:
        state = self.backends.get(key[0], key[1]).service.state
        with state.transaction():
            state.outbox.release_rows(pending.rows, pending.claims)

    def _push_now(self, key: Hashable, changes: list[PendingPush]) -> list[OutboundReport | None]:
        application, view, token_id = cast(tuple[str, str, str], key)
        service = self.backends.get(application, view).service
        service.actor = f"{view}:{token_id}"
        return service.push_pending(changes)

    def _handle(self, request: ScimRequest, caller: Caller) -> tuple[ScimResponse, PendingPush]:
        """Serve one SCIM request on this (writer or reader) thread; what it changes is
        audited as done by ``scim:<token id>``."""
        backend = self.backends.get(caller.application)
        backend.service.actor = f"scim:{caller.token_id}"
        with acting(backend) as state:
            try:
                response = self.handler.handle(request)
            except SCIMException as exc:
                response = self.scim.error_response(exc)
            except Exception as exc:  # a bug: 500 without details, the traceback to stderr
                logging.getLogger("idprov.serve").exception(
                    "%s %s", log_field(request.method), log_field(request.path)
                )
                response = self.scim.error_response(exc)
            return self._finish(request, response), state.pending

    def _write(self, handle: Callable[..., T], *args: Any) -> T:
        """Run a write on the writer thread; with :attr:`take_turns`, one at a time
        across the workers of `serve --workers`."""
        if self.take_turns is None:
            return handle(*args)
        with self.take_turns.held():
            return handle(*args)

    @staticmethod
    def _finish(request: ScimRequest, response: ScimResponse) -> ScimResponse:
        response.headers.setdefault("Cache-Control", "no-cache")
        return response

    def _authenticate(self, authorization: str | None) -> Caller | None:
        """Who the token of an Authorization header is, or None."""
        return authenticate(authorization, self.tokens.current(), self.issued, self.only)

    # -- JIT
    async def _jit(
        self, scope: Scope, receive: Receive, headers: list[tuple[str, str]], served: Served
    ) -> Reply:
        status, body, extra = await self._jit_response(scope, receive, headers, served)
        served.status = status
        return status, {"Content-Type": "application/json", **extra}, body

    async def _jit_response(
        self, scope: Scope, receive: Receive, headers: list[tuple[str, str]], served: Served
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if scope["method"] != "POST":
            return 405, _error("method", "POST /jit/login only"), {"Allow": "POST"}
        authorization = next((v for k, v in headers if k.lower() == "authorization"), None)
        caller = self._authenticate(authorization)
        if caller is None:
            challenge = {"WWW-Authenticate": 'Bearer realm="idprov"'}
            return 401, _error("unauthorized", "a valid bearer token is required"), challenge
        served.application, served.token = caller.application, caller.token_id
        if caller.scope != "write":
            return 403, _error("forbidden", READ_ONLY_TOKEN), {}
        request = ScimRequest(scope["method"], "", "/jit/login", headers=headers)
        body = await read_body(receive, request, self.max_body)
        if body is None:
            return 413, _error("too_large", f"the body exceeds {self.max_body} bytes"), {}
        content_type = request.header("Content-Type")
        if content_type and not is_json_media_type(content_type):
            return 415, _error("media_type", "send application/json"), {}
        loop = asyncio.get_running_loop()
        status, result = await loop.run_in_executor(
            self.writer, self._write, self._jit_login, caller, body
        )
        if isinstance(result, dict):
            return status, result, {}
        if result.pending is not None:
            result.outbound = await self._push(caller, "jit", result.pending)
        served.outbound = _outbound_outcome(result.outbound)
        return status, result.to_dict(), {}

    def _jit_login(self, caller: Caller, body: bytes) -> tuple[int, Any]:
        """One JIT login's transaction on the writer thread: (status, result or the
        JSON error body); the push follows on a pusher thread."""
        from idprov.inbound import jit

        try:
            idp, claims, token = self._jit_request(body)
            service = self.backends.get(caller.application, "jit").service
            service.actor = f"jit:{caller.token_id}"
            result = jit.attempt(service, idp, claims=claims, id_token=token, push=False)
        except IdprovError as exc:
            return _jit_status(exc), {"error": exc.to_dict()}
        return (201 if result.action == "created" else 200), result

    @staticmethod
    def _jit_request(body: bytes) -> tuple[str, dict[str, Any] | None, str | None]:
        """(idp, claims, id_token) of a login request; one of the last two is None."""
        try:
            data = json.loads(body or b"null")
        except ValueError as exc:
            raise UsageError(f"the body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise UsageError("the body is not JSON idprov reads: it nests too deep") from exc
        if not isinstance(data, dict) or not isinstance(data.get("idp"), str):
            raise UsageError(
                'expected {"idp": NAME, "claims": {...}} or {"idp": NAME, "id_token": JWT}'
            )
        claims, token = data.get("claims"), data.get("id_token")
        if (claims is None) == (token is None):
            raise UsageError('give exactly one of "claims" and "id_token"')
        if token is not None and not isinstance(token, str):
            raise UsageError('"id_token" is a string (a JWT)')
        if claims is not None and not isinstance(claims, dict):
            raise UsageError('"claims" is a JSON object')
        return data["idp"], claims, token


# ---------------------------------------------------------------- replies
def _outbound_outcome(report: OutboundReport | None) -> str:
    """The access log's ``outbound=``: what the request's push did (``-``: nothing to
    push; ``queued:N``: only rows left to the outbox worker, for non-blocking IdPs;
    ``ok+queued:N``: pushed, and N rows left to it (a non-blocking IdP's, or a row
    another request's push holds);
    ``awaiting_rename:N``: rows of an IdP renamed in the configuration, not pushed
    until `idprov idp rename`; ``leased:N``: rows another drainer's lease holds, a
    command or worker on another host, or one killed there: taken when it ends)."""
    if report is None:
        return "-"
    held = sum(report.held.values())
    waiting = sum(report.awaiting_rename.values())
    leased = sum(report.leased.values())
    if report.failed:
        return f"failed:{report.failed}"
    if held:
        return f"held:{held}"
    if waiting:
        return f"awaiting_rename:{waiting}"
    if leased:
        return f"leased:{leased}"
    pushed = any(idp.operations for idp in report.idps.values())
    queued = sum(report.queued.values())
    if queued:  # part of it (a group another request's push sends): not all "ok"
        return f"ok+queued:{queued}" if pushed else f"queued:{queued}"
    return "ok"


def _error(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "hint": hint}}


def _jit_status(exc: IdprovError) -> int:
    """The HTTP status of a refused JIT login."""
    from idprov.inbound.jit import JitDisabled, TokenRejected, UnverifiedClaims

    if isinstance(exc, TokenRejected | JitDisabled | UnverifiedClaims | ReadOnlyError):
        return 403
    if isinstance(exc, ConfigError):
        return 500  # the server's configuration (a JWKS file...): not the client's fault
    for kind, status in ((UsageError, 400), (PolicyError, 400), (NotFoundError, 404)):
        if isinstance(exc, kind):
            return status
    if isinstance(exc, ConflictError):
        return 409
    return 503 if isinstance(exc, StoreError) else 500
