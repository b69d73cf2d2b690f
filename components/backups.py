"""BackupBucket: the S3 bucket that holds the stack's database backups (full copies and binary logs).

One bucket per stack, so no policy of another stack can name it. Versioned (an object overwritten, by
mistake or by an attacker with a host's role, is kept as a previous version), encrypted at rest with
S3-managed keys (SSE-S3: no key to pay for or to lose), public access blocked, ACLs disabled, and a
bucket policy that refuses every request not made over TLS, and uploads in another storage class
or with a key of the uploader's (SSE-C), which a restore could not read back without. Objects expire
`retention_days` + 2 days after they were written: a full backup older than the window's start, and
every binary log since, are still there, so a restore reaches back `retention_days` (S3 counts expiry
from the next midnight UTC, and full backups come once a day). A version replaced or expired is kept
NONCURRENT_DAYS more (an overwritten backup can be recovered by a person meanwhile); unfinished uploads
go after a day.

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


# Days past `retention_days` every object is kept: the full backup from before the window's start (one a
# day) and the day S3 rounds expiry up to.
WINDOW_MARGIN_DAYS = 2
# Days a replaced or expired version is kept: enough for a person, alerted, to recover an overwritten
# backup; short, so that expiry does not keep every backup twice as long.
NONCURRENT_DAYS = 7


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
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        days=args.retention_days + WINDOW_MARGIN_DAYS
                    ),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=NONCURRENT_DAYS
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
            # Its noncurrent-version rule is about the versions this bucket keeps: after versioning is on.
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
                        },
                        {
                            # Glacier classes cannot be read without a restore request, and bill 90-180 days.
                            "Sid": "RefuseUploadsInAnotherStorageClass",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:PutObject",
                            "Resource": pulumi.Output.concat(bucket.arn, "/*"),
                            "Condition": {
                                "Null": {"s3:x-amz-storage-class": "false"},
                                "StringNotEquals": {"s3:x-amz-storage-class": "STANDARD"},
                            },
                        },
                        {
                            "Sid": "RefuseUploadsEncryptedWithTheUploadersKey",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:PutObject",
                            "Resource": pulumi.Output.concat(bucket.arn, "/*"),
                            "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}},
                        },
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
