"""A strict SPML 2.0 provider on loopback (SOAP 1.1, DSMLv2 profile), and its ``spml_server``
fixture.

No SPML 2.0 provider can be installed for tests (the identity managers that speak it are
commercial Java servers), so this one follows the OASIS documents: the SPML 2.0 core schema
(``urn:oasis:names:tc:SPML:2:0``: add, modify, delete, lookup, listTargets), the search,
suspend and password capabilities, and the DSMLv2 profile (``dsml:attr`` data,
``dsml:modification`` inside ``spml:modification``, ``dsml:filter`` queries), over SOAP 1.1.

It is strict on purpose, so connector bugs show: POST only, ``text/xml``, the SOAPAction
header it is told to expect, one SOAP 1.1 Envelope with one Body element, a fresh requestID
on every request, children in schema order, attribute names that the object class allows
(inetOrgPerson, groupOfNames), its required attributes, unique ``uid`` and group ``cn``,
group members that exist. Envelope problems are SOAP Client faults; request problems are
``status="failure"`` replies with the spec's error codes (``malformedRequest``,
``alreadyExists``, ``noSuchIdentifier``, ``unsupportedOperation``...).

Tests inject faults (:meth:`SpmlServer.fail_next`, ``fault_next``, ``http_next``,
``pending_next``, ``stall_next``) and read the request log (``requests``).
"""

from __future__ import annotations

import base64
import re
import secrets
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

import pytest
from lxml import etree

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
SPML = "urn:oasis:names:tc:SPML:2:0"
DSML = "urn:oasis:names:tc:DSML:2:0:core"
SEARCH = "urn:oasis:names:tc:SPML:2:0:search"
SUSPEND = "urn:oasis:names:tc:SPML:2:0:suspend"
PASSWORD = "urn:oasis:names:tc:SPML:2:0:password"

NCNAME = re.compile(r"^[A-Za-z_][\w.\-]*$")
ATTRIBUTE_NAME = re.compile(r"^(?:[0-2](?:\.[0-9]+)+|[A-Za-z][A-Za-z0-9-]*)(?:;[A-Za-z0-9-]+)*$")
RETURN_DATA = ("identifier", "data", "everything")


@dataclass(frozen=True)
class ObjectClass:
    """What an object class requires and allows (lower-case names), LDAP style."""

    must: frozenset[str]
    may: frozenset[str]
    unique: str
    """The attribute no two objects of the class may share (case-insensitively)."""


PERSON_MAY = (
    "uid cn sn givenname displayname mail telephonenumber mobile title employeenumber "
    "employeetype departmentnumber o ou preferredlanguage userpassword description l st "
    "street postalcode initials manager businesscategory"
)
CLASSES = {
    "inetorgperson": ObjectClass(frozenset({"cn", "sn"}), frozenset(PERSON_MAY.split()), "uid"),
    "groupofnames": ObjectClass(
        frozenset({"cn"}), frozenset("cn member description owner o ou".split()), "cn"
    ),
}
AUXILIARY = {"top", "person", "organizationalperson"}


