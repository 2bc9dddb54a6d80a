"""Rules for user input, shared by the core (which enforces them) and the API models (which publish
them in the spec). Each check returns the clean value or raises InvalidInput naming the field."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from vmhost.errors import InvalidInput

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_RULE = "use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
PLUGIN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@/-]{0,127}$"
BRANCH_PATTERN = r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/+-]{1,200}$"
USER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._@+-]{0,127}$"
USER_RULE = "1-128 letters, digits, '.', '_', '@', '+' or '-', not starting with '.', '-', '@' or '+'"
EMAIL_PATTERN = r"^[^\s@]{1,64}@[^\s@]{1,253}$"
CAPABILITY_PATTERN = r"^[A-Z][A-Z0-9_]{1,31}$"
MAX_LABEL_VALUE = 256
MAX_LABELS = 64
MAX_ENV_VALUE = 32 * 1024
MAX_TTL_SECONDS = 365 * 24 * 3600
MAX_IDLE_TIMEOUT_SECONDS = MAX_TTL_SECONDS
MIN_MEMORY_MB = 16
MAX_MEMORY_MB = 1024 * 1024
REPO_SCHEMES = ("https", "http", "ssh", "git", "file")

_name = re.compile(NAME_PATTERN)
_label_key = re.compile(LABEL_KEY_PATTERN)
_env_key = re.compile(ENV_KEY_PATTERN)
_plugin = re.compile(PLUGIN_PATTERN)
_branch = re.compile(BRANCH_PATTERN)
_user = re.compile(USER_PATTERN)
_email = re.compile(EMAIL_PATTERN)
_capability = re.compile(CAPABILITY_PATTERN)


def check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not _name.match(name):
        raise InvalidInput(f"invalid {what} {name!r}: {NAME_RULE}")
    return name


def check_user(user: Any) -> str:
    """A user name, whichever door it came through (a Unix account on the socket, a token's user, a
    proxy's X-VM-User): they share one namespace, so they share this one rule."""
    if not isinstance(user, str) or not _user.fullmatch(user):
        raise InvalidInput(f"invalid user name {user!r}: {USER_RULE}")
    return user


def check_email(email: Any) -> str:
    if not isinstance(email, str) or not email.isprintable() or not _email.fullmatch(email):
        raise InvalidInput(f"invalid email address {email!r}: name@domain, printable, no spaces")
    return email


def check_capabilities(capabilities: Any) -> tuple[str, ...]:
    """Linux capability names (CAP_ prefix optional), for a template that needs more than the defaults."""
    if not isinstance(capabilities, (list, tuple)):
        raise InvalidInput("'capabilities' must be a list of capability names, e.g. [\"SYS_PTRACE\"]")
    clean = []
    for capability in capabilities:
        name = capability.upper().removeprefix("CAP_") if isinstance(capability, str) else capability
        if not isinstance(name, str) or not _capability.match(name) or name == "ALL":
            raise InvalidInput(f"invalid capability {capability!r}: a Linux capability name like SYS_PTRACE")
        clean.append(name)
    return tuple(dict.fromkeys(clean))


def check_labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise InvalidInput("labels must be an object of strings")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"too many labels ({len(labels)}; at most {MAX_LABELS})")
    for key, value in labels.items():
        if not isinstance(key, str) or not _label_key.match(key):
            raise InvalidInput(f"invalid label key {key!r}: letters, digits, '.', '_', '/', '-', at most 128")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or any(ord(c) < 32 for c in value):
            raise InvalidInput(f"invalid value for label {key!r}: a printable string of at most {MAX_LABEL_VALUE}")
    return dict(labels)


def check_env(env: Any) -> dict[str, str]:
    if not isinstance(env, dict):
        raise InvalidInput("env must be an object of strings")
    for key, value in env.items():
        if not isinstance(key, str) or not _env_key.match(key):
            raise InvalidInput(f"invalid environment variable name {key!r}")
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE or "\x00" in value:
            raise InvalidInput(f"invalid value for environment variable {key!r}")
    return {str(k): str(v) for k, v in env.items()}


