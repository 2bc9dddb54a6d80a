"""Reading listening ports from /proc/net/tcp tables, the CLI's [LOCAL:]REMOTE, and a container that stopped
unseen (no Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unit.conftest import ALICE, IMAGE, create_running
from vmhost.cli.forward import Forward, parse_forward
from vmhost.core.engines.fake import FakeEngine
from vmhost.core.models import WorkspaceStatus
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.ports import listening_ports
from vmhost.errors import InvalidInput, InvalidState

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0B00007F:B1B9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6345672 1 0 100 0 0 10 0
   1: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6345673 1 0 100 0 0 10 0
   2: 0200A8C0:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6345674 1 0 100 0 0 10 0
   3: 0200A8C0:0BB8 0100A8C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 6345675 1 0 100 0 0 10 0
   4: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6345676 1 0 100 0 0 10 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:0
   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:0
   2: 0000000000000000FFFF00000100007F:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:0
   3: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:0
   4: 00000000000000000000000000000000:1F9"""


def test_listening_ports_leave_out_loopback_and_other_states() -> None:
    # 3000 on 0.0.0.0, 5000 on 192.168.0.2, 8080 on ::, 3000 again on :: (once); not Docker's DNS on
    # 127.0.0.11, 8001 on 127.0.0.1, 9000 on ::1, 9001 on ::ffff:127.0.0.1, an established socket, or a
    # line cut off
    assert listening_ports(TCP + TCP6) == {3000, 5000, 8080}
    assert listening_ports("") == set()
    assert listening_ports("garbage\n0: zz:zz 0:0 0A\n") == set()


def test_forward_specs() -> None:
    assert parse_forward("3000") == Forward(3000, 3000)
    assert parse_forward("8000:3000") == Forward(8000, 3000)
    assert parse_forward("0:3000") == Forward(0, 3000)
    for bad in ("", "x", "3000:", "1:0", "70000", "1:2:3"):
        with pytest.raises(InvalidInput):
            parse_forward(bad)


def test_a_container_stopped_behind_vmhosts_back_lists_no_listening_port_and_refuses_a_tunnel(
        orchestrator: Orchestrator, engine: FakeEngine, templates: Path) -> None:
    (templates / "web.toml").write_text(f'image = "{IMAGE}"\nports = [8080]\n')
    workspace = create_running(orchestrator, template="web")
    engine.die(workspace.container_id)  # no reconciler runs: the database still says running
    assert orchestrator.get(ALICE, "box").status == WorkspaceStatus.RUNNING

    assert [(p.port, p.listening, p.in_template) for p in orchestrator.ports.list(ALICE, "box")] == [
        (8080, False, True)]
    with pytest.raises(InvalidState, match="is not running"):
        orchestrator.ports.tunnel_target(ALICE, "box", 8080)
