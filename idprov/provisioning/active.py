"""Whether a user is active: the one reading of the ``active`` claim.

A directory spells a boolean ``TRUE`` or ``FALSE`` (LDAP's Boolean syntax), a
spreadsheet's CSV ``TRUE``/``False``, idprov ``true``/``false``: all are read here, in
any case, by every part of idprov that asks (the decisions of a push and a sync, the
unit of work's offboarding, the deletion guard, `idprov serve`'s ``active``), so that
they cannot disagree. No claim means active. Any other value (``yes``, ``0``, a typo;
the claim's pattern refuses them on input, but a directory holds what its
administrators wrote) cannot be read, and a user whose ``active`` cannot be read is
taken as disabled: an account is never created or enabled at a target on a value
nobody can vouch for, and one there is disabled (never deleted; the deletion guard
counts it) until the value is fixed. The decision's reason names the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CLAIM = "active"


def truth(value: Any) -> bool | None:
    """``value`` as a boolean: True for ``true``, False for ``false``, in any case and
    around spaces (a bool as it is; a list of one value as that value); None for
    anything else."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().casefold())
    return None


def is_active(claims: Mapping[str, Any]) -> bool:
    """Whether a user with ``claims`` is active: no ``active`` claim, or one that reads
    true (one that cannot be read is not: see the module docstring)."""
    if CLAIM not in claims:
        return True
    return truth(claims[CLAIM]) is True


def unreadable(claims: Mapping[str, Any]) -> str | None:
    """The ``active`` value of ``claims`` when it is there and cannot be read, as text
    (to name in a warning); None otherwise."""
    if CLAIM not in claims or truth(claims[CLAIM]) is not None:
        return None
    return str(claims[CLAIM])
