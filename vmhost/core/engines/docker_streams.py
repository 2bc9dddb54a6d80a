"""What the Docker engine streams: a container's output, and the events of vmhost's containers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vmhost.core.engines.base import ContainerEvent
from vmhost.core.engines.docker_connection import DockerConnection
from vmhost.errors import VmhostError


class DockerLogStream:
    """A container's output as the SDK streams it; once closed, the error of the cut stream is not raised."""

    def __init__(self, connection: DockerConnection, stream: Any) -> None:
        self._connection = connection
        self._stream = stream
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            with self._connection.errors("read the container's output"):
                yield from self._stream
        except VmhostError:
            if not self._closed:
                raise

    def close(self) -> None:
        self._closed = True
        try:
            self._stream.close()
        except OSError:
            pass


class DockerEventStream:
    """Docker's decoded container events as `ContainerEvent`s."""

    def __init__(self, connection: DockerConnection, stream: Any) -> None:
        self._connection = connection
        self._stream = stream

    def __iter__(self) -> Iterator[ContainerEvent]:
        with self._connection.errors("follow Docker's events"):
            for raw in self._stream:
                actor = raw.get("Actor") or {}
                yield ContainerEvent(action=raw.get("Action") or raw.get("status") or "",
                                     container_id=actor.get("ID") or raw.get("id") or "",
                                     labels=dict(actor.get("Attributes") or {}))

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass
