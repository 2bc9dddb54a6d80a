"""The one error tree of vmhost.

Core raises these; the daemon maps them once to HTTP responses (`http_status`, `code`, `detail`);
the CLI client turns error JSON back into the same classes and prints one line, exiting with
`exit_code`. No dependencies, so every layer can import it.
"""

from __future__ import annotations

from typing import Any


class VmhostError(Exception):
    code = "error"
    http_status = 500
    exit_code = 1

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}


class InvalidInput(VmhostError):
    code = "invalid_input"
    http_status = 422
    exit_code = 2


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    http_status = 413


class NotFound(VmhostError):
    code = "not_found"
    http_status = 404
    exit_code = 3


class WorkspaceNotFound(NotFound):
    code = "workspace_not_found"


class OperationNotFound(NotFound):
    code = "operation_not_found"


class TemplateNotFound(NotFound):
    code = "template_not_found"


class TokenNotFound(NotFound):
    code = "token_not_found"


class SnapshotNotFound(NotFound):
    code = "snapshot_not_found"


class NodeNotFound(NotFound):
    code = "node_not_found"


class SshKeyNotFound(NotFound):
    code = "ssh_key_not_found"


class Conflict(VmhostError):
    code = "conflict"
    http_status = 409
    exit_code = 4


class NameTaken(Conflict):
    code = "name_taken"


class SshKeyTaken(Conflict):
    code = "ssh_key_taken"


class OperationInFlight(Conflict):
    code = "operation_in_flight"


class InvalidState(Conflict):
    code = "invalid_state"


class NoRoom(Conflict):
    """No node has the CPUs and memory free that a workspace reserves."""

    code = "no_room"


class ContainerNotRunning(InvalidState):
    """The engine refused to act in a container that is not running (it stopped since vmhost last looked)."""


class Unauthenticated(VmhostError):
    code = "unauthenticated"
    http_status = 401
    exit_code = 5


class Forbidden(VmhostError):
    code = "forbidden"
    http_status = 403
    exit_code = 5


class QuotaExceeded(Forbidden):
    code = "quota_exceeded"


class TooManyRequests(VmhostError):
    """The caller already holds as many long-lived sessions of one kind as a user may; answered with a
    `Retry-After` header of `retry_after` seconds."""

    code = "too_many_requests"
    http_status = 429
    exit_code = 9

    def __init__(self, detail: str, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class DockerUnavailable(VmhostError):
    code = "docker_unavailable"
    http_status = 503
    exit_code = 7


class StoreUnavailable(VmhostError):
    code = "store_unavailable"
    http_status = 503
    exit_code = 7


class ProviderError(VmhostError):
    """Docker answered, but refused or failed what was asked."""

    code = "provider_error"
    http_status = 502
    exit_code = 7


class PortUnreachable(VmhostError):
    """Nothing answers on a workspace's port that a preview forwards to."""

    code = "port_unreachable"
    http_status = 502
    exit_code = 7


class PortTimeout(VmhostError):
    """The server on a workspace's port that a preview forwards to did not answer in time."""

    code = "port_timeout"
    http_status = 504
    exit_code = 7


class OperationFailed(VmhostError):
    code = "operation_failed"
    http_status = 500
    exit_code = 8


class DaemonUnreachable(VmhostError):
    code = "daemon_unreachable"
    http_status = 503
    exit_code = 6


def _all_subclasses(cls: type[VmhostError]) -> list[type[VmhostError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_class_for(code: str) -> type[VmhostError]:
    """The class whose `code` is `code` (used by the CLI to rebuild an error from JSON)."""
    for cls in _all_subclasses(VmhostError):
        if cls.code == code:
            return cls
    return VmhostError


def error_class_for_status(status: int) -> type[VmhostError]:
    """The most general class answered with HTTP `status` (for WebSocket close codes 4000 + status)."""
    return next((cls for cls in _all_subclasses(VmhostError) if cls.http_status == status), VmhostError)