class SpmlFailure(Exception):
    """A request the provider refuses: a ``status="failure"`` reply."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


class ClientFault(Exception):
    """An envelope the provider cannot read: a SOAP 1.1 ``soap:Client`` fault."""


@dataclass
class Pso:
    """One provisioning service object: its psoID, DSML attributes and capability state."""

    pso_id: str
    attributes: dict[str, list[str]]
    container: str | None = None
    suspended: bool = False
    password: str | None = None
    """Set through the password capability (the data's userPassword is an attribute)."""

    def get(self, name: str) -> list[str]:
        return next((v for k, v in self.attributes.items() if k.lower() == name.lower()), [])

    @property
    def object_class(self) -> str:
        return next((c.lower() for c in self.get("objectclass") if c.lower() in CLASSES), "")


@dataclass
class Fault:
    """An injected answer for the next ``remaining`` requests of ``operation`` (None: any)."""

    kind: str  # spml | soap | http | pending | stall
    operation: str | None
    remaining: int
    error: str = ""
    message: str = ""
    status: int = 500
    body: bytes = b""
    content_type: str = "text/html"
    delay: float = 0.0
    apply: bool = False


class LoggedRequest(NamedTuple):
    """One request as the provider saw it, and how it answered (success, failure,
    pending, fault or an HTTP status)."""

    operation: str
    request_id: str | None
    soap_action: str | None
    body: str
    outcome: str


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "text/xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def local(element: Any) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def namespace(element: Any) -> str:
    return etree.QName(element).namespace or ""


def elements(parent: Any) -> list[Any]:
    return [child for child in parent if isinstance(child.tag, str)]


def text(element: Any) -> str:
    if elements(element):
        raise SpmlFailure("malformedRequest", f"<{local(element)}> must hold text only")
    return element.text or ""


def expect_children(parent: Any, pattern: str, ns: str) -> list[Any]:
    """The element children of ``parent`` in ``ns``, checked against ``pattern`` (a regex
    over their local names, each followed by a space); children in other namespaces are open content
    and must come last."""
    kids = elements(parent)
    own = [k for k in kids if namespace(k) == ns]
    if kids[: len(own)] != own:
        raise SpmlFailure("malformedRequest", f"<{local(parent)}>: open content must come last")
    names = "".join(f"{local(k)} " for k in own)
    if not re.fullmatch(pattern, names):
        raise SpmlFailure(
            "malformedRequest", f"<{local(parent)}> holds [{names}], expected {pattern}"
        )
    return own


class SpmlServer:
    """The provider: its configuration, store, request log and fault injection.

    Tests may change at any time: ``token`` (bearer; None refuses bearer), ``basic``
    ((user, password); None refuses basic; both None: no authentication), ``soap_action``
    (the SOAPAction header every request must carry, quoted as sent; None: no header;
    with ``{operation}`` standing for the request's element name), ``target_id`` and
    ``require_target_id``, ``capabilities`` (namespaces of the capabilities it offers),
    ``extra_attributes`` (more names accounts may hold), and ``page_size`` (search results
    per page; None: all at once).
    """

    def __init__(self) -> None:
        self.token: str | None = secrets.token_urlsafe(24)
        self.basic: tuple[str, str] | None = None
        self.soap_action: str | None = '""'
        self.target_id = "directory"
        self.require_target_id = False
        self.capabilities = {SEARCH, SUSPEND, PASSWORD}
        self.without: set[str] = set()
        """Operations this provider does not implement (answered unsupportedOperation),
        as a provider that supports a capability only in part does."""
        self.profile = DSML
        """The profile listTargets advertises (SPML 2.0 names the DSMLv2 profile
        ``urn:oasis:names:tc:SPML:2:0:DSML``; some providers the DSML namespace)."""
        self.extra_attributes: set[str] = set()
        self.page_size: int | None = None
        self.store: dict[str, Pso] = {}
        self.requests: list[LoggedRequest] = []
        self.lock = threading.RLock()
        self._faults: list[Fault] = []
        self._seen_ids: set[str] = set()
        self.iterators: dict[str, list[str]] = {}
        self.stopping = threading.Event()
        self._httpd = PeerHTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/spml"

    def start(self) -> SpmlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, and close the connections that clients kept alive."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._thread.join(timeout=5)

    # ---- what tests look at
    def objects(self, object_class: str) -> dict[str, Pso]:
        """The stored PSOs of a class, by their ``uid`` (accounts) or ``cn`` (groups)."""
        cls = object_class.lower()
        with self.lock:
            return {
                (p.get(CLASSES[cls].unique) or [p.pso_id])[0]: p
                for p in self.store.values()
                if p.object_class == cls
            }

    def accounts(self) -> dict[str, Pso]:
        return self.objects("inetOrgPerson")

    def groups(self) -> dict[str, Pso]:
        return self.objects("groupOfNames")

    def operations(self) -> list[str]:
        return [r.operation for r in self.requests]

    # ---- faults
    def fail_next(
        self, error: str, message: str = "injected failure", operation: str | None = None
    ) -> None:
        """Answer the next request (of ``operation``) with an SPML failure, doing nothing."""
        self._add(Fault("spml", operation, 1, error=error, message=message))

    def fault_next(
        self,
        message: str = "injected fault",
        code: str = "soap:Server",
        operation: str | None = None,
        count: int = 1,
    ) -> None:
        """Answer with a SOAP 1.1 fault (HTTP 500), doing nothing."""
        self._add(Fault("soap", operation, count, error=code, message=message))

    def http_next(
        self,
        status: int,
        body: bytes = b"<html><body>Service Unavailable</body></html>",
        content_type: str = "text/html",
        operation: str | None = None,
        count: int = 1,
        apply: bool = False,
    ) -> None:
        """Answer with this HTTP status and body; with ``apply`` the request is carried
        out first (the reply is lost)."""
        self._add(
            Fault(
                "http",
                operation,
                count,
                status=status,
                body=body,
                content_type=content_type,
                apply=apply,
            )
        )

    def pending_next(self, operation: str | None = None, apply: bool = True) -> None:
        """Answer ``status="pending"``; with ``apply`` the request is carried out anyway,
        as an asynchronous provider would later."""
        self._add(Fault("pending", operation, 1, apply=apply))

    def stall_next(self, seconds: float, operation: str | None = None) -> None:
        """Carry out the next request, then wait ``seconds`` before answering (timeouts)."""
        self._add(Fault("stall", operation, 1, delay=seconds, apply=True))

    def _add(self, fault: Fault) -> None:
        with self.lock:
            self._faults.append(fault)

    def take_fault(self, operation: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.operation in (None, operation):
                    fault.remaining -= 1
                    return fault
        return None

    # ---- requests
    def authorized(self, header: str | None) -> bool:
        if self.token is None and self.basic is None:
            return True
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() == "bearer" and self.token is not None:
            return secrets.compare_digest(credentials, self.token)
        if scheme.lower() == "basic" and self.basic is not None:
            expected = base64.b64encode(":".join(self.basic).encode()).decode()
            return secrets.compare_digest(credentials, expected)
        return False

    def serve(self, headers: Any, raw: bytes) -> Reply:
        """Answer one POST: authenticate, read the envelope, apply faults, dispatch."""
        if not self.authorized(headers.get("Authorization")):
            challenge = {"WWW-Authenticate": 'Bearer realm="spml", Basic realm="spml"'}
            return Reply(401, b"authentication required", "text/plain", challenge)
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "text/xml":
            self._log("?", None, headers, raw, "415")
            return Reply(415, f"SOAP 1.1 needs text/xml, not {content_type}".encode(), "text/plain")
        try:
            request = self.read_envelope(headers, raw)
        except ClientFault as fault:
            self._log("?", None, headers, raw, "fault")
            return Reply(500, soap_fault("soap:Client", str(fault)))
        operation, request_id = local(request), request.get("requestID")
        fault = self.take_fault(operation)
        outcome, reply = self.answer(request, fault)
        self._log(operation, request_id, headers, raw, outcome)
        if fault is not None and fault.kind == "stall":
            self.stopping.wait(fault.delay)
        return reply

    def _log(
        self, operation: str, request_id: str | None, headers: Any, raw: bytes, outcome: str
    ) -> None:
        body = raw.decode("utf-8", errors="replace")
        with self.lock:
            self.requests.append(
                LoggedRequest(operation, request_id, headers.get("SOAPAction"), body, outcome)
            )

    def read_envelope(self, headers: Any, raw: bytes) -> Any:
        """The request element of a SOAP 1.1 envelope; ClientFault if it is not one."""
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        try:
            root = etree.fromstring(raw, parser)
        except etree.XMLSyntaxError as exc:
            raise ClientFault(f"not XML: {exc}") from None
        if root.getroottree().docinfo.doctype:
            raise ClientFault("a DTD is not allowed in SOAP")
        if root.tag != f"{{{SOAP}}}Envelope":
            raise ClientFault(f"the root element is {root.tag}, not a SOAP 1.1 Envelope")
        kids = elements(root)
        if [local(k) for k in kids] not in (["Body"], ["Header", "Body"]) or any(
            namespace(k) != SOAP for k in kids
        ):
            raise ClientFault("an Envelope holds an optional Header and one Body")
        body = elements(kids[-1])
        if len(body) != 1:
            raise ClientFault(f"the Body must hold one request, not {len(body)}")
        action, expected = headers.get("SOAPAction"), self.soap_action
        if expected is not None:
            expected = expected.replace("{operation}", local(body[0]))
        if action != expected:
            raise ClientFault(f"SOAPAction header {action!r}, expected {expected!r}")
        return body[0]

    def answer(self, request: Any, fault: Fault | None) -> tuple[str, Reply]:
        """Check and carry out one request, unless a fault answers instead."""
        try:
            handler = HANDLERS.get((namespace(request), local(request)))
            if handler is None or local(request) in self.without:
                raise SpmlFailure("unsupportedOperation", f"no operation {request.tag}")
            self.check_request(request)
            if fault is not None and fault.kind == "soap":
                return "fault", Reply(500, soap_fault(fault.error, fault.message))
            if fault is not None and fault.kind == "spml":
                raise SpmlFailure(fault.error, fault.message)
            children = []
            if fault is None or fault.apply:
                with self.lock:
                    children = handler(self, request)
        except SpmlFailure as failure:
            return "failure", self.reply(request, "failure", [], failure)
        if fault is not None and fault.kind == "http":
            return str(fault.status), Reply(fault.status, fault.body, fault.content_type)
        if fault is not None and fault.kind == "pending":
            return "pending", self.reply(request, "pending", [])
        return "success", self.reply(request, "success", children)

    def check_request(self, request: Any) -> None:
        """RequestType: a fresh requestID (an xsd:ID), a valid executionMode."""
        request_id = request.get("requestID")
        if request_id is None or not NCNAME.match(request_id):
            raise SpmlFailure("malformedRequest", f"requestID {request_id!r} is not an xsd:ID")
        with self.lock:
            if request_id in self._seen_ids:
                raise SpmlFailure("malformedRequest", f"requestID {request_id} was used before")
            self._seen_ids.add(request_id)
        mode = request.get("executionMode")
        if mode not in (None, "synchronous", "asynchronous"):
            raise SpmlFailure("malformedRequest", f"executionMode {mode!r}")
        return_data = request.get("returnData")
        if return_data not in (None, *RETURN_DATA):
            raise SpmlFailure("malformedRequest", f"returnData {return_data!r}")

    def reply(
        self, request: Any, status: str, children: list[Any], failure: SpmlFailure | None = None
    ) -> Reply:
        """A SOAP envelope holding ``<xResponse status=...>`` in the request's namespace."""
        ns = namespace(request) or SPML
        name = local(request).removesuffix("Request") + "Response"
        envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP})
        body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
        response = etree.SubElement(
            body, f"{{{ns}}}{name}", nsmap={"spml": SPML, "dsml": DSML}, status=status
        )
        if request.get("requestID"):
            response.set("requestID", request.get("requestID"))
        if failure is not None:
            response.set("error", failure.error)
            etree.SubElement(response, f"{{{SPML}}}errorMessage").text = failure.message
        for child in children:
            if isinstance(child, dict):  # attributes of the response itself
                for name, value in child.items():
                    response.set(name, value)
            else:
                response.append(child)
        return Reply(200, etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))

    # ---- the parts of requests
    def pso_id(self, element: Any, must_exist: bool = True) -> str:
        """A PSOIdentifierType: its ID (of an existing PSO) after checking its targetID."""
        pso_id = element.get("ID")
        if not pso_id:
            raise SpmlFailure("malformedRequest", f"<{local(element)}> needs an ID")
        self.check_target(element.get("targetID"))
        if must_exist and pso_id not in self.store:
            raise SpmlFailure("noSuchIdentifier", f"no PSO {pso_id}")
        return pso_id

    def check_target(self, target_id: str | None) -> None:
        if target_id is None and self.require_target_id:
            raise SpmlFailure("malformedRequest", "targetID is required: this provider has two")
        if target_id not in (None, self.target_id):
            raise SpmlFailure("noSuchIdentifier", f"no target {target_id}")

    def check_schema(self, pso: Pso) -> None:
        """The object class's required and allowed attributes, uniqueness, members."""
        classes = {c.lower() for c in pso.get("objectclass")}
        structural = [c for c in classes if c in CLASSES]
        if len(structural) != 1 or classes - AUXILIARY - set(CLASSES):
            raise SpmlFailure("malformedRequest", f"unknown object classes {sorted(classes)}")
        cls = CLASSES[structural[0]]
        allowed = cls.may | cls.must | {"objectclass"}
        if structural[0] == "inetorgperson":
            allowed |= {a.lower() for a in self.extra_attributes}
        names = {name.lower() for name in pso.attributes}
        if unknown := sorted(names - allowed):
            raise SpmlFailure(
                "malformedRequest", f"{', '.join(unknown)} not allowed on {structural[0]}"
            )
        if missing := sorted(cls.must - names):
            raise SpmlFailure(
                "customError", f"object class violation: {', '.join(missing)} required"
            )
        mine = {v.lower() for v in pso.get(cls.unique)}
        for other in self.store.values():
            same = {v.lower() for v in other.get(cls.unique)}
            if other.pso_id != pso.pso_id and other.object_class == structural[0] and mine & same:
                raise SpmlFailure("alreadyExists", f"{cls.unique} {sorted(mine)[0]} is taken")
        for member in pso.get("member"):
            if member not in self.store:
                raise SpmlFailure("customError", f"member {member} does not exist")


