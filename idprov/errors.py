"""One exception tree for everything idprov refuses or fails to do.

Every error carries a stable exit code, a machine-readable ``code`` and a ``hint``
that tells the administrator how to fix it. Adapters around libraries (sqlite3,
yaml, keyring, httpx, ldap3) translate their exceptions into these with
``raise ... from exc``; the CLI catches :class:`IdprovError` in one place.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes. Stable: scripts and cron jobs depend on them."""

    OK = 0
    ERROR = 1
    """Unexpected failure, or a backend (userstore, database) that could not be used."""
    USAGE = 2
    """Bad command line or bad configuration."""
    NOT_FOUND = 3
    CONFLICT = 4
    POLICY = 5
    """Refused by a userstore policy (username, password, role name, required claim)."""
    OUTBOUND_FAILED = 6
    """The local change is done, but some outbound operations failed (see `outbox list`)."""
    GUARD_TRIPPED = 7
    """The deletion guard refused (sync) or held (any other change) destructive changes
    over its thresholds, or a source could not be read in full."""
    LOCKED = 8
    """Another sync or import holds the lock."""
    PARTIAL = 9
    """An import in which some rows were rejected (the others were imported); a sync
    that left out the users of names several directory entries hold."""
    NOTHING_IMPORTED = 10
    """An import that wrote nothing: a bad file, every row bad, or --on-error stop."""
    CHANGES_APPLIED = 11
    """`sync --detailed-exitcode`: changes were made, all of them successfully; with
    `--dry-run` (or `plan --detailed-exitcode`): changes are pending."""
    DRIFT_FOUND = 12
    """`sync --verify --detailed-exitcode`: a target has drifted and it was not repaired."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT): what was committed stays; running the command again
    finishes the job."""


class IdprovError(Exception):
    """Base of every error idprov reports to a user."""

    exit_code: ExitCode = ExitCode.ERROR
    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class UsageError(IdprovError):
    exit_code = ExitCode.USAGE
    code = "usage"


class ConfigError(IdprovError):
    """The configuration file is unreadable or invalid. ``location`` is file:line:column."""

    exit_code = ExitCode.USAGE
    code = "config"

    def __init__(
        self,
        message: str,
        *,
        location: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        prefix = f"{location}: " if location else ""
        where = f"{key}: " if key else ""
        super().__init__(f"{prefix}{where}{message}", hint=hint)
        self.location = location
        self.key = key


class SecretError(ConfigError):
    code = "secret"


class NotFoundError(IdprovError):
    exit_code = ExitCode.NOT_FOUND
    code = "not_found"


class ConflictError(IdprovError):
    exit_code = ExitCode.CONFLICT
    code = "conflict"


class PolicyError(IdprovError):
    exit_code = ExitCode.POLICY
    code = "policy"


class ReadOnlyError(PolicyError):
    code = "read_only"


class StoreError(IdprovError):
    """A userstore or idprov's own database could not be read or written."""

    exit_code = ExitCode.ERROR
    code = "store"


class GuardError(IdprovError):
    """A change was refused to protect the targets (see the message for why)."""

    exit_code = ExitCode.GUARD_TRIPPED
    code = "guard"

    def __init__(
        self, message: str, *, hint: str | None = None, tripped: dict[str, int] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.tripped = dict(tripped or {})
        """IdP -> kinds of change over its guard (empty: a source that could not be read)."""


class LockedError(IdprovError):
    exit_code = ExitCode.LOCKED
    code = "locked"


class OutboundError(IdprovError):
    exit_code = ExitCode.OUTBOUND_FAILED
    code = "outbound"


class Interrupted(IdprovError):
    """The user pressed Ctrl-C. Every write is one transaction, so what is committed
    is whole; unfinished pushes stay in the outbox and an import's journal knows
    the last line written."""

    exit_code = ExitCode.INTERRUPTED
    code = "interrupted"


_OS_HINTS = {
    errno.ENOENT: (ExitCode.NOT_FOUND, "check the path; the directory it names must exist"),
    errno.ENOTDIR: (ExitCode.NOT_FOUND, "a part of the path is a file, not a directory"),
    errno.EISDIR: (ExitCode.USAGE, "name a file, not a directory"),
    errno.EEXIST: (ExitCode.CONFLICT, "choose another name, or remove the file first"),
    errno.EACCES: (
        ExitCode.ERROR,
        "check the owner and mode of the file and its directory (ls -l), or run as "
        "the user that owns idprov's data",
    ),
    errno.EROFS: (ExitCode.ERROR, "the file system is mounted read-only; use a writable path"),
    errno.ENOSPC: (ExitCode.ERROR, "the disk is full: free some space and run the command again"),
    errno.EDQUOT: (ExitCode.ERROR, "the disk quota is used up: free some space and run again"),
}
_OS_HINTS[errno.EPERM] = _OS_HINTS[errno.EACCES]


def from_os_error(exc: OSError, doing: str | None = None) -> IdprovError:
    """An operating-system error (a file, a directory, a full disk) as a clear message
    naming the file, with the exit code its kind calls for and how to fix it."""
    code, hint = _OS_HINTS.get(exc.errno or 0, (ExitCode.ERROR, None))
    files = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc)
    what = f"cannot {doing}: " if doing else ""
    error = IdprovError(f"{what}{files + ': ' if files else ''}{reason}", hint=hint)
    error.exit_code = code
    error.code = "os_error"
    return error


_SQLITE_HINTS = {
    "SQLITE_READONLY": (
        "is read-only",
        "make the file and its directory writable by this user; read commands (list, "
        "show, log) work without writing",
    ),
    "SQLITE_FULL": ("cannot grow: the disk is full", "free some space and run again"),
    "SQLITE_CANTOPEN": (
        "cannot be opened",
        "check that its directory exists and that this user may read and write it",
    ),
    "SQLITE_BUSY": (
        "is busy: another process holds a write transaction",
        "wait for the other idprov command to finish, then run again",
    ),
    "SQLITE_CORRUPT": ("is damaged", "restore it from a backup (see README: backup/restore)"),
    "SQLITE_NOTADB": ("is not an SQLite database", "check the path in the configuration"),
}


def from_sqlite_error(exc: Exception, files: list[str]) -> StoreError | None:
    """An sqlite3 error about a file (read-only, full disk, busy, damaged) as a
    StoreError naming the files in use; None for other sqlite3 errors (bugs)."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    base = next((key for key in _SQLITE_HINTS if name.startswith(key)), None)
    if base is None:
        return None
    what, hint = _SQLITE_HINTS[base]
    where = " or ".join(files) or "idprov's database"
    return StoreError(f"the database {where} {what} ({exc})", hint=hint)
