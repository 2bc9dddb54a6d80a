"""The API's OpenAPI document, built from the app without starting anything: an in-memory database,
a Docker provider that never connects, default settings. `vmhost openapi > openapi.yaml` writes it."""

from __future__ import annotations

import json
from typing import Any

from vmhost.config import OPTIONS, Settings
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.provider import DockerProvider
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog
from vmhost.daemon.app import create_app


def build_spec() -> dict[str, Any]:
    settings = Settings(**{option.name: option.default() for option in OPTIONS})
    store = Store(":memory:")
    orchestrator = Orchestrator(store, DockerProvider(), TemplateCatalog(None), workers=1)
    try:
        return create_app(orchestrator, settings).openapi()
    finally:
        orchestrator.close()
        store.close()


def render(spec: dict[str, Any]) -> str:
    """YAML when PyYAML is installed (it comes with the test tools), else JSON, which is YAML 1.2 too."""
    try:
        import yaml
    except ImportError:
        return json.dumps(spec, indent=2) + "\n"

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:  # descriptions as readable blocks
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump(spec, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120)
