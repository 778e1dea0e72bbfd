"""Checks every userstore applies before a write: names, passwords, claim values.

The rules come from the userstore's :class:`~idprov.config.models.PolicyConfig` and
from the claim definitions; a refusal names the rule (the pattern, the limit) and
the offending key, never a password.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

from idprov.config.claims import ClaimDefinition
from idprov.config.models import PolicyConfig
from idprov.errors import PolicyError, UsageError
from idprov.model import ClaimValue

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""C0, DEL and C1 controls, and Unicode's line and paragraph separators (U+2028,
U+2029: line breaks, as ``\\n`` is), which one line of text does not hold."""
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""Claims declared ``multiline`` may hold tabs and line breaks (a postal address)."""


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)  # fmt: skip
"""Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters a
display shows as nothing (zero-width space, soft hyphen, variation selectors, the
Hangul filler...)."""
ZWNJ, ZWJ = "\u200c", "\u200d"
JOINING = ((0x0600, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFC))
"""Arabic, Syriac, Thaana, N'Ko... and their presentation forms: the scripts whose
letters a zero-width non-joiner keeps apart (Persian ``می‌خواهم``)."""


def _invisible(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) in ("Cf", "Cc") or any(
        low <= code <= high for low, high in IGNORABLE
    )


def _joiner_in_context(name: str, i: int) -> bool:
    """A zero-width (non-)joiner where RFC 5892's CONTEXTJ rules allow it, as part of
    a spelling: after a virama (Indic scripts), or a non-joiner between two letters
    of a joining script (Persian)."""
    if i == 0:
        return False
    if unicodedata.combining(name[i - 1]) == 9:  # a virama
        return True
    return (
        name[i] == ZWNJ and i + 1 < len(name) and all(map(_joining_letter, name[i - 1 : i + 2 : 2]))
    )


def _joining_letter(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) == "Lo" and any(low <= code <= high for low, high in JOINING)


def _check_name_text(kind: str, name: str) -> None:
    """What no pattern can allow in a user or role name: an invisible character
    (``al\u200bice`` shows as ``alice``), a C1 control, or a character written in
    parts (``jose\u0301``, which shows as ``josé`` and would be a second user beside
    it). Such names look like another one, so they are refused whatever the pattern."""
    for i, char in enumerate(name):
        if _invisible(char):
            if char < " " or char == "\x7f":
                continue  # C0 controls: the pattern check's message says it
            if char in (ZWNJ, ZWJ) and _joiner_in_context(name, i):
                continue
            label = unicodedata.name(char, "a control character")
            raise PolicyError(
                f"{kind} {ascii(name[:80])} contains U+{ord(char):04X} ({label}), which does "
                "not show: the name would look like another one",
                hint="type the name again without it",
            )
    composed = unicodedata.normalize("NFC", name)
    if composed != name:
        raise PolicyError(
            f"{kind} {ascii(name[:80])} {_uncomposed(name)}: it would look like "
            f"{composed[:80]!r} and be another name",
            hint=f"send it composed (Unicode NFC): {composed[:80]!r}",
        )


def _uncomposed(name: str) -> str:
    """What in ``name`` Unicode NFC writes otherwise: a character that is another's
    duplicate (U+212A KELVIN SIGN is the letter K), or one written in parts."""
    for char in name:
        if unicodedata.normalize("NFC", char) != char:
            label = unicodedata.name(char, "a character")
            same = unicodedata.normalize("NFC", char)
            return f"contains U+{ord(char):04X} ({label}), which Unicode writes as {same!r}"
    return "has a character written in parts (a letter and a combining accent)"


def check_username(policy: PolicyConfig, username: str, domain: str) -> None:
    if "/" in username:
        raise PolicyError(
            f"username {username!r} contains '/', which separates the domain",
            hint="write DOMAIN/username, or use --domain",
        )
    _check_name_text("username", username)
    if not _compiled(policy.username_pattern).search(username) or _CONTROL.search(username):
        raise PolicyError(
            f"username {username[:80]!r} does not match the {domain} userstore's "
            f"username pattern {policy.username_pattern}",
            hint="choose a name that matches, or change userstores[].policy.username_pattern",
        )


def check_role_name(policy: PolicyConfig, name: str, domain: str) -> None:
    if "/" in name:
        raise PolicyError(f"role name {name!r} contains '/', which separates the domain")
    _check_name_text("role name", name)
    if not _compiled(policy.role_name_pattern).search(name) or _CONTROL.search(name):
        raise PolicyError(
            f"role name {name[:80]!r} does not match the {domain} userstore's "
            f"role name pattern {policy.role_name_pattern}",
            hint="choose a name that matches, or change userstores[].policy.role_name_pattern",
        )


def check_password(policy: PolicyConfig, password: str, domain: str) -> None:
    if not _compiled(policy.password_pattern).search(password):
        rule = _length_rule(policy.password_pattern)
        wanted = policy.password_pattern if rule is None else f"asks for {rule.words()}"
        raise PolicyError(
            f"the password {_why_refused(rule, password)}: the {domain} userstore's "
            f"password pattern {wanted}",
            hint="choose a password that matches, or change userstores[].policy.password_pattern",
        )


_LENGTH_RULE = re.compile(
    r"\^(?P<chars>\[\^\\x00-\\x1f\\x7f\]|\[\\S\]|\\S)\{(?P<low>\d+),(?P<high>\d+)\}\$"
)
"""The presets' password patterns: a character class and a length range."""


