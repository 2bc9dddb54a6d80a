"""Reading a repository's devcontainer.json: its forms, defaults, and what vmhost refuses."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from vmhost.core.devcontainer import Build, DevContainerRefused, find_config, parse, repo_name_of
from vmhost.core.devcontainer_build import context_archive
from vmhost.core.engines.docker import DockerEngine
from vmhost.core.engines.fake import FakeEngine
from vmhost.core.engines.swarm import SwarmEngine
from vmhost.core.layers import initial_sources, with_devcontainer
from vmhost.core.models import Template, Workspace, WorkspaceStatus, utcnow
from vmhost.core.templates import parse_template
from vmhost.errors import InvalidInput

JSONC = """
// a comment
{
  "name": "web",  /* another */
  "image": "debian:bookworm-slim",
  "containerEnv": {"FOO": "bar",},
  "remoteEnv": {"EDITOR": "vi"},
  "postCreateCommand": "make setup",
  "postStartCommand": ["echo", "started"],
  "postAttachCommand": {"a": "echo a", "b": ["echo", "b"]},
  "forwardPorts": [3000, "8080",],
  "portsAttributes": {"3000": {"label": "App"}},
  "containerUser": "node",
  "remoteUser": "1000:1000",
}
"""


def test_parses_jsonc_and_every_command_form() -> None:
    config = parse(JSONC, ".devcontainer/devcontainer.json", "shop")
    assert config.name == "web"
    assert config.image == "debian:bookworm-slim" and config.build is None
    assert config.container_env == {"FOO": "bar"} and config.remote_env == {"EDITOR": "vi"}
    assert config.post_create == ("make setup",)
    assert config.post_start == (("echo", "started"),)
    assert config.post_attach == ("echo a", ("echo", "b"))
    assert config.forward_ports == ("3000", "8080")
    assert config.port_labels == {"3000": "App"}
    assert (config.container_user, config.remote_user) == ("node", "1000:1000")


def test_defaults_workspace_folder_to_the_repository_name() -> None:
    config = parse('{"image": "x"}', ".devcontainer.json", "shop")
    assert config.workspace_folder == "/workspace/shop"
    assert config.post_create == () and config.container_env == {} and config.forward_ports == ()
    named = parse('{"image": "x", "workspaceFolder": "/workspaces/${localWorkspaceFolderBasename}"}',
                  ".devcontainer.json", "shop")
    assert named.workspace_folder == "/workspaces/shop"


def test_build_paths_are_relative_to_the_file_and_stay_in_the_repository() -> None:
    config = parse('{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"V": "1"}, "target": "dev"}}',
                   ".devcontainer/devcontainer.json", "shop")
    assert config.build == Build(dockerfile=".devcontainer/Dockerfile", context=".", args={"V": "1"}, target="dev")
    assert config.image is None
    legacy = parse('{"dockerFile": "Dockerfile"}', ".devcontainer/devcontainer.json", "shop")
    assert legacy.build == Build(dockerfile=".devcontainer/Dockerfile", context=".devcontainer")
    with pytest.raises(DevContainerRefused, match="outside the repository"):
        parse('{"build": {"dockerfile": "Dockerfile", "context": "../.."}}', ".devcontainer/devcontainer.json", "r")


def test_refuses_everything_vmhost_does_not_do_at_once() -> None:
    text = """{
      "image": "x",
      "mounts": ["source=/,target=/host,type=bind"],
      "privileged": true,
      "runArgs": ["--network=host"],
      "initializeCommand": "curl evil",
      "features": {"ghcr.io/devcontainers/features/node:1": {}},
      "dockerComposeFile": "compose.yml",
    }"""
    with pytest.raises(DevContainerRefused) as refused:
        parse(text, ".devcontainer/devcontainer.json", "shop")
    detail = refused.value.detail
    for reason in ("mounts", "privileged", "--network=host", "initializeCommand", "features are not supported yet",
                   "ghcr.io/devcontainers/features/node:1", "dockerComposeFile"):
        assert reason in detail


def test_cap_add_only_for_admins() -> None:
    text = '{"image": "x", "runArgs": ["--init", "--cap-add", "SYS_PTRACE", "--cap-add=NET_ADMIN"]}'
    with pytest.raises(DevContainerRefused, match="for admins only"):
        parse(text, ".devcontainer.json", "shop")
    assert parse(text, ".devcontainer.json", "shop", admin=True).capabilities == ("SYS_PTRACE", "NET_ADMIN")


@pytest.mark.parametrize("text, reason", [
    ("{", "not valid JSON"),
    ("[]", "must hold a JSON object"),
    ('{"name": "x"}', "neither an image nor a build"),
    ('{"image": "x", "postCreateCommand": 3}', "postCreateCommand must be a string or a list"),
    ('{"image": "x", "forwardPorts": ["db:5432"]}', "db:5432"),
    ('{"image": "x", "containerEnv": {"1X": "y"}}', "containerEnv"),
])
def test_refuses_what_it_cannot_read(text: str, reason: str) -> None:
    with pytest.raises(DevContainerRefused, match=reason):
        parse(text, ".devcontainer.json", "shop")


def test_finds_the_file_in_either_place(tmp_path: Path) -> None:
    with pytest.raises(DevContainerRefused, match="no devcontainer file"):
        find_config(tmp_path)
    (tmp_path / ".devcontainer.json").write_text("{}")
    assert find_config(tmp_path) == (".devcontainer.json", "{}")
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text('{"image": "x"}')
    assert find_config(tmp_path)[0] == ".devcontainer/devcontainer.json"


@pytest.mark.parametrize("url, name", [("git://127.0.0.1:9418/shop.git", "shop"), ("https://h/o/web/", "web"),
                                       ("git@h:o/api.git", "api"), ("/srv/repos/x", "x")])
def test_repository_name(url: str, name: str) -> None:
    assert repo_name_of(url) == name


def _workspace(template: Template, request_env: dict[str, str], request_provision: list[str | list[str]]) -> Workspace:
    now = utcnow()
    return Workspace(id="ws_1", name="w", owner="u", template=template.name, image=template.image,
                     status=WorkspaceStatus.PENDING, created_at=now, updated_at=now, repo_url="git://h/shop.git",
                     env={**template.env, **request_env}, provision=[*template.provision, *request_provision],
                     ports={p: "" for p in template.ports},
                     sources=initial_sources(template, request_env, request_provision))


def test_the_file_wins_over_the_template_and_the_request_over_both() -> None:
    template = Template(name="t", image="debian", env={"A": "template", "B": "template"}, ports=("8080",),
                        provision=("echo template",))
    workspace = _workspace(template, {"C": "request"}, ["echo request"])
    config = parse('{"image": "node", "containerEnv": {"B": "file", "C": "file"}, "postCreateCommand": "echo file",'
                   ' "forwardPorts": [3000], "remoteUser": "node"}', ".devcontainer.json", "shop")
    changes = with_devcontainer(workspace, template, config, "node")
    assert changes["image"] == "node" and changes["user"] == "node" and changes["workdir"] == "/workspace/shop"
    assert changes["env"] == {"A": "template", "B": "file", "C": "request"}
    assert changes["provision"] == ["echo template", "echo file", "echo request"]
    assert set(changes["ports"]) == {"8080", "3000"}
    assert changes["sources"] == {
        "image": "devcontainer", "workdir": "devcontainer", "user": "devcontainer",
        "env.A": "template", "env.B": "devcontainer", "env.C": "request",
        "provision.1": "template", "provision.2": "devcontainer", "provision.3": "request",
        "ports.8080": "template", "ports.3000": "devcontainer"}


def test_applying_a_changed_file_again_keeps_the_request_layer() -> None:
    template = Template(name="t", image="debian")
    workspace = _workspace(template, {"C": "request"}, ["echo request"])
    first = parse('{"image": "x", "containerEnv": {"OLD": "1"}, "postCreateCommand": "echo old"}',
                  ".devcontainer.json", "shop")
    applied = dataclasses.replace(workspace, **with_devcontainer(workspace, template, first, "x"))
    second = parse('{"image": "y", "containerEnv": {"NEW": "1"}}', ".devcontainer.json", "shop")
    again = with_devcontainer(applied, None, second, "y")  # the template is gone meanwhile
    assert again["env"] == {"NEW": "1", "C": "request"}
    assert again["provision"] == ["echo request"]
    assert again["sources"]["provision.1"] == "request"


def test_the_fake_engine_builds_from_the_dockerfiles_base(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.add_image("base:1")
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "Dockerfile").write_text("FROM base:1\nRUN true\n")
    (tmp_path / "app.txt").write_text("app")
    build = Build(dockerfile=".devcontainer/Dockerfile", context=".")
    archive, dockerfile, digest = context_archive(tmp_path, build)
    lines: list[str] = []
    with archive:
        engine.build_image(archive, dockerfile=dockerfile, tag=f"vmhost-devcontainer:{digest}", buildargs={},
                           target=None, labels={"k": "v"}, memory_mb=512, on_output=lines.append)
    assert engine.image_present(f"vmhost-devcontainer:{digest}") and lines == ["Step 1/1 : FROM base:1"]
    (tmp_path / "app.txt").write_text("changed")
    assert context_archive(tmp_path, build)[2] != digest


def test_a_link_to_the_servers_files_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "server"
    outside.mkdir()
    (outside / "devcontainer.json").write_text('{"image": "secret"}')
    checkout = tmp_path / "clone"
    checkout.mkdir()
    (checkout / ".devcontainer").symlink_to(outside)
    (checkout / ".devcontainer.json").symlink_to(outside / "devcontainer.json")
    with pytest.raises(DevContainerRefused, match="no devcontainer file"):
        find_config(checkout)


def test_a_template_may_ask_for_the_devcontainer_but_not_with_a_pool() -> None:
    assert parse_template({"image": "x", "devcontainer": True}, "t.toml").devcontainer
    with pytest.raises(InvalidInput, match="true or false"):
        parse_template({"image": "x", "devcontainer": "yes"}, "t.toml")
    with pytest.raises(InvalidInput, match="do not go together"):
        parse_template({"image": "x", "devcontainer": True, "pool_size": 1}, "t.toml")


def test_a_swarm_cluster_refuses_to_build(tmp_path: Path) -> None:
    def no_engine(url: str) -> DockerEngine:
        raise AssertionError("a refused build reaches no engine")

    manager = DockerEngine("unix:///nonexistent/docker.sock", timeout=1, log_max_mb=1, log_max_files=1)
    swarm = SwarmEngine(manager, no_engine, stop_timeout=1, log_config={})
    with pytest.raises(InvalidInput, match="Swarm cluster.*name an image instead"):
        swarm.build_image(io.BytesIO(), dockerfile="Dockerfile", tag="t", buildargs={}, target=None, labels={},
                          memory_mb=512, on_output=print)
