"""API tokens found by their hash, kept in memory while the tokens table stands still.

Every TCP request shows a token, and looking it up (a row read and decoded) is a large part of a small
request's work. A token found is kept with the tokens table's version (bumped by a trigger on every
change, by this process or another one) and reused only while that version stands, so a revocation
takes effect at the next request. The caller still checks revocation and expiry on what it gets.
Unknown hashes are kept apart, a few and on the same version (a token created later is found at
once): a flood of guesses costs no row read each, yet cannot push real tokens out or grow memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from vmhost.core.models import Token
from vmhost.core.store import Store


@dataclass(frozen=True)
class _Kept:
    token: Token
    version: int
    at: float


class TokenCache:
    def __init__(self, store: Store, entries: int = 1024, max_age: float = 60.0, unknown_entries: int = 256) -> None:
        self.store = store
        self.entries = entries
        self.max_age = max_age
        self.unknown_entries = unknown_entries
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._unknown: OrderedDict[str, int] = OrderedDict()  # hash: the tokens version it was missing at
        self._lock = threading.Lock()

    def find(self, token_hash: str) -> Token | None:
        """The token with this hash, None when there is none."""
        version = self.store.tokens_version()  # read before looking: a change during the look-up is not missed
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(token_hash)
            if kept is not None and kept.version == version and now - kept.at < self.max_age:
                self._kept.move_to_end(token_hash)
                return kept.token
            if self._unknown.get(token_hash) == version:
                return None
        found = self.store.token_by_hash(token_hash)
        if found is None:
            with self._lock:
                self._unknown[token_hash] = version
                self._unknown.move_to_end(token_hash)
                while len(self._unknown) > self.unknown_entries:
                    self._unknown.popitem(last=False)
            return None
        with self._lock:
            self._kept[token_hash] = _Kept(found[0], version, now)
            self._kept.move_to_end(token_hash)
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)
        return found[0]
