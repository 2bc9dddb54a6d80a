"""One frozen Settings object, resolved in one order: flags > VMHOST_* env (then legacy VM_API_*) >
TOML config file > defaults. Each value remembers where it came from, for `vmhost config show`."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmhost import paths
from vmhost.errors import InvalidInput

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _non_negative_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("text", "json"):
        raise ValueError("must be text or json")
    return text


def _engine_kind(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("docker", "swarm"):
        raise ValueError("must be docker (one Docker engine) or swarm (a Swarm cluster, docker_host its manager)")
    return text


def _optional_str(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _host_name(value: Any) -> str:
    """A DNS name in lower case without a leading or trailing dot; empty for none."""
    text = str(value).strip().strip(".").lower()
    if text and not all(_DNS_LABEL.fullmatch(label) for label in text.split(".")):
        raise ValueError("must be a DNS name, like preview.example.com (letters, digits, '-' and dots)")
    return text


def _optional_path(value: Any) -> Path | None:
    text = str(value).strip()
    return Path(text).expanduser() if text else None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false (1/0, yes/no)")


@dataclass(frozen=True)
class Option:
    name: str
    env: tuple[str, ...]
    default: Callable[[], Any]
    parse: Callable[[Any], Any]
    help: str


OPTIONS: tuple[Option, ...] = (
    Option("db_path", ("VMHOST_DB_PATH", "VM_API_DB_PATH"), paths.default_db_path, lambda v: Path(v).expanduser(),
           "SQLite database file"),
    Option("socket", ("VMHOST_SOCKET",), paths.default_socket_path, lambda v: Path(v).expanduser(),
           "Unix socket the daemon listens on"),
    Option("bind", ("VMHOST_BIND", "VM_API_BIND"), lambda: "127.0.0.1:3121", str,
           "TCP host:port (empty to serve the Unix socket only)"),
    Option("templates_dir", ("VMHOST_TEMPLATES_DIR",), paths.default_templates_dir, lambda v: Path(v).expanduser(),
           "directory of *.toml workspace templates"),
    Option("janitor_interval", ("VMHOST_JANITOR_INTERVAL", "VM_API_JANITOR_INTERVAL"), lambda: 300.0,
           _positive_float, "seconds between TTL sweeps"),
    Option("provisioner_interval", ("VMHOST_PROVISIONER_INTERVAL", "VM_API_PROVISIONER_INTERVAL"), lambda: 10.0,
           _positive_float, "seconds between sweeps for queued operations"),
    Option("trusted_proxies", ("VMHOST_TRUSTED_PROXIES",), tuple, _str_list,
           "peer addresses (or CIDRs) whose X-VM-User headers are believed"),
    Option("engine", ("VMHOST_ENGINE",), lambda: "docker", _engine_kind,
           "docker: workspaces on one Docker engine; swarm: on a Docker Swarm cluster whose manager is docker_host"),
    Option("docker_host", ("VMHOST_DOCKER_HOST", "DOCKER_HOST"), lambda: None, _optional_str,
           "Docker engine URL (default: the local engine); with engine swarm, a manager's"),
    Option("docker_tls_ca", ("VMHOST_DOCKER_TLS_CA",), lambda: None, _optional_path,
           "CA certificate that Docker engines reached over tcp:// must be signed by (a node's vmhost.engine too)"),
    Option("docker_tls_cert", ("VMHOST_DOCKER_TLS_CERT",), lambda: None, _optional_path,
           "client certificate vmhost shows Docker engines reached over tcp://"),
    Option("docker_tls_key", ("VMHOST_DOCKER_TLS_KEY",), lambda: None, _optional_path,
           "private key of docker_tls_cert"),
    Option("docker_timeout", ("VMHOST_DOCKER_TIMEOUT",), lambda: 120, _positive_int,
           "seconds one call to the Docker engine may take before it counts as unanswered"),
    Option("instance", ("VMHOST_INSTANCE",), lambda: "default", str,
           "label value that tells this daemon's Docker objects from another's"),
    Option("publish_address", ("VMHOST_PUBLISH_ADDRESS",), lambda: "127.0.0.1", str,
           "host address that workspace ports are published on"),
    Option("max_body_bytes", ("VMHOST_MAX_BODY_BYTES",), lambda: 1024 * 1024, _positive_int,
           "largest request body accepted"),
    Option("max_upload_bytes", ("VMHOST_MAX_UPLOAD_BYTES",), lambda: 1024 * 1024 * 1024, _positive_int,
           "largest file or archive uploaded into a workspace"),
    Option("workers", ("VMHOST_WORKERS",), lambda: 8, _positive_int,
           "operations run at once"),
    Option("provision_timeout", ("VMHOST_PROVISION_TIMEOUT",), lambda: 1800.0, _positive_float,
           "seconds one provision command may run before it is killed with all its processes"),
    Option("stop_timeout", ("VMHOST_STOP_TIMEOUT",), lambda: 10, _positive_int,
           "seconds a workspace's processes get to exit on stop, restart or expiry before they are killed"),
    Option("container_log_max_mb", ("VMHOST_CONTAINER_LOG_MAX_MB",), lambda: 10, _positive_int,
           "MB of output a container's log file holds before it is rotated"),
    Option("container_log_max_files", ("VMHOST_CONTAINER_LOG_MAX_FILES",), lambda: 3, _positive_int,
           "log files kept per container (the host's disk holds at most this many of container_log_max_mb)"),
    Option("admin_group", ("VMHOST_ADMIN_GROUP",), lambda: None, _optional_str,
           "local group whose members are admins on the Unix socket"),
    Option("socket_group", ("VMHOST_SOCKET_GROUP",), lambda: None, _optional_str,
           "group that owns the Unix socket (only it and root may connect)"),
    Option("log_level", ("VMHOST_LOG_LEVEL",), lambda: "info", str, "daemon log level"),
    Option("log_format", ("VMHOST_LOG_FORMAT",), lambda: "text", _log_format,
           "daemon log lines: text, or json (one JSON object a line)"),
    Option("reconcile_interval", ("VMHOST_RECONCILE_INTERVAL",), lambda: 60.0, _positive_float,
           "seconds between sweeps that match workspaces to what Docker shows"),
    Option("event_retention", ("VMHOST_EVENT_RETENTION",), lambda: 7 * 86400.0, _positive_float,
           "seconds events are kept for replay before they are pruned"),
    Option("audit_retention", ("VMHOST_AUDIT_RETENTION",), lambda: 365 * 86400.0, _positive_float,
           "seconds audit entries are kept before they are pruned"),
    Option("event_heartbeat", ("VMHOST_EVENT_HEARTBEAT",), lambda: 15.0, _positive_float,
           "seconds between heartbeats on an idle event stream"),
    Option("expiry_warning", ("VMHOST_EXPIRY_WARNING",), lambda: 300.0, _positive_float,
           "seconds before a workspace's expiry that a workspace.expiring warning goes out"),
    Option("idle_warning", ("VMHOST_IDLE_WARNING",), lambda: 300.0, _positive_float,
           "seconds before a workspace's idle stop that a workspace.idle warning goes out (at most half its "
           "idle timeout)"),
    Option("quota_max_workspaces", ("VMHOST_QUOTA_MAX_WORKSPACES",), lambda: 5, _positive_int,
           "workspaces a user may have (admins: no quota)"),
    Option("quota_max_cpus", ("VMHOST_QUOTA_MAX_CPUS",), lambda: 8.0, _positive_float,
           "CPUs a user's workspaces may ask for in total"),
    Option("quota_max_memory_mb", ("VMHOST_QUOTA_MAX_MEMORY_MB",), lambda: 16384, _positive_int,
           "MB of memory a user's workspaces may ask for in total"),
    Option("quota_max_ttl_seconds", ("VMHOST_QUOTA_MAX_TTL_SECONDS",), lambda: 30 * 86400, _positive_int,
           "longest TTL of a user's workspace (also the TTL of one created without)"),
    Option("quota_max_snapshots", ("VMHOST_QUOTA_MAX_SNAPSHOTS",), lambda: 10, _positive_int,
           "snapshots a user may keep per workspace"),
    Option("quota_max_pids", ("VMHOST_QUOTA_MAX_PIDS",), lambda: 1024, _positive_int,
           "processes and threads a user's workspaces may run in total (each container gets its share)"),
    Option("quota_max_snapshot_bytes", ("VMHOST_QUOTA_MAX_SNAPSHOT_BYTES",), lambda: 20 * 1024 ** 3, _positive_int,
           "bytes a user's snapshots may take on disk in total (images and volume archives)"),
    Option("quota_max_idle_timeout_seconds", ("VMHOST_QUOTA_MAX_IDLE_TIMEOUT_SECONDS",), lambda: 0,
           _non_negative_int,
           "longest idle timeout of a user's workspace, also the one of a workspace without (0: no maximum, and no "
           "idle stop unless a template or workspace sets one)"),
    Option("quota_default_cpus", ("VMHOST_QUOTA_DEFAULT_CPUS",), lambda: 1.0, _positive_float,
           "CPUs a workspace gets (and counts for) when neither it nor its template sets cpus"),
    Option("quota_default_memory_mb", ("VMHOST_QUOTA_DEFAULT_MEMORY_MB",), lambda: 2048, _positive_int,
           "MB a workspace gets (and counts for) when neither it nor its template sets memory_mb"),
    Option("user_max_command_streams", ("VMHOST_USER_MAX_COMMAND_STREAMS",), lambda: 16, _positive_int,
           "streamed commands one user may run at once"),
    Option("user_max_waits", ("VMHOST_USER_MAX_WAITS",), lambda: 32, _positive_int,
           "operation waits one user may hold open at once"),
    Option("user_max_shells", ("VMHOST_USER_MAX_SHELLS",), lambda: 8, _positive_int,
           "shell sessions one user may hold open at once"),
    Option("user_max_log_streams", ("VMHOST_USER_MAX_LOG_STREAMS",), lambda: 8, _positive_int,
           "container log reads one user may hold open at once"),
    Option("user_max_event_streams", ("VMHOST_USER_MAX_EVENT_STREAMS",), lambda: 32, _positive_int,
           "event WebSockets one user may hold open at once"),
    Option("user_max_tunnels", ("VMHOST_USER_MAX_TUNNELS",), lambda: 64, _positive_int,
           "port tunnels (one per forwarded connection) one user may hold open at once"),
    Option("tunnel_idle_timeout", ("VMHOST_TUNNEL_IDLE_TIMEOUT",), lambda: 3600.0, _positive_float,
           "seconds a port tunnel may carry no byte either way before it is closed"),
    Option("ssh_bind", ("VMHOST_SSH_BIND",), lambda: "", str,
           "HOST:PORT the SSH server listens on (e.g. 127.0.0.1:2222); empty: no SSH server, and no ssh-proxy"),
    Option("user_max_ssh_sessions", ("VMHOST_USER_MAX_SSH_SESSIONS",), lambda: 16, _positive_int,
           "SSH connections one user may hold open at once"),
    Option("ssh_login_timeout", ("VMHOST_SSH_LOGIN_TIMEOUT",), lambda: 30.0, _positive_float,
           "seconds an SSH client has to log in before it is disconnected"),
    Option("ssh_idle_timeout", ("VMHOST_SSH_IDLE_TIMEOUT",), lambda: 3600.0, _positive_float,
           "seconds an SSH connection may carry no byte either way before it is closed"),
    Option("user_max_preview_requests", ("VMHOST_USER_MAX_PREVIEW_REQUESTS",), lambda: 32, _positive_int,
           "requests (and WebSockets) through port previews one user may have in progress at once"),
    Option("preview_idle_timeout", ("VMHOST_PREVIEW_IDLE_TIMEOUT",), lambda: 300.0, _positive_float,
           "seconds a preview request may wait for the workspace's server to answer, or for the next byte of "
           "its answer (504, or the answer is cut)"),
    Option("preview_domain", ("VMHOST_PREVIEW_DOMAIN",), lambda: "", _host_name,
           "serve each port's preview on its own host name {port}--{workspace}--{owner}.<this domain> "
           "(wildcard DNS and TLS for *.<this domain> needed); empty: previews on paths only"),
    Option("tls_cert", ("VMHOST_TLS_CERT",), lambda: None, _optional_path,
           "PEM certificate (chain) for TLS on TCP"),
    Option("tls_key", ("VMHOST_TLS_KEY",), lambda: None, _optional_path,
           "PEM private key for tls_cert"),
    Option("allow_insecure_tcp", ("VMHOST_ALLOW_INSECURE_TCP",), lambda: False, _flag,
           "serve plain HTTP on a non-loopback address without a trusted proxy (not recommended)"),
    Option("max_connections", ("VMHOST_MAX_CONNECTIONS",), lambda: 4096, _positive_int,
           "connections held at once, TCP and Unix socket together (fewer if the descriptor limit is lower)"),
    Option("socket_reserve", ("VMHOST_SOCKET_RESERVE",), lambda: 64, _positive_int,
           "of max_connections, how many TCP may not take: kept for the Unix socket (admins on the host)"),
    Option("header_timeout", ("VMHOST_HEADER_TIMEOUT",), lambda: 20.0, _positive_float,
           "seconds a connection has to send a whole request head, from its opening or its first byte"),
    Option("body_timeout", ("VMHOST_BODY_TIMEOUT",), lambda: 60.0, _positive_float,
           "seconds a request body may go without a byte arriving before the connection is closed (408)"),
    Option("keepalive_timeout", ("VMHOST_KEEPALIVE_TIMEOUT",), lambda: 330, _positive_int,
           "seconds an idle keep-alive connection is kept (longer than clients keep theirs)"),
)


@dataclass(frozen=True)
class Settings:
    db_path: Path
    socket: Path
    bind: str
    templates_dir: Path
    janitor_interval: float
    provisioner_interval: float
    trusted_proxies: tuple[str, ...]
    engine: str
    docker_host: str | None
    docker_tls_ca: Path | None
    docker_tls_cert: Path | None
    docker_tls_key: Path | None
    docker_timeout: int
    instance: str
    publish_address: str
    max_body_bytes: int
    max_upload_bytes: int
    workers: int
    provision_timeout: float
    stop_timeout: int
    container_log_max_mb: int
    container_log_max_files: int
    admin_group: str | None
    socket_group: str | None
    log_level: str
    log_format: str
    reconcile_interval: float
    event_retention: float
    audit_retention: float
    event_heartbeat: float
    expiry_warning: float
    idle_warning: float
    quota_max_workspaces: int
    quota_max_cpus: float
    quota_max_memory_mb: int
    quota_max_ttl_seconds: int
    quota_max_snapshots: int
    quota_max_pids: int
    quota_max_snapshot_bytes: int
    quota_max_idle_timeout_seconds: int
    quota_default_cpus: float
    quota_default_memory_mb: int
    user_max_command_streams: int
    user_max_waits: int
    user_max_shells: int
    user_max_log_streams: int
    user_max_event_streams: int
    user_max_tunnels: int
    tunnel_idle_timeout: float
    ssh_bind: str
    user_max_ssh_sessions: int
    ssh_login_timeout: float
    ssh_idle_timeout: float
    user_max_preview_requests: int
    preview_idle_timeout: float
    preview_domain: str
    tls_cert: Path | None
    tls_key: Path | None
    allow_insecure_tcp: bool
    max_connections: int
    socket_reserve: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: int
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        if not self.bind.strip():
            return None
        host, _, port = self.bind.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @property
    def ssh_address(self) -> tuple[str, int] | None:
        """Where the SSH server listens; None when it is off."""
        if not self.ssh_bind.strip():
            return None
        host, _, port = self.ssh_bind.strip().rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @classmethod
    def defaults(cls, **changes: Any) -> Settings:
        """Every setting at its default (no flags, environment or file read), but for `changes`."""
        return cls(**{**{option.name: option.default() for option in OPTIONS}, **changes})

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        config_path = Path(env["VMHOST_CONFIG"]) if env.get("VMHOST_CONFIG") else paths.default_config_path()
        config_file = config_path if config_path.is_file() else None
        file_values: dict[str, Any] = {}
        if config_file is not None:
            try:
                file_values = tomllib.loads(config_file.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InvalidInput(f"cannot read config file {config_file}: {exc}") from exc
            unknown = set(file_values) - {o.name for o in OPTIONS}
            if unknown:
                raise InvalidInput(f"unknown setting(s) in {config_file}: {', '.join(sorted(unknown))}")

        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for option in OPTIONS:
            raw, source = _pick(option, overrides, env, file_values, config_file)
            try:
                values[option.name] = option.default() if raw is _DEFAULT else option.parse(raw)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"bad value {raw!r} for {option.name} (from {source}): {exc}") from exc
            sources[option.name] = source
        settings = cls(**values, config_file=config_file, sources=sources)
        if settings.bind.strip():
            try:
                settings.tcp_address
            except ValueError:
                raise InvalidInput(f"bad bind address {settings.bind!r}: expected HOST:PORT") from None
        try:
            settings.ssh_address
        except ValueError:
            raise InvalidInput(f"bad ssh_bind address {settings.ssh_bind!r}: expected HOST:PORT, e.g. "
                               "127.0.0.1:2222") from None
        return settings

    def described(self) -> list[tuple[str, str, str]]:
        """(name, value, source) for every setting."""
        rows = []
        for option in OPTIONS:
            value = getattr(self, option.name)
            shown = ",".join(value) if isinstance(value, tuple) else ("" if value is None else str(value))
            rows.append((option.name, shown, self.sources.get(option.name, "default")))
        return rows

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_DEFAULT = object()


def _pick(option: Option, overrides: Mapping[str, Any], env: Mapping[str, str],
          file_values: Mapping[str, Any], config_file: Path | None) -> tuple[Any, str]:
    if option.name in overrides:
        return overrides[option.name], "flag"
    for name in option.env:
        if name in env:
            return env[name], f"env {name}"
    if option.name in file_values:
        return file_values[option.name], f"file {config_file}"
    return _DEFAULT, "default"
