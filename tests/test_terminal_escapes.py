"""What idprov shows of a value it did not write (a JIT login's claims, a name, a
target's message) cannot drive the terminal: control characters and bidirectional
overrides are shown as escapes, and rich markup in a value prints as typed, in the
plain (piped) output and on a terminal alike."""

from __future__ import annotations

import pytest

from tests import test_jit
from tests.test_jit import claims_file, login

portal = test_jit.portal

HOSTILE_SUB = "s\nx\x1b[31mred\x1b]0;title\x07\u202eevil\x9b2J"
SHOWN = "s\\nx\\x1b[31mred\\x1b]0;title\\x07\\u202eevil\\x9b2J"


@pytest.fixture
def hostile_log(cli, portal, tmp_path):
    claims = claims_file(tmp_path, {**test_jit.ALICE, "sub": HOSTILE_SUB})
    refused = login(cli, portal, "--idp", "proxy", "--claims", claims)
    assert refused.exit_code != 0
    cli("--config", str(portal), "user", "add", "[red]bob").ok()
    return portal


def _unsafe(text: str) -> list[str]:
    return [c for c in text if (c < " " and c != "\n") or "\x7f" <= c <= "\x9f" or c == "\u202e"]


def test_idprov_log_piped_shows_control_characters_as_escapes(cli, hostile_log):
    out = cli("--config", str(hostile_log), "log").ok().stdout
    assert _unsafe(out.replace("\t", " ")) == []
    [refused] = [line for line in out.splitlines() if "jit.refused" in line]
    assert SHOWN in refused
    assert "[red]bob" in out


def test_idprov_log_on_a_terminal_shows_them_as_escapes_and_markup_as_typed(
    cli, hostile_log, monkeypatch
):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "dumb")  # no colours: any ESC would be the value's
    out = cli("--config", str(hostile_log), "log").ok().stdout
    assert "\t" not in out  # the terminal's view, not tab-separated rows
    assert _unsafe(out) == []
    [refused] = [line for line in out.splitlines() if "jit.refused" in line]
    assert SHOWN in refused
    assert "[red]bob" in out
    users = cli("--config", str(hostile_log), "user", "list").ok().stdout
    assert "[red]bob" in users and _unsafe(users) == []


def test_an_error_naming_a_hostile_value_shows_it_escaped(cli, portal, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "dumb")
    import io
    import sys

    from idprov.cli.common import render_error
    from idprov.errors import UsageError

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    render_error(UsageError("bad \x1b[2J[red]value[/red]", hint="line one\nline two"))
    assert err.getvalue() == ("error: bad \\x1b[2J[red]value[/red]\nhint: line one\nline two\n")


INVISIBLE = "ev\u200bil\u200c\u200d\u200e\u200f\u061c\ufeff\u2060\U000e0041x"
"""A claim with characters a reader cannot see: zero-width space and joiners, the
LRM, RLM and ALM marks, a byte order mark, a word joiner and a tag character."""


@pytest.mark.parametrize("terminal", [False, True])
def test_views_show_invisible_characters_as_escapes_as_serves_log_does(
    cli, portal, monkeypatch, terminal
):
    from idprov.inbound.scim_server import log_field

    if terminal:
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("TERM", "dumb")
    shown = "ev\\u200bil\\u200c\\u200d\\u200e\\u200f\\u061c\\ufeff\\u2060\\U000e0041x"
    cli("--config", str(portal), "user", "add", "zed", "-c", f"title={INVISIBLE}").ok()
    users = cli("--config", str(portal), "user", "show", "zed").ok().stdout
    assert shown in users
    assert not any(c in users for c in INVISIBLE if not c.isascii())
    assert log_field(INVISIBLE) == shown  # one rule: serve's log escapes the same
    assert log_field("Zoë 山田\u3000太郎") == "Zoë\\x20山田\\u3000太郎"  # a field's spaces
