"""One exception tree for everything idprov refuses or fails to do.

Every error carries a stable exit code, a machine-readable ``code`` and a ``hint``
that tells the administrator how to fix it. Adapters around libraries (sqlite3,
yaml, keyring, httpx, ldap3) translate their exceptions into these with
``raise ... from exc``; the CLI catches :class:`IdprovError` in one place.
"""

from __future__ import annotations

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
    """`sync` refused a plan: deletions over the guard, or a source that could not be read."""
    LOCKED = 8
    """Another sync or import holds the lock."""
    PARTIAL = 9
    """An import in which some rows were rejected (the others were imported)."""
    NOTHING_IMPORTED = 10
    """An import that wrote nothing: a bad file, every row bad, or --on-error stop."""
    CHANGES_APPLIED = 11
    """`sync --detailed-exitcode`: changes were made, all of them successfully."""
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
    """A sync plan was refused to protect the targets (see the message for why)."""

    exit_code = ExitCode.GUARD_TRIPPED
    code = "guard"


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
