"""A request body limit, enforced before the body is read into memory (by Content-Length) or while it
is read (chunked bodies: 413 as soon as the limit is passed; the app sees a client that went away)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from vmhost.errors import PayloadTooLarge

Scope = dict[str, Any]


class BodyLimit:
    """`max_bytes` for every request but those whose path matches a pattern in `larger` (e.g. uploads)."""

    def __init__(self, app: Any, max_bytes: int, larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = [(re.compile(pattern), limit) for pattern, limit in (larger or {}).items()]

    def limit_for(self, path: str) -> int:
        return next((limit for pattern, limit in self.larger if pattern.fullmatch(path)), self.max_bytes)

    @staticmethod
    def message(limit: int) -> str:
        return f"request body is larger than the limit of {limit} bytes"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(send, limit)
                return
        received = 0
        refused = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # answer 413 at once; to the app the client went away (an exception raised here
                    # would reach FastAPI's body reader and come out as a 400)
                    refused = True
                    await self._refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, send: Any, limit: int) -> None:
        body = json.dumps(PayloadTooLarge(self.message(limit)).to_dict()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
