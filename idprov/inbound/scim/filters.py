"""SCIM filters on Users as :class:`~idprov.model.Condition`s the userstores check
themselves (indexed SQL, LDAP filters), so that a search reads the users that may
match instead of every user.

The translation may only widen: a part it cannot express (``ne``, ``not``, an
attribute with no claim, a sub-attribute filter on ``type``) is dropped from an
``and`` and makes an ``or`` unrestricted. scim2-models then checks every candidate
exactly, so what a client gets is the filter's answer either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from scim2_models import InvalidFilterException
from scim2_models.path import AttrPath, Comparison, LogicalExpr, Not, Present, ValuePath

from idprov.inbound.scim.mapping import ENTERPRISE, ENTERPRISE_ATTRIBUTES, NAME, SIMPLE
from idprov.model import Condition
from idprov.userstores.policy import trimmed

OPS = {
    **{op: op for op in ("eq", "sw", "ew", "co", "ge", "le")},
    "gt": "ge",
    "lt": "le",
}
"""SCIM operator -> the store's (``gt`` widened to ``ge``, ``lt`` to ``le``)."""

MULTI = {
    "emails": ("email", "home_email", "emails"),
    "phonenumbers": ("phone_number", "mobile"),
}
"""Multi-valued attributes -> the claims holding their values."""

ExternalLookup = Callable[[str], Sequence[str]]
"""An externalId -> the local ids carrying it (for the acting application)."""

MOST_TERMS = 200
"""The most comparisons a filter may make (``a eq 1 or a eq 2 ...``): more than any
client's lookup needs, few enough that checking each candidate against it stays cheap."""


def check_filter(ast: Any) -> None:
    """Refuse (400 ``invalidFilter``) a filter no store can be asked: more than
    :data:`MOST_TERMS` comparisons, or a value that is not Unicode text (a lone UTF-16
    surrogate such as ``"\\ud800"``, which a filter's JSON-style escapes can spell but
    no database or directory can hold)."""
    terms = 0
    nodes = [ast]
    while nodes:
        node = nodes.pop()
        if isinstance(node, LogicalExpr):
            nodes.extend(node.terms)
        elif isinstance(node, Not):
            nodes.append(node.expr)
        elif isinstance(node, ValuePath):
            nodes.append(node.val_filter)
        elif isinstance(node, Comparison | Present):
            terms += 1
            value = getattr(node, "value", None)
            if isinstance(value, str) and not _is_text(value):
                raise InvalidFilterException(
                    detail=f"the filter compares {node.attr_path} to a value that is not "
                    "Unicode text (a lone surrogate escape such as \\ud800); "
                    "escape characters outside the Basic Multilingual Plane as a pair"
                )
    if terms > MOST_TERMS:
        raise InvalidFilterException(
            detail=f"the filter makes {terms} comparisons, more than the {MOST_TERMS} "
            "idprov takes; split it into several requests"
        )


UNTRIMMED_VALUES = frozenset({"members", "groups"})
"""Multi-valued attributes whose values are ids, kept as sent (not claims)."""


def trimmed_literals(node: Any) -> Any:
    """``node`` (a filter or a PATCH path's syntax tree) comparing trimmed values
    where idprov keeps the attribute trimmed (claims: ``emails[value eq " a@x "]``
    is ``emails[value eq "a@x"]``), so that a client selects a value by the spelling
    it sent. Names, ids and ``externalId`` are kept as sent and compared so."""
    if isinstance(node, ValuePath):
        if node.attr_path.attr.lower() in UNTRIMMED_VALUES:
            return node
        return dataclasses.replace(node, val_filter=_trim_all(node.val_filter))
    if isinstance(node, LogicalExpr):
        return dataclasses.replace(node, terms=tuple(trimmed_literals(t) for t in node.terms))
    if isinstance(node, Not):
        return dataclasses.replace(node, expr=trimmed_literals(node.expr))
    if isinstance(node, Comparison) and _attribute(node.attr_path) in CLAIMS:
        return _trim_all(node)
    return node