def dsml_attributes(data: Any) -> dict[str, list[str]]:
    """``spml:data`` of the DSMLv2 profile: ``dsml:attr`` elements with ``dsml:value``s."""
    out: dict[str, list[str]] = {}
    for attr in elements(data):
        if namespace(attr) != DSML or local(attr) != "attr":
            raise SpmlFailure("malformedRequest", f"<data> holds {attr.tag}, not dsml:attr")
        name = attr.get("name") or ""
        if not ATTRIBUTE_NAME.match(name):
            raise SpmlFailure("malformedRequest", f"attribute name {name!r}")
        if any(k.lower() == name.lower() for k in out):
            raise SpmlFailure("malformedRequest", f"attribute {name} given twice")
        out[name] = dsml_values(attr)
        if not out[name]:
            raise SpmlFailure("malformedRequest", f"attribute {name} has no value")
    return out


def dsml_values(parent: Any) -> list[str]:
    values = []
    for value in elements(parent):
        if namespace(value) != DSML or local(value) != "value":
            raise SpmlFailure("malformedRequest", f"<{local(parent)}> holds {value.tag}")
        values.append(text(value))
    return values


def soap_fault(code: str, message: str) -> bytes:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP})
    fault = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
    etree.SubElement(fault, "faultcode").text = code
    etree.SubElement(fault, "faultstring").text = message
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def pso_element(pso: Pso, return_data: str, ns: str = SPML) -> Any:
    """``<pso>`` with its psoID, and its data unless only the identifier is wanted."""
    element = etree.Element(f"{{{ns}}}pso")
    etree.SubElement(element, f"{{{SPML}}}psoID", ID=pso.pso_id)
    if return_data != "identifier":
        data = etree.SubElement(element, f"{{{SPML}}}data")
        for name, values in pso.attributes.items():
            attr = etree.SubElement(data, f"{{{DSML}}}attr", name=name)
            for value in values:
                etree.SubElement(attr, f"{{{DSML}}}value").text = value
    return element


