"""The results: a rich table for people, a JSON file for comparing runs between commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.measure import Result


def number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def verdict(result: Result) -> str:
    if result.vmhost is None:
        return f"[yellow]{result.note or 'n/a'}[/]"
    return {True: "[green]ok[/]", False: "[red]MISSED[/]", None: "-"}[result.passed]


def table(results: Sequence[Result], title: str) -> Table:
    grid = Table(title=title, header_style="bold", title_justify="left")
    for column in ("benchmark", "vmhost p50", "vmhost p95", "baseline (raw Docker)", "baseline p50", "ratio",
                   "target", "result"):
        grid.add_column(column, justify="right" if column in ("vmhost p50", "vmhost p95", "baseline p50", "ratio")
                        else "left", overflow="fold")
    for result in results:
        measured, base = result.vmhost, result.baseline
        grid.add_row(result.name, number(measured and measured.median, result.unit),
                     number(measured and measured.p95, result.unit), result.baseline_name or "-",
                     number(base and base.median, result.unit),
                     "-" if result.ratio is None else f"{result.ratio:.2f}x",
                     result.target.describe(result.unit), verdict(result))
    return grid


def notes(results: Sequence[Result]) -> list[str]:
    return [f"{r.name}: {r.note}" for r in results if r.note and r.vmhost is not None]


def show(console: Console, results: Sequence[Result], title: str) -> None:
    console.print(table(results, title))
    for line in notes(results):
        console.print(f"  - {line}", highlight=False, markup=False)


def markdown(results: Sequence[Result]) -> str:
    """The table as Markdown, for the README."""
    lines = ["| benchmark | vmhost p50 | vmhost p95 | baseline (raw Docker) | baseline p50 | ratio | target | result |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- | --- |"]
    for r in results:
        measured, base = r.vmhost, r.baseline
        outcome = (r.note or "n/a") if measured is None else {True: "ok", False: "missed", None: "-"}[r.passed]
        lines.append(f"| {r.name} | {number(measured and measured.median, r.unit)} | "
                     f"{number(measured and measured.p95, r.unit)} | {r.baseline_name or '-'} | "
                     f"{number(base and base.median, r.unit)} | "
                     f"{'-' if r.ratio is None else f'{r.ratio:.2f}x'} | {r.target.describe(r.unit)} | {outcome} |")
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], results: Sequence[Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": [r.as_json() for r in results]}, indent=2) + "\n")
