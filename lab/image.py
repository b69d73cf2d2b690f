"""The lab's Debian 12 images: built once with debootstrap, cached, keyed by their package lists.

A shared base (systemd, cloud-init) plus one layer per set of packages the hosts' user-data asks
for, so hosts boot with no network and each role has exactly its own packages. apt inside it
points at an empty local repository: the user-data's `package_update` and `packages` then succeed
offline (the packages are already there) and stay exactly as on EC2.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence

from lab.mounts import unmount_below

CACHE = pathlib.Path(os.environ.get("WEBINFRA_LAB_CACHE", "/var/cache/webinfra-lab"))
MIRROR = os.environ.get("WEBINFRA_LAB_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("WEBINFRA_LAB_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
SUITE = "bookworm"
# Bump when the recipe below changes in a way the package list does not show.
RECIPE_VERSION = "4"
COMPLETE = ".webinfra-lab-complete"
# In every host, as in Debian's cloud images: systemd, cloud-init, and the basics an operator expects.
BOOT_PACKAGES = ("cloud-init", "locales", "procps", "iputils-ping", "curl", "ca-certificates", "less")
INCLUDE = "systemd,systemd-sysv,dbus,iproute2"

LAB_CLOUD_CFG = """\
# webinfra lab: cloud-init reads the NoCloud seed, as EC2 hosts read their metadata service.
datasource_list: [ NoCloud, None ]
# The lab configures each host's network from outside (as AWS does for an ENI); cloud-init's
# fallback DHCP would fight it.
network: {config: disabled}
"""


def base_key() -> str:
    recipe = json.dumps(
        {"packages": sorted(BOOT_PACKAGES), "suite": SUITE, "recipe": RECIPE_VERSION, "include": INCLUDE}
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def layer_key(packages: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([base_key(), sorted(packages)]).encode()).hexdigest()[:12]


def base_path() -> pathlib.Path:
    return CACHE / f"debian12-base-{base_key()}"


def layer_path(packages: Sequence[str]) -> pathlib.Path:
    return CACHE / f"layer-{layer_key(packages)}"


def _complete(path: pathlib.Path) -> bool:
    return (path / COMPLETE).exists()


def is_built(package_sets: Iterable[Sequence[str]]) -> bool:
    return _complete(base_path()) and all(_complete(layer_path(p)) for p in package_sets)


class Spinner:
    """A spinner with elapsed time and the latest line of a log file (a line every 15 s without a tty)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, label: str, log: pathlib.Path):
        self.label, self.log = label, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if sys.stdout.isatty():
            sys.stdout.write("\r\033[K")

    def _latest(self) -> str:
        try:
            with open(self.log, "rb") as handle:
                handle.seek(max(0, self.log.stat().st_size - 2048))
                lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
            return lines[-1][:60] if lines else ""
        except OSError:
            return ""

    def _run(self):
        frame, last_plain = 0, 0.0
        while not self._stop.wait(0.2):
            elapsed = time.monotonic() - self.started
            if sys.stdout.isatty():
                sys.stdout.write(
                    f"\r\033[K  {self.FRAMES[frame % len(self.FRAMES)]} {self.label} {elapsed:5.0f}s  {self._latest()}"
                )
                sys.stdout.flush()
                frame += 1
            elif elapsed - last_plain >= 15:
                last_plain = elapsed
                print(f"  … {self.label} {elapsed:.0f}s: {self._latest()}", flush=True)


def _run_logged(command: list[str], log: pathlib.Path, **kwargs) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(
            f"{' '.join(command[:3])} failed (exit {result.returncode}); end of {log}:\n" + "\n".join(tail)
        )


