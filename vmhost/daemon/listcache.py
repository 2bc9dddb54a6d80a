"""Serialised pages of the workspace list, reused while the workspaces table has not changed.

Building the JSON for a thousand workspaces (rows to domain objects to response models to JSON) costs
tens of milliseconds of CPU, and dashboards and scripts ask for the same page again and again. An
answer is kept with the table's version and served again only while that version stands; any write
to a workspace, here or by another process, makes the next request build it afresh. Writes to other
tables (events, operations, tokens, the audit log) leave it be.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import anyio
import anyio.to_thread

from vmhost.core.store import Store


class WorkspaceListCache:
    def __init__(self, store: Store, entries: int = 8) -> None:
        self.store = store
        self.entries = entries  # each may be a large body: keep few
        self._answers: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Hashable, tuple[int, asyncio.Event]] = {}  # on the event loop only

    def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The answer for `key`, from `build()` unless one was built since the last change. The key must
        hold everything the answer depends on besides the workspaces table (the caller, the filters, the
        page's limit and cursor)."""
        version = self.store.workspaces_version()  # read before building: a change during it is not missed
        body = self._kept(key, version)
        if body is None:
            body = build()
            self._keep(key, version, body)
        return body

    async def answer(self, key: Hashable, build: Callable[[], bytes], limiter: anyio.CapacityLimiter) -> bytes:
        """As `get`, from the event loop: a kept answer costs one small read there, with no thread to wait
        for; a build runs in a thread of `limiter`. Requests that miss while the same answer is being
        built wait for that build (after a change, 100 clients polling would otherwise build it 100
        times at once)."""
        while True:
            version = self.store.workspaces_version()
            body = self._kept(key, version)
            if body is not None:
                return body
            pending = self._building.get(key)
            if pending is None or pending[0] != version:
                break
            await pending[1].wait()  # then look again: the build may have failed, or a change come
        done = asyncio.Event()
        self._building[key] = (version, done)
        try:
            body = await anyio.to_thread.run_sync(build, limiter=limiter)
            self._keep(key, version, body)
            return body
        finally:
            if self._building.get(key, (None, None))[1] is done:
                del self._building[key]
            done.set()

    def _kept(self, key: Hashable, version: int) -> bytes | None:
        with self._lock:
            kept = self._answers.get(key)
            if kept is None or kept[0] != version:
                return None
            self._answers.move_to_end(key)
            return kept[1]

    def _keep(self, key: Hashable, version: int, body: bytes) -> None:
        with self._lock:
            self._answers[key] = (version, body)
            self._answers.move_to_end(key)
            while len(self._answers) > self.entries:
                self._answers.popitem(last=False)
