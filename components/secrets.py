"""DatabaseSecrets: generated database passwords, kept in SSM Parameter Store as SecureStrings.

The passwords are stable across updates and secret in the Pulumi state; hosts read them at boot
with their instance role. User-data and stack outputs carry only the parameter names (CKV_AWS_46).
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random


@dataclass
class DatabaseSecretsArgs:
    parameter_names: dict[str, str]  # key (e.g. "db-app") → SSM parameter name
    tags: dict[str, str]
    password_length: int = 32


class DatabaseSecrets(pulumi.ComponentResource):
    parameter_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: DatabaseSecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:secrets:DatabaseSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.parameter_arns = {}
        for key, parameter_name in args.parameter_names.items():
            # Alphanumeric only: safe in SQL literals and env files without quoting (190 bits at 32).
            password = random.RandomPassword(f"{name}-{key}-password", length=args.password_length, special=False, opts=child)
            parameter = aws.ssm.Parameter(
                f"{name}-{key}-parameter",
                name=parameter_name,
                type="SecureString",
                value=password.result,
                description=f"webinfra {key} password (generated; read by the web servers at boot)",
                tags={**args.tags, "Role": "secrets", "Name": parameter_name},
                opts=child,
            )
            self.parameter_arns[key] = parameter.arn
        self.register_outputs({"parameter_names": args.parameter_names, "parameter_arns": self.parameter_arns})
