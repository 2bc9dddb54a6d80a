"""Per-user limits on long-lived sessions: streamed commands, operation waits, shells, log reads,
event streams, port tunnels,
preview requests and SSH connections. Each kind has its own limit per user; past it the caller gets
TooManyRequests at once, so one user holding many sessions never makes another user wait."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum

from vmhost.errors import TooManyRequests

RETRY_AFTER = 5
"""Seconds a refused caller is told to wait before trying again."""


class SessionKind(StrEnum):
    COMMAND_STREAM = "streamed commands"
    WAIT = "operation waits"
    SHELL = "shells"
    LOG_STREAM = "log streams"
    EVENT_STREAM = "event streams"
    TUNNEL = "tunnels"
    PREVIEW = "preview requests"
    SSH = "SSH connections"


class Session:
    """One open session; `release()` (idempotent, from any thread) gives its place back."""

    def __init__(self, gate: SessionGate, kind: SessionKind, user: str) -> None:
        self._gate = gate
        self.kind = kind
        self.user = user
        self._released = False

    def release(self) -> None:
        self._gate._release(self)


class SessionGate:
    """Counts each user's open sessions of each kind against `limits` (kind -> sessions per user)."""

    def __init__(self, limits: Mapping[SessionKind, int]) -> None:
        self.limits = dict(limits)
        self._open: Counter[tuple[SessionKind, str]] = Counter()
        self._lock = threading.Lock()

    def open(self, kind: SessionKind, user: str) -> Session:
        """A session of `kind` for `user`; TooManyRequests when the user already holds the limit."""
        limit = self.limits[kind]
        with self._lock:
            if self._open[kind, user] >= limit:
                raise TooManyRequests(f"too many {kind} at once: {user} already has {limit}, the most one user may "
                                      f"have; end one or try again in {RETRY_AFTER} s", retry_after=RETRY_AFTER)
            self._open[kind, user] += 1
        return Session(self, kind, user)

    def _release(self, session: Session) -> None:
        with self._lock:
            if session._released:
                return
            session._released = True
            key = (session.kind, session.user)
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]
