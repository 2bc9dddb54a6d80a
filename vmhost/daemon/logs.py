"""The daemon's log: one line per event, as text or as JSON objects (VMHOST_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SECRETS = re.compile(r"(?P<keep>[?&]token=)[^&\s\"']*|vmh_[A-Za-z0-9_-]+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every `token=` query value and every vmhost token secret replaced."""
    return _SECRETS.sub(lambda m: f"{m['keep']}[redacted]" if m["keep"] else "vmh_[redacted]", text)


class RedactSecrets(logging.Filter):
    """Keeps credentials out of the log: uvicorn logs each WebSocket handshake with its URL, and a
    browser's WebSocket carries its token there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class OneLineFormatter(logging.Formatter):
    """Text, with any traceback folded into the same line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, log_format: str) -> None:
    """Send every logger, uvicorn's included, through one handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else OneLineFormatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
