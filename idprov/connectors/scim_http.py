"""One SCIM service provider over HTTP: what the SCIM connectors and the probe send
their requests through.

Authenticated JSON requests (the secret read once per connector), the target's
errors turned into :class:`~idprov.connectors.base.TargetError` with its own message,
JSON replies, and what the target says it supports (its ServiceProviderConfig, read
once): PATCH and Bulk. What goes in the bodies is :mod:`idprov.connectors.scim_wire`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import TargetError
from idprov.connectors.http import (
    auth_headers,
    credentials_named,
    json_payload,
    json_reply,
    raise_for_status,
    send,
)
from idprov.connectors.scim_wire import scim_error_reply

if TYPE_CHECKING:
    import httpx

    from idprov.connectors.http_client import HttpClient
    from idprov.connectors.scim_dialects import Scim2Options


class ScimHttp:
    """Requests to one target: ``media_type`` and ``config_path`` are the SCIM
    version's; ``error_detail`` reads the target's message from an error reply."""

    def __init__(
        self,
        client: HttpClient,
        options: Scim2Options,
        *,
        media_type: str,
        config_path: str,
        error_detail: Callable[[httpx.Response], str | None],
    ) -> None:
        self.client = client
        self.options = options
        self.media_type = media_type
        self.config_path = config_path
        self.error_detail = error_detail
        self._config: dict[str, Any] | None = None
        self._auth: dict[str, str] | None = None
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return self.options.base_url.rstrip("/") + path

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """Send ``body`` as JSON; an error reply raises its TargetError (``what``
        names the operation in its message)."""
        accept = f"{self.media_type}, application/json"
        headers, content = json_payload(body, self.media_type, accept)
        if auth:
            if self._auth is None:
                self._auth = auth_headers(self.options)  # read the secret once
            headers.update(self._auth)
        response = send(
            self.client,
            method,
            self.url(path),
            what=what,
            headers=headers,
            content=content,
            params=params,
        )
        detail = self.error_detail(response)
        gone = response.status_code == 404 and scim_error_reply(response)
        raise_for_status(response, what, detail, credentials_named(self.options), gone=gone)
        return response

    @staticmethod
    def json(response: httpx.Response, what: str) -> dict[str, Any]:
        """The reply's JSON object (else an ambiguous, retryable TargetError)."""
        data: dict[str, Any] = json_reply(response, what)
        return data

    def get(self, path: str, what: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``GET path``'s JSON object."""
        return self.json(self.request("GET", path, what, params=params), what)

    def service_provider_config(self) -> dict[str, Any]:
        """The target's ServiceProviderConfig, read once per connector."""
        with self._lock:
            if self._config is None:
                self._config = self.get(self.config_path, "read ServiceProviderConfig")
            return self._config

    def supports_patch(self) -> bool:
        """``update_method``, or with ``auto`` what the ServiceProviderConfig says
        (no ServiceProviderConfig at all: no PATCH)."""
        if self.options.update_method != "auto":
            return self.options.update_method == "patch"
        try:
            return bool(self.service_provider_config().get("patch", {}).get("supported"))
        except TargetError as exc:
            if exc.status in (404, 501):
                return False
            raise

    def bulk_limits(self) -> tuple[int, int]:
        """(maxOperations, maxPayloadSize) the target advertises; (0, 0): no Bulk."""
        bulk = self.service_provider_config().get("bulk") or {}
        if not bulk.get("supported"):
            return 0, 0
        return int(bulk.get("maxOperations") or 0), int(bulk.get("maxPayloadSize") or 0)
