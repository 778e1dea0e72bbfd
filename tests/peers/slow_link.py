"""A slow network path to a real server: a loopback TCP relay that holds every answer.

:class:`SlowLink` listens on a loopback port and relays each connection to an
upstream server (the real scim2-server), byte for byte, in both directions; only the
upstream's answer to each request is held for ``delay`` seconds after that request went
out. An identity provider behind it behaves like one on the far side of a slow link:
every request is answered, correctly, ``delay`` seconds late. The live display's tests
use it to see what a person at a terminal sees while a push waits. It also counts the
requests in flight (:attr:`SlowLink.in_flight`, :attr:`SlowLink.most_in_flight`): what an
IdP's ``max_concurrency`` promises it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit


class SlowLink:
    """A relay to ``upstream`` (a URL) whose answers arrive ``delay`` seconds late."""

    def __init__(self, upstream: str, delay: float) -> None:
        parts = urlsplit(upstream)
        self.upstream = parts
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._count = threading.Lock()
        self.in_flight = 0
        """Requests sent upstream whose answer has not started back yet."""
        self.most_in_flight = 0
        self.requests = 0

    @property
    def url(self) -> str:
        """``upstream`` with the relay's address in place of the server's."""
        port = self._listener.getsockname()[1]
        return urlunsplit(self.upstream._replace(netloc=f"127.0.0.1:{port}"))

    def __enter__(self) -> SlowLink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed under it: the test is over
                return
            address = (self.upstream.hostname or "127.0.0.1", self.upstream.port or 80)
            try:
                server = socket.create_connection(address)
            except OSError:  # the upstream is gone: as a link that cannot reach it
                client.close()
                continue
            asked = [0.0, 0.0]  # when the latest request went upstream; 1.0: in flight
            for pump in ((client, server, asked, False), (server, client, asked, True)):
                threading.Thread(target=self._pump, args=pump, daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, asked: list[float], back: bool
    ) -> None:
        """Copy ``source`` to ``sink``; an answer (``back``) not before ``delay`` after
        the request that caused it."""
        try:
            while chunk := source.recv(65536):
                if back:
                    time.sleep(max(0.0, asked[0] + self.delay - time.monotonic()))
                    self._answered(asked)
                else:
                    asked[0] = time.monotonic()
                    self._asked(asked)
                sink.sendall(chunk)
        except OSError:
            pass  # either side went away
        finally:
            if back:
                self._answered(asked)
            with contextlib.suppress(OSError):  # wakes the other pump's recv
                sink.shutdown(socket.SHUT_RDWR)
            sink.close()

    def _asked(self, asked: list[float]) -> None:
        with self._count:
            if not asked[1]:  # the first chunk of a request (one at a time per connection)
                asked[1] = 1.0
                self.requests += 1
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _answered(self, asked: list[float]) -> None:
        with self._count:
            if asked[1]:
                asked[1] = 0.0
                self.in_flight -= 1
