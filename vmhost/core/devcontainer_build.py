"""The build context of a devcontainer.json's `build`, as the tar the engine builds from, and the digest
its image is cached by: the same files, Dockerfile, args and target give the same image tag."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from vmhost.core.devcontainer import Build, DevContainerRefused

REPOSITORY = "vmhost-devcontainer"  # the built images' repository: vmhost-devcontainer:<digest>
OUTSIDE_DOCKERFILE = ".vmhost-devcontainer.Dockerfile"  # a Dockerfile outside the context goes in as this
DIGEST_CHARS = 32


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Only what Docker builds from: no owners, no times (a fresh clone has new ones each time)."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def context_archive(checkout: Path, build: Build) -> tuple[IO[bytes], str, str]:
    """A tar of the build context (the repository's `build.context` folder, without .git), the Dockerfile's
    path in it, and the digest of all that goes into the build. The caller closes the file."""
    context = (checkout / build.context).resolve()
    dockerfile = (checkout / build.dockerfile).resolve()
    root = checkout.resolve()
    if not context.is_dir() or not context.is_relative_to(root):
        raise DevContainerRefused(f"the build context {build.context!r} is not a folder of the repository")
    if not dockerfile.is_file() or not dockerfile.is_relative_to(root):
        raise DevContainerRefused(f"the Dockerfile {build.dockerfile!r} is not a file of the repository")
    in_context = dockerfile.relative_to(context).as_posix() if dockerfile.is_relative_to(context) \
        else OUTSIDE_DOCKERFILE
    archive = tempfile.TemporaryFile()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder, folders, files in os.walk(context):
            folders[:] = sorted(f for f in folders if not (Path(folder) == context and f == ".git"))
            for name in sorted(folders) + sorted(files):
                path = Path(folder) / name
                arcname = path.relative_to(context).as_posix()
                tar.add(path, arcname=arcname, recursive=False, filter=_normalized)
        if in_context == OUTSIDE_DOCKERFILE:
            tar.add(dockerfile, arcname=OUTSIDE_DOCKERFILE, filter=_normalized)
    archive.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: archive.read(1 << 20), b""):
        digest.update(chunk)
    digest.update(json.dumps([posixpath.normpath(in_context), build.args, build.target], sort_keys=True).encode())
    archive.seek(0)
    return archive, in_context, digest.hexdigest()[:DIGEST_CHARS]
