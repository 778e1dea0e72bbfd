"""Strict, located validation of plain data into dataclasses.

Why not pydantic: ``import pydantic`` alone costs as much as typer and sqlite-utils
together, and every idprov command pays for what it imports (see bench/startup.py).
This module does the part idprov needs: it turns the YAML tree into frozen
dataclasses, rejects unknown keys and wrong types, and names the file, line,
column and key path of every error, with what was expected.

A dataclass is validated by :func:`build`. Fields may be ``str``, ``int``,
``float``, ``bool``, ``Literal[...]``, ``X | None`` (and other unions of these),
``list[X]``, ``tuple[X, ...]``, ``Sequence[X]``, ``frozenset[X]``, ``set[X]`` (each
a YAML list), ``dict[str, X]`` or ``Mapping[str, X]``, ``Any``, another dataclass,
or a class with a ``__config_parse__(value)`` classmethod (:data:`SUPPORTED` says
so in words). :func:`check_types` finds a field of any other type when the class is
loaded, before any YAML reaches it. A base class with a ``variants()`` classmethod is
a tagged union, chosen by its ``type`` key. A dataclass may check itself in ``__post_init__`` by
raising :class:`Invalid` (naming one of its keys) or ``ValueError``.
"""

from __future__ import annotations

import collections.abc
import contextvars
import dataclasses
import re
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from idprov.errors import ConfigError
from idprov.spelling import closest

T = TypeVar("T")
Path = tuple[str | int, ...]

SUPPORTED = (
    "str, int, float, bool, Literal[...], X | None, list[X], tuple[X, ...], "
    "Sequence[X], frozenset[X], set[X], dict[str, X], Mapping[str, X], Any, a nested "
    "dataclass, or a class with a __config_parse__ classmethod (SecretRef)"
)
"""The field types :func:`build` validates, for error messages."""

_SEQUENCES: dict[Any, Any] = {
    list: list,
    tuple: tuple,
    collections.abc.Sequence: tuple,
    frozenset: frozenset,
    set: set,
    collections.abc.Set: frozenset,
}
"""A YAML list becomes, for a field of this origin, this type."""
_MAPPINGS = (dict, collections.abc.Mapping)


