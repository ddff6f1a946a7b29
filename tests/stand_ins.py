"""The stack a flow construct (Ingestion, Retrain) is built in for a test: the real Storage, Alerts
and Database constructs with small test settings, so the construct under test is wired exactly
as in the app (bucket names, topic key, database secret and Glue connection)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Stack

from stacks.alerts import Alerts, AlertsSettings
from stacks.database import Database, DatabaseSettings
from stacks.platform import Platform
from stacks.storage import Storage, StorageSettings

ACCOUNT = "123456789012"
REGION = "us-east-1"


@dataclass(frozen=True)
class Host:
    storage: Storage
    alerts: Alerts
    database: Database
    platform: Platform  # what the stack hands a flow construct, built from the three above


def stand_in_storage(stack: Stack) -> Storage:
    """The real Storage construct with short, test-sized lifecycle settings."""
    return Storage(
        stack,
        "Storage",
        settings=StorageSettings(
            removal_policy="destroy",
            incoming_expiration_days=30,
            failed_expiration_days=90,
            quarantine_expiration_days=90,
            snapshot_expiration_days=365,
            prediction_expiration_days=180,
            registry_noncurrent_expiration_days=365,
            access_log_expiration_days=365,
            infrequent_access_after_days=90,
        ),
    )


def host_constructs(
    stack: Stack,
    *,
    name_prefix: str,
    topic_name: str,
    interface_endpoints: tuple[str, ...],
    database_name: str = "churnops",
) -> Host:
    """Storage, Alerts (topic `topic_name`) and a small Database (`name_prefix`, with the VPC
    interface endpoints the construct under test needs) in `stack`, and their `Platform` (which
    adds the churnops package asset)."""
    storage = stand_in_storage(stack)
    alerts = Alerts(
        stack,
        "Alerts",
        settings=AlertsSettings(topic_name=topic_name, alert_email="", removal_policy="destroy"),
    )
    database = Database(
        stack,
        "Database",
        settings=DatabaseSettings(
            name_prefix=name_prefix,
            engine="mariadb",
            engine_version="10.11",
            instance_type="t4g.micro",
            allocated_storage_gb=20,
            max_allocated_storage_gb=40,
            port=3306,
            database_name=database_name,
            admin_username="churnops_admin",
            multi_az=False,
            backup_retention_days=7,
            deletion_protection=False,
            removal_policy="destroy",
            rotation_days=30,
            vpc_cidr="10.40.0.0/16",
            max_azs=2,
            interface_endpoints=interface_endpoints,
            log_retention_days=30,
        ),
    )
    platform = Platform.build(stack, storage=storage, alerts=alerts, database=database)
    return Host(storage=storage, alerts=alerts, database=database, platform=platform)


def synth_keeping_nag_failure(stack: Stack) -> str | None:
    """Synthesize the stack's app with its validation plugins (cdk-nag). A finding makes the
    synthesis raise; return that error (the template and report are still written) instead, so
    one test can assert on it while the others read the template."""
    try:
        stack.node.root.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err):
            raise
        return str(err)
    return None
