"""VmhostClient: the CLI's only way to the daemon, over HTTP. The transport (Unix socket or TCP) is
chosen here, in one place; error answers become the same VmhostError classes the core raised."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from vmhost import paths
from vmhost.errors import DaemonUnreachable, VmhostError, error_class_for

API = "/api/v1"


class VmhostClient:
    def __init__(self, url: str | None = None, socket: Path | None = None, token: str | None = None,
                 timeout: float = 30.0) -> None:
        headers = {"User-Agent": "vmhost-cli"}
        if url:
            self.where = url
            if token:
                headers["Authorization"] = f"Bearer {token}"
            self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers,
                                     timeout=httpx.Timeout(timeout, connect=5.0))
        else:
            socket = socket or (Path(os.environ["VMHOST_SOCKET"]) if os.environ.get("VMHOST_SOCKET")
                                else paths.client_socket_path())
            self.where = f"unix:{socket}"
            self.http = httpx.Client(base_url="http://vmhost", headers=headers,
                                     transport=httpx.HTTPTransport(uds=str(socket)),
                                     timeout=httpx.Timeout(timeout, connect=5.0))

    def close(self) -> None:
        self.http.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"cannot reach the vmhost daemon at {self.where} ({exc}); start it with 'vmhost daemon' "
                "(or 'systemctl start vmhost'), or point --url/--socket at a running one") from exc
        except httpx.TimeoutException as exc:
            raise DaemonUnreachable(f"the vmhost daemon at {self.where} did not answer in time ({exc})") from exc

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._errors():
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise self._error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @staticmethod
    def _error(response: httpx.Response) -> VmhostError:
        try:
            body = response.json()
            detail, code = body.get("detail"), body.get("code", "error")
        except ValueError:
            detail, code = response.text.strip() or response.reason_phrase, "error"
        cls = error_class_for(code)
        error = cls(str(detail))
        if cls is VmhostError:
            error.exit_code = 1
        return error

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", f"{API}{path}", params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", f"{API}{path}", json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", f"{API}{path}", params={k: v for k, v in params.items() if v is not None})

    def wait(self, operation_id: str, timeout: float | None = None,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Follow an operation until it ends (or `timeout` passes), reporting each state seen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 2.0 if deadline is None else max(0.0, min(2.0, deadline - time.monotonic()))
            operation = self.get(f"/operations/{operation_id}/wait", timeout=remaining)
            if on_update is not None:
                on_update(operation)
            if operation["status"] in ("succeeded", "failed"):
                return operation
            if deadline is not None and time.monotonic() >= deadline:
                return operation
