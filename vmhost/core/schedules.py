"""A workspace's schedule: `autostart` on chosen days at a time of day in an IANA time zone, `autostop` the
same way (every day unless days are given). The pure part: parsing, writing back, and the due times.

A schedule is written `[DAYS] HH:MM [ZONE]`, e.g. `mon-fri 08:30 Europe/Berlin`: DAYS are mon..sun,
ranges (`mon-fri`, also across the week's end: `fri-mon`) and lists (`mon,wed,fri`), every day when left
out; ZONE is an IANA name (`Europe/Berlin`, `UTC`). An autostop written without a zone takes the
autostart's zone when the workspace has an autostart, else UTC (see `resolve_stop`).

Due times are wall-clock times in the zone, so they follow daylight-saving changes: 08:30 in
Europe/Berlin is 07:30 UTC in winter and 06:30 UTC in summer. A time the clocks skip (02:30 on the day
they spring forward) is read with the offset from before the jump, so it comes at 03:30 summer time; a
time that happens twice (02:30 on the day they fall back) is due once, the first time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = frozenset(range(7))
MAX_TEXT = 100
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_DAY_WORDS = re.compile(r"^[a-z]+([-,][a-z]+)*$", re.IGNORECASE)
_DAY_HINT = "use mon..sun, ranges like mon-fri or lists like mon,wed"
_EXAMPLE = '"mon-fri 08:30 Europe/Berlin"'


class ScheduleError(ValueError):
    """A schedule that cannot be read; the message says what to write instead."""


@dataclass(frozen=True)
class Schedule:
    days: frozenset[int]  # 0 is Monday, as datetime.weekday()
    at: time
    zone: str | None  # None: not written (see resolve_stop)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone or "UTC")

    def with_zone(self, zone: str) -> Schedule:
        return Schedule(self.days, self.at, zone)

    def __str__(self) -> str:
        parts = [] if self.days == EVERY_DAY else [write_days(self.days)]
        parts.append(self.at.strftime("%H:%M"))
        if self.zone:
            parts.append(self.zone)
        return " ".join(parts)


def parse(text: str) -> Schedule:
    """A schedule from its text (see the module's description); ScheduleError says what is wrong."""
    if len(text) > MAX_TEXT:
        raise ScheduleError(f"a schedule is at most {MAX_TEXT} characters, e.g. {_EXAMPLE}")
    days: frozenset[int] | None = None
    at: time | None = None
    zone: str | None = None
    for word in text.split():
        if _TIME.match(word):
            if at is not None:
                raise ScheduleError(f'two times of day in "{text}": give one, e.g. {_EXAMPLE}')
            at = _parse_time(word, text)
        elif _DAY_WORDS.match(word) and not _is_zone(word):
            if days is not None:
                raise ScheduleError(f'two lists of days in "{text}": write them as one, e.g. "mon,wed,fri"')
            days = _parse_days(word, text)
        elif zone is None:
            zone = _parse_zone(word, text)
        else:
            raise ScheduleError(f'cannot read "{word}" in "{text}": write [DAYS] HH:MM [ZONE], e.g. {_EXAMPLE}')
    if at is None:
        raise ScheduleError(f'no time of day in "{text}": give one as HH:MM, e.g. {_EXAMPLE}')
    return Schedule(days if days is not None else EVERY_DAY, at, zone)


def resolve_stop(stop: Schedule, start: Schedule | None) -> Schedule:
    """The autostop with its zone: its own when written, else the autostart's, else UTC."""
    if stop.zone:
        return stop
    return stop.with_zone(start.zone if start is not None and start.zone else "UTC")


def write_days(days: frozenset[int]) -> str:
    """Days as the shortest text: runs of three or more as ranges (`mon-fri`, `fri-mon` across the week's
    end), others listed (`sat,sun`)."""
    first = next((d for d in range(7) if d in days and (d - 1) % 7 not in days), 0)  # where a run begins
    ordered = sorted(days, key=lambda d: (d - first) % 7)
    runs: list[list[int]] = []
    for day in ordered:
        if runs and day == (runs[-1][-1] + 1) % 7:
            runs[-1].append(day)
        else:
            runs.append([day])
    words = []
    for run in runs:
        if len(run) >= 3:
            words.append(f"{DAYS[run[0]]}-{DAYS[run[-1]]}")
        else:
            words.extend(DAYS[d] for d in run)
    return ",".join(words)


def _parse_time(word: str, text: str) -> time:
    match = _TIME.match(word)
    assert match is not None
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours > 23 or minutes > 59:
        raise ScheduleError(f'bad time "{word}" in "{text}": use HH:MM from 00:00 to 23:59')
    return time(hours, minutes)


def _parse_days(word: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in word.lower().split(","):
        ends = part.split("-")
        for end in ends:
            if end not in DAYS:
                raise ScheduleError(f'unknown day "{end}" in "{text}": {_DAY_HINT}')
        if len(ends) == 1:
            days.add(DAYS.index(ends[0]))
        elif len(ends) == 2:
            first, last = DAYS.index(ends[0]), DAYS.index(ends[1])
            days.update((first + step) % 7 for step in range((last - first) % 7 + 1))
        else:
            raise ScheduleError(f'cannot read the days "{part}" in "{text}": {_DAY_HINT}')
    return frozenset(days)


def _is_zone(word: str) -> bool:
    """Whether a word that reads like days is rather a zone (`UTC`, `Japan`)."""
    if all(part in DAYS for piece in word.lower().split(",") for part in piece.split("-")):
        return False
    try:
        ZoneInfo(word)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _parse_zone(word: str, text: str) -> str:
    try:
        ZoneInfo(word)
    except (ZoneInfoNotFoundError, ValueError):
        if _DAY_WORDS.match(word) and "/" not in word:
            raise ScheduleError(f'unknown day "{word}" in "{text}": {_DAY_HINT}') from None
        raise ScheduleError(f'unknown time zone "{word}" in "{text}": use an IANA name such as Europe/Berlin, '
                            "America/New_York or UTC") from None
    return word


# -- due times ----------------------------------------------------------------------------------------


def due_on(schedule: Schedule, day: date) -> datetime | None:
    """The instant (UTC) the schedule is due on a local day, or None when the day is not one of its days."""
    if day.weekday() not in schedule.days:
        return None
    local = datetime.combine(day, schedule.at, tzinfo=schedule.tz)  # fold=0: skipped and repeated times above
    return local.astimezone(UTC)


def next_due(schedule: Schedule, after: datetime) -> datetime:
    """The first time the schedule is due strictly after `after`."""
    start = after.astimezone(schedule.tz).date()
    for offset in range(-1, 9):
        due = due_on(schedule, start + timedelta(days=offset))
        if due is not None and due > after:
            return due
    raise AssertionError(f"no due time within a week for {schedule}")  # every schedule has a day


def last_due(schedule: Schedule, now: datetime) -> datetime:
    """The latest time the schedule was due at or before `now`."""
    start = now.astimezone(schedule.tz).date()
    for offset in range(1, -9, -1):
        due = due_on(schedule, start + timedelta(days=offset))
        if due is not None and due <= now:
            return due
    raise AssertionError(f"no due time within a week for {schedule}")


def missed(schedule: Schedule, handled: datetime | None, now: datetime) -> datetime | None:
    """The due time to act on now: the latest one at or before `now` if it is after `handled` (the due
    time last acted on, or when the schedule was set). However many were missed (a daemon down for days),
    only the latest counts: a missed start or stop is made up once."""
    due = last_due(schedule, now)
    return due if handled is None or due > handled else None
