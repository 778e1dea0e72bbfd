"""Socket helpers shared by idprov's own network clients (the HTTP connectors'
transport, the LDAP session), which do not import each other."""

from __future__ import annotations

import select
import socket
import ssl


def idle_readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it (the end
    of the stream, a notice of disconnection) or sent what nobody asked for; either way
    a request sent on it would be lost, and it is not to be used again. ``poll``, not
    ``select``: select refuses a descriptor of 1,024 or more, which a busy process (a
    serve with many clients) has, and every request would then reconnect."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
