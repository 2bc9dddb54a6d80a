"""A repository's devcontainer.json (the Development Containers specification), read into what vmhost
applies to a workspace, and the parts vmhost does not do, refused all at once with their reasons.

The file is JSON with comments and trailing commas (parsed by json5). Paths in `build` are relative to
the file's folder, as the specification says, and must stay inside the repository.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json5

from vmhost.core import validation
from vmhost.errors import InvalidInput

CONFIG_PATHS = (".devcontainer/devcontainer.json", ".devcontainer.json")
MAX_CONFIG_BYTES = 256 * 1024
SAFE_RUN_ARGS = frozenset({"--init"})  # what vmhost does anyway
_VARIABLE = re.compile(r"\$\{(localWorkspaceFolderBasename|containerWorkspaceFolderBasename)\}")

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?")  # name or uid[:gid]

Command = str | tuple[str, ...]


class DevContainerRefused(InvalidInput):
    """The file asks for something vmhost does not do (or cannot read it): nothing was created."""

    code = "devcontainer_refused"


@dataclass(frozen=True)
class Build:
    dockerfile: str  # relative to the repository's root
    context: str  # relative to the repository's root; "." is the root
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class DevContainer:
    path: str  # where the file was found, relative to the repository's root
    workspace_folder: str
    name: str | None = None
    image: str | None = None
    build: Build | None = None
    container_env: dict[str, str] = field(default_factory=dict)
    remote_env: dict[str, str] = field(default_factory=dict)
    post_create: tuple[Command, ...] = ()
    post_start: tuple[Command, ...] = ()
    post_attach: tuple[Command, ...] = ()
    forward_ports: tuple[str, ...] = ()
    port_labels: dict[str, str] = field(default_factory=dict)
    container_user: str | None = None
    remote_user: str | None = None
    capabilities: tuple[str, ...] = ()  # from `--cap-add` / `capAdd`: admins only


def default_workspace_folder(repo_name: str) -> str:
    return f"/workspace/{repo_name}"


def repo_name_of(repo_url: str) -> str:
    """The repository's name as git names its clone: the last path part without `.git`."""
    last = repo_url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    name = last.removesuffix(".git") or "repo"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip(".") or "repo"