TIMES = frozenset(("meta.created", "meta.lastmodified"))
"""The time attributes of every resource (lower case)."""


def zoned_times(node: Any) -> Any:
    """``node`` (a filter's syntax tree) with each time it compares ``meta.created``
    or ``meta.lastModified`` to written in UTC with its zone: a time without one
    (``"2026-12-01T08:00:00"``, or a date, ``"2026-12-01"``) is taken as UTC, as idprov
    keeps and serves every time. scim2-models compared such a time with the
    resources' zoned ones as never equal, never before or after: the filter matched
    nothing, with a 200. A value that is no time is left for scim2-models to refuse
    (400 ``invalidFilter``)."""
    if isinstance(node, LogicalExpr):
        return dataclasses.replace(node, terms=tuple(zoned_times(t) for t in node.terms))
    if isinstance(node, Not):
        return dataclasses.replace(node, expr=zoned_times(node.expr))
    if not isinstance(node, Comparison) or not isinstance(node.value, str):
        return node
    name = _attribute(node.attr_path)
    if name not in TIMES and not any(name.endswith(f":{t}") for t in TIMES):
        return node
    try:
        moment = datetime.fromisoformat(node.value.strip().replace("Z", "+00:00"))
    except ValueError:
        return node
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return dataclasses.replace(node, value=moment.isoformat().replace("+00:00", "Z"))


_WHOLE_VALUE = frozenset(("eq", "ne", "gt", "ge", "lt", "le"))
"""The comparisons of a whole value, which a trimmed value answers as the spelling sent;
``co``, ``sw`` and ``ew`` look for a part, spaces included (``co " of "`` is not ``co
"of"``, which "Officer" holds)."""


def _trim_all(node: Any) -> Any:
    """Every whole value a filter inside a claim's value selection compares, trimmed as
    the core trims what it keeps (:func:`~idprov.userstores.policy.trimmed`): the
    same rule, so a value is found by the spelling it was sent with."""
    if isinstance(node, Comparison) and isinstance(node.value, str):
        if str(node.op).lower() not in _WHOLE_VALUE:
            return node
        return dataclasses.replace(node, value=trimmed(node.value))
    if isinstance(node, LogicalExpr):
        return dataclasses.replace(node, terms=tuple(_trim_all(t) for t in node.terms))
    if isinstance(node, Not):
        return dataclasses.replace(node, expr=_trim_all(node.expr))
    return node


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def user_condition(
    ast: Any, external: ExternalLookup, prefixed: Sequence[str] = ()
) -> Condition | None:
    """The condition of a Users filter's syntax tree (None: no restriction).
    ``prefixed``: the userstores whose users the application sees as ``DOMAIN/name``
    (see :func:`_username`)."""
    if isinstance(ast, LogicalExpr):
        terms = [user_condition(t, external, prefixed) for t in ast.terms]
        if ast.op.value == "and":
            kept = tuple(t for t in terms if t is not None)
            return Condition("and", terms=kept) if kept else None
        if any(t is None for t in terms):
            return None
        return Condition("or", terms=tuple(t for t in terms if t is not None))
    if isinstance(ast, Present):
        return _present(ast.attr_path)
    if isinstance(ast, Comparison):
        if _attribute(ast.attr_path) == "username" and isinstance(ast.value, str):
            return _username(ast.op.value, ast.value, prefixed)
        return _comparison(ast.attr_path, ast.op.value, ast.value, external)
    if isinstance(ast, ValuePath):
        return _value_path(ast)
    return None  # not, and what else a future grammar adds


def _comparison(path: AttrPath, op: str, value: Any, external: ExternalLookup) -> Condition | None:
    if isinstance(value, bool) and _attribute(path) == "active" and op == "eq":
        # stores compare lower-cased (TRUE is true); an inactive user's value may be
        # any that cannot be read, so false narrows only to those holding the claim
        return Condition("eq", "claim:active", "true") if value else Condition("pr", "claim:active")
    if not isinstance(value, str) or op not in OPS:
        return None
    name = _attribute(path)
    if name == "externalid" and op == "eq":
        return Condition("in", "id", values=tuple(external(value)))
    if name == "id" and op == "eq":
        return Condition("eq", "id", value)
    if name in ("meta.lastmodified", "meta.created"):
        return Condition(
            OPS[op], name.removeprefix("meta.").replace("lastmodified", "modified"), value
        )
    if op in ("ge", "gt", "le", "lt"):
        return None  # string order differs between stores and scim2-models
    return _on(name, lambda attribute: Condition(op, attribute, value))


