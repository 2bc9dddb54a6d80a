"""Samples, their summary (median, p95) and the targets the results are held to."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Summary:
    """Samples of one measurement, in the result's unit."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        """Nearest-rank 95th percentile (the largest sample when there are fewer than 20)."""
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "p95": self.p95, "n": len(self.samples), "samples": list(self.samples)}


@dataclass(frozen=True)
class Target:
    """What a result must meet. Times and sizes must stay under their bound, rates over theirs."""

    max_ratio: float | None = None      # vmhost median / baseline median
    min_ratio: float | None = None      # the same, for rates
    max_added: float | None = None      # vmhost median - baseline median, in the result's unit
    max_median: float | None = None
    min_median: float | None = None     # for rates (requests per second)

    def describe(self, unit: str) -> str:
        parts = []
        if self.max_ratio is not None:
            parts.append(f"<= {self.max_ratio:g}x")
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:g}x")
        if self.max_added is not None:
            parts.append(f"+{self.max_added:g} {unit}")
        if self.max_median is not None:
            parts.append(f"p50 < {self.max_median:g} {unit}")
        if self.min_median is not None:
            parts.append(f">= {self.min_median:g} {unit}")
        return ", ".join(parts) or "reference"


@dataclass
class Result:
    name: str
    unit: str
    vmhost: Summary | None
    baseline: Summary | None = None
    baseline_name: str = ""
    target: Target = field(default_factory=Target)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.vmhost is None or self.baseline is None or not self.baseline.median:
            return None
        return self.vmhost.median / self.baseline.median

    @property
    def passed(self) -> bool | None:
        """None when there is nothing to judge (not measured, or a reference only)."""
        if self.vmhost is None or self.target == Target():
            return None
        median, target, ratio = self.vmhost.median, self.target, self.ratio
        checks = []
        if target.max_ratio is not None and ratio is not None:
            checks.append(ratio <= target.max_ratio)
        if target.min_ratio is not None and ratio is not None:
            checks.append(ratio >= target.min_ratio)
        if target.max_added is not None and self.baseline is not None:
            checks.append(median - self.baseline.median <= target.max_added)
        if target.max_median is not None:
            checks.append(median < target.max_median)
        if target.min_median is not None:
            checks.append(median >= target.min_median)
        return all(checks) if checks else None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit,
                "vmhost": self.vmhost.as_json() if self.vmhost else None,
                "baseline": self.baseline.as_json() if self.baseline else None,
                "baseline_name": self.baseline_name, "ratio": self.ratio,
                "target": {k: v for k, v in asdict(self.target).items() if v is not None},
                "passed": self.passed, "note": self.note}


def timed_ms(action: Callable[[], object]) -> float:
    """Wall time of one call, in milliseconds."""
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


@dataclass(frozen=True)
class Plan:
    """How much to measure: warm-up rounds (discarded), then repetitions."""

    warmup: int
    reps: int

    @property
    def rounds(self) -> range:
        return range(self.warmup + self.reps)

    def keep(self, round_number: int) -> bool:
        return round_number >= self.warmup


def paired(plan: Plan, *actions: Callable[[int], object],
           between: Callable[[int], object] | None = None) -> list[Summary]:
    """Time each action once per round, interleaved so the machine's noise falls on all of them alike;
    `between(round)` runs untimed after each round. Returns one summary (in ms) per action."""
    samples: list[list[float]] = [[] for _ in actions]
    for number in plan.rounds:
        for action, kept in zip(actions, samples, strict=True):
            took = timed_ms(lambda action=action, number=number: action(number))
            if plan.keep(number):
                kept.append(took)
        if between is not None:
            between(number)
    return [Summary(tuple(s)) for s in samples]
