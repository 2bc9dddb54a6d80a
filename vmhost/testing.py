"""Helpers for the test suite and the benchmarks (not used by the product): a tiny local image,
since no image registry is reachable, built from Debian's busybox-static with `docker import`."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from typing import Any

BUSYBOX = "/bin/busybox"


def busybox_rootfs() -> bytes:
    """A tar of a minimal root: busybox with every applet linked in /bin, a passwd, /tmp, /workspace."""
    busybox = shutil.which("busybox") or BUSYBOX
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def directory(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for name in ("bin", "etc", "root", "workspace", "usr", "usr/bin", "sbin", "proc", "sys", "dev"):
            directory(name)
        directory("tmp", 0o1777)
        with open(busybox, "rb") as handle:
            file("bin/busybox", handle.read(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buffer.getvalue()


def build_image(client: Any, tag: str, labels: dict[str, str]) -> str:
    """Import the busybox root as `tag` through a docker.DockerClient; returns the image id."""
    changes = [f'LABEL {k}="{v}"' for k, v in labels.items()] + ['CMD ["sleep", "infinity"]',
                                                                  "ENV PATH=/bin:/usr/bin:/sbin"]
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(busybox_rootfs(), repository=repository, tag=version or "latest",
                                      changes=changes)
    return client.images.get(tag).id
