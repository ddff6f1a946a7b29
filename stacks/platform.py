"""What the flow constructs share: created once by the composing stack and handed to each flow
as one bundle, so a construct's signature names its own settings and this, not the same six
resources again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.assets import churnops_package_asset

if TYPE_CHECKING:
    from stacks.alerts import Alerts
    from stacks.database import Database
    from stacks.storage import Storage


@dataclass(frozen=True)
class Platform:
    """The buckets, the database, the alert topic and the churnops package asset (Glue's
    `--extra-py-files`)."""

    raw_bucket: s3.IBucket
    curated_bucket: s3.IBucket
    registry_bucket: s3.IBucket
    database: Database
    alert_topic: sns.ITopic
    package: s3_assets.Asset

    @classmethod
    def build(
        cls, scope: Construct, *, storage: Storage, alerts: Alerts, database: Database
    ) -> Platform:
        """The bundle of these constructs' resources, with the package asset added to `scope`."""
        return cls(
            raw_bucket=storage.raw_bucket,
            curated_bucket=storage.curated_bucket,
            registry_bucket=storage.registry_bucket,
            database=database,
            alert_topic=alerts.topic,
            package=churnops_package_asset(scope),
        )
