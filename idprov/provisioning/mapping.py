"""From a local user to what a target should hold: attribute templates.

An identity provider maps target attributes to templates. A template is text with
``{placeholders}``: a claim name, or ``{UN}`` (username), ``{UD}`` (userstore
domain), ``{IDP}`` (identity provider name), ``{ID}`` (idprov's user id). Text
without placeholders is a constant. A template that is exactly one placeholder
keeps a multi-valued claim as a list; a template whose placeholders are all empty
yields no attribute at all.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Mapping
from typing import Any

from idprov.model import User

SPECIAL = ("UN", "UD", "IDP", "ID")
_FORMATTER = string.Formatter()


def placeholders(template: str) -> list[str]:
    """The placeholder names in ``template``; ValueError if it is malformed."""
    return [field for _, field, _, _ in _FORMATTER.parse(template) if field is not None]


def check_template(template: str, known: Iterable[str]) -> None:
    """ValueError naming a placeholder that is neither a claim nor UN/UD/IDP/ID."""
    allowed = {*known, *SPECIAL}
    for name in placeholders(template):
        if name not in allowed:
            raise ValueError(
                f"unknown placeholder {{{name}}} in {template!r} (claims, or UN, UD, IDP, ID)"
            )


def render(template: str, values: Mapping[str, Any]) -> Any:
    """The value of ``template`` for ``values``; None when nothing is left."""
    parts = list(_FORMATTER.parse(template))
    if len(parts) == 1 and parts[0][0] == "" and parts[0][1] is not None:
        value = values.get(parts[0][1])
        return value if value not in ("", [], None) else None
    out = []
    used_any = False
    for literal, field, _, _ in parts:
        out.append(literal)
        if field is not None:
            value = values.get(field)
            if isinstance(value, list):
                value = ", ".join(value)
            if value:
                used_any = True
                out.append(str(value))
    text = "".join(out).strip()
    if not text or (not used_any and any(p[1] is not None for p in parts)):
        return None
    return text


def user_values(user: User, idp_name: str) -> dict[str, Any]:
    return {**user.claims, "UN": user.username, "UD": user.domain, "IDP": idp_name, "ID": user.id}


def map_attributes(templates: Mapping[str, str | None], values: Mapping[str, Any]) -> dict:
    """Target attribute -> value for every template that yields something."""
    out: dict[str, Any] = {}
    for target, template in templates.items():
        if template is None:
            continue
        value = render(template, values)
        if value is not None:
            out[target] = value
    return out


def fingerprint(data: Any) -> str:
    """A stable hash of what would be sent, to skip calls that change nothing."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
