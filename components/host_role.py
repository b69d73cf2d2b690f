"""HostRole: the IAM role and instance profile of one kind of host, with only the access it needs;
and the builders of the policy statements the stack grants its roles."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

EC2_ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


# What Session Manager (and Run Command) need on the instance: the actions of AWS's managed policy
# AmazonSSMManagedInstanceCore except its ssm:GetParameter(s) on every parameter of the account,
# which would let any host read every stack's secrets.
SESSION_MANAGER_STATEMENT = {
    "Sid": "SessionManagerAgent",
    "Effect": "Allow",
    "Action": [
        "ssm:DescribeAssociation",
        "ssm:GetDeployablePatchSnapshotForInstance",
        "ssm:GetDocument",
        "ssm:DescribeDocument",
        "ssm:GetManifest",
        "ssm:ListAssociations",
        "ssm:ListInstanceAssociations",
        "ssm:PutInventory",
        "ssm:PutComplianceItems",
        "ssm:PutConfigurePackageResult",
        "ssm:UpdateAssociationStatus",
        "ssm:UpdateInstanceAssociationStatus",
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
        "ec2messages:AcknowledgeMessage",
        "ec2messages:DeleteMessage",
        "ec2messages:FailMessage",
        "ec2messages:GetEndpoint",
        "ec2messages:GetMessages",
        "ec2messages:SendReply",
    ],
    "Resource": "*",
}


def read_parameters(sid: str, arns: Iterable[pulumi.Input[str]]) -> dict:
    """Read exactly these SSM parameters (`ssm:GetParameter` on their ARNs), nothing else."""
    return {"Sid": sid, "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": list(arns)}


def put_metrics(stack: str) -> dict:
    """Metrics into the CloudWatch agent's namespace and the stack's own, nowhere else."""
    return {
        "Sid": "PublishHealthMetrics",
        "Effect": "Allow",
        "Action": ["cloudwatch:PutMetricData"],
        "Resource": "*",  # PutMetricData has no resource type; the namespace condition scopes it
        "Condition": {"StringEquals": {"cloudwatch:namespace": ["CWAgent", f"webinfra/{stack}"]}},
    }


def find_elastic_ip() -> dict:
    """Where the stack's Elastic IP points: the failover controller decides only there (a lone load
    balancer too: a second one joining it takes the address, and the decisions with it)."""
    return {
        "Sid": "FindTheStacksElasticIp",
        "Effect": "Allow",
        "Action": ["ec2:DescribeAddresses"],
        "Resource": "*",  # DescribeAddresses has no resource-level permissions
    }


def move_elastic_ip(allocation_id: pulumi.Input[str], *, region: str, project: str, stack: str) -> list[dict]:
    """What keepalived's takeover script needs, and no more: find the stack's Elastic IP, and
    associate exactly that address with one of this stack's load balancers."""
    identity = aws.get_caller_identity_output()
    partition = aws.get_partition_output().partition
    arn = lambda kind, resource: pulumi.Output.concat(  # noqa: E731
        "arn:", partition, ":ec2:", region, ":", identity.account_id, f":{kind}/", resource
    )
    return [
        find_elastic_ip(),
        {
            "Sid": "MoveTheStacksElasticIpToItself",
            "Effect": "Allow",
            "Action": ["ec2:AssociateAddress"],
            "Resource": [arn("elastic-ip", allocation_id)],
        },
        {
            "Sid": "OntoTheStacksLoadBalancersOnly",
            "Effect": "Allow",
            "Action": ["ec2:AssociateAddress"],
            "Resource": [arn("instance", "*")],
            "Condition": {
                "StringEquals": {
                    "aws:ResourceTag/Project": project,
                    "aws:ResourceTag/Stack": stack,
                    "aws:ResourceTag/Role": "lb",
                }
            },
        },
    ]


@dataclass
class HostRoleArgs:
    description: str
    tags: dict[str, str]
    # IAM policy statements (dicts, may hold Outputs) granted inline; empty means no AWS access.
    statements: list[dict] = field(default_factory=list)


class HostRole(pulumi.ComponentResource):
    role: aws.iam.Role
    instance_profile_name: pulumi.Output[str]

    def __init__(self, name: str, args: HostRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:host_role:HostRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=EC2_ASSUME_ROLE_POLICY,
            description=args.description,
            tags={**args.tags, "Name": f"{name}-role"},
            opts=child,
        )
        if args.statements:
            aws.iam.RolePolicy(
                f"{name}-policy",
                role=self.role.id,
                policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": args.statements}),
                opts=child,
            )
        profile = aws.iam.InstanceProfile(
            f"{name}-profile", role=self.role.name, tags={**args.tags, "Name": f"{name}-profile"}, opts=child
        )
        self.instance_profile_name = profile.name
        self.register_outputs({"role_arn": self.role.arn, "instance_profile_name": self.instance_profile_name})
