"""The Ingestion construct (stacks/ingestion.py) in a small test stack with the real Storage,
Alerts and Database constructs: the EventBridge rule, the Glue .sync task and its Catch, the Glue
job, least-privilege IAM, and a clean cdk-nag AwsSolutions report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from churnops.wiring import IngestArgs
from stacks.ingestion import Ingestion, IngestionSettings
from tests.stand_ins import ACCOUNT, REGION, host_constructs, synth_keeping_nag_failure

SETTINGS = IngestionSettings(
    name_prefix="ingesttest",
    contract_name="telco",
    removal_policy="destroy",
    log_retention_days=30,
    incoming_prefix="incoming/",
    file_suffix=".csv",
    glue_worker_type="G.1X",
    glue_workers=3,
    glue_timeout_minutes=45,
    max_concurrent_runs=4,
    start_retry_attempts=3,
    staging_method="auto",
    split_mb=0,
)


def build_stack(outdir: str) -> tuple[Stack, Ingestion]:
    app = App(outdir=outdir)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stack = Stack(app, "IngestionTest", env={"account": ACCOUNT, "region": REGION})
    host = host_constructs(
        stack,
        name_prefix=SETTINGS.name_prefix,
        topic_name="ingest-test",
        interface_endpoints=("secretsmanager", "logs", "glue", "sns"),
    )
    ingestion = Ingestion(
        stack,
        "Ingestion",
        settings=SETTINGS,
        platform=host.platform,
    )
    return stack, ingestion


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One synthesis per module with cdk-nag as a validation plugin; a finding fails the
    synthesis (kept as `error`) and its report stays in the output directory."""
    outdir = tmp_path_factory.mktemp("ingest-cdk")
    stack, ingestion = build_stack(str(outdir))
    error = synth_keeping_nag_failure(stack)
    raw = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return {
        "outdir": outdir,
        "template": Template.from_json(raw),
        "raw": raw,
        "error": error,
        "stack": stack,
        "ingestion": ingestion,
    }


@pytest.fixture(scope="module")
def template(synthesized) -> Template:
    return synthesized["template"]


def definition(template: Template) -> dict[str, Any]:
    """The ingest state machine's definition, intrinsic references replaced by placeholders."""
    machines = template.find_resources(
        "AWS::StepFunctions::StateMachine",
        {"Properties": {"StateMachineName": "ingesttest-ingest"}},
    )
    (resource,) = machines.values()
    parts = resource["Properties"]["DefinitionString"]["Fn::Join"][1]

    def render(part: Any) -> str:
        if isinstance(part, str):
            return part
        return "aws" if part == {"Ref": "AWS::Partition"} else "REF"

    return json.loads("".join(render(p) for p in parts))


def statements_of(template: Template, role_prefix: str) -> list[dict[str, Any]]:
    found = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        roles = policy["Properties"]["Roles"]
        if any(r.get("Ref", "").startswith(role_prefix) for r in roles):
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    assert found, f"no policy attached to a role {role_prefix}*"
    return found


# ---- the flow ------------------------------------------------------------------------------------
def test_glue_task_runs_sync_with_bucket_and_key_from_the_event(template: Template) -> None:
    state = definition(template)["States"]["RunIngestJob"]
    assert state["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
    assert state["Parameters"]["Arguments"] == {
        "--source_bucket.$": "$.detail.bucket.name",
        "--source_key.$": "$.detail.object.key",
    }
    assert {
        a.removeprefix("--").removesuffix(".$") for a in state["Parameters"]["Arguments"]
    } == set(IngestArgs.RUN_ARGS)


def test_a_failed_run_marks_the_file_then_alerts_then_fails(template: Template) -> None:
    states = definition(template)["States"]
    assert states["RunIngestJob"]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "MarkFileFailed"}
    ]
    mark = states["MarkFileFailed"]
    assert mark["Resource"] == "arn:aws:states:::aws-sdk:s3:putObjectTagging"
    assert mark["Next"] == "AlertFailure"
    assert mark["Catch"][0]["Next"] == "AlertFailure"  # a moved file cannot be tagged: still alert
    alert = states["AlertFailure"]
    assert alert["Resource"] == "arn:aws:states:::sns:publish"
    assert states[alert["Next"]]["Type"] == "Fail"
    # Glue refusing a run for capacity or throttling is retried (named as Step Functions reports
    # them, tests/infra/test_error_names.py); everything else goes to the alert at once.
    (retry,) = states["RunIngestJob"]["Retry"]
    assert set(retry["ErrorEquals"]) == {
        "Glue.ConcurrentRunsExceededException",
        "Glue.AWSGlueException",
    }
    assert retry["MaxAttempts"] == SETTINGS.start_retry_attempts


def test_state_machine_is_standard_with_logging_and_tracing(template: Template) -> None:
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineName": "ingesttest-ingest",
            "StateMachineType": "STANDARD",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL"}),
        },
    )


