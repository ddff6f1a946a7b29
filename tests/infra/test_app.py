"""The whole app as `cdk synth` builds it: one ChurnOps stack, constructs wired to each other,
least-privilege IAM everywhere, and cdk-nag's AwsSolutions pack clean (every acknowledgment with
its reason)."""

from __future__ import annotations

import json
import re
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from tests.infra.template_helpers import (
    acknowledged_rules,
    as_list,
    iam_statements,
    logical_id,
    open_nag_findings,
)

# Services whose resources hold or move data: a wildcard action or a "*" resource on them grants
# more than a function uses.
DATA_SERVICES = {
    "s3",
    "secretsmanager",
    "rds",
    "rds-db",
    "rds-data",
    "dynamodb",
    "sqs",
    "sns",
    "kms",
    "glue",
    "states",
    "lambda",
    "events",
    "scheduler",
}
# Actions AWS defines without a resource type: "*" is the only resource they accept.
NO_RESOURCE_TYPE = re.compile(
    r"^(ec2:(CreateNetworkInterface|DeleteNetworkInterface|Describe\w+|AssignPrivateIpAddresses"
    r"|UnassignPrivateIpAddresses)"
    r"|xray:(PutTraceSegments|PutTelemetryRecords|GetSamplingRules|GetSamplingTargets)"
    r"|logs:(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery"
    r"|ListLogDeliveries|PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups)"
    r"|cloudwatch:PutMetricData)$"
)
S3_OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:PutObjectTagging"}


@pytest.fixture(scope="module")
def template(churnops: Any) -> Template:
    return churnops.template


@pytest.fixture(scope="module")
def stack(churnops: Any) -> Any:
    return churnops.stack


def test_the_app_is_one_stack_named_churnops(churnops: Any) -> None:
    stacks = [c for c in churnops.app.node.children if isinstance(c, cdk.Stack)]
    assert [s.stack_name for s in stacks] == ["ChurnOps"]


def test_cdk_nag_aws_solutions_reports_nothing_unacknowledged(churnops: Any) -> None:
    assert open_nag_findings(churnops.app, churnops.stack) == []


def test_the_nag_check_above_does_catch_an_unacknowledged_finding() -> None:
    # GIVEN a bucket that accepts plain HTTP and logs nothing, WHEN the same pack runs on it,
    # THEN it reports the findings (so an empty report above means a clean app).
    from aws_cdk import aws_s3 as s3

    app = cdk.App()
    sloppy = cdk.Stack(app, "Sloppy")
    s3.Bucket(sloppy, "Open")
    report = AwsSolutionsChecks(app).validate_scope(sloppy)
    rules = {v.rule_name for v in report.violations}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= {r.split("[")[0] for r in rules}
    assert report.success is False
    assert any("AwsSolutions-S10" in f for f in open_nag_findings(app, sloppy))


def test_every_acknowledgment_gives_a_reason(stack: Any) -> None:
    acknowledged = {
        f"{path} {rule}": reason
        for path, rules in acknowledged_rules(stack).items()
        for rule, reason in rules.items()
    }
    assert acknowledged, "expected the documented acknowledgments"
    vague = {k: r for k, r in acknowledged.items() if len(r.split()) < 6}
    assert vague == {}


def test_synthesis_leaves_no_warning_or_error_annotation(stack: Any) -> None:
    annotations = Annotations.from_stack(stack)
    assert annotations.find_error("*", Match.any_value()) == []
    assert annotations.find_warning("*", Match.any_value()) == []


def test_no_iam_statement_uses_a_wildcard_action(template: Template) -> None:
    offending = [
        (rid, action)
        for rid, statement in iam_statements(template)
        for action in as_list(statement.get("Action", []))
        if "*" in action
    ]
    assert offending == []


def test_star_resources_only_for_actions_without_a_resource_type(template: Template) -> None:
    offending = [
        (rid, action)
        for rid, statement in iam_statements(template)
        if "*" in as_list(statement.get("Resource", []))
        for action in as_list(statement["Action"])
        if action.split(":")[0] in DATA_SERVICES or not NO_RESOURCE_TYPE.match(action)
    ]
    assert offending == []


def test_s3_object_grants_name_a_prefix_never_a_whole_bucket(template: Template) -> None:
    whole_bucket = []
    for rid, statement in iam_statements(template):
        actions = set(as_list(statement["Action"]))
        if not actions & S3_OBJECT_ACTIONS:
            continue
        for resource in as_list(statement["Resource"]):
            parts = resource.get("Fn::Join", ["", []])[1] if isinstance(resource, dict) else []
            if parts and parts[-1] == "/*":
                whole_bucket.append((rid, json.dumps(resource)))
    assert whole_bucket == []


