"""Shared pieces of the outbound tests: a configuration with IdPs, and a strict
in-memory SCIM 2.0 target behind an ``httpx.MockTransport`` with fault injection."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from idprov.config import load_text
from idprov.provisioning.service import IdentityService


def idp_yaml(
    name: str,
    base_url: str,
    token_env: str = "SCIM_TOKEN",
    connector: str = "scim2",
    extra: str = "",
) -> str:
    return f"""
  - name: {name}
    connector: {connector}
    options:
      base_url: {base_url}
      auth: bearer
      token: env:{token_env}
    retry: {{max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05}}
{extra}"""


def make_config_text(tmp_path: Path, idps: str, app_idps: list[str]) -> str:
    return f"""
version: 1
data_dir: {tmp_path / "data"}
identity_providers:{idps}
applications:
  - name: resident
    identity_providers: [{", ".join(app_idps)}]
"""


def make_service(tmp_path: Path, idps: str, app_idps: list[str], **kwargs: Any) -> IdentityService:
    config = load_text(make_config_text(tmp_path, idps, app_idps), "test.yaml")
    return IdentityService(config, **kwargs)


class FakeScim:
    """A strict in-memory SCIM 2.0 target. ``faults`` is a queue of callables run
    before a matching request: each may return a response (the fault) or None."""

    def __init__(self, token: str = "secret-token", bulk_max_operations: int = 0) -> None:
        self.token = token
        self.bulk_max_operations = bulk_max_operations
        """0: Bulk not supported; else the maxOperations advertised and enforced."""
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Callable[[httpx.Request], httpx.Response | None]] = []
        self._lock = threading.RLock()
        """One request at a time, as a real server's store serializes them: the push's
        worker threads call at once, and a check-then-insert (userName unique) or a
        listing read while another request adds must see a whole state."""

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail(
        self,
        method: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        after_apply: bool = False,
    ) -> None:
        """The next ``times`` requests with ``method`` get ``status``; with
        ``after_apply`` the request is carried out first (the reply is lost)."""
        remaining = [times]

        def fault(request: httpx.Request) -> httpx.Response | None:
            if request.method != method or remaining[0] == 0:
                return None
            remaining[0] -= 1
            if after_apply:
                self.apply(request)
            content = (
                body
                if isinstance(body, bytes)
                else json.dumps(
                    body
                    or {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "detail": f"injected {status}",
                        "status": str(status),
                    }
                ).encode()
            )
            return httpx.Response(status, headers=headers or {}, content=content)

        self.faults.append(fault)

    def timeout(self, method: str, times: int = 1, after_apply: bool = False) -> None:
        remaining = [times]

        def fault(request: httpx.Request) -> httpx.Response | None:
            if request.method != method or remaining[0] == 0:
                return None
            remaining[0] -= 1
            if after_apply:
                self.apply(request)
            raise httpx.ReadTimeout("injected timeout", request=request)

        self.faults.append(fault)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, "bad token")
        for fault in self.faults:
            response = fault(request)
            if response is not None:
                return response
        return self.apply(request)

    def _error(self, status: int, detail: str, scim_type: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "detail": detail,
            "status": str(status),
        }
        if scim_type:
            body["scimType"] = scim_type
        return httpx.Response(status, json=body)

    def apply(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            return self._apply(request)

    def _apply(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.rstrip("/").split("/")
        kind, rid = parts[-1], None
        if kind not in ("Users", "Groups", "ServiceProviderConfig", "Bulk"):
            kind, rid = parts[-2], parts[-1]
        if kind == "ServiceProviderConfig":
            bulk = {
                "supported": self.bulk_max_operations > 0,
                "maxOperations": self.bulk_max_operations,
                "maxPayloadSize": 1048576,
            }
            return httpx.Response(200, json={"patch": {"supported": True}, "bulk": bulk})
        if kind == "Bulk":
            return self._bulk(request)
        table = self.users if kind == "Users" else self.groups
        if request.method == "POST":
            assert request.headers["Content-Type"] == "application/scim+json"
            body = json.loads(request.content)
            key = "userName" if kind == "Users" else "displayName"
            if any(r[key].lower() == body[key].lower() for r in table.values()):
                return self._error(409, f"{key} {body[key]} exists", "uniqueness")
            new_id = uuid.uuid4().hex
            table[new_id] = {**body, "id": new_id}
            return httpx.Response(
                201, json=table[new_id], headers={"Location": f"{request.url}/{new_id}"}
            )
        if request.method == "GET" and rid is None:
            flt = request.url.params.get("filter", "")
            attr, _, literal = flt.partition(" eq ")
            value = json.loads(literal) if literal else None
            found = [
                r
                for r in table.values()
                if value is None or str(r.get(attr, "")).lower() == value.lower()
            ]
            return httpx.Response(200, json={"totalResults": len(found), "Resources": found})
        if rid not in table:
            return self._error(404, f"{rid} not found")
        if request.method == "DELETE":
            del table[rid]
            return httpx.Response(204)
        if request.method == "PATCH":
            self._patch(table[rid], json.loads(request.content))
            return httpx.Response(204)
        if request.method == "PUT":
            table[rid] = {**json.loads(request.content), "id": rid}
            return httpx.Response(200, json=table[rid])
        return httpx.Response(200, json=table[rid])

    def _bulk(self, request: httpx.Request) -> httpx.Response:
        """RFC 7644 3.7: each operation applied as its own request would be."""
        body = json.loads(request.content)
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"]
        if not self.bulk_max_operations:
            return self._error(501, "Bulk is not supported")
        if len(body["Operations"]) > self.bulk_max_operations:
            return self._error(413, "too many operations", "tooMany")
        replies = []
        for op in body["Operations"]:
            sub = httpx.Request(
                op["method"],
                str(request.url).replace("/Bulk", op["path"]),
                headers={"Content-Type": "application/scim+json"},
                content=json.dumps(op["data"]).encode(),
            )
            response = self.apply(sub)
            reply = {
                "method": op["method"],
                "bulkId": op["bulkId"],
                "status": str(response.status_code),
            }
            if response.status_code < 300:
                reply["location"] = response.headers["Location"]
            else:
                reply["response"] = response.json()
            replies.append(reply)
        return httpx.Response(
            200,
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
                "Operations": replies,
            },
        )

    def _patch(self, resource: dict[str, Any], body: dict[str, Any]) -> None:
        for op in body["Operations"]:
            path = op.get("path")
            if op["op"] == "replace" and path is None:
                for key, value in op["value"].items():
                    if isinstance(value, dict) and isinstance(resource.get(key), dict):
                        resource[key].update(value)
                    else:
                        resource[key] = value
            elif op["op"] == "add" and path == "members":
                resource.setdefault("members", []).extend(op["value"])
            elif op["op"] == "remove" and path.startswith("members[value eq "):
                member = json.loads(path[len("members[value eq ") : -1])
                resource["members"] = [
                    m for m in resource.get("members", []) if m["value"] != member
                ]
            elif op["op"] == "remove":
                resource.pop(path, None)
            else:
                raise AssertionError(f"unexpected PATCH op {op}")
