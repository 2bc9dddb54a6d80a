"""Serialised workspace lists, reused while the workspaces table has not changed.

Building the JSON for a thousand workspaces (rows to domain objects to response models to JSON) costs
tens of milliseconds of CPU, and dashboards and scripts ask for the same list again and again. An
answer is kept with the table's version and served again only while that version stands; any write
to a workspace, here or by another process, makes the next request build it afresh. Writes to other
tables (events, operations, tokens, the audit log) leave it be.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from vmhost.core.store import Store


class WorkspaceListCache:
    def __init__(self, store: Store, entries: int = 8) -> None:
        self.store = store
        self.entries = entries  # each may be a large body: keep few
        self._answers: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The answer for `key`, from `build()` unless one was built since the last change. The key must
        hold everything the answer depends on besides the workspaces table (the caller, the query)."""
        version = self.store.workspaces_version()  # read before building: a change during it is not missed
        with self._lock:
            kept = self._answers.get(key)
            if kept is not None and kept[0] == version:
                self._answers.move_to_end(key)
                return kept[1]
        body = build()
        with self._lock:
            self._answers[key] = (version, body)
            self._answers.move_to_end(key)
            while len(self._answers) > self.entries:
                self._answers.popitem(last=False)
        return body
