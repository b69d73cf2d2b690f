#!/usr/bin/python3
"""webinfra-config-sync: bring runtime configuration from SSM Parameter Store onto a running host.

    webinfra-config-sync [--manifest /etc/webinfra/config-sync.json] [--retry-for SECONDS]

Run at first boot and then every few minutes by webinfra-config-sync.timer. The manifest (rendered by
provisioning/render.py) lists entries; for each one this program

  1. skips it when a file named in `skip_if_exists` exists (something else owns the destination now,
     e.g. certbot's certificate on a load balancer with a domain);
  2. reads the parameter (GetParameter, decrypted: the instance role allows exactly that);
  3. checks the value's shape for its `format` and splits it into the parts its files want;
  4. does nothing more when every destination already holds exactly that content (no reload);
  5. writes each part to a candidate file beside its destination (mode and owner as declared) and
     runs the entry's `validate` commands on the candidates ({files[0]} is the first candidate);
     a refused value leaves the installed files untouched and makes the exit status non-zero;
  6. moves the candidates into place (rename: readers see the old file or the new one, never half)
     and runs the `reload` commands, when the entry's `service` is running (a stopped service reads
     the files when it starts).

Nothing here is specific to certificates: a later entry can carry HAProxy's settings or a firewall
allowlist (`format: text`, validated by `haproxy -c` or `nft -c`, reloaded by its service).
Values never reach the command line, the log or the exit message: only a short digest of them.

Standard library and boto3 only (python3-boto3 from Debian).
"""

from __future__ import annotations

import argparse
import base64
import grp
import gzip
import hashlib
import json
import os
import pathlib
import pwd
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

MANIFEST = "/etc/webinfra/config-sync.json"
COMMAND_TIMEOUT = 60

# The formats a value can have, and the parts of it a destination file can take.
FORMATS = {
    "text": ("value",),
    # A PEM bundle as pulumi-tls makes it: certificate(s), then the private key.
    "pem-certificate-and-key": ("value", "certificates", "key"),
    # A program too large for EC2's 16 KB of user-data, gzipped and base64-encoded by the stack
    # (provisioning/render.py, encode_program); installed only if its SHA-256 is the entry's `sha256`,
    # which the user-data carries: a host runs exactly the code the program declared.
    "gzip-base64": ("value",),
    # Runtime configuration (HAProxy's, the firewall's allowlists), gzipped to fit a standard (4 KB)
    # parameter: the stack changes it on a running host, so no digest in the user-data pins it; its
    # entry's `validate` commands decide.
    "gzip-base64-text": ("value",),
}
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END \1-----")


class Refused(Exception):
    """The value must not be installed (wrong shape, or a validation command said no)."""


REQUIRED = object()
ENTRY_KEYS = {
    "name": REQUIRED,
    "parameter": REQUIRED,
    "format": REQUIRED,
    "files": REQUIRED,
    "validate": [],
    "reload": [],
    "service": None,
    "skip_if_exists": [],
    "once": False,
    "sha256": None,
}
FILE_KEYS = {"path": REQUIRED, "part": "value", "mode": "0600", "owner": "root:root", "prefix": ""}


def _with_defaults(item: dict, keys: dict, what: str) -> dict:
    unknown, missing = set(item) - set(keys), {k for k, v in keys.items() if v is REQUIRED and k not in item}
    if unknown or missing:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    return {**keys, **item}


def check_entry(item: dict) -> dict:
    """One manifest entry with its defaults filled in; ValueError names what is wrong with it.

    name, parameter: the entry and its SSM parameter (or a list of them, whose values are joined: a
    value larger than one parameter holds). format: "text", "pem-certificate-and-key" or
    "gzip-base64" (with sha256: the hex SHA-256 the decoded content must have) or "gzip-base64-text".
    files: [{path, part (value | certificates | key), mode, owner, prefix (written before the
    part: "KEY=" makes an environment file)}], written in this order.
    validate, reload: commands (argv lists; {files[N]} is the Nth candidate file in validate).
    service: reload only while it runs. skip_if_exists: paths that mean "not ours any more".
    once: install only when the files are missing (a value that may not change under a running
    host, e.g. a password its database already knows).
    """
    entry = _with_defaults(item, ENTRY_KEYS, f"entry {item.get('name')!r}")
    entry["files"] = [_with_defaults(f, FILE_KEYS, f"entry {entry['name']!r} file") for f in entry["files"]]
    if entry["format"] not in FORMATS:
        raise ValueError(f"entry {entry['name']!r}: unknown format {entry['format']!r} (known: {sorted(FORMATS)})")
    if not entry["files"]:
        raise ValueError(f"entry {entry['name']!r}: no destination file")
    names = entry["parameter"] if isinstance(entry["parameter"], list) else [entry["parameter"]]
    if not names or not all(isinstance(name, str) and name.startswith("/") for name in names):
        raise ValueError(f"entry {entry['name']!r}: parameter must be a parameter's name or a list of them")
    if (entry["format"] == "gzip-base64") != bool(entry["sha256"]):
        raise ValueError(f"entry {entry['name']!r}: gzip-base64, and only it, needs the content's sha256")
    for f in entry["files"]:
        if f["part"] not in FORMATS[entry["format"]]:
            raise ValueError(
                f"entry {entry['name']!r}: {f['path']} wants part {f['part']!r}, which {entry['format']} has not"
            )
        if not os.path.isabs(f["path"]) or not re.fullmatch(r"0[0-7]{3}", f["mode"]) or f["owner"].count(":") != 1:
            raise ValueError(f"entry {entry['name']!r}: {f} needs an absolute path, an octal mode and user:group")
    return entry


