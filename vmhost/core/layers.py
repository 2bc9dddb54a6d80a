"""Where a workspace's settings come from, and how they stack: the template's are the defaults, the
repository's devcontainer.json wins over them, and the create request's own wins over both.

A workspace's `sources` says, for each setting, which layer gave it: "image", "workdir", "user", each
environment variable ("env.FOO"), each provision command by its place ("provision.2") and each port
("ports.3000"). A rebuild reads the file again and stacks the layers anew; the request's own settings are
found again through `sources`.
"""

from __future__ import annotations

from typing import Any

from vmhost.core.devcontainer import DevContainer
from vmhost.core.models import Template, Workspace, command_list

TEMPLATE = "template"
FILE = "devcontainer"
REQUEST = "request"

Provision = list[str | list[str]]


def initial_sources(template: Template, request_env: dict[str, str], request_provision: Provision) -> dict[str, str]:
    """The sources of a workspace made from a template and a request (before any devcontainer.json)."""
    sources = {"image": TEMPLATE, **{f"ports.{port}": TEMPLATE for port in template.ports}}
    sources |= {f"env.{key}": TEMPLATE for key in template.env} | {f"env.{key}": REQUEST for key in request_env}
    owners = [TEMPLATE] * len(template.provision) + [REQUEST] * len(request_provision)
    return sources | {f"provision.{number}": owner for number, owner in enumerate(owners, start=1)}


def layer_of(workspace: Workspace, source: str) -> tuple[dict[str, str], Provision]:
    """The environment and provision commands one layer gave the workspace."""
    env = {key: value for key, value in workspace.env.items() if workspace.sources.get(f"env.{key}") == source}
    provision = [command for number, command in enumerate(workspace.provision, start=1)
                 if workspace.sources.get(f"provision.{number}") == source]
    return env, provision


def with_devcontainer(workspace: Workspace, template: Template | None, config: DevContainer,
                      image: str) -> dict[str, Any]:
    """The workspace's settings with the devcontainer.json `config` stacked between its template (None:
    the template is gone, keep what it gave) and its request; `image` is the file's image or the one
    built from it. Returns the changed fields, for Store.update_workspace."""
    request_env, request_provision = layer_of(workspace, REQUEST)
    if template is not None:
        template_env, template_provision = dict(template.env), command_list(template.provision)
        template_ports, capabilities = list(template.ports), list(template.capabilities)
    else:
        template_env, template_provision = layer_of(workspace, TEMPLATE)
        template_ports = [p for p in workspace.ports if workspace.sources.get(f"ports.{p}") == TEMPLATE]
        capabilities = [c for c in workspace.capabilities if c not in config.capabilities]
    file_env = {**config.container_env, **config.remote_env}
    sources = {"image": FILE, "workdir": FILE}
    if config.remote_user or config.container_user:
        sources["user"] = FILE
    env: dict[str, str] = {}
    for layer, values in ((TEMPLATE, template_env), (FILE, file_env), (REQUEST, request_env)):
        env |= values
        sources |= {f"env.{key}": layer for key in values}
    provision: Provision = []
    for layer, commands in ((TEMPLATE, template_provision), (FILE, command_list(config.post_create)),
                            (REQUEST, request_provision)):
        sources |= {f"provision.{len(provision) + n}": layer for n in range(1, len(commands) + 1)}
        provision += commands
    ports = list(dict.fromkeys([*template_ports, *config.forward_ports]))
    sources |= {f"ports.{port}": TEMPLATE if port in template_ports else FILE for port in ports}
    return {
        "image": image, "env": env, "provision": provision, "ports": {port: "" for port in ports},
        "workdir": config.workspace_folder, "user": config.remote_user or config.container_user,
        "post_start": command_list(config.post_start), "post_attach": command_list(config.post_attach),
        "port_labels": dict(config.port_labels), "display_name": config.name,
        "capabilities": list(dict.fromkeys([*capabilities, *config.capabilities])), "sources": sources,
    }
