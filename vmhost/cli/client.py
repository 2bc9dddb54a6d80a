"""VmhostClient: the CLI's way to the daemon, over HTTP. The transport (Unix socket or TCP) is
chosen here, in one place; error answers become the same VmhostError classes the core raised. (One
exception: a Tab on a workspace name asks with the standard library, see vmhost.cli.completion.)"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from vmhost import paths
from vmhost.errors import DaemonUnreachable, VmhostError, error_class_for, error_class_for_status

# httpx imports its own command-line tool (click, pygments, rich.progress) unless that import fails;
# the CLI never uses it, and it costs every run tens of milliseconds.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx  # noqa: E402

if TYPE_CHECKING:
    from httpx_ws import AsyncWebSocketSession, WebSocketSession

API = "/api/v1"
PAGE_SIZE = 1000  # the most items the API answers in one page
WS_MAX_MESSAGE = 4 * 1024 * 1024
RETRIED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# what a request meets when the daemon closed the kept-alive connection it went out on
CLOSED_UNDER_US = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class VmhostClient:
    def __init__(self, url: str | None = None, socket: Path | None = None, token: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        """`transport`, when given, carries the requests instead of TCP or the socket (tests)."""
        headers = {"User-Agent": "vmhost-cli"}
        self.uds: str | None = None
        if url:
            self.where = base_url = url
            if token:
                headers["Authorization"] = f"Bearer {token}"
        else:
            socket = paths.client_socket_path(socket)
            self.where, base_url, self.uds = f"unix:{socket}", "http://vmhost", str(socket)
            # no TLS on a Unix socket: skip loading the CA bundle (20+ ms a run)
            transport = transport or httpx.HTTPTransport(uds=self.uds, verify=False)
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, transport=transport,
                                 timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))

    def close(self) -> None:
        self.http.close()

    def async_http(self) -> httpx.AsyncClient:
        """An async client to the same daemon, with the same credentials, and no limit on connections
        (each WebSocket holds one)."""
        transport = None if self.uds is None else httpx.AsyncHTTPTransport(uds=self.uds, verify=False)
        return httpx.AsyncClient(base_url=self.http.base_url, headers=self.http.headers, transport=transport,
                                 timeout=self.http.timeout, limits=httpx.Limits(max_connections=None))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"cannot reach the vmhost daemon at {self.where} ({exc}); start it with 'vmhost daemon' "
                "(or 'systemctl start vmhost'), or point --url/--socket at a running one") from exc
        except (httpx.ReadError, httpx.WriteError) as exc:  # a reset, where a clean close is RemoteProtocolError
            raise DaemonUnreachable(
                f"the vmhost daemon at {self.where} closed the connection before answering ({exc}); a change "
                "may or may not have been made: check with 'vmhost ops ls'") from exc
        except httpx.TimeoutException as exc:
            raise DaemonUnreachable(f"the vmhost daemon at {self.where} did not answer in time ({exc})") from exc

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._errors():
            try:
                response = self.http.request(method, path, **kwargs)
            except CLOSED_UNDER_US:
                # A kept-alive connection can close at the moment a request goes out on it: nothing was
                # answered, so a read is sent again, once, on a new connection. Writes are not repeated.
                if method not in RETRIED_METHODS:
                    raise
                response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise self.answer_error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @staticmethod
    def answer_error(response: httpx.Response) -> VmhostError:
        """The VmhostError an error answer carries."""
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

    def pages(self, path: str, at_most: int | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """The pages of a collection, following each one's `next_cursor`: all of it, or its first
        `at_most` items."""
        cursor = None
        while True:
            limit = PAGE_SIZE if at_most is None else min(PAGE_SIZE, at_most)
            page = self.get(path, **params, limit=limit, cursor=cursor)
            yield page
            if at_most is not None:
                at_most -= len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None or at_most == 0:
                return

    def items(self, path: str, at_most: int | None = None, **params: Any) -> list[Any]:
        """A collection's items, from all its pages (or its first `at_most` items)."""
        return [item for page in self.pages(path, at_most, **params) for item in page["items"]]

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", f"{API}{path}", json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", f"{API}{path}", json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", f"{API}{path}", params={k: v for k, v in params.items() if v is not None})

    def download(self, path: str, target: BinaryIO) -> int:
        """Stream a GET answer's body into `target`; returns the number of bytes written."""
        written = 0
        with self._errors(), self.http.stream("GET", f"{API}{path}") as response:
            if response.status_code >= 400:
                response.read()
                raise self.answer_error(response)
            for chunk in response.iter_bytes():
                target.write(chunk)
                written += len(chunk)
        return written

    def chunks(self, path: str, **params: Any) -> Iterator[bytes]:
        """A GET answer's body as it arrives, with no read timeout (output that is being followed)."""
        timeout = httpx.Timeout(self.http.timeout.write, connect=self.http.timeout.connect, read=None)
        query = {k: v for k, v in params.items() if v is not None}
        with self._errors(), self.http.stream("GET", f"{API}{path}", params=query, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise self.answer_error(response)
            yield from response.iter_bytes()

    @contextmanager
    def websocket(self, path: str, **params: Any) -> Iterator[WebSocketSession]:
        """A WebSocket to the daemon over the same transport and credentials as every request."""
        from httpx_ws import WebSocketUpgradeError, connect_ws

        url = httpx.URL(path, params={k: v for k, v in params.items() if v is not None})
        with self._errors():
            session: WebSocketSession
            try:
                with connect_ws(str(url), self.http, max_message_size_bytes=WS_MAX_MESSAGE) as session:
                    yield session
            except WebSocketUpgradeError as exc:
                exc.response.read()
                raise self.answer_error(exc.response) from exc

    @asynccontextmanager
    async def async_websocket(self, http: httpx.AsyncClient, path: str,
                              **options: Any) -> AsyncIterator[AsyncWebSocketSession]:
        """A WebSocket to the daemon on `http` (from `async_http()`); `options` go to httpx-ws. A refused
        upgrade raises the daemon's error, a connection that cannot be made or is lost DaemonUnreachable."""
        from httpx_ws import WebSocketNetworkError, WebSocketUpgradeError, aconnect_ws

        try:
            async with aconnect_ws(path, http, **options) as session:
                yield session
        except WebSocketUpgradeError as exc:
            await exc.response.aread()
            raise self.answer_error(exc.response) from None
        except httpx.ConnectError as exc:
            raise DaemonUnreachable(f"cannot reach the vmhost daemon at {self.where} ({exc})") from None
        except (WebSocketNetworkError, httpx.TransportError) as exc:
            raise DaemonUnreachable(f"lost the connection to the vmhost daemon at {self.where} ({exc})") from None

    @staticmethod
    def closed_error(code: int, reason: str) -> VmhostError:
        """The error a WebSocket closed with: the daemon sends 4000 + the HTTP status of the same error."""
        if 4000 <= code < 5000:
            return error_class_for_status(code - 4000)(reason or f"the daemon closed the connection ({code})")
        return DaemonUnreachable(f"the daemon closed the connection (code {code}{': ' + reason if reason else ''})")

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", f"{API}{path}", json=body)

    def put_content(self, path: str, content: Iterator[bytes], content_type: str, query: dict[str, str]) -> Any:
        """PUT a streamed body (a file, an archive)."""
        return self.request("PUT", f"{API}{path}", content=content, headers={"Content-Type": content_type},
                            params=query)

    @contextmanager
    def get_stream(self, path: str, query: dict[str, str]) -> Iterator[httpx.Response]:
        """A GET answer whose body is read as it arrives (its headers say what it is)."""
        with self._errors(), self.http.stream("GET", f"{API}{path}", params=query) as response:
            if response.status_code >= 400:
                response.read()
                raise self.answer_error(response)
            yield response

    def post_lines(self, path: str, body: Any) -> Iterator[Any]:
        """POST, then the answer's newline-delimited JSON objects as they arrive (no read timeout)."""
        timeout = httpx.Timeout(self.http.timeout.write, connect=self.http.timeout.connect, read=None)
        with self._errors(), self.http.stream("POST", f"{API}{path}", json=body, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise self.answer_error(response)
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)

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
