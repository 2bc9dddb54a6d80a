"""The faults a test injects into the fake engine: the engine away, a call that hangs, a call that fails,
and the calling daemon dying in the middle of a call. Every call of the engine meets them first."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vmhost.core.engines.base import Engine
from vmhost.errors import DockerUnavailable

ENGINE_URL = "fake://engine"
ENGINE_METHODS = frozenset(name for name in vars(Engine) if not name.startswith("_"))  # what faults apply to


class SimulatedCrash(BaseException):
    """What a call set up with `crash_at` raises: the daemon "dies" there. Not an Exception, so nothing
    in vmhost catches it, and the operation that made the call stays as a real crash leaves it."""


class Hang:
    """While this is armed, every call of one method blocks until `release()`, or for at most `timeout`
    seconds, after which it fails the way a request to an engine that does not answer fails."""

    def __init__(self, method: str, timeout: float | None) -> None:
        self.method = method
        self.timeout = timeout
        self.entered = threading.Event()  # set once a call is blocked here
        self._released = threading.Event()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        self._released.set()

    def block(self, doing: str) -> None:
        self.entered.set()
        if not self._released.wait(self.timeout):
            raise DockerUnavailable(f"Docker engine at {ENGINE_URL} does not answer ({doing}): "
                                    f"timed out after {self.timeout:g} s")


@dataclass(frozen=True)
class _Failure:
    error: BaseException
    fired: threading.Event


class Faults:
    """The faults armed on one engine. `away`: the engine does not answer at all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hangs: dict[str, Hang] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self.away = False

    def hang(self, method: str, timeout: float | None) -> Hang:
        """Make every call of `method` block until the returned Hang is released (or `timeout` passes)."""
        _check_method(method)
        hang = Hang(method, timeout)
        with self._lock:
            self._hangs[method] = hang
        return hang

    def fail_next(self, method: str, error: BaseException) -> threading.Event:
        """The next call of `method` raises `error`; the event is set when it has."""
        _check_method(method)
        failure = _Failure(error, threading.Event())
        with self._lock:
            self._failures.setdefault(method, []).append(failure)
        return failure.fired

    def release_hangs(self) -> None:
        """Release every hang, and arm none any more."""
        with self._lock:
            hangs, self._hangs = list(self._hangs.values()), {}
        for hang in hangs:
            hang.release()

    def enter(self, method: str, doing: str) -> None:
        """What a call meets before it does anything: a hang, the engine away, an injected failure."""
        with self._lock:
            hang = self._hangs.get(method)
        if hang is not None and not hang.released:
            hang.block(doing)
        with self._lock:
            if self.away:
                raise unavailable(doing)
            failures = self._failures.get(method)
            failure = failures.pop(0) if failures else None
        if failure is not None:
            failure.fired.set()
            raise failure.error


def unavailable(doing: str) -> DockerUnavailable:
    """The error DockerEngine raises when its engine does not answer."""
    return DockerUnavailable(f"Docker engine at {ENGINE_URL} does not answer ({doing}): Connection refused")


def _check_method(method: str) -> None:
    if method not in ENGINE_METHODS:
        raise ValueError(f"{method!r} is not a method of the engine; use one of {', '.join(sorted(ENGINE_METHODS))}")
