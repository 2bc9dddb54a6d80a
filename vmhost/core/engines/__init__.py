"""Container engines. `base` is the interface the orchestrator drives (`Engine`) and the values that cross
it, re-exported here; each engine is a module of its own (`docker`: the Docker engine) and is the only
place that imports its SDK. vmhost/core/build.py picks the engine and hands it in."""

from vmhost.core.engines.base import (
    DEFAULT_CAPABILITIES,
    LOCAL_NODE,
    MANAGED_KINDS,
    ONE_HOST_HAS_NO_NODES,
    UNREACHABLE,
    WATCHED_ACTIONS,
    CommandOutcome,
    CommittedImage,
    ContainerEvent,
    ContainerSpec,
    ContainerState,
    Engine,
    EventStream,
    LogStream,
    ManagedObject,
    NetworkSpec,
    NodeInfo,
    OutputCallback,
    PathStat,
    Terminal,
)

__all__ = [
    "DEFAULT_CAPABILITIES",
    "LOCAL_NODE",
    "ONE_HOST_HAS_NO_NODES",
    "MANAGED_KINDS",
    "WATCHED_ACTIONS",
    "CommandOutcome",
    "CommittedImage",
    "ContainerEvent",
    "ContainerSpec",
    "ContainerState",
    "Engine",
    "EventStream",
    "LogStream",
    "ManagedObject",
    "NetworkSpec",
    "NodeInfo",
    "OutputCallback",
    "PathStat",
    "Terminal",
    "UNREACHABLE",
]
