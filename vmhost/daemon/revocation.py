"""The long-lived sessions each API token has open (shells, event streams, followed logs, streamed
commands), so that revoking the token ends them at once instead of when they next ask for something.
Everything here runs on the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio

from vmhost.core.models import Caller

End = Callable[[], Coroutine[Any, Any, None]]


class LiveSessions:
    def __init__(self) -> None:
        self._open: dict[str, set[End]] = {}
        self._revoked: set[str] = set()  # a session that authenticated just before a revocation is ended too

    @asynccontextmanager
    async def hold(self, caller: Caller, end: End) -> AsyncIterator[None]:
        """For the session's life: `end()` is awaited if the caller's token is revoked meanwhile."""
        token_id = caller.token_id
        if token_id is None:
            yield
            return
        if token_id in self._revoked:
            await end()
        self._open.setdefault(token_id, set()).add(end)
        try:
            yield
        finally:
            ends = self._open.get(token_id)
            if ends is not None:
                ends.discard(end)
                if not ends:
                    del self._open[token_id]

    def revoked(self, token_id: str) -> bool:
        """Whether the token was revoked since the daemon started (for credentials that outlive a request
        without naming the token's secret, like a preview cookie)."""
        return token_id in self._revoked

    async def revoke(self, token_id: str) -> int:
        """End every session of the token; returns how many were open."""
        self._revoked.add(token_id)
        ends = self._open.pop(token_id, set())
        async with anyio.create_task_group() as group:  # at once: one slow client holds up no other session
            for end in ends:
                group.start_soon(end)
        return len(ends)