# ---- operations: each checks its request and returns the response's children
def add(server: SpmlServer, request: Any) -> list[Any]:
    kids = expect_children(request, r"(psoID )?(containerID )?data (capabilityData )*", SPML)
    server.check_target(request.get("targetID"))
    by_name = {local(k): k for k in kids}
    pso_id = str(uuid.uuid4())
    if "psoID" in by_name:
        pso_id = server.pso_id(by_name["psoID"], must_exist=False)
        if pso_id in server.store:
            raise SpmlFailure("alreadyExists", f"psoID {pso_id} is taken")
    container = None
    if "containerID" in by_name:
        container = server.pso_id(by_name["containerID"], must_exist=False)
    pso = Pso(pso_id, dsml_attributes(by_name["data"]), container)
    server.check_schema(pso)
    server.store[pso_id] = pso
    return [pso_element(pso, request.get("returnData") or "everything")]


def modify(server: SpmlServer, request: Any) -> list[Any]:
    kids = expect_children(request, r"psoID (modification )+", SPML)
    old = server.store[server.pso_id(kids[0])]
    pso = Pso(old.pso_id, {k: list(v) for k, v in old.attributes.items()}, old.container)
    for modification in kids[1:]:
        mode = modification.get("modificationMode")
        if mode not in ("add", "replace", "delete"):
            raise SpmlFailure("malformedRequest", f"modificationMode {mode!r}")
        changes = [k for k in elements(modification) if namespace(k) == DSML]
        if not changes or len(changes) != len(elements(modification)):
            raise SpmlFailure("malformedRequest", "a modification holds dsml:modification only")
        for change in changes:
            apply_change(pso, change, mode)
    server.check_schema(pso)
    old.attributes = pso.attributes
    return [pso_element(old, request.get("returnData") or "everything")]


