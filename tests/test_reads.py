"""Reads under load: they do not wait for a write transaction, and the in-memory token cache never
lets a revoked token back in, whichever process revoked it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
from conftest import Daemon

from vmhost.core.models import Scope, Token, utcnow
from vmhost.core.store import Store
from vmhost.core.tokencache import TokenCache


def test_reads_answer_while_a_write_waits_on_a_long_write_transaction(daemon: Daemon, api: httpx.Client) -> None:
    # Another process holds SQLite's write lock, so the daemon's next write waits (busy_timeout, 30 s)
    # inside its write transaction. Reads go through connections of their own and must not wait for it.
    holder = sqlite3.connect(daemon.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    created: list[httpx.Response] = []
    writer = threading.Thread(target=lambda: created.append(api.post("/api/v1/tokens", json={"user": "walt"})))
    try:
        writer.start()
        writer.join(1.0)
        assert not created, "the write should be waiting for the lock held above"
        with daemon.client(timeout=15) as reader:  # well under the writer's 30 s wait
            assert reader.get("/api/v1/workspaces").status_code == 200
            assert reader.get("/api/v1/tokens").status_code == 200
            assert reader.get("/api/v1/me").status_code == 200
            assert reader.get("/api/v1/events").status_code == 200
            assert reader.get("/api/v1/templates").status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        writer.join(60)
    assert created and created[0].status_code == 201, created


def test_a_revoked_token_is_refused_at_once_though_tokens_are_cached(daemon: Daemon, api: httpx.Client) -> None:
    first = api.post("/api/v1/tokens", json={"user": "rita"}).json()
    second = api.post("/api/v1/tokens", json={"user": "rita"}).json()
    with daemon.tcp(first["secret"]) as by_first, daemon.tcp(second["secret"]) as by_second:
        for _ in range(3):  # checked, then served from the cache
            assert by_first.get("/api/v1/workspaces").status_code == 200
            assert by_second.get("/api/v1/workspaces").status_code == 200

        # revoked through this daemon
        assert api.delete(f"/api/v1/tokens/{first['token']['id']}").status_code == 200
        refused = by_first.get("/api/v1/workspaces")
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

        # revoked by another process writing to the same database
        other = Store(daemon.db_path)
        try:
            other.revoke_token(second["token"]["id"])
        finally:
            other.close()
        refused = by_second.get("/api/v1/workspaces")
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def found_id(cache: TokenCache, token_hash: str) -> str | None:
    token = cache.find(token_hash)
    return token and token.id


def test_unknown_token_hashes_are_remembered_until_a_token_is_created(tmp_path: Path) -> None:
    store = Store(tmp_path / "tokens.db")
    reads: list[str] = []
    token_by_hash = store.token_by_hash
    store.token_by_hash = lambda h: reads.append(h) or token_by_hash(h)  # type: ignore[method-assign]
    cache = TokenCache(store, entries=2, unknown_entries=4)
    try:
        real = Token(id="tok_real", user="rita", name="r", scope=Scope.WRITE, admin=False, created_at=utcnow())
        store.insert_token(real, "real-hash")
        assert found_id(cache, "real-hash") == "tok_real"
        for _ in range(3):
            assert cache.find("guess") is None
        assert reads.count("guess") == 1  # an unknown hash is read once while the tokens stand still

        for n in range(100):  # a flood of guesses stays bounded and leaves the real token in place
            assert cache.find(f"guess-{n}") is None
        assert len(cache._unknown) == 4
        assert found_id(cache, "real-hash") == "tok_real" and reads.count("real-hash") == 1

        later = Token(id="tok_later", user="rita", name="l", scope=Scope.WRITE, admin=False, created_at=utcnow())
        store.insert_token(later, "guess")  # a token created after its hash was refused is found at once
        assert found_id(cache, "guess") == "tok_later"
    finally:
        store.close()
