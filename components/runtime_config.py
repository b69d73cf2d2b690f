"""RuntimeConfig: what a running stack's hosts reload rather than what replaces them.

HAProxy's configuration (backends, rate limit), the failover controller's list of database servers
and the web servers' firewall allowlists change when the stack changes (a web server added, a second
load balancer, a new rate limit). In user-data they would replace every host that carries them
(`user_data_replace_on_change`) or never reach it (web-01 ignores its user-data). Here each one is an
SSM parameter (provisioning/render.py, runtime_config) that webinfra-config-sync brings onto the hosts
every 30 s: validated there, then reloaded without dropping a connection. Not secret: plain String
parameters, gzipped so the largest stack fits the free standard tier (4 KB).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class RuntimeConfigArgs:
    parameters: dict[str, str]  # SSM parameter name → value (render.runtime_config)
    tags: dict[str, str]


class RuntimeConfig(pulumi.ComponentResource):
    parameter_arns: dict[str, pulumi.Output[str]]  # parameter name → ARN

    def __init__(self, name: str, args: RuntimeConfigArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:runtime_config:RuntimeConfig", name, None, opts)
        self.parameter_arns = {}
        for parameter_name, value in sorted(args.parameters.items()):
            key = parameter_name.rsplit("/config/", 1)[-1].replace(".", "-")
            parameter = aws.ssm.Parameter(
                f"{name}-{key}",
                name=parameter_name,
                type="String",
                tier="Standard",
                value=value,
                description="webinfra runtime configuration (gzip in base64), reloaded by the hosts",
                tags={**args.tags, "Role": "config", "Name": parameter_name},
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.parameter_arns[parameter_name] = parameter.arn
        self.register_outputs({"parameter_arns": self.parameter_arns})
