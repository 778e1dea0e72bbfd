"""`--json` output: the same bytes as `json.dump(..., indent=2)` wrote before, a
listing's items written while they are still being read."""

from __future__ import annotations

import enum
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from idprov.cli import render_json
from idprov.model import Page, PageStream, User


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class WithToDict:
    def to_dict(self) -> dict[str, Any]:
        return {"kind": "object", "values": (1, 2)}


def alice() -> User:
    claims: dict[str, Any] = {"email": "a@example.com", "emails": ["a@x.org", "ä@y.org"]}
    return User("id-1", "PRIMARY", "alice", claims, ["staff", "Internal/ops"], True, "t0", "t1")


DOCUMENTS: list[Any] = [
    {},
    [],
    'José "quoted"\n\t\u2028 山田 \x00',
    {"a": [], "b": {}, "c": [[]], "d": [{}], "e": [1, 2.5, -0.0, True, None, "x"]},
    {"nested": {"deep": {"deeper": [{"k": ["v", {"w": None}]}]}}},
    {2: "int key", 2.5: "float key", True: "bool key", None: "none key", "s": 1},
    {"nan": float("nan"), "inf": [float("inf"), float("-inf")], "big": 10**30},
    {"enum": Colour.RED, "int enum": Level.HIGH, "tuple": ("a", ("b",))},
    {"object": WithToDict(), "list of objects": [WithToDict()]},
    alice(),
    Page([alice(), alice()], 7, 2, 2),
    {"items": [alice()]},
]


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_same_bytes_as_json_dump(document, compact):
    expected = io.StringIO()
    indent = None if compact else 2
    json.dump(
        document, expected, default=render_json.json_default, ensure_ascii=False, indent=indent
    )
    written = io.StringIO()
    render_json.write(document, written, compact)
    assert written.getvalue() == expected.getvalue() + "\n"


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("count", [0, 1, 2, 450])
def test_a_stream_is_written_as_a_page_would_be(compact, count):
    users = [alice() for _ in range(count)]
    expected = io.StringIO()
    render_json.write(Page(users, count, 0, None), expected, compact)
    written = io.StringIO()
    render_json.write(PageStream(iter(users), count, 0, None), written, compact)
    assert written.getvalue() == expected.getvalue()


class Sink:
    """An output that counts the users written to it so far."""

    def __init__(self) -> None:
        self.text: list[str] = []

    def write(self, text: str) -> None:
        self.text.append(text)

    def users_written(self) -> int:
        return "".join(self.text).count('"username"')


def test_items_are_written_while_the_stream_is_still_being_read():
    sink = Sink()
    behind: list[int] = []

    def users() -> Iterator[User]:
        for i in range(2000):
            behind.append(i - sink.users_written())
            yield alice()

    render_json.write(PageStream(users(), 2000, 0, None), sink)
    assert sink.users_written() == 2000
    assert max(behind) <= render_json.WRITE_BATCH + 1  # never the whole list held


def test_what_json_cannot_write_is_a_type_error():
    with pytest.raises(TypeError, match="not JSON serialisable: set"):
        render_json.write({"a": {1}}, io.StringIO())
    with pytest.raises(TypeError, match="keys must be"):
        render_json.write({(1, 2): "tuple key"}, io.StringIO())
