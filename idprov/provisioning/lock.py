"""One writer at a time for sync and import: an advisory lock on a file.

``fcntl.flock`` on ``<data_dir>/write.lock``: the kernel releases it when the
holder exits, however it exits, so a lock left by a killed process is simply
free again. The holder writes who it is into the file, so that a second run can
say who holds the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

from idprov.config.paths import create_private_file
from idprov.db import now
from idprov.errors import LockedError

LOCK_FILENAME = "write.lock"


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
            raise LockedError(
                f"another idprov {holder.get('command', 'run')} holds the lock: pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                f"{holder.get('since', '?')}",
                hint="wait for it to finish, or pass --wait to queue behind it",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": self.command,
                    "since": now(),
                }
            ).encode(),
            0,
        )
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
