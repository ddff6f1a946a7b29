"""Alerts: the one SNS topic every failure, alarm and promotion notice goes to."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.database import removal_without_snapshot

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class AlertsSettings:
    topic_name: str
    alert_email: str  # "" means no subscription; subscribe later in the console or CLI
    removal_policy: str  # of the topic's KMS key: "destroy" (dev) or "retain" (prod)

    def __post_init__(self) -> None:
        if self.alert_email and not _EMAIL.match(self.alert_email):
            raise ValueError(f"alert_email '{self.alert_email}' is not an e-mail address")


class Alerts(Construct):
    def __init__(self, scope: Construct, id: str, *, settings: AlertsSettings) -> None:
        super().__init__(scope, id)
        # A customer-managed key, not the AWS-managed alias/aws/sns: CloudWatch alarms and
        # EventBridge can publish to an encrypted topic only when the key policy lets their
        # service principals use the key, and an AWS-managed key policy cannot be changed.
        self.key = kms.Key(
            self,
            "TopicKey",
            description="Encrypts the ChurnOps alert topic",
            enable_key_rotation=True,
            pending_window=Duration.days(7),
            removal_policy=removal_without_snapshot(settings.removal_policy),
        )
        for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=f"Allow{service.split('.')[0].capitalize()}ToPublish",
                    principals=[iam.ServicePrincipal(service)],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],  # in a key policy "*" means this key
                )
            )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=settings.topic_name,
            display_name="ChurnOps alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        # A topic policy replaces SNS's default one (enforce_ssl alone creates a policy), and the
        # default was what let CloudWatch alarms of this account publish: say so explicitly.
        # EventBridge rule targets add their own statement (CDK's SnsTopic target).
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )
        if settings.alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alert_email))
