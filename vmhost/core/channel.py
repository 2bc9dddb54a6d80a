"""A bounded hand-over from one producer thread to one asyncio consumer.

The producer blocks while `max_bytes` are waiting, so a consumer that does not read slows the producer
(and whatever it reads from) instead of growing memory; the consumer waits without holding a thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Channel(Generic[T]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._buffered = 0
        self._closed = False
        self._space = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None

    def put(self, item: T, size: int = 0) -> bool:
        """From the producer's thread: wait for room (an empty channel always takes an item), then add it.
        False, at once, when the channel is closed (the item is dropped)."""
        with self._space:
            while self._items and self._buffered + size > self.max_bytes and not self._closed:
                self._space.wait()
            if self._closed:
                return False
            self._items.append((item, size))
            self._buffered += size
            loop, ready = self._loop, self._ready
        if loop is not None and ready is not None:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # the consumer's loop has closed
                self.close()
        return True

    async def get(self) -> T:
        """On the consumer's loop: the next item, waiting for one."""
        while True:
            with self._space:  # held only for a few list operations: fine on the event loop
                if self._ready is None:
                    self._loop, self._ready = asyncio.get_running_loop(), asyncio.Event()
                if self._items:
                    item, size = self._items.popleft()
                    self._buffered -= size
                    self._space.notify_all()
                    return item
                self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Drop what is waiting and wake a blocked producer; later puts are refused."""
        with self._space:
            self._closed = True
            self._items.clear()
            self._buffered = 0
            self._space.notify_all()
