"""SPML 2.0's operations on provisioning service objects (PSOs), for a connector.

:class:`SpmlPsoConnector` sends the core operations (add, modify, delete, lookup,
listTargets) and the search (with its result iterator) and password capabilities as
SOAP 1.1 POSTs to the one endpoint, and reads which capabilities the target
advertises, once. It knows PSOs, psoIDs and DSML attributes, not accounts or roles:
those are :class:`~idprov.connectors.spml.SpmlConnector`'s. The messages are
:mod:`~idprov.connectors.spml_wire`'s.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from idprov.connectors.base import (
    Connector,
    RemoteNotFound,
    TargetError,
    created_without_password,
)
from idprov.connectors.http import auth_headers, credentials_named, send
from idprov.connectors.spml_wire import (
    DSML,
    PASSWORD,
    SEARCH,
    SPML,
    SpmlRequest,
    children,
    ids_of,
    list_targets,
    pso_ids,
    read_reply,
)

if TYPE_CHECKING:
    from idprov.connectors.http_client import HttpClient
    from idprov.connectors.spml_options import SpmlOptions

T = TypeVar("T")


def _only_one(what: str, matches: list[tuple[str, str]], found: list[T]) -> list[T]:
    """``found``, unless more than one PSO matched: idprov cannot tell which is meant."""
    if len(found) > 1:
        condition = " and ".join(f"{n}={v}" for n, v in matches)
        raise TargetError(
            f"{what}: more than one PSO matches {condition}; idprov cannot tell which",
            hint="make the attribute unique at the target, or set a psoID template",
        )
    return found


class SpmlPsoConnector(Connector):
    """A connector whose target is an SPML 2.0 provider (abstract: the account and
    role operations are the subclass's)."""

    options: SpmlOptions
    client: HttpClient

    def __init__(self, idp: Any, options: Any, client: Any) -> None:
        super().__init__(idp, options, client)
        self._auth: dict[str, str] | None = None
        self._advertised: set[str] | None = None
        self._lock = threading.Lock()

    def new_request_id(self) -> str:
        """A unique requestID (an xsd:ID, so it may not start with a digit)."""
        return f"idprov-{uuid.uuid4().hex}"

    def request(
        self, what: str, operation: str, namespace: str = SPML, **attrs: Any
    ) -> SpmlRequest:
        mode = "synchronous" if self.options.synchronous else None
        return SpmlRequest(
            what, namespace, operation, self.new_request_id(), executionMode=mode, **attrs
        )

    def call(self, request: SpmlRequest) -> Any:
        """POST ``request``; the response element of its successful reply."""
        headers = {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml"}
        if self.options.soap_action is not None:
            action = self.options.soap_action.replace("{operation}", request.operation)
            headers["SOAPAction"] = f'"{action}"'
        if self._auth is None:
            self._auth = auth_headers(self.options)  # read the secret once
        headers.update(self._auth)
        response = send(
            self.client,
            "POST",
            self.options.base_url,
            what=request.what,
            headers=headers,
            content=request.to_bytes(),
        )
        return read_reply(response, request, credentials_named(self.options))

    def _pso_id(self, request: SpmlRequest, pso_id: str) -> None:
        request.pso_id(pso_id, self.options.target_id)

    # ---- generic PSO operations
    def _add(self, what: str, data: Mapping[str, Sequence[str]], pso_id: str | None) -> str:
        """addRequest; the new PSO's psoID (returned, else the one asked for)."""
        request = self.request(
            what, "addRequest", returnData="identifier", targetID=self.options.target_id
        )
        if pso_id is not None:
            self._pso_id(request, pso_id)
        if self.options.container_id is not None:
            request.pso_id(self.options.container_id, self.options.target_id, "containerID")
        request.data(data)
        found = pso_ids(self.call(request)) or ([pso_id] if pso_id else [])
        if not found:
            raise TargetError(
                f"{what}: added, but the reply names no psoID",
                retryable=True,
                ambiguous=True,
            )
        return found[0]

    def _modify(
        self,
        what: str,
        pso_id: str,
        replace: Mapping[str, Sequence[str]] | None = None,
        delete: Mapping[str, Sequence[str]] | None = None,
        add: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not (replace or delete or add):
            return
        request = self.request(what, "modifyRequest", returnData="identifier")
        self._pso_id(request, pso_id)
        request.modification("replace", replace or {})
        request.modification("add", add or {})
        request.modification("delete", delete or {})
        self.call(request)

    def _delete(self, what: str, pso_id: str) -> None:
        request = self.request(what, "deleteRequest")
        self._pso_id(request, pso_id)
        try:
            self.call(request)
        except RemoteNotFound:
            pass  # already gone: what we wanted

    def _lookup(self, what: str, pso_id: str, return_data: str) -> Any | None:
        """The ``pso`` element of a lookupResponse, or None if there is no such PSO."""
        request = self.request(what, "lookupRequest", returnData=return_data)
        self._pso_id(request, pso_id)
        try:
            reply = self.call(request)
        except RemoteNotFound:
            return None
        psos = children(reply, "pso")
        return psos[0] if psos else reply

    def _lookup_id(self, what: str, pso_id: str) -> str | None:
        pso = self._lookup(what, pso_id, "identifier")
        if pso is None:
            return None
        return next(iter(ids_of(pso)), pso_id)

    def search(
        self,
        what: str,
        matches: Iterable[tuple[str, str]],
        limit: int = 0,
        return_data: str = "identifier",
    ) -> list[Any]:
        """The ``pso`` elements whose attributes equal ``matches`` (search capability),
        following the target's result iterator."""
        request = self.request(
            what,
            "searchRequest",
            SEARCH,
            returnData=return_data,
            maxSelect=str(limit) if limit else None,
        )
        query = request.child(None, SEARCH, "query", scope="subTree")
        if self.options.target_id:
            query.set("targetID", self.options.target_id)
        if self.options.container_id is not None:
            request.pso_id(self.options.container_id, self.options.target_id, "basePsoID", query)
        parent = request.child(query, DSML, "filter")
        pairs = list(matches)
        if len(pairs) > 1:
            parent = request.child(parent, DSML, "and")
        for name, value in pairs:
            request.value(request.child(parent, DSML, "equalityMatch", name=name), name, value)
        reply = self.call(request)
        found = children(reply, "pso")
        while (iterator := next(iter(children(reply, "iterator")), None)) is not None:
            if limit and len(found) >= limit:
                break
            following = self.request(what, "iterateRequest", SEARCH)
            following.child(None, SEARCH, "iterator", ID=iterator.get("ID"))
            reply = self.call(following)
            found += children(reply, "pso")
        return found

    def searchids_of(
        self, what: str, matches: Iterable[tuple[str, str]], limit: int = 0
    ) -> list[str]:
        found = [pso_id for pso in self.search(what, matches, limit) for pso_id in ids_of(pso)]
        return found[:limit] if limit else found

    def _find(
        self, what: str, matches: list[tuple[str, str]], template_id: str | None
    ) -> str | None:
        if template_id is not None:
            return self._lookup_id(what, template_id)
        found = _only_one(what, matches, self.searchids_of(what, matches, limit=2))
        return found[0] if found else None

    def _require(self, namespace: str, what: str, fix: str) -> None:
        """Refuse, before anything is sent, an operation that needs a capability the
        target's listTargets does not advertise (nothing is known: go ahead)."""
        if self._lacks(namespace):
            raise TargetError(
                f"{what}: the target does not advertise {namespace}, which this needs; "
                "nothing was sent",
                hint=f"{fix}, or ask the target's administrators for the capability",
            )

    def _lacks(self, namespace: str) -> bool:
        """Whether the target's listTargets leaves ``namespace`` out of its capabilities
        (False when the target cannot tell)."""
        advertised = self._capabilities()
        return advertised is not None and namespace not in advertised

    def _capabilities(self) -> set[str] | None:
        """The capabilities of the target idprov provisions to (listTargets, read once)."""
        with self._lock:
            if self._advertised is None:
                try:
                    targets = list_targets(
                        self.call(self.request("list targets", "listTargetsRequest"))
                    )
                except TargetError:
                    return None
                target = targets.get(self.options.target_id or "") or next(
                    iter(targets.values()), None
                )
                self._advertised = set(target["capabilities"]) if target else set()
            return self._advertised

    def _set_password(self, what: str, remote_id: str, password: str, created: bool) -> None:
        request = self.request(what, "setPasswordRequest", PASSWORD)
        self._pso_id(request, remote_id)
        request.set_text(request.child(None, PASSWORD, "password"), "the password", password)
        try:
            self.call(request)
        except TargetError as exc:
            if not created:
                raise
            raise created_without_password(exc, remote_id) from exc

    def _find_pso(
        self, what: str, matches: list[tuple[str, str]], template_id: str | None
    ) -> tuple[str, Any] | None:
        """(psoID, pso element with its data) of the one PSO that matches, or None."""
        if template_id is not None:
            pso = self._lookup(what, template_id, "data")
            return None if pso is None else (next(iter(ids_of(pso)), template_id), pso)
        psos = _only_one(what, matches, self.search(what, matches, limit=2, return_data="data"))
        if not psos or not ids_of(psos[0]):
            return None
        return ids_of(psos[0])[0], psos[0]
