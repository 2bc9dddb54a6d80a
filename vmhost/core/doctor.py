"""`vmhost doctor` as the daemon sees it: Docker, the database, the templates' images, free disk, each
node of a cluster, and orphaned Docker objects. Each check passes or fails with a detail and, on failure, a hint."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmhost.config import Settings
from vmhost.core import migrations
from vmhost.core.engines import LOCAL_NODE, NODE_UP, Engine
from vmhost.core.models import WorkspaceStatus
from vmhost.core.reconcile import Reconciler
from vmhost.core.sshhost import host_key_fingerprint, host_key_path
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog
from vmhost.errors import VmhostError

MIN_FREE_BYTES = 1024**3
MIN_FREE_FRACTION = 0.05


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str, hint: str) -> Check:
    return Check(name, False, detail, hint)


def check_docker(reconciler: Reconciler) -> list[Check]:
    reconciler.engine.ping()
    return [passed("docker", "the Docker engine answers")]


def check_database(store: Store) -> list[Check]:
    problems = store.integrity_check()
    checks = [passed("database", f"{store.path}: integrity_check ok") if problems == ["ok"] else
              failed("database", f"{store.path}: integrity_check reports {'; '.join(problems[:3])}",
                     "stop the daemon and restore a backup with 'vmhost db restore PATH'")]
    version, latest = store.schema_version, migrations.latest_version()
    if version == latest:
        checks.append(passed("schema", f"schema version {version} (latest)"))
    else:
        checks.append(failed("schema", f"schema version {version}, this vmhost expects {latest}",
                             "restart the daemon to migrate" if version < latest else
                             "this database was written by a newer vmhost; upgrade vmhost"))
    return checks


def check_templates(templates: TemplateCatalog, reconciler: Reconciler) -> list[Check]:
    found, broken = templates.load()
    checks = [failed(f"template {Path(b.source).stem}", f"{b.source}: {b.error}", "fix or remove the file")
              for b in broken]
    for template in sorted(found.values(), key=lambda t: t.name):
        name = f"template {template.name}"
        if reconciler.engine.image_present(template.image):
            checks.append(passed(name, f"image {template.image} is on this host"))
        else:
            checks.append(failed(name, f"image {template.image} is not on this host",
                                 f"docker pull {template.image}"))
    return checks


def check_disk(name: str, path: Path) -> Check:
    usage = shutil.disk_usage(path)
    free_gib = usage.free / 1024**3
    detail = f"{path}: {free_gib:.1f} GiB free ({usage.free / usage.total:.0%})"
    if usage.free < MIN_FREE_BYTES or usage.free < usage.total * MIN_FREE_FRACTION:
        return failed(name, detail, f"free space on the filesystem that holds {path}")
    return passed(name, detail)


def check_disks(store: Store, reconciler: Reconciler) -> list[Check]:
    checks = [check_disk("disk (database)", store.path.parent)]
    root = reconciler.engine.data_root()
    if root and Path(root).exists():
        checks.append(check_disk("disk (docker)", Path(root)))
    return checks


def check_nodes(store: Store, templates: TemplateCatalog, reconciler: Reconciler) -> list[Check]:
    """On a cluster, each node: up, its engine answering with the templates' images, and its free disk (read
    with `df` in a workspace running there: Docker's API does not tell)."""
    engine = reconciler.engine
    nodes = engine.nodes()
    if [n.id for n in nodes] == [LOCAL_NODE]:
        return []  # the checks above are this host's
    images = sorted({t.image for t in templates.load()[0].values()})
    checks = []
    for node in nodes:
        name = f"node {node.hostname} ({node.id[:12]})"
        if node.state not in NODE_UP:
            checks.append(failed(name, f"Swarm says it is {node.state}; its workspaces are unreachable",
                                 "bring the node back (it rejoins by itself), or remove it from the swarm"))
            continue
        problems = engine.node_problems(node.id, images)
        checks.append(failed(name, "; ".join(problems), "check its engine URL ('vmhost nodes ls'); a missing "
                             "image is copied there by the next create that needs it") if problems else
                      passed(name, f"{node.state}, its engine answers, the templates' images are there"))
        try:
            checks.append(node_disk(store, engine, node.id, name))
        except VmhostError as exc:
            checks.append(failed(f"disk ({name})", exc.detail, "check the node's disk by hand"))
    return checks


def node_disk(store: Store, engine: Engine, node: str, name: str) -> Check:
    running = next((w for w in store.settled_on_node(node) if w.status == WorkspaceStatus.RUNNING), None)
    if running is None or running.container_id is None:
        return passed(f"disk ({name})", "not measured: no workspace runs there to read it from")
    output = bytearray()
    outcome = engine.run_command(running.container_id, ["df", "-Pk", "/workspace"],
                                 on_output=lambda stream, chunk: output.extend(chunk[:4096]), timeout=10)
    fields = output.decode(errors="replace").splitlines()[-1].split() if outcome.exit_code == 0 else []
    if len(fields) < 4 or not fields[1].isdigit() or not fields[3].isdigit():
        return failed(f"disk ({name})", f"df in workspace {running.name} did not answer ({outcome.error or ''})",
                      "check the node's disk by hand")
    total, free = int(fields[1]) * 1024, int(fields[3]) * 1024
    detail = f"{free / 1024**3:.1f} GiB free ({free / max(total, 1):.0%}) where its volumes are"
    if free < MIN_FREE_BYTES or free < total * MIN_FREE_FRACTION:
        return failed(f"disk ({name})", detail, "free space on the node's Docker data directory")
    return passed(f"disk ({name})", detail)


def check_orphans(reconciler: Reconciler) -> list[Check]:
    orphans = reconciler.orphans()
    if not orphans:
        return [passed("orphans", "no Docker object of this daemon lacks its workspace")]
    listed = ", ".join(f"{o.kind} {o.name}" for o in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
    return [failed("orphans", f"{len(orphans)} Docker object(s) belong to no workspace: {listed}",
                   "'vmhost doctor --fix' removes them")]


def check_ssh(settings: Settings) -> Check:
    """The SSH server: off, or where it listens and its host key's fingerprint (to check on first login)."""
    if settings.ssh_address is None:
        return passed("ssh", "the SSH server is off (set ssh_bind to turn it on)")
    host_key = host_key_path(settings.db_path)
    fingerprint = host_key_fingerprint(host_key)
    if fingerprint is None:
        return failed("ssh", f"no host key at {host_key}", "restart the daemon: it makes the key when it starts")
    return passed("ssh", f"listening on {settings.ssh_bind}; host key {fingerprint}")


def run_checks(store: Store, templates: TemplateCatalog, reconciler: Reconciler) -> list[Check]:
    """Every check; one that cannot run (e.g. Docker is down) fails with the reason."""
    steps: list[tuple[str, Callable[[], list[Check]], str]] = [
        ("docker", lambda: check_docker(reconciler), "start Docker ('systemctl start docker') or fix docker_host"),
        ("database", lambda: check_database(store), "check the database file and its permissions"),
        ("templates", lambda: check_templates(templates, reconciler), "start Docker, then check again"),
        ("disk", lambda: check_disks(store, reconciler), "check the paths exist"),
        ("nodes", lambda: check_nodes(store, templates, reconciler), "check the cluster ('vmhost nodes ls')"),
        ("orphans", lambda: check_orphans(reconciler), "start Docker, then check again"),
    ]
    checks: list[Check] = []
    for name, step, hint in steps:
        try:
            checks.extend(step())
        except VmhostError as exc:
            checks.append(failed(name, exc.detail, hint))
        except OSError as exc:
            checks.append(failed(name, str(exc), hint))
    return checks
