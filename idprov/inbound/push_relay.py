"""`serve --workers`: the outbox worker makes every worker's pushes.

With ``--workers N`` each worker used to push its own requests' changes. Then each
of the N processes had its own connections, ``max_concurrency`` threads and
``rate_limit`` pace per IdP (N times what the target was promised), and the pushes
of concurrent requests could only be drained together (:mod:`.push_queue`) within a
process: 8 clients over 4 workers left about 2 per process, so each push paid for
its planning and its transactions nearly alone (measured: a blocking create cost
4.4 ms of CPU, 2.2 ms when the outbox worker pushed it with the others).

So the blocking pushes go to the outbox worker process too. The supervisor listens
on a Unix socket in a directory of its own (0700) before it forks; the outbox worker
accepts there, and each worker connects. On connecting, the outbox worker gives the
connection a drainer name of its own; a worker's change then claims its rows under a
name of that drainer (:meth:`RelayClient.claim_name`), the request sends the change
(row ids, one-shot passwords, claim names, new entities' rows) and waits for the
outbox worker's report of those rows before it answers, as it waited for its own
push before.

Failures lose nothing:

- a worker reaches the outbox worker before it says it listens. While it cannot
  (the supervisor is starting a killed one again), the worker claims and pushes its
  changes itself, as one process does: for that moment the IdP may get more than its
  ``max_concurrency``, but a request still answers after its push, and a one-shot
  password set by it still goes out with it;
- when the connection is lost with changes in flight, their requests answer with
  the rows queued. The rows are claimed under the lost connection's name: when the
  outbox worker died, the next drain releases them (its process is gone) and pushes
  them; when the worker died, the outbox worker releases at once what that worker
  claimed for it and never sent (a worker killed between its commit and the send).
  A one-shot password of such a change cannot follow (it was only in memory): the
  worker logs which users' passwords to set again.

Frames are a 4-byte big-endian length and a JSON object. One-shot passwords travel
in them (memory to memory, never on disk, never logged), so the socket's directory
is created 0700 and removed with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import logging
import os
import select
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.provisioning.outbox import LEASE_SECONDS
from idprov.secrecy import blank

if TYPE_CHECKING:
    from idprov.inbound.push_queue import Answer
    from idprov.provisioning.results import OutboundReport
    from idprov.provisioning.unit_of_work import PendingPush

    Submit = Callable[[Hashable, PendingPush], Answer]

MOST_FRAME = 64 * 1024 * 1024
"""A frame longer than this is not ours: the connection is closed."""
CONNECT_SECONDS = 30.0
"""How long a starting worker waits for the outbox worker's hello."""
RECONNECT_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)
"""A worker's pauses between attempts to reach the outbox worker (then 1 s each)."""
SEND_SECONDS = 10.0
"""How long the outbox worker waits for a worker to take an answer before it hangs
up (a pusher thread must not wait on a worker that stopped reading)."""
SWEEP_SECONDS = 5.0
"""How often claims under closed connections' names are looked for again."""
MARK = ":relay-"
"""In a drainer name: the outbox worker's relay (its claims' names start with it)."""

log = logging.getLogger("idprov.serve")


def listen_for_pushes() -> tuple[socket.socket, Path]:
    """The supervisor's listening socket (made before it forks), in a new directory
    only this user can enter; remove the directory when the server stops."""
    from idprov.errors import UsageError

    folder = Path(tempfile.mkdtemp(prefix="idprov-serve-"))
    path = folder / "push.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(128)
    except OSError as exc:  # a TMPDIR too long for a socket's path (~100 bytes)
        listener.close()
        folder.rmdir()
        raise UsageError(
            f"cannot make the workers' socket {path}: {exc.strerror or exc}",
            hint="point TMPDIR at a short, writable directory (such as /tmp)",
        ) from None
    return listener, path


def forget_socket(listener: socket.socket) -> None:
    """Remove the socket :func:`listen_for_pushes` made, and its directory (the
    supervisor does when it stops; its outbox worker when it was killed)."""
    with contextlib.suppress(OSError):
        path = Path(listener.getsockname())
        if path.parent.name.startswith("idprov-serve-"):
            path.unlink(missing_ok=True)
            path.parent.rmdir()


