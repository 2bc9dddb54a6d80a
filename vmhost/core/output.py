"""An operation's output (provisioning, a clone) as it is recorded: bounded and batched.

The operation keeps the last MAX_OUTPUT characters; when more came, its first line says how many
were dropped. New output is written at most every FLUSH_INTERVAL seconds (less often once the kept
output is large, so rewriting it costs at most WRITE_RATE characters a second), with one
`operation.output` event per stream per write, of at most MAX_EVENT characters (a line says how
many were skipped). However much a command prints, the database sees a few writes a second.
"""

from __future__ import annotations

import codecs
import logging
import re
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from vmhost.errors import VmhostError

if TYPE_CHECKING:
    from vmhost.core.store import Store

log = logging.getLogger(__name__)

MAX_OUTPUT = 1024 * 1024
MAX_EVENT = 64 * 1024
FLUSH_INTERVAL = 0.25
WRITE_RATE = 1024 * 1024
STREAMS = ("stdout", "stderr")

_dropped_line = re.compile(r"\A\[vmhost: (\d+) earlier characters of output dropped\]\n")


def dropped_line(count: int) -> str:
    return f"[vmhost: {count} earlier characters of output dropped]\n"


def split_output(output: str) -> tuple[int, str]:
    """A stored output as (characters dropped before it, the characters kept)."""
    found = _dropped_line.match(output)
    return (int(found[1]), output[found.end():]) if found else (0, output)


class _Tail:
    """The last `limit` characters of some text, and how many came before them."""

    def __init__(self, limit: int, text: str = "", dropped: int = 0) -> None:
        self.limit = limit
        self.pieces = [text] if text else []
        self.size = len(text)
        self.dropped = dropped

    def add(self, text: str) -> None:
        self.pieces.append(text)
        self.size += len(text)
        if self.size > 2 * self.limit:  # trimming copies: do it once per `limit` characters at most
            self.text()

    def text(self) -> str:
        """The kept characters (at most `limit`)."""
        text = "".join(self.pieces)
        if len(text) > self.limit:
            self.dropped += len(text) - self.limit
            text = text[-self.limit:]
        self.pieces, self.size = [text] if text else [], len(text)
        return text

    def clear(self) -> None:
        self.pieces, self.size, self.dropped = [], 0, 0


class OperationOutput:
    """Records the output of one operation's commands; call it with (stream, chunk). Use it as a
    context manager: leaving it writes what is left (a last line without a newline too)."""

    def __init__(self, store: Store, operation_id: str, recorded: str = "") -> None:
        self.store = store
        self.operation_id = operation_id
        dropped, kept = split_output(recorded)
        self._kept = _Tail(MAX_OUTPUT, kept, dropped)
        self._new = {stream: _Tail(MAX_EVENT) for stream in STREAMS}
        self._decoders = {stream: codecs.getincrementaldecoder("utf-8")(errors="replace") for stream in STREAMS}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._changed = False

    def __enter__(self) -> OperationOutput:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def __call__(self, stream: str, chunk: bytes) -> None:
        with self._lock:
            self._add(stream, self._decoders[stream].decode(chunk))

    def close(self) -> None:
        """Write everything now and stop the timer."""
        with self._lock:
            for stream, decoder in self._decoders.items():
                self._add(stream, decoder.decode(b"", final=True))
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._write()

    def _add(self, stream: str, text: str) -> None:
        if not text:
            return
        self._kept.add(text)
        self._new[stream].add(text)
        self._changed = True
        if self._timer is None:
            delay = max(FLUSH_INTERVAL, min(self._kept.size, MAX_OUTPUT) / WRITE_RATE)
            self._timer = threading.Timer(delay, self._flush_due)
            self._timer.daemon = True
            self._timer.start()

    def _flush_due(self) -> None:
        with self._lock:
            self._timer = None
            try:
                self._write()
            except VmhostError as exc:  # the database is away: the next write carries this output too
                log.warning("cannot record output of operation %s yet: %s", self.operation_id, exc.detail)

    def _write(self) -> None:
        if not self._changed:
            return
        kept = self._kept.text()
        output = (dropped_line(self._kept.dropped) if self._kept.dropped else "") + kept
        chunks = [(stream, (f"[vmhost: {new.dropped} characters of output skipped]\n" if new.dropped else "")
                   + new.text()) for stream, new in self._new.items() if new.size]
        self.store.record_output(self.operation_id, output, chunks)
        for new in self._new.values():
            new.clear()
        self._changed = False