def load_manifest(path: str) -> list[dict]:
    return [check_entry(item) for item in json.loads(pathlib.Path(path).read_text())["entries"]]


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def log(entry: dict, message: str) -> None:
    print(f"webinfra-config-sync: {entry['name']}: {message}", flush=True)


# --- the parameter ---------------------------------------------------------------------------------------------


def ssm_client():
    """The SSM client of this host's role: the stand-in's endpoint where one is set (the lab)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ssm",
        region_name=os.environ.get("WEBINFRA_AWS_REGION") or None,
        endpoint_url=os.environ.get("WEBINFRA_AWS_ENDPOINT_URL") or None,
        # Bounded: a few quick attempts per call; the timer runs again in minutes anyway.
        config=Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 3}),
    )


def fetch(client, parameter: str, retry_for: float, sleep: Callable[[float], None] = time.sleep) -> str:
    """The decrypted value. At boot (`retry_for` > 0) the role's credentials and the network can take
    a few seconds to appear: keep trying until then, then give up with the last error."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return client.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
        except Exception as error:  # any failure is retried, bounded by the deadline
            if time.monotonic() >= deadline:
                raise
            print(
                f"webinfra-config-sync: {parameter} not readable yet ({type(error).__name__}); retrying",
                file=sys.stderr,
                flush=True,
            )
            sleep(2)


# --- shape and parts ---------------------------------------------------------------------------------------------


def _openssl(*args: str, stdin: str) -> str:
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if result.returncode != 0:
        raise Refused(
            f"openssl {args[0]} {' '.join(a for a in args[1:] if a.startswith('-'))}: {result.stderr.strip()[:200]}"
        )
    return result.stdout


def parts_of(entry: dict, value: str) -> dict[str, bytes]:
    """The value split into the parts of its format, each as the bytes a file will hold."""
    text = value.strip() + "\n"
    if entry["format"] == "text":
        return {"value": text.encode()}
    if entry["format"] in ("gzip-base64", "gzip-base64-text"):
        try:
            content = gzip.decompress(base64.b64decode(value.strip(), validate=True))
        except (ValueError, OSError, EOFError) as error:
            raise Refused(f"not gzip in base64 ({type(error).__name__})") from error
        if entry["sha256"] and hashlib.sha256(content).hexdigest() != entry["sha256"]:
            raise Refused(f"its SHA-256 is {digest(content)}…, not the {entry['sha256'][:12]}… this host expects")
        return {"value": content}
    blocks = [(m.group(1), m.group(0)) for m in PEM_BLOCK.finditer(value)]
    certificates = [b for kind, b in blocks if kind == "CERTIFICATE"]
    keys = [b for kind, b in blocks if kind.endswith("PRIVATE KEY")]
    if not certificates or len(keys) != 1:
        raise Refused(f"not a certificate with its key ({len(certificates)} certificates, {len(keys)} keys)")
    # The certificate must be current and belong to the key: an expired or mismatched one would
    # take the service down at its next reload.
    _openssl("x509", "-noout", "-checkend", "0", stdin=certificates[0])
    if _openssl("x509", "-noout", "-pubkey", stdin=certificates[0]) != _openssl("pkey", "-pubout", stdin=keys[0]):
        raise Refused("the private key does not belong to the certificate")
    return {
        "value": text.encode(),
        "certificates": ("\n".join(certificates) + "\n").encode(),
        "key": (keys[0] + "\n").encode(),
    }


# --- install ----------------------------------------------------------------------------------------------------


