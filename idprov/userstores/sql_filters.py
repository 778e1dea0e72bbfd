"""A :class:`~idprov.model.Condition` as SQL over the ``users`` table, for SQLite and
PostgreSQL alike (a dialect gives the claim expressions).

What an index can answer is written so that it does: a username by its key (equal, or
a prefix as a key range), ``modified`` by its column, the email by its expression
index, the holders of an ``emails`` list by theirs. A condition the SQL cannot state is
left out (no restriction): the result is then a superset, and the caller checks each
user exactly. Text is compared lower-cased; values that are not ASCII are not
restricted on claims, since SQLite lowers ASCII only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from idprov.config.claims import ClaimDefinition
from idprov.model import Condition

Sql = tuple[str, list[Any]]
LAST = "\U0010ffff"
"""Sorts after every character: ``key >= p AND key < p || LAST`` is a prefix range."""


class ConditionSql:
    """Translate conditions with a dialect's ``claim_text(name)`` (the lower-cased text
    of a single-valued claim), ``claim_elements(name)`` (a FROM source, and its
    column holding each value of a multi-valued one) and ``claim_held(name)`` (SQL true
    when a user has the claim, in the form its index answers)."""

    def __init__(
        self,
        claims: Mapping[str, ClaimDefinition],
        claim_text: Callable[[str], str],
        claim_elements: Callable[[str], tuple[str, str]],
        claim_held: Callable[[str], str],
    ) -> None:
        self.claims = claims
        self.claim_text = claim_text
        self.claim_elements = claim_elements
        self.claim_held = claim_held

    def sql(self, condition: Condition) -> Sql | None:
        """SQL true for at least the users matching ``condition`` (None: all may)."""
        if condition.op == "and":
            parts = [p for p in (self.sql(t) for t in condition.terms) if p is not None]
            return _joined(parts, " AND ") if parts else None
        if condition.op == "or":
            each = [self.sql(t) for t in condition.terms]
            found = [p for p in each if p is not None]
            return _joined(found, " OR ") if found and len(found) == len(each) else None
        return self._term(condition)

    def _term(self, c: Condition) -> Sql | None:
        if c.attribute == "username":
            return _username(c)
        if c.attribute == "id":
            return _ids(c)
        if c.attribute in ("created", "modified"):
            return _time(c.attribute, c)
        if c.attribute.startswith("claim:"):
            return self._claim(c.attribute.removeprefix("claim:"), c)
        return None

    def _claim(self, name: str, c: Condition) -> Sql | None:
        definition = self.claims.get(name)
        if definition is None or not name.replace("_", "").isalnum():
            return None
        if definition.multi_valued:
            source, column = self.claim_elements(name)
            test = _text_test(f"lower({column})", c)
            if test is None:
                return None
            held = self.claim_held(name)
            return f"({held} AND EXISTS (SELECT 1 FROM {source} WHERE {test[0]}))", test[1]
        return _text_test(self.claim_text(name), c)


def _joined(parts: list[Sql], glue: str) -> Sql:
    return "(" + glue.join(p[0] for p in parts) + ")", [v for p in parts for v in p[1]]


def _username(c: Condition) -> Sql | None:
    key = c.value.casefold()
    if c.op == "eq":
        return "username_key = ?", [key]
    if c.op == "sw":
        return "(username_key >= ? AND username_key < ?)", [key, key + LAST]
    if c.op in ("ew", "co"):
        pattern = "%" + like_literal(key) + ("%" if c.op == "co" else "")
        return "username_key LIKE ? ESCAPE '\\'", [pattern]
    return None


def _ids(c: Condition) -> Sql | None:
    if c.op == "eq":
        return "id = ?", [c.value]
    if c.op == "in":
        if not c.values:
            return "1 = 0", []
        return f"id IN ({','.join('?' * len(c.values))})", list(c.values)
    return None


def _text_test(expression: str, c: Condition) -> Sql | None:
    """``expression`` (lower-cased text) compared as ``c`` asks."""
    if c.op == "pr":
        return f"{expression} IS NOT NULL", []
    if not c.value.isascii():
        return _ascii_prefix(expression, c)
    value = c.value.lower()
    if c.op == "eq":
        return f"{expression} = ?", [value]
    patterns = {
        "sw": like_literal(value) + "%",
        "ew": "%" + like_literal(value),
        "co": f"%{like_literal(value)}%",
    }
    if c.op in patterns:
        return f"{expression} LIKE ? ESCAPE '\\'", [patterns[c.op]]
    return None


def _ascii_prefix(expression: str, c: Condition) -> Sql | None:
    """``eq``/``sw`` of a value that is not all ASCII: the rows whose text starts with
    its ASCII beginning, a key range the index answers (``josé``: from ``jos``). The
    stores lower ASCII alike; the rest of the value is checked by the caller."""
    if c.op not in ("eq", "sw"):
        return None
    end = next(i for i, char in enumerate(c.value) if not char.isascii())
    prefix = c.value[:end].lower()
    if not prefix:
        return None
    return f"({expression} >= ? AND {expression} < ?)", [prefix, prefix + LAST]


def like_literal(text: str) -> str:
    """``text`` as a literal in a ``LIKE ... ESCAPE '\\'`` pattern (its ``\\``, ``%``
    and ``_`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _time(column: str, c: Condition) -> Sql | None:
    """A time compared to the millisecond the stores keep: ``ge`` from the millisecond
    holding it, ``le`` through it."""
    moment = _moment(c.value)
    if moment is None or c.op not in ("ge", "le", "eq"):
        return None
    floor = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    ceil = floor if floor == moment else floor + timedelta(milliseconds=1)
    low, high = _stamp(floor), _stamp(ceil)
    if c.op == "ge":
        return f"{column} >= ?", [low]
    if c.op == "le":
        return f"{column} <= ?", [high]
    return f"({column} >= ? AND {column} <= ?)", [low, high]


def _moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    """As :func:`idprov.db.now` writes times."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
