"""How the fake engine runs commands: by a table of scripted answers (`sleep N` sleeps, anything else
succeeds silently unless a rule says otherwise), killed by a timeout, a cancel, or their container
stopping."""

from __future__ import annotations

import fnmatch
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from vmhost.core.engines.base import CommandOutcome

KILLED = 137  # the exit code of a command or container killed with SIGKILL
CANCEL_POLL = 0.01  # seconds between looks at a running command's cancel event
_SLEEP = re.compile(r"(?:/bin/sh -c )?sleep (\d+(?:\.\d+)?|infinity)")


@dataclass(frozen=True)
class ExecRule:
    """A scripted answer to the commands whose space-joined argv matches `pattern` (fnmatch)."""

    pattern: str
    exit_code: int = 0
    output: bytes = b""
    stderr: bytes = b""
    seconds: float = 0.0  # how long the command runs after writing its output
    error: str | None = None  # it could not start: this reason, with `exit_code`, and no output


@dataclass(frozen=True)
class ExecRecord:
    """A command the engine was asked to run."""

    container_id: str
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str | None
    stdin: bytes | None


@dataclass(eq=False)
class RunningCommand:
    """A command running now."""

    container_id: str
    argv: tuple[str, ...]
    stopped: threading.Event = field(default_factory=threading.Event)  # its container stopped or went


def rule_for(rules: Sequence[ExecRule], argv: Sequence[str]) -> ExecRule:
    """How `argv` answers: the latest of `rules` that matches it, else as a command that just runs (a
    sleep for its time)."""
    command = " ".join(argv)
    rule = next((r for r in reversed(rules) if fnmatch.fnmatchcase(command, r.pattern)), None)
    if rule is not None:
        return rule
    slept = _SLEEP.fullmatch(command)
    return ExecRule(command, seconds=math.inf if slept and slept[1] == "infinity"
                    else float(slept[1]) if slept else 0.0)


def run_for(seconds: float, timeout: float | None, cancel: threading.Event | None,
            stopped: threading.Event) -> CommandOutcome | None:
    """Let a command run `seconds`; how it was killed, or None when it ran to its end."""
    now = time.monotonic()
    end = now + seconds
    kill_at = math.inf if timeout is None else now + timeout
    while True:
        now = time.monotonic()
        if cancel is not None and cancel.is_set():
            return CommandOutcome(exit_code=KILLED, cancelled=True)
        if stopped.is_set():
            return CommandOutcome(exit_code=KILLED)
        if now >= end:
            return None
        if now >= kill_at:
            return CommandOutcome(exit_code=KILLED, timed_out=True)
        wait = min(end, kill_at) - now
        if cancel is not None:
            wait = min(wait, CANCEL_POLL)
        stopped.wait(None if math.isinf(wait) else wait)
