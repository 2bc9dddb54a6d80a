"""Every collection answers `{"items": [...], "next_cursor": ...}`, `limit` items at most, and pages by
keyset: a cursor names the last item's sort key, so rows written between two pages never make a later
page repeat or skip an item. Bad `limit` and `cursor` values are refused with a detail a person can use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, all_items
from test_completions import bash_complete

from vmhost.core.audit import AuditEntry, AuditLog
from vmhost.core.engines import Engine
from vmhost.core.models import (
    Caller,
    Operation,
    OperationStatus,
    OperationType,
    Scope,
    Token,
    Workspace,
    WorkspaceStatus,
    new_id,
)
from vmhost.core.paging import Order
from vmhost.core.rows import to_text
from vmhost.core.store import Store
from vmhost.errors import InvalidInput
from vmhost.testing import remove_instance_objects

BASE = datetime(2026, 1, 1, tzinfo=UTC)
SEEDED = {"alice": 250, "bob": 20, "dave": 150, "carol": 1001}  # carol's make the admin's list over 1,000


def insert(store: Store, owner: str, name: str, created: datetime) -> str:
    """A workspace as a finished create leaves it, with its create operation, but in status `error` (it
    has no container, and the reconciler leaves it be); returns its id."""
    workspace = Workspace(id=new_id("ws"), name=name, owner=owner, template="base", image="busybox",
                          status=WorkspaceStatus.ERROR, status_reason="seeded", created_at=created, updated_at=created)
    operation = Operation(id=new_id("op", 8), type=OperationType.CREATE, status=OperationStatus.PENDING,
                          workspace_id=workspace.id, workspace_name=name, owner=owner, requested_by=owner,
                          created_at=created)
    store.insert_workspace(workspace, operation)
    store.finish_operation(operation.id, OperationStatus.SUCCEEDED)
    return workspace.id


def seed(store: Store, owner: str, count: int) -> None:
    """`count` workspaces of `owner`, three to a creation time, so that ties meet at page boundaries."""
    with store.transaction():
        for number in range(count):
            insert(store, owner, f"{owner}-{number:04d}", BASE + timedelta(seconds=number // 3))


@pytest.fixture(scope="module")
def seeded(templates_dir: Path, docker_engine: Engine) -> Iterator[Daemon]:
    """A daemon whose database holds the workspaces of `SEEDED` before it starts."""
    process = Daemon(templates_dir)
    store = Store(process.db_path)
    try:
        for owner, count in SEEDED.items():
            seed(store, owner, count)
    finally:
        store.close()
    process.start()
    yield process
    process.cleanup()
    remove_instance_objects(docker_engine, process.instance)


def pages(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a collection, following next_cursor."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        found.append(response.json())
        cursor = found[-1]["next_cursor"]
        if cursor is None:
            return found


def seeded_order(store_path: Path, owner: str) -> list[str]:
    """The owner's workspace ids in the list's order, read straight from the database."""
    store = Store(store_path)
    try:
        return [w.id for w in store.list_workspaces(owner=owner)]
    finally:
        store.close()


# -- the API ----------------------------------------------------------------------------------------

def test_250_workspaces_in_pages_of_100_come_each_exactly_once_in_order(seeded: Daemon) -> None:
    with seeded.tcp(seeded.token("alice")) as alice:
        answered = pages(alice, "/api/v1/workspaces", limit=100)
        assert [len(p["items"]) for p in answered] == [100, 100, 50]
        assert all(set(p) == {"items", "next_cursor"} for p in answered)
        ids = [w["id"] for p in answered for w in p["items"]]
        assert ids == seeded_order(seeded.db_path, "alice")  # oldest first, ties by id, none twice
        assert len(set(ids)) == 250
        # a page asked again is the same answer (the list cache keys on limit and cursor)
        again = alice.get("/api/v1/workspaces", params={"limit": 100, "cursor": answered[0]["next_cursor"]})
        assert again.json() == answered[1]
        assert len(alice.get("/api/v1/workspaces").json()["items"]) == 100  # the default limit


def test_a_row_written_between_pages_neither_repeats_nor_skips_an_item(seeded: Daemon) -> None:
    before = seeded_order(seeded.db_path, "dave")
    with seeded.tcp(seeded.token("dave")) as dave:
        first = dave.get("/api/v1/workspaces", params={"limit": 60}).json()
        store = Store(seeded.db_path)  # another process writing, as the daemon's own writes would
        try:
            insert(store, "dave", "dave-early", BASE - timedelta(days=1))  # before the cursor: would shift an offset
            store.delete_workspace(first["items"][0]["id"])  # a row of page one goes: would make an offset skip one
            later = insert(store, "dave", "dave-late", BASE + timedelta(days=1))
        finally:
            store.close()
        rest = pages(dave, "/api/v1/workspaces", limit=60, cursor=first["next_cursor"])
    ids = [w["id"] for w in first["items"]] + [w["id"] for p in rest for w in p["items"]]
    assert ids == before + [later]  # every item once, in order; the new one in its place, the end


def test_another_users_items_never_appear_in_a_page(seeded: Daemon) -> None:
    with seeded.client() as root:
        everyone = root.get("/api/v1/workspaces", params={"limit": 300}).json()  # every owner's, interleaved
    with seeded.tcp(seeded.token("bob")) as bob, seeded.tcp(seeded.token("bob")) as bob_again:
        mine = [w for p in pages(bob, "/api/v1/workspaces", limit=7) for w in p["items"]]
        assert len(mine) == 20 and {w["owner"] for w in mine} == {"bob"}
        operations = [o for p in pages(bob, "/api/v1/operations", limit=7) for o in p["items"]]
        assert len(operations) == 20 and {o["owner"] for o in operations} == {"bob"}
        tokens = [t for p in pages(bob_again, "/api/v1/tokens", limit=1) for t in p["items"]]
        assert len(tokens) == 2 and {t["user"] for t in tokens} == {"bob"}
        # a cursor from the admin's list, in the middle of other users' rows, still pages bob's own only
        after = pages(bob, "/api/v1/workspaces", limit=100, cursor=everyone["next_cursor"])
        assert {w["owner"] for p in after for w in p["items"]} <= {"bob"}
        events = [e for p in pages(bob, "/api/v1/events", limit=10) for e in p["items"]]
        assert events and {e["owner"] for e in events} == {"bob"}


LIST_PATHS = ("/api/v1/workspaces", "/api/v1/operations", "/api/v1/tokens", "/api/v1/templates", "/api/v1/events",
              "/api/v1/audit", "/api/v1/orphans", "/api/v1/workspaces/alice-0000/snapshots")


def test_limit_out_of_range_and_a_malformed_cursor_are_refused_with_a_detail(seeded: Daemon) -> None:
    with seeded.client() as root:
        tokens_cursor = root.get("/api/v1/tokens", params={"limit": 1}).json()["next_cursor"]
        assert tokens_cursor is not None
        for path in LIST_PATHS:
            if path.endswith("/snapshots"):
                path = path.replace("alice-0000", seeded_order(seeded.db_path, "alice")[0])
            for limit, words in (("0", "greater than or equal to 1"), ("1001", "less than or equal to 1000"),
                                 ("ten", "a valid integer")):
                refused = root.get(path, params={"limit": limit})
                assert refused.status_code == 422, (path, limit, refused.text)
                assert refused.json() == {"detail": f"query.limit: Input should be {words}"
                                          + (", unable to parse string as an integer" if limit == "ten" else ""),
                                          "code": "invalid_input"}, (path, refused.text)
            for cursor, why in (("not a cursor!", "not a cursor this daemon wrote"),
                                (Order("other", {"id": int}).encode((1,)), "not a cursor of the"),
                                ("x" * 2000, "longer than 1024 characters")):
                refused = root.get(path, params={"cursor": cursor})
                assert refused.status_code == 422, (path, cursor, refused.text)
                detail = refused.json()["detail"]
                assert why in detail and "pass the next_cursor of the previous page unchanged" in detail, detail
            if path != "/api/v1/tokens":
                assert root.get(path, params={"cursor": tokens_cursor}).status_code == 422, path
        assert root.get("/health").json()["status"] == "ok"


def test_templates_page_by_name_and_every_page_tells_the_broken_files(seeded: Daemon) -> None:
    with seeded.client() as root:
        answered = pages(root, "/api/v1/templates", limit=2)
    names = [t["name"] for p in answered for t in p["items"]]
    assert names == sorted(names) and {"base", "web", "python", "nodejs"} <= set(names)
    assert all(len(p["items"]) <= 2 for p in answered) and len(answered) == (len(names) + 1) // 2
    assert all([Path(b["source"]).name for b in p["broken"]] == ["broken.toml"] for p in answered)


def test_the_event_poll_pages_and_keeps_last_id(seeded: Daemon) -> None:
    with seeded.tcp(seeded.token("bob")) as bob:
        answered = pages(bob, "/api/v1/events", limit=15)
        everything = bob.get("/api/v1/events", params={"limit": 1000}).json()
    assert [e["id"] for p in answered for e in p["items"]] == [e["id"] for e in everything["items"]]
    assert all(p["last_id"] == p["items"][-1]["id"] for p in answered[:-1])
    assert answered[-1]["last_id"] == everything["last_id"] and everything["next_cursor"] is None


def test_the_cli_and_tab_completion_follow_next_cursor(seeded: Daemon) -> None:
    with seeded.client() as root:
        everyone = all_items(root, "/api/v1/workspaces")
    assert len(everyone) > 1000  # more than one page of the CLI's 1,000
    listed = seeded.cli("ws", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [w["id"] for w in json.loads(listed.stdout)] == [w["id"] for w in everyone]  # still a plain list
    table = seeded.cli("ws", "ls")
    assert table.returncode == 0 and table.stdout.count("carol-") == 1001
    names = bash_complete(["vmhost", "ws", "show", "carol-"], {"VMHOST_SOCKET": str(seeded.socket)})
    assert names == [f"carol-{number:04d}" for number in range(1001)]
    operations = seeded.cli("ops", "ls", "--limit", "1200", "--json")
    assert operations.returncode == 0 and len(json.loads(operations.stdout)) == 1200, operations.stderr


# -- the core, without a daemon ---------------------------------------------------------------------

def test_a_cursor_holds_the_collection_and_key_and_refuses_anything_else() -> None:
    order = Order("workspaces", {"created_at": str, "id": str})
    cursor = order.encode(("2026-01-01T00:00:00.000+00:00", "ws_1"))
    assert order.decode(cursor) == ("2026-01-01T00:00:00.000+00:00", "ws_1")
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor  # safe in a query string as it is
    for bad in ("", "%%%", "bm90IGpzb24", Order("tokens", {"created_at": str, "id": str}).encode(("t", "i")),
                Order("workspaces", {"created_at": str}).encode(("t",)),
                Order("workspaces", {"created_at": int, "id": str}).encode((5, "i")), "é"):
        with pytest.raises(InvalidInput, match="pass the next_cursor of the previous page unchanged"):
            order.decode(bad)


@dataclass(frozen=True)
class Item:
    kind: str
    id: str


def test_a_list_made_in_memory_pages_the_same_way() -> None:
    order = Order("orphans", {"kind": str, "id": str})
    items = [Item(kind, str(number)) for kind in ("volume", "container", "image") for number in range(5)]

    def key(item: Item) -> tuple[str, str]:
        return item.kind, item.id

    first = order.page_of(items, 6, None, key)
    assert [key(i) for i in first.items] == sorted(map(key, items))[:6] and first.next_cursor
    items.append(Item("container", "00"))  # sorts before the cursor: not shown, nothing shifts
    rest = order.page_of(items, 100, first.next_cursor, key)
    assert [key(i) for i in first.items + rest.items] == sorted(map(key, items[:-1]))
    assert rest.next_cursor is None
    newest_first = Order("x", {"id": str}, descending=True)
    page = newest_first.page_of([Item("a", "1"), Item("a", "3"), Item("a", "2")], 2, None, lambda i: (i.id,))
    assert [i.id for i in page.items] == ["3", "2"]
    assert [i.id for i in newest_first.page_of([Item("a", "1"), Item("a", "3"), Item("a", "2")], 2,
                                                page.next_cursor, lambda i: (i.id,)).items] == ["1"]
    with pytest.raises(InvalidInput, match="limit must be between 1 and 1000"):
        order.page_of(items, 0, None, key)


def walk(read: Any, limit: int) -> list[Any]:
    """Every item of a store's paged read, page after page."""
    found, cursor = [], None
    while True:
        page = read(limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            return found


def test_the_store_pages_each_collection_in_its_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "paging.db")
    try:
        seed(store, "alice", 40)
        seed(store, "bob", 5)
        for number in range(30):
            token = Token(id=new_id("tok"), user="alice" if number % 2 else "bob", name="", scope=Scope.WRITE,
                          admin=False, created_at=BASE + timedelta(seconds=number // 4))
            store.insert_token(token, f"hash{number}")
        audit = AuditLog(store)
        for number in range(25):
            audit.record(AuditEntry(door="socket", method="POST", path=f"/{number}", status=200, user="root"))

        workspaces = walk(lambda **kw: store.page_workspaces(owner="alice", **kw), 7)
        assert [w.id for w in workspaces] == [w.id for w in store.list_workspaces(owner="alice")]
        assert len(workspaces) == 40 and [w.created_at for w in workspaces] == sorted(w.created_at for w in workspaces)
        operations = walk(lambda **kw: store.page_operations(owner="alice", **kw), 6)
        assert len(operations) == 40 and len({o.id for o in operations}) == 40
        assert [(o.created_at, o.id) for o in operations] == sorted(((o.created_at, o.id) for o in operations),
                                                                     reverse=True)  # newest first
        tokens = walk(lambda **kw: store.page_tokens("alice", **kw), 4)
        assert len(tokens) == 15 and [(t.created_at, t.id) for t in tokens] == sorted((t.created_at, t.id)
                                                                                       for t in tokens)
        entries = walk(lambda **kw: audit.search(Caller(user="root", admin=True), **kw), 10)
        assert [e.path for e in entries] == [f"/{n}" for n in reversed(range(25))]  # newest first
        events = store.page_events(0, "bob", limit=4)
        assert [e.id for e in events.items] == [e.id for e in store.list_events(0, "bob")][:4]
        assert Order("events", {"id": int}).decode(events.next_cursor) == (events.items[-1].id,)
        assert to_text(BASE) < to_text(BASE + timedelta(milliseconds=1))  # stored times sort as they compare
    finally:
        store.close()
