"""A PostgreSQL state whose COMMIT never got its answer (the link dropped once COMMIT
was sent): the change may have been made. The error says so and how to check, never
"nothing of it was written" (run again on its word, `user add` said "already
exists"); a PostgreSQL userstore that committed its part before (its own connection)
is named, with what finishes the change."""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

from tests.test_state_postgres import shared_config

PORT = 18900


class CommitCutter:
    """A proxy to PostgreSQL. Once armed, and after an audit INSERT went through, it
    cuts the link at the next COMMIT: ``forward``, after the server answered it (the
    answer is never relayed); else before the server gets it (never committed)."""

    def __init__(self, upstream: int, port: int, forward: bool) -> None:
        self.upstream = upstream
        self.forward = forward
        self.armed = False
        self.cut = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.links += [client, server]
            link: dict[str, Any] = {"audit": False, "cutting": False, "answered": threading.Event()}
            threading.Thread(target=self._up, args=(client, server, link), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, link), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, link: dict[str, Any]) -> None:
        try:
            while data := client.recv(65536):
                if self.armed and b"audit" in data.lower():
                    link["audit"] = True
                if self.armed and link["audit"] and b"COMMIT" in data:
                    self.armed = False
                    link["cutting"] = True  # nothing more is relayed to the client
                    if self.forward:
                        server.sendall(data)
                        link["answered"].wait(30)  # the server committed and answered
                    self.cut.set()
                    for s in (client, server):
                        _close(s)
                    return
                server.sendall(data)
        except OSError:
            pass

    def _down(self, server: socket.socket, client: socket.socket, link: dict[str, Any]) -> None:
        try:
            while data := server.recv(65536):
                if link["cutting"]:
                    link["answered"].set()
                    return
                client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for s in self.links:
            _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def test_a_commit_whose_answer_was_lost_says_it_may_have_been_made(
    cli, postgres, tmp_path, write_config, monkeypatch
):
    cutter = CommitCutter(postgres.port, PORT, forward=True)
    try:
        proxied = postgres.url.replace(f":{postgres.port}/", f":{PORT}/")
        # the state and the directory through the proxy: one connection, one COMMIT
        write_config(shared_config(postgres, tmp_path).replace(postgres.url, proxied))
        cli("user", "list").ok()
        cli("log").ok()  # the state's tables made
        cutter.armed = True
        argv = ["user", "add", "bob"]
        monkeypatch.setattr(sys, "argv", ["idprov", *argv])
        error = cli(*argv, "--json").error(1)
        assert cutter.cut.is_set(), error
        assert postgres.rows("SELECT username FROM directory.users") == [("bob",)]
        assert "nothing of it was written" not in error["message"]
        assert "re-run" not in error["hint"]
        assert (
            "as `idprov user add bob` was committing its change: it may have been made"
            in (error["message"])
        )
        assert (
            "check with `idprov user show bob` / `idprov log` before running it again"
            in (error["hint"])
        )
        # ... and it was: the log shows it
        assert any("bob" in e["target"] for e in cli("log", "--json").items())
    finally:
        cutter.close()


def test_a_userstore_that_committed_before_the_state_s_commit_was_lost_is_named(
    cli, postgres, tmp_path, write_config, monkeypatch
):
    cutter = CommitCutter(postgres.port, PORT + 1, forward=False)
    try:
        proxied = postgres.url.replace(f":{postgres.port}/", f":{PORT + 1}/")
        text = shared_config(postgres, tmp_path)
        # the state alone through the proxy; the userstore on its own connection
        write_config(text.replace(f"state: {{url: '{postgres.url}'", f"state: {{url: '{proxied}'"))
        cli("user", "list").ok()
        cli("log").ok()  # the state's tables made
        cutter.armed = True
        argv = ["user", "add", "carol"]
        monkeypatch.setattr(sys, "argv", ["idprov", *argv])
        error = cli(*argv, "--json").error(1)
        assert cutter.cut.is_set()
        assert postgres.rows("SELECT username FROM directory.users") == [("carol",)]
        assert postgres.rows("SELECT count(*) FROM idprov.outbox") == [(0,)]
        assert "nothing of it was written" not in error["message"]
        assert "userstore PRIMARY (PostgreSQL at" in error["message"]
        assert "committed its part of it" in error["message"]
        assert "`idprov sync` pushes what the directory holds" in error["hint"]
        assert "check with `idprov user show carol` / `idprov log`" in error["hint"]
        # run again, it finds the user made
        assert "already exists" in cli(*argv, "--json").error(4)["message"]
    finally:
        cutter.close()
