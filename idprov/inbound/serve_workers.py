"""Several `idprov serve` processes on one listening socket (``--workers N``).

One Python process serves on one core. With ``--workers N`` the command checks that
the port is free, then forks N worker processes that each run the whole application
(its own threads, its own database connections). On Linux each worker listens on a
socket of its own on that port (``SO_REUSEPORT``: the kernel spreads new connections
over them); on one shared socket, the first worker to wake took every connection of a
burst (measured: 8 keep-alive clients, all 8 on one worker, the other idle). Where
the kernel does not spread them, the workers share the command's socket. The parent
says the server is ready once every first worker listens, and then only supervises:

- a worker that dies (a crash, an OOM kill, ``kill -9``) is started again, and the
  replacement's outbox worker takes over what the dead one had claimed (claims name
  their process; see :meth:`~idprov.provisioning.outbound.Outbound.release_the_dead`);
- a worker whose supervisor is gone (``kill -9``) stops gracefully within a second,
  so no orphan keeps the port;
- a worker that dies within :data:`QUICK_DEATH_SECONDS` of its start, :data:`MOST_QUICK_DEATHS`
  times in a row, stops the whole server with an error (it would only die again);
- SIGINT (Ctrl-C) or SIGTERM to the parent stops every worker gracefully (each
  finishes its requests in flight, pushes included) and the parent exits 0 once they
  are gone; a worker still busy after :data:`STOP_SECONDS` is killed (what it had
  committed is in the outbox, and the next start pushes it). The parent passes the
  stop on as SIGTERM; workers ignore SIGINT (a Ctrl-C reaches the whole process
  group: see :func:`~idprov.inbound.serve_http.uvicorn_server`).

What keeps the workers from undoing each other is in the store: every write runs in
a transaction that takes the write lock (SQLite) or the row (PostgreSQL, ``FOR
UPDATE``) before it reads, so a uniqueness check and a PATCH's read-modify-write see
every other worker's commits; an ETag that changed in between is a 412. A directory
has no such lock: when a userstore is not SQLite or PostgreSQL, the workers' writes
take turns on a :class:`WriterLock` (as one process's single writer thread does), so
two PATCHes of one LDAP user are never applied to the same read.

POSIX only (``os.fork``); the workers are forked before any thread or database
connection exists in the parent.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from idprov.errors import UsageError

if TYPE_CHECKING:
    from idprov.config import Config
    from idprov.inbound.scim_server import InboundServer

ROW_LOCKING_STORES = ("sqlite", "postgres")
"""Userstore types whose transactions keep other writers off what they read."""
QUICK_DEATH_SECONDS = 5.0
MOST_QUICK_DEATHS = 5
STOP_SECONDS = 60.0
ORPHAN_CHECK_SECONDS = 1.0
MOST_WORKERS = 64
OUTBOX_NICENESS = 10
OWN_SOCKETS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
"""Whether each worker listens on a socket of its own (see the module docstring)."""


def check_workers(count: int) -> None:
    """Refuse a worker count the supervisor cannot run."""
    if not 1 <= count <= MOST_WORKERS:
        raise UsageError(
            f"--workers is between 1 and {MOST_WORKERS}, not {count}",
            hint=f"two per core is a good start (this machine has {os.cpu_count() or 1})",
        )
    if count > 1 and not hasattr(os, "fork"):
        raise UsageError("--workers above 1 needs fork(), which this system does not have")


def run_outbox_worker(
    build: Callable[[], InboundServer],
    listening: Callable[[], None],
    pushes: socket.socket | None = None,
) -> int:
    """In the outbox worker's process of `serve --workers`: push in the background
    (see :meth:`~idprov.inbound.scim_server.InboundServer.start_worker`) until
    SIGTERM; with ``pushes`` (the supervisor's socket), also the workers' changes they
    send there (:mod:`~idprov.inbound.push_relay`). When it makes only the background
    pushes, it runs at a lower CPU priority than the workers that answer requests (nice
    +:data:`OUTBOX_NICENESS`): on a busy machine replies come first, and the rows wait
    in the outbox a little longer; on an idle one it runs at full speed. Requests wait
    for the pushes it makes for the workers, so then it keeps the workers' priority."""
    stopped: list[int] = []  # a flag: a handler must not take a lock the loop may hold
    supervisor = os.getppid()
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopped.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group
    if pushes is None:
        os.nice(OUTBOX_NICENESS)
        listening()  # the server is ready once this process runs at its priority
    server = build()
    if pushes is not None:
        server.push_for_workers(pushes)
        listening()  # and, when the workers' pushes are its, once it takes them
    server.start_worker()
    try:
        while not stopped:
            time.sleep(0.2)
        server.wait_for_workers(STOP_SECONDS)  # a stop sent to every process at once
    finally:
        if pushes is not None and os.getppid() != supervisor:
            from idprov.inbound.push_relay import forget_socket

            forget_socket(pushes)  # the supervisor was killed: nobody else removes it
        server.close()
    return 0


def writes_take_turns(config: Config) -> bool:
    """Whether the workers' writes must take turns: a userstore without row locks."""
    return any(store.type not in ROW_LOCKING_STORES for store in config.userstores)


class WriterLock:
    """An exclusive lock of the processes that open the same file (``flock``); the
    system lets go of it when its holder dies, even of ``kill -9``. Each process opens
    the file itself (a descriptor inherited over fork would share the lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        import fcntl

        with self._threads:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd


@dataclass
class Worker:
    index: int
    pid: int
    started: float


@dataclass
class Supervisor:
    """Fork ``count`` workers that each run ``serve(index, listening)`` (its return
    value is the worker's exit status; it calls ``listening()`` once its socket listens)
    and keep them running until SIGINT or SIGTERM."""

    count: int
    serve: Callable[[int, Callable[[], None]], int]
    started: Callable[[dict[int, int]], None] = lambda pids: None
    """Called once every first worker listens, or died trying, with the pid of each
    index still running (`serve` then says where it listens, and which process is
    which)."""
    say: TextIO = field(default_factory=lambda: sys.stderr)
    names: dict[int, str] = field(default_factory=dict)
    """What messages call the process of an index (default: "worker N")."""
    last: set[int] = field(default_factory=set)
    """Indexes stopped only once the others are gone (the outbox worker: requests
    that finish during the stop wait for the pushes it makes for them)."""
    workers: dict[int, Worker] = field(default_factory=dict)
    stopping: bool = False
    gave_up: bool = False
    quick_deaths: int = 0
    _listening: int | None = None
    """The write end of the pipe the first workers say "listening" on."""
    _heard: int | None = None
    """Its read end (the supervisor's)."""
    _signalled: set[int] = field(default_factory=set)
    """Pids sent the stop."""
    _worker_hangup: Any = None
    """The SIGHUP handler before the supervisor's: what a worker's SIGHUP does."""

    def run(self) -> int:
        """Supervise until stopped; 0 after a stop asked for by a signal, 1 when
        workers kept dying at start (the others are stopped and waited for first)."""
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = self._worker_hangup = signal.signal(signal.SIGHUP, self._hangup)
        try:
            self._start_listening()
            if not self.stopping:
                self.started({w.index: w.pid for w in self.workers.values()})
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_listening(self) -> None:
        """Start the first workers and wait until each listens or is gone: each writes
        a byte on a pipe and closes its end; the read ends when no end is open."""
        self._heard, self._listening = os.pipe()
        heard = self._heard
        try:
            for index in range(self.count):
                self._start(index)
        finally:
            os.close(self._listening)
            self._listening = None
        try:
            while os.read(heard, 64):
                pass
        finally:
            os.close(heard)
            self._heard = None

    def _say_listening(self) -> None:
        """In a worker: tell the supervisor this worker listens (once)."""
        if self._listening is not None:
            os.write(self._listening, b"l")
            os.close(self._listening)
            self._listening = None

    def _start(self, index: int) -> int:
        sys.stdout.flush()  # else the worker would write the parent's buffered text again
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            os._exit(self._child(index, parent))
        self.workers[pid] = Worker(index, pid, time.monotonic())
        return pid

    def _child(self, index: int, parent: int) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own
        # a worker's SIGHUP reopens its access log (never passed on: the supervisor's is)
        signal.signal(signal.SIGHUP, self._worker_hangup or signal.SIG_IGN)
        if self._heard is not None:
            os.close(self._heard)  # the supervisor's end
        _stop_when_orphaned(parent)
        try:
            return self.serve(index, self._say_listening)
        except BaseException as exc:  # noqa: BLE001 - a worker must not unwind into the parent
            self._say(f"{self._name(index)} (pid {os.getpid()}) failed: {exc}")
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    def _watch(self) -> int:
        deadline: float | None = None
        while self.workers:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + STOP_SECONDS
            pid, status = self._wait(deadline)
            if pid == 0:
                self._kill_the_rest()
                continue
            worker = self.workers.pop(pid, None)
            if worker is not None and not self.stopping:
                self._replace(worker, status)
            elif self.stopping:
                self._stop_all()  # the last ones, once the others are gone
        return 1 if self.gave_up else 0

    def _wait(self, deadline: float | None) -> tuple[int, int]:
        """The next worker to exit, as (pid, wait status); (0, 0) when the stop's
        deadline passed first. Signals interrupt the wait (the handler set stopping)."""
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return 0, 0
            pid, status = os.waitpid(-1, os.WNOHANG if self.stopping else 0)
            if pid:
                return pid, status
            time.sleep(0.05)  # stopping: poll until the workers are gone or the deadline

    def _replace(self, worker: Worker, status: int) -> None:
        """Start a worker again after it died; unless it dies at start again and again:
        then stop the server."""
        lived = time.monotonic() - worker.started
        self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
        how = _how_it_ended(status)
        if self.quick_deaths >= MOST_QUICK_DEATHS:
            self._say(
                f"{self._name(worker.index)} (pid {worker.pid}) {how} {self.quick_deaths} "
                f"times in a row within {QUICK_DEATH_SECONDS:.0f} s of starting; stopping the "
                "server (see the errors above)"
            )
            self.gave_up = True
            self._stop_all()
            return
        new = self._start(worker.index)
        name = self._name(worker.index)
        self._say(f"{name} (pid {worker.pid}) {how}; started it again (pid {new})")

    def _hangup(self, signum: int, _frame: object) -> None:
        """SIGHUP (logrotate's postrotate): each worker reopens its access log."""
        for pid in list(self.workers):
            _signal(pid, signal.SIGHUP)

    def _stop(self, signum: int, _frame: object) -> None:
        """SIGINT or SIGTERM: stop every worker gracefully (again: no harm done)."""
        self._stop_all()

    def _stop_all(self) -> None:
        self.stopping = True
        first = [w.pid for w in self.workers.values() if w.index not in self.last]
        for pid in first or list(self.workers):
            if pid not in self._signalled:
                self._signalled.add(pid)
                _signal(pid, signal.SIGTERM)

    def _kill_the_rest(self) -> None:
        for worker in list(self.workers.values()):
            self._say(
                f"{self._name(worker.index)} (pid {worker.pid}) still busy {STOP_SECONDS:.0f} s "
                "after the stop; killed (what it committed is in the outbox)"
            )
            _signal(worker.pid, signal.SIGKILL)
            os.waitpid(worker.pid, 0)
            self.workers.pop(worker.pid)

    def _name(self, index: int) -> str:
        return self.names.get(index, f"worker {index}")

    def _say(self, text: str) -> None:
        self.say.write(f"idprov serve: {text}\n")
        self.say.flush()


def _stop_when_orphaned(parent: int) -> None:
    """In a worker: stop gracefully (SIGTERM to itself) once the supervisor is gone,
    killed with ``kill -9`` say, instead of serving on as an orphan that keeps the
    port from the next start."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="idprov-orphan-watch", daemon=True).start()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # gone already: waitpid collects it


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
