"""Synthesized templates shared by the infra tier (jsii synthesis is slow: build each once).

- `core`: the INFRA constructs (Storage, Alerts, Database, Serving, Monitoring) in one test stack,
  with settings read from cdk.json and small stand-ins for the state machines and Glue jobs other
  constructs own. Construct tests assert on it, so they do not depend on other modules' progress.
- `churnops`: the real app exactly as `cdk synth` builds it (app.py + cdk.json context), for the
  composition, IAM, cdk-nag and CLI tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template

from tests.infra.template_helpers import cdk_json_context, settings_from_cdk_json


@dataclass
class Core:
    app: App
    stack: Stack
    template: Template
    storage: Any
    alerts: Any
    database: Any
    serving: Any
    monitoring: Any
    stand_in_machines: dict[str, sfn.StateMachine]
    glue_job_names: dict[str, str]


@pytest.fixture(scope="session")
def core(tmp_path_factory: pytest.TempPathFactory) -> Core:
    from churnops.wiring import REGISTRY_PREFIX
    from stacks.alerts import Alerts, AlertsSettings
    from stacks.database import Database, DatabaseSettings
    from stacks.monitoring import Monitoring, MonitoringSettings
    from stacks.serving import Serving, ServingSettings
    from stacks.storage import Storage, StorageSettings, grant_object_read

    flags = {k: v for k, v in cdk_json_context().items() if k.startswith("@aws-cdk/")}
    app = App(context=flags, outdir=str(tmp_path_factory.mktemp("core-cdk-out")))
    stack = Stack(app, "CoreTest")
    storage = Storage(stack, "Storage", settings=settings_from_cdk_json(StorageSettings, "storage"))
    alerts = Alerts(stack, "Alerts", settings=settings_from_cdk_json(AlertsSettings, "alerts"))
    database = Database(
        stack, "Database", settings=settings_from_cdk_json(DatabaseSettings, "database")
    )
    serving = Serving(
        stack,
        "Serving",
        settings=settings_from_cdk_json(ServingSettings, "serving"),
        registry_bucket=storage.registry_bucket,
    )
    grant_object_read(storage.registry_bucket, serving.function, REGISTRY_PREFIX)
    # Stand-ins for what the Ingestion and Retrain constructs expose to Monitoring.
    machines = {
        name: sfn.StateMachine(
            stack,
            f"StandIn{name.title()}",
            definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, f"Pass{name}")),
        )
        for name in ("ingest", "retrain")
    }
    glue_job_names = {"ingest": "stand-in-ingest-job", "batch-score": "stand-in-score-job"}
    monitoring = Monitoring(
        stack,
        "Monitoring",
        settings=settings_from_cdk_json(MonitoringSettings, "monitoring"),
        alert_topic=alerts.topic,
        api=serving.api,
        functions={"serving": serving.function},
        state_machines=machines,
        glue_job_names=glue_job_names,
        retrain_state_machine=machines["retrain"],
    )
    return Core(
        app=app,
        stack=stack,
        template=Template.from_stack(stack),
        storage=storage,
        alerts=alerts,
        database=database,
        serving=serving,
        monitoring=monitoring,
        stand_in_machines=machines,
        glue_job_names=glue_job_names,
    )


@dataclass
class Synthesized:
    app: App
    stack: Any  # stacks.churnops_stack.ChurnOpsStack
    template: Template


def synthesize_app(outdir: str, **context: Any) -> Synthesized:
    """The real app with cdk.json's context (plus overrides), cdk-nag left out: the tests run the
    pack on the same tree themselves, so one open finding does not hide every other result."""
    from app import build

    app = App(context={**cdk_json_context(), **context}, outdir=outdir)
    stack = build(app, nag=False)
    return Synthesized(app=app, stack=stack, template=Template.from_stack(stack))


@pytest.fixture(scope="session")
def churnops(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize_app(str(tmp_path_factory.mktemp("app-cdk-out")))


@pytest.fixture(scope="session")
def churnops_prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize_app(str(tmp_path_factory.mktemp("prod-cdk-out")), environment="prod")
