"""The SCIM 2.0 service provider behind `idprov serve` (RFC 7643/7644).

The protocol itself (routing, validation, filters, PATCH, Bulk, ETag preconditions,
error bodies) is scim2-server's provider core, the field's own library, which the
scim2-tester compliance checker is written against; idprov supplies what it cannot
know: the schemas of what idprov stores (:mod:`.schema`), the mapping between SCIM
attributes and claims (:mod:`.mapping`), and a storage over the core service
(:mod:`.storage`). :mod:`idprov.inbound.scim_server` puts them behind ASGI.

Importing this package imports pydantic and scim2-models: only `serve` does.
"""
