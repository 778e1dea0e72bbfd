"""Commands built when they are invoked, and their help as an administrator reads it.

Typer turns a function into a command by reading its signature and evaluating its
annotations: a few milliseconds a command, which every invocation paid for every
command of the root and of the invoked sub-app before one of them ran. Here the
root loads a sub-app's module only when it is named (:class:`IdprovGroup.lazy`),
and a sub-app (:class:`LazyGroup`) builds only the command that is invoked; help
and completion, which list them all, build them all.
"""

from __future__ import annotations

from typing import Any

from typer._click.exceptions import UsageError
from typer.core import TyperArgument, TyperGroup


class LazyGroup(TyperGroup):
    """A sub-app whose commands are built from their functions on first use."""

    pending: dict[str, Any]
    """Name -> typer's ``CommandInfo`` of the commands not built yet."""
    order: list[str]
    """Every command's name, in the order they were defined (as ``--help`` lists them)."""
    path = ""
    """The command path (``user``), once :func:`humanize` has seen this group."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(getattr(self, "order", self.commands))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as error:
            suggest(error, self.list_commands(ctx), args)
            raise

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        info = getattr(self, "pending", {}).pop(cmd_name, None)
        if info is not None:
            from typer.main import get_command_from_info

            command = get_command_from_info(
                info, pretty_exceptions_short=False, rich_markup_mode=None
            )
            self.commands[cmd_name] = command
            if self.path:
                humanize(command, f"{self.path} {cmd_name}")
        return super().get_command(ctx, cmd_name)


def suggest(error: UsageError, names: list[str], args: list[str]) -> None:
    """Add "Did you mean 'add'?" to an unknown command's error (typer suggests only
    among commands already built)."""
    from difflib import get_close_matches

    matches = get_close_matches(args[0], names) if args else []
    if matches and "Did you mean" not in error.message:
        choices = ", ".join(repr(m) for m in matches)
        error.message = f"{error.message.rstrip('.')}. Did you mean {choices}?"


def load_command(spec: str, name: str) -> Any:
    """The click command named ``name`` for ``module[:attribute]``: a Typer sub-app
    (attribute ``app`` by default), or a function for a single command."""
    import importlib

    import typer

    module, _, attr = spec.partition(":")
    target = getattr(importlib.import_module(module), attr or "app")
    if isinstance(target, typer.Typer):
        command = _group(target)
    else:
        from typer.main import get_command_from_info
        from typer.models import CommandInfo

        info = CommandInfo(name=name, callback=target)
        command = get_command_from_info(info, pretty_exceptions_short=False, rich_markup_mode=None)
    command.name = name
    return command


def _group(app: Any) -> Any:
    """The click group of sub-app ``app``: its commands left to build when asked for
    when it is a :class:`LazyGroup` (:func:`idprov.cli.common.new_app` makes them so)."""
    from typer.main import get_command, get_command_name

    if app.info.cls is not LazyGroup:
        return get_command(app)
    infos = app.registered_commands
    app.registered_commands = []
    try:
        group = get_command(app)  # the group and its own options, no command yet
    finally:
        app.registered_commands = infos
    assert isinstance(group, LazyGroup)
    group.pending = {i.name or get_command_name(i.callback.__name__): i for i in infos}
    group.order = [*group.pending, *group.commands]
    return group


def humanize(command: Any, path: str) -> None:
    """Help as an administrator reads it, for ``command`` and its sub-commands:
    ``USER`` not ``{username}``, ``--limit N`` not ``<int range>``, ``--dry-run``
    without its ``--no-dry-run`` twin, and examples (:mod:`idprov.cli.examples`)."""
    from idprov.cli.examples import EXAMPLES

    if getattr(command, "_humanized", False):
        return
    command._humanized = True
    if isinstance(command, LazyGroup):
        command.path = path
    if not command.context_settings.get("help_option_names"):
        command.context_settings["help_option_names"] = ["-h", "--help"]
    for param in command.params:
        _humanize_param(param)
    if path in EXAMPLES and not command.epilog:
        command.epilog = "\b\nExamples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[path])
    for name, sub in getattr(command, "commands", {}).items():
        humanize(sub, f"{path} {name}")


def _humanize_param(param: Any) -> None:
    if type(param) is TyperArgument:
        param.__class__ = _HumanArgument
    elif getattr(param, "is_flag", False):
        if param.secondary_opts and param.default is False:
            param.secondary_opts = []  # `--dry-run`, not `--dry-run / --no-dry-run`
            param.show_default = False
    elif param.metavar is None and not hasattr(param.type, "choices"):
        long = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
        param.metavar = "N" if param.type.name in ("integer", "int range") else long


class _HumanArgument(TyperArgument):
    """An argument shown as ``USER`` (or its metavar), never ``{username}``."""

    def make_metavar(self, ctx: Any, *, usage: bool = False) -> str:
        name = self.metavar or (self.name or "").upper()
        name += "..." if self.nargs != 1 else ""
        return f"[{name}]" if usage and not self.required else name
