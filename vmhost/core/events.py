"""Event streams: the store's committed events fanned out to asyncio consumers, with replay.

A stream subscribes first, then replays what the client missed from the database, then goes live,
dropping anything it already sent by id: a client that reconnects with its last id neither misses
nor repeats an event. Events pruned before the client asked for them are announced with a gap
marker, never silently skipped. No HTTP here: the daemon's WebSocket routes, a test or a script can
drive `EventStream` alike.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from vmhost.core.activity import Activity
from vmhost.core.models import Caller, Event, Operation, Workspace, WorkspaceStatus, utcnow
from vmhost.core.rows import to_text
from vmhost.core.store import Store
from vmhost.errors import InvalidInput

log = logging.getLogger(__name__)

REPLAY_PAGE = 500
LIVE_BACKLOG = 10_000
"""Live events buffered for one slow consumer; past that it catches up from the database instead."""

GONE_CHECK = 1.0
"""Seconds between checks that a waiter is still there."""

EXPIRING = "workspace.expiring"


def parse_types(text: str | None) -> tuple[str, ...]:
    """'workspace.*,operation.status' -> ('workspace.*', 'operation.status')."""
    types = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    for pattern in types:
        if "*" in pattern[:-1] or (pattern.endswith("*") and not pattern.endswith(".*")):
            raise InvalidInput(f"bad event type filter {pattern!r}: use an exact type or a family like "
                               "'workspace.*'")
    return types


@dataclass(frozen=True)
class EventFilter:
    """Which events a consumer may and wants to see. `owner=None` is everyone's (admins)."""

    owner: str | None = None
    workspace_id: str | None = None
    types: tuple[str, ...] = ()

    @classmethod
    def for_caller(cls, caller: Caller, workspace_id: str | None = None, types: Sequence[str] = ()) -> EventFilter:
        return cls(owner=caller.owner_filter, workspace_id=workspace_id, types=tuple(types))

    def matches(self, event: Event) -> bool:
        if self.owner is not None and event.owner != self.owner:
            return False
        if self.workspace_id is not None and event.workspace_id != self.workspace_id:
            return False
        return not self.types or any(
            event.type.startswith(t[:-1]) if t.endswith(".*") else event.type == t for t in self.types)


def event_message(event: Event) -> dict[str, Any]:
    """The wire form of an event (WebSocket frames and the polling endpoint)."""
    return {"id": event.id, "type": event.type, "time": to_text(event.time), "workspace_id": event.workspace_id,
            "owner": event.owner, "payload": event.payload}


def heartbeat_message(last_id: int) -> dict[str, Any]:
    return {"type": "heartbeat", "time": to_text(utcnow()), "last_id": last_id}


def gap_message(first: int, last: int) -> dict[str, Any]:
    return {"type": "gap", "from": first, "to": last, "detail": f"events {first}..{last} were pruned"}


