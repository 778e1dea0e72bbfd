"""The wire of SPML 2.0 (DSMLv2 profile) over SOAP 1.1: building requests, reading
replies, and turning ``failure`` replies and SOAP faults into idprov's errors.

Messages are built and read with lxml (imported only when a request is made): every
value is escaped by the library, and replies are parsed without DTDs, entities or
network access. Used by :mod:`idprov.connectors.spml`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import RemoteConflict, RemoteNotFound, TargetError
from idprov.connectors.http import raise_for_status, redact, reply_text
from idprov.secrecy import blank

if TYPE_CHECKING:
    import httpx

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
SPML = "urn:oasis:names:tc:SPML:2:0"
DSML = "urn:oasis:names:tc:DSML:2:0:core"
DSML_PROFILE = "urn:oasis:names:tc:SPML:2:0:DSML"
"""The DSMLv2 profile's URI in SPML 2.0; some targets name the DSML core namespace."""
SEARCH = "urn:oasis:names:tc:SPML:2:0:search"
SUSPEND = "urn:oasis:names:tc:SPML:2:0:suspend"
PASSWORD = "urn:oasis:names:tc:SPML:2:0:password"
PREFIXES = {SPML: "spml", DSML: "dsml", SEARCH: "search", SUSPEND: "suspend", PASSWORD: "pass"}

ATTRIBUTE_NAME = re.compile(r"^(?:[0-2](?:\.[0-9]+)+|[A-Za-z][A-Za-z0-9-]*)(?:;[A-Za-z0-9-]+)*$")
"""DSMLv2 AttributeDescriptionValue: a name or an OID, with options (``cn;lang-de``)."""

HINTS = {
    "malformedRequest": "the target refused the request's shape: check object_class and the "
    "attribute names against the target's schema (`idprov idp test NAME` lists its targets)",
    "unsupportedOperation": "the target does not offer this operation or capability; "
    "`idprov idp test NAME` lists the capabilities it advertises",
    "unsupportedExecutionMode": "the target cannot run requests synchronously: set "
    "`synchronous: false` (replies may then be pending)",
    "unsupportedProfile": "the target does not speak the DSMLv2 profile this connector uses",
    "invalidIdentifier": "check the pso_id and group_pso_id templates against the target's "
    "identifiers",
    "invalidContainment": "check container_id",
    "unsupportedIdentifierType": "check the pso_id, group_pso_id and container_id options",
}


class RemotePending(TargetError):
    """The target accepted a request asynchronously (SPML ``status="pending"``) and has
    not carried it out yet. Not retryable now: the row stays in the outbox, and the next
    drain (``idprov sync``) sends it again, which adopts or repeats safely."""

    code = "remote_pending"


def dn_value(value: str) -> str:
    """``value`` escaped as an attribute value of a distinguished name (RFC 4514)."""
    last = len(value) - 1
    out = []
    for i, c in enumerate(value):
        if c in '\\,+"<>;=' or (c == " " and i in (0, last)) or (c == "#" and i == 0):
            out.append("\\" + c)
        else:
            out.append("\\00" if c == "\0" else c)
    return "".join(out)


def dsml_values(value: Any) -> list[str]:
    """A mapped value as DSML values: lists stay multi-valued, booleans are LDAP's."""
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        if item is None or item == "":
            continue
        out.append(("TRUE" if item else "FALSE") if isinstance(item, bool) else str(item))
    return out


def _local(element: Any) -> str:
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def children(element: Any, name: str) -> list[Any]:
    """Child elements named ``name`` in any namespace (targets differ on capability
    elements' namespaces; the local names are the spec's)."""
    return [child for child in element if _local(child) == name]


def _text(element: Any) -> str:
    return "".join(element.itertext())


