"""Find, read and validate the configuration file; or give the embedded default.

Discovery order: ``--config``, then ``$IDPROV_CONFIG``, then ``./idprov.yaml``,
then ``idprov.yaml`` in the user config directory; none of them: the embedded
default (one PRIMARY SQLite userstore in the data directory, the ``resident``
application, no identity providers). YAML is parsed keeping each node's line and
column, so that every error can point into the file; duplicate keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from idprov.config.models import Config
from idprov.config.paths import CONFIG_FILENAME, user_config_dir, user_data_dir
from idprov.config.schema import Locator, build, key_path
from idprov.config.schema import Path as KeyPath
from idprov.errors import ConfigError


def discover(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The configuration file to use, or None for the embedded default."""
    if explicit:
        return _named(Path(explicit), "--config names", "check the --config path")
    env = os.environ.get("IDPROV_CONFIG")
    if env:
        return _named(Path(env), "IDPROV_CONFIG points to", "fix or unset IDPROV_CONFIG")
    for candidate in (Path.cwd() / CONFIG_FILENAME, user_config_dir() / CONFIG_FILENAME):
        if candidate.is_file():
            return candidate
    return None


def _named(path: Path, what: str, fix: str) -> Path:
    """``path``, a file given by name, or an error saying what it is instead."""
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(
            f"{what} {path}, which is a directory",
            hint=f"{fix}: name the YAML file itself (e.g. {path / CONFIG_FILENAME})",
        )
    raise ConfigError(
        f"{what} {path}, which does not exist",
        hint=f"{fix}, or run `idprov init` to write one",
    )


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Discover and load the configuration (see module docstring)."""
    path = discover(explicit)
    if path is None:
        config = Config()
        config.data_dir = str(user_data_dir())
        return config
    return load_file(path)


def load_file(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start})",
            location=str(path),
            hint="save the file as UTF-8",
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", location=str(path)) from exc
    return load_text(text, str(path), base_dir=path.parent.resolve())


def load_text(text: str, source: str, base_dir: Path | None = None) -> Config:
    """Parse and validate YAML text; relative paths resolve against ``base_dir``."""
    data, locator = parse_yaml(text, source)
    if data is None:
        data = {}
    config = build(Config, data, locator)
    config.source = source
    config.locator = locator
    config.data_dir = _resolve(config.data_dir, base_dir) or str(user_data_dir())
    _resolve_store_paths(config, base_dir)
    return config


def check_store_files(config: Config) -> None:
    """Every read-only SQLite userstore's file is there, and every LDAP userstore's
    ``ca_file`` holds a certificate (`config validate`); opening such a store fails
    with the same words (:func:`missing_store_file`, :func:`ca_file_problem`)."""
    for i, store in enumerate(config.userstores):
        path = getattr(store, "path", None)
        problem = missing_store_file(store.domain, Path(path)) if store.read_only and path else None
        key, hint = "path", MISSING_STORE_HINT
        ca_file = getattr(store, "ca_file", None) if store.type == "ldap" else None
        if problem is None and ca_file:
            from idprov.config.ldap import CA_FILE_HINT, ca_file_problem

            found = ca_file_problem(ca_file)
            problem = f"ca_file {ca_file} {found}" if found else None
            key, hint = "ca_file", CA_FILE_HINT
        if problem is None:
            continue
        where = ("userstores", i, key)
        raise ConfigError(
            problem,
            location=config.locator.where(where) if config.locator else config.source,
            key=key_path(where),
            hint=hint,
        )


MISSING_STORE_HINT = (
    "fix its path, or put the store's SQLite file there; a read-only store is never "
    "created (an empty one would look as if every user had been deleted)"
)


def missing_store_file(domain: str, path: Path) -> str | None:
    """What is wrong with the file of read-only SQLite userstore ``domain``, if
    anything: idprov never creates one (see :data:`MISSING_STORE_HINT`)."""
    if path.is_file():
        return None
    what = "is a directory" if path.is_dir() else "does not exist"
    return f"the read-only userstore {domain} names {path}, which {what}"


def _resolve(value: str | None, base_dir: Path | None) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def _resolve_store_paths(config: Config, base_dir: Path | None) -> None:
    import dataclasses

    resolved = []
    for store in config.userstores:
        for key in ("path", "ca_file"):  # files named in a userstore: relative to the config
            value = getattr(store, key, None)
            if value is not None:
                changes: dict[str, Any] = {key: _resolve(value, base_dir)}
                store = dataclasses.replace(store, **changes)
        resolved.append(store)
    config.userstores = resolved
    ca_file = getattr(config.state, "ca_file", None)
    if config.state is not None and ca_file is not None:
        changes = {"ca_file": _resolve(ca_file, base_dir)}
        config.state = dataclasses.replace(config.state, **changes)


MAX_DEPTH = 64
"""How deeply a configuration may nest lists and mappings (a real one: under ten)."""
MAX_VALUES = 100_000
"""How many values (scalars, lists, mappings) a configuration may hold once its aliases
are expanded. A real one holds a few thousand at most; aliases of aliases multiply
("billion laughs": ten levels of ten make ten billion from a few hundred bytes)."""
MAX_TEXT = 10_000_000
"""How many characters of text a configuration may hold once its aliases are expanded
(a long string repeated by aliases: 120 KB made `config show` print 500 MB)."""


def parse_yaml(text: str, source: str) -> tuple[Any, Locator]:
    """YAML text to plain data plus a :class:`Locator` of every key and item."""
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        tree = _Tree(loader, source)
        data = tree.value(node, ()) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", location=source) from None
    finally:
        loader.dispose()
    return data, Locator(source, tree.marks)


def _yaml_error(exc: Any, text: str, source: str) -> ConfigError:
    """A YAML syntax error, located, saying what is wrong in words a user knows."""
    mark = exc.problem_mark or exc.context_mark
    location = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = exc.problem or exc.context
    hint = "check indentation, colons and quoting near that line"
    lines = text.splitlines()
    if mark and mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
        problem = "a tab character: YAML indents with spaces only"
        hint = "replace the tabs on that line with spaces"
    elif problem and problem.startswith("could not determine a constructor for the tag"):
        problem = "a value that starts with ! is a YAML tag, which is not supported"
        hint = "put the value in quotes if it is text; a secret is a reference (env:NAME...)"
    elif problem == "but found another document":
        problem = "a second YAML document starts here (after `---`)"
        hint = "the configuration is one document: remove the `---` line, or keep one part"
    return ConfigError(f"invalid YAML: {problem}", location=location, hint=hint)


class _Tree:
    """YAML nodes to plain data, noting the line and column of every key path, and
    refusing what would not end or not fit: an alias inside the node it names, more
    than :data:`MAX_DEPTH` levels, more than :data:`MAX_VALUES` values."""

    def __init__(self, loader: Any, source: str) -> None:
        self.loader = loader
        self.source = source
        self.marks: dict[KeyPath, tuple[int, int]] = {}
        self.values = 0
        self.text = 0
        self.inside: set[int] = set()
        """The lists and mappings being built (by id): an alias to one of them recurses."""

    def value(self, node: Any, path: KeyPath, key: Any = None) -> Any:
        """The data of ``node`` at ``path`` (``key``: the node of its key in a mapping)."""
        import yaml

        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self._count(node, path, key or node)
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self.loader.construct_object(node, deep=True)
        self.inside.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self.inside.discard(id(node))

    def _count(self, node: Any, path: KeyPath, at: Any) -> None:
        self.values += 1
        if isinstance(node.value, str):
            self.text += len(node.value)
            if self.text > MAX_TEXT:
                raise self._error(
                    at,
                    path,
                    f"the file holds more than {MAX_TEXT:,} characters of text once its "
                    "aliases are expanded",
                    "write the values out, or repeat long ones less",
                )
        if id(node) in self.inside:
            anchor = node.start_mark
            raise self._error(
                at,
                path,
                "this alias repeats the list or mapping that contains it (anchored at "
                f"line {anchor.line + 1}, column {anchor.column + 1}), which never ends",
                "an alias (*name) may only repeat a value defined (&name) outside it",
            )
        if len(path) > MAX_DEPTH:
            raise self._error(
                at, path, f"nested more than {MAX_DEPTH} levels deep", "flatten the file"
            )
        if self.values > MAX_VALUES:
            raise self._error(
                at,
                path,
                f"the file holds more than {MAX_VALUES:,} values once its aliases are "
                "expanded (aliases of aliases multiply)",
                "write the values out, or repeat them with fewer levels of aliases",
            )

    def _mapping(self, node: Any, path: KeyPath) -> dict[str, Any]:
        import yaml

        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._error(key_node, path, "a key must be text, not a list or mapping")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self._error(
                    key_node,
                    path,
                    "a merge key (<<) is not supported",
                    "write the keys out in this mapping",
                )
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in out:
                raise self._error(
                    key_node,
                    child,
                    f"duplicate key {key!r}",
                    "each key may appear once in a mapping",
                )
            out[key] = self.value(value_node, child, key_node)
            self.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out

    def _error(
        self, node: Any, path: KeyPath, message: str, hint: str | None = None
    ) -> ConfigError:
        mark = node.start_mark
        return ConfigError(
            message,
            location=f"{self.source}:{mark.line + 1}:{mark.column + 1}",
            key=key_path(path),
            hint=hint,
        )
