"""The repository's shell scripts pass shellcheck (scripts/test installs it; without it this skips)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO


def shell_scripts() -> list[str]:
    """Tracked files that are bash or sh: by their `#!` line, their suffix, or a shellcheck directive
    (scripts/lib.sh is sourced, so it names its shell that way)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    found = []
    for name in filter(None, tracked):
        path = REPO / name
        if not path.is_file():  # deleted in the work tree
            continue
        head = path.read_bytes()[:200].decode(errors="replace")
        first_line = head.partition("\n")[0]
        if (name.endswith((".sh", ".bash")) or "# shellcheck shell=" in head
                or first_line.startswith("#!") and Path(first_line.split()[-1]).name in ("bash", "sh")):
            found.append(name)
    return sorted(found)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_every_shell_script_passes_shellcheck() -> None:
    scripts = shell_scripts()
    assert {"scripts/lib.sh", "scripts/test", "bench/run", ".ci/run", "completions/vmhost.bash"} <= set(scripts)
    done = subprocess.run(["shellcheck", "--severity=warning", "--format=gcc", *scripts], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
