"""StackSecrets: the stack's secrets, kept in SSM Parameter Store as SecureStrings.

Generated passwords (stable across updates, secret in the Pulumi state) and secrets the program
made elsewhere (the load balancer's TLS key). Hosts read them at boot with their instance role;
user-data and stack outputs carry only the parameter names (CKV_AWS_46).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random


@dataclass
class StackSecretsArgs:
    passwords: dict[str, str]  # key (e.g. "db-app") → SSM parameter name; the value is generated
    values: dict[str, tuple[str, pulumi.Input[str]]]  # key → (SSM parameter name, secret value)
    tags: dict[str, str]
    password_length: int = 32


class StackSecrets(pulumi.ComponentResource):
    parameter_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: StackSecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:secrets:StackSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        entries: dict[str, tuple[str, pulumi.Input[str], str]] = {}
        for key, parameter_name in args.passwords.items():
            # Alphanumeric only: safe in SQL literals and env files without quoting (190 bits at 32).
            password = random.RandomPassword(
                f"{name}-{key}-password", length=args.password_length, special=False, opts=child
            )
            entries[key] = (parameter_name, password.result, f"webinfra {key} password (generated)")
        for key, (parameter_name, value) in args.values.items():
            entries[key] = (parameter_name, pulumi.Output.secret(value), f"webinfra {key}")
        self.parameter_arns = {}
        for key, (parameter_name, value, description) in entries.items():
            parameter = aws.ssm.Parameter(
                f"{name}-{key}-parameter",
                name=parameter_name,
                type="SecureString",
                value=value,
                description=description,
                tags={**args.tags, "Role": "secrets", "Name": parameter_name},
                opts=child,
            )
            self.parameter_arns[key] = parameter.arn
        self.register_outputs({"parameter_arns": self.parameter_arns})