def test_bucket_listing_is_always_limited_to_prefixes(template: Template) -> None:
    unlimited = [
        rid
        for rid, statement in iam_statements(template)
        if "s3:ListBucket" in as_list(statement["Action"])
        and "s3:prefix" not in json.dumps(statement.get("Condition", {}))
    ]
    assert unlimited == []


def test_serving_reads_the_registry_of_this_stack(template: Template, stack: Any) -> None:
    registry = logical_id(stack.storage.registry_bucket)
    role = {"Ref": logical_id(stack.serving.role)}
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [role],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": "s3:GetObject",
                            "Effect": "Allow",
                            "Resource": {
                                "Fn::Join": ["", [{"Fn::GetAtt": [registry, "Arn"]}, "/models/*"]]
                            },
                        }
                    ]
                )
            },
        },
    )


def test_upload_rule_watches_this_stacks_raw_bucket_and_starts_ingestion(
    template: Template, stack: Any
) -> None:
    settings = stack.config.ingestion
    rule = template.to_json()["Resources"][logical_id(stack.ingestion.rule)]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": logical_id(stack.storage.raw_bucket)}]
    key_filter = json.dumps(pattern["detail"]["object"]["key"])
    assert settings.incoming_prefix in key_filter and settings.file_suffix in key_filter
    targets = [t["Arn"] for t in rule["Targets"]]
    assert {"Ref": logical_id(stack.ingestion.state_machine)} in targets


def test_every_glue_job_is_glue_5_in_the_vpc_with_the_churnops_package(
    template: Template, stack: Any
) -> None:
    jobs = template.find_resources("AWS::Glue::Job")
    assert len(jobs) == 2  # ingest and batch scoring
    connection = {"Ref": logical_id(stack.database.glue_connection)}
    for rid, job in jobs.items():
        props = job["Properties"]
        assert props["GlueVersion"] == "5.0", rid
        assert props["Connections"] == {"Connections": [connection]}, rid
        assert "--extra-py-files" in props["DefaultArguments"], rid


def test_alarms_cover_every_function_and_state_machine(template: Template, stack: Any) -> None:
    alarms = [a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()]
    watched = json.dumps([a.get("Dimensions") for a in alarms])
    for name, function in {"serving": stack.serving.function, **stack.retrain.functions}.items():
        assert logical_id(function) in watched, name
    for machine in (stack.ingestion.state_machine, stack.retrain.state_machine):
        assert logical_id(machine) in watched


def test_glue_failure_rule_names_the_real_jobs(template: Template, stack: Any) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": Match.object_like(
                {
                    "source": ["aws.glue"],
                    "detail": Match.object_like(
                        {
                            "jobName": Match.array_with(
                                [
                                    {"Ref": logical_id(stack.ingestion.job)},
                                    {"Ref": logical_id(stack.retrain.batch_score_job)},
                                ]
                            )
                        }
                    ),
                }
            )
        },
    )


def test_drift_alarm_starts_the_real_retrain_state_machine(template: Template, stack: Any) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": Match.object_like({"source": ["aws.cloudwatch"]}),
            "Targets": [
                Match.object_like({"Arn": {"Ref": logical_id(stack.retrain.state_machine)}})
            ],
        },
    )


def test_outputs_tell_the_user_where_things_are(template: Template) -> None:
    outputs = template.to_json()["Outputs"]
    for name in ("RawBucketName", "ApiUrl", "ApiKeyId", "RegistryUri", "DashboardName"):
        assert name in outputs, name


def test_rollout_and_tracking_settings_reach_the_functions_that_read_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.infra.conftest import synthesize_app

    synthesized = synthesize_app(
        str(tmp_path_factory.mktemp("rollout-cdk-out")),
        **{
            "churnops.rollout.comparison_window": "300",
            "churnops.rollout.canary_share": "0.05",
            "churnops.retrain.mlflow_tracking_uri": "https://mlflow.example.com",
        },
    )
    functions = synthesized.template.find_resources("AWS::Lambda::Function")
    variables = {
        # The serving image's CMD is its Dockerfile's; the retrain steps name theirs.
        f["Properties"].get("ImageConfig", {}).get("Command", ["serving"])[0]: f["Properties"]
        .get("Environment", {})
        .get("Variables", {})
        for f in functions.values()
        if f["Properties"].get("PackageType") == "Image"
    }
    # Serving compares candidate and champion over the rollout's window.
    assert variables["serving"]["ROLLOUT_COMPARISON_WINDOW"] == "300"
    assert "MLFLOW_TRACKING_URI" not in variables["serving"]
    for step in ("train", "rollout", "rollout_check"):
        env = variables[f"lambdas.retrain.handlers.{step}"]
        assert env["ROLLOUT_CANARY_SHARE"] == "0.05"
        assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"
