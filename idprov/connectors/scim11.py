"""SCIM 1.1 outbound connector (draft-scim-core-schema-01, draft-scim-api-01).

The same engine behaviour as SCIM 2.0, with 1.1's wire format: one core schema
``urn:scim:schemas:core:1.0`` for Users and Groups, ``application/json``,
``/ServiceProviderConfigs``, PATCH as a partial resource (attributes to drop listed
in ``meta.attributes``; the items of a multi-valued attribute are added, those to go
sent with ``"operation": "delete"``: members, e-mails, phone numbers), errors as
``{"Errors": [{"description", "code"}]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from idprov.connectors.base import MappingInvalid
from idprov.connectors.changes import changes, other_items
from idprov.connectors.scim2 import Scim2Connector
from idprov.connectors.scim_dialects import Scim2Options
from idprov.connectors.scim_wire import error_detail, find_key, removed_paths, scim2_error

if TYPE_CHECKING:
    import httpx

CORE = "urn:scim:schemas:core:1.0"
ENTERPRISE = "urn:scim:schemas:extension:enterprise:1.0"


def scim11_error(data: Any) -> str:
    """A SCIM 1.1 error reply's message: ``Errors[].description`` (else 2.0's form)."""
    errors = data.get("Errors") if isinstance(data, dict) else None
    if isinstance(errors, list) and errors:
        return "; ".join(str(e.get("description", e)) for e in errors if isinstance(e, dict))
    return scim2_error(data)


def _deleted(item: Mapping[str, Any]) -> dict[str, Any]:
    """A 1.1 PATCH item removing ``item`` from its multi-valued attribute."""
    return {**{k: v for k, v in item.items() if k in ("type", "value")}, "operation": "delete"}


class Scim11Connector(Scim2Connector):
    """Provision to a SCIM 1.1 service provider."""

    name = "scim11"
    description = "SCIM 1.1 (urn:scim:schemas:core:1.0): Users and Groups"
    Options = Scim2Options
    default_attributes: ClassVar[Mapping[str, str]] = {
        "displayName": "{display_name}",
        "name.givenName": "{given_name}",
        "name.familyName": "{family_name}",
        'emails[type eq "work"].value': "{email}",
        'phoneNumbers[type eq "work"].value': "{phone_number}",
        "title": "{title}",
        "locale": "{locale}",
        "timezone": "{timezone}",
        "externalId": "{ID}",
        f"{ENTERPRISE}:employeeNumber": "{employee_number}",
        f"{ENTERPRISE}:department": "{department}",
        f"{ENTERPRISE}:organization": "{organization}",
        f"{ENTERPRISE}:costCenter": "{cost_center}",
    }
    """draft-scim-core-schema-01's core User and enterprise extension: the scim2
    mapping, attribute for attribute."""
    media_type = "application/json"
    user_schema = CORE
    group_schema = CORE
    config_path = "/ServiceProviderConfigs"
    bulk_path = None  # SCIM 1.1 bulk differs; users go one by one

    @classmethod
    def check_mapping(cls, idp: Any, options: Any) -> None:
        """Dialects describe SCIM 2.0 services: a 1.1 target has none."""
        if options.dialect != "rfc":
            raise MappingInvalid(
                f"dialect {options.dialect!r} describes a SCIM 2.0 service; the scim11 "
                "connector takes none",
                hint="remove dialect from its options, or use connector: scim2",
            )
        super().check_mapping(idp, options)

    def error_detail(self, response: httpx.Response) -> str | None:
        return error_detail(response, scim11_error)

    def _with_others(
        self, remote_id: str, old: Mapping[str, Any] | None, new: Mapping[str, Any], what: str
    ) -> Mapping[str, Any]:
        """``new`` with, in each multi-valued attribute the change touches, the items
        to remove marked ``"operation": "delete"`` (first) before idprov's: a 1.1 PATCH
        adds the items it names to those the target holds (draft-scim-api-01, 3.3.2).
        To remove are the items the target holds of the types idprov sends or sent
        whose value is no longer wanted (read from the target, only when such an
        attribute changes; items of other types, an administrator's, stay unsent)."""
        replace, remove = changes(old, new)
        before = dict(old or {})
        touched = [
            k for k in [*replace, *remove] if isinstance(replace.get(k, before.get(k)), list)
        ]
        if not touched:
            return new
        current = self._current(remote_id, what)
        out = dict(new)
        for key in touched:
            wanted = list(new.get(key) or [])
            values = {item.get("value") for item in wanted if isinstance(item, dict)}
            held = find_key(current, key) or []
            theirs = other_items(held, [*(before.get(key) or []), *wanted])
            gone = [
                _deleted(item)
                for item in held
                if isinstance(item, dict) and item not in theirs and item.get("value") not in values
            ]
            out[key] = [*gone, *wanted]
        return out

    def patch_body(
        self, old: Mapping[str, Any] | None, new: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """A partial resource: what changed, and in ``meta.attributes`` what is no
        longer sent, but multi-valued attributes, whose items go as deletes
        (:meth:`_with_others`): clearing one would take the target's other items."""
        old = dict(old or {})
        body: dict[str, Any] = {"schemas": list(new.get("schemas", [CORE]))}
        for key, value in new.items():
            if key not in ("schemas", "id") and old.get(key) != value and value != []:
                body[key] = value
        dropped = [p for p in removed_paths(old, new) if not isinstance(old.get(p), list)]
        if dropped:
            body["meta"] = {"attributes": dropped}
        if len(body) == 1:
            return None
        return body

    def members_patch(self, add: Sequence[str], remove: Sequence[str]) -> dict[str, Any]:
        members = [{"value": m} for m in add]
        members += [{"value": m, "operation": "delete"} for m in remove]
        return {"schemas": [CORE], "members": members}

    def rename_group(self, remote_id: str, display_name: str) -> None:
        what = f"rename group {remote_id} to {display_name}"
        if self.http.supports_patch():
            self.http.request(
                "PATCH",
                f"/Groups/{remote_id}",
                what,
                body={"schemas": [CORE], "displayName": display_name},
            )
        else:
            super().rename_group(remote_id, display_name)