def apply_change(pso: Pso, change: Any, mode: str) -> None:
    """One ``dsml:modification`` with LDAP semantics (values compare case-insensitively)."""
    name, operation = change.get("name") or "", change.get("operation")
    if local(change) != "modification" or not ATTRIBUTE_NAME.match(name) or operation != mode:
        raise SpmlFailure("malformedRequest", f"dsml:modification {name!r} {operation!r}")
    if name.lower() == "objectclass":
        raise SpmlFailure("malformedRequest", "objectclass cannot be modified")
    values = dsml_values(change)
    key = next((k for k in pso.attributes if k.lower() == name.lower()), name)
    current = pso.attributes.get(key, [])
    if mode == "replace":
        current = values
    elif mode == "add":
        if not values:
            raise SpmlFailure("malformedRequest", f"add to {name} without values")
        current = current + [v for v in values if v.lower() not in {c.lower() for c in current}]
    else:
        gone = {v.lower() for v in values}
        current = [c for c in current if values and c.lower() not in gone]
    if current:
        pso.attributes[key] = current
    else:
        pso.attributes.pop(key, None)


def delete(server: SpmlServer, request: Any) -> list[Any]:
    kids = expect_children(request, r"psoID ", SPML)
    if request.get("recursive") not in (None, "true", "false"):
        raise SpmlFailure("malformedRequest", "recursive is a boolean")
    pso_id = server.pso_id(kids[0])
    del server.store[pso_id]
    for other in server.store.values():
        for key in [k for k in other.attributes if k.lower() == "member"]:
            other.attributes[key] = [m for m in other.attributes[key] if m != pso_id]
    return []