def _chroot(root: pathlib.Path, script: str, log: pathlib.Path) -> None:
    """`script` inside the image, in a PID namespace of its own (its /proc shows only its processes) and a
    mount namespace that goes with it: a package's maintainer script never sees this machine's processes
    (mariadb-server's preinst looks for a running mariadbd to stop: the tests' own run beside a build)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    _run_logged(
        [
            *("unshare", "--pid", "--fork", "--mount", f"--mount-proc={root / 'proc'}"),
            *("chroot", str(root), "/bin/bash", "-euo", "pipefail", "-c", script),
        ],
        log,
        env=env,
    )


def build(package_sets: Iterable[Sequence[str]], log_dir: pathlib.Path) -> dict[tuple[str, ...], list[pathlib.Path]]:
    """Build what is not cached; return, per package set, the overlay lower dirs (top first).

    The base (debootstrap, systemd, cloud-init) is shared; each set of packages a host's user-data
    asks for gets its own layer over it, so a load balancer has HAProxy but no nginx, as on EC2.
    Safe to interrupt: everything is built in a temporary directory and renamed when complete.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    # One build at a time (scripts/test builds them in the background while other tests run): a build
    # removes what an interrupted one left, which would be another's work in progress.
    with open(CACHE / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("  … another build of the lab's images is running (scripts/lab images?): waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(package_sets, log_dir)


def building() -> bool:
    """Whether a build runs now (its mounts are its own: `scripts/lab down` leaves them)."""
    if not CACHE.exists():
        return False
    with open(CACHE / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def _build(package_sets: Iterable[Sequence[str]], log_dir: pathlib.Path) -> dict[tuple[str, ...], list[pathlib.Path]]:
    for stale in CACHE.glob(".build-*"):
        unmount_below(stale)
        shutil.rmtree(stale, ignore_errors=True)
    log = log_dir / "image-build.log"
    base = base_path()
    if not _complete(base):
        work = CACHE / f".build-base-{os.getpid()}"
        with Spinner("debootstrap (Debian 12 minbase)", log):
            _run_logged(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(work), MIRROR], log)
        (work / "etc/apt/sources.list").write_text(
            f"deb {MIRROR} {SUITE} main\n"
            f"deb {MIRROR} {SUITE}-updates main\n"
            f"deb {SECURITY_MIRROR} {SUITE}-security main\n"
        )
        (work / "usr/sbin/policy-rc.d").write_text(
            "#!/bin/sh\n# no service starts while the image is built\nexit 101\n"
        )
        (work / "usr/sbin/policy-rc.d").chmod(0o755)
        script = f"""
apt-get update -qq
apt-get -y -qq dist-upgrade
apt-get install -y -qq {" ".join(sorted(BOOT_PACKAGES))}
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
locale-gen
update-locale LANG=en_US.UTF-8
"""
        with Spinner("base: systemd, cloud-init, locales", log):
            _chroot(work, script, log)
        _mark_complete(work, {"packages": sorted(BOOT_PACKAGES)})
        work.rename(base)

    lowers = {}
    for packages in {tuple(sorted(p)) for p in package_sets}:
        layer = layer_path(packages)
        if not _complete(layer):
            work = CACHE / f".build-layer-{os.getpid()}"
            for part in ("upper", "work", "root"):
                (work / part).mkdir(parents=True)
            subprocess.run(
                [
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    f"lowerdir={base},upperdir={work / 'upper'},workdir={work / 'work'}",
                    str(work / "root"),
                ],
                check=True,
            )
            try:
                script = f"apt-get update -qq\napt-get install -y -qq {' '.join(packages)}\napt-get clean\n"
                with Spinner(f"layer: {' '.join(packages)}", log):
                    _chroot(work / "root", script, log)
                _finish(work / "root")
            finally:
                subprocess.run(["umount", str(work / "root")], check=True)
            _mark_complete(work / "upper", {"packages": list(packages)})
            (work / "upper").rename(layer)
            shutil.rmtree(work, ignore_errors=True)
        lowers[packages] = [layer, base]
    _prune(keep={base, *(path for pair in lowers.values() for path in pair)})
    return lowers


# Layers of the current base kept although this build did not ask for them: the lab's variants (one load
# balancer or a pair, --acme) each have their own, and pruning one another's rebuilt them on every run.
KEPT_LAYERS = 8


def _prune(keep: set[pathlib.Path]) -> None:
    """Images of an older recipe are never used again: free their disk, and all but the newest KEPT_LAYERS
    layers of the current base. Never one a running host's overlay is made of (a build for one host must
    not pull another's files away)."""
    in_use = _mounted_lowers()
    current = sorted(
        (layer for layer in CACHE.glob("layer-*") if _complete(layer) and _of_current_base(layer)),
        key=lambda layer: (layer / COMPLETE).stat().st_mtime,
        reverse=True,
    )
    keep = keep | {base_path(), *current[:KEPT_LAYERS]}
    for entry in CACHE.iterdir():
        if entry in keep or entry in in_use:
            continue
        if entry.name.startswith("debian12-") or entry.name.startswith("layer-"):
            shutil.rmtree(entry, ignore_errors=True)


def _of_current_base(layer: pathlib.Path) -> bool:
    try:
        packages = json.loads((layer / COMPLETE).read_text())["packages"]
    except (OSError, ValueError, KeyError):
        return False
    return layer == layer_path(packages)


def _mounted_lowers() -> set[pathlib.Path]:
    """The lower dirs of every overlay mounted now (/proc/self/mountinfo's super options)."""
    found: set[pathlib.Path] = set()
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        if " - overlay " not in line:
            continue
        for option in line.rsplit(" ", 1)[-1].split(","):
            if option.startswith("lowerdir="):
                found.update(pathlib.Path(p) for p in option.removeprefix("lowerdir=").split(":"))
    return found


def _mark_complete(path: pathlib.Path, facts: dict) -> None:
    (path / COMPLETE).write_text(json.dumps({**facts, "built": time.time()}))


def _finish(root: pathlib.Path) -> None:
    """Offline apt, NoCloud datasource, and no identity baked in (each host gets its own)."""
    repo = root / "var/lib/webinfra-lab/apt"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "Packages").write_text("")
    (root / "etc/apt/sources.list").write_text(
        "# webinfra lab: offline. Every package the user-data asks for is already installed.\n"
        "deb [trusted=yes] file:/var/lib/webinfra-lab/apt ./\n"
    )
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    (root / "etc/cloud/cloud.cfg.d/99-webinfra-lab.cfg").write_text(LAB_CLOUD_CFG)
    (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    shutil.rmtree(root / "var/lib/cloud", ignore_errors=True)
