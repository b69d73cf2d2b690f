"""HostPrograms: the programs the hosts run that EC2's 16 KB of user-data cannot carry.

Each program (provisioning/render.py, HOST_PROGRAMS) is gzipped, base64-encoded and cut into pieces
of at most 8 KB, each an SSM parameter (advanced tier: a standard one holds 4 KB). Hosts read their
own programs' pieces at boot with their instance role (webinfra-config-sync) and install a program
only if its SHA-256 is the one their user-data carries. Not secret: plain String parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class HostProgramsArgs:
    parameters: dict[str, str]  # SSM parameter name → value (render.program_parameters)
    tags: dict[str, str]


class HostPrograms(pulumi.ComponentResource):
    parameter_arns: dict[str, pulumi.Output[str]]  # parameter name → ARN

    def __init__(self, name: str, args: HostProgramsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:host_programs:HostPrograms", name, None, opts)
        self.parameter_arns = {}
        for parameter_name, value in sorted(args.parameters.items()):
            key = parameter_name.rsplit("/programs/", 1)[-1].replace("/", "-")
            parameter = aws.ssm.Parameter(
                f"{name}-{key}",
                name=parameter_name,
                type="String",
                tier="Advanced",  # up to 8 KB
                value=value,
                description="webinfra host program (a piece of it, gzip in base64)",
                tags={**args.tags, "Role": "programs", "Name": parameter_name},
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.parameter_arns[parameter_name] = parameter.arn
        self.register_outputs({"parameter_arns": self.parameter_arns})