def lookup(server: SpmlServer, request: Any) -> list[Any]:
    kids = expect_children(request, r"psoID ", SPML)
    pso = server.store[server.pso_id(kids[0])]
    return [pso_element(pso, request.get("returnData") or "everything")]


def list_targets(server: SpmlServer, request: Any) -> list[Any]:
    expect_children(request, r"", SPML)
    if request.get("profile") not in (None, DSML):
        raise SpmlFailure("unsupportedProfile", f"no profile {request.get('profile')}")
    target = etree.Element(f"{{{SPML}}}target", targetID=server.target_id, profile=server.profile)
    etree.SubElement(target, f"{{{SPML}}}schema", ref="urn:example:schema:inetOrgPerson")
    capabilities = etree.SubElement(target, f"{{{SPML}}}capabilities")
    for uri in sorted(server.capabilities):
        etree.SubElement(capabilities, f"{{{SPML}}}capability", namespaceURI=uri)
    return [target]


def capability(server: SpmlServer, uri: str) -> None:
    if uri not in server.capabilities:
        raise SpmlFailure("unsupportedOperation", f"this target does not offer {uri}")


def search(server: SpmlServer, request: Any) -> list[Any]:
    capability(server, SEARCH)
    if request.get("maxSelect") is not None and not request.get("maxSelect").isdigit():
        raise SpmlFailure("malformedRequest", "maxSelect is a number")
    kids = expect_children(request, r"(query )?(includeDataForCapability )*(activeSince )?", SEARCH)
    query = kids[0] if kids and local(kids[0]) == "query" else None
    if query is None:
        raise SpmlFailure("malformedRequest", "this provider needs a query")
    server.check_target(query.get("targetID"))
    if query.get("scope") not in (None, "pso", "oneLevel", "subTree"):
        raise SpmlFailure("malformedRequest", f"scope {query.get('scope')!r}")
    base = expect_children(query, r"(basePsoID )?", SEARCH)
    container = server.pso_id(base[0], must_exist=False) if base else None
    filters = [k for k in elements(query) if namespace(k) == DSML]
    if len(filters) != 1 or local(filters[0]) != "filter" or len(elements(filters[0])) != 1:
        raise SpmlFailure("malformedRequest", "the query holds one dsml:filter of one clause")
    matches = compile_filter(elements(filters[0])[0])
    found = [
        p.pso_id
        for p in server.store.values()
        if matches(p) and (container is None or p.container == container)
    ]
    found = found[: int(request.get("maxSelect") or 0) or None]
    return page(server, found, request.get("returnData") or "everything")


