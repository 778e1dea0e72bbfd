"""A push at a terminal: nothing while it is quick, a live line while a slow
identity provider keeps the command waiting, and the report in its place at the end.

Run in a pseudo-terminal (tests/terminal.py) against the real scim2-server: directly
(answers in milliseconds), or behind a :class:`~tests.peers.slow_link.SlowLink` that
answers every request ``DELAY`` seconds late. The display waits a second before it
appears, well inside ``DELAY``. What is left on the screen is read with pyte, a
terminal emulator: the transient display must be gone, the report must be there.
The last test checks the counts the display is given, over several drains.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest

from tests.outbound_helpers import idp_yaml, make_config_text
from tests.peers.slow_link import SlowLink
from tests.terminal import run_in_terminal

DELAY = 2.0
ADD = ["user", "add", "alice", "-c", "email=alice@example.com"]
LIVE_LINE = re.compile(r"pushing to corp-scim\s+0/1\s+\(waiting \d+\.\d s\)")
CURSOR_HIDDEN = "\x1b[?25l"
"""What rich's live display sends first (the cursor is hidden while it draws)."""


@pytest.fixture
def slow_link(scim2_server) -> Iterator[SlowLink]:
    with SlowLink(scim2_server.base_url, DELAY) as link:
        yield link


def environment(tmp_path: Path, base_url: str, token: str) -> dict[str, str]:
    config = tmp_path / "idprov.yaml"
    config.write_text(make_config_text(tmp_path, idp_yaml("corp-scim", base_url), ["corp-scim"]))
    return {**os.environ, "SCIM_TOKEN": token, "IDPROV_CONFIG": str(config)}


def final_screen(raw: str) -> str:
    """What the terminal shows once the command has ended."""
    screen = pyte.Screen(120, 40)
    pyte.Stream(screen).feed(raw.replace("\n", "\r\n"))
    return "\n".join(line.rstrip() for line in screen.display if line.strip())


def test_a_push_that_waits_names_the_idp_and_the_wait_then_the_report_replaces_it(
    tmp_path, scim2_server, slow_link
):
    env = environment(tmp_path, slow_link.url, scim2_server.token)
    run = run_in_terminal(ADD, cwd=tmp_path, env=env)
    assert run.exit_code == 0, run.text
    live = LIVE_LINE.search(run.text)
    assert live is not None, run.text
    assert live.start() < run.text.index("added user alice"), run.text
    screen = final_screen(run.raw)
    assert "added user alice" in screen and "corp-scim" in screen, screen
    assert "pushing to" not in screen and "waiting" not in screen, screen
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]


def test_a_quick_push_shows_no_live_display(tmp_path, scim2_server):
    env = environment(tmp_path, scim2_server.base_url, scim2_server.token)
    run = run_in_terminal(ADD, cwd=tmp_path, env=env)
    assert run.exit_code == 0, run.text
    assert "added user alice" in run.text
    assert CURSOR_HIDDEN not in run.raw and "pushing to" not in run.text, run.raw
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]


@pytest.mark.parametrize("json", [False, True], ids=["stderr to a file", "--json"])
def test_no_live_display_when_stderr_is_not_a_terminal_or_with_json(
    tmp_path, scim2_server, slow_link, json
):
    env = environment(tmp_path, slow_link.url, scim2_server.token)
    errors = None if json else tmp_path / "errors.txt"
    run = run_in_terminal([*ADD, "--json"] if json else ADD, cwd=tmp_path, env=env, stderr=errors)
    assert run.exit_code == 0, run.text
    assert errors is None or errors.read_text() == ""
    assert CURSOR_HIDDEN not in run.raw and "pushing to" not in run.text, run.raw
    assert "alice" in run.text
    assert [u["userName"] for u in scim2_server.users()] == ["alice"]


def test_ctrl_c_while_waiting_stops_at_once_and_says_how_to_finish(
    tmp_path, scim2_server, slow_link
):
    env = environment(tmp_path, slow_link.url, scim2_server.token)
    run = run_in_terminal(ADD, cwd=tmp_path, env=env, interrupt_after=LIVE_LINE.pattern)
    assert run.exit_code == 130, run.text
    assert run.stop_seconds is not None and run.stop_seconds < 2, run.stop_seconds
    screen = final_screen(run.raw)
    assert "interrupted" in screen, screen
    assert "idprov outbox retry" in screen.replace("\n", ""), screen  # the hint wraps
    assert "pushing to" not in screen and "Traceback" not in run.text, screen


class RecordedProgress:
    """Stands in for rich's Progress: records each task's latest fields."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, object]] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def add_task(self, description: str, **fields: object) -> int:
        self.tasks[len(self.tasks)] = {"description": description}
        return len(self.tasks) - 1

    def update(self, task: int, **fields: object) -> None:
        self.tasks[task].update(fields)

    def line(self, description: str) -> dict[str, object]:
        return next(t for t in self.tasks.values() if t["description"] == description)


def test_the_position_and_failures_add_up_over_every_drain_of_a_command(monkeypatch):
    """An import drains once per batch: the line shows the command's position."""
    from idprov.cli import live_columns
    from idprov.cli.live import LiveDisplay
    from idprov.provisioning.results import IdpReport, OperationResult, OutboundReport

    recorded = RecordedProgress()
    monkeypatch.setattr(live_columns, "new_progress", lambda waiting_after: recorded)
    display = LiveDisplay()
    display.phase("importing", 0, 20)  # the display is up: pushes show at once
    for outcomes in (["done", "failed", "done"], ["failed", "done"]):
        report = OutboundReport(idps={"crm": IdpReport("crm", len(outcomes))})
        display.outbound(report)  # the drain starts
        for outcome in outcomes:
            result = OperationResult("crm", "user", "u", "create", outcome)
            report.idps["crm"].operations.append(result)
            display.outbound(report)
    display.stop()
    line = recorded.line("pushing to crm")
    assert line["unit"] == "5/5  2 failed" and line["completed"] == 5, line


def test_ctrl_c_while_a_release_pushes_names_outbox_retry_and_that_finishes(
    tmp_path, scim2_server, slow_link, monkeypatch
):
    """`outbox release` commits the held rows pending, then pushes them. Cut then, it
    said "run the same command again", which finds nothing held and does nothing;
    the rows it released are pushed by `idprov outbox retry`, which it now names."""
    from idprov.config import load_config
    from idprov.provisioning.service import IdentityService
    from tests.test_guard import seed
    from tests.test_guard_cut_changes import TWELVE
    from tests.test_sync import write_config

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    slow_link.delay = 0.0
    write_config(tmp_path, slow_link.url)
    seed(30)
    env = {**os.environ, "IDPROV_CONFIG": str(tmp_path / "idprov.yaml")}
    service = IdentityService(load_config())
    try:
        held = service.unassign("staff", TWELVE).outbound
        assert held is not None and sum(held.held.values()) == 13  # 12 users and the group
    finally:
        service.close()
    slow_link.delay = DELAY
    release = ["outbox", "release", "--yes", "--allow-deletes", "12"]
    run = run_in_terminal(release, cwd=tmp_path, env=env, interrupt_after=r"pushing to \S+")
    assert run.exit_code == 130, run.text
    screen = final_screen(run.raw)
    assert "push them with idprov outbox retry" in screen.replace("\n", ""), screen  # wraps
    screen = " ".join(screen.split())
    assert "--yes" not in screen and "run the same command again" not in screen, screen
    slow_link.delay = 0.0
    retry = run_in_terminal(["outbox", "retry"], cwd=tmp_path, env=env)
    assert retry.exit_code == 0, retry.text
    assert len(scim2_server.users()) == 18
