"""How many connections the daemon holds, and for how long one may sit waiting for a request.

- A connection has `header_timeout` seconds from its opening (or from the first byte of its next
  request) to send a whole request head; then it is closed. A request body that goes `body_timeout`
  seconds without a byte arriving (while the daemon is ready to read it) is answered 408, if nothing
  was answered yet, and its connection closed: a client trickling a body holds no connection. Idle
  keep-alive connections are closed after uvicorn's `timeout_keep_alive`, set longer than common
  clients keep theirs (see serve.py).
- At most `limit` connections are held, and TCP may use all but `unix_reserve` of them, so an admin
  on the host can always come in over the Unix socket. When a new connection finds no room, the one
  that has waited longest for a request (idle, or still sending its head) is closed to make room;
  connections in the middle of a request are never closed for this. With none to close, the new
  connection is closed at once.
- The limit is held below the descriptors the process may open (RLIMIT_NOFILE), so `accept()` never
  fails for want of one: a full table would lock every listener out, the Unix socket's too.
- Refusals and other per-connection trouble are logged once a minute with a count, never per event.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import h11

from vmhost.daemon.peercred import PeerH11Protocol, PeerWebSocketProtocol

log = logging.getLogger(__name__)

FDS_PER_CONNECTION = 4  # its socket, a thread's two SQLite descriptors, a Docker stream
FD_HEADROOM = 256       # the database, Docker's connection pool, listeners, logs, spares
SUMMARY_INTERVAL = 60.0
_TIMEOUT_DETAIL = b'{"detail":"the request body stopped arriving (VMHOST_BODY_TIMEOUT); send it again"}'
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                   b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_DETAIL), _TIMEOUT_DETAIL))


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd starts services at 1,024 soft); the
    soft limit afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def connection_limit(wanted: int, descriptors: int) -> int:
    """`wanted`, or fewer when the process may not open enough descriptors to hold that many."""
    return max(1, min(wanted, (descriptors - FD_HEADROOM) // FDS_PER_CONNECTION))


class RepeatFilter(logging.Filter):
    """Lets the first record of each kind through, then holds back the same kind (logger and message
    template) for `interval` seconds; the next one that passes says how many were held back."""

    def __init__(self, interval: float = SUMMARY_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n", 1)[0][:200])
        now = time.monotonic()
        since, held = self._seen.get(key, (0.0, 0))
        if since and now - since < self.interval:
            self._seen[key] = (since, held + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.interval:.0f} s)"
        return True


def quiet_repeats(*loggers: str) -> None:
    """Per-connection errors (uvicorn's, asyncio's accept failures) are logged once a minute, not per
    connection: a flood of bad connections must not become a flood of log lines."""
    for name in loggers:
        target = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in target.filters):
            target.addFilter(RepeatFilter())


@dataclass
class ConnectionTable:
    """Every connection the server holds, and which of them wait for a request (oldest first)."""

    limit: int
    unix_reserve: int
    header_timeout: float
    body_timeout: float
    held: dict[Any, bool] = field(default_factory=dict)  # transport: on the Unix socket?
    waiting: OrderedDict[Any, None] = field(default_factory=OrderedDict)  # transports, oldest first
    tcp_count: int = 0

    def __post_init__(self) -> None:
        self.unix_reserve = min(self.unix_reserve, self.limit // 2)

    @property
    def tcp_limit(self) -> int:
        return self.limit - self.unix_reserve

    def admit(self, transport: Any) -> bool:
        """Hold a new connection (closing the longest waiting one if that makes room); False when there
        is no room. A transport already held (an upgrade to WebSocket) keeps its place."""
        if transport in self.held:
            return True
        unix = _is_unix(transport)
        full = len(self.held) >= self.limit or (not unix and self.tcp_count >= self.tcp_limit)
        if full and not self._make_room(unix):
            log.warning("refused a %s connection: all %d connections it may use are taken (VMHOST_MAX_CONNECTIONS; "
                        "%d are kept for the Unix socket)", "Unix socket" if unix else "TCP",
                        self.limit if unix else self.tcp_limit, self.unix_reserve)
            return False
        self.held[transport] = unix
        self.tcp_count += not unix
        return True

    def _make_room(self, unix: bool) -> bool:
        """Close the TCP connection that has waited longest for a request; for a Unix socket newcomer,
        else the longest waiting one of the Unix socket."""
        for tcp_only in (True, False) if unix else (True,):
            victim = next((t for t in self.waiting if not (tcp_only and self.held[t])), None)
            if victim is not None:
                log.info("closed the connection that waited longest for a request, to make room for a new one")
                self.release(victim)
                victim.close()
                return True
        return False

    def set_waiting(self, transport: Any, waiting: bool) -> None:
        if transport not in self.held:
            return
        if waiting:
            self.waiting.setdefault(transport, None)
        else:
            self.waiting.pop(transport, None)

    def release(self, transport: Any) -> None:
        unix = self.held.pop(transport, None)
        if unix is not None:
            self.tcp_count -= not unix
            self.waiting.pop(transport, None)


def _is_unix(transport: Any) -> bool:
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.family == socket.AF_UNIX


class _GuardedHttp(PeerH11Protocol):
    """HTTP/1.1 with the table's admission, the request-head timeout and the request-body timeout."""

    table: ConnectionTable
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_at: float = 0.0  # when the body last moved (a byte came, or the app was busy reading)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self.table.admit(transport):
            transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        if self.transport.get_protocol() is self:  # else it was upgraded: the WebSocket releases it
            self.table.release(self.transport)
        super().connection_lost(exc)

    def _watch(self) -> None:
        """After each step: between requests the connection waits (and may be closed to make room);
        from its opening, or the first byte of a request, it has `header_timeout` for the whole head."""
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            self._stop_head_timer()
            self._stop_body_timer()
            return
        self._watch_body()
        waiting = self.conn.their_state is h11.IDLE
        self.table.set_waiting(transport, waiting)
        idle = self.cycle is not None and not self.conn.trailing_data[0]  # uvicorn's keep-alive timer runs
        if not waiting or idle:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.table.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.table.release(self.transport)
            self.transport.close()

    def _watch_body(self) -> None:
        """While a request body is being received, each step counts as movement; the timer (one per
        body, not one per chunk) looks at the last movement when it fires."""
        if self.conn.their_state is not h11.SEND_BODY:
            self._stop_body_timer()
            return
        self._body_at = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.table.body_timeout, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        if self.flow.read_paused:  # the app has not taken what came: the client is not the slow one
            self._body_at = self.loop.time()
        left = self._body_at + self.table.body_timeout - self.loop.time()
        if left > 0:
            self._body_timer = self.loop.call_later(left, self._body_check)
            return
        if self.conn.our_state is h11.SEND_RESPONSE:  # nothing answered yet
            self.transport.write(REQUEST_TIMEOUT)
        self.table.release(self.transport)
        self.transport.close()

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class _GuardedWebSocket(PeerWebSocketProtocol):
    """A WebSocket holds the place its HTTP connection had until it closes."""

    table: ConnectionTable

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self.table.admit(transport):
            transport.close()
            return
        self.table.set_waiting(transport, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.table.release(self.transport)
        super().connection_lost(exc)


def guarded_protocols(table: ConnectionTable) -> tuple[type[PeerH11Protocol], type[PeerWebSocketProtocol]]:
    """The HTTP and WebSocket protocol classes for uvicorn.Config(http=..., ws=...), bound to `table`."""
    http = type("GuardedHttp", (_GuardedHttp,), {"table": table})
    websocket = type("GuardedWebSocket", (_GuardedWebSocket,), {"table": table})
    return http, websocket
