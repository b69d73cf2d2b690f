"""Mounts the lab leaves behind: found from /proc/mounts, so this works after a crash too."""

from __future__ import annotations

import pathlib
import subprocess


def unmount_below(path: pathlib.Path) -> list[str]:
    """Lazily unmount everything mounted under `path`, deepest first; returns what was unmounted."""
    prefix = str(path).rstrip("/") + "/"
    targets = [line.split()[1] for line in pathlib.Path("/proc/mounts").read_text().splitlines()]
    unmounted = [t for t in reversed(targets) if t.startswith(prefix)]
    for target in unmounted:
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    return unmounted