class _LengthRule:
    """A password pattern that is only a length range over some characters, in words."""

    def __init__(self, low: int, high: int, spaces: bool) -> None:
        self.low, self.high, self.spaces = low, high, spaces

    def words(self) -> str:
        allowed = "no control characters" if self.spaces else "no whitespace or control characters"
        return f"at least {self.low} characters (at most {self.high}, {allowed})"


def _length_rule(pattern: str) -> _LengthRule | None:
    match = _LENGTH_RULE.fullmatch(pattern)
    if match is None:
        return None
    spaces = match["chars"].startswith("[^")
    return _LengthRule(int(match["low"]), int(match["high"]), spaces)


def _why_refused(rule: _LengthRule | None, password: str) -> str:
    if rule is None:
        return "does not match"
    if len(password) < rule.low:
        return "is too short"
    if len(password) > rule.high:
        return "is too long"
    return "holds a character the policy does not allow"


def check_claim_names(names: Iterable[str], known: Mapping[str, ClaimDefinition]) -> None:
    """Refuse claim names idprov does not know, listing the ones it does."""
    for name in names:
        if name not in known:
            raise UsageError(
                f"unknown claim {name!r}",
                hint="known claims: "
                + ", ".join(sorted(known))
                + " (declare more under `claims:` in the configuration)",
            )


SPACES = " \t\n\r\f\v\u2028\u2029" + "".join(
    chr(c) for c in range(0x80, 0x3001) if unicodedata.category(chr(c)) == "Zs"
)
"""What trimming takes off a value's ends: spaces, tabs, line breaks (U+2028 LINE
SEPARATOR and U+2029 PARAGRAPH SEPARATOR too) and the Unicode space separators (a
no-break space), never another control character (``str.strip`` also takes
U+001C-U+001F and U+0085, which the policy refuses wherever they stand). Invisible
characters (a zero-width space, a BOM) are not trimmed: at a value's ends they are
refused (:func:`check_claim_value`)."""

_MODIFIERS = (
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0xFE00, 0xFE0F),
    (0xE0020, 0xE007F),
    (0xE0100, 0xE01EF),
)
"""Invisible characters that end the spelling of the visible one before them: the
variation selectors (U+2764 U+FE0F is the red heart emoji) and the tags of a flag
(U+1F3F4 and tags, ended by U+E007F, is the flag of Scotland)."""


def _modifier(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _MODIFIERS)


def _hidden(char: str) -> bool:
    """Invisible (:func:`_invisible`) and not a control character (refused as one)."""
    return unicodedata.category(char) != "Cc" and _invisible(char)


def invisible_end(value: str) -> tuple[str, str] | None:
    """``("starts", char)`` or ``("ends", char)`` where ``value``, once trimmed, starts
    or ends with an invisible character (a zero-width space, a BOM, a bidi mark, a
    soft hyphen): ``Ops\\u200b`` looks like ``Ops`` and is another value, which a
    search for ``Ops`` does not find. Inside a value such characters are spelling
    (a zero-width joiner in an emoji sequence or an Indic word, a zero-width space
    between Thai words), and so is a variation selector or a flag's tags after the
    character they belong to: those are kept."""
    text = value.strip(SPACES)
    if not text:
        return None
    if _hidden(text[0]):
        return "starts", text[0]
    end = len(text)
    while end and _modifier(text[end - 1]):
        end -= 1
    if end == 0 or _hidden(text[end - 1]):
        return "ends", text[end - 1] if end else text[-1]
    return None


