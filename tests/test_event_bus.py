"""The event bus on its own (no daemon, no Docker): replay stitched to the live tail while writers
keep writing, a consumer that falls too far behind, filters, and gaps after pruning."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path

from vmhost.core import events
from vmhost.core.events import EventBus, EventFilter
from vmhost.core.models import utcnow
from vmhost.core.store import Store


def write(store: Store, count: int, type: str = "test.tick", owner: str = "alice") -> None:
    for number in range(count):
        with store.transaction() as conn:
            store.add_event(conn, type, "ws_1", owner, {"n": number})


async def collect(stream, count: int) -> list[dict]:
    got = []
    while len([m for m in got if "id" in m]) < count:
        got.append(await asyncio.wait_for(anext(stream), 10))
    return got


def test_replay_and_live_tail_are_stitched_while_writers_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.db")
    write(store, 300)

    async def main() -> list[int]:
        bus = EventBus(store)
        writer = threading.Thread(target=write, args=(store, 300))
        stream = bus.stream(EventFilter(), 0, 5)
        writer.start()  # events land during the replay and after it
        got = await collect(stream, 600)
        await stream.aclose()
        writer.join()
        return [m["id"] for m in got if "id" in m]

    assert asyncio.run(main()) == list(range(1, 601))


def test_a_consumer_too_far_behind_catches_up_from_the_database(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(events, "LIVE_BACKLOG", 5)
    store = Store(tmp_path / "e.db")

    async def main() -> list[int]:
        bus = EventBus(store)
        stream = bus.stream(EventFilter(), None, 5)
        assert (await anext(stream))["type"] == "heartbeat"
        await asyncio.to_thread(write, store, 40)  # the consumer reads nothing meanwhile
        got = await collect(stream, 40)
        await stream.aclose()
        return [m["id"] for m in got if "id" in m]

    assert asyncio.run(main()) == list(range(1, 41))


def test_filters_owner_workspace_and_type_families(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.db")
    write(store, 2, "workspace.status", "alice")
    write(store, 2, "operation.status", "alice")
    write(store, 2, "workspace.status", "bob")
    mine = EventFilter(owner="alice", types=("workspace.*",))
    assert [e.id for e in store.list_events(0, mine.owner, None, mine.types)] == [1, 2]
    assert [e.id for e in store.list_events(0, None, None, ("operation.status", "workspace.*"))] == [1, 2, 3, 4, 5, 6]
    assert all(mine.matches(e) == (e.id in (1, 2)) for e in store.list_events(0))
    assert store.list_events(0, types=("workspace_*",)) == []  # '_' is not a wildcard


def test_pruned_events_become_a_gap_and_ids_never_come_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.db")
    write(store, 5)
    assert store.prune_events(utcnow() + timedelta(seconds=1)) == 5
    assert store.pruned_through() == store.last_event_id() == 5
    write(store, 1)
    assert [e.id for e in store.list_events(0)] == [6]

    async def main(since: int) -> list[dict]:
        stream = EventBus(store).stream(EventFilter(), since, 5)
        got = [await anext(stream), await anext(stream)]
        await stream.aclose()
        return got

    gap, event = asyncio.run(main(2))
    assert gap == {"type": "gap", "from": 3, "to": 5, "detail": "events 3..5 were pruned"}
    assert event["id"] == 6
    assert [m.get("id") for m in asyncio.run(main(0))] == [6, None]  # a new client missed nothing
