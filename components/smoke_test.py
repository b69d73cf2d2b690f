"""SmokeTest: `pulumi up` ends by checking the site the way a user would (scripts/smoke), so an
update succeeds only when the site really serves. It runs where `pulumi up` runs, after every
instance exists, again whenever an instance is replaced, and never on `pulumi preview`."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_command as command

CERTIFICATE_VARIABLE = "WEBINFRA_SMOKE_CA_PEM"


@dataclass
class SmokeTestArgs:
    url: pulumi.Input[str]
    certificate_pem: pulumi.Input[str]  # the load balancer's exported certificate (public)
    backends: list[str]  # every web server's hostname: each must be in the rotation
    instance_ids: list[pulumi.Input[str]]  # a replaced instance runs the test again
    # HAProxy's configuration version (render.stack_haproxy_config): a new one runs the test again, and
    # the test waits until the site answers with it (the hosts reload it from SSM within about 35 s)
    config_version: str = ""
    domain: str | None = None
    timeout_seconds: int = 900  # the hosts install packages and boot after EC2 reports them running


def smoke_command(
    url: str,
    backends: list[str],
    *,
    timeout_seconds: int,
    interval: int,
    config_version: str = "",
    domain: str | None = None,
) -> str:
    """scripts/smoke's command line: the site at `url` serves with every one of `backends` in its rotation
    (and, given, HAProxy's configuration `config_version`). The certificate to trust comes in
    CERTIFICATE_VARIABLE. scripts/smoke is an executable (bash starting ops/smoke.py): run it, never
    hand it to python3; pulumi-command runs this with /bin/sh -c in the project directory."""
    words = [
        "scripts/smoke",
        url,
        *("--cacert-pem-env", CERTIFICATE_VARIABLE),
        *("--backends", ",".join(backends)),
        *("--timeout", str(timeout_seconds), "--interval", str(interval)),
    ]
    if config_version:
        words += ["--config", config_version]
    if domain:  # the certificate (self-signed or, once issued, Let's Encrypt's) names the domain
        words += ["--server-name", domain]
    return shlex.join(words)


class SmokeTest(pulumi.ComponentResource):
    def __init__(self, name: str, args: SmokeTestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:smoke_test:SmokeTest", name, None, opts)

        def command_line(url: str) -> str:
            return smoke_command(
                url,
                args.backends,
                timeout_seconds=args.timeout_seconds,
                interval=15,
                config_version=args.config_version,
                domain=args.domain,
            )

        run = command.local.Command(
            f"{name}-run",
            create=pulumi.Output.from_input(args.url).apply(command_line),
            # The exported certificate is trusted in addition to the system's CAs (Let's Encrypt's, once
            # ACME has issued one). Public, but kept off the command line all the same.
            environment={CERTIFICATE_VARIABLE: args.certificate_pem},
            # Run again when an instance is replaced, and when the certificate is re-minted: the hosts
            # pick the new one up from SSM (webinfra-config-sync) and the test waits until they serve it.
            triggers=[*args.instance_ids, args.certificate_pem, args.config_version],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.output = run.stdout
        self.register_outputs({"output": self.output})
