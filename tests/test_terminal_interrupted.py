"""Ctrl-C of a change, typed at a terminal while the directory holds a request: the
message says what the change left, and its hint is what finishes the job. A relay
in front of the real slapd holds the first request of a chosen kind (unsent, or sent
with its answer withheld) and tells the test, which then types Ctrl-C: the command
is stopped at that very point, whatever the machine's speed. Pushed to the real
scim2-server.

- nothing committed (stopped while reading): "nothing was changed", run it again;
- an add recorded and sent, its answer lost: run the same command again, which
  finishes what it recorded (audited, pushed);
- a write sent that nothing records: the directory may have made it;
- a change committed whose push was cut off: `idprov outbox retry`
  (tests/test_terminal_push.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from idprov.userstores import ldap_bulk
from tests.peers.scim2 import Scim2Peer
from tests.peers.slapd import Directory
from tests.terminal import TerminalRun, run_in_terminal
from tests.test_guard_ldap import corp_config

SEARCH, MODIFY, ADD = 0x63, 0x66, 0x68
"""The protocol op tags of the requests held."""


class Hold:
    """A loopback relay to a real slapd that holds one request: :meth:`at` arms it
    for the first request tagged ``tag``, which is kept from the directory (or, with
    ``made``, sent and its answer kept from idprov); :attr:`held` is set then.
    Nothing else is ever delayed or dropped."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 389)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._armed: tuple[int, bool] | None = None
        self._withheld: int | None = None
        self.held = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self._listener.getsockname()[1]}"

    def at(self, tag: int, made: bool = False) -> None:
        with self._lock:
            self._armed, self._withheld = (tag, made), None
            self.held.clear()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._upstream)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, asking: bool) -> None:
        data = b""
        try:
            while chunk := source.recv(65536):
                data += chunk
                while (size := ldap_bulk.message_size(data)) is not None and len(data) >= size:
                    message, data = data[:size], data[size:]
                    if self._passes(message, asking):
                        sink.sendall(message)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    def _passes(self, message: bytes, asking: bool) -> bool:
        message_id, tag, _, _ = ldap_bulk.decode_message(message)
        with self._lock:
            if not asking:
                if message_id == self._withheld:
                    self.held.set()
                    return False
                return True
            if self._armed is None or tag != self._armed[0]:
                return True
            made, self._armed = self._armed[1], None
            if made:
                self._withheld = message_id
                return True
        self.held.set()
        return False


@pytest.fixture
def hold(slapd: Directory) -> Iterator[Hold]:
    relay = Hold(slapd.url)
    yield relay
    relay.close()


@pytest.fixture
def corp(tmp_path: Path, slapd: Directory, hold: Hold, scim2_server: Scim2Peer, monkeypatch):
    """A CORP store on ``slapd`` behind ``hold``, pushed to scim2-server; CORP/bob
    holds CORP/staff and is at the target."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    monkeypatch.chdir(tmp_path)
    corp_config(
        tmp_path,
        slapd,
        f"""identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""",
        url=hold.url,
        bind=(slapd.root_dn, slapd.root_password),
    )
    return slapd


def interrupted(tmp_path: Path, hold: Hold, *args: str) -> TerminalRun:
    """``idprov ARGS`` at a terminal, Ctrl-C typed once ``hold`` holds its request."""
    run = run_in_terminal(
        list(args), cwd=tmp_path, env=dict(os.environ), interrupt_when=hold.held.is_set
    )
    assert run.exit_code == 130, run.text
    assert "Traceback" not in run.text, run.text
    return run


def one_line(run: TerminalRun) -> str:
    """The output with the terminal's wrapping undone."""
    return " ".join(run.text.split())


def target_users(scim2_server: Scim2Peer) -> list[str]:
    return sorted(u["userName"] for u in scim2_server.users())


@pytest.fixture
def bob(cli, corp, scim2_server) -> None:
    cli("role", "add", "CORP/staff").ok()
    cli("user", "add", "CORP/bob", "-c", "email=bob@example.com", "--role", "CORP/staff").ok()
    assert target_users(scim2_server) == ["bob"]


def test_a_delete_stopped_before_it_wrote_says_nothing_was_changed(
    cli, tmp_path, corp, hold, bob, scim2_server
):
    """The trial's `user delete` of a hung directory: it said 'the change is done here
    (do not run it again)' and sent the administrator to `outbox retry`, which did
    nothing: the user was still there."""
    hold.at(SEARCH)
    run = interrupted(tmp_path, hold, "user", "delete", "CORP/bob", "--yes")
    said = one_line(run)
    assert "nothing was changed" in said, said
    assert "run the command again: idprov user delete CORP/bob --yes" in said, said
    assert "outbox retry" not in said and "do not run it again" not in said, said
    assert cli("user", "show", "CORP/bob", "--json").json()["username"] == "bob"
    assert cli("outbox", "list", "--json").json()["items"] == []
    cli("user", "delete", "CORP/bob", "--yes").ok()  # what the hint says does it
    assert corp.entry(f"uid=bob,{corp.people}") is None


def test_an_add_whose_answer_never_came_is_finished_by_running_it_again(
    cli, tmp_path, corp, hold, scim2_server
):
    """The add reached the directory; no audit, no outbox row: `outbox retry` (what
    the hint said) did nothing, running the add again finishes it."""
    add = ["user", "add", "CORP/ann", "-c", "email=ann@example.com"]
    hold.at(ADD, made=True)
    run = interrupted(tmp_path, hold, *add)
    said = one_line(run)
    assert "the add of user CORP/ann was recorded here" in said, said
    assert (
        "run the same command again, it finishes only what it recorded: "
        "idprov user add CORP/ann -c email=ann@example.com"
    ) in said, said
    assert "outbox retry" not in said, said
    assert corp.entry(f"uid=ann,{corp.people}") is not None  # the directory made it
    cli(*add).ok()
    assert target_users(scim2_server) == ["ann"]
    adds = cli("log", "--action", "user.add", "--json").items()
    assert [e["target"] for e in adds] == ["CORP/ann"]


def test_a_write_sent_and_never_answered_says_the_directory_may_have_made_it(
    cli, tmp_path, corp, hold
):
    """A role add is not recorded before it is sent: cut off with its answer lost,
    nothing here says whether the directory made it."""
    hold.at(ADD)
    run = interrupted(tmp_path, hold, "role", "add", "CORP/crew")
    said = one_line(run)
    assert "the CORP directory was sent a write and never answered" in said, said
    assert "run the command again (idprov role add CORP/crew)" in said, said
    assert "idprov sync" in said and "outbox retry" not in said, said
    cli("role", "add", "CORP/crew").ok()  # it was not made: the hint's command makes it
    assert cli("role", "show", "CORP/crew", "--json").json()["name"] == "crew"
