"""The one ChurnOps stack: composes the constructs, wires them together and grants access.

Each construct owns one concern and takes the resources it needs as typed keyword props; what
crosses construct boundaries (the buckets, the database, the alert topic, the churnops package
asset) is created once here and handed to the flows as one `Platform` (stacks/platform.py).
Grants that belong to no single construct (the serving function reading the registry) are made
here with exact actions on exact prefixes.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from churnops import wiring
from stacks.alerts import Alerts
from stacks.config import Config
from stacks.database import Database
from stacks.ingestion import Ingestion
from stacks.monitoring import Monitoring
from stacks.platform import Platform
from stacks.retrain import Retrain
from stacks.serving import Serving
from stacks.storage import Storage, grant_object_read


class ChurnOpsStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: Config, **kwargs: Any) -> None:
        super().__init__(
            scope,
            id,
            description=f"ChurnOps ({config.environment}): event-driven churn prediction",
            **kwargs,
        )
        self.config = config
        self.storage = Storage(self, "Storage", settings=config.storage)
        self.alerts = Alerts(self, "Alerts", settings=config.alerts)
        self.database = Database(self, "Database", settings=config.database)
        platform = Platform.build(
            self, storage=self.storage, alerts=self.alerts, database=self.database
        )

        self.ingestion = Ingestion(self, "Ingestion", settings=config.ingestion, platform=platform)
        self.retrain = Retrain(
            self, "Retrain", settings=config.retrain, platform=platform, rollout=config.rollout
        )
        self.serving = Serving(
            self,
            "Serving",
            settings=config.serving,
            registry_bucket=self.storage.registry_bucket,
            rollout_comparison_window=config.rollout.comparison_window,
        )
        # Serving only reads: the champion pointer, cards and ONNX models under the registry root.
        grant_object_read(
            self.storage.registry_bucket, self.serving.function, wiring.REGISTRY_PREFIX
        )

        self.monitoring = Monitoring(
            self,
            "Monitoring",
            settings=config.monitoring,
            alert_topic=self.alerts.topic,
            api=self.serving.api,
            functions={
                "serving": self.serving.function,
                **{f"retrain-{name}": fn for name, fn in self.retrain.functions.items()},
            },
            state_machines={
                "ingest": self.ingestion.state_machine,
                "retrain": self.retrain.state_machine,
                "rollout": self.retrain.rollout_state_machine,
            },
            glue_job_names={
                "ingest": self.ingestion.job.ref,
                "batch-score": self.retrain.batch_score_job.ref,
            },
            retrain_state_machine=self.retrain.state_machine,
        )
        self._outputs()

    def _outputs(self) -> None:
        """What a user needs after `cdk deploy` (docs/deploy.md uses these names)."""
        outputs = {
            "RawBucketName": self.storage.raw_bucket.bucket_name,
            "CuratedBucketName": self.storage.curated_bucket.bucket_name,
            "RegistryUri": self.storage.registry_uri,
            "ApiUrl": self.serving.api.url,
            "ApiKeyId": self.serving.api_key.key_id,
            # The Resource of an IAM policy allowing execute-api:Invoke on this stage (what a
            # caller needs with serving.authorization=iam).
            "ApiInvokeArn": self.serving.api.arn_for_execute_api(
                stage=self.serving.stage.stage_name
            ),
            "AlertTopicArn": self.alerts.topic.topic_arn,
            "DatabaseSecretArn": self.database.secret.secret_arn,
            "IngestStateMachineArn": self.ingestion.state_machine.state_machine_arn,
            "RetrainStateMachineArn": self.retrain.state_machine.state_machine_arn,
            "RolloutStateMachineArn": self.retrain.rollout_state_machine.state_machine_arn,
            "DashboardName": self.monitoring.dashboard.dashboard_name,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
