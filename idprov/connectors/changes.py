"""What an update changes, and what it keeps of the target's own values.

idprov sends a target only what changed since it last sent it, so that what an
administrator set there and idprov did not change stays. Connectors whose updates
are bodies of attribute paths (SCIM 2.0 and 1.1, Google's Directory API) share the
rules here: :func:`changes` between the body last sent and the body now wanted, and
:func:`with_other_items`, which keeps the target's items of a multi-valued attribute
(``phones``, ``emails``, ``organizations``) beside idprov's, for targets that replace
such an attribute whole.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

ItemKind = Callable[[Mapping[str, Any]], Hashable]
"""What makes an item of a multi-valued attribute idprov's or another's: its type."""

SKIPPED = ("schemas", "id")
"""Keys that are never attributes to change (SCIM's ``schemas`` and ``id``)."""


def item_type(item: Mapping[str, Any]) -> Hashable:
    """An item's ``type``, case-insensitive (SCIM's ``work``, ``mobile``...)."""
    return str(item.get("type")).lower()


def removed_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Attribute paths set in ``old`` and absent from ``new``: whole attributes, and
    sub-attributes of complex ones (``name.givenName``, ``urn:...:User:department``)."""
    removed: list[str] = []
    for key, before in old.items():
        if key in SKIPPED or not (isinstance(before, dict) or key not in new):
            continue
        value = new.get(key)
        if isinstance(before, dict) and (isinstance(value, dict) or key.startswith("urn:")):
            after = value if isinstance(value, dict) else {}
            sep = ":" if key.startswith("urn:") else "."
            removed += [f"{key}{sep}{k}" for k in before if k not in after]
        elif key not in new:
            removed.append(key)
    return removed


def changes(
    old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """What changed from ``old`` to ``new`` resource bodies: the values to replace (a
    complex attribute with only its changed sub-attributes) and the paths to remove
    (:func:`removed_paths`). What did not change is in neither, so it is left as the
    target has it."""
    old = dict(old or {})
    replace: dict[str, Any] = {}
    for key, value in new.items():
        if key in SKIPPED:
            continue
        before = old.get(key)
        if isinstance(value, dict):
            before = before if isinstance(before, dict) else {}
            changed = {k: v for k, v in value.items() if before.get(k) != v}
            if changed:
                replace[key] = changed
        elif before != value:
            replace[key] = value
    return replace, removed_paths(old, new)


def other_items(items: list[Any], ours: Any, kind: ItemKind = item_type) -> list[Any]:
    """The ``items`` (the target's) of no kind that ``ours`` (idprov's items, sent
    before or now) holds: an administrator's mobile number beside idprov's work one."""
    kinds = {kind(i) for i in ours or [] if isinstance(i, dict)}
    return [i for i in items if not (isinstance(i, dict) and kind(i) in kinds)]


def with_other_items(
    value: list[Any], have: list[Any], before: Any, kind: ItemKind = item_type
) -> list[Any]:
    """idprov's items ``value`` (``before``: those it sent last) followed by the
    target's items ``have`` of other kinds; idprov's lose ``primary`` when one of
    those is primary (a target allows one)."""
    others = other_items(have, [*(before or []), *value], kind)
    if any(isinstance(i, dict) and i.get("primary") for i in others):
        value = [{k: v for k, v in i.items() if k != "primary"} for i in value]
    return [*value, *others]
