"""Shell completion: the scripts in completions/, and a fast path for workspace names.

The scripts speak Typer's protocol (the shell runs `vmhost` with `_VMHOST_COMPLETE=complete_SHELL`
and the words typed so far). Commands and options are completed by Typer from the command tree.
Workspace names, the completion people wait for, are answered here before Typer, rich or httpx are
imported (those imports are most of a Tab's time): `NAME_COMMANDS` says where a workspace name goes,
and one stdlib HTTP request with a short timeout asks the daemon. tests/test_completions.py checks
`NAME_COMMANDS` against the command tree and this path's answers against Typer's.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
from pathlib import Path

from vmhost import paths

COMPLETE_VAR = "_VMHOST_COMPLETE"
TIMEOUT = 1.0  # seconds; completion must never hang
PAGE_SIZE = 1000  # workspaces a request asks for: the most a page may hold
GROUPS = ("workspaces", "ws")
# The root's options that take a value, by the setting each names.
CONNECTION_OPTIONS = {"--url": "url", "--token": "token", "--socket": "socket_path"}
# The commands under `vmhost workspaces` whose first argument is a workspace name, with each one's
# options that take a value (what follows them is that value, not the name).
NAME_COMMANDS: dict[tuple[str, ...], frozenset[str]] = {
    ("show",): frozenset(),
    ("start",): frozenset({"--timeout"}),
    ("stop",): frozenset({"--timeout"}),
    ("restart",): frozenset({"--timeout"}),
    ("rm",): frozenset({"--timeout"}),
    ("rebuild",): frozenset({"--timeout"}),
    ("edit",): frozenset({"--name", "--ttl", "--label", "--unlabel", "--plugin", "--idle-timeout"}),
    ("extend",): frozenset(),
    ("schedule",): frozenset({"--start", "--stop"}),
    ("exec",): frozenset({"--env", "--workdir", "--timeout"}),
    ("shell",): frozenset({"--workdir"}),
    ("logs",): frozenset({"--lines", "-n"}),
    ("snapshot", "create"): frozenset({"--timeout"}),
    ("snapshot", "ls"): frozenset(),
    ("snapshot", "rm"): frozenset(),
    ("snapshot", "restore"): frozenset({"--as-new", "--timeout"}),
    ("ports", "ls"): frozenset(),
    ("ports", "share"): frozenset({"--level"}),
    ("port-forward",): frozenset(),
}

SCRIPTS = {
    "vmhost.bash": """\
# bash completion for vmhost (written by scripts/gen-completions)
_vmhost_completion() {
    local candidate
    COMPREPLY=()
    while IFS= read -r candidate; do
        [[ -n $candidate ]] && COMPREPLY+=("$candidate")
    done < <(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD="$COMP_CWORD" _VMHOST_COMPLETE=complete_bash "$1")
    return 0
}

complete -o default -F _vmhost_completion vmhost
""",
    # `#compdef` must be the first line: compinit reads only that line to find the file.
    "_vmhost": """\
#compdef vmhost
# zsh completion for vmhost (written by scripts/gen-completions)

# Autoloaded by compinit from $fpath, this file's body runs at the first Tab: it defines _vmhost,
# which replaces it for the Tabs after, and completes this one. Sourced, it registers _vmhost.
_vmhost() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _VMHOST_COMPLETE=complete_zsh vmhost)
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _vmhost "$@"
else
  compdef _vmhost vmhost
fi
""",
    "vmhost.fish": """\
# fish completion for vmhost (written by scripts/gen-completions)
function __vmhost_complete --argument-names action
    env _VMHOST_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=$action _TYPER_COMPLETE_ARGS=(commandline -cp) vmhost
end

