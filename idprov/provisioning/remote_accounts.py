"""Whether accounts still exist at a target: asked once, kept for a drain or a verify.

A group made again after the target lost it names only the accounts that exist
there (a target such as Entra, Okta or IAM Identity Center refuses a group naming
one it does not hold, and a sandbox reset loses the users with the groups), and
``sync --verify`` reports a group's members that are no account there (dangling).
Both ask :class:`RemoteAccounts`, so that the answer is one rule: an account the
target reads back, or lists, exists; one it says is gone (a read that finds
nothing) does not; a read that fails says nothing (it raises).

It asks as little as it can. Each account is read at most once; past
:data:`READS_BEFORE_LISTING` reads, a connector that can list the target's users
(``list_users``, paged) is asked for one listing instead, which answers for every
account from then on (a group of 5,000 members made again is a few pages, not
5,000 reads, and a retry of it no more). Answers are kept for the life of the
object: a drain, or a verify.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from idprov.connectors.base import Connector

T = TypeVar("T")

READS_BEFORE_LISTING = 20
"""Accounts read one by one before a listing is asked for instead: a handful of
members is cheaper read than a large target listed (500 accounts a page)."""

Caller = Callable[[Callable[[], Any]], Any]
"""Runs a call to the target (with the IdP's retries, say) and returns its value."""

FanOut = Callable[[Callable[[str], object], list[str]], None]
"""Runs a function over remote ids (in the IdP's worker threads, say); raises the
first failure."""


def _direct(call: Callable[[], T]) -> T:
    return call()


def _one_by_one(fn: Callable[[str], object], items: list[str]) -> None:
    for item in items:
        fn(item)


class RemoteAccounts:
    """What one target says of its accounts, by remote id. Safe to share between
    the worker threads of its IdP."""

    def __init__(self, connector: Connector, may_list: bool = True) -> None:
        self.connector = connector
        self._may_list = may_list
        """Whether a listing may still be asked for (not yet taken, nor refused as
        not implemented, nor ruled out by the caller)."""
        self._listed: set[str] | None = None
        self._read: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._listing = threading.Lock()
        """Held while the one listing is asked for: other threads wait for it."""

    def exists(self, remote_id: str, call: Caller = _direct) -> bool:
        """Whether an account answers to ``remote_id`` at the target. Raises what
        the read raises (``NotImplementedError``: the target cannot tell)."""
        with self._lock:
            if self._listed is not None:
                return remote_id in self._listed
            if remote_id in self._read:
                return self._read[remote_id]
        found = call(lambda: self.connector.read_user(remote_id)) is not None
        with self._lock:
            self._read[remote_id] = found
        return found

    def existing(
        self, remote_ids: Iterable[str], call: Caller = _direct, fan_out: FanOut = _one_by_one
    ) -> set[str]:
        """Those of ``remote_ids`` whose accounts exist at the target: from the
        listing where one was taken or is worth taking now, else each read
        (through ``fan_out``). Raises the first failure, as :meth:`exists`."""
        ids = list(dict.fromkeys(remote_ids))
        with self._lock:
            unknown = [r for r in ids if r not in self._read]
            reads = len(self._read) + len(unknown)
        if unknown and reads > READS_BEFORE_LISTING:
            self._list(call)
        if self._listed is None:
            fan_out(lambda rid: self.exists(rid, call), unknown)
        return {r for r in ids if self.exists(r, call)}

    def _list(self, call: Caller) -> None:
        """Take the one listing, if the target has one (else reads go on)."""
        with self._listing:
            if not self._may_list:
                return
            try:
                listed = call(self.connector.list_users)
            except NotImplementedError:
                self._may_list = False
                return
            with self._lock:
                self._listed = {str(remote_id) for remote_id, _ in listed}
                self._may_list = False
