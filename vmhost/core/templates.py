"""Workspace templates: built-in ones plus `*.toml` files in the templates directory.

A file template with the name of a built-in one replaces it. A file that cannot be read is reported
with its error, never silently dropped.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmhost.core import validation
from vmhost.core.durations import parse_duration
from vmhost.core.models import Template
from vmhost.errors import InvalidInput, TemplateNotFound

BUILTIN: tuple[Template, ...] = (
    Template(name="base", image="debian:bookworm-slim", description="Debian 12 with a shell", shell="/bin/bash"),
    Template(name="python", image="python:3.12-slim", description="Python 3.12 on Debian", shell="/bin/bash",
             provision=("python3 --version",)),
    Template(name="nodejs", image="node:22-bookworm-slim", description="Node.js 22 on Debian", shell="/bin/bash",
             ports=("3000",), provision=("node --version",)),
)

_FIELDS = {"name", "description", "image", "command", "env", "ports", "provision", "cpus", "memory_mb", "shell",
           "capabilities", "idle_timeout", "pool_size", "devcontainer"}
MAX_POOL_SIZE = 100


@dataclass(frozen=True)
class BrokenTemplate:
    source: str
    error: str


def parse_idle_timeout(value: Any) -> int | None:
    """A template's `idle_timeout`: seconds (a number) or a duration ("2h", "90m"); 0 means no idle stop."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip() in ("0", "none", "never"):
            return None
        seconds: Any = round(parse_duration(value))
    elif isinstance(value, float) and not isinstance(value, bool) and value >= 0:
        seconds = round(value)
    else:
        seconds = value
    return validation.check_idle_timeout(seconds, "'idle_timeout'")


def parse_template(data: dict[str, Any], source: str) -> Template:
    unknown = set(data) - _FIELDS
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
    if not isinstance(data.get("image"), str) or not data["image"].strip():
        raise InvalidInput("'image' is required")
    name = data.get("name") or Path(source).stem
    validation.check_name(name, "template name")
    command = data.get("command", ["sleep", "infinity"])
    if isinstance(command, str) or not all(isinstance(c, str) for c in command) or not command:
        raise InvalidInput("'command' must be a non-empty list of strings")
    env = validation.check_env(data.get("env", {}))
    provision = tuple(validation.check_provision(data.get("provision", [])))
    template = Template(
        name=name,
        image=data["image"],
        description=str(data.get("description", "")),
        command=tuple(command),
        env=env,
        ports=tuple(validation.check_port(p) for p in data.get("ports", [])),
        provision=tuple(tuple(p) if isinstance(p, list) else p for p in provision),
        cpus=validation.check_cpus(data.get("cpus")),
        memory_mb=validation.check_memory(data.get("memory_mb")),
        shell=data.get("shell"),
        source=source,
        capabilities=validation.check_capabilities(data.get("capabilities", [])),
        idle_timeout_seconds=parse_idle_timeout(data.get("idle_timeout")),
        pool_size=parse_pool_size(data.get("pool_size", 0)),
        devcontainer=parse_flag(data.get("devcontainer", False), "devcontainer"),
    )
    if template.devcontainer and template.pool_size:
        raise InvalidInput("'pool_size' and 'devcontainer' do not go together: a devcontainer workspace is made "
                           "from its own repository's file, which a warm pool's workspace has not read")
    return template


def parse_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name!r} must be true or false, got {value!r}")
    return value


def parse_pool_size(value: Any) -> int:
    """A template's `pool_size`: how many of its workspaces the warm pool keeps ready (0: no pool)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POOL_SIZE:
        raise InvalidInput(f"'pool_size' must be a whole number from 0 to {MAX_POOL_SIZE}, got {value!r}")
    return value


class TemplateCatalog:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def load(self) -> tuple[dict[str, Template], list[BrokenTemplate]]:
        found = {t.name: t for t in BUILTIN}
        broken: list[BrokenTemplate] = []
        if self.directory is not None and self.directory.is_dir():
            for path in sorted(self.directory.glob("*.toml")):
                try:
                    template = parse_template(tomllib.loads(path.read_text()), str(path))
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, InvalidInput) as exc:
                    broken.append(BrokenTemplate(str(path), getattr(exc, "detail", None) or str(exc)))
                    continue
                found[template.name] = template
        return found, broken

    def get(self, name: str) -> Template:
        templates, broken = self.load()
        if name in templates:
            return templates[name]
        for b in broken:
            if Path(b.source).stem == name:
                raise TemplateNotFound(f"template {name!r} is broken ({b.source}): {b.error}")
        raise TemplateNotFound(f"unknown template {name!r}; available: {', '.join(sorted(templates))}")