def test_rule_matches_csv_uploads_under_incoming_of_the_raw_bucket(template: Template) -> None:
    (rule,) = template.find_resources("AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"] == {"key": [{"wildcard": "incoming/*.csv"}]}
    (bucket_name,) = pattern["detail"]["bucket"]["name"]
    raw_bucket_id = bucket_name["Ref"]
    assert raw_bucket_id.startswith("StorageRaw")
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"]["Ref"].startswith("IngestionStateMachine")
    assert "DeadLetterConfig" in target and "RetryPolicy" in target


# ---- the job -------------------------------------------------------------------------------------
def test_glue_job_is_glue_5_in_the_vpc_with_the_arguments_the_script_needs(
    template: Template,
) -> None:
    (job,) = template.find_resources("AWS::Glue::Job").values()
    props = job["Properties"]
    assert props["GlueVersion"] == "5.0"
    assert props["Command"]["Name"] == "glueetl"
    assert props["WorkerType"] == SETTINGS.glue_worker_type
    assert props["NumberOfWorkers"] == SETTINGS.glue_workers
    assert props["Timeout"] == SETTINGS.glue_timeout_minutes
    assert props["ExecutionProperty"] == {"MaxConcurrentRuns": SETTINGS.max_concurrent_runs}
    assert (
        props["Connections"]["Connections"] == [{"Ref": Match.any_value()}]
        or len(props["Connections"]["Connections"]) == 1
    )
    assert "SecurityConfiguration" in props
    arguments = props["DefaultArguments"]
    # Every argument the script requires comes from the job (DefaultArguments) or the run.
    given = {k.removeprefix("--") for k in arguments} | set(IngestArgs.RUN_ARGS)
    assert set(IngestArgs.required_args()) <= given
    assert set(IngestArgs.optional_args()) <= given
    assert arguments["--contract_name"] == "telco"
    assert arguments["--incoming_prefix"] == SETTINGS.incoming_prefix
    assert "--extra-py-files" in arguments
    # Wheels from a zip in S3, not PyPI (tests/infra/test_glue_dependencies.py).
    assert arguments["--python-modules-installer-option"] == "--no-index"


def test_job_role_grants_exact_prefixes_and_the_secret(template: Template) -> None:
    statements = statements_of(template, "IngestionJobRole")
    by_action: dict[str, list[Any]] = {}
    for statement in statements:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        for action in actions:
            by_action.setdefault(action, []).extend(resources)
    rendered = {a: json.dumps(r) for a, r in by_action.items()}
    assert "/incoming/*" in rendered["s3:GetObject"]
    assert "/incoming/*" in rendered["s3:DeleteObject"]
    assert "/failed/*" in rendered["s3:PutObject"]
    assert "/curated/*" in rendered["s3:PutObject"] and "/quarantine/*" in rendered["s3:PutObject"]
    assert "secretsmanager:GetSecretValue" in by_action
    # Nothing bucket-wide, no wildcard actions, no deletes outside incoming/.
    assert not [a for a in by_action if a.endswith("*")]
    assert "/failed/*" not in rendered["s3:DeleteObject"]
    assert "/curated/*" not in rendered["s3:DeleteObject"]
    assert "/incoming/*" not in rendered["s3:PutObject"]


def test_state_machine_role_can_run_only_this_job(template: Template) -> None:
    statements = statements_of(template, "IngestionStateMachineRole")
    glue = [s for s in statements if any(a.startswith("glue:") for a in _list(s["Action"]))]
    assert glue and all("glue" in json.dumps(s["Resource"]) for s in glue)
    assert all(s["Resource"] != "*" for s in glue)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---- cdk-nag -------------------------------------------------------------------------------------
def test_cdk_nag_aws_solutions_has_no_finding_for_the_ingestion_resources(synthesized) -> None:
    reports = list(Path(synthesized["outdir"]).glob("**/*AwsSolutions*"))
    findings = []
    for report in reports:
        text = report.read_text()
        if report.suffix == ".json":
            data = json.loads(text)
            for result in _violations(data):
                findings.append(result)
        else:
            findings += [
                line
                for line in text.splitlines()
                if "Ingestion" in line and "Non-Compliant" in line
            ]
    ours = [f for f in findings if "/Ingestion/" in json.dumps(f)]
    assert not ours, json.dumps(ours, indent=1)[:4000]
    if synthesized["error"]:
        assert "/Ingestion/" not in synthesized["error"], synthesized["error"][:4000]


def _violations(report: Any) -> list[Any]:
    """Violations from a policy-validation report (shape varies by plugin version)."""
    found: list[Any] = []
    if isinstance(report, dict):
        if "violatingResources" in report or "violatingConstructs" in report:
            found.append(report)
        for value in report.values():
            found += _violations(value)
    elif isinstance(report, list):
        for value in report:
            found += _violations(value)
    return found
