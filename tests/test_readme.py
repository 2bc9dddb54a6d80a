"""The README's examples run as written, in order, against a real daemon.

Every fenced `sh` block runs, one after the other in one bash process (so `TOKEN=...` carries on),
unless the line before it is `<!-- not run: REASON -->`: set-up and server installation (root paths,
systemd), a synopsis with placeholders, the long benchmark. Two things differ from a real host and
are replaced in the text: the system socket `/run/vmhost/vmhost.sock` and the TCP address
`127.0.0.1:3121` become the test daemon's; its `base` template is the tests' busybox image. `curl`
fails on any HTTP error (`--fail-with-body`), and every command must succeed (`set -euo pipefail`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO

README = REPO / "README.md"
SKIP_MARK = re.compile(r"<!-- not run: .+ -->")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def runnable_blocks(text: str) -> list[str]:
    blocks = []
    for match in BLOCK.finditer(text):
        if match.group(1) != "sh":
            continue
        before = text[:match.start()].rstrip().rpartition("\n")[2]
        if not SKIP_MARK.fullmatch(before.strip()):
            blocks.append(match.group(2))
    return blocks


def test_each_block_that_does_not_run_says_why() -> None:
    text = README.read_text()
    marks = [line for line in text.splitlines() if line.startswith("<!-- not run")]
    assert all(SKIP_MARK.fullmatch(mark) for mark in marks), marks
    assert text.count("-->\n```sh\n") >= len(marks), "a not-run mark must be the line right before its sh block"
    assert {m.group(1) for m in BLOCK.finditer(text)} <= {"sh", "toml", "json", "yaml"}, \
        "a fenced block of another language: make it sh (it runs) or one that does not run"
    assert len(runnable_blocks(text)) >= 2


def test_the_readme_examples_run_in_order(make_daemon: Any, tmp_path: Path) -> None:
    daemon = make_daemon()
    script = "\n".join(runnable_blocks(README.read_text()))
    script = script.replace("/run/vmhost/vmhost.sock", str(daemon.socket))
    script = script.replace("127.0.0.1:3121", f"127.0.0.1:{daemon.port}")
    prelude = "set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error \"$@\"; }\n"
    env = daemon.cli_env({"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    done = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert '"status":"failed"' not in done.stdout, report
    with daemon.client() as client:
        names = {w["name"]: w["owner"] for w in client.get("/api/v1/workspaces").json()["items"]}
    assert names == {"demo": "root", "admin-box": "root", "web": "alice", "web-copy": "alice"}, report
    assert (tmp_path / "src" / "app.py").read_text() == 'print("hi")\n'
