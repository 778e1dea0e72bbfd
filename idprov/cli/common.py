"""What every command shares: option aliases, the service, output and errors.

Commands call :func:`service` for the core, then :func:`emit` with a result and a
rich renderer; ``--json`` prints the same result as one JSON document instead.
Errors are rendered in one place, :class:`IdprovGroup`.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

# typer >= 0.26 bundles its own click, whose exception base class it does not re-export
from typer._click.exceptions import ClickException
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from idprov.cli.commands import LazyGroup, humanize, load_command, suggest
from idprov.errors import (
    ConfigError,
    ExitCode,
    IdprovError,
    Interrupted,
    StoreError,
    UsageError,
    from_os_error,
    from_sqlite_error,
)

if TYPE_CHECKING:
    from idprov.pg import DatabaseGone
    from idprov.provisioning.unit_of_work import CutOff


@dataclass
class Session:
    """Per-invocation state kept on the Click context."""

    config_path: str | None = None
    json: bool = False
    no_wait: bool = False
    """``--no-wait``: leave non-blocking IdPs' rows to the outbox worker."""
    compact: bool = False
    """``--compact``: JSON on one line (JSON Lines, for cron logs)."""
    _service: Any = None
    display: Any = None
    """The command's live display (:mod:`idprov.cli.live`), once a service asks for one."""
    interrupted: bool = False
    """Ctrl-C was pressed: the service is not closed (that would wait for the targets)."""


_SESSION = Session()


def _session() -> Session:
    return _SESSION


def new_session(config_path: str | None, no_wait: bool = False) -> Session:
    """Start a fresh invocation's state (the root callback calls this first)."""
    global _SESSION
    close_session()
    _SESSION = Session(config_path=config_path, no_wait=no_wait)
    return _SESSION


def close_session() -> None:
    if _SESSION._service is not None and not _SESSION.interrupted:
        _SESSION._service.close()
    _SESSION._service = None


def interrupted_exit() -> None:
    """After a Ctrl-C, leave at once: pushes still in flight are abandoned as a crash
    abandons them (the outbox and the ledger's marks make that safe, and the message
    says to run the command again), instead of waiting for the targets to answer.
    Only the real entry point calls this, never code running in-process."""
    import os
    import threading

    if _SESSION.interrupted and threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(ExitCode.INTERRUPTED))


def _set_json(value: bool) -> bool:
    if value:
        _session().json = True
    return value


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document instead of the rich view.",
        callback=_set_json,
        is_eager=True,
    ),
]


def _set_compact(value: bool) -> bool:
    if value:
        _session().compact = True
    return value