# ---------------------------------------------------------------- frames
def _frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return len(body).to_bytes(4, "big") + body


def _length(head: bytes) -> int:
    length = int.from_bytes(head, "big")
    if length > MOST_FRAME:
        raise ConnectionError(f"a frame of {length} bytes")
    return length


def _read_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame; None at the end of the stream."""
    head = _read_exactly(sock, 4)
    if head is None:
        return None
    body = _read_exactly(sock, _length(head))
    if body is None:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


def _send_within(sock: socket.socket, data: bytes, seconds: float) -> None:
    """``sendall`` that gives up (TimeoutError) when the peer takes nothing for
    ``seconds``; the socket itself stays blocking for its reader."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view, socket.MSG_DONTWAIT) :]
            continue
        except BlockingIOError:
            pass
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        if not poller.poll(seconds * 1000):
            raise TimeoutError("the peer takes nothing")


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- reports on the wire
def report_to_wire(report: OutboundReport | None) -> dict[str, Any] | None:
    """Everything a worker's request needs of a report (its own rows' part)."""
    if report is None:
        return None
    return {
        "idps": [
            {
                "name": r.name,
                "total": r.total,
                "operations": [vars(op) for op in r.operations],  # its plain fields
            }
            for r in report.idps.values()
        ],
        "guard": report.guard,
        "noted": [[row, idp, what] for row, (idp, what) in report.noted.items()],
    }


def report_from_wire(wire: dict[str, Any] | None) -> OutboundReport | None:
    from idprov.provisioning.results import IdpReport, OperationResult, OutboundReport

    if wire is None:
        return None
    report = OutboundReport()
    for idp in wire["idps"]:
        operations = [OperationResult(**op) for op in idp["operations"]]
        report.idps[idp["name"]] = IdpReport(idp["name"], idp["total"], operations)
    for row, idp, what in wire["noted"]:
        report.note(what, idp, row)
    report.guard = list(wire["guard"])
    return report


def _lost(pending: PendingPush) -> OutboundReport:
    """The report of a change whose push was lost with the outbox worker: its rows wait
    in the outbox (see the module docstring); the log says which one-shot passwords
    could not follow them."""
    from idprov.provisioning.results import OutboundReport

    if pending.passwords:
        log.warning(
            "the connection to the outbox worker was lost while it pushed the change of "
            "user(s) %s, which set a password; the change is queued, but the password "
            "was only in memory and may not have reached the IdPs: if they take "
            "passwords, set them again (idprov user passwd)",
            ", ".join(sorted(pending.passwords)),
        )
    report = OutboundReport()
    for row in pending.rows:
        report.note("queued", pending.idps.get(row, "?"), row)
    return report


class NotSent(Exception):
    """A change that could not be sent to the outbox worker (nothing of it went)."""


class RelayError(Exception):
    """The outbox worker's push of a change failed as a whole (its error)."""