def _username(op: str, value: str, prefixed: Sequence[str]) -> Condition | None:
    """A ``userName`` comparison as the stores can check it on their bare names. The
    filter compares the names as GET returns them (RFC 7644 3.4.2.2): bare in the
    application's userstore, ``DOMAIN/name`` in its others (``prefixed``). A value
    with a ``/`` may be a bare name's, or ``DOMAIN/`` and a name's beginning: both
    are asked (the exact check drops the wrong ones). A ``sw`` or ``co`` value without
    one that is part of a ``DOMAIN/`` prefix may match any user of that domain."""
    if op not in ("eq", "sw", "ew", "co"):
        return None  # string order differs between stores and scim2-models
    if not prefixed:
        return Condition(op, "username", value)
    _, slash, after = value.partition("/")
    if slash and not after and op != "eq":
        return None  # "DOMAIN/" starts (or "/" is in) every name of a domain
    if slash:
        bare = Condition(op, "username", after)
        return Condition("or", terms=(Condition(op, "username", value), bare))
    folded = value.casefold()
    prefixes = [f"{d}/".casefold() for d in prefixed]
    if op == "sw" and any(p.startswith(folded) for p in prefixes):
        return None
    if op == "co" and any(folded in p for p in prefixes):
        return None
    return Condition(op, "username", value)


def _present(path: AttrPath) -> Condition | None:
    return _on(_attribute(path), lambda attribute: Condition("pr", attribute))


def _value_path(node: ValuePath) -> Condition | None:
    """``emails[type eq "work" and value eq "x"]``: what it says of ``value``."""
    holders = MULTI.get(node.attr_path.attr.lower())
    if holders is None:
        return None
    inner = _values_of(node.val_filter)
    if inner is None:
        return None
    op, value = inner
    return Condition("or", terms=tuple(Condition(op, f"claim:{c}", value) for c in holders))


def _values_of(node: Any) -> tuple[str, str] | None:
    """(op, value) of the ``value eq ...`` inside a value filter, if it is there."""
    if isinstance(node, Comparison) and node.attr_path.attr.lower() == "value":
        op = node.op.value
        if op in ("eq", "sw", "ew", "co") and isinstance(node.value, str):
            return op, node.value
        return None
    if isinstance(node, LogicalExpr) and node.op.value == "and":
        found = [v for v in (_values_of(t) for t in node.terms) if v is not None]
        return found[0] if found else None
    return None


def _attribute(path: AttrPath) -> str:
    """``name.givenName``, enterprise attributes by bare name, all lower case."""
    name = path.attr if path.sub_attr is None else f"{path.attr}.{path.sub_attr}"
    if path.uri and path.uri.lower() != ENTERPRISE.lower():
        return f"{path.uri}:{name}".lower()
    return name.lower()


CLAIMS = {
    **{k.lower(): v for k, v in SIMPLE.items()},
    **{f"name.{k}".lower(): v for k, v in NAME.items()},
    **{k.lower(): v for k, v in ENTERPRISE_ATTRIBUTES.items()},
}
"""Single-valued SCIM attributes (lower case) -> their claims."""


def _on(name: str, make: Callable[[str], Condition]) -> Condition | None:
    """The condition on the store attribute(s) behind SCIM attribute ``name``."""
    if name == "username":
        return make("username")
    if name in CLAIMS:
        return make(f"claim:{CLAIMS[name]}")
    multi = name.removesuffix(".value")
    if multi in MULTI:
        return Condition("or", terms=tuple(make(f"claim:{c}") for c in MULTI[multi]))
    return None
