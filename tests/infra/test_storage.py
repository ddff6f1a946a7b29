"""Storage construct: every bucket private, TLS-only, encrypted and logged; the lifecycle rules
from context; versioning on the registry; EventBridge notifications on the raw bucket."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.infra.template_helpers import as_list, logical_id

BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


@pytest.fixture(scope="module")
def template(core: Any) -> Template:
    return core.template


@pytest.fixture(scope="module")
def buckets(core: Any) -> dict[str, Any]:
    storage = core.storage
    return {
        "raw": storage.raw_bucket,
        "curated": storage.curated_bucket,
        "registry": storage.registry_bucket,
        "access-logs": storage.access_log_bucket,
    }


def bucket_properties(template: Template, bucket: Any) -> dict[str, Any]:
    return template.to_json()["Resources"][logical_id(bucket)]["Properties"]


def test_there_are_exactly_the_four_buckets(template: Template) -> None:
    template.resource_count_is("AWS::S3::Bucket", 4)


@pytest.mark.parametrize("name", ["raw", "curated", "registry", "access-logs"])
def test_every_bucket_is_private_and_encrypted(
    template: Template, buckets: dict[str, Any], name: str
) -> None:
    props = bucket_properties(template, buckets[name])
    assert props["PublicAccessBlockConfiguration"] == BLOCK_ALL
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")


@pytest.mark.parametrize("name", ["raw", "curated", "registry", "access-logs"])
def test_every_bucket_policy_denies_plain_http(
    template: Template, buckets: dict[str, Any], name: str
) -> None:
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logical_id(buckets[name])},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


@pytest.mark.parametrize("name", ["raw", "curated", "registry"])
def test_data_buckets_log_access_to_the_log_bucket(
    template: Template, buckets: dict[str, Any], name: str
) -> None:
    props = bucket_properties(template, buckets[name])
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": logical_id(buckets["access-logs"])
    }


def test_access_logs_are_delivered_by_bucket_policy_not_acl(
    template: Template, buckets: dict[str, Any]
) -> None:
    props = bucket_properties(template, buckets["access-logs"])
    assert "AccessControl" not in props
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logical_id(buckets["access-logs"])},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                            }
                        )
                    ]
                )
            },
        },
    )


def test_only_the_registry_is_versioned(template: Template, buckets: dict[str, Any]) -> None:
    for name, bucket in buckets.items():
        status = (
            bucket_properties(template, bucket).get("VersioningConfiguration", {}).get("Status")
        )
        assert (status == "Enabled") == (name == "registry"), name


def test_raw_bucket_sends_events_to_eventbridge(
    template: Template, buckets: dict[str, Any]
) -> None:
    props = bucket_properties(template, buckets["raw"])
    assert props["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    # Set natively: no notifications custom-resource Lambda is needed for it.
    template.resource_count_is("Custom::S3BucketNotifications", 0)


def rules_by_id(template: Template, bucket: Any) -> dict[str, dict[str, Any]]:
    props = bucket_properties(template, bucket)
    return {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}


def test_raw_lifecycle_expires_incoming_and_failed_files(core: Any, buckets: dict) -> None:
    settings = core.storage.settings
    rules = rules_by_id(core.template, buckets["raw"])
    assert rules["expire-incoming"]["Prefix"] == "incoming/"
    assert rules["expire-incoming"]["ExpirationInDays"] == settings.incoming_expiration_days
    assert rules["expire-failed"]["Prefix"] == "failed/"
    assert rules["expire-failed"]["ExpirationInDays"] == settings.failed_expiration_days
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }


def test_curated_lifecycle_covers_quarantine_snapshots_and_predictions(
    core: Any, buckets: dict
) -> None:
    settings = core.storage.settings
    rules = rules_by_id(core.template, buckets["curated"])
    expected = {
        "quarantine/": settings.quarantine_expiration_days,
        "snapshots/": settings.snapshot_expiration_days,
        "predictions/": settings.prediction_expiration_days,
    }
    expiring = {
        r["Prefix"]: r["ExpirationInDays"] for r in rules.values() if "ExpirationInDays" in r
    }
    assert expiring == expected
    ia = rules["curated-to-infrequent-access"]
    assert ia["Prefix"] == "curated/"
    assert as_list(ia["Transitions"])[0] == {
        "StorageClass": "STANDARD_IA",
        "TransitionInDays": settings.infrequent_access_after_days,
    }


def test_registry_keeps_old_pointer_copies_for_the_configured_days(
    core: Any, buckets: dict
) -> None:
    rules = rules_by_id(core.template, buckets["registry"])
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": core.storage.settings.registry_noncurrent_expiration_days
    }
    # Current objects (model versions, history) never expire.
    assert not any("ExpirationInDays" in r for r in rules.values())


def test_dev_buckets_are_destroyed_with_the_stack(core: Any, buckets: dict) -> None:
    assert core.storage.settings.removal_policy == "destroy"
    resources = core.template.to_json()["Resources"]
    for bucket in buckets.values():
        assert resources[logical_id(bucket)]["DeletionPolicy"] == "Delete"
