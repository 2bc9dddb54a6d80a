"""The benchmarks start, measure everything and clean up after themselves (`python -m bench --quick`).
Their figures are not judged here: a shared CI machine is no place for timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys

import docker
from conftest import REPO


def test_quick_benchmark_prints_the_table_writes_json_and_leaves_nothing_behind(
        docker_client: docker.DockerClient, tmp_path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(output)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("vmhost p50", "baseline p50", "ratio", "create -> running", "GET /workspaces", "daemon RSS"):
        assert heading in done.stdout, done.stdout
    assert str(output) in done.stdout

    results = json.loads(output.read_text())
    assert results["meta"]["quick"] is True
    by_name = {r["name"]: r for r in results["results"]}
    failed = {name: r["note"] for name, r in by_name.items() if r["note"].startswith("error")}
    assert not failed, failed
    measured = [r for r in results["results"] if r["vmhost"] is not None]
    assert len(measured) >= 9, sorted(by_name)
    assert all(r["vmhost"]["median"] > 0 for r in measured)
    with_baseline = [r for r in measured if r["baseline"] is not None]
    assert all(r["ratio"] is not None and r["ratio"] > 0 for r in with_baseline)

    run_id = results["meta"]["run_id"]
    for label in (f"vmhost.bench={run_id}", f"vmhost.instance=bench-{run_id}"):
        assert docker_client.containers.list(all=True, filters={"label": label}) == []
        assert docker_client.volumes.list(filters={"label": label}) == []
        assert docker_client.images.list(filters={"label": label}) == []