def _installed(destination: dict) -> bytes | None:
    try:
        return pathlib.Path(destination["path"]).read_bytes()
    except FileNotFoundError:
        return None


def _apply_mode(path: str, destination: dict) -> None:
    user, group = destination["owner"].split(":")
    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    os.chmod(path, int(destination["mode"], 8))


def _expand(command: Sequence[str], candidates: list[str]) -> list[str]:
    return [re.sub(r"\{files\[(\d+)\]\}", lambda m: candidates[int(m.group(1))], arg) for arg in command]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL
    )


def _service_running(service: str) -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", service], timeout=COMMAND_TIMEOUT).returncode == 0


def sync_entry(
    entry: dict, client, retry_for: float = 0.0, service_running: Callable[[str], bool] = _service_running
) -> str:
    """One entry: "skipped", "unchanged" or "installed" (reloaded or not); raises Refused."""
    owner = next((p for p in entry["skip_if_exists"] if os.path.exists(p)), None)
    if owner:
        log(entry, f"skipped: {owner} exists (its destination is managed by something else now)")
        return "skipped"
    if entry["once"] and all(os.path.exists(d["path"]) for d in entry["files"]):
        return "unchanged"  # quietly, and without asking SSM: every run would say the same
    names = entry["parameter"] if isinstance(entry["parameter"], list) else [entry["parameter"]]
    parts = parts_of(entry, "".join(fetch(client, name, retry_for) for name in names))
    wanted = [(d, d["prefix"].encode() + parts[d["part"]]) for d in entry["files"]]
    if all(_installed(d) == content for d, content in wanted):
        for destination, _ in wanted:
            _apply_mode(destination["path"], destination)
        log(entry, f"unchanged ({digest(parts['value'])})")
        return "unchanged"

    candidates: list[str] = []
    try:
        for destination, content in wanted:
            directory = os.path.dirname(destination["path"])
            # A directory made here is as private as the file it is made for (secrets: 0700).
            os.makedirs(directory, mode=0o755 if int(destination["mode"], 8) & 0o044 else 0o700, exist_ok=True)
            # Beside the destination: the rename into place stays on one filesystem (atomic).
            handle, candidate = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(destination['path'])}.")
            candidates.append(candidate)
            os.fchmod(handle, 0o600)  # before any byte of a key is written
            with os.fdopen(handle, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            _apply_mode(candidate, destination)
        for command in entry["validate"]:
            result = _run(_expand(command, candidates))
            if result.returncode != 0:
                raise Refused(f"{command[0]} refused it: {(result.stdout + result.stderr).strip()[-300:]}")
        for (destination, _), candidate in zip(wanted, candidates, strict=True):  # one candidate per file
            os.replace(candidate, destination["path"])
        candidates.clear()
    finally:
        for leftover in candidates:
            os.unlink(leftover)

    if entry["service"] and not service_running(entry["service"]):
        log(
            entry, f"installed {digest(parts['value'])}; {entry['service']} is not running (it reads it when it starts)"
        )
        return "installed"
    for command in entry["reload"]:
        result = _run(command)
        if result.returncode != 0:
            raise RuntimeError(
                f"installed, but {' '.join(command)} failed: {(result.stdout + result.stderr).strip()[-300:]}"
            )
    log(
        entry, f"installed {digest(parts['value'])} and reloaded" + (f" {entry['service']}" if entry["service"] else "")
    )
    return "installed"


def sync(
    entries: Sequence[dict], client, retry_for: float = 0.0, service_running: Callable[[str], bool] = _service_running
) -> dict[str, str]:
    """Every entry, each on its own: one refused value does not hold back the others."""
    outcomes = {}
    for entry in entries:
        try:
            outcomes[entry["name"]] = sync_entry(entry, client, retry_for, service_running)
        except Refused as error:
            log(entry, f"REFUSED, the installed one stays: {error}")
            outcomes[entry["name"]] = "refused"
        except Exception as error:  # noqa: BLE001 - reported, and the exit status says so
            log(entry, f"FAILED: {type(error).__name__}: {error}")
            outcomes[entry["name"]] = "failed"
    return outcomes


def main(
    argv: Sequence[str] | None = None, client=None, service_running: Callable[[str], bool] = _service_running
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=MANIFEST)
    parser.add_argument(
        "--retry-for",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep trying an unreadable parameter this long (at boot)",
    )
    args = parser.parse_args(argv)
    outcomes = sync(load_manifest(args.manifest), client or ssm_client(), args.retry_for, service_running)
    return 0 if all(o in ("skipped", "unchanged", "installed") for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