def check_ttl(ttl: Any) -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0 or ttl > MAX_TTL_SECONDS:
        raise InvalidInput(f"ttl_seconds must be a whole number from 1 to {MAX_TTL_SECONDS}, got {ttl!r}")
    return ttl


def check_idle_timeout(seconds: Any, what: str = "idle_timeout_seconds") -> int | None:
    """An idle timeout in whole seconds; 0 and None both mean no idle stop (answered as None)."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= MAX_IDLE_TIMEOUT_SECONDS:
        raise InvalidInput(f"{what} must be a whole number of seconds from 0 (no idle stop) to "
                           f"{MAX_IDLE_TIMEOUT_SECONDS}, got {seconds!r}")
    return seconds or None


def check_cpus(cpus: Any, available: int | None = None) -> float | None:
    if cpus is None:
        return None
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus < 0.01:
        raise InvalidInput(f"cpus must be a number of at least 0.01, got {cpus!r}")
    if available is not None and cpus > available:
        raise InvalidInput(f"cpus {cpus} is more than this host has ({available})")
    return float(cpus)


def check_memory(memory_mb: Any) -> int | None:
    if memory_mb is None:
        return None
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise InvalidInput(f"memory_mb must be a whole number from {MIN_MEMORY_MB} to {MAX_MEMORY_MB}, "
                           f"got {memory_mb!r}")
    return memory_mb


def check_port(port: Any) -> str:
    text = str(port)
    number, _, proto = text.partition("/")
    if not number.isdigit() or not 1 <= int(number) <= 65535 or proto not in ("", "tcp", "udp"):
        raise InvalidInput(f"invalid port {port!r}: a number from 1 to 65535, optionally /tcp or /udp")
    return text


def check_provision(commands: Any) -> list[str | list[str]]:
    """Each command is a shell line (run with /bin/sh -c inside the workspace) or an argv list."""
    if not isinstance(commands, list):
        raise InvalidInput("provision must be a list of commands")
    clean: list[str | list[str]] = []
    for command in commands:
        if isinstance(command, str) and command.strip() and "\x00" not in command:
            clean.append(command)
        elif isinstance(command, list) and command and all(isinstance(a, str) and "\x00" not in a for a in command):
            clean.append(list(command))
        else:
            raise InvalidInput(f"invalid provision command {command!r}: a non-empty string or list of strings")
    return clean


def repo_protocol(repo_url: str) -> str:
    """The git transport a checked repo_url uses (user@host:path is ssh)."""
    return urlparse(repo_url).scheme if "://" in repo_url else "ssh"


def check_repo(repo_url: Any, branch: Any, allow_local: bool = True) -> tuple[str | None, str | None]:
    if repo_url is None:
        if branch is not None:
            raise InvalidInput("branch needs a repo_url")
        return None, None
    if not isinstance(repo_url, str) or repo_url.startswith("-") or any(ord(c) < 33 for c in repo_url):
        raise InvalidInput(f"invalid repo_url {repo_url!r}")
    scheme = urlparse(repo_url).scheme
    if scheme not in REPO_SCHEMES and not re.match(r"^[\w.-]+@[\w.-]+:", repo_url):
        raise InvalidInput(f"invalid repo_url {repo_url!r}: use one of {', '.join(REPO_SCHEMES)} or user@host:path")
    if scheme == "file" and not allow_local:
        raise InvalidInput(f"invalid repo_url {repo_url!r}: only admins may clone from the server's own disk")
    if branch is not None and (not isinstance(branch, str) or not _branch.match(branch)):
        raise InvalidInput(f"invalid branch {branch!r}")
    return repo_url, branch


def check_plugins(plugins: Any) -> list[str]:
    if not isinstance(plugins, list) or not all(isinstance(p, str) and _plugin.match(p) for p in plugins):
        raise InvalidInput("plugins must be a list of plugin ids (letters, digits, '.', '_', '@', '/', '-')")
    return list(dict.fromkeys(plugins))
