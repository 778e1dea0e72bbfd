"""One escaping rule for untrusted text (idprov.text): the CLI's views
(:func:`idprov.cli.tables.printable`) and serve's log (:func:`log_field`) escape the
same characters the same way; they disagreed on zero-width characters, the byte order
mark, tag characters and the LRM/RLM marks."""

from __future__ import annotations

import pytest

from idprov.cli.tables import printable
from idprov.inbound.scim_server import log_field

UNION = {
    "\x00": "\\x00",
    "\x1b": "\\x1b",
    "\n": "\\n",
    "\x7f": "\\x7f",
    "\x85": "\\x85",
    "\x9b": "\\x9b",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
    "\u202a": "\\u202a",
    "\u202e": "\\u202e",
    "\u2066": "\\u2066",
    "\u2069": "\\u2069",
    "\u200e": "\\u200e",
    "\u200f": "\\u200f",
    "\u061c": "\\u061c",
    "\u200b": "\\u200b",
    "\u200c": "\\u200c",
    "\u200d": "\\u200d",
    "\u2060": "\\u2060",
    "\ufeff": "\\ufeff",
    "\U000e0000": "\\U000e0000",
    "\U000e0041": "\\U000e0041",
    "\U000e007f": "\\U000e007f",
}


@pytest.mark.parametrize(("char", "shown"), UNION.items())
def test_the_views_and_the_log_escape_the_same_characters_alike(char, shown):
    assert printable(f"a{char}b") == f"a{shown}b"
    assert log_field(f"a{char}b") == f"a{shown}b"


def test_what_a_reader_sees_as_it_is_stays():
    text = "Zoë Ørsted 山田\u3000太郎 👍 [red]x[/red] \\ é"
    assert printable(text) == text
    assert log_field("Zoë 山田\u3000太郎\\") == "Zoë\\x20山田\\u3000太郎\\\\"  # a field


def test_a_message_of_several_lines_keeps_its_lines_only():
    assert printable("one\ntwo\r\x1b", lines=True) == "one\ntwo\\r\\x1b"


def test_the_outbox_workers_log_line_escapes_what_an_error_quotes():
    """An error's message may quote a target's answer: the serve log's worker line
    writes its control characters escaped, as the access log does."""
    import threading

    from idprov.errors import IdprovError
    from idprov.provisioning.outbound import keep_working

    stop = threading.Event()
    said: list[str] = []

    def work() -> None:
        raise IdprovError("target said: bad\x1b[2J\nFORGED line", hint="see \u202etxt")

    def say(text: str, _traceback: bool) -> None:
        said.append(text)
        stop.set()

    keep_working(work, stop, say)
    assert said == [
        "the outbox worker cannot go on for now: target said: bad\\x1b[2J\\nFORGED line (see"
        " \\u202etxt); it keeps running and tries again in 1 s"
    ]
