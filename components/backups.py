"""BackupBucket: the S3 bucket that holds the stack's database backups (full copies and binary logs).

One bucket per stack, so no policy of another stack can name it. Versioned (an object overwritten, by
mistake or by an attacker with a host's role, is kept as a previous version), encrypted at rest with
S3-managed keys (SSE-S3: no key to pay for or to lose), public access blocked, ACLs disabled, and a
bucket policy that refuses every request not made over TLS. Objects expire `retention_days` after
they were written, previous versions `retention_days` after they were replaced; unfinished uploads
after a day.

`pulumi destroy` keeps the bucket and everything in it by default (retain_on_delete): backups exist
for the day the stack is gone. A stack created with `delete_with_stack` (a lab's) is removed with all
its objects (force_destroy). The hosts' roles get `writer_statements` / `reader_statements`: their
stack's prefix only, and never a delete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


def bucket_prefix(stack: str) -> str:
    """S3 names are global: the provider appends a unique suffix to this prefix, which may hold only
    lowercase letters, digits and hyphens here (a stack name may also hold capitals, `_` and `.`) and
    at most 37 characters."""
    return f"webinfra-{re.sub(r'[^a-z0-9-]+', '-', stack.lower())}-backups-"[:37]


@dataclass
class BackupBucketArgs:
    stack: str
    retention_days: int
    delete_with_stack: bool
    tags: dict[str, str]


class BackupBucket(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    prefix: str  # every backup of the stack is under it ("<stack>/")

    def __init__(self, name: str, args: BackupBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:backups:BackupBucket", name, None, opts)
        # Kept by `pulumi destroy` unless the stack says otherwise: the bucket, and its settings with it (a
        # kept bucket whose policy, lifecycle and public-access block were deleted would be open to
        # plain HTTP and never expire anything).
        keep = not args.delete_with_stack
        child = pulumi.ResourceOptions(parent=self, retain_on_delete=keep)
        self.prefix = f"{args.stack}/"
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket_prefix=bucket_prefix(args.stack),
            force_destroy=args.delete_with_stack,
            tags={**args.tags, "Role": "backups", "Name": f"webinfra-{args.stack}-backups"},
            opts=child,
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                )
            ],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-after-retention",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args.retention_days),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.retention_days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=1
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="remove-expired-delete-markers",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(expired_object_delete_marker=True),
                ),
            ],
            # S3 refuses a lifecycle configuration with noncurrent-version rules before versioning is on.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[versioning])),
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "RefuseRequestsWithoutTls",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                }
            ),
            # With BlockPublicPolicy on, S3 checks every policy put afterwards: this one grants nothing.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[public_access])),
        )
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "prefix": self.prefix})

    def writer_statements(self) -> list[dict]:
        """What a host that makes backups needs: list and read its stack's prefix (to know what is
        there, and to restore), and write objects under it. No delete of any kind, no other prefix."""
        objects = pulumi.Output.concat(self.bucket_arn, "/", self.prefix, "*")
        return [
            *self.reader_statements(),
            {
                "Sid": "WriteOwnStacksBackups",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": [objects],
            },
        ]

    def reader_statements(self) -> list[dict]:
        """List and read the stack's prefix, nothing else of the bucket."""
        return [
            {
                "Sid": "ListOwnStacksBackups",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [self.bucket_arn],
                "Condition": {"StringLike": {"s3:prefix": [f"{self.prefix}*"]}},
            },
            {
                "Sid": "ReadOwnStacksBackups",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [pulumi.Output.concat(self.bucket_arn, "/", self.prefix, "*")],
            },
        ]