complete --command vmhost --no-files --arguments "(__vmhost_complete get-args)" --condition "__vmhost_complete is-args"
""",
}


def typed_words(shell: str) -> tuple[list[str], str] | None:
    """The words before the cursor (without the program's name) and the word being completed, as
    Typer reads them from the environment."""
    try:
        if shell == "bash":
            words = shlex.split(os.environ["COMP_WORDS"])
            cword = int(os.environ["COMP_CWORD"])
            return words[1:cword], words[cword] if cword < len(words) else ""
        line = os.environ.get("_TYPER_COMPLETE_ARGS", "")
        words = shlex.split(line)[1:]
    except (KeyError, ValueError):
        return None
    if words and not line.endswith(" "):
        return words[:-1], words[-1]
    return words, ""


def connection_at_name(args: list[str], incomplete: str) -> dict[str, str] | None:
    """The connection options given on the line when the word being completed is a workspace name
    (the first argument of a command in `NAME_COMMANDS`); None when it is something else."""
    if incomplete.startswith("-"):
        return None
    connection: dict[str, str] = {}
    words = iter(args)
    word = next(words, None)
    while word is not None and word.startswith("-"):
        option, has_value, value = word.partition("=")
        if option not in CONNECTION_OPTIONS:
            return None
        if not has_value:
            next_word = next(words, None)
            if next_word is None:  # completing this option's value
                return None
            value = next_word
        connection[CONNECTION_OPTIONS[option]] = value
        word = next(words, None)
    if word not in GROUPS:
        return None
    rest = list(words)
    for length in (1, 2):
        if tuple(rest[:length]) in NAME_COMMANDS:
            value_options, after = NAME_COMMANDS[tuple(rest[:length])], rest[length:]
            break
    else:
        return None
    expects_value = False
    for word in after:
        if expects_value:
            expects_value = False
        elif word == "--" or not word.startswith("-"):  # an argument is there already
            return None
        else:
            expects_value = word in value_options
    return None if expects_value else connection


def _unix_socket(path: str) -> socket.socket:
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        unix.settimeout(TIMEOUT)
        unix.connect(path)
    except OSError:
        unix.close()
        raise
    return unix


def workspace_names(incomplete: str, url: str | None = None, token: str | None = None,
                    socket_path: str | Path | None = None) -> list[str]:
    """The caller's workspace names that start with `incomplete`, asked of the daemon the way
    VmhostClient would (`url` with `token`, else the socket); nothing at all when it does not answer."""
    import http.client  # only here: Tabs on commands and options (Typer's part) need none of it
    from urllib.parse import quote, urlsplit

    url = url or os.environ.get("VMHOST_URL")
    headers = {"User-Agent": "vmhost-cli"}
    try:
        if url:
            token = token or os.environ.get("VMHOST_TOKEN")
            if token:
                headers["Authorization"] = f"Bearer {token}"
            target = urlsplit(url)
            kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
            connection: http.client.HTTPConnection = kind(target.netloc, timeout=TIMEOUT)
            prefix = target.path.rstrip("/")
        else:
            # a connection that has a socket already uses it as it is
            connection, prefix = http.client.HTTPConnection("vmhost", timeout=TIMEOUT), ""
            connection.sock = _unix_socket(str(paths.client_socket_path(socket_path)))
        names: set[str] = set()
        try:
            cursor: str | None = None
            while True:  # page after page on the one kept-alive connection
                query = f"limit={PAGE_SIZE}" + (f"&cursor={quote(cursor)}" if cursor else "")
                connection.request("GET", f"{prefix}/api/v1/workspaces?{query}", headers=headers)
                response = connection.getresponse()
                page = json.loads(response.read()) if response.status == 200 else {"items": []}
                names.update(item["name"] for item in page["items"] if item["name"].startswith(incomplete))
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        finally:
            connection.close()
        return sorted(names)
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return []


def _zsh_quote(value: str) -> str:
    escaped = value.replace('"', '""').replace("'", "''").replace("$", "\\$").replace("`", "\\`")
    return '"' + escaped.replace(":", r"\\:") + '"'


def answer(shell: str, names: list[str]) -> str | int:
    """What Typer prints for these candidates in `shell`, or the exit code it answers with instead."""
    if shell == "zsh":
        return "_arguments '*: :((" + "\n".join(map(_zsh_quote, names)) + "))'" if names else "_files"
    if shell == "fish" and os.environ.get("_TYPER_COMPLETE_FISH_ACTION") == "is-args":
        return 0 if names else 1
    return "\n".join(names)


def complete_fast() -> bool:
    """Answer a Tab on a workspace name, if this run is one; False when Typer must answer."""
    instruction, _, shell = os.environ.get(COMPLETE_VAR, "").partition("_")
    if instruction != "complete" or shell not in ("bash", "zsh", "fish"):
        return False
    typed = typed_words(shell)
    connection = None if typed is None else connection_at_name(*typed)
    if typed is None or connection is None:
        return False
    result = answer(shell, workspace_names(typed[1], **connection))
    if isinstance(result, int):
        raise SystemExit(result)
    print(result)
    return True