class Invalid(ValueError):
    """Raised from ``__post_init__``: ``key`` is the offending field, if one."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class Locator:
    """Maps a key path in the loaded document to ``file:line:column``."""

    def __init__(self, source: str, marks: Mapping[Path, tuple[int, int]] | None = None):
        self.source = source
        self.marks = dict(marks or {})

    def where(self, path: Path) -> str:
        probe = path
        while probe not in self.marks and probe:
            probe = probe[:-1]
        if probe in self.marks:
            line, column = self.marks[probe]
            return f"{self.source}:{line}:{column}"
        return self.source


def key_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def build(
    cls: type[T], data: Any, locator: Locator, path: Path = (), within: type | None = None
) -> T:
    """Validate ``data`` as ``cls``; raise :class:`ConfigError` naming where and why.
    ``within``: the dataclass whose mapping holds ``data`` (an IdP's, for its options),
    so that a key of it indented into ``data`` is told so."""
    building = _BUILDING.set((*_BUILDING.get(), within) if within else _BUILDING.get())
    try:
        return typing.cast(T, _convert(cls, data, locator, path))
    finally:
        _BUILDING.reset(building)


def _fail(locator: Locator, path: Path, message: str) -> ConfigError:
    return ConfigError(message, location=locator.where(path), key=key_path(path))


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in _SEQUENCES:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin in _MAPPINGS:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


QUOTED_MAX = 24
"""The longest value an error quotes. A longer one is described by its type and
length: a token or password pasted under the wrong key (``auth: Bearer eyJ...``)
would otherwise be printed; a short one (``auth: baerer``) helps to see the typo."""
CREDENTIAL_LIKE = re.compile(r"^\s*(bearer|basic|token|negotiate)\s|^eyJ|^-----BEGIN", re.I)
"""A value that looks like a credential whatever its length: an Authorization header's
value, a JWT, a PEM block."""


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if not quotable(value):
        kind = "a string" if isinstance(value, str) else f"a {type(value).__name__}"
        return f"{kind} of {len(str(value))} characters (not quoted, in case it is a secret)"
    return f"{type(value).__name__} {value!r}"


def quotable(value: Any) -> bool:
    """Whether an error may quote ``value``, a value of the configuration: short, and
    not shaped like a credential (see :data:`QUOTED_MAX`)."""
    text = str(value)
    return len(text) <= QUOTED_MAX and not CREDENTIAL_LIKE.search(text)


def _convert(tp: Any, data: Any, locator: Locator, path: Path) -> Any:
    if tp is Any:
        return data
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if data is None and type(None) in options:
            return None
        rest = [o for o in options if o is not type(None)]
        if len(rest) == 1:
            return _convert(rest[0], data, locator, path)
        for option in rest:
            try:
                return _convert(option, data, locator, path)
            except ConfigError:
                continue
        raise _fail(locator, path, f"expected {_type_name(tp)}, got {_describe(data)}")
    if origin is Literal:  # True == 1 in Python, but `version: true` is not version 1
        if not any(type(data) is type(a) and data == a for a in get_args(tp)):
            raise _fail(locator, path, f"expected {_type_name(tp)}, got {_describe(data)}")
        return data
    if origin in _SEQUENCES:
        if not isinstance(data, list):
            raise _fail(locator, path, f"expected {_type_name(tp)}, got {_describe(data)}")
        item = get_args(tp)[0]
        items = [_convert(item, v, locator, (*path, i)) for i, v in enumerate(data)]
        return items if origin is list else _SEQUENCES[origin](items)
    if origin in _MAPPINGS:
        if not isinstance(data, Mapping):
            raise _fail(locator, path, f"expected a mapping, got {_describe(data)}")
        _, value_type = get_args(tp)
        return {str(k): _convert(value_type, v, locator, (*path, str(k))) for k, v in data.items()}
    parse = getattr(tp, "__config_parse__", None)
    if parse is not None:
        try:
            return parse(data)
        except ValueError as exc:
            raise _fail(locator, path, str(exc)) from None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build_dataclass(tp, data, locator, path)
    return _scalar(tp, data, locator, path)


class UnsupportedType(TypeError):
    """A dataclass field whose type :func:`build` cannot validate (``field``: its key
    path, ``type``: the type as written)."""

    def __init__(self, field: str, tp: Any) -> None:
        self.spelled = _spelled(tp)
        super().__init__(f"field {field} has type {self.spelled}, which cannot be configured")
        self.field = field
        self.type = tp


def check_types(cls: type) -> None:
    """Raise :class:`UnsupportedType` for the first field of dataclass ``cls`` (or of
    a dataclass nested in it) that :func:`build` cannot validate."""
    for field, tp in _fields_of(cls, ""):
        _check_type(tp, field, set())


def _fields_of(cls: type, prefix: str) -> Iterator[tuple[str, Any]]:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            yield f"{prefix}{f.name}", hints[f.name]


def _check_type(tp: Any, field: str, seen: set[type]) -> None:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp in (str, int, float, bool, type(None)) or origin is Literal:
        return
    if hasattr(tp, "__config_parse__"):
        return
    if origin in (Union, types.UnionType):
        for option in args:
            _check_type(option, field, seen)
        return
    variadic = args[1:] == (...,) if origin is tuple else len(args) == 1
    if origin in _SEQUENCES and variadic:
        return _check_type(args[0], field, seen)
    if origin in _MAPPINGS and len(args) == 2 and args[0] is str:
        return _check_type(args[1], field, seen)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp not in seen:
            for name, inner in _fields_of(tp, f"{field}."):
                _check_type(inner, name, seen | {tp})
        return
    raise UnsupportedType(field, tp)


def _spelled(tp: Any) -> str:
    """A type as its author wrote it (``tuple[str, int]``, ``Path``)."""
    return tp.__name__ if isinstance(tp, type) and not get_args(tp) else str(tp)


def _scalar(tp: Any, data: Any, locator: Locator, path: Path) -> Any:
    if tp is bool:
        if isinstance(data, bool):
            return data
    elif tp is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
    elif tp is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
    elif tp is str:
        if isinstance(data, str):
            return data
        if isinstance(data, int | float) and not isinstance(data, bool):
            quoted = f" ('{data}')" if quotable(data) else ""
            raise _fail(
                locator,
                path,
                f"expected a string, got {_describe(data)}; put it in quotes if it is "
                f"meant as text{quoted}",
            )
    else:
        raise TypeError(f"unsupported field type {tp!r} at {key_path(path)}")
    raise _fail(locator, path, f"expected {_type_name(tp)}, got {_describe(data)}")


def _build_dataclass(cls: type, data: Any, locator: Locator, path: Path) -> Any:
    if not isinstance(data, Mapping):
        raise _fail(locator, path, f"expected a mapping, got {_describe(data)}")
    variants = getattr(cls, "variants", None)
    if variants is not None and "variants" in cls.__dict__:
        chosen = _choose_variant(cls, variants(), data, locator, path)
        if chosen is not cls:
            return _build_dataclass(chosen, data, locator, path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise _unknown_key(cls, str(unknown[0]), locator, path)
    kwargs: dict[str, Any] = {}
    building = _BUILDING.set((*_BUILDING.get(), cls))
    try:
        for name, f in fields.items():
            if name in data:
                kwargs[name] = _convert(hints[name], data[name], locator, (*path, name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _fail(
                    locator, path, f"missing required key {name!r} ({_type_name(hints[name])})"
                )
    finally:
        _BUILDING.reset(building)
    try:
        return cls(**kwargs)
    except Invalid as exc:
        where = (*path, *_parse_key(exc.key)) if exc.key else path
        raise _fail(locator, where, str(exc)) from None
    except ValueError as exc:
        raise _fail(locator, path, str(exc)) from None


_BUILDING: contextvars.ContextVar[tuple[type, ...]] = contextvars.ContextVar(
    "idprov_config_building", default=()
)
"""The dataclasses being built around the current one, outermost first: a key unknown
here may be one of the enclosing mapping's, indented a level too deep."""


def _unknown_key(cls: type, key: str, locator: Locator, path: Path) -> ConfigError:
    """The error for ``key``, unknown in ``cls`` at ``path``: where it belongs if it is
    a key of the mapping one level up or down, else the known keys and a guess."""
    said, where = f"unknown key {key!r}", (*path, key)
    enclosing = _BUILDING.get()[-1:]
    if enclosing and key in _field_names(enclosing[0]):
        owner = _enclosing_path(path)
        inside = key_path(path[len(owner) :])
        above = key_path(owner) if owner else "the top level"
        return _fail(
            locator, where, f"{said}: {key} belongs to {above}, not to its {inside}: indent it less"
        )
    for name, tp in _fields_of(cls, ""):
        inner = _dataclass_of(tp)
        if inner is not None and key in _field_names(inner):
            below = key_path((*path, name))
            return _fail(
                locator, where, f"{said}: {key} belongs to {below}: indent it more, under {name}:"
            )
    known = _field_names(cls)
    guess = closest(key, known)
    tail = f"; did you mean {guess!r}?" if guess else ""
    return _fail(locator, where, f"{said} (known keys here: {', '.join(known)}){tail}")


def _field_names(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls) if f.init)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass a field of type ``tp`` holds as a mapping (``X`` or ``X | None``)."""
    options = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    found = [o for o in options if dataclasses.is_dataclass(o) and isinstance(o, type)]
    return found[0] if len(found) == 1 else None


def _enclosing_path(path: Path) -> Path:
    """The path of the mapping that holds the one at ``path`` (a list's items skipped)."""
    owner = path
    while owner and isinstance(owner[-1], int):
        owner = owner[:-1]
    return owner[:-1]


def _choose_variant(
    cls: type, variants: Mapping[str, type], data: Mapping[str, Any], locator: Locator, path: Path
) -> type:
    tag = data.get("type")
    if tag is None:  # no `type:` given: the variant named by the base's default type
        default = next((f.default for f in dataclasses.fields(cls) if f.name == "type"), None)
        return variants.get(default, cls) if isinstance(default, str) else cls
    if tag not in variants:
        known = ", ".join(sorted(variants))
        said = f"unknown type {tag!r}" if quotable(tag) else f"unknown type ({_describe(tag)})"
        raise _fail(locator, (*path, "type"), f"{said} (known: {known})")
    return variants[tag]


def _parse_key(key: str) -> Path:
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return tuple(parts)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def find_values(obj: Any, cls: type[T], path: Path = ()) -> Iterator[tuple[Path, T]]:
    """Every value of type ``cls`` in a built object, with its key path (to locate
    with the :class:`Locator` of the document it was built from)."""
    if isinstance(obj, cls):
        yield path, obj
    elif isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            yield from find_values(item, cls, (*path, i))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from find_values(item, cls, (*path, str(key)))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.init:
                yield from find_values(getattr(obj, f.name), cls, (*path, f.name))


def to_data(obj: Any) -> Any:
    """The plain-data form of a built object (for `config show` and JSON). Values of
    ``__config_parse__`` types (secret references) are kept as they are."""
    if hasattr(type(obj), "__config_parse__"):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr}
    if isinstance(obj, list | tuple):
        return [to_data(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((to_data(v) for v in obj), key=repr)
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj
