"""The API's OpenAPI document, built from the app without starting anything: the parts build() makes over
default settings with an in-memory database (the Docker engine is never connected to). `vmhost openapi >
openapi.yaml` writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vmhost.config import Settings
from vmhost.core.build import build
from vmhost.daemon.app import create_app


def build_spec() -> dict[str, Any]:
    settings = Settings.defaults(db_path=Path(":memory:"), workers=1)
    parts = build(settings)
    try:
        return create_app(parts.orchestrator, settings).openapi()
    finally:
        parts.close()


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