CompactOpt = Annotated[
    bool,
    typer.Option(
        "--compact",
        help="With --json: the document on one line (JSON Lines: append each run to a .jsonl).",
        callback=_set_compact,
        is_eager=True,
    ),
]
DomainOpt = Annotated[
    str | None,
    typer.Option("--domain", "-d", help="Userstore domain (default PRIMARY, or DOMAIN/ in names)."),
]
AppOpt = Annotated[
    str,
    typer.Option("--app", help="Act as this application (decides where changes are provisioned)."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def service(
    app: str = "resident",
    live: bool = True,
    read_only: bool = False,
    previewing: bool = False,
    warn: bool = True,
) -> Any:
    """The core service for this invocation (config loaded on first use); with
    ``live``, outbound progress is shown as it happens on a terminal; ``read_only``
    (commands that only read) opens the databases read-only; ``previewing`` (a dry
    run, a listing: nothing of the users or at the targets changes) may look at a
    state that `idprov state copy` took away, with a warning, as reading does.
    ``warn``: a line on stderr for each problem of a disabled IdP's options (`config
    validate` shows them whole)."""
    session = _session()
    if session._service is None:
        from idprov.config import load_config
        from idprov.provisioning.service import IdentityService

        session._service = IdentityService(
            load_config(session.config_path),
            application=app,
            wait="blocking" if session.no_wait else "all",
            read_only=read_only,
            previewing=previewing,
        )
        if warn:  # before the live display: a message takes it off the screen
            for line in dict.fromkeys(p.line for p in session._service.disabled_idp_problems):
                render_error(ConfigError(line), "warning")
        if live and not session.json:
            from idprov.cli.live import live_display

            session.display = live_display()
            session._service.progress = session.display.outbound if session.display else None
    return session._service


def display() -> Any:
    """The live display :func:`service` made for this command (None: not a terminal,
    ``--json``, ``--quiet``)."""
    return _session().display


def stop_display() -> None:
    """Take the live display off the screen before anything else is printed."""
    if _session().display is not None:
        _session().display.stop()


def parse_when(value: str | None, option: str) -> str | None:
    """A time given on the command line as the audit log stores it (ISO 8601 UTC):
    an ISO date or time (UTC unless it says otherwise), an age (30m, 12h, 7d, 2w),
    ``today`` or ``yesterday``."""
    from datetime import UTC

    if value is None:
        return None
    try:
        when = _when(value.strip())
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        reason = "is not a time" if isinstance(exc, ValueError) else "is out of range"
        raise UsageError(
            f"{option} {value!r} {reason}",
            hint="give an ISO date or time in UTC (2026-11-28, 2026-11-28T09:30), an age "
            "(30m, 12h, 7d, 2w) back to the year 1, today or yesterday",
        ) from None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _when(text: str) -> Any:
    """The datetime ``text`` names (see :func:`parse_when`); ValueError if none,
    OverflowError if before the year 1."""
    import re
    from datetime import datetime, timedelta

    from idprov.db import clock

    now = clock()  # the clock the audit log's stamps were written by
    age = re.fullmatch(r"(\d+)\s*([smhdw])", text.lower())
    if age:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        return now - timedelta(**{unit[age.group(2)]: int(age.group(1))})
    if text.lower() in ("today", "yesterday"):
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(days=1 if text.lower() == "yesterday" else 0)
    return datetime.fromisoformat(text)


def complete_idp(incomplete: str) -> list[str]:
    """Shell completion of ``--idp``: the identity providers the configuration declares."""
    try:
        from idprov.config import load_config

        names = [i.name for i in load_config(_session().config_path).identity_providers]
    except IdprovError:
        return []
    return [name for name in names if name.startswith(incomplete)]


def known_idps(svc: Any, names: list[str] | None) -> list[str] | None:
    """``--idp`` values checked against the configuration (NotFoundError names the
    declared ones), so a typo is an error, not an empty result. A removed IdP whose
    rows are still in the outbox (orphaned) is known too."""
    for name in names or []:
        if not svc.outbound.configured(name) and not svc.outbox_rows([name]):
            svc.idp(name)
    return names


def emit(result: Any, render: Callable[[Any], None]) -> None:
    """Print ``result``: as JSON with ``--json`` (a list as ``{"items": [...]}``, the
    shape of every list, paged or not; a stream as it is read), else through ``render``."""
    stop_display()
    if _session().json:
        from idprov.cli import render_json

        document = {"items": result} if isinstance(result, list) else result  # one shape
        render_json.write(document, sys.stdout, _session().compact)
    else:
        render(result)
    failed = getattr(result, "outbound_failed", None)
    if failed is None and hasattr(result, "ok") and hasattr(result, "idps"):
        failed = not result.ok
    if failed:
        raise typer.Exit(int(ExitCode.OUTBOUND_FAILED))
    held = getattr(result, "outbound_held", None)
    if held is None and hasattr(result, "held") and hasattr(result, "idps"):
        held = bool(result.held)
    if held:  # the deletion guard kept the change's push in the outbox
        raise typer.Exit(int(ExitCode.GUARD_TRIPPED))


def emit_with_code(result: Any, render: Callable[[Any], None], code: int) -> None:
    """Print ``result`` as :func:`emit` does, then exit with ``code``."""
    emit(result, render)
    if code:
        raise typer.Exit(code)


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str | list[str]]:
    """``NAME=VALUE`` options to a dict; a name given twice becomes a list."""
    out: dict[str, str | list[str]] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(
                f"{option} {pair!r} is not NAME=VALUE", hint=f"e.g. {option} email=a@b.c"
            )
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


RESUMABLE = frozenset({"import", "sync", "outbox"})
"""Commands that finish the job when run again (an import resumes after the last row
written); any other says what its change left
(:class:`~idprov.provisioning.unit_of_work.CutOff`)."""

OWN_TRANSACTIONS = frozenset({"token", "idp", "state", "secret", "config", "init", "jit"})
"""Commands that change things outside the session's units of work (their own
transactions, files, the keyring, a JIT service): when one is cut off, idprov cannot
say whether its change was made before."""

KEPT = "interrupted: every change committed so far is kept, unfinished pushes stay in the outbox"


def interrupted(command: str | None = None, cut: CutOff | None = None) -> Interrupted:
    """What a Ctrl-C left, and the exact command that finishes the job (``command``:
    the top-level command that was interrupted; ``cut``: what its changes left, None
    when it opened no unit of work)."""
    again = _again()
    if command is not None and command not in RESUMABLE:
        return _cut_off(cut, again, command in OWN_TRANSACTIONS)
    retry = _retry_instead()
    if retry is not None and cut is not None and cut.committed:
        return Interrupted(
            KEPT,
            hint="the held rows it released wait in the outbox as pending (run again, it"
            f" finds none held): push them with {retry}",
        )
    return Interrupted(KEPT, hint=f"run the same command again to finish{_how(command)}: {again}")


def _retry_instead() -> str | None:
    """For `idprov outbox release`, the `idprov outbox retry` of the same IdPs and
    application: what pushes the rows it released, once it released them."""
    import shlex

    args = sys.argv[1:]
    at = next((i for i in range(len(args) - 1) if args[i : i + 2] == ["outbox", "release"]), None)
    if at is None:
        return None
    kept, rest = [*args[:at], "outbox", "retry"], iter(args[at + 2 :])
    for arg in rest:
        if arg in ("--yes", "-y") or arg.startswith("--allow-deletes="):
            continue
        if arg == "--allow-deletes":
            next(rest, None)
            continue
        kept.append(arg)
    return shlex.join(["idprov", *kept])


def _again() -> str:
    """The command line that was run, to run again."""
    import shlex

    return shlex.join(["idprov", *sys.argv[1:]])


def _how(command: str | None) -> str:
    """How a :data:`RESUMABLE` command run again finishes (`` (...)``, or '')."""
    how = {
        "import": "an import resumes after the last row written",
        "sync": "a sync plans again from what is now there",
        "outbox": "it pushes what is left in the outbox",
    }.get(command or "")
    return f" ({how})" if how else ""


def database_gone(error: DatabaseGone, command: str | None, cut: CutOff | None) -> IdprovError:
    """The error of a database that went away (``error``) once ``command`` had
    committed a change (``cut``, as for a Ctrl-C: :func:`interrupted`): what was
    committed is kept and named, with what is left and what finishes it once the
    database answers. Before any commit, ``error`` is true as it is. Lost as it
    committed, the change may have been made: :func:`_maybe_made`."""
    if error.unknown:
        return _maybe_made(error, command)
    if cut is None or not cut.committed:
        return error
    lost = error.reason
    if error.rolled_back:
        lost += "; the server rolled back the transaction that was open"
    check = f" ({error.hint})" if error.hint and not error.rolled_back else ""
    back = f"once the database answers again{check}"  # a lost one's hint: "re-run"
    return _made_before(lost, back, command, cut)


_SQLITE_FIRST = {
    "SQLITE_FULL": "once some space is free",
    "SQLITE_READONLY": "once the database file and its directory are writable by this user",
    "SQLITE_BUSY": "once the other idprov command has finished",
}
"""What must happen before an SQLite state that failed is written again (its error's
hint says "run again": wrong once the command committed)."""


def sqlite_failed(
    error: StoreError, exc: Exception, command: str | None, cut: CutOff
) -> StoreError:
    """An SQLite state that failed (``error``, from ``exc``: disk full, read-only,
    busy) once ``command`` had committed a change (``cut``): as a PostgreSQL state
    that went away then (:func:`database_gone`), the change is kept and named, with
    what finishes it."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    first = next((v for k, v in _SQLITE_FIRST.items() if name.startswith(k)), None)
    return _made_before(error.message, first or f"once that is fixed ({error.hint})", command, cut)


def _made_before(lost: str, back: str, command: str | None, cut: CutOff) -> StoreError:
    """The error of a state that failed (``lost``: how) after ``command`` committed
    its change (``cut``): what is kept, what is left, and what finishes it (``back``:
    when: ``once ...``)."""
    again = _again()
    if command is None or command in RESUMABLE:
        return StoreError(
            f"{lost}; what `{again}` committed before is kept (`idprov log` shows it), "
            "unfinished pushes stay in the outbox",
            hint=f"run the same command again {back} to finish{_how(command)}",
        )
    if cut.unpushed:
        return StoreError(
            f"{lost}, after the change was committed: `{again}` is done here, but its push "
            "did not finish: what it has left to push waits in the outbox",
            hint=f"do not run it again (it is made); push the rest with `idprov outbox retry` "
            f"{back}",
        )
    return StoreError(
        f"{lost}, after the change was committed: `{again}` is done here",
        hint=f"do not run it again (it is made; `idprov log` shows it); `idprov outbox retry` "
        f"pushes anything left in the outbox {back}",
    )


def _maybe_made(error: DatabaseGone, command: str | None) -> IdprovError:
    """The error of a connection lost as ``command``'s change was committing: the
    server may have made it, or not; the databases that committed their part before
    (a PostgreSQL userstore) have it."""
    again = _again()
    made = "".join(f"; {where} committed its part of it" for where in error.committed_before)
    message = f"{error.reason} as `{again}` was committing its change: it may have been made{made}"
    if command is None or command in RESUMABLE:
        return StoreError(
            message,
            hint=f"run the same command again once the database answers, to finish{_how(command)}",
        )
    check = _check_made()
    if error.committed_before:
        return StoreError(
            f"{message}: if `idprov log` does not show it, its audit entry and its push are "
            "missing, and running it again finds it made already",
            hint=f"check with {check} before running it again; if the log does not show it, "
            "`idprov sync` pushes what the directory holds to the identity providers, once "
            "the database answers",
        )
    return StoreError(
        message,
        hint=f"it may have been made: check with {check} before running it again; if it was, "
        "`idprov outbox retry` pushes what it left, once the database answers",
    )


def _check_made() -> str:
    """The commands that show whether this command's change was made."""
    import shlex

    words = sys.argv[1:]
    if len(words) > 2 and words[0] in ("user", "role") and not words[2].startswith("-"):
        return f"`idprov {words[0]} show {shlex.quote(words[2])}` / `idprov log`"
    return "`idprov log`"


def _cut_off(cut: CutOff | None, again: str, own: bool) -> Interrupted:
    """The message of a change cut off: its hint follows what was committed (``own``:
    the command changes things outside units of work, :data:`OWN_TRANSACTIONS`)."""
    if cut is None and own:
        return Interrupted(
            KEPT,
            hint="each change is one transaction, none is left half-made: if `idprov log` "
            f"does not show this one, run the command again: {again}",
        )
    if cut is None or cut.nothing:
        return Interrupted(
            "interrupted: nothing was changed", hint=f"run the command again: {again}"
        )
    if cut.recorded:
        return Interrupted(
            f"interrupted: the {', '.join(cut.recorded)} was recorded here before it went "
            "to the directory, and is not finished",
            hint=f"run the same command again, it finishes only what it recorded: {again}",
        )
    if cut.unanswered:
        where = ", ".join(cut.unanswered)
        return Interrupted(
            f"interrupted: nothing was committed here, but the {where} directory was sent "
            "a write and never answered, so it may have made it",
            hint=f"run the command again ({again}); if it finds the change made already, "
            "push it to the identity providers with: idprov sync",
        )
    if cut.unpushed:
        return Interrupted(
            KEPT,
            hint="the change is done here (do not run it again); push what it left to "
            "the identity providers with: idprov outbox retry",
        )
    return Interrupted(
        "interrupted: the change is done here and pushed",
        hint="do not run it again; `idprov log` shows it",
    )


def render_error(error: IdprovError, label: str = "error") -> None:
    """An error on stderr (``label``: ``warning`` for one that does not end the
    command): one JSON line with ``--json``, else the message and its hint."""
    stop_display()
    if _session().json:
        sys.stderr.write(jsonlib.dumps({label: error.to_dict()}, ensure_ascii=False) + "\n")
        return
    from rich.console import Console

    from idprov.cli.tables import esc

    console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    color = "red" if label == "error" else "yellow"
    console.print(f"[bold {color}]{label}:[/] {esc(error.message, lines=True)}")
    if error.hint:
        console.print(f"[dim]hint:[/] {esc(error.hint, lines=True)}")


ON_ERROR = "idprov.on_error"
"""Key of the click context's ``meta``: callables that a command's options registered,
called with the :class:`IdprovError` that ends the command (see :mod:`idprov.cli.status`)."""


class IdprovGroup(TyperGroup):
    """The root group: turns every :class:`IdprovError` into a message and exit code,
    and imports a command's module only when that command is invoked (``lazy``: name
    -> ``module[:attribute]``, a sub-app, by default ``app``, or a command function;
    see :mod:`idprov.cli.commands`), so a command pays only for itself."""

    lazy: dict[str, str] = {}

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(self.lazy[cmd_name], cmd_name)
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            humanize(found, cmd_name)
        return found

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        """Click prints its own usage errors as text; under ``--json`` they are the
        same ``{"error": ...}`` document as every other error."""
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv or kwargs.get("standalone_mode") is False:
            return super().main(argv, *rest, **kwargs)
        try:
            code = super().main(argv, *rest, **{**kwargs, "standalone_mode": False})
        except ClickException as exc:
            _session().json = True
            ctx: Any = getattr(exc, "ctx", None)
            hint = ctx.get_usage() if ctx is not None else None
            render_error(UsageError(exc.format_message(), hint=hint))
            sys.exit(int(ExitCode.USAGE))
        except typer.Abort:
            sys.exit(int(ExitCode.ERROR))
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except ClickUsageError as error:
            suggest(error, self.list_commands(ctx), args)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            _warn_state_copied()
            return result
        except (typer.Exit, SystemExit, ClickException):
            raise  # Click's own usage errors: it prints them and exits 2
        except BrokenPipeError:
            _quiet_after_broken_pipe()
        except BaseException as exc:
            error = as_idprov_error(exc, ctx.invoked_subcommand)
            if error is None:
                raise
            render_error(error)
            for hook in ctx.meta.get(ON_ERROR, ()):  # a --metrics file's, say
                hook(error)
            raise typer.Exit(int(error.exit_code)) from None
        finally:
            stop_display()
            close_session()


def _warn_state_copied() -> None:
    """A command that only read an SQLite state `idprov state copy` took to PostgreSQL
    (others are refused) says so: what it showed is the old file."""
    state = getattr(_session()._service, "_state", None)
    copied = getattr(state, "copied", None)
    if copied is not None:
        render_error(copied.warning(), "warning")


def as_idprov_error(exc: BaseException, command: str | None = None) -> IdprovError | None:
    """What to tell the user about ``exc`` (raised by top-level ``command``): ours as
    it is, a Ctrl-C, a file or database the system refused; any other exception is a
    bug in idprov."""
    import sqlite3

    from idprov.pg import DatabaseGone
    from idprov.provisioning.tasks import debugging

    if isinstance(exc, DatabaseGone):
        service = _session()._service
        return database_gone(exc, command, service.cut_off() if service is not None else None)
    made = _sqlite_after_commit(exc, command)
    if made is not None:
        return made
    if isinstance(exc, IdprovError):
        return exc
    if isinstance(exc, typer.Abort):
        return IdprovError("aborted", hint="nothing was changed")
    if isinstance(exc, KeyboardInterrupt):
        _session().interrupted = True
        service = _session()._service
        return interrupted(command, service.cut_off() if service is not None else None)
    if isinstance(exc, OSError):
        return from_os_error(exc)
    if isinstance(exc, sqlite3.Error):
        from idprov.provisioning.state_moved import fenced_error

        error = fenced_error(exc) or from_sqlite_error(exc, open_databases())
        if error is not None:
            return _as_reader_saw(error, exc)
    if not isinstance(exc, Exception) or debugging():
        return None
    from idprov.secrecy import blank

    return IdprovError(
        blank(f"internal error: {type(exc).__name__}: {exc}"),
        hint="this is a bug in idprov; run again with IDPROV_DEBUG=1 for a traceback and report it",
    )


def _sqlite_after_commit(exc: BaseException, command: str | None) -> StoreError | None:
    """An SQLite state's failure (raised by sqlite3, or as idprov's error from it) once
    ``command`` committed its change: :func:`sqlite_failed`; else None."""
    import sqlite3

    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    if not isinstance(cause, sqlite3.Error) or not isinstance(exc, (sqlite3.Error, StoreError)):
        return None
    service = _session()._service
    cut = service.cut_off() if service is not None else None
    if cut is None or not cut.committed:
        return None
    from idprov.provisioning.state_moved import fenced_error

    if fenced_error(cause) is not None:
        return None  # the file was copied to PostgreSQL: its own error says what to run
    error = exc if isinstance(exc, StoreError) else from_sqlite_error(cause, open_databases())
    return None if error is None else sqlite_failed(error, cause, command, cut)


def _as_reader_saw(error: IdprovError, exc: Exception) -> IdprovError:
    """A write SQLite refused in a command that only reads (its databases opened
    read-only): the usual hint, that read commands work without writing, would
    contradict the command that failed."""
    pool = getattr(_session()._service, "_pool", None)
    refused = str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_READONLY")
    if refused and getattr(pool, "read_only", False):
        error.hint = (
            "this command only reads, yet had to write to it once: run it (or `idprov "
            "status`) once as a user who can write the file and its directory; then it "
            "works read-only"
        )
    return error


def open_databases() -> list[str]:
    """The SQLite files this command's service has open (to name in an error)."""
    service = _session()._service
    pool = getattr(service, "_pool", None)
    return [str(path) for path in getattr(pool, "_open", {})]


def _quiet_after_broken_pipe() -> None:
    """The reader went away (`idprov user list | head`): stop quietly, as the
    Python documentation recommends, without a traceback at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(int(ExitCode.ERROR))


def new_app(help_text: str) -> typer.Typer:
    """A sub-app with idprov's settings (no locals in tracebacks: they may hold secrets)."""
    app = typer.Typer(
        cls=LazyGroup,
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def group() -> None:
        pass  # keeps a one-command sub-app a group (`idprov secret set`)

    group.__doc__ = help_text
    return app
