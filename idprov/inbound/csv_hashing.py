"""Passwords of a CSV import, hashed on every core while the file is read (see
:mod:`idprov.inbound.csv_import`).

Each password is queued with its line in the scheme of its user's store (scrypt;
``{SSHA}`` for a directory); full chunks go to a process pool, and the hashes are
staged once the file has been read. An interrupted import stops the workers at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from idprov.inbound.csv_staging import ImportState, Staging
from idprov.userstores.passwords import hash_with

HASH_CHUNK = {"scrypt": 8}
"""Passwords per job sent to a hashing worker: small for a slow KDF (~0.4 s a job),
so an interrupted import does not wait long for the jobs already running; 256 for
the others."""


class PasswordHashing(ImportState):
    """The hashing part of :class:`~idprov.inbound.csv_import.CsvImport`."""

    def _queue_hash(self, line: int, password: str, scheme: str) -> None:
        """Hash in the scheme of the user's store (scrypt; {SSHA} for a directory)."""
        queued = self.to_hash.setdefault(scheme, [])
        queued.append((line, password))
        if len(queued) >= HASH_CHUNK.get(scheme, 256):
            self._submit_hashes()

    def _submit_hashes(self) -> None:
        for scheme, queued in self.to_hash.items():
            if not queued:
                continue
            if self.pool is None:
                from concurrent.futures import ProcessPoolExecutor

                self.pool = ProcessPoolExecutor(
                    max_workers=os.cpu_count() or 1, initializer=_ignore_interrupts
                )
            lines = [line for line, _ in queued]
            passwords = [pw for _, pw in queued]
            self.hashes.append((lines, self.pool.submit(hash_many, passwords, scheme)))
        self.to_hash = {}

    def _collect_hashes(self, staging: Staging) -> None:
        """Wait for every hash and stage it with its row."""
        self._submit_hashes()
        total = sum(len(lines) for lines, _ in self.hashes)
        done = 0
        for lines, future in self.hashes:
            staging.set_hashes(future.result(), lines)
            done += len(lines)
            if self.progress:
                self.progress("hashing", done, total)
        self.hashes = []

    def _stop_hashing(self, at_once: bool = False) -> None:
        """Let the hashing workers go. After an error or a Ctrl-C, ``at_once``: the
        queued work is dropped and the workers stopped, not waited for (their hashes
        are of no use any more)."""
        if self.pool is None:
            return
        if at_once:
            # Executor has no public way to stop its workers before Python 3.14
            for process in list((getattr(self.pool, "_processes", None) or {}).values()):
                process.terminate()
        self.pool.shutdown(wait=not at_once, cancel_futures=True)
        self.pool = None


def _ignore_interrupts() -> None:
    """In a hashing worker: a Ctrl-C is the parent's to handle (it cancels the work)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def hash_many(passwords: Sequence[str], scheme: str = "scrypt") -> list[str]:
    """Hash in a worker process (module level, so it can be pickled)."""
    return [hash_with(scheme, p) for p in passwords]
