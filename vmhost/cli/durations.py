"""Durations as people type them (90, 90s, 15m, 2h, 7d, 1w, 1h30m): the core's one parser, which
templates use too (`idle_timeout = "2h"`)."""

from vmhost.core.durations import parse_duration

__all__ = ["NEVER", "parse_duration", "seconds_or_never"]

NEVER = ("none", "never", "off", "0")


def seconds_or_never(text: str) -> int:
    """Whole seconds of a duration, or 0 for 'none', 'never', 'off' or '0'."""
    return 0 if text.strip().lower() in NEVER else int(parse_duration(text))
