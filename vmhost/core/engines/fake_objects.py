"""What the fake engine keeps: images, volumes, networks and containers (removed ones too), and what a
test sees of a container."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from vmhost.core.engines.base import ContainerSpec
from vmhost.core.engines.fake_files import Files


@dataclass(eq=False)
class Image:
    id: str
    tags: list[str]
    labels: dict[str, str]
    files: Files = field(default_factory=dict)


@dataclass(eq=False)
class Volume:
    name: str
    labels: dict[str, str]
    files: Files = field(default_factory=dict)


@dataclass(eq=False)
class Network:
    id: str
    name: str
    labels: dict[str, str]


@dataclass(eq=False)
class Container:
    id: str
    spec: ContainerSpec
    image: Image
    files: Files
    status: str = "created"
    exit_code: int | None = None
    starts: int = 0
    ports: dict[str, str] = field(default_factory=dict)
    logs: list[bytes] = field(default_factory=list)  # one line each


@dataclass(frozen=True)
class ContainerInfo:
    """What a test sees of a container."""

    id: str
    name: str
    status: str  # created, running, exited or removed
    image: str
    labels: dict[str, str]
    volume: str
    network: str | None
    exit_code: int | None
    starts: int  # how many times it was started (a restart counts)

    @classmethod
    def of(cls, container: Container) -> ContainerInfo:
        return cls(id=container.id, name=container.spec.name, status=container.status, image=container.spec.image,
                   labels=dict(container.spec.labels), volume=container.spec.volume, network=container.spec.network,
                   exit_code=container.exit_code, starts=container.starts)


def has_labels(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def tagged(ref: str) -> str:
    """An image reference with its tag (`latest` when it names none), as Docker reads it."""
    if ref.startswith("sha256:") or ":" in ref.rpartition("/")[2]:
        return ref
    return f"{ref}:latest"


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_hex(32)
