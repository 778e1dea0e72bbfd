"""`idprov idp test NAME --probe` against the real scim2-server and the strict IAM
Identity Center fake, and Ctrl-C in the middle of it, in a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import signal
import sys
import time
from pathlib import Path

IDPROV = Path(sys.executable).parent / "idprov"


def write_config(tmp_path: Path, name: str, connector: str, base_url: str) -> Path:
    path = tmp_path / "idprov.yaml"
    path.write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:
  - name: {name}
    connector: {connector}
    options: {{base_url: '{base_url}', auth: bearer, token: env:PROBE_TOKEN}}
""")
    return path


def findings(report: dict) -> dict[str, str]:
    return {f["check"]: f["result"] for f in report["findings"]}


def test_probe_of_scim2_server_says_rfc_and_leaves_nothing(
    cli, tmp_path, scim2_server, monkeypatch
):
    monkeypatch.setenv("PROBE_TOKEN", scim2_server.token)
    write_config(tmp_path, "scim", "scim2", scim2_server.base_url)
    report = cli("idp", "test", "scim", "--probe", "--json").json()
    seen = findings(report)
    assert seen["create with userName only"] == "accepted (201)"
    assert seen["filter co"] == "accepted (200)"
    assert seen["group returns its members"] == "yes"
    assert seen["Bulk create"] == "works"
    assert seen["PATCH remove member by value-path filter"] == "accepted (204)"
    assert seen[next(k for k in seen if k.startswith("userName IDPROV-PROBE-"))] == (
        "409: unique without regard to case"
    )
    assert report["dialect"] == "rfc"
    assert report["options"] == {"dialect": "rfc"}
    assert report["left_behind"] == [] and len(report["created"]) >= 4
    assert scim2_server.users() == [] and scim2_server.groups() == []


def test_probe_of_the_aws_fake_recommends_its_dialect(cli, tmp_path, aws_scim, monkeypatch):
    monkeypatch.setenv("PROBE_TOKEN", aws_scim.token)
    write_config(tmp_path, "aws", "scim2", aws_scim.base_url)
    report = cli("idp", "test", "aws", "--probe", "--json").json()
    seen = findings(report)
    assert seen["create with userName only"] == "refused (400: displayName is required)"
    assert seen["filter co"].startswith("refused (400: unsupported filter")
    assert seen["paging by startIndex"].startswith("refused (400")
    assert seen["largest count accepted"] == "50"
    assert seen["group returns its members"] == "no"
    assert seen["membership by filter (id eq … and members eq …)"] == "finds it"
    assert seen["101 member changes in one PATCH"].startswith("refused (400: at most 100")
    assert seen["PATCH remove all members"].startswith("refused (400")
    assert report["settings"]["required_attributes"] == [
        "displayName",
        "name.givenName",
        "name.familyName",
    ]
    assert report["options"] == {"dialect": "aws-identity-center"}
    assert aws_scim.users == {} and aws_scim.groups == {}
    # the table a person reads says the same
    out = cli("idp", "test", "aws", "--probe").ok().stdout
    assert "dialect: aws-identity-center" in out
    assert "deleted the" in out and "probe objects it created" in out


def test_probe_is_only_for_scim2(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_TOKEN", "x")
    write_config(tmp_path, "old", "scim11", "http://127.0.0.1:9/scim")
    error = cli("idp", "test", "old", "--probe", "--json").error(2)
    assert error["message"] == (
        "--probe is for SCIM 2.0 targets; the scim11 connector has no conformance probe"
    )


def test_ctrl_c_during_the_probe_deletes_what_it_made(tmp_path, aws_scim):
    """Interrupt the probe while a filter request hangs, from a real terminal: the
    users it had created are deleted, and it says so."""
    config = write_config(tmp_path, "aws", "scim2", aws_scim.base_url)
    aws_scim.hold_when = lambda request: request.method == "GET" and "filter" in request.query
    aws_scim.hold.clear()
    env = {**os.environ, "IDPROV_CONFIG": str(config), "PROBE_TOKEN": aws_scim.token}
    pid, fd = pty.fork()
    if pid == 0:  # the child: idprov in a terminal
        os.execve(str(IDPROV), [str(IDPROV), "idp", "test", "aws", "--probe"], env)
    try:
        assert aws_scim.waiting.wait(30), "the probe never reached a filter request"
        made = len(aws_scim.users)
        assert made == 2  # it had made its two users by then
        os.write(fd, b"\x03")
        started = time.monotonic()
        output = _read_all(fd)
        _, status = os.waitpid(pid, 0)
    finally:
        aws_scim.hold.set()
        _kill(pid)
    assert os.waitstatus_to_exitcode(status) == 130
    assert time.monotonic() - started < 10
    assert f"probe interrupted: deleted the {made} probe objects it had created" in output
    assert aws_scim.users == {} and aws_scim.groups == {}


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def test_probe_of_an_unreachable_target_says_so(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_TOKEN", "x")
    write_config(tmp_path, "gone", "scim2", "http://127.0.0.1:9/scim/v2")
    error = cli("idp", "test", "gone", "--probe", "--json").error(6)
    assert "ServiceProviderConfig" in error["message"]
    assert "127.0.0.1:9" in error["message"] or "connect" in error["message"].lower()


def test_probe_with_a_wrong_token_stops_at_once(cli, tmp_path, aws_scim, monkeypatch):
    monkeypatch.setenv("PROBE_TOKEN", "wrong")
    write_config(tmp_path, "aws", "scim2", aws_scim.base_url)
    error = cli("idp", "test", "aws", "--probe", "--json").error(6)
    assert "401" in error["message"]
    assert aws_scim.users == {}


def test_what_the_probe_cannot_delete_is_named_and_fails_the_command(
    cli, tmp_path, aws_scim, monkeypatch
):
    monkeypatch.setenv("PROBE_TOKEN", aws_scim.token)
    write_config(tmp_path, "aws", "scim2", aws_scim.base_url)
    aws_scim.broken_deletes = True
    run = cli("idp", "test", "aws", "--probe", "--json")
    assert run.exit_code == 6
    error = json.loads(run.stderr)["error"]
    assert error["message"] == "the probe could not delete 3 of its objects"
    left = [f"group {g['displayName']} ({g['id']})" for g in aws_scim.groups.values()]
    left += [f"user {u['userName']} ({u['id']})" for u in aws_scim.users.values()]
    assert sorted(error["hint"].removeprefix("delete them by hand: ").split(", ")) == sorted(left)
    assert sorted(json.loads(run.stdout)["left_behind"]) == sorted(left)
