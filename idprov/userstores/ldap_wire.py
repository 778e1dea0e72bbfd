"""The LDAP userstore's connection for reading, opened without ldap3.

ldap3 costs about 70 ms to import (more than reading 1,000 users), and a listing or
a sync only searches, whose requests and answers already travel as
:mod:`~idprov.userstores.ldap_bulk` BER on the connection's socket. So a store opens
its connection here: TCP, then TLS for ldaps:// or StartTLS (the certificate verified
against ``ca_file`` or the system's CAs, and its names against the host, as ldap3
does), then a simple bind, each as BER. At its first write a store switches to a
connection ldap3 opens (:meth:`~idprov.userstores.ldap_session.LdapSession._run_ldap3`):
the single writes (rename, delete, a lone add) are still ldap3's.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from idprov.userstores.ldap_bulk import (
    FIRST_MESSAGE_ID,
    Pipeline,
    encode_bind,
    encode_start_tls,
    encode_unbind,
)

if TYPE_CHECKING:
    import ssl


class Refused(Exception):
    """The server answered a bind or StartTLS with a failure: ``result`` is the LDAP
    result code (the attributes :meth:`LdapSession._translate` reads)."""

    def __init__(self, result: int, message: str, doing: str) -> None:
        super().__init__(f"{doing}: {result} {message}")
        self.result, self.message, self.doing = result, message, doing
        self.description: str | None = None


class HandshakeFailed(Exception):
    """TLS could not be set up with a server that answered the connection (not its
    certificate: that is ``ssl.SSLCertVerificationError``): an ldaps:// URL on a plain
    LDAP port, a server whose TLS is broken. ``args[0]`` is ssl's reason."""


class WireConnection:
    """An open, bound connection; ``socket`` is what ldap_bulk's pipelines send on."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def unbind(self) -> None:
        """Say goodbye (no answer comes) and close the socket."""
        try:
            self.socket.sendall(encode_unbind(FIRST_MESSAGE_ID))
        finally:
            self.socket.close()


def open_wire(
    address: tuple[str, int],
    tls: tuple[bool, bool, str | None],
    credentials: tuple[str, str],
    timeouts: tuple[float, float],
) -> WireConnection:
    """Connect to ``address`` (host, port), secure it as ``tls`` says (ldaps, StartTLS,
    CA file) and bind with ``credentials`` (DN, password; empty for anonymous), within
    ``timeouts`` (connect, answers). Raises OSError (ssl's certificate checks included),
    :class:`HandshakeFailed`, :class:`Refused`, or ldap_bulk's ConnectionLost."""
    host = address[0]
    secure, start_tls, ca_file = tls
    sock = socket.create_connection(address, timeout=timeouts[0])
    try:
        if secure:
            sock = _secured(sock, host, ca_file)
        if start_tls:
            _ask(sock, encode_start_tls, "start TLS", timeouts[1])
            sock = _secured(sock, host, ca_file)
        dn, password = credentials
        _ask(sock, lambda mid: encode_bind(mid, dn, password), "bind", timeouts[1])
    except BaseException:
        sock.close()
        raise
    return WireConnection(sock)


def _secured(sock: socket.socket, host: str, ca_file: str | None) -> ssl.SSLSocket:
    """``sock`` with TLS on it: the server's certificate verified against ``ca_file``
    (else the system's CAs) and its names against ``host``. (ssl is imported here: a
    store without TLS does not need its 3 ms.)"""
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError:
        raise
    except ssl.SSLError as exc:
        raise HandshakeFailed(str(exc)) from exc


def is_certificate_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a TLS certificate (or host name) check that failed."""
    ssl = sys.modules.get("ssl")  # never imported: no TLS was tried
    return ssl is not None and isinstance(exc, ssl.SSLCertVerificationError)


def _ask(sock: socket.socket, encode: Callable[[int], bytes], doing: str, timeout: float) -> None:
    """Send one request and raise :class:`Refused` unless it succeeded."""
    (reply,) = Pipeline(sock, 1, timeout).run(1, lambda _, message_id: encode(message_id))
    assert reply is not None
    if reply.result:
        raise Refused(reply.result, reply.message, doing)
