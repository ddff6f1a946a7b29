"""Storage: the raw, curated, registry and access-log buckets, and least-privilege object grants.

Every bucket blocks public access, refuses plain HTTP, is encrypted at rest and logs access to
the access-log bucket. Prefixes, not extra buckets, separate data of one lifecycle class:
raw holds `incoming/` (uploads) and `failed/` (files that could not be read); curated holds
`curated/`, `quarantine/`, `snapshots/` and `predictions/` (the prefixes: `churnops.wiring`).

The `grant_*` helpers are the one way stacks/ grants S3: exact actions on exact prefixes (or,
for deployment assets, on exactly one object). CDK's `bucket.grant_read` grants
`s3:GetObject*`, `s3:GetBucket*` and `s3:List*` on the whole bucket, which is more than any of our
functions uses; the IAM scan in tests/infra rejects wildcard actions on data resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, CfnElement, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from churnops import wiring

if TYPE_CHECKING:
    from stacks.assets import GlueDependencies


@dataclass(frozen=True)
class StorageSettings:
    removal_policy: str  # "destroy" (dev: buckets emptied and deleted) or "retain" (prod)
    incoming_expiration_days: int  # uploaded files are ingested within minutes; keep for replay
    failed_expiration_days: int  # unreadable uploads, kept for a human to look at
    quarantine_expiration_days: int  # rejected rows with their reasons
    snapshot_expiration_days: int  # training snapshots (reproducibility of old versions)
    prediction_expiration_days: int  # batch-scoring outputs, one partition per day
    registry_noncurrent_expiration_days: (
        int  # old copies of champion.json (history/ keeps decisions)
    )
    access_log_expiration_days: int
    infrequent_access_after_days: int  # curated Parquet moves to S3 Standard-IA after this


class Storage(Construct):
    """The buckets of the system; the composing stack grants access to them."""

    def __init__(self, scope: Construct, id: str, *, settings: StorageSettings) -> None:
        super().__init__(scope, id)
        self.settings = settings
        destroy = settings.removal_policy == "destroy"

        def bucket(name: str, **kwargs: object) -> s3.Bucket:
            return s3.Bucket(
                self,
                name,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                encryption=s3.BucketEncryption.S3_MANAGED,
                enforce_ssl=True,
                minimum_tls_version=1.2,
                removal_policy=RemovalPolicy.DESTROY if destroy else RemovalPolicy.RETAIN,
                auto_delete_objects=destroy,
                **kwargs,  # type: ignore[arg-type]
            )

        abort_uploads = s3.LifecycleRule(
            id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
        )

        def expire(rule_id: str, prefix: str, days: int) -> s3.LifecycleRule:
            return s3.LifecycleRule(id=rule_id, prefix=prefix, expiration=Duration.days(days))

        # Server access logs need SSE-S3 on the target bucket (SSE-KMS is not supported there);
        # delivery is allowed by a bucket policy (cdk.json feature flag), not by an ACL.
        self.access_log_bucket = bucket(
            "AccessLogs",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(settings.access_log_expiration_days),
                )
            ],
        )
        # It logs nowhere itself (into itself would log its own deliveries without end); cdk-nag's
        # S1 already counts a bucket other buckets log into as compliant, so there is no finding
        # to acknowledge (tests/infra/test_acknowledgements.py fails on one that matches nothing).

        def logged_bucket(name: str, **kwargs: object) -> s3.Bucket:
            return bucket(
                name,
                server_access_logs_bucket=self.access_log_bucket,
                server_access_logs_prefix=f"{name.lower()}/",
                **kwargs,
            )

        self.raw_bucket = logged_bucket(
            "Raw",
            lifecycle_rules=[
                abort_uploads,
                expire(
                    "expire-incoming", wiring.INCOMING_PREFIX, settings.incoming_expiration_days
                ),
                expire("expire-failed", wiring.FAILED_PREFIX, settings.failed_expiration_days),
            ],
        )
        # EventBridge notifications let a rule match uploads by key prefix and suffix, without a
        # notification configuration per consumer. Set on the bucket resource itself:
        # `event_bridge_enabled=True` would add CDK's notifications custom-resource Lambda (with
        # an AWS-managed policy) for a setting CloudFormation supports natively.
        raw_resource = self.raw_bucket.node.default_child
        assert isinstance(raw_resource, s3.CfnBucket)
        raw_resource.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )
        self.curated_bucket = logged_bucket(
            "Curated",
            lifecycle_rules=[
                abort_uploads,
                s3.LifecycleRule(
                    id="curated-to-infrequent-access",
                    prefix=wiring.CURATED_PREFIX,
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=Duration.days(settings.infrequent_access_after_days),
                        )
                    ],
                ),
                expire(
                    "expire-quarantine",
                    wiring.QUARANTINE_PREFIX,
                    settings.quarantine_expiration_days,
                ),
                expire(
                    "expire-snapshots", wiring.SNAPSHOTS_PREFIX, settings.snapshot_expiration_days
                ),
                expire(
                    "expire-predictions",
                    wiring.PREDICTIONS_PREFIX,
                    settings.prediction_expiration_days,
                ),
            ],
        )
        # Versioned: a model version is written once, and an overwritten champion pointer keeps its
        # earlier copies for the retention below (the decisions themselves live in history/).
        self.registry_bucket = logged_bucket(
            "Registry",
            versioned=True,
            lifecycle_rules=[
                abort_uploads,
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(
                        settings.registry_noncurrent_expiration_days
                    ),
                ),
            ],
        )

    @property
    def registry_uri(self) -> str:
        return wiring.registry_uri(self.registry_bucket.bucket_name)


def _object_arns(
    bucket: s3.IBucket, grantee: iam.IGrantable, prefixes: tuple[str, ...]
) -> list[str]:
    """ARNs of the objects under each prefix, and the cdk-nag acknowledgment that goes with them.

    Object keys under a prefix are made at run time (version ids, dates, uploaded file names), so
    `<bucket>/<prefix>/*` is the narrowest resource that works; cdk-nag flags every `*` in a
    resource (AwsSolutions-IAM5), and the reason is the same wherever this helper is used.
    """
    if not prefixes:
        raise ValueError("name at least one key prefix: whole-bucket grants are not allowed")
    keys = [p.strip("/") for p in prefixes]
    principal = grantee.grant_principal
    bucket_resource = bucket.node.default_child
    if isinstance(principal, Construct) and isinstance(bucket_resource, CfnElement):
        logical_id = Stack.of(bucket_resource).resolve(bucket_resource.logical_id)
        Validations.of(principal).acknowledge(
            *(
                Acknowledgment(
                    id=f"AwsSolutions::AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{key}/*]",
                    # One reason whatever the action: a role that reads and writes a prefix
                    # acknowledges the same finding twice, and either reason must be true.
                    reason=f"Objects under '{key}/' only: their keys are created at run time, so "
                    "the prefix is the narrowest resource that can be named.",
                )
                for key in keys
            )
        )
    return [bucket.arn_for_objects(f"{key}/*") for key in keys]


def grant_object_read(bucket: s3.IBucket, grantee: iam.IGrantable, *prefixes: str) -> None:
    """GetObject (also what HeadObject needs) under the prefixes, plus listing those prefixes:
    without ListBucket S3 answers a missing key with 403 instead of 404."""
    grant_object_get(bucket, grantee, *prefixes)
    grant_list(bucket, grantee, *prefixes)


def grant_object_get(bucket: s3.IBucket, grantee: iam.IGrantable, *prefixes: str) -> None:
    """GetObject under the prefixes, without listing: for a reader that only opens keys it was
    handed (a retrain step reading the snapshot the snapshot step wrote)."""
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:GetObject"],
        resource_arns=_object_arns(bucket, grantee, prefixes),
    )


def grant_object_write(bucket: s3.IBucket, grantee: iam.IGrantable, *prefixes: str) -> None:
    """PutObject under the prefixes (conditional writes with If-Match/If-None-Match included)."""
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:PutObject"],
        resource_arns=_object_arns(bucket, grantee, prefixes),
    )


def grant_object_delete(bucket: s3.IBucket, grantee: iam.IGrantable, *prefixes: str) -> None:
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:DeleteObject"],
        resource_arns=_object_arns(bucket, grantee, prefixes),
    )


def grant_list(bucket: s3.IBucket, grantee: iam.IGrantable, *prefixes: str) -> None:
    """ListBucket restricted to keys under the prefixes."""
    if not prefixes:
        raise ValueError("name at least one key prefix: whole-bucket listing is not allowed")
    keys = sorted({p.rstrip("/") for p in prefixes})
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:ListBucket"],
        resource_arns=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [*keys, *(f"{k}/*" for k in keys)]}},
    )


def grant_asset_read(asset: s3_assets.Asset | GlueDependencies, grantee: iam.IGrantable) -> None:
    """GetObject on exactly one deployment asset's object (a Glue script, the churnops package,
    a zip of wheels) in the CDK assets bucket: no prefix, no listing."""
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["s3:GetObject"],
        resource_arns=[asset.bucket.arn_for_objects(asset.s3_object_key)],
    )