# ---------------------------------------------------------------- a worker's end
class RelayClient:
    """A worker's connection to the outbox worker, on the server's event loop (the
    claim names are taken on the writer thread: :meth:`claim_name`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.drainer: str | None = None
        """The outbox worker's drainer name while connected (None: push here)."""
        self._changes = itertools.count(1)
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._first: socket.socket | None = None

    def connect(self, timeout: float = CONNECT_SECONDS) -> bool:
        """Reach the outbox worker now (a starting worker, before it listens); False
        if it did not answer in ``timeout`` (then :meth:`start` keeps trying)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.path))
            hello = _read_frame(sock)
        except (OSError, ValueError):
            sock.close()
            return False
        if hello is None or MARK not in str(hello.get("drainer", "")):
            sock.close()
            return False
        sock.settimeout(None)
        self._first, self.drainer = sock, str(hello["drainer"])
        return True

    def start(self) -> None:
        """Connect, and connect again after a loss, until :meth:`close` (on the loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def claim_name(self) -> str | None:
        """A name for one change's claims under the connection's drainer name; None
        while it is not connected: this worker pushes the change itself."""
        drainer = self.drainer
        if drainer is None:
            return None
        return f"{drainer}.{os.getpid()}-{next(self._changes)}"

    @staticmethod
    def carries(pending: PendingPush) -> bool:
        """Whether any of ``pending``'s rows were claimed for the outbox worker (else
        this worker pushes them)."""
        return any(MARK in name for name in pending.claims)

    async def push(self, key: Hashable, pending: PendingPush) -> OutboundReport | None:
        """Have the outbox worker push ``pending`` (claimed for it) and wait for the
        report of its rows; queued if the connection is lost once the change went.
        :class:`NotSent` when it cannot go: not connected, or claimed (in part) on a
        connection that is gone (a Bulk request's operations each claim as they
        commit); the caller gives its claims back and pushes it itself."""
        writer, drainer = self._writer, self.drainer
        if writer is None or drainer is None:
            raise NotSent
        if not all(name.startswith(f"{drainer}.") for name in pending.claims):
            raise NotSent
        number = next(self._ids)
        answer: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        change = {
            "id": number,
            "key": list(key),  # type: ignore[call-overload]
            "rows": pending.rows,
            "passwords": pending.passwords,
            "claims": pending.claims,
            "fresh": pending.fresh,
            "idps": {str(row): idp for row, idp in pending.idps.items()},
        }
        try:
            writer.write(_frame(change))
            await writer.drain()
        except (ConnectionError, OSError):  # the peer had hung up: it never read it
            self._waiting.pop(number, None)
            raise NotSent from None
        kind, value = await answer
        if kind == "report":
            return report_from_wire(value)
        if kind == "error":
            raise RelayError(value)
        return _lost(pending)

    async def _run(self) -> None:
        pauses = iter(RECONNECT_SECONDS)
        while not self._closed:
            try:
                if self._first is not None:  # connected by connect(): hello read
                    first, self._first = self._first, None
                    drainer = self.drainer
                    reader, writer = await asyncio.open_unix_connection(sock=first)
                else:
                    reader, writer = await asyncio.open_unix_connection(str(self.path))
                    try:
                        hello = await _read_async(reader)
                    except BaseException:
                        writer.close()
                        raise
                    drainer = str((hello or {}).get("drainer", ""))
                if drainer is None or MARK not in drainer:
                    writer.close()
                    raise ConnectionError("no hello")
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                self.drainer = None
                await asyncio.sleep(next(pauses, 1.0))
                continue
            pauses = iter(RECONNECT_SECONDS)
            self._writer, self.drainer = writer, drainer
            try:
                await self._read_answers(reader)
            finally:
                self._lost()
                writer.close()

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await _read_async(reader)
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                return
            if message is None:
                return
            answer = self._waiting.pop(int(message["id"]), None)
            if answer is not None and not answer.done():
                if "error" in message:
                    answer.set_result(("error", str(message["error"])))
                elif message.get("queued"):
                    answer.set_result(("lost", None))
                else:
                    answer.set_result(("report", message.get("report")))

    def _lost(self) -> None:
        """The connection is gone: the changes waiting on it answer as queued."""
        self._writer, self.drainer = None, None
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_result(("lost", None))

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
            self._task = None
        self._lost()


async def _read_async(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    message: dict[str, Any] = json.loads(await reader.readexactly(_length(head)))
    return message


# ---------------------------------------------------------------- the outbox worker's end
class RelayServer:
    """The outbox worker's end: accepts the workers on the supervisor's socket and
    hands their changes to ``submit`` (the process's :class:`~.push_queue.PushQueue`,
    which drains the changes of one caller together, whichever worker sent them)."""

    def __init__(
        self,
        listener: socket.socket,
        submit: Submit,
        release: Callable[[str, set[str]], object],
    ) -> None:
        self.listener = listener
        self.submit = submit
        self.release = release
        """``release(prefix, keep)``: give back the claims whose names start with
        ``prefix``, but ``keep``'s (a closed connection's unsent changes)."""
        self._closed: dict[str, tuple[float, set[str]]] = {}
        """Closed connections' name prefixes: when they closed, and the claim names of
        the changes they brought that are still being pushed."""
        self._sweep = threading.Condition()
        self._connected = 0
        self._count = threading.Condition()

    def wait_for_workers(self, seconds: float) -> None:
        """Stopping: wait until every worker has closed its connection (they close it
        once their last request has answered), at most ``seconds``."""
        with self._count:
            self._count.wait_for(lambda: self._connected == 0, seconds)

    def start(self) -> None:
        threading.Thread(target=self._accept, name="idprov-relay", daemon=True).start()
        threading.Thread(target=self._sweeper, name="idprov-relay-sweep", daemon=True).start()

    def _sweeper(self) -> None:
        """Give back what workers claimed under closed connections' names and never
        sent: at once when one closes, and again every :data:`SWEEP_SECONDS` for a
        lease (a worker stopped mid-change may commit a claim under the name late, or
        the outbox worker hung up on it while it still took names)."""
        while True:
            with self._sweep:
                self._sweep.wait(SWEEP_SECONDS)
                now = time.monotonic()
                for prefix, (since, _) in list(self._closed.items()):
                    if now - since > LEASE_SECONDS:  # later claims run out by then
                        del self._closed[prefix]
                closed = [(p, set(keep)) for p, (_, keep) in self._closed.items()]
            for prefix, keep in closed:
                try:
                    self.release(prefix, keep)
                except Exception as exc:  # noqa: BLE001 - the lease runs out instead
                    log.warning("could not give back a closed connection's claims: %s", exc)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.1)  # out of descriptors for now: the worker retries
                    continue
                return  # the process is stopping
            threading.Thread(
                target=self._serve, args=(conn,), name="idprov-relay-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        sending = threading.Lock()
        drainer = f"{socket.gethostname()}:{os.getpid()}{MARK}{uuid.uuid4().hex[:8]}"
        received: set[str] = set()
        """The claim names of the changes this connection brought (their drains finish
        or give back their claims)."""

        def send(message: dict[str, Any]) -> None:
            frame = _frame(message)
            with sending:
                try:
                    _send_within(conn, frame, SEND_SECONDS)
                except TimeoutError:  # a worker that stopped reading (SIGSTOP): hang
                    with contextlib.suppress(OSError):  # up, so no pusher thread waits
                        conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # the worker is gone: what was pushed is recorded all the same

        with self._count:
            self._connected += 1
        try:
            send({"drainer": drainer})
            while (message := _read_frame(conn)) is not None:
                self._take(message, send, received)
        except (OSError, ConnectionError, ValueError, KeyError, TypeError) as exc:
            log.warning("a worker's push connection failed: %s", type(exc).__name__)
        finally:
            conn.close()
            with self._sweep:  # what the worker claimed for it and never sent
                self._closed[f"{drainer}."] = (time.monotonic(), received)
                self._sweep.notify()
            with self._count:
                self._connected -= 1
                self._count.notify_all()

    def _take(
        self,
        message: dict[str, Any],
        send: Callable[[dict[str, Any]], None],
        received: set[str],
    ) -> None:
        from idprov.provisioning.unit_of_work import PendingPush

        number = int(message["id"])
        change = PendingPush(
            rows=[int(r) for r in message["rows"]],
            passwords={str(k): str(v) for k, v in message["passwords"].items()},
            claims=[str(c) for c in message["claims"]],
            fresh=[int(r) for r in message["fresh"]],
            idps={int(r): str(idp) for r, idp in message.get("idps", {}).items()},
        )
        received.update(change.claims)
        try:
            future = self.submit(tuple(message["key"]), change)
        except RuntimeError:  # stopping: the pushers are shut down
            send({"id": number, "queued": True})  # claimed by this process: released
            return  # when it is gone, and pushed then

        def pushed(_: Future[None]) -> None:
            received.difference_update(change.claims)  # the drain finished its rows

        def answer(done: Future[OutboundReport | None]) -> None:
            try:
                send({"id": number, "report": report_to_wire(done.result())})
            except Exception as exc:  # noqa: BLE001 - the request answers with it
                said = blank(str(exc)) or type(exc).__name__  # a secret it quotes: blanked
                log.error("a relayed push failed: %s", said)
                send({"id": number, "error": said})

        drained: Future[Any] = getattr(future, "pushed", future)  # not at a deadline's
        drained.add_done_callback(pushed)  # answer: the drain goes on with what it sends
        future.add_done_callback(answer)
