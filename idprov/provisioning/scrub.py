"""Blanking, in the state, the secrets an earlier release stored.

A target may echo the credentials it refused (a 400 quoting the decoded Basic password,
a debugging endpoint echoing the token). This release blanks them in every error it
builds (:func:`idprov.secrecy.blank`), but the errors an earlier release stored keep
them: in the audit log (``idprov log``), the outbox's ``last_error`` and the IdPs'
health (``idprov status``). :func:`scrub_secrets` (`idprov secret scrub`) finds and
blanks those.

It resolves every secret reference of the configuration (as any command does: each
value is then held by :mod:`idprov.secrecy`), and a Basic credential's
``user:password`` and its base64 form. It finds the rows holding any of them in one
``LIKE`` query per table (each secret of :data:`~idprov.secrecy.LONG` characters or
more, in every spelling an echo gives it: :func:`~idprov.secrecy.spellings`), and
rewrites their text with :func:`~idprov.secrecy.blank`, one transaction per table.
A shorter secret is not looked for: blanked everywhere it would rewrite ordinary words.
The scrub is audited as ``secret.scrub``, with counts only.

It cannot reach copies made before (backups of the state, log files, terminals): a
credential it finds must be rotated.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from idprov import secrecy
from idprov.errors import SecretError
from idprov.userstores.sql_filters import like_literal

if TYPE_CHECKING:
    from idprov.provisioning.service import IdentityService
    from idprov.statedb import StateDB

TABLES = (("outbox", "id", "last_error"), ("idp_health", "idp", "last_error"))
"""(table, key, column) of the plain-text columns an error is stored in; the audit
log's ``details`` (JSON) is scrubbed last, with the scrub's own entry."""

CHUNK = 200
"""``LIKE`` patterns per query."""


@dataclass
class ScrubResult:
    """What `idprov secret scrub` found and blanked (or would, ``dry_run``)."""

    dry_run: bool
    secrets: int
    """Secrets looked for (of :data:`~idprov.secrecy.LONG` characters or more)."""
    short: int
    """Secrets of the configuration not looked for: shorter than that."""
    unresolved: list[str] = field(default_factory=list)
    """References that could not be read (their secrets were not looked for)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Table -> rows blanked (that would be, ``dry_run``)."""

    @property
    def found(self) -> int:
        """Rows holding a secret, in every table."""
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "found": self.found}


def scrub_secrets(service: IdentityService, *, dry_run: bool = False) -> ScrubResult:
    """Blank the secrets the configuration references wherever the state stored them
    (:data:`TABLES` and the audit log), one transaction per table; audited as
    ``secret.scrub`` (counts only). ``dry_run`` counts, changing nothing."""
    secrets, short, unresolved = configured_secrets(service.config)
    result = ScrubResult(dry_run, len(secrets), short, unresolved)
    patterns = like_patterns(secrets)
    db = service.state.db
    for table, key, column in TABLES:
        with service.state.transaction():
            result.rows[table] = _scrub(db, (table, key, column), patterns, _blank, dry_run)
    with service.state.transaction():
        result.rows["audit"] = _scrub(
            db, ("audit", "id", "details"), patterns, _blank_json, dry_run
        )
        if not dry_run:
            service.state.audit(
                actor=service.actor,
                application=service.application,
                action="secret.scrub",
                target="state",
                details={"rows": result.rows, "secrets": result.secrets},
            )
    return result


def configured_secrets(config: Any) -> tuple[set[str], int, list[str]]:
    """(the secrets of :data:`~idprov.secrecy.LONG` characters or more that the
    configuration's references resolve to, with each Basic credential's
    ``user:password`` and its base64 form; how many shorter ones; the references that
    could not be read). Each stays held while ``config`` exists."""
    from idprov.config.schema import find_values
    from idprov.config.secrets import SecretRef

    values: set[str] = set()
    unresolved: list[str] = []
    for _, ref in find_values(config, SecretRef):
        try:
            values.add(ref.reveal())
        except SecretError:
            unresolved.append(ref.ref)
    values |= _basic_forms(config)
    long = {v for v in values if len(v) >= secrecy.LONG}
    return long, len(values - long), sorted(set(unresolved))


def _basic_forms(config: Any) -> set[str]:
    """Each Basic credential's ``user:password`` and base64 form (held, as the
    connector holds them when it sends them)."""
    from idprov.config.secrets import SecretRef

    found: set[str] = set()
    for idp in config.identity_providers:
        options = idp.options
        password, username = getattr(options, "password", None), getattr(options, "username", None)
        if not isinstance(password, SecretRef) or not isinstance(username, str):
            continue
        try:
            secret = password.reveal()
        except SecretError:
            continue
        pair = f"{username}:{secret}"
        encoded = base64.b64encode(pair.encode()).decode()
        secrecy.hold_basic(options, username, secret, encoded)
        found |= {pair, encoded}
    return found


def like_patterns(secrets: Iterable[str]) -> list[str]:
    """A ``LIKE ... ESCAPE '\\'`` pattern for each spelling of each secret."""
    spelled = {s for secret in secrets for s in secrecy.spellings(secret)}
    return sorted(f"%{like_literal(s)}%" for s in spelled)


def _scrub(
    db: StateDB,
    where: tuple[str, str, str],
    patterns: list[str],
    blank: Callable[[str], str],
    dry_run: bool,
) -> int:
    """Blank ``column`` of the rows of ``table`` that hold a pattern (in the caller's
    transaction); how many changed (would, ``dry_run``). A row rewritten since it was
    read keeps what it has now (written blanked by this release)."""
    table, key, column = where
    holding = _holding(db, where, patterns).items()
    changed = [(k, old, new) for k, old in holding if (new := blank(old)) != old]
    if changed and not dry_run:
        db.executemany(
            f"UPDATE {table} SET {column} = ? WHERE {key} = ? AND {column} = ?",
            [(new, k, old) for k, old, new in changed],
        )
    return len(changed)


def _holding(db: StateDB, where: tuple[str, str, str], patterns: list[str]) -> dict[Any, str]:
    """Key -> text of the rows whose ``column`` matches one of ``patterns``."""
    table, key, column = where
    found: dict[Any, str] = {}
    for start in range(0, len(patterns), CHUNK):
        chunk = patterns[start : start + CHUNK]
        like = " OR ".join([f"{column} LIKE ? ESCAPE '\\'"] * len(chunk))
        for k, text in db.execute(f"SELECT {key}, {column} FROM {table} WHERE {like}", chunk):
            found[k] = text
    return found


def _blank(text: str) -> str:
    return secrecy.blank(text)


def _blank_json(text: str) -> str:
    """An audit entry's details (JSON, as :func:`~idprov.provisioning.state.audit_row`
    writes them) with every string blanked, keys too (two keys that blank alike are
    both kept, the second as ``"k *** (2)"``: nothing is lost); the text blanked as it
    is if it is not JSON."""
    try:
        details = json.loads(text)
    except ValueError:
        return secrecy.blank(text)
    blanked = _blank_values(details)
    if blanked == details:
        return text
    return json.dumps(blanked, ensure_ascii=False, sort_keys=True)


def _blank_values(value: Any) -> Any:
    if isinstance(value, str):
        return secrecy.blank(value)
    if isinstance(value, list):
        return [_blank_values(v) for v in value]
    if isinstance(value, dict):
        blanked: dict[str, Any] = {}
        for key, item in value.items():
            new = secrecy.blank(key)
            if new != key:  # keys blanked alike are all kept: "k ***", "k *** (2)"
                spelled = (new if i == 1 else f"{new} ({i})" for i in itertools.count(1))
                new = next(n for n in spelled if n not in blanked and n not in value)
            blanked[new] = _blank_values(item)
        return blanked
    return value