def page(server: SpmlServer, found: list[str], return_data: str) -> list[Any]:
    """One page of results, and an iterator if more remain."""
    size = server.page_size or len(found) or 1
    out = [pso_element(server.store[p], return_data, SEARCH) for p in found[:size]]
    if found[size:]:
        iterator = f"it-{uuid.uuid4().hex}"
        server.iterators[iterator] = [return_data, *found[size:]]
        out.append(etree.Element(f"{{{SEARCH}}}iterator", ID=iterator))
    return out


def iterate(server: SpmlServer, request: Any) -> list[Any]:
    capability(server, SEARCH)
    kids = expect_children(request, r"iterator ", SEARCH)
    rest = server.iterators.pop(kids[0].get("ID") or "", None)
    if rest is None:
        raise SpmlFailure("invalidIdentifier", f"no iterator {kids[0].get('ID')}")
    return page(server, [p for p in rest[1:] if p in server.store], rest[0])


def compile_filter(clause: Any) -> Callable[[Pso], bool]:
    """A DSMLv2 filter clause (and, or, not, equalityMatch, present) as a predicate."""
    kind = local(clause)
    if namespace(clause) != DSML:
        raise SpmlFailure("malformedRequest", f"filter clause {clause.tag}")
    if kind in ("and", "or", "not"):
        parts = [compile_filter(c) for c in elements(clause)]
        if not parts or (kind == "not" and len(parts) != 1):
            raise SpmlFailure("malformedRequest", f"empty dsml:{kind}")
        if kind == "not":
            return lambda p: not parts[0](p)
        combine = all if kind == "and" else any
        return lambda p: combine(part(p) for part in parts)
    name = clause.get("name") or ""
    if not ATTRIBUTE_NAME.match(name):
        raise SpmlFailure("malformedRequest", f"filter attribute {name!r}")
    if kind == "present":
        return lambda p: bool(p.get(name))
    if kind != "equalityMatch":
        raise SpmlFailure("unsupportedOperation", f"filter dsml:{kind}")
    values = dsml_values(clause)
    if len(values) != 1:
        raise SpmlFailure("malformedRequest", "equalityMatch takes one value")
    wanted = values[0].lower()
    return lambda p: wanted in {v.lower() for v in p.get(name)}


