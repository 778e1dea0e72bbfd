"""A SCIM 2.0 target on loopback that does NOT enforce unique userNames, as some real
targets do not: a create sent twice makes two accounts. It is what a test needs to
see duplicates that a strict target would hide behind a 409.

It serves what idprov's scim2 connector sends: POST/GET/PATCH/PUT/DELETE of Users
and Groups, ``attr eq "value"`` filters (every match is listed), and a
ServiceProviderConfig without Bulk. ``hold_post(n)`` makes the n-th POST /Users apply
the create and then hang without answering until :meth:`release` (a lost reply, or
the client killed while waiting). A real HTTP server in a thread, so that idprov
processes started by a test can reach it.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit


class LooseScim(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.posts = 0
        self.held_at: int | None = None
        self.held = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v2"

    def start(self) -> LooseScim:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self.shutdown()
        self.server_close()

    def hold_post(self, number: int) -> None:
        self.held_at = number

    def release(self) -> None:
        self._release.set()

    def user_names(self) -> list[str]:
        with self.lock:
            return sorted(u["userName"] for u in self.users.values())


class _Handler(http.server.BaseHTTPRequestHandler):
    server: LooseScim
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _reply(self, status: int, document: Any = None) -> None:
        data = json.dumps(document).encode() if document is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _table(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        parts = urlsplit(self.path).path.rstrip("/").split("/")
        if parts[-1] in ("Users", "Groups"):
            kind, rid = parts[-1], None
        else:
            kind, rid = parts[-2], parts[-1]
        return (self.server.users if kind == "Users" else self.server.groups), rid

    def do_GET(self) -> None:  # noqa: N802
        if self.path.endswith("/ServiceProviderConfig"):
            self._reply(200, {"patch": {"supported": True}, "bulk": {"supported": False}})
            return
        table, rid = self._table()
        with self.server.lock:
            if rid is not None:
                found = table.get(rid)
                self._reply(200, found) if found else self._reply(404, {"detail": "gone"})
                return
            query = parse_qs(urlsplit(self.path).query).get("filter", [""])[0]
            attribute, _, literal = query.partition(" eq ")
            value = json.loads(literal) if literal else None
            matches = [
                r
                for r in table.values()
                if value is None or str(r.get(attribute, "")).lower() == str(value).lower()
            ]
        self._reply(200, {"totalResults": len(matches), "Resources": matches})

    def do_POST(self) -> None:  # noqa: N802
        table, _ = self._table()
        body = self._body()
        with self.server.lock:
            rid = uuid.uuid4().hex
            table[rid] = {**body, "id": rid}
            if table is self.server.users:
                self.server.posts += 1
                hold = self.server.posts == self.server.held_at
            else:
                hold = False
        if hold:  # applied; the reply never comes
            self.server.held.set()
            self.server._release.wait(120)
            self.close_connection = True
            return
        self._reply(201, table[rid])

    def do_PATCH(self) -> None:  # noqa: N802
        table, rid = self._table()
        body = self._body()
        with self.server.lock:
            resource = table.get(rid or "")
            if resource is None:
                self._reply(404, {"detail": "gone"})
                return
            for op in body.get("Operations", []):
                if op.get("path") == "members" and op["op"].lower() == "add":
                    resource.setdefault("members", []).extend(op["value"])
                elif op["op"].lower() == "replace" and isinstance(op.get("value"), dict):
                    resource.update(op["value"])
        self._reply(204)

    def do_PUT(self) -> None:  # noqa: N802
        table, rid = self._table()
        body = self._body()
        with self.server.lock:
            table[rid or ""] = {**body, "id": rid}
        self._reply(200, table[rid or ""])

    def do_DELETE(self) -> None:  # noqa: N802
        table, rid = self._table()
        with self.server.lock:
            table.pop(rid or "", None)
        self._reply(204)
