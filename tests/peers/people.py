"""A small in-house "people API" on loopback: the target of the README's example
connector (README "Writing a connector"), which tests/test_readme_examples.py runs.

JSON over HTTP with a bearer token: ``/api/users`` (``?login=``), ``/api/users/ID``
(GET, PATCH, DELETE), ``/api/groups`` (``?name=``), ``/api/groups/ID``,
``/api/groups/ID/members`` (POST ``{"add": [...], "remove": [...]}``) and ``/api/me``.
Users are ``{"id", "login", "active", "external_id", "profile": {...}}``; groups
``{"id", "name", "external_id", "members": [...]}``. Faults for the tests: the
next create carried out but answered 500, the next requests answered 429, a revoked
token.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class PeopleApi:
    """The API's state, and the server that serves it."""

    def __init__(self) -> None:
        self.token = "people-token"
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.lose_next_create = False
        self.throttle = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def user(self, login: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if u["login"] == login), None)

    def group(self, name: str) -> dict[str, Any] | None:
        return next((g for g in self.groups.values() if g["name"] == name), None)

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        with self.lock:
            if self.throttle:
                self.throttle -= 1
                return 429, {"error": "slow down"}
            parts = path.strip("/").split("/")[1:]  # after "api"
            kind = parts[0] if parts else ""
            if kind == "me":
                return 200, {"name": "idprov"}
            store = self.users if kind == "users" else self.groups if kind == "groups" else None
            if store is None:
                return 404, {"error": f"no {path}"}
            if len(parts) == 1:
                return self._collection(kind, store, method, query, body)
            item = store.get(parts[1])
            if item is None:
                return 404, {"error": f"no {kind[:-1]} {parts[1]}"}
            if len(parts) == 3 and parts[2] == "members" and method == "POST":
                unknown = [m for m in body["add"] if m not in self.users]
                if unknown:
                    return 404, {"error": f"no users {unknown}"}
                kept = [m for m in item["members"] if m not in body["remove"]]
                item["members"] = kept + [m for m in body["add"] if m not in kept]
                return 200, item
            if method == "GET":
                return 200, item
            if method == "DELETE":
                del store[parts[1]]
                for group in self.groups.values():
                    group["members"] = [m for m in group["members"] if m != parts[1]]
                return 204, None
            if method == "PATCH":
                if "profile" in body:  # a partial profile: the keys it names change
                    body["profile"] = {**item.get("profile", {}), **body["profile"]}
                item.update(body)
                return 200, item
            return 405, {"error": method}

    def _collection(
        self,
        kind: str,
        store: dict[str, dict[str, Any]],
        method: str,
        query: dict[str, str],
        body: Any,
    ) -> tuple[int, Any]:
        key = "login" if kind == "users" else "name"
        if method == "GET":
            found = [v for v in store.values() if key not in query or v[key] == query[key]]
            return 200, found
        if any(v[key] == body[key] for v in store.values()):
            return 409, {"error": f"{key} {body[key]} is taken"}
        item = {"id": uuid.uuid4().hex[:10], **body}
        if kind == "users":
            item.setdefault("active", True)
        else:
            item.setdefault("members", [])
        store[item["id"]] = item
        if kind == "users" and self.lose_next_create:
            self.lose_next_create = False
            return 500, {"error": "reply lost"}
        return 201, item


def _handler(api: PeopleApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                status, reply = 401, {"error": "token refused"}
            else:
                status, reply = api.handle(self.command, url.path, query, body)
            data = b"" if reply is None else json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    return Handler


@contextlib.contextmanager
def serve_people_api() -> Iterator[PeopleApi]:
    """An empty people API on loopback, served until the block ends."""
    api = PeopleApi()
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
        thread.join()