def suspend(server: SpmlServer, request: Any) -> list[Any]:
    capability(server, SUSPEND)
    kids = expect_children(request, r"psoID ", SUSPEND)
    server.store[server.pso_id(kids[0])].suspended = local(request) == "suspendRequest"
    return []


def active(server: SpmlServer, request: Any) -> list[Any]:
    """The Suspend capability's activeRequest (SPML 2.0, section 3.6.6.3): whether the
    PSO is active, as the ``active`` attribute of the response."""
    capability(server, SUSPEND)
    kids = expect_children(request, r"psoID ", SUSPEND)
    suspended = server.store[server.pso_id(kids[0])].suspended
    return [{"active": "false" if suspended else "true"}]


def set_password(server: SpmlServer, request: Any) -> list[Any]:
    capability(server, PASSWORD)
    kids = expect_children(request, r"psoID password (currentPassword )?", PASSWORD)
    server.store[server.pso_id(kids[0])].password = text(kids[1])
    return []


HANDLERS: dict[tuple[str, str], Callable[[SpmlServer, Any], list[Any]]] = {
    (SPML, "addRequest"): add,
    (SPML, "modifyRequest"): modify,
    (SPML, "deleteRequest"): delete,
    (SPML, "lookupRequest"): lookup,
    (SPML, "listTargetsRequest"): list_targets,
    (SEARCH, "searchRequest"): search,
    (SEARCH, "iterateRequest"): iterate,
    (SUSPEND, "suspendRequest"): suspend,
    (SUSPEND, "resumeRequest"): suspend,
    (SUSPEND, "activeRequest"): active,
    (PASSWORD, "setPasswordRequest"): set_password,
}


class PeerHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows its connections, to close kept-alive ones on stop."""

    block_on_close = False

    def __init__(self, peer: SpmlServer) -> None:
        super().__init__(("127.0.0.1", 0), SpmlHandler)
        self.peer = peer
        self.connections: set[socket.socket] = set()

    def close_connections(self) -> None:
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore connections that clients (timeouts) or :meth:`close_connections` cut."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class SpmlHandler(BaseHTTPRequestHandler):
    """The HTTP/1.1 (keep-alive) front of :class:`SpmlServer`: POST to ``/spml`` only."""

    protocol_version = "HTTP/1.1"
    server_version = "spml-test-peer"
    disable_nagle_algorithm = True
    timeout = 30

    server: PeerHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet; requests are in ``SpmlServer.requests``."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/spml":
            reply = Reply(404, b"no endpoint here", "text/plain")
        else:
            try:
                reply = self.server.peer.serve(self.headers, raw)
            except Exception as error:  # a bug here must reach the test as a 500, not a hang
                reply = Reply(500, repr(error).encode(), "text/plain")
        self.respond(reply)

    def do_GET(self) -> None:
        self.respond(Reply(405, b"SOAP 1.1 over HTTP is POST only", "text/plain"))

    def respond(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in {"Content-Type": reply.content_type, **reply.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)


@pytest.fixture
def spml_server() -> Iterator[SpmlServer]:
    """A fresh, empty SPML 2.0 provider on a loopback port, stopped after the test."""
    server = SpmlServer().start()
    try:
        yield server
    finally:
        server.stop()
