"""Run what the program declares, the way its provider runs it, never a hand-written twin.

pulumi-command's `local.Command` runs `create` as `/bin/sh -c CREATE` (or the declared `interpreter`),
in the declared `dir` or else the directory `pulumi up` runs in (the project's), with the process's
environment plus the declared `environment` (provider/pkg/provider/local/commandOutputs.go, `run`).
The lab and the tests take a declared Command from a mock run of the program and run it here with
exactly that shell, directory and environment, optionally inside a network namespace.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Mapping, Sequence

from lab.mock_tls import unwrap

PROJECT_DIR = pathlib.Path(__file__).resolve().parent.parent  # where `pulumi up` runs: Pulumi.yaml's directory
DEFAULT_INTERPRETER = ("/bin/sh", "-c")


def local_command_argv(inputs: Mapping) -> list[str]:
    interpreter = inputs.get("interpreter") or DEFAULT_INTERPRETER
    return [*interpreter, unwrap(inputs["create"])]


def local_command_environment(inputs: Mapping, base: Mapping[str, str] | None = None) -> dict[str, str]:
    declared = {key: str(unwrap(value)) for key, value in (unwrap(inputs.get("environment")) or {}).items()}
    return {**(os.environ if base is None else base), **declared}


def run_local_command(
    inputs: Mapping, *, namespace: str | None = None, extra_environment: Mapping[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess:
    """A declared `command:local:Command`'s create step. `namespace`: run it from inside that network
    namespace (the lab's internet), as `pulumi up` runs it from the operator's machine.
    `extra_environment`: what the operator's machine has that this one lacks (a trust store)."""
    prefix: Sequence[str] = ("ip", "netns", "exec", namespace) if namespace else ()
    environment = local_command_environment(inputs)
    environment.update(extra_environment or {})
    return subprocess.run(
        [*prefix, *local_command_argv(inputs)],
        cwd=inputs.get("dir") or PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