class Subscription:
    """Live events for one consumer on one event loop, delivered from the writer's thread."""

    def __init__(self, event_filter: EventFilter, loop: asyncio.AbstractEventLoop) -> None:
        self.filter = event_filter
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.lagged = False
        self._ready = asyncio.Event()

    def put(self, event: Event) -> None:
        """On the subscription's loop."""
        if self.queue.qsize() >= LIVE_BACKLOG:
            self.lagged = True  # stop buffering; the consumer re-reads the database
        else:
            self.queue.put_nowait(event)
        self._ready.set()

    async def next(self, timeout: float) -> Event | None:
        """The next live event, or None after `timeout` seconds of silence or when lagged."""
        if self.queue.empty() and not self.lagged:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        return None if self.lagged or self.queue.empty() else self.queue.get_nowait()

    def drain(self) -> None:
        """Forget what is buffered (after a catch-up from the database)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.lagged = False


def _put_all(subscriptions: list[Subscription], event: Event) -> None:
    for subscription in subscriptions:
        subscription.put(event)


class EventBus:
    """Fans every committed event out to the subscriptions whose filter matches. A stream of one
    workspace's events counts as activity on it while it is open (`activity`)."""

    def __init__(self, store: Store, activity: Activity | None = None) -> None:
        self.store = store
        self.activity = activity
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        store.subscribe(self._deliver)

    def subscribe(self, event_filter: EventFilter) -> Subscription:
        subscription = Subscription(event_filter, asyncio.get_running_loop())
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def _deliver(self, event: Event) -> None:
        """On the writer's thread, under the store's lock: one wake-up per event loop, never a wait."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscription]] = defaultdict(list)
        with self._lock:
            for subscription in self._subscriptions:
                if subscription.filter.matches(event):
                    by_loop[subscription.loop].append(subscription)
        for loop, subscriptions in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, subscriptions, event)
            except RuntimeError:  # that event loop has closed
                for subscription in subscriptions:
                    self.unsubscribe(subscription)

    async def stream(self, event_filter: EventFilter, since: int | None,
                     heartbeat: float) -> AsyncGenerator[dict[str, Any], None]:
        """Messages for one consumer: a gap marker if events it asked for were pruned, the events after
        `since` (None: only new ones), a heartbeat once caught up, then live events, with a heartbeat
        after every `heartbeat` seconds of silence."""
        subscription = self.subscribe(event_filter)  # before reading the database: nothing slips between
        session = (self.activity.session(event_filter.workspace_id)
                   if self.activity is not None and event_filter.workspace_id is not None else None)
        try:
            last = since if since is not None else await asyncio.to_thread(self.store.last_event_id)
            behind = True
            while True:
                if behind:  # catch up from the database (at the start, and after falling too far behind)
                    subscription.drain()  # what it buffered so far is in the database too
                    async for message in self._replay(event_filter, last):
                        last = message["id"] if "id" in message else message["to"]
                        yield message
                    behind, event = False, None
                else:
                    event = await subscription.next(heartbeat)
                    behind = subscription.lagged
                    if behind:
                        continue
                if event is None:
                    yield heartbeat_message(last)
                elif event.id > last:  # anything older came with the replay
                    last = event.id
                    yield event_message(event)
        finally:
            self.unsubscribe(subscription)
            if session is not None:
                session.release()

    async def wait_operation(self, operation: Operation, timeout: float,
                             gone: Callable[[], Awaitable[bool]] | None = None) -> Operation:
        """`operation` once it has ended, or as it is after `timeout` seconds, or as soon as `gone()` says
        the waiter has left. Waits on the committed events, holding no thread."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0)
        subscription = self.subscribe(EventFilter(owner=operation.owner, workspace_id=operation.workspace_id,
                                                  types=("operation.status",)))
        try:
            changed = True  # read again after subscribing: nothing can end unseen in between
            while True:
                if changed:
                    operation = await asyncio.to_thread(self.store.get_operation, operation.id)
                remaining = deadline - loop.time()
                if operation.status.finished or remaining <= 0 or (gone is not None and await gone()):
                    return operation
                event = await subscription.next(min(remaining, GONE_CHECK))
                changed = subscription.lagged or (event is not None
                                                  and event.payload.get("operation_id") == operation.id)
                if subscription.lagged:
                    subscription.drain()
        finally:
            self.unsubscribe(subscription)

    async def _replay(self, event_filter: EventFilter, since: int) -> AsyncIterator[dict[str, Any]]:
        pruned = await asyncio.to_thread(self.store.pruned_through)
        if pruned > since:
            if since > 0:  # 0 asks for whatever is kept: nothing was missed
                yield gap_message(since + 1, pruned)
            since = pruned
        while True:
            page = await asyncio.to_thread(self.store.list_events, since, event_filter.owner,
                                           event_filter.workspace_id, event_filter.types, REPLAY_PAGE)
            for event in page:
                since = event.id
                yield event_message(event)
            if len(page) < REPLAY_PAGE:
                return


def prune_events(store: Store, retention_seconds: float) -> int:
    """Drop events older than the retention (the pruner worker's task)."""
    removed = store.prune_events(utcnow() - timedelta(seconds=retention_seconds))
    if removed:
        log.info("pruned %d events older than %s s", removed, retention_seconds)
    return removed


def announce_expiry(store: Store, workspace: Workspace, stage: str) -> Event | None:
    """A `workspace.expiring` event, once per workspace, expiry time and stage ('warning' when inside the
    warning window, 'expired' right before the janitor acts)."""
    payload = {"name": workspace.name, "stage": stage, "expires_at": to_text(workspace.expires_at),
               "action": "delete"}
    return store.add_event_once(EXPIRING, workspace.id, workspace.owner, payload)


def warn_expiring(store: Store, window_seconds: float) -> list[Event]:
    """Warn about every workspace that expires within the window (the janitor runs this each sweep)."""
    now = utcnow()
    sent = []
    for workspace in store.expired_workspaces(now + timedelta(seconds=window_seconds)):
        expires_at = workspace.expires_at
        if expires_at is not None and expires_at > now and workspace.status != WorkspaceStatus.DELETING:
            event = announce_expiry(store, workspace, "warning")
            if event is not None:
                sent.append(event)
    return sent
