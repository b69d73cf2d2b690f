"""BackupBucket under mocks: one bucket per stack, versioned, encrypted, private, TLS only, expiring after
backupRetentionDays; kept by `pulumi destroy` unless deleteBackupsWithStack; the web servers may read and
write their stack's prefix and delete nothing; the load balancers have no access."""

import json

import pytest

from components.backups import bucket_prefix
from lab.mock_cloud import run_program
from settings import PROJECT, Settings, SettingsError

BUCKET = "aws:s3/bucket:Bucket"


def only(run, typ: str):
    (declared,) = run.of_type(f"aws:s3/{typ}")
    return declared


def statements_of(run, role: str) -> list[dict]:
    (policy,) = [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role}-policy"]
    return json.loads(policy.inputs["policy"])["Statement"]


def test_one_private_versioned_encrypted_bucket_per_stack_tagged_for_sweep():
    run = run_program({}, stack="staging")
    bucket = only(run, "bucket:Bucket")
    assert bucket.inputs["bucketPrefix"] == "webinfra-staging-backups-"
    assert bucket.inputs["tags"] == {
        "Project": "webinfra",
        "Stack": "staging",
        "ManagedBy": "pulumi",
        "Role": "backups",
        "Name": "webinfra-staging-backups",
    }
    for typ in (
        "bucketVersioning:BucketVersioning",
        "bucketPublicAccessBlock:BucketPublicAccessBlock",
        "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "bucketOwnershipControls:BucketOwnershipControls",
        "bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "bucketPolicy:BucketPolicy",
    ):
        assert only(run, typ).inputs["bucket"] == bucket.id, typ
    assert only(run, "bucketVersioning:BucketVersioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
    block = only(run, "bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(
        block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    (rule,) = only(run, "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").inputs[
        "rules"
    ]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    assert only(run, "bucketOwnershipControls:BucketOwnershipControls").inputs["rule"] == {
        "objectOwnership": "BucketOwnerEnforced"
    }
    for child in ("backups-bucket", "backups-versioning", "backups-policy", "backups-lifecycle"):
        assert run.options[child]["parent"] == "backups", child


@pytest.mark.parametrize(
    "stack, prefix",
    [
        ("Team_A.prod", "webinfra-team-a-prod-backups-"),
        ("a-very-long-stack-name-for-a-test", "webinfra-a-very-long-stack-name-for-a"),
    ],
)
def test_the_bucket_name_is_one_s3_accepts_whatever_the_stack_is_called(stack, prefix):
    assert bucket_prefix(stack) == prefix and len(prefix) <= 37


def test_every_request_without_tls_and_every_unreadable_upload_is_refused():
    run = run_program({})
    bucket = only(run, "bucket:Bucket")
    statement, storage_class, customer_key = json.loads(only(run, "bucketPolicy:BucketPolicy").inputs["policy"])[
        "Statement"
    ]
    objects = bucket.outputs["arn"] + "/*"
    # a restore must be able to read every backup back: no Glacier class, no key only the uploader has
    assert storage_class == {
        "Sid": "RefuseUploadsInAnotherStorageClass",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": objects,
        "Condition": {
            "Null": {"s3:x-amz-storage-class": "false"},
            "StringNotEquals": {"s3:x-amz-storage-class": "STANDARD"},
        },
    }
    assert customer_key == {
        "Sid": "RefuseUploadsEncryptedWithTheUploadersKey",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": objects,
        "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}},
    }
    assert statement == {
        "Sid": "RefuseRequestsWithoutTls",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket.outputs["arn"], bucket.outputs["arn"] + "/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


@pytest.mark.parametrize("days", [1, 14, 3650])
def test_backups_expire_after_the_window_a_restore_needs_and_replaced_versions_after_a_week(days):
    run = run_program({"backupRetentionDays": str(days)})
    expiring, markers = only(run, "bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert expiring["status"] == "Enabled" and expiring["filter"] == {"prefix": ""}
    # the full backup from before the window's start, and every binary log since, outlive the window
    assert expiring["expiration"] == {"days": days + 2}
    assert expiring["noncurrentVersionExpiration"] == {"noncurrentDays": 7}
    assert expiring["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    assert markers["expiration"] == {"expiredObjectDeleteMarker": True}
    assert "backups-versioning" in [d._name for d in run.options["backups-lifecycle"]["depends_on"]]


@pytest.mark.parametrize("value", ["0", "3651", "two weeks"])
def test_a_retention_outside_1_to_3650_days_is_refused_naming_the_setting(value):
    with pytest.raises(SettingsError, match=f"{PROJECT}:backupRetentionDays"):
        Settings.from_mapping({"backupRetentionDays": value}, stack="dev", region="eu-west-1")


def test_destroy_keeps_the_bucket_and_its_backups_unless_the_stack_says_otherwise():
    kept = run_program({})
    pieces = [name for name, options in kept.options.items() if options["parent"] == "backups"]
    assert len(pieces) == 7, pieces  # the bucket and its six settings
    # the settings too: a kept bucket without its policy or lifecycle would take plain HTTP and keep all
    assert all(kept.options[name]["retain_on_delete"] is True for name in pieces)
    assert only(kept, "bucket:Bucket").inputs.get("forceDestroy") is False
    deleted = run_program({"deleteBackupsWithStack": "true"})
    assert all(deleted.options[name]["retain_on_delete"] is False for name in pieces)
    assert only(deleted, "bucket:Bucket").inputs["forceDestroy"] is True


def test_web_servers_read_and_write_their_stacks_prefix_and_delete_nothing_load_balancers_nothing():
    run = run_program({}, stack="staging")
    arn = only(run, "bucket:Bucket").outputs["arn"]
    web = [s for s in statements_of(run, "web-host") if any(a.startswith("s3:") for a in s["Action"])]
    assert web == [
        {
            "Sid": "ListOwnStacksBackups",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [arn],
            "Condition": {"StringLike": {"s3:prefix": ["staging/*"]}},
        },
        {
            "Sid": "ReadOwnStacksBackups",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"{arn}/staging/*"],
        },
        {
            "Sid": "WriteOwnStacksBackups",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [f"{arn}/staging/*"],
        },
    ]
    assert not any("Delete" in action for s in web for action in s["Action"])
    lb = [s for s in statements_of(run, "lb-host") if any(a.startswith("s3:") for a in s["Action"])]
    assert lb == []


def test_another_stacks_roles_cannot_name_this_stacks_bucket():
    """Each stack's bucket is its own (a name S3 makes unique): no statement of stack B names stack A's."""
    a, b = run_program({}, stack="a"), run_program({}, stack="b")
    bucket_a = only(a, "bucket:Bucket").outputs["arn"]
    assert only(b, "bucket:Bucket").outputs["arn"] != bucket_a
    for role in ("web-host", "lb-host"):
        assert bucket_a not in json.dumps(statements_of(b, role))


def test_the_bucket_is_a_stack_output():
    run = run_program({})
    assert run.exports["backup_bucket"] == only(run, "bucket:Bucket").outputs["bucket"]
