"""From a local user to what a target should hold: attribute templates.

An identity provider maps target attributes to templates. A template is text with
``{placeholders}``: a claim name, or ``{UN}`` (username), ``{UD}`` (userstore
domain), ``{IDP}`` (identity provider name), ``{ID}`` (idprov's user id). Text
without placeholders is a constant. A template that is exactly one placeholder
keeps a multi-valued claim as a list; a template whose placeholders are all empty
yields no attribute at all.

A template that starts with ``=`` is an expression (lower, normalize, join,
coalesce, switch, unique, … see :mod:`idprov.provisioning.expressions`, imported
only when a configuration has one). Every template is compiled once per process,
and an identity provider's whole mapping once per run (:func:`mapping_for`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from idprov.connectors.base import Account
from idprov.errors import OutboundError
from idprov.model import User

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.connectors.base import Connector

SPECIAL = ("UN", "UD", "IDP", "ID")
_FORMATTER = string.Formatter()


class Compiled(Protocol):
    """A compiled template: its value for a user's values (None: no attribute)."""

    @property
    def unique(self) -> bool: ...

    def __call__(self, values: Mapping[str, Any]) -> Any: ...

    def unique_values(self, values: Mapping[str, Any]) -> Iterator[str]: ...


class Placeholders:
    """A ``{placeholder}`` template, parsed once."""

    unique = False

    def __init__(self, template: str) -> None:
        self.parts = [(lit, name) for lit, name, _, _ in _FORMATTER.parse(template)]
        self.names = [name for _, name in self.parts if name is not None]
        only = len(self.parts) == 1 and self.parts[0][0] == "" and self.parts[0][1] is not None
        self.single = self.parts[0][1] if only else None

    def __call__(self, values: Mapping[str, Any]) -> Any:
        if self.single is not None:
            value = values.get(self.single)
            return value if value not in ("", [], None) else None
        out = []
        used_any = False
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                value = values.get(name)
                if isinstance(value, list):
                    value = ", ".join(value)
                if value:
                    used_any = True
                    out.append(str(value))
        text = "".join(out).strip()
        if not text or (not used_any and self.names):
            return None
        return text

    def unique_values(self, values: Mapping[str, Any]) -> Iterator[str]:
        return iter(())


@lru_cache(maxsize=4096)
def compile_template(template: str) -> Compiled:
    """The compiled form of ``template``; ValueError (file-free) if it is malformed."""
    if template.startswith("="):
        from idprov.provisioning.expressions import compile_expression

        return compile_expression(template[1:])
    return Placeholders(template)


def placeholders(template: str) -> list[str]:
    """The placeholder names in ``template``; ValueError if it is malformed."""
    return [field for _, field, _, _ in _FORMATTER.parse(template) if field is not None]


def check_template(template: str, known: Iterable[str]) -> None:
    """ValueError naming what is wrong: a malformed expression, or a placeholder or
    name that is neither a claim nor UN/UD/IDP/ID."""
    if template.startswith("="):
        from idprov.provisioning.expressions import ExpressionError, check_names

        try:
            check_names(compile_template(template), known)  # type: ignore[arg-type]
        except ExpressionError as exc:
            raise exc.shifted(1) from None  # columns count the "=" as written
        return
    allowed = {*known, *SPECIAL}
    for name in placeholders(template):
        if name not in allowed:
            raise ValueError(
                f"unknown placeholder {{{name}}} in {template!r} (claims, or UN, UD, IDP, ID)"
            )


def domain_dropped(idp: IdentityProviderConfig, domains: Iterable[str]) -> str | None:
    """A warning when ``idp``'s username template keeps a user's username (``{UN}``)
    but neither its userstore's domain (``{UD}``) nor its id (``{ID}``) while users
    of several userstores (``domains``) go there: users of one username in two of
    them map to one target userName, and the second one's create is refused (one
    account is one user's). Expressions are not judged."""
    domains = list(domains)
    if len(domains) < 2 or idp.username.startswith("="):
        return None
    names = set(placeholders(idp.username))
    if "UN" not in names or names & {"UD", "ID"}:
        return None
    return (
        f"identity provider {idp.name}: username {idp.username!r} drops the userstore "
        f"domain, so users of one username in two of {', '.join(domains)} map to one "
        "account there and the second is refused; if usernames may repeat across "
        "userstores, keep the domain (username: '{UD}/{UN}')"
    )


def render(template: str, values: Mapping[str, Any]) -> Any:
    """The value of ``template`` for ``values``; None when nothing is left."""
    return compile_template(template)(values)


def user_values(user: User, idp_name: str) -> dict[str, Any]:
    return {**user.claims, "UN": user.username, "UD": user.domain, "IDP": idp_name, "ID": user.id}