def trimmed(value: ClaimValue) -> ClaimValue:
    """A claim's value as idprov keeps it, whichever way it comes in (the CLI, an
    import, SCIM, a JIT login, the library): without leading or trailing whitespace,
    and a list without the items nothing is left of. ``" Ops "`` is ``Ops``, so the
    same value sent again with other spacing changes nothing."""
    if isinstance(value, list):
        return [t for v in value if (t := v.strip(SPACES) if isinstance(v, str) else v)]
    return value.strip(SPACES) if isinstance(value, str) else value


def trimmed_claims(claims: Mapping[str, ClaimValue]) -> dict[str, ClaimValue]:
    """``claims`` with every value :func:`trimmed`: what the core writes."""
    return {name: trimmed(value) for name, value in claims.items()}


def same_claim(a: ClaimValue | None, b: ClaimValue | None) -> bool:
    """Whether two values of a claim are the same once :func:`trimmed`: a value sent
    with other spacing than the one kept (kept before idprov trimmed) is no change."""
    return (None if a is None else trimmed(a)) == (None if b is None else trimmed(b))


def check_claims(
    claims: Mapping[str, ClaimValue],
    known: Mapping[str, ClaimDefinition],
    user: str,
) -> None:
    """Refuse unknown claims, wrong multiplicity, control characters, long or
    non-matching values."""
    check_claim_names(claims, known)
    for name, value in claims.items():
        definition = known[name]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not definition.multi_valued:
            raise PolicyError(
                f"claim {name!r} of user {user} takes one value, got {len(value)}",
                hint="give the claim once, or declare it multi_valued: true",
            )
        for item in values:
            check_claim_value(definition, item, user)


def claim_value_ok(definition: ClaimDefinition, value: str) -> bool:
    """Whether :func:`check_claim_value` would accept ``value`` (no message: fast)."""
    if len(value) > definition.max_length:
        return False
    if (_CONTROL_IN_TEXT if definition.multiline else _CONTROL).search(value):
        return False
    if invisible_end(value) is not None:
        return False
    return not definition.pattern or bool(_compiled(definition.pattern).search(value))


def check_claim_value(definition: ClaimDefinition, value: str, user: str) -> None:
    """One value of a known claim: length, control characters (and, in a claim of one
    line, line breaks), an invisible character at its ends (:func:`invisible_end`),
    pattern."""
    name = definition.name
    if len(value) > definition.max_length:
        raise PolicyError(
            f"claim {name!r} of user {user} is {len(value)} characters long; the limit "
            f"is {definition.max_length}",
            hint="shorten the value, or raise max_length in the claim's declaration",
        )
    found = (_CONTROL_IN_TEXT if definition.multiline else _CONTROL).search(value)
    if found:
        char = found.group()
        if char in "\u2028\u2029":  # the line breaks a control character check misses
            label = unicodedata.name(char)
            raise PolicyError(
                f"claim {name!r} of user {user} contains control characters (U+{ord(char):04X} "
                f"{label}, a line break): the claim holds one line",
                hint="send the value on one line, or declare the claim multiline: true",
            )
        raise PolicyError(f"claim {name!r} of user {user} contains control characters")
    hidden = invisible_end(value)
    if hidden is not None:
        where, char = hidden
        label = unicodedata.name(char, "an invisible character")
        shown = "".join(c for c in value.strip(SPACES) if not _hidden(c))
        raise PolicyError(
            f"claim {name!r} of user {user} {where} with U+{ord(char):04X} ({label}), which "
            f"does not show: {value[:80]!r} would look like {shown[:80]!r}, and a "
            "search for that would not find it",
            hint="send the value without it",
        )
    if definition.pattern and not _compiled(definition.pattern).search(value):
        raise PolicyError(
            f"claim {name!r} of user {user}: {value[:80]!r} does not match {definition.pattern}"
        )


def check_required(
    claims: Mapping[str, ClaimValue], policy: PolicyConfig, user: str, domain: str
) -> None:
    missing = [c for c in policy.required_claims if not claims.get(c)]
    if missing:
        raise PolicyError(
            f"user {user} lacks claims the {domain} userstore requires: {', '.join(missing)}",
            hint="give them with --claim NAME=VALUE",
        )
