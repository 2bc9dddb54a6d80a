"""A workspace's container through its life on the engine: the steps (create, start, provision, confirm,
stop, remove), the lifecycle operations' handlers made of them, and how a workspace stays when one of
its operations does not succeed (the operation queue's Settler).

Each owner's containers share a bridge network of their own: other owners' containers cannot reach them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from vmhost.core import devcontainer_build
from vmhost.core.clone import clone
from vmhost.core.devcontainer import DevContainer, find_config, parse, repo_name_of
from vmhost.core.engines import UNREACHABLE, WORKSPACE_LABEL, ContainerSpec, Engine, NetworkSpec
from vmhost.core.layers import with_devcontainer
from vmhost.core.models import (
    POOL_OWNER,
    ContainerState,
    Operation,
    OperationType,
    Template,
    Workspace,
    WorkspaceStatus,
)
from vmhost.core.operations import INTERRUPTED, MAX_ATTEMPTS, Cancels, workspace_id_of
from vmhost.core.output import OperationOutput
from vmhost.core.quotas import Quotas
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog
from vmhost.errors import OperationFailed, ProviderError, TemplateNotFound, VmhostError, WorkspaceNotFound

log = logging.getLogger(__name__)

NETWORK_ATTEMPTS = 3
CLONE_FROM_ANYWHERE = "anywhere"
DEVCONTAINER_LABEL = "vmhost.devcontainer"  # on an image built from a devcontainer.json: its context's digest
MANAGED_LABEL = "vmhost.managed"
OWNER_LABEL = "vmhost.owner"
_UNSAFE_IN_NAMES = re.compile(r"[^a-zA-Z0-9_.-]")  # Docker's rule for object names
T = TypeVar("T")


def container_of(workspace: Workspace) -> str:
    """The id of the workspace's container; ProviderError when it has none."""
    if not workspace.container_id:
        raise ProviderError(f"workspace {workspace.name!r} has no container (status {workspace.status}); "
                            "delete it and create it again")
    return workspace.container_id


def volume_name(workspace_id: str) -> str:
    """The name a new workspace's /workspace volume is given."""
    return f"vmhost-{workspace_id}-workspace"


def volume_of(workspace: Workspace) -> str:
    """The name of the workspace's /workspace volume (every workspace is given one when it is made)."""
    return workspace.volume or volume_name(workspace.id)


