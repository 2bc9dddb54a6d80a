"""vmhost openapi: print the REST API's OpenAPI document (`vmhost openapi > openapi.yaml`)."""

import sys

from vmhost.cli.base import app


@app.command("openapi")
def openapi() -> None:
    """Print the API's OpenAPI document, built from the daemon's code without starting anything."""
    from vmhost.daemon.openapi import build_spec, render

    sys.stdout.write(render(build_spec()))
