"""The functions of mapping expressions (see :mod:`idprov.provisioning.expressions`).

Each works on text, on each item of a list of text, and leaves nothing (None) as
nothing. ``coalesce``, ``if`` and ``switch`` are lazy: they evaluate an argument only
when its value is needed. Modelled on Microsoft Entra's attribute-mapping functions
(ToLower, NormalizeDiacritics, StripSpaces, Replace, Join, Coalesce, Left, Mid,
Switch, IIF, FormatDateTime, Split).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Evaluator = Callable[[Mapping[str, Any]], Any]
_FOLD = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l"}
    | {"Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i"}
)


# ---------------------------------------------------------------- value helpers
def empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(text_of(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _each(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` over text; over each item of a list; nothing stays nothing."""

    def apply(value: Any, *args: Any) -> Any:
        if type(value) is str:
            return fn(value, *args)
        if value is None:
            return None
        if isinstance(value, list):
            return [fn(text_of(v), *args) for v in value]
        return fn(text_of(value), *args)

    return apply


def on_text(fn: Callable[..., Any], value: Any, *args: Any) -> Any:
    """``fn`` applied to a value that is not already text: a list item by item,
    nothing as nothing, anything else as its text."""
    if value is None:
        return None
    if isinstance(value, list):
        return [fn(text_of(v), *args) for v in value]
    return fn(text_of(value), *args)


def _flat(values: Iterable[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from value
        elif not empty(value):
            yield value


# ---------------------------------------------------------------- the functions
def normalize(text: str) -> str:
    """Letters without their diacritics (é -> e, ß -> ss, ø -> o)."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _join(sep: Any, *values: Any) -> Any:
    return text_of(sep).join(text_of(v) for v in _flat(values)) or None


Operand = tuple[int, Any]
"""An argument as lazy functions take it: (0, a literal), (1, a name), (2, an evaluator),
so that names and literals cost no call."""


def operand_value(operand: Operand, values: Mapping[str, Any]) -> Any:
    kind, part = operand
    return part if kind == 0 else values.get(part) if kind == 1 else part(values)


def _lazy_coalesce(args: list[Operand]) -> Evaluator:
    """coalesce() that evaluates a fallback only when the values before it are empty."""

    def coalesce(values: Mapping[str, Any]) -> Any:
        for kind, part in args:
            value = part if kind == 0 else values.get(part) if kind == 1 else part(values)
            if value is not None and value != "" and value != []:
                return value
        return None

    return coalesce


def _lazy_if(args: list[Operand]) -> Evaluator:
    condition, then = args[0], args[1]
    otherwise = args[2] if len(args) > 2 else (0, None)

    def choose(values: Mapping[str, Any]) -> Any:
        test = operand_value(condition, values)
        if test is not False and not empty(test):
            return operand_value(then, values)
        return operand_value(otherwise, values)

    return choose


def _lazy_switch(args: list[Operand]) -> Evaluator:
    value, default = args[0], args[1]
    pairs = [
        ((0, text_of(key[1])) if key[0] == 0 else key, result)
        for key, result in zip(args[2::2], args[3::2], strict=True)
    ]

    def switch(values: Mapping[str, Any]) -> Any:
        found = operand_value(value, values)
        wanted = found if type(found) is str else text_of(found)
        for (kind, part), result in pairs:
            key = part if kind == 0 else operand_value((kind, part), values)
            if (key if type(key) is str else text_of(key)) == wanted:
                return operand_value(result, values)
        return operand_value(default, values)

    return switch


def _mid(text: str, start: int, length: int) -> str:
    """``length`` characters from position ``start`` (1 is the first)."""
    begin = start - 1 if start > 0 else 0
    return text[begin : begin + length] if length > 0 else ""


def _parse_date(text: str, in_format: str | None) -> datetime | None:
    try:
        if in_format:
            return datetime.strptime(text, in_format)
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _format_date(value: Any, out_format: Any, in_format: Any = None) -> Any:
    """A date claim in another format; a value that is not a date yields nothing."""

    def one(text: str) -> str | None:
        parsed = _parse_date(text, text_of(in_format) if in_format else None)
        return parsed.strftime(text_of(out_format)) if parsed else None

    if value is None:
        return None
    if isinstance(value, list):
        return [d for d in (one(text_of(v)) for v in value) if d is not None]
    return one(text_of(value))


def _split(value: Any, sep: Any) -> Any:
    if type(value) is not str:
        if empty(value):
            return None
        value = text_of(value)
    return [part for part in value.split(text_of(sep) or None) if part] or None


def _item(value: Any, index: int) -> Any:
    """The ``index``-th item (1 the first, -1 the last); a single value is a list of one."""
    items = value if type(value) is list else ([] if empty(value) else [value])
    position = index - 1 if index > 0 else index
    return items[position] if index and -len(items) <= position < len(items) else None


@dataclass(frozen=True)
class Function:
    """A function of the language: its arity and which arguments must be literals."""

    impl: Callable[..., Any] | None
    """The function of the arguments' values (None for a ``lazy`` one)."""
    min_args: int
    max_args: int | None
    int_args: tuple[int, ...] = ()
    """Positions that must be integer literals."""
    usage: str = ""
    lazy: Callable[[list[Operand]], Evaluator] | None = None
    """Builds the evaluator itself, to evaluate arguments only when needed."""
    text: Callable[..., Any] | None = None
    """The function of one text (and literal arguments), for the fast path."""
    text_args: bool = False


def _text_function(
    fn: Callable[..., Any], arity: int, usage: str, ints: tuple = (), text_args: bool = False
) -> Function:
    """A function of a text (each text of a list), its other arguments literals or not
    (``text_args``: its other arguments are text, so literals may be made text once)."""
    return Function(_each(fn), arity, arity, ints, usage, text=fn, text_args=text_args)


FUNCTIONS: dict[str, Function] = {
    "lower": _text_function(str.lower, 1, "lower(value)"),
    "upper": _text_function(str.upper, 1, "upper(value)"),
    "normalize": _text_function(normalize, 1, "normalize(value)"),
    "strip_spaces": _text_function(lambda t: "".join(t.split()), 1, "strip_spaces(value)"),
    "trim": _text_function(str.strip, 1, "trim(value)"),
    "replace": _text_function(
        lambda t, old, new: t.replace(text_of(old), text_of(new)),
        3,
        "replace(value, old, new)",
        text_args=True,
    ),
    "join": Function(_join, 2, None, usage="join(separator, value, ...)"),
    "coalesce": Function(
        None, 1, None, usage="coalesce(value, fallback, ...)", lazy=_lazy_coalesce
    ),
    "left": _text_function(lambda t, n: t[:n] if n > 0 else "", 2, "left(value, count)", (1,)),
    "right": _text_function(lambda t, n: t[-n:] if n > 0 else "", 2, "right(value, count)", (1,)),
    "mid": _text_function(_mid, 3, "mid(value, start, length)", (1, 2)),
    "switch": Function(
        None, 4, None, usage="switch(value, default, key, result, ...)", lazy=_lazy_switch
    ),
    "if": Function(None, 2, 3, usage="if(condition, then, else)", lazy=_lazy_if),
    "format_date": Function(
        _format_date, 2, 3, usage="format_date(value, output_format, input_format)"
    ),
    "split": Function(_split, 2, 2, usage="split(value, separator)"),
    "item": Function(_item, 2, 2, (1,), "item(list, position)"),
}
