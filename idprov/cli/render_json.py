"""``--json`` output: one document per command, written as it is produced.

The bytes are those of ``json.dump(document, ensure_ascii=False, indent=2)`` (or
``indent=None`` with ``--compact``), objects turned into dicts by their ``to_dict``.
Two things differ from ``json.dump``: an iterator in the document (a listing's
items, :class:`~idprov.model.PageStream`) is written item by item as it is read,
so memory does not grow with the number of items; and the indented form is built
from the C encoder's output (``json.dump`` with an indent falls back to the
pure-Python encoder and one ``write`` per token: seconds for 100,000 users).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from json.encoder import encode_basestring
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


def json_default(value: Any) -> Any:
    """What ``json`` makes of a result object: its ``to_dict()``."""
    to_dict = getattr(value, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _encoder(item_separator: str, default: Any = None) -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, separators=(item_separator, ": "))``,
    with the C encoder made once (``JSONEncoder.encode`` makes one per call)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python implementation)
        separators = (item_separator, ": ")
        return json.JSONEncoder(ensure_ascii=False, separators=separators, default=default).encode
    encode = make(None, default, encode_basestring, None, ": ", item_separator, False, False, True)
    return lambda value: "".join(encode(value, 0))


_compact = _encoder(", ", json_default)
_flat_encoders: dict[int, Callable[[Any], str]] = {}


def write(document: Any, out: Any, compact: bool = False) -> None:
    """Write ``document`` and a newline to the text stream ``out`` (see the module)."""
    _write(document, 0, out.write, compact)
    out.write("\n")


def _write(value: Any, depth: int, write: Callable[[str], Any], compact: bool) -> None:
    if not isinstance(value, (*_SCALARS, dict, list, tuple, Iterator)):
        value = json_default(value)
    if isinstance(value, Iterator):
        _write_items(value, depth, write, compact)
    elif isinstance(value, dict) and any(isinstance(v, Iterator) for v in value.values()):
        _write_members(value, depth, write, compact)
    else:
        write(_compact(value) if compact else indented(value, depth))


def _write_items(
    items: Iterator[Any], depth: int, write: Callable[[str], Any], compact: bool
) -> None:
    """A JSON array of ``items``, encoded and written as they are read (a few
    hundred to a ``write``)."""
    first = next(items, _END)
    if first is _END:
        write("[]")
        return
    pad = "  " * (depth + 1)
    comma = ", " if compact else ",\n" + pad
    encode = _compact if compact else partial(indented, depth=depth + 1)
    write("[" if compact else "[\n" + pad)
    write(encode(first))
    while batch := list(islice(items, WRITE_BATCH)):
        write(comma + comma.join(map(encode, batch)))
    write("]" if compact else "\n" + "  " * depth + "]")


WRITE_BATCH = 200
"""Items encoded before each ``write`` (one per item costs a fifth of the time)."""


def _write_members(
    value: dict[Any, Any], depth: int, write: Callable[[str], Any], compact: bool
) -> None:
    """A JSON object some of whose values are iterators (written as they are read)."""
    pad = "  " * (depth + 1)
    open_, comma, close = (
        ("{", ", ", "}") if compact else ("{\n" + pad, ",\n" + pad, "\n" + "  " * depth + "}")
    )
    write(open_)
    for i, (key, member) in enumerate(value.items()):
        write((comma if i else "") + _key(key) + ": ")
        _write(member, depth + 1, write, compact)
    write(close)


_END = object()


def indented(value: Any, depth: int = 0) -> str:
    """``value`` as ``json.dumps(value, ensure_ascii=False, indent=2)`` writes it,
    nested ``depth`` levels deep; a list of scalars in one call of the C encoder."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if isinstance(value, dict):
        return _indented_dict(value, depth)
    if isinstance(value, list | tuple):
        return _indented_list(value, depth)
    if value is None or value is True or value is False:
        return _CONSTANTS[value]
    if kind is int:
        return int.__repr__(value)
    if isinstance(value, _SCALARS):
        return _compact(value)
    return indented(json_default(value), depth)


_CONSTANTS = {None: "null", True: "true", False: "false"}


def _indented_dict(value: dict[Any, Any], depth: int) -> str:
    if not value:
        return "{}"
    if all(type(v) in _FLAT for v in value.values()):  # claims: one C call
        return _flat(value, depth)
    pad = "  " * (depth + 1)
    members = [
        f"{pad}{encode_basestring(k) if type(k) is str else _key(k)}: {indented(v, depth + 1)}"
        for k, v in value.items()
    ]
    return "{\n" + ",\n".join(members) + "\n" + "  " * depth + "}"


def _indented_list(value: list[Any] | tuple[Any, ...], depth: int) -> str:
    if not value:
        return "[]"
    if all(type(v) in _FLAT for v in value):  # roles, emails: one C call
        return _flat(value, depth)
    pad = "  " * (depth + 1)
    items = [pad + indented(v, depth + 1) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"


_FLAT = frozenset((str, int, float, bool, type(None)))
"""Types whose values nothing is nested in: a container of only these is indented by
the C encoder itself, one item per line."""


def _flat(value: Any, depth: int) -> str:
    """A non-empty container of :data:`_FLAT` values, indented at ``depth``."""
    text = _flat_encoder(depth + 1)(value)
    return text[0] + "\n" + "  " * (depth + 1) + text[1:-1] + "\n" + "  " * depth + text[-1]


def _flat_encoder(depth: int) -> Callable[[Any], str]:
    """The C encoder separating items by a newline and ``depth`` levels of indent:
    right for a container of :data:`_FLAT` values (nothing nested to indent)."""
    encoder = _flat_encoders.get(depth)
    if encoder is None:
        encoder = _flat_encoders[depth] = _encoder(",\n" + "  " * depth)
    return encoder


def _key(key: Any) -> str:
    """An object key as ``json`` writes it: strings quoted, numbers, booleans and
    None as their JSON text in quotes."""
    if type(key) is str:
        return encode_basestring(key)
    if not isinstance(key, _SCALARS):
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
    return encode_basestring(key if isinstance(key, str) else _compact(key))