def find_config(checkout: Path) -> tuple[str, str]:
    """The devcontainer.json of a clone: (its path in the repository, its text); DevContainerRefused when
    there is none."""
    for relative in CONFIG_PATHS:
        candidate = checkout / relative
        # a link (of the file or its folder) could point at the server's own files
        if candidate.is_file() and candidate.resolve().is_relative_to(checkout.resolve()):
            if candidate.stat().st_size > MAX_CONFIG_BYTES:
                raise DevContainerRefused(f"{relative} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
            try:
                return relative, candidate.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise DevContainerRefused(f"{relative} is not UTF-8 text") from exc
    raise DevContainerRefused(f"the repository has no devcontainer file ({' or '.join(CONFIG_PATHS)})")


def parse(text: str, path: str, repo_name: str, *, admin: bool = False) -> DevContainer:
    """Read a devcontainer.json's text (found at `path` in the repository). Everything vmhost does not do
    is refused together, in one DevContainerRefused listing each reason."""
    try:
        data = json5.loads(text)
    except ValueError as exc:
        raise DevContainerRefused(f"{path} is not valid JSON (with comments): {exc}") from exc
    if not isinstance(data, dict):
        raise DevContainerRefused(f"{path} must hold a JSON object")
    reader = _Reader(data, path, repo_name, admin)
    config = reader.read()
    if reader.refused:
        raise DevContainerRefused(f"{path} asks for what vmhost does not do: " + "; ".join(reader.refused))
    return config


class _Reader:
    def __init__(self, data: dict[str, Any], path: str, repo_name: str, admin: bool) -> None:
        self.data = data
        self.path = path
        self.folder = posixpath.dirname(path)
        self.repo_name = repo_name
        self.admin = admin
        self.refused: list[str] = []

    def read(self) -> DevContainer:
        self._refuse_unsupported()
        capabilities = self._capabilities()
        workspace_folder = self._string("workspaceFolder") or default_workspace_folder(self.repo_name)
        workspace_folder = _VARIABLE.sub(self.repo_name, workspace_folder)
        if not workspace_folder.startswith("/") or "\x00" in workspace_folder:
            self.refused.append(f"workspaceFolder must be an absolute path, got {workspace_folder!r}")
        image, build = self._string("image"), self._build()
        if image is None and build is None:
            self.refused.append("it names neither an image nor a build (a Dockerfile)")
        ports, labels = self._ports()
        return DevContainer(
            path=self.path, workspace_folder=posixpath.normpath(workspace_folder), name=self._string("name"),
            image=image if build is None else None, build=build,
            container_env=self._env("containerEnv"), remote_env=self._env("remoteEnv"),
            post_create=self._commands("postCreateCommand"), post_start=self._commands("postStartCommand"),
            post_attach=self._commands("postAttachCommand"), forward_ports=ports, port_labels=labels,
            container_user=self._user("containerUser"), remote_user=self._user("remoteUser"),
            capabilities=capabilities)

    def _refuse_unsupported(self) -> None:
        data = self.data
        if data.get("mounts"):
            self.refused.append("mounts (host bind mounts and extra volumes are not allowed: each workspace has "
                                "one volume, at /workspace)")
        if data.get("workspaceMount"):
            self.refused.append("workspaceMount (vmhost clones the repository into the workspace's volume)")
        if data.get("privileged"):
            self.refused.append("privileged (workspaces never run privileged)")
        if data.get("initializeCommand"):
            self.refused.append("initializeCommand (it would run on the vmhost server)")
        if data.get("features"):
            features = data["features"]
            names = ", ".join(features) if isinstance(features, dict) else repr(features)
            self.refused.append(f"features are not supported yet (asked for: {names})")
        if data.get("dockerComposeFile"):
            self.refused.append("dockerComposeFile (Docker Compose is not supported: use image or build)")
        if data.get("securityOpt"):
            self.refused.append("securityOpt (workspaces keep Docker's default security options)")

    def _capabilities(self) -> tuple[str, ...]:
        asked: list[Any] = list(self._list("capAdd"))
        run_args = self._list("runArgs")
        index = 0
        while index < len(run_args):
            arg = run_args[index]
            if not isinstance(arg, str):
                self.refused.append(f"runArgs must be strings, got {arg!r}")
            elif arg in SAFE_RUN_ARGS:
                pass
            elif arg == "--cap-add" and index + 1 < len(run_args):
                index += 1
                asked.append(run_args[index])
            elif arg.startswith("--cap-add="):
                asked.append(arg.removeprefix("--cap-add="))
            else:
                self.refused.append(f"runArgs {arg!r} (vmhost accepts only {', '.join(sorted(SAFE_RUN_ARGS))}, "
                                    "and --cap-add for admins)")
            index += 1
        if not asked:
            return ()
        if not self.admin:
            self.refused.append(f"added capabilities ({', '.join(map(str, asked))}) are for admins only "
                                "(an admin's template may give them)")
            return ()
        try:
            return validation.check_capabilities(asked)
        except InvalidInput as exc:
            self.refused.append(exc.detail)
            return ()

    def _build(self) -> Build | None:
        build = self.data.get("build")
        dockerfile = self.data.get("dockerFile") or self.data.get("dockerfile")  # the older top-level form
        context = self.data.get("context")
        args: Any = {}
        target = None
        if build is not None:
            if not isinstance(build, dict):
                self.refused.append("build must be an object")
                return None
            dockerfile = build.get("dockerfile", build.get("dockerFile", dockerfile))
            context = build.get("context", context)
            args = build.get("args", {})
            target = build.get("target")
        if dockerfile is None:
            return None
        if not isinstance(dockerfile, str) or not dockerfile:
            self.refused.append(f"build.dockerfile must be a path, got {dockerfile!r}")
            return None
        if not isinstance(target, (str, type(None))):
            self.refused.append(f"build.target must be a string, got {target!r}")
        context_path = self._inside("build.context", context if isinstance(context, str) else ".")
        dockerfile_path = self._inside("build.dockerfile", dockerfile)
        return Build(dockerfile=dockerfile_path, context=context_path, args=self._env_values("build.args", args),
                     target=target if isinstance(target, str) else None)

    def _inside(self, what: str, relative: str) -> str:
        """A path of the file's folder as a path from the repository's root, which it may not leave."""
        joined = posixpath.normpath(posixpath.join(self.folder, relative))
        if relative.startswith("/") or joined == ".." or joined.startswith("../"):
            self.refused.append(f"{what} {relative!r} is outside the repository")
        return joined

    def _ports(self) -> tuple[tuple[str, ...], dict[str, str]]:
        ports: list[str] = []
        for port in self._list("forwardPorts"):
            if isinstance(port, bool) or not isinstance(port, (int, str)):
                self.refused.append(f"forwardPorts entry {port!r} must be a port number")
                continue
            try:
                ports.append(validation.check_port(str(port)))
            except InvalidInput:
                self.refused.append(f"forwardPorts {port!r} (only the workspace's own ports, by number, "
                                    "are forwarded)")
        labels: dict[str, str] = {}
        attributes = self.data.get("portsAttributes") or {}
        if not isinstance(attributes, dict):
            self.refused.append("portsAttributes must be an object")
            attributes = {}
        for port, attribute in attributes.items():
            if isinstance(attribute, dict) and isinstance(attribute.get("label"), str) and str(port).isdigit():
                labels[str(port)] = attribute["label"][:validation.MAX_LABEL_VALUE]
        return tuple(dict.fromkeys(ports)), labels

    def _commands(self, key: str) -> tuple[Command, ...]:
        """A lifecycle command: a string (run by a shell), a list (argv, no shell), or an object of named
        commands of either form (run one after the other, in the file's order)."""
        value = self.data.get(key)
        if value is None or value == "" or value == []:
            return ()
        named = value.items() if isinstance(value, dict) else [(None, value)]
        commands: list[Command] = []
        for name, command in named:
            if isinstance(command, str) and command:
                commands.append(command)
            elif isinstance(command, list) and command and all(isinstance(a, str) for a in command):
                commands.append(tuple(command))
            else:
                where = f"{key}.{name}" if name is not None else key
                self.refused.append(f"{where} must be a string or a list of strings, got {command!r}")
        return tuple(commands)

    def _env(self, key: str) -> dict[str, str]:
        return self._env_values(key, self.data.get(key) or {})

    def _env_values(self, what: str, values: Any) -> dict[str, str]:
        if not isinstance(values, dict):
            self.refused.append(f"{what} must be an object of strings")
            return {}
        clean = {str(k): v if isinstance(v, str) else json5.dumps(v) for k, v in values.items() if v is not None}
        try:
            return validation.check_env(clean)
        except InvalidInput as exc:
            self.refused.append(f"{what}: {exc.detail}")
            return {}

    def _user(self, key: str) -> str | None:
        user = self._string(key)
        if user is not None and not _USER.fullmatch(user):
            self.refused.append(f"{key} {user!r} is not a user name or uid")
            return None
        return user

    def _string(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.refused.append(f"{key} must be a string, got {value!r}")
            return None
        return value

    def _list(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.refused.append(f"{key} must be a list")
            return []
        return value
