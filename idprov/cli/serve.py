"""`idprov serve`: the inbound SCIM 2.0 endpoint (and POST /jit/login) until stopped."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from idprov.cli.common import JsonOpt, emit
from idprov.errors import IdprovError, UsageError

if TYPE_CHECKING:
    from idprov.inbound.scim_server import InboundServer

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8080,
    app_names: Annotated[
        list[str] | None,
        typer.Option(
            "--app",
            help="Accept only this application's token; repeat. Default: every application "
            "with an inbound_token.",
        ),
    ] = None,
    certfile: Annotated[
        str | None, typer.Option(help="TLS certificate (PEM); serves HTTPS.", metavar="FILE")
    ] = None,
    keyfile: Annotated[
        str | None,
        typer.Option(help="TLS private key (PEM), if not in --certfile.", metavar="FILE"),
    ] = None,
    access_log: Annotated[
        str | None,
        typer.Option(help="Append the access log to this file (default: stderr).", metavar="FILE"),
    ] = None,
    max_body: Annotated[
        int, typer.Option(help="Largest request body in bytes (413 above); also Bulk's limit.")
    ] = 1_048_576,
    readers: Annotated[int, typer.Option(help="Threads serving reads.")] = 4,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes serving on the one port (a few per core: 4 did best on 2 "
            "cores), and one more that pushes in the background (at a lower priority); "
            "a process that dies is started again."
        ),
    ] = 1,
    push_deadline: Annotated[
        float,
        typer.Option(
            help="Seconds a request waits for its change's push before it answers with "
            "the rest queued for the outbox worker (0: until the push is done).",
            metavar="SECONDS",
        ),
    ] = 20.0,
    json: JsonOpt = False,
) -> None:
    """Serve SCIM 2.0 Users, Groups (roles) and Bulk, and POST /jit/login, to programs
    holding an application's bearer token; changes go out to that application's IdPs."""
    from idprov.cli.common import service
    from idprov.inbound.scim_server import InboundServer
    from idprov.inbound.serve_workers import WriterLock, check_workers, writes_take_turns

    if keyfile and not certfile:
        raise UsageError("--keyfile needs --certfile", hint="give the certificate with --certfile")
    if certfile:
        _check_tls(certfile, keyfile)
    if max_body < 1024 or readers < 1:
        raise UsageError("--max-body is at least 1024 bytes and --readers at least 1")
    if not 0 <= push_deadline <= 3600:
        raise UsageError(
            f"--push-deadline {push_deadline:g} is not between 0 and 3600 seconds",
            hint="keep it under the timeout of the clients (Okta: 30 s, Entra ID: 60 s); "
            "0 waits for every push to finish",
        )
    check_workers(workers)
    from idprov.config.urls import is_loopback

    config = service(live=False).config
    if not certfile and not is_loopback(host):
        typer.secho(PLAIN_HTTP_WARNING.format(host=host), fg="yellow", err=True)
    log: Any = ReopenedLog(access_log) if access_log else sys.stderr
    _on_hangup(log)
    take_turns = None
    if workers > 1 and writes_take_turns(config):
        take_turns = WriterLock(Path(config.data_dir or ".") / "serve-writes.lock")

    def build() -> InboundServer:
        server = InboundServer(
            config,
            applications=app_names,
            access_log=log,
            max_body=max_body,
            readers=readers,
            take_turns=take_turns,
        )
        server.push_queue.deadline = push_deadline or None
        return server

    try:
        _serve(
            build,
            host,
            port,
            workers,
            (certfile, keyfile),
        )
    finally:
        if log is not sys.stderr:
            log.close()


def _serve(
    build: Callable[[], InboundServer],
    host: str,
    port: int,
    workers: int,
    tls: tuple[str | None, str | None],
) -> None:
    """Bind, say where, and serve: in this process, or in ``workers`` forked ones
    (each on a socket of its own where the kernel spreads connections over them)."""
    from idprov.inbound.push_relay import forget_socket, listen_for_pushes
    from idprov.inbound.serve_http import base_url, bind, uvicorn_server
    from idprov.inbound.serve_workers import OWN_SOCKETS, Supervisor, run_outbox_worker

    server = build()  # built here first: a bad token or application fails now
    own_sockets = workers > 1 and OWN_SOCKETS
    try:
        # The port is free (else a clear error), and known. Each worker listens on its
        # own socket: this one only checks, and takes no connection it would reset.
        sock = bind(host, port, listen=not own_sockets)
        url = base_url(sock, tls=tls[0] is not None)
        background = server.has_outbox_work
        ready = {"url": url, "applications": server.applications, "workers": workers}
        if workers > 1:
            ready["outbox_worker_process"] = background
        if workers == 1:
            _say_ready(ready)
            server.start_worker()
            uvicorn_server(server, certfile=tls[0], keyfile=tls[1]).run(sockets=[sock])
            return
    finally:
        server.close()
    if own_sockets:
        port = sock.getsockname()[1]
        sock.close()  # each worker listens on its own

    # The outbox worker pushes the workers' blocking changes too (push_relay): one
    # process per target keeps its limits, and drains every worker's changes together.
    relay = listen_for_pushes() if background and _blocking(server) else None

    def one_worker(index: int, listening: Callable[[], None]) -> int:
        if index == workers:  # one outbox worker is enough: claims let it push every row
            return run_outbox_worker(build, listening, relay[0] if relay else None)
        if relay is not None:
            relay[0].close()  # the outbox worker's to accept on
        listener = bind(host, port, own=True) if own_sockets else sock
        forked = build()
        if relay is not None:
            forked.push_through(relay[1])  # it reaches the outbox worker first
        listening()
        try:
            supervised = uvicorn_server(forked, certfile=tls[0], keyfile=tls[1], supervised=True)
            supervised.run(sockets=[listener])
        finally:
            forked.close()
        return 0

    processes = workers + 1 if background else workers
    names = {workers: "the outbox worker"}

    def started(pids: dict[int, int]) -> None:
        ready["workers_pids"] = [pid for index, pid in sorted(pids.items()) if index < workers]
        if background:
            ready["outbox_worker_pid"] = pids.get(workers)
        _say_ready(ready)

    supervisor = Supervisor(processes, one_worker, started, names=names, last={workers})
    try:
        code = supervisor.run()
    finally:
        if relay is not None:
            forget_socket(relay[0])
            relay[0].close()
    if code != 0:
        raise IdprovError(
            "idprov serve stopped: its workers kept failing as they started",
            hint="see the errors above, fix their cause, and start it again",
        )


def _blocking(server: InboundServer) -> bool:
    """Whether requests wait for a push (an enabled IdP with ``blocking: true``)."""
    return any(i.blocking and i.enabled for i in server.config.identity_providers)


PLAIN_HTTP_WARNING = (
    "warning: serving plain HTTP on {host}, beyond this machine: bearer tokens and "
    "personal data cross the network unencrypted. Give --certfile (and --keyfile), put "
    "a TLS-terminating proxy in front, or listen on 127.0.0.1."
)


def open_access_log(path: str) -> TextIO:
    """The access log opened for append; created 0600 (client addresses are personal)."""
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot open the access log {path}: {exc.strerror}",
            hint="give a writable file with --access-log",
        ) from exc
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


class ReopenedLog:
    """The ``--access-log`` file, opened again at the first line after a SIGHUP (what
    logrotate's ``postrotate kill -HUP`` asks for): a SIGHUP killed the server, with no
    message and no graceful stop. Each process of ``--workers`` reopens its own (the
    supervisor passes the signal on)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stream = open_access_log(path)
        self._reopen = False

    def reopen_later(self) -> None:
        self._reopen = True  # from a signal handler: only a flag

    def write(self, text: str) -> int:
        if self._reopen:
            self._reopen = False
            try:
                fresh = open_access_log(self.path)
            except UsageError:
                fresh = None  # keep writing where it was: nothing is lost
            if fresh is not None:
                self.stream.close()
                self.stream = fresh
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def _on_hangup(log: Any) -> None:
    """SIGHUP reopens the access log file (logged to stderr: nothing to reopen, and the
    signal is ignored), never stops the server."""
    import signal

    if isinstance(log, ReopenedLog):
        signal.signal(signal.SIGHUP, lambda _signum, _frame: log.reopen_later())
    else:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _check_tls(certfile: str, keyfile: str | None) -> None:
    """The certificate and key load, or a clear error: a missing file (exit 3), a key
    with a passphrase (it was asked for on the terminal, twice, then "[Errno 22]"), a
    certificate without its key ("[SSL] PEM lib")."""
    import ssl

    from idprov.errors import NotFoundError

    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is not None and not Path(path).is_file():
            raise NotFoundError(
                f"{option} {path} does not exist"
                if not Path(path).exists()
                else f"{option} {path} is not a file",
                hint=f"give the PEM file's path with {option}",
            )

    def no_passphrase() -> str:
        raise UsageError(
            f"the TLS key {keyfile or certfile} is encrypted with a passphrase",
            hint="give a key without one (openssl pkey -in KEY -out KEY.plain), readable "
            "only by idprov's user",
        )

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            certfile, keyfile, password=no_passphrase
        )
    except UsageError:
        raise
    except (OSError, ssl.SSLError) as exc:
        said = (
            "the key does not match the certificate, or is missing"
            if (isinstance(exc, ssl.SSLError) and "PEM lib" in str(exc))
            else str(exc)
        )
        raise UsageError(
            f"cannot use TLS certificate {certfile}: {said}",
            hint="give a PEM certificate with --certfile and its private key with --keyfile "
            "(or both in the --certfile file)",
        ) from exc


def _say_ready(ready: dict[str, Any]) -> None:
    emit(ready, _ready)
    sys.stdout.flush()


def _ready(ready: dict[str, Any]) -> None:
    url, applications, workers = ready["url"], ready["applications"], ready["workers"]
    processes = f" in {workers} processes" if workers > 1 else ""
    if ready.get("outbox_worker_process"):
        processes += " and an outbox worker"
    typer.echo(
        f"idprov serve: SCIM 2.0 at {url} for {', '.join(applications)}{processes} (Ctrl-C stops)"
    )
