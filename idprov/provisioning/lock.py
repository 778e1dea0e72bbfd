"""One writer at a time for sync and import: an advisory lock.

With the SQLite state, ``fcntl.flock`` on ``<data_dir>/write.lock`` (:class:`RunLock`):
the kernel releases it when the holder exits, however it exits, so a lock left by a
killed process is simply free again. The holder writes who it is into the file, so
that a second run can say who holds the lock.

With the PostgreSQL state, shared by several machines, a session-level advisory lock
(:class:`AdvisoryRunLock`) on a connection of its own: the server releases it when
that session ends, however the holder ends. Who holds it is in table ``run_locks``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from idprov.config.paths import create_private_file
from idprov.db import now
from idprov.errors import LockedError

if TYPE_CHECKING:
    from idprov.config.postgres import PostgresConnection
    from idprov.pg import PgSession

LOCK_FILENAME = "write.lock"
ADVISORY_NAME = "write"


def holder_of(command: str) -> dict[str, str | int]:
    """Who this process is, as a lock holder."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": now()}


def locked(holder: Mapping[str, Any]) -> LockedError:
    """The error for a lock that ``holder`` holds."""
    return LockedError(
        f"another idprov {holder.get('command', 'run')} holds the lock: pid "
        f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
        f"{holder.get('since', '?')}",
        hint="wait for it to finish, or pass --wait to queue behind it",
    )


class RunLock:
    """``with RunLock(data_dir, "sync"):`` — raises LockedError, or waits with ``wait``."""

    def __init__(self, data_dir: Path, command: str, wait: bool = False) -> None:
        self.path = data_dir / LOCK_FILENAME
        self.command = command
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        create_private_file(self.path)
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise locked(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_of(self.command)).encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> dict[str, str]:
        try:
            return dict(json.loads(os.pread(fd, 4096, 0) or b"{}"))
        except (ValueError, OSError):
            return {}

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class AdvisoryRunLock:
    """:class:`RunLock` for the PostgreSQL state: ``pg_advisory_lock`` on a session of
    its own, keyed by the state's schema; the holder noted in ``run_locks``."""

    def __init__(self, config: PostgresConnection, command: str, wait: bool = False) -> None:
        self.config = config
        self.command = command
        self.wait = wait
        self.key = f"idprov:run:{config.schema}"
        self._session: PgSession | None = None

    def __enter__(self) -> AdvisoryRunLock:
        from idprov.pg import PgSession

        session = PgSession(self.config, "the state", owner="state")
        try:
            self._take(session)
        except BaseException:
            session.close()
            raise
        self._session = session
        return self

    def _take(self, session: PgSession) -> None:
        if self.wait:
            session.execute("SELECT pg_advisory_lock(hashtext(?))", [self.key])
        else:
            row = session.execute("SELECT pg_try_advisory_lock(hashtext(?))", [self.key])
            if row.fetchone() != (True,):
                raise locked(self._holder(session))
        me = holder_of(self.command)
        session.execute(
            "INSERT INTO run_locks (name, pid, host, command, since) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET pid = excluded.pid, host = excluded.host,"
            " command = excluded.command, since = excluded.since",
            [ADVISORY_NAME, me["pid"], me["host"], me["command"], me["since"]],
        )

    @staticmethod
    def _holder(session: PgSession) -> dict[str, Any]:
        row = session.execute(
            "SELECT pid, host, command, since FROM run_locks WHERE name = ?", [ADVISORY_NAME]
        ).fetchone()
        return dict(zip(("pid", "host", "command", "since"), row or (), strict=False))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.execute("DELETE FROM run_locks WHERE name = ?", [ADVISORY_NAME])
            session.execute("SELECT pg_advisory_unlock(hashtext(?))", [self.key])
        finally:
            session.close()  # ending the session releases the lock in any case