class SpmlRequest:
    """One SPML request being built: the operation element in a SOAP 1.1 envelope.
    ``what`` names the operation in errors (``create user alice``)."""

    def __init__(
        self, what: str, namespace: str, operation: str, request_id: str, **attrs: str | None
    ) -> None:
        from lxml import etree

        self.what = what
        self.operation = operation
        self.request_id = request_id
        nsmap = {"soap": SOAP, "spml": SPML, "dsml": DSML, PREFIXES[namespace]: namespace}
        self.envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap=nsmap)
        body = etree.SubElement(self.envelope, f"{{{SOAP}}}Body")
        attrib = {"requestID": request_id, **{k: v for k, v in attrs.items() if v is not None}}
        self.root = etree.SubElement(body, f"{{{namespace}}}{operation}", attrib)
        self.namespace = namespace

    def child(self, parent: Any, namespace: str, tag: str, /, **attrs: str | None) -> Any:
        """A new ``namespace:tag`` element under ``parent`` (None: the operation's)."""
        from lxml import etree

        attrib = {k: v for k, v in attrs.items() if v is not None}
        return etree.SubElement(
            self.root if parent is None else parent, f"{{{namespace}}}{tag}", attrib
        )

    def pso_id(
        self, pso_id: str, target_id: str | None, name: str = "psoID", parent: Any = None
    ) -> Any:
        """A PSOIdentifierType element (``ID``, ``targetID``) in the operation's namespace."""
        return self.child(parent, self.namespace, name, ID=pso_id, targetID=target_id)

    def value(self, parent: Any, name: str, text: str) -> None:
        """One ``dsml:value`` of attribute ``name``."""
        self.set_text(self.child(parent, DSML, "value"), name, text)

    def set_text(self, element: Any, name: str, text: str) -> None:
        """Set an element's text: lxml escapes it, and refuses what XML 1.0 cannot carry."""
        try:
            element.text = text
        except ValueError as exc:
            raise TargetError(
                f"{self.what}: the value of {name} holds characters XML cannot carry "
                "(control characters or NUL); fix the claim",
            ) from exc

    def data(self, attributes: Mapping[str, Sequence[str]]) -> None:
        """``spml:data`` with one ``dsml:attr`` per attribute."""
        data = self.child(None, SPML, "data")
        for name, values in attributes.items():
            attr = self.child(data, DSML, "attr", name=name)
            for text in values:
                self.value(attr, name, text)

    def modification(self, mode: str, attributes: Mapping[str, Sequence[str]]) -> None:
        """One ``spml:modification`` of ``mode`` holding a ``dsml:modification`` per
        attribute (DSMLv2 profile); a delete without values removes the attribute."""
        if not attributes:
            return
        modification = self.child(None, SPML, "modification", modificationMode=mode)
        for name, values in attributes.items():
            change = self.child(modification, DSML, "modification", name=name, operation=mode)
            for text in values:
                self.value(change, name, text)

    def to_bytes(self) -> bytes:
        from lxml import etree

        content: bytes = etree.tostring(self.envelope, xml_declaration=True, encoding="UTF-8")
        return content


class ReplyRefused(ValueError):
    """The reply is not a SOAP document idprov will read."""


def parse_xml(content: bytes) -> Any:
    """Parse a reply with a hardened parser: no DTD, no entities, no network, no huge
    trees. Raises :class:`ReplyRefused`."""
    from lxml import etree

    if not content.strip():
        raise ReplyRefused("the reply is empty")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        raise ReplyRefused(f"the reply is not XML ({exc})") from None
    if root.getroottree().docinfo.doctype:
        raise ReplyRefused("the reply carries a DTD, which SOAP 1.1 forbids")
    return root


def soap_body(root: Any) -> Any:
    """The one element in the SOAP 1.1 Body; ReplyRefused if there is no such thing."""
    if root.tag != f"{{{SOAP}}}Envelope":
        raise ReplyRefused(f"the reply is not a SOAP 1.1 envelope (root element {root.tag})")
    bodies = root.findall(f"{{{SOAP}}}Body")
    elements = [child for child in bodies[0] if isinstance(child.tag, str)] if bodies else []
    if len(bodies) != 1 or len(elements) != 1:
        raise ReplyRefused("the SOAP Body of the reply must hold exactly one element")
    return elements[0]


def fault_error(fault: Any, what: str, status: int) -> TargetError:
    """A SOAP 1.1 fault as an error: Server faults may pass, the others will not."""
    code, string, detail = (
        " ".join(_text(e) for e in children(fault, name)).strip()
        for name in ("faultcode", "faultstring", "detail")
    )
    message = f"{what}: SOAP fault {code or '(no faultcode)'}: {string}"
    if detail:
        message += f" ({' '.join(blank(detail).split())[:300]})"  # blanked, then cut
    server = code.rpartition(":")[2].startswith("Server")
    return TargetError(message, status=status, retryable=server, ambiguous=server)


def failure_error(reply: Any, what: str, status: int) -> TargetError:
    """A ``status="failure"`` response as the matching error, its text verbatim."""
    error = reply.get("error") or "failure"
    texts = [_text(m).strip() for m in children(reply, "errorMessage")]
    message = f"{what}: SPML {error}" + (f": {'; '.join(t for t in texts if t)}" if texts else "")
    if error == "alreadyExists":
        return RemoteConflict(message, status=status)
    if error == "noSuchIdentifier":
        return RemoteNotFound(message, status=status)
    return TargetError(message, status=status, hint=HINTS.get(error))


def reply_element(response: httpx.Response, what: str, credentials: str | None = None) -> Any:
    """The element in the SOAP Body of ``response``; raises for redirects, HTTP errors,
    SOAP faults and replies that are not SOAP. A refusal of idprov's credentials names
    ``credentials`` (:func:`~idprov.connectors.http.credentials_named`)."""
    status = response.status_code
    if 300 <= status < 400:
        raise TargetError(
            f"{what}: HTTP {status}: the endpoint redirects to {response.headers.get('Location')}",
            status=status,
            hint="set base_url to the SOAP endpoint itself (idprov does not follow redirects)",
        )
    try:
        element = soap_body(parse_xml(response.content))
    except ReplyRefused as exc:
        raise_for_status(response, what, reply_text(response) or None, credentials, gone=False)
        raise TargetError(
            f"{what}: {exc}: {reply_text(response, 80)!r}",
            status=status,
            retryable=True,
            ambiguous=True,
        ) from None
    if element.tag == f"{{{SOAP}}}Fault":
        raise fault_error(element, what, status)
    detail = " ".join(redact(_text(element), response).split())[:300] or None  # blanked, then cut
    gone = element.get("status") == "failure" and element.get("error") == "noSuchIdentifier"
    raise_for_status(response, what, detail, credentials, gone=gone)
    return element


def read_reply(
    response: httpx.Response, request: SpmlRequest, credentials: str | None = None
) -> Any:
    """The response element of a successful reply to ``request``; raises the matching
    TargetError for failures, pending replies and replies to something else (a 401
    naming ``credentials``)."""
    what, element = request.what, reply_element(response, request.what, credentials)
    expected = request.operation.removesuffix("Request") + "Response"
    if _local(element) != expected:
        raise TargetError(f"{what}: the target answered {_local(element)}, not {expected}")
    if element.get("requestID") not in (None, request.request_id):
        raise TargetError(
            f"{what}: the reply is for request {element.get('requestID')}, not "
            f"{request.request_id}: a proxy or the target mixed up replies",
            ambiguous=True,
        )
    outcome = element.get("status")
    if outcome == "success":
        return element
    if outcome == "failure":
        raise failure_error(element, what, response.status_code)
    if outcome == "pending":
        raise RemotePending(
            f"{what}: accepted but not carried out yet (SPML status pending, request "
            f"{request.request_id}); left in the outbox for the next `idprov sync`",
            status=response.status_code,
            ambiguous=True,
            accepted=True,
            hint="ask the target to run idprov's requests synchronously",
        )
    raise TargetError(
        f"{what}: the reply has no valid status ({outcome!r})", status=response.status_code
    )


def ids_of(pso: Any) -> list[str]:
    """The psoIDs of a ``pso`` element."""
    return [p.get("ID") for p in children(pso, "psoID") if p.get("ID")]


def pso_ids(element: Any) -> list[str]:
    """The ``psoID/@ID`` of every ``pso`` in a response."""
    return [pso_id for pso in children(element, "pso") for pso_id in ids_of(pso)]


def pso_data(pso: Any) -> dict[str, list[str]]:
    """A ``pso``'s DSML data: attribute name -> values."""
    out: dict[str, list[str]] = {}
    for data in children(pso, "data"):
        for attr in children(data, "attr"):
            out.setdefault(attr.get("name", ""), []).extend(
                _text(v) for v in children(attr, "value")
            )
    return out


def list_targets(reply: Any) -> dict[str, dict[str, Any]]:
    """targetID -> profile and capabilities, from a listTargetsResponse."""
    targets = {}
    for target in children(reply, "target"):
        capabilities = [
            c.get("namespaceURI", "")
            for group in children(target, "capabilities")
            for c in children(group, "capability")
        ]
        targets[target.get("targetID") or ""] = {
            "profile": target.get("profile"),
            "capabilities": capabilities,
        }
    return targets
