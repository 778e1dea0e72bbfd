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
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"configuration file {path} does not exist",
                hint="check the --config path, or run `idprov init` to write one",
            )
        return path
    env = os.environ.get("IDPROV_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(
                f"IDPROV_CONFIG points to {path}, which does not exist",
                hint="fix or unset IDPROV_CONFIG",
            )
        return path
    for candidate in (Path.cwd() / CONFIG_FILENAME, user_config_dir() / CONFIG_FILENAME):
        if candidate.is_file():
            return candidate
    return None


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


def parse_yaml(text: str, source: str) -> tuple[Any, Locator]:
    """YAML text to plain data plus a :class:`Locator` of every key and item."""
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        marks: dict[KeyPath, tuple[int, int]] = {}
        data = _construct(loader, node, (), marks, source) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(
            f"invalid YAML: {exc.problem or exc.context}",
            location=location,
            hint="check indentation, colons and quoting near that line",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", location=source) from None
    finally:
        loader.dispose()
    return data, Locator(source, marks)


def _construct(loader: Any, node: Any, path: KeyPath, marks: dict, source: str) -> Any:
    import yaml

    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in out:
                raise ConfigError(
                    f"duplicate key {key!r}",
                    location=f"{source}:{key_node.start_mark.line + 1}:"
                    f"{key_node.start_mark.column + 1}",
                    key=key_path(child),
                    hint="each key may appear once in a mapping",
                )
            out[key] = _construct(loader, value_node, child, marks, source)
            marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*path, i), marks, source) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
