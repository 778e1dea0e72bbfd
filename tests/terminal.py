"""Run idprov in a pseudo-terminal, as a person at a terminal does.

:func:`run_in_terminal` forks with :func:`pty.fork`, so the child has a real tty on
stdin, stdout and stderr (rich draws its live display; the line discipline turns a
typed Ctrl-C into SIGINT for the whole foreground process group, worker processes
included). It can type Ctrl-C once some text has appeared, and reports what the
screen received, the exit code, and how long the process took to stop after it.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@dataclass
class TerminalRun:
    """What one run in a pseudo-terminal showed and how it ended."""

    raw: str
    exit_code: int
    stop_seconds: float | None
    """Seconds from the typed Ctrl-C to the process's exit (None: no Ctrl-C typed)."""

    @property
    def text(self) -> str:
        """The output with escape sequences and carriage returns removed."""
        return ANSI.sub("", self.raw)


def run_in_terminal(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    interrupt_after: str | None = None,
    timeout: float = 120.0,
    columns: int = 120,
    stderr: Path | None = None,
    interrupt_when: Callable[[], bool] | None = None,
) -> TerminalRun:
    """Run ``idprov ARGS`` in a pty; type Ctrl-C once ``interrupt_after`` (a regular
    expression) has appeared in the output, or once ``interrupt_when()`` is true (a
    peer of the test holding a request, say). ``stderr``: a file standard error goes to
    instead of the terminal (``idprov ... 2>FILE``)."""
    env = {**env, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: become idprov
        os.chdir(cwd)
        if stderr is not None:
            os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
        code = "import sys; from idprov.cli.main import main; sys.argv[0] = 'idprov'; main()"
        os.execve(sys.executable, [sys.executable, "-c", code, *args], env)
    return _watch(pid, fd, interrupt_after, timeout, interrupt_when)


def _watch(
    pid: int,
    fd: int,
    interrupt_after: str | None,
    timeout: float,
    interrupt_when: Callable[[], bool] | None = None,
) -> TerminalRun:
    output = b""
    typed_at: float | None = None
    deadline = time.monotonic() + timeout
    pattern = re.compile(interrupt_after) if interrupt_after else None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        due = interrupt_when() if interrupt_when is not None else False
        if typed_at is None and (due or (pattern and pattern.search(_plain(output)))):
            os.write(fd, b"\x03")
            typed_at = time.monotonic()
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    stopped = time.monotonic()
    os.close(fd)
    return TerminalRun(
        output.decode(errors="replace"),
        os.waitstatus_to_exitcode(status),
        stopped - typed_at if typed_at is not None else None,
    )


def _plain(output: bytes) -> str:
    return ANSI.sub("", output.decode(errors="replace"))
