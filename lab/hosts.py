"""Lab hosts: an overlay over the base image, a NoCloud seed with the host's exact user-data, and
systemd-nspawn booting it inside the host's network namespace (kept running by boot-host.sh)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import time

from lab.mounts import unmount_below
from lab.topology import Host

STATE = pathlib.Path(os.environ.get("WEBINFRA_LAB_STATE", "/var/lib/webinfra-lab"))
HOSTS = STATE / "hosts"
BOOT_HOST = pathlib.Path(__file__).resolve().parent / "boot-host.sh"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The stand-in for the instance role: the AWS API stand-in accepts any key, and boto/awscli find
# these where the role's credentials would otherwise come from (IMDS). Nothing secret.
LAB_AWS_CREDENTIALS = "[default]\naws_access_key_id = lab\naws_secret_access_key = lab\n"


def host_dir(name: str) -> pathlib.Path:
    return HOSTS / name


def root_of(name: str) -> pathlib.Path:
    return host_dir(name) / "root"


def prepare(host: Host, lowers: list[pathlib.Path]) -> None:
    """Mount the host's overlay and seed cloud-init with its user-data, byte for byte."""
    base = host_dir(host.name)
    for part in ("upper", "work", "root"):
        (base / part).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={':'.join(str(p) for p in lowers)},upperdir={base / 'upper'},workdir={base / 'work'}",
            str(base / "root"),
        ],
        check=True,
    )
    root = base / "root"
    seed = root / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True, exist_ok=True)
    (seed / "user-data").write_bytes(host.user_data_gzip)  # gzip, read by cloud-init as on EC2
    (seed / "meta-data").write_text(f"instance-id: {host.instance_id}\nlocal-hostname: {host.name}\n")
    aws = root / "root/.aws"
    aws.mkdir(mode=0o700, parents=True, exist_ok=True)
    (aws / "credentials").write_text(LAB_AWS_CREDENTIALS)
    (aws / "credentials").chmod(0o600)


def trust_ca(host: Host, ca_pem: str, name: str) -> None:
    """Add a CA to the host's system trust store: a lab stand-in's, in place of a public CA that EC2
    hosts already trust. In the bundle, and where update-ca-certificates would keep it."""
    root = root_of(host.name)
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    bundle.write_text(bundle.read_text() + "\n" + ca_pem)
    local = root / "usr/local/share/ca-certificates"
    local.mkdir(parents=True, exist_ok=True)
    (local / f"{name}.crt").write_text(ca_pem)


def add_hosts_entry(host: Host, line: str) -> None:
    """A name the host resolves without DNS. In cloud-init's template, since the user-data's
    manage_etc_hosts renders /etc/hosts from it at every boot."""
    template = root_of(host.name) / "etc/cloud/templates/hosts.debian.tmpl"
    template.write_text(template.read_text() + line)


def boot(host: Host) -> int:
    """Start the host (detached); returns the supervisor's pid."""
    log = open(host_dir(host.name) / "console.log", "ab")  # noqa: SIM115 - the container writes to it after we return
    process = subprocess.Popen(
        [str(BOOT_HOST), host.name, str(root_of(host.name)), host.netns],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (host_dir(host.name) / "supervisor.pid").write_text(str(process.pid))
    return process.pid


def netns_pids(netns: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()] if result.returncode == 0 else []


def init_pid(host: Host) -> int | None:
    """The container's systemd: the process in the host's namespace that is PID 1 inside."""
    for pid in netns_pids(host.netns):
        try:
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                return pid
    return None


def is_running(host: Host) -> bool:
    return init_pid(host) is not None


def guest_command(
    host: Host,
    command: list[str],
    *,
    timeout: float | None = 60,
    check: bool = False,
    input: str | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess:
    pid = init_pid(host)
    if pid is None:
        raise RuntimeError(f"{host.name} is not running")
    return subprocess.run(
        [
            "nsenter",
            "-t",
            str(pid),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "-C",
            "--",
            "/usr/bin/env",
            "-i",
            f"PATH={GUEST_PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            *command,
        ],
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=check,
        input=input,
    )


def logged_at(host: Host, tag: str, text: str) -> float:
    """When (epoch seconds) `host` last logged `text` under syslog tag `tag`. The hosts share this
    machine's clock, so the time compares with the caller's time.time()."""
    lines = guest_command(
        host, ["journalctl", "-t", tag, "-o", "short-unix", "--no-pager"], timeout=30
    ).stdout.splitlines()
    matching = [line for line in lines if text in line]
    if not matching:
        raise RuntimeError(f"{host.name} has not logged {text!r} under {tag}")
    return float(matching[-1].split()[0])


def kill(host: Host) -> None:
    """Power loss: SIGKILL the container's init (its whole PID namespace dies with it)."""
    pid = init_pid(host)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while is_running(host) and time.monotonic() < deadline:
        time.sleep(0.1)


def supervisors() -> list[int]:
    """Every running boot-host.sh of this lab, found from /proc (works after a crash, without state)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(BOOT_HOST).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_namespace_processes(netns: str) -> None:
    for pid in netns_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# The cgroup hierarchies boot-host.sh gives each host a cgroup in (those present on this machine).
CGROUP_HIERARCHIES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def host_cgroups() -> list[pathlib.Path]:
    """Each host's own cgroup (boot-host.sh), in every hierarchy: what `down` removes."""
    found = []
    for hierarchy in map(pathlib.Path, CGROUP_HIERARCHIES):
        base = hierarchy / "webinfra-lab"
        if (hierarchy / "cgroup.procs").exists() and base.is_dir():
            found.append(base)
    return found


def remove_cgroups(wait: float = 10.0) -> int:
    """Remove the hosts' cgroups, deepest first. A cgroup goes only once empty, and killed processes leave
    it a moment after the signal: wait up to `wait` seconds for them (a `down` right after the kill had
    left lb-01's behind)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(
        procs.read_text().strip() for base in host_cgroups() for procs in base.rglob("cgroup.procs")
    ):
        time.sleep(0.1)
    removed = 0
    for base in host_cgroups():
        below = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*below, base]:
            with contextlib.suppress(OSError):
                directory.rmdir()
                removed += 1
    return removed


def unmount_and_delete() -> list[str]:
    """Unmount every host's overlay and delete the host directories; returns what was unmounted."""
    unmounted = unmount_below(HOSTS)
    shutil.rmtree(HOSTS, ignore_errors=True)
    return unmounted
