"""Text from elsewhere (a name, a claim, a target's error message, a request's path)
made safe to show: one rule for the CLI's views and for `idprov serve`'s log, so the
two never disagree on what a reader may be shown as is."""

from __future__ import annotations

import re

UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ud800-\udfff\U000e0000-\U000e007f]"
)
"""What a terminal acts on, or a reader cannot see, instead of showing it: C0 and C1
controls (an ESC starts a colour, a cursor move or a title change; a line break forges
a line), the line and paragraph separators, the bidirectional overrides, isolates and
marks (LRM, RLM, ALM: they reorder the text around them), the zero-width characters
(space, joiners, word joiner, the byte order mark: two names that look the same), the
tag characters (invisible text) and lone surrogates (which no stream can encode)."""

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def escape(char: str) -> str:
    """One character as its Python escape: ``\\n``, ``\\x1b``, ``\\u202e``,
    ``\\U000e0041``."""
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escaped(text: object, keep: str = "", also: str = "") -> str:
    """``text`` with each :data:`UNSAFE` character, and each that the regular
    expression character class ``also`` matches (a log's fields add whitespace and the
    backslash), written as its escape (:func:`escape`); the characters of ``keep``
    stay as they are (a line break in a message of several lines idprov wrote)."""
    value = str(text)

    def one(match: re.Match[str]) -> str:
        char = match.group()
        return char if char in keep else escape(char)

    pattern = re.compile(f"{UNSAFE.pattern}|[{also}]") if also else UNSAFE
    return pattern.sub(one, value)
