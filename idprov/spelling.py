"""Which known name a mistyped one most likely meant, for a "did you mean" in an error
(a CSV header's column, a configuration key). One rule, so every such hint guesses
alike."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


def closest(
    name: str, candidates: Iterable[str], fold: Callable[[str], str] = str.casefold
) -> str | None:
    """The candidate ``name`` is most likely a typo of, if one is close (compared as
    ``fold`` writes them); None if none is."""
    by_folded = {fold(c): c for c in candidates}
    close = difflib.get_close_matches(fold(name), list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None
