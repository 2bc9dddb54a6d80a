"""Durations as people type them: 90, 90s, 15m, 2h, 7d, 1w, 1h30m. The one parser of them: the CLI's
options and the templates' `idle_timeout` both read durations here."""

from __future__ import annotations

import re

from vmhost.errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = _PART.findall(cleaned)
        if not parts or "".join(n + u for n, u in parts) != cleaned:
            raise InvalidInput(f"invalid duration {text!r}: use e.g. 90s, 15m, 2h, 7d") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise InvalidInput(f"invalid duration {text!r}: must be more than zero")
    return seconds