def map_attributes(templates: Mapping[str, str | None], values: Mapping[str, Any]) -> dict:
    """Target attribute -> value for every template that yields something."""
    out: dict[str, Any] = {}
    for target, template in templates.items():
        if template is None:
            continue
        value = compile_template(template)(values)
        if value is not None:
            out[target] = value
    return out


USER_NAME = "userName"
"""The key under which a unique() user name waits in :attr:`Account.unique`."""


@dataclass(frozen=True)
class UserMapping:
    """An identity provider's whole mapping, compiled: user name and attributes."""

    username: Compiled
    attributes: tuple[tuple[str, Compiled], ...]
    plain: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = field(
        init=False, repr=False, compare=False
    )
    """The attributes without unique(), as plain functions (the hot loop's form)."""
    uniques: tuple[tuple[str, Compiled], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = tuple((t, _evaluator(c)) for t, c in self.attributes if not c.unique)
        object.__setattr__(self, "plain", plain)
        object.__setattr__(self, "uniques", tuple((t, c) for t, c in self.attributes if c.unique))

    def account(self, user: User, idp_name: str, previous: Mapping[str, Any] | None) -> Account:
        """``user`` as the target should hold it. A unique() value already sent
        (``previous``: the ledger's sent form) is kept; else its candidates wait in
        ``Account.unique`` and the first stands in until :func:`resolve_unique`."""
        values = user_values(user, idp_name)
        out: dict[str, Any] = {}
        for target, evaluate in self.plain:  # the hot loop of every sync
            value = evaluate(values)
            if value is not None and value != "" and value != []:
                out[target] = value
        pending: dict[str, tuple[str, ...]] = {}
        before = (previous or {}).get("attributes") or {}
        for target, compiled in self.uniques:
            value = _unique_value(compiled, values, before.get(target), target, pending)
            if value is not None:
                out[target] = value
        old_name = (previous or {}).get("userName")
        if self.username.unique:
            name = _unique_value(self.username, values, old_name, USER_NAME, pending)
        else:
            name = self.username(values)
        return Account(user.id, str(name or user.username), out, True, unique=pending)


def _evaluator(compiled: Compiled) -> Callable[[Mapping[str, Any]], Any]:
    """The plain function behind a compiled template (an expression's own closure)."""
    return getattr(compiled, "evaluate", compiled)


def _unique_value(
    compiled: Compiled, values: Mapping[str, Any], before: Any, key: str, pending: dict
) -> Any:
    if before is not None:
        return before
    candidates = tuple(compiled.unique_values(values))
    if candidates:
        pending[key] = candidates
    return candidates[0] if candidates else None


_MAPPINGS: dict[int, tuple[Any, type, UserMapping]] = {}


def mapping_for(idp: IdentityProviderConfig, connector: type[Connector]) -> UserMapping:
    """``idp``'s mapping over ``connector``'s defaults, compiled once per run."""
    cached = _MAPPINGS.get(id(idp))
    if cached is not None and cached[0] is idp and cached[1] is connector:
        return cached[2]
    templates = {**connector.default_attributes_for(idp.options), **idp.attributes}
    mapping = UserMapping(
        compile_template(idp.username),
        tuple((k, compile_template(t)) for k, t in templates.items() if t is not None),
    )
    if len(_MAPPINGS) > 256:  # configurations reloaded many times: start again
        _MAPPINGS.clear()
    _MAPPINGS[id(idp)] = (idp, connector, mapping)
    return mapping


class UniqueValueError(OutboundError):
    """Every candidate of a unique() mapping is taken at the target."""

    code = "unique_value"


def resolve_unique(
    account: Account, taken: Callable[[str, str, Account], bool], idp: str
) -> Account:
    """``account`` with each unique() value set to its first candidate that the
    target does not hold on another account (``taken(attribute, value, account)``
    asks it; a value on an account provably this one's own is free: a create that
    went through before a crash is found again, not duplicated)."""
    chosen: dict[str, str] = {}
    for key, candidates in account.unique.items():
        free = next((c for c in candidates if not taken(key, c, account)), None)
        if free is None:
            raise UniqueValueError(
                f"user {account.user_name}: every candidate for {key} is taken at {idp} "
                f"({', '.join(candidates[:3])}{', …' if len(candidates) > 3 else ''})",
                hint="add a candidate to unique(), or use N in one to number it",
            )
        chosen[key] = free
    attributes = {**account.attributes, **{k: v for k, v in chosen.items() if k != USER_NAME}}
    user_name = chosen.get(USER_NAME, account.user_name)
    return dataclasses.replace(account, user_name=user_name, attributes=attributes, unique={})


def fingerprint(data: Any) -> str:
    """A stable hash of what would be sent, to skip calls that change nothing."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
