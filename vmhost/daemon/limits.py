"""A request body limit, enforced before the body is read into memory (by Content-Length) or while it
is read (chunked bodies: the handler for VmhostError answers 413)."""

from __future__ import annotations

import json
from typing import Any

from vmhost.errors import PayloadTooLarge

Scope = dict[str, Any]


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    @property
    def message(self) -> str:
        return f"request body is larger than the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.message)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(PayloadTooLarge(self.message).to_dict()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
