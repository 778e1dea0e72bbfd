"""Plugin connectors in tests: what ``importlib.metadata.entry_points`` answers, as an
installed package's entry points are, with the registry's caches cleared around it."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from idprov.connectors import registry


@contextmanager
def entry_points(
    monkeypatch: pytest.MonkeyPatch,
    found: Sequence[importlib.metadata.EntryPoint] | Callable[..., Any],
) -> Iterator[None]:
    """``entry_points(group=...)`` answering ``found`` (a list, or a function of its
    keywords) until the block ends."""
    answer = found if callable(found) else (lambda **kw: list(found))
    monkeypatch.setattr(importlib.metadata, "entry_points", answer)
    registry._entry_points.cache_clear()
    registry.load.cache_clear()
    try:
        yield
    finally:
        registry._entry_points.cache_clear()
        registry.load.cache_clear()