class Lifecycle:
    """`purge_snapshots(workspace)` removes what a workspace's snapshots keep (see Snapshots.purge): a
    function, since the snapshots are built on this object."""

    def __init__(self, store: Store, engine: Engine, templates: TemplateCatalog, quotas: Quotas, cancels: Cancels,
                 purge_snapshots: Callable[[Workspace], None], *, instance: str, publish_address: str,
                 provision_timeout: float, stop_timeout: int) -> None:
        self.store = store
        self.engine = engine
        self.templates = templates
        self.quotas = quotas
        self.cancels = cancels
        self.purge_snapshots = purge_snapshots
        self.instance = instance
        self.publish_address = publish_address
        self.provision_timeout = provision_timeout
        self.stop_timeout = stop_timeout

    # -- labels and networks --------------------------------------------------------------------

    def labels_for(self, workspace: Workspace) -> dict[str, str]:
        return {MANAGED_LABEL: "true", "vmhost.instance": self.instance, WORKSPACE_LABEL: workspace.id,
                OWNER_LABEL: workspace.owner}

    @property
    def instance_labels(self) -> dict[str, str]:
        return {MANAGED_LABEL: "true", "vmhost.instance": self.instance}

    def network_for(self, owner: str) -> NetworkSpec:
        """The bridge network all of one owner's containers join: other owners' containers cannot reach them."""
        name = f"vmhost-{self.instance}-{owner}"
        safe = _UNSAFE_IN_NAMES.sub("-", name)
        if safe != name:  # keep names that differ only in such characters apart
            safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        # the warm pools' workspaces, which will be different owners', never reach each other
        return NetworkSpec(name=safe, labels={**self.instance_labels, OWNER_LABEL: owner},
                           isolated=owner == POOL_OWNER)

    def _on_network(self, network: NetworkSpec, act: Callable[[], T]) -> T:
        """Create or start a container on `network`. Until the container runs, Docker lets the network go
        (release_networks may see none of its owner's containers left): when Docker finds something
        missing, make the network again and try again, a few times."""
        for _ in range(NETWORK_ATTEMPTS - 1):
            try:
                return act()
            except ProviderError as exc:
                if not exc.extra.get("missing"):
                    raise
            self.engine.ensure_network(network)
        return act()

    def release_networks(self, owner: str | None = None) -> None:
        """Remove the networks (one owner's, or every owner's) that none of the owner's containers is on.
        A create that races with this makes the network again (see _on_network)."""
        labels = {**self.instance_labels, **({OWNER_LABEL: owner} if owner is not None else {})}
        networks = self.engine.list_managed(labels, kinds=("network",))
        if not networks:
            return
        containers = self.engine.list_managed(self.instance_labels, kinds=("container",))
        # the database's owner where it has the workspace: a container claimed from a warm pool keeps the
        # pool's owner label (Docker cannot change labels)
        owners = self.store.owners_of({c.labels[WORKSPACE_LABEL] for c in containers if WORKSPACE_LABEL in c.labels})
        in_use = {owners.get(c.labels.get(WORKSPACE_LABEL, ""), c.labels.get(OWNER_LABEL)) for c in containers}
        for network in networks:
            if network.labels.get(OWNER_LABEL) not in in_use:
                self.engine.remove_network(network.id)

    # -- steps ----------------------------------------------------------------------------------

    def create_container(self, workspace: Workspace) -> str:
        limits = self.quotas.container_limits(workspace)
        network = self.network_for(workspace.owner)
        spec = ContainerSpec(
            name=f"vmhost-{workspace.id}", image=workspace.image, command=workspace.command,
            labels=self.labels_for(workspace), volume=volume_of(workspace), env=workspace.env, cpus=limits.cpus,
            memory_mb=limits.memory_mb, pids_limit=limits.pids, network=network.name, ports=tuple(workspace.ports),
            publish_address=self.publish_address, hostname=workspace.name,
            capabilities=tuple(workspace.capabilities), node=workspace.node, workdir=workspace.start_dir,
            user=workspace.user)
        self.engine.ensure_network(network)
        return self._on_network(network, lambda: self.engine.create_container(spec))

    def start_container(self, workspace: Workspace) -> None:
        self._on_network(self.network_for(workspace.owner), lambda: self.engine.start(container_of(workspace)))

    def _provision(self, workspace: Workspace, operation: Operation, first: int = 0) -> None:
        """Run the provision commands in order (from the one at index `first`: those before it ran in the
        warm pool); each may run `provision_timeout` seconds, and a cancel (a forced delete) kills the one
        running with all its processes."""
        self._run_commands(workspace, operation, workspace.provision, "provision", first)

    def _post_start(self, workspace: Workspace, operation: Operation) -> None:
        """A devcontainer.json's postStartCommand, after each start (as the provision commands run)."""
        self._run_commands(workspace, operation, workspace.post_start, "postStartCommand")

    def _run_commands(self, workspace: Workspace, operation: Operation, commands: list[str | list[str]],
                      what: str, first: int = 0) -> None:
        cancel = self.cancels.event(operation.id)
        with self._output(operation) as write:
            for number, command in enumerate(commands[first:], start=first + 1):
                argv = command if isinstance(command, list) else ["/bin/sh", "-c", command]
                shown = command if isinstance(command, str) else " ".join(command)
                self._stop_if_cancelled(operation, cancel)
                write("stdout", f"$ {shown}\n".encode())
                outcome = self.engine.run_command(container_of(workspace), argv, on_output=write,
                                                    workdir=workspace.start_dir, timeout=self.provision_timeout,
                                                    cancel=cancel)
                self._stop_if_cancelled(operation, cancel)
                if outcome.timed_out:
                    raise OperationFailed(f"{what} command {number} ({shown}) ran longer than "
                                          f"{self.provision_timeout:g} s (the provision_timeout setting) and was "
                                          "killed with all its processes; see the operation's output")
                if outcome.error:
                    raise ProviderError(f"{what} command {number} ({shown}) could not run: {outcome.error}")
                if outcome.exit_code != 0:
                    raise ProviderError(f"{what} command {number} ({shown}) exited with {outcome.exit_code}; "
                                        "see the operation's output")
        self._stop_if_cancelled(operation, cancel)  # also when cancelled before provisioning, or with none

    def _stop_if_cancelled(self, operation: Operation, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise OperationFailed(self.cancels.reason(operation.id))

    def confirm_running(self, workspace: Workspace) -> ContainerState:
        state = self.engine.inspect(container_of(workspace))
        if not state.running:
            raise ProviderError(f"the container stopped right after starting (Docker says {state.status}); "
                                f"check the template's command {workspace.command}")
        return state

    def _clone_into(self, workspace: Workspace, operation: Operation) -> None:
        """Clone the workspace's repository, when it has one, into its /workspace."""
        if not workspace.repo_url:
            return
        with tempfile.TemporaryDirectory(prefix="vmhost-clone-") as tmp:
            checkout = self._clone(workspace, operation, tmp)
            self._copy_clone(workspace, checkout)

    def _clone(self, workspace: Workspace, operation: Operation, tmp: str) -> Path:
        """Clone the workspace's repository into the folder `tmp`, on the server; returns the checkout."""
        repo_url = workspace.repo_url or ""
        with self._output(operation) as write:
            write("stdout", f"$ git clone {repo_url}"
                            f"{' --branch ' + workspace.branch if workspace.branch else ''}\n".encode())
        checkout = os.path.join(tmp, "src")
        clone(repo_url, workspace.branch, checkout, anywhere=operation.params.get("clone_from") == CLONE_FROM_ANYWHERE)
        return Path(checkout)

    def _copy_clone(self, workspace: Workspace, checkout: Path) -> None:
        """The clone's files into /workspace; a devcontainer workspace's into /workspace/<repository name>,
        where its workspaceFolder is by default."""
        with tempfile.TemporaryFile(dir=checkout.parent) as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                if workspace.devcontainer:
                    tar.add(checkout, arcname=repo_name_of(workspace.repo_url or ""))
                else:
                    for entry in sorted(os.listdir(checkout)):
                        tar.add(checkout / entry, arcname=entry)
            archive.seek(0)
            self.engine.put_archive(container_of(workspace), "/workspace", archive)
        shutil.rmtree(checkout, ignore_errors=True)

    def _apply_devcontainer(self, workspace: Workspace, operation: Operation, checkout: Path) -> Workspace:
        """Read the clone's devcontainer.json and give the workspace its settings and image (pulled, or
        built from the clone). What vmhost does not do is refused here, before anything is made."""
        path, text = find_config(checkout)
        config = parse(text, path, repo_name_of(workspace.repo_url or ""), admin=bool(operation.params.get("admin")))
        with self._output(operation) as write:
            write("stdout", f"reading {path}\n".encode())
        image = self._devcontainer_image(workspace, operation, config, checkout)
        template: Template | None
        try:
            template = self.templates.get(workspace.template)
        except TemplateNotFound:
            template = None
        return self.store.update_workspace(workspace.id, **with_devcontainer(workspace, template, config, image))

    def _devcontainer_image(self, workspace: Workspace, operation: Operation, config: DevContainer,
                            checkout: Path) -> str:
        """The file's image, or the one built from its Dockerfile: built once for the same build context."""
        if config.build is None:
            image = config.image or ""
            self.ensure_image(image, operation)
            return image
        build = config.build
        archive, dockerfile, digest = devcontainer_build.context_archive(checkout, build)
        tag = f"{devcontainer_build.REPOSITORY}:{digest}"
        with archive, self._output(operation) as write:
            if self.engine.image_present(tag):
                write("stdout", f"using {tag}, built before from the same build context\n".encode())
                return tag
            write("stdout", f"$ docker build --file {build.dockerfile} {build.context}"
                            f"{' --target ' + build.target if build.target else ''} (as {tag})\n".encode())
            labels = {**self.labels_for(workspace), DEVCONTAINER_LABEL: digest}
            self.engine.build_image(archive, dockerfile=dockerfile, tag=tag, buildargs=build.args,
                                    target=build.target, labels=labels,
                                    memory_mb=self.quotas.container_limits(workspace).memory_mb,
                                    on_output=lambda line: write("stdout", f"{line}\n".encode()))
        return tag

    def ensure_image(self, image: str, operation: Operation) -> None:
        """Have the image where the workspace will run; a pull or a copy shows in the operation's output."""
        with self._output(operation) as write:
            self.engine.ensure_image(image, lambda line: write("stdout", f"{line}\n".encode()))

    def _output(self, operation: Operation) -> OperationOutput:
        """Where a step records output: after what earlier steps (or attempts) recorded."""
        return OperationOutput(self.store, operation.id, self.store.get_operation(operation.id).output)

    def sync_status(self, workspace: Workspace, reason: str | None = None) -> Workspace:
        """Make the stored status say what Docker shows."""
        state = self.engine.inspect(workspace.container_id) if workspace.container_id else None
        if state is None or not state.exists:
            return self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR,
                                               status_reason=reason or "container removed outside vmhost")
        if state.status == UNREACHABLE:
            return self.store.update_workspace(workspace.id, status=WorkspaceStatus.UNREACHABLE,
                                               status_reason=state.reason, node=state.node or workspace.node)
        status = WorkspaceStatus.RUNNING if state.running else WorkspaceStatus.STOPPED
        return self.store.update_workspace(workspace.id, status=status, status_reason=reason,
                                           ports=state.ports or workspace.ports, node=state.node or workspace.node)

    def with_container(self, operation: Operation) -> tuple[Workspace, str]:
        """The operation's workspace and its container's id; ProviderError when it has no container."""
        workspace = self.store.get_workspace(workspace_id_of(operation))
        return workspace, container_of(workspace)

    def remove_container(self, workspace: Workspace) -> None:
        """Remove the workspace's container, by its name when its id was never recorded."""
        self.engine.remove_container(workspace.container_id or f"vmhost-{workspace.id}")

    def release_built_image(self, image: str) -> None:
        """Remove an image built from a devcontainer.json once no container uses it (it is shared by the
        workspaces of the same build context, and labelled only with the first one's id)."""
        if image.startswith(devcontainer_build.REPOSITORY + ":"):
            self.engine.remove_image(image)

    def remove_resources(self, workspace: Workspace) -> None:
        """Remove a workspace's container, volume and snapshots (images and volume archives), and its
        owner's network when no other container of theirs is on it."""
        self.remove_container(workspace)
        self.release_built_image(workspace.image)
        self.purge_snapshots(workspace)
        if workspace.volume:
            self.engine.remove_volume(workspace.volume)
        self.release_networks(workspace.owner)

    # -- the operations' handlers ---------------------------------------------------------------

    def run_create(self, operation: Operation) -> dict[str, Any]:
        workspace = self.store.update_workspace(workspace_id_of(operation), status=WorkspaceStatus.PROVISIONING,
                                                status_reason=None)
        with tempfile.TemporaryDirectory(prefix="vmhost-clone-") as tmp:
            # cloned before anything is made: a devcontainer.json says what to make, or refuses
            checkout = self._clone(workspace, operation, tmp) if workspace.repo_url else None
            if workspace.devcontainer and checkout is not None:
                workspace = self._apply_devcontainer(workspace, operation, checkout)
            else:
                self.ensure_image(workspace.image, operation)
            self.engine.create_volume(volume_of(workspace), self.labels_for(workspace))
            container_id = self.create_container(workspace)
            workspace = self.store.update_workspace(workspace.id, container_id=container_id)
            if checkout is not None:
                self._copy_clone(workspace, checkout)
        self.start_container(workspace)
        self._provision(workspace, operation)
        self._post_start(workspace, operation)
        state = self.confirm_running(workspace)
        self.store.update_workspace(workspace.id, status=WorkspaceStatus.RUNNING, ports=state.ports,
                                    node=state.node or workspace.node)
        return {"container_id": container_id}

    def run_claimed(self, operation: Operation) -> dict[str, Any]:
        """The rest of a create served by a warm pool (see vmhost.core.pools): its container runs, with
        the template's provision commands done; only the workspace's own steps are left: the clone and
        the request's provision commands."""
        workspace = self.store.get_workspace(workspace_id_of(operation))
        container_id = container_of(workspace)
        self._clone_into(workspace, operation)
        self._provision(workspace, operation, first=operation.params.get("provisioned", 0))
        state = self.confirm_running(workspace)
        self.store.update_workspace(workspace.id, status=WorkspaceStatus.RUNNING, ports=state.ports,
                                    node=state.node or workspace.node)
        return {"container_id": container_id, "pooled": True}

    def run_join_network(self, operation: Operation) -> dict[str, Any]:
        """Move a workspace claimed from a warm pool from the pool's (isolated) network to its owner's."""
        workspace, container_id = self.with_container(operation)
        owner_network = self.network_for(workspace.owner)
        self.engine.ensure_network(owner_network)
        self._on_network(owner_network, lambda: self.engine.move_network(
            container_id, operation.params["leave"], owner_network.name))
        return {"network": owner_network.name}

    def run_start(self, operation: Operation) -> dict[str, Any]:
        workspace, _ = self.with_container(operation)
        self.start_container(workspace)
        self._post_start(workspace, operation)
        self.sync_status(workspace)
        return {}

    def run_stop(self, operation: Operation) -> dict[str, Any]:
        workspace, container_id = self.with_container(operation)
        self.engine.stop(container_id, self.stop_timeout)
        self.sync_status(workspace)
        return {}

    def run_restart(self, operation: Operation) -> dict[str, Any]:
        workspace, container_id = self.with_container(operation)
        self.engine.restart(container_id, self.stop_timeout)
        self._post_start(workspace, operation)
        self.sync_status(workspace)
        return {}

    def run_rebuild(self, operation: Operation) -> dict[str, Any]:
        """A fresh container from the template's current image, keeping the /workspace volume. A workspace
        made from a devcontainer.json clones its repository again and applies the file as it is now (the
        clone only to read it: /workspace keeps its files)."""
        workspace = self.store.update_workspace(workspace_id_of(operation), status=WorkspaceStatus.PROVISIONING,
                                                status_reason=None)
        old_image = workspace.image
        if workspace.devcontainer and workspace.repo_url:
            with tempfile.TemporaryDirectory(prefix="vmhost-clone-") as tmp:
                workspace = self._apply_devcontainer(workspace, operation, self._clone(workspace, operation, tmp))
            image = workspace.image
        else:
            try:
                image = self.templates.get(workspace.template).image
            except TemplateNotFound:  # the template is gone: rebuild from the image the workspace was made of
                image = workspace.image
            self.ensure_image(image, operation)
        self.remove_container(workspace)
        workspace = self.store.update_workspace(workspace.id, image=image, container_id=None)
        workspace = self.store.update_workspace(workspace.id, container_id=self.create_container(workspace))
        self.start_container(workspace)
        self._provision(workspace, operation)
        self._post_start(workspace, operation)
        state = self.confirm_running(workspace)
        self.store.update_workspace(workspace.id, status=WorkspaceStatus.RUNNING, ports=state.ports,
                                    node=state.node or workspace.node)
        if old_image != image:
            self.release_built_image(old_image)
        return {"container_id": workspace.container_id, "image": image}

    def run_delete(self, operation: Operation) -> dict[str, Any]:
        try:
            workspace = self.store.update_workspace(workspace_id_of(operation), status=WorkspaceStatus.DELETING)
        except WorkspaceNotFound:
            return {}
        self.remove_resources(workspace)
        self.store.delete_workspace(workspace.id)
        return {}

    def run_expire(self, operation: Operation) -> dict[str, Any]:
        workspace = self.store.get_workspace(workspace_id_of(operation))
        if workspace.container_id and self.engine.inspect(workspace.container_id).running:
            self.engine.stop(workspace.container_id, self.stop_timeout)
        return self.run_delete(operation)

    # -- settling (the operation queue's Settler) -----------------------------------------------

    def settle_failed(self, operation: Operation, reason: str) -> None:
        try:
            workspace = self.store.get_workspace(workspace_id_of(operation))
        except WorkspaceNotFound:
            return
        if operation.type == OperationType.CREATE:
            self._discard_failed_create(workspace, f"create failed: {reason}")
        elif operation.type in (OperationType.DELETE, OperationType.EXPIRE):
            self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR,
                                        status_reason=f"{operation.type} failed: {reason}")
        else:
            self.sync_status(workspace, reason=f"{operation.type} failed: {reason}")

    def settle_cancelled(self, operation: Operation) -> None:
        """After a forced delete, remove what the operation's thread may have made in Docker since;
        otherwise leave the workspace to whoever acts on it now."""
        if operation.workspace_id is None:
            return
        try:
            gone = self.store.get_workspace(operation.workspace_id).status == WorkspaceStatus.DELETING
        except WorkspaceNotFound:
            gone = True
        if gone:
            try:
                self._purge(operation.workspace_id, operation.owner)
            except VmhostError as exc:
                log.warning("could not clean up after cancelled %s operation %s: %s", operation.type, operation.id,
                            exc.detail)

    def settle_abandoned(self, operation: Operation, workspace: Workspace) -> None:
        if operation.type == OperationType.CREATE:
            self._discard_failed_create(workspace, f"create {INTERRUPTED} ({MAX_ATTEMPTS} attempts)")
        else:
            self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR,
                                        status_reason=f"{operation.type} {INTERRUPTED}")

    def settle_interrupted(self, operation: Operation, workspace: Workspace) -> str | None:
        workspace = self.sync_status(workspace)
        stops = (OperationType.STOP, OperationType.IDLE_STOP, OperationType.AUTOSTOP)
        wanted = WorkspaceStatus.STOPPED if operation.type in stops else WorkspaceStatus.RUNNING
        return None if workspace.status == wanted else f"Docker shows the workspace {workspace.status}"

    def _purge(self, workspace_id: str, owner: str) -> None:
        """Remove every Docker object labelled as this workspace's, and its owner's network if now idle."""
        labels = {**self.instance_labels, WORKSPACE_LABEL: workspace_id}
        removers = {"container": self.engine.remove_container, "volume": self.engine.remove_volume,
                    "image": self.engine.remove_image}  # remove_image leaves one a restored copy runs from
        for found in sorted(self.engine.list_managed(labels), key=lambda o: o.kind != "container"):
            removers[found.kind](found.id)
        self.release_networks(owner)

    def _discard_failed_create(self, workspace: Workspace, reason: str) -> None:
        """A failed create leaves its row in error (the operation keeps the output) and nothing in Docker."""
        try:
            self.remove_resources(workspace)
        except VmhostError as exc:
            reason += f"; its container and volume are still in Docker ({exc.detail}): delete the workspace"
        self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR, status_reason=reason)
