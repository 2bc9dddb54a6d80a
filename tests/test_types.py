"""mypy over vmhost/ with the settings in pyproject.toml: zero errors."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_mypy_finds_no_errors() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir",
                           str(REPO / ".mypy_cache")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
