"""The connection to one Docker engine, through the docker SDK's public API, and the one place Docker's
errors are mapped (`DockerConnection.errors`): an engine that does not answer is `DockerUnavailable`, an
engine that refuses is `ProviderError`, one that finds a container stopped is `ContainerNotRunning`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls
import requests.exceptions

from vmhost.errors import ContainerNotRunning, DockerUnavailable, ProviderError

PING_TIMEOUT = 5  # seconds: an engine slower than this to answer a ping counts as unreachable


@dataclass(frozen=True)
class TLSFiles:
    """What a client shows and checks over tcp:// (Docker's --tlsverify): a CA, a certificate and its key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class DockerConnection:
    """A client of one Docker engine that connects lazily and reconnects after the engine comes back.
    `timeout` bounds each API call (seconds); `tls` is used for a tcp:// URL; an ssh:// URL goes through
    the host's `ssh` (its keys and known_hosts)."""

    def __init__(self, base_url: str | None, *, timeout: int, tls: TLSFiles | None = None) -> None:
        self.base_url = base_url or "unix:///var/run/docker.sock"
        self.timeout = timeout
        self.tls = tls
        self._client: docker.DockerClient | None = None
        self._pinger: docker.APIClient | None = None  # the same engine with PING_TIMEOUT for every call
        self._lock = threading.Lock()
        self._cpu_count: int | None = None  # read once a connection: `docker info` takes 10 ms and more

    def _connected(self) -> tuple[docker.DockerClient, docker.APIClient]:
        with self._lock:
            if self._client is None or self._pinger is None:
                with self.errors("connect to Docker"):
                    # a short timeout while connecting (it asks for the version), so a hung engine is
                    # found out in seconds; then the long one for real work
                    options = self._client_options()
                    pinger = docker.APIClient(base_url=self.base_url, timeout=PING_TIMEOUT, version="auto",
                                              **options)
                    self._client = docker.DockerClient(base_url=self.base_url, timeout=self.timeout,
                                                       version=pinger.api_version, **options)
                    self._pinger = pinger
                self._cpu_count = None
            return self._client, self._pinger

    def _client_options(self) -> dict[str, Any]:
        if self.base_url.startswith("ssh://"):
            return {"use_ssh_client": True}
        if self.base_url.startswith("tcp://") and self.tls is not None and (self.tls.ca or self.tls.cert):
            cert = (str(self.tls.cert), str(self.tls.key)) if self.tls.cert and self.tls.key else None
            return {"tls": docker.tls.TLSConfig(client_cert=cert, ca_cert=str(self.tls.ca) if self.tls.ca else None,
                                                verify=str(self.tls.ca) if self.tls.ca else False)}
        return {}

    @property
    def client(self) -> docker.DockerClient:
        return self._connected()[0]

    def close(self) -> None:
        with self._lock:
            clients = (self._client, self._pinger)
            self._client = self._pinger = None
        for client in clients:
            if client is not None:
                client.close()

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Docker's errors inside as vmhost's, saying what could not be done; one that means the engine
        does not answer drops the client, to connect again at the next call."""
        try:
            yield
        except docker.errors.NotFound as exc:
            raise ProviderError(f"cannot {doing}: {_explain(exc)}", missing=True) from exc
        except docker.errors.APIError as exc:
            if exc.status_code is not None and exc.status_code >= 500 and "connection" in str(exc).lower():
                self._client = None
                raise DockerUnavailable(f"Docker engine does not answer ({doing}): {_explain(exc)}") from exc
            if exc.status_code == 409 and "is not running" in _explain(exc):
                raise ContainerNotRunning(f"cannot {doing}: {_explain(exc)}") from exc
            raise ProviderError(f"cannot {doing}: {_explain(exc)}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, docker.errors.DockerException,
                ConnectionError, FileNotFoundError) as exc:
            self._client = None
            raise DockerUnavailable(f"Docker engine at {self.base_url} does not answer ({doing}): {exc}") from exc

    def ping(self) -> None:
        with self.errors("ping Docker"):
            self._connected()[1].ping()

    def cpu_count(self) -> int:
        if self._cpu_count is None:
            with self.errors("read Docker's CPU count"):
                self._cpu_count = int(self.client.info().get("NCPU") or 1)
        return self._cpu_count


def _explain(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)
