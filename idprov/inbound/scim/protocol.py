"""scim2-server's protocol steps as idprov serves them.

:class:`IdprovScimService` clears PATCH values of what idprov does not keep (see
:func:`~idprov.inbound.scim.schema.drop_ignored`) and drops the schema URNs clients
add to documents (:func:`~.schema.drop_client_schemas`).

:class:`IdprovScimHandler` answers the creation of a User from the document idprov
stored, instead of validating that document into a model, copying it to publish it
and dumping it again: those three steps were a third of the CPU of a create at
`idprov serve` (py-spy on 8 clients creating 2,000 users). The reply is the same one
(``tests/test_serve_scim.py`` checks a 201's body against a GET of the same user,
for the bodies Entra and Okta document). Groups, and creations in a Bulk request,
take scim2-server's own path.

``active`` is never cleared: a PUT that leaves it out keeps it (:func:`_keeping_active`),
and a PATCH that would leave a user without it (``remove``, or ``replace`` with null)
is refused, 400 ``invalidValue`` (:meth:`IdprovScimService.apply_patch`). A user
without the claim is active, so clearing it enabled a disabled user, while a PUT kept
it; and keeping it against the PATCH would answer 200 with ``active`` still there,
where RFC 7644 §3.5.2.2 says a removed attribute is unassigned. Entra disables with
``replace active false``, Okta with that or a PUT: neither removes it.

A PATCH, PUT or DELETE the client sent without a condition (``If-Match``, ``If-None-Match``)
that met another request's change of the same resource between its read and its write
(another `idprov serve` process on the same store) is applied again to the new version,
up to :data:`REAPPLY` times, instead of answering 412: the client asked for no
precondition, and Entra and Okta do not send a 412 again. With a condition, the 412
stands.
"""

from __future__ import annotations

import re
from datetime import datetime
from http import HTTPStatus
from typing import Any, cast

from scim2_models import (
    Error,
    InvalidValueException,
    PreconditionFailedException,
    Resource,
    ResourceType,
)
from scim2_server.conditions import Conditions
from scim2_server.errors import UnsupportedMediaTypeException
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.routing import Operation
from scim2_server.service import ScimService, is_json_media_type

from idprov.inbound.scim.filters import trimmed_literals
from idprov.inbound.scim.mapping import ENTERPRISE
from idprov.inbound.scim.schema import drop_client_schemas, drop_ignored
from idprov.inbound.scim.storage import IdprovStorage

ACTIVE_CLEARED = (
    "active cannot be removed or set to null: a user is enabled or disabled. To disable "
    'the user, replace it with false ({"op": "replace", "path": "active", "value": false}); '
    "to enable it, with true"
)
REAPPLY = 20
"""How many times an unconditional PATCH, PUT or DELETE is applied again to a resource that
another request changed under it (each try reads the new version) before the 412."""


class IdprovScimService(ScimService):
    """scim2-server's protocol steps, with the documents idprov reads cleaned (see the
    module docstring), and errors in a client's words (:func:`readable`)."""

    @staticmethod
    def error_of(exception: Exception) -> Error:
        error = ScimService.error_of(exception)
        if error.detail:
            if error.scim_type == "invalidValue" and UNDECLARED.match(error.detail):
                error.scim_type = "invalidSyntax"  # as a POST or PUT with it
            error.detail = readable(error.detail)
        return error

    @staticmethod
    def ensure_json(content_type: str | None) -> None:
        if content_type and not is_json_media_type(content_type):
            raise UnsupportedMediaTypeException(
                detail=f"the request body is {content_type.split(';')[0].strip()!r}: send "
                "JSON, as application/scim+json (or application/json)"
            )

    def apply_patch(
        self, current: Resource[Any], patch_op: Any, conditions: Conditions
    ) -> Resource[Any] | None:
        """scim2-server's PATCH, refused when it would leave a user that has ``active``
        without it (see the module docstring); nothing is written then."""
        active = getattr(current, "active", None)
        patch_op = _trimmed_paths(patch_op)
        patched = super().apply_patch(current, patch_op, conditions)
        if active is not None and patched is not None and getattr(patched, "active", None) is None:
            raise InvalidValueException(detail=ACTIVE_CLEARED)
        return patched

    def read_patch(self, resource_type: Any, body: bytes, content_type: str | None) -> Any:
        return super().read_patch(
            resource_type, drop_ignored(body, resource_type.name), content_type
        )

    def read_creation(self, resource_type: Any, body: bytes, content_type: str | None) -> Any:
        return super().read_creation(resource_type, drop_client_schemas(body), content_type)

    def read_replacement(self, resource_type: Any, body: bytes, content_type: str | None) -> Any:
        return super().read_replacement(resource_type, drop_client_schemas(body), content_type)

    def user_creation_response(
        self, base_url: str, resource_type: Any, doc: dict[str, Any]
    ) -> ScimResponse:
        """The 201 of a created user from its stored document: what
        :meth:`creation_response` makes of the same user (its location, references
        as URLs, timestamps as scim2-models writes them, the ETag)."""
        location = self.resource_location(base_url, resource_type, doc["id"])
        meta = {**doc["meta"], "location": location}
        for stamp in ("created", "lastModified"):
            if stamp in meta:
                meta[stamp] = _as_published(meta[stamp])
        if not self.etag_supported:
            meta.pop("version", None)
        body = {**doc, "meta": meta}
        if "groups" in body:
            body["groups"] = [self._located(base_url, group) for group in body["groups"]]
        manager = body.get(ENTERPRISE, {}).get("manager")
        if manager is not None:
            body[ENTERPRISE] = {**body[ENTERPRISE], "manager": self._located(base_url, manager)}
        headers = {"Content-Location": location, "Location": location}
        if meta.get("version"):
            headers["ETag"] = meta["version"]
        return ScimResponse(HTTPStatus.CREATED, body, headers)

    def _located(self, base_url: str, value: dict[str, Any]) -> dict[str, Any]:
        if "$ref" not in value:
            return value
        return {**value, "$ref": self.reference_location(base_url, value["$ref"])}


class IdprovScimHandler(ScimHandler):
    """scim2-server's handler, answering a User's creation from its stored document
    (see the module docstring)."""

    service: IdprovScimService
    storage: IdprovStorage

    def create(self, request: ScimRequest) -> ScimResponse:
        with self.service.provider:
            target = self.service.route(request, Operation.create)
            resource_type = self.service.resource_type_at(cast(str, target.endpoint))
        if resource_type.name != "User":
            return super().create(request)
        with self.service.provider:
            self.service.authorize(request, target, resource_type)
            resource = self.service.read_creation(
                resource_type, request.body, request.header("Content-Type")
            )
            with self.storage.operation():
                doc = self.storage.create_user_document(resource)
            return self.service.user_creation_response(request.base_url, resource_type, doc)

    def patch_resource(
        self,
        resource_type: ResourceType,
        resource_id: str,
        patch_op: Any,
        conditions: Conditions,
    ) -> Resource[Any]:
        tries = 0
        while True:
            try:
                return super().patch_resource(resource_type, resource_id, patch_op, conditions)
            except PreconditionFailedException:
                tries += 1
                if _conditional(conditions) or tries > REAPPLY:
                    raise

    def replace_resource(
        self,
        resource_type: ResourceType,
        current: Resource[Any],
        replacement: Resource[Any],
        conditions: Conditions,
    ) -> Resource[Any]:
        tries = 0
        while True:
            try:
                return super().replace_resource(
                    resource_type, current, _keeping_active(current, replacement), conditions
                )
            except PreconditionFailedException:
                tries += 1
                if _conditional(conditions) or tries > REAPPLY:
                    raise
                current = self.storage.get(resource_type, cast(str, current.id))

    def delete_resource(
        self, resource_type: ResourceType, resource_id: str, conditions: Conditions
    ) -> None:
        tries = 0
        while True:
            try:
                return super().delete_resource(resource_type, resource_id, conditions)
            except PreconditionFailedException:
                tries += 1
                if _conditional(conditions) or tries > REAPPLY:
                    raise


def _keeping_active(current: Resource[Any], replacement: Resource[Any]) -> Resource[Any]:
    """A PUT that leaves ``active`` out keeps it as ``current`` (the version it is
    applied to) has it: cleared, a disabled user came back."""
    active = getattr(current, "active", None)
    if active is None or getattr(replacement, "active", None) is not None:
        return replacement
    return replacement.model_copy(update={"active": active})


def _conditional(conditions: Conditions) -> bool:
    """Whether the client made its request conditional (then a 412 is its answer)."""
    return conditions.if_match is not None or conditions.if_none_match is not None


UNDECLARED = re.compile(r"^'[^']*' is not declared by the resource schema$")
"""scim2-models' error for an unknown attribute in a PATCH value object: its scimType
is made ``invalidSyntax``, as the unknown attribute of a POST or PUT gets."""
PYDANTIC = re.compile(r"^\d+ validation errors? for [^\n]*\n")
PARAMETERS = {
    "excluded_attributes": "excludedAttributes",
    "sort_by": "sortBy",
    "sort_order": "sortOrder",
    "start_index": "startIndex",
}
"""Query parameters as the validation of scim2-models names them -> as a client sends them."""


def readable(detail: str) -> str:
    """An error's detail without the validation library's report around it: pydantic's
    "1 validation error for User[EnterpriseUser]\\ntitle\\n  Input should be a valid
    string [type=string_type]\\n    For further information visit https://..." becomes
    "title: Input should be a valid string", and parameters are named as sent."""
    if PYDANTIC.match(detail):
        problems, where = [], ""
        for line in detail.splitlines()[1:]:
            if not line.startswith(" "):
                where = line.strip()
            elif line.startswith("  ") and not line.startswith("    "):
                message = line.strip().split(" [type=", 1)[0]
                problems.append(f"{where}: {message}" if where else message)
        detail = "; ".join(problems) or detail.splitlines()[0]
    detail = detail.removeprefix("Value error, ")
    if detail == "the value written to '' must be an object":  # a PATCH operation's
        detail = (
            "an operation without a path writes attributes: its value must be an object of"
            ' them ({"title": "Lead", "active": false})'
        )
    for name, sent in PARAMETERS.items():
        detail = detail.replace(f"'{name}'", f"'{sent}'")
    return detail


def _as_published(stamp: str) -> str:
    """An ISO 8601 UTC time as scim2-models writes a datetime (microseconds, ``Z``)."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    text = moment.isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def _trimmed_paths(patch_op: Any) -> Any:
    """``patch_op`` with its paths' value filters comparing trimmed values where the
    attribute is kept trimmed (:func:`~idprov.inbound.scim.filters.trimmed_literals`):
    ``remove emails[value eq " g@example.com "]`` removes the e-mail the client sent
    as `` g@example.com `` (kept as ``g@example.com``); it matched nothing, and the
    204 said it was gone."""
    operations = []
    for operation in patch_op.operations or []:
        path = operation.path
        if path is not None and path.ast is not None:
            spelled = str(trimmed_literals(path.ast))
            if spelled != str(path.ast):
                operation = operation.model_copy(update={"path": type(path)(spelled)})
        operations.append(operation)
    return patch_op.model_copy(update={"operations": operations})
