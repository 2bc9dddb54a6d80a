"""What the fake engine streams: container events, a container's output, and a terminal that echoes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from vmhost.core.engines.base import ContainerEvent, until_end
from vmhost.core.engines.fake_objects import Container
from vmhost.errors import ProviderError


class FakeEventStream:
    """The events of the containers carrying `labels`, as the engine `put`s them, until it `end`s the
    stream; `forget(stream)` is called when the reader closes it."""

    def __init__(self, labels: dict[str, str], forget: Callable[[FakeEventStream], None]) -> None:
        self.labels = labels
        self._forget = forget
        self._items: queue.SimpleQueue[ContainerEvent | BaseException | None] = queue.SimpleQueue()

    def put(self, event: ContainerEvent) -> None:
        self._items.put(event)

    def end(self, error: BaseException | None = None) -> None:
        """End the iteration, by raising `error` when given."""
        self._items.put(error)

    def __iter__(self) -> Iterator[ContainerEvent]:
        return until_end(self._items.get)

    def close(self) -> None:
        self._forget(self)
        self.end()


class FakeLogStream:
    """A container's output from line `start` on; following, it ends when the container stops running.
    `changed` is the engine's condition, notified on every change of its state."""

    def __init__(self, changed: threading.Condition, container: Container, start: int, follow: bool) -> None:
        self._changed = changed
        self._container = container
        self._next = start
        self._follow = follow
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closed or self._next < len(self._container.logs)
                                       or not (self._follow and self._container.status == "running"))
                lines = [] if self._closed else self._container.logs[self._next:]
                self._next += len(lines)
            if not lines:
                return
            yield b"".join(lines)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class EchoTerminal:
    """A terminal that echoes its input; `close()` ends it with exit code 0."""

    def __init__(self) -> None:
        self._echo: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._closed = threading.Event()

    def read(self) -> bytes:
        return b"" if self._closed.is_set() else self._echo.get()

    def write(self, data: bytes) -> None:
        if self._closed.is_set():
            raise ProviderError("the terminal is closed")
        self._echo.put(data)

    def resize(self, cols: int, rows: int) -> None:
        pass

    def exit_code(self) -> int | None:
        return 0 if self._closed.is_set() else None

    def close(self) -> None:
        self._closed.set()
        self._echo.put(b"")


class EchoProcess:
    """A command that writes its input back on stdout and ends with exit code 0 at its input's end."""

    def __init__(self) -> None:
        self._terminal = EchoTerminal()

    def read(self) -> tuple[str, bytes] | None:
        data = self._terminal.read()
        return ("stdout", data) if data else None

    def write(self, data: bytes) -> None:
        self._terminal.write(data)

    def close_stdin(self) -> None:
        self._terminal.close()

    def exit_code(self) -> int | None:
        return self._terminal.exit_code()

    def close(self) -> None:
        self._terminal.close()
