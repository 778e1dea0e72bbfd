"""`idprov serve`: the inbound SCIM 2.0 endpoint (and POST /jit/login) until stopped."""

from __future__ import annotations

import sys
from typing import Annotated, TextIO

import typer

from idprov.cli.common import JsonOpt, emit
from idprov.errors import UsageError

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
    json: JsonOpt = False,
) -> None:
    """Serve SCIM 2.0 Users, Groups (roles) and Bulk, and POST /jit/login, to programs
    holding an application's bearer token; changes go out to that application's IdPs."""
    from idprov.cli.common import service
    from idprov.inbound.scim_server import InboundServer
    from idprov.inbound.serve_http import base_url, bind, uvicorn_server

    if keyfile and not certfile:
        raise UsageError("--keyfile needs --certfile", hint="give the certificate with --certfile")
    if certfile:
        _check_tls(certfile, keyfile)
    if max_body < 1024 or readers < 1:
        raise UsageError("--max-body is at least 1024 bytes and --readers at least 1")
    config = service(live=False).config
    if not certfile and not is_loopback(host):
        typer.secho(PLAIN_HTTP_WARNING.format(host=host), fg="yellow", err=True)
    log = open_access_log(access_log) if access_log else sys.stderr
    server = InboundServer(
        config, applications=app_names, access_log=log, max_body=max_body, readers=readers
    )
    try:
        sock = bind(host, port)
        url = base_url(sock, tls=certfile is not None)
        ready = {"url": url, "applications": server.applications}
        emit(ready, lambda r: _ready(r["url"], r["applications"]))
        sys.stdout.flush()
        server.start_worker()
        uvicorn_server(server, certfile=certfile, keyfile=keyfile).run(sockets=[sock])
    finally:
        server.close()
        if log is not sys.stderr:
            log.close()


PLAIN_HTTP_WARNING = (
    "warning: serving plain HTTP on {host}, beyond this machine: bearer tokens and "
    "personal data cross the network unencrypted. Give --certfile (and --keyfile), put "
    "a TLS-terminating proxy in front, or listen on 127.0.0.1."
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    import ipaddress

    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


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


def _check_tls(certfile: str, keyfile: str | None) -> None:
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot use TLS certificate {certfile}: {exc}",
            hint="give a PEM certificate with --certfile and its key with --keyfile",
        ) from exc


def _ready(url: str, applications: list[str]) -> None:
    typer.echo(f"idprov serve: SCIM 2.0 at {url} for {', '.join(applications)} (Ctrl-C stops)")
