"""The Retrain construct (stacks/retrain.py, with stacks/batch_scoring.py and
stacks/retrain_schedule.py) in a small test stack: the synthesized retrain and rollout state
machines, their retries and catches, the hand-over, the candidate's alarms, the Glue .sync
integration, the schedule and least-privilege IAM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from churnops.wiring import BatchScoreArgs, GateSettings, RolloutSettings, rollout_alarm_names
from stacks.retrain import STEPS, Retrain, RetrainSettings
from tests.stand_ins import ACCOUNT, REGION, host_constructs, synth_keeping_nag_failure

SETTINGS = RetrainSettings(
    name_prefix="retraintest",
    schedule_expression="cron(15 4 ? * MON *)",
    gate=GateSettings(margin=0.01, n_bootstrap=500),
)
ROLLOUT = RolloutSettings(
    canary_share=0.2,
    shadow_bake_seconds=600,
    canary_bake_seconds=900,
    check_interval_seconds=30,
    alarm_period_seconds=120,
    max_candidate_errors=3,
    max_candidate_p99_ms=250,
    max_disagreement=0.07,
    max_score_psi=0.3,
)
ROLLOUT_STEPS = ("rollout", "rollout_check")


def build_stack(
    settings: RetrainSettings = SETTINGS, outdir: str | None = None
) -> tuple[Stack, Retrain]:
    """The Retrain construct wired to the real Storage, Alerts and Database constructs."""
    app = App(outdir=outdir, context={"aws:cdk:enable-path-metadata": True})
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stack = Stack(app, "RetrainTest", env={"account": ACCOUNT, "region": REGION})
    host = host_constructs(
        stack,
        name_prefix=settings.name_prefix,
        topic_name="retrain-test",
        interface_endpoints=("secretsmanager", "logs", "glue", "sns", "monitoring", "events"),
    )
    retrain = Retrain(
        stack,
        "Retrain",
        settings=settings,
        platform=host.platform,
        rollout=ROLLOUT,
    )
    return stack, retrain


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Template]:
    """One synthesis per module, with cdk-nag's AwsSolutions pack as a validation plugin. A
    finding makes the synthesis raise; the report stays in the output directory either way."""
    outdir = tmp_path_factory.mktemp("retrain-cdk")
    stack, _retrain = build_stack(outdir=str(outdir))
    synth_keeping_nag_failure(stack)  # a finding: test_cdk_nag_reports_... reads the report
    return outdir, Template.from_json(
        json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    )


@pytest.fixture(scope="module")
def template(built: tuple[Path, Template]) -> Template:
    return built[1]


def definition(template: Template, name: str = "retrain") -> dict[str, Any]:
    """The state machine `<prefix>-<name>`'s definition, intrinsic references replaced by
    placeholders."""
    (resource,) = template.find_resources(
        "AWS::StepFunctions::StateMachine",
        {"Properties": {"StateMachineName": f"{SETTINGS.name_prefix}-{name}"}},
    ).values()
    parts = resource["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "REF" for p in parts)
    return json.loads(text)


def _name(step: str) -> str:
    return "".join(part.capitalize() for part in step.split("_"))


def test_flow_runs_the_steps_in_order_and_gates_on_the_evaluate_output(template: Template) -> None:
    states = definition(template)["States"]
    chain, name = [], "Snapshot"
    while name in states and states[name]["Type"] == "Task":
        chain.append(name)
        name = states[name]["Next"]
    assert chain == ["Snapshot", "Drift", "Train", "Evaluate"]
    gate = states[name]
    assert gate["Type"] == "Choice"
    (choice,) = gate["Choices"]
    assert choice == {
        "Variable": "$.evaluate.Payload.promote",
        "BooleanEquals": True,
        "Next": "StartRollout",
    }
    assert gate["Default"] == "Reject"
    assert states["StartRollout"]["Next"] == "HandedToRollout"
    assert states["Reject"]["Next"] == "ChallengerRejected"
    # Nothing in the retrain flow moves a pointer or scores: the rollout does both.
    assert "BatchScore" not in states


def test_a_passed_gate_hands_the_run_to_the_rollout_state_machine(template: Template) -> None:
    start = definition(template)["States"]["StartRollout"]
    # Fire and forget (a bake outlasts a retrain), named after the run and the challenger.
    assert start["Resource"].endswith(":states:::states:startExecution")
    params = start["Parameters"]
    assert params["Name.$"] == (
        "States.Format('{}-{}', $.snapshot.Payload.run_id, $.train.Payload.version)"
    )
    # The rollout gets the steps' results where churnops.retrain.rollout reads them.
    assert params["Input"] == {
        step: {"Payload.$": f"$.{step}.Payload"} for step in ("snapshot", "train", "evaluate")
    }
    assert start["Catch"][0]["Next"] == "AlertFailure"


def test_the_rollout_bakes_checks_and_ends_in_batch_scoring_or_an_alert(
    template: Template,
) -> None:
    states = definition(template, "rollout")["States"]
    assert definition(template, "rollout")["StartAt"] == "Rollout"
    assert states["Rollout"]["ResultPath"] == states["RolloutCheck"]["ResultPath"] == "$.rollout"
    for choice in ("AfterStart", "AfterCheck"):
        state = states[choice]
        assert {(c["StringEquals"], c["Next"]) for c in state["Choices"]} == {
            ("full", "BatchScore"),
            ("aborted", "AlertRollback"),
        }
        assert all(c["Variable"] == "$.rollout.Payload.stage" for c in state["Choices"])
        assert state["Default"] == "Bake"
    assert states["Rollout"]["Next"] == "AfterStart"
    assert states["Bake"] == {
        "Type": "Wait",
        "Comment": states["Bake"]["Comment"],
        "SecondsPath": "$.rollout.Payload.wait_seconds",
        "Next": "RolloutCheck",
    }
    assert states["RolloutCheck"]["Next"] == "AfterCheck"
    assert states["BatchScore"]["Next"] == "Promoted"
    alert = states["AlertRollback"]
    assert alert["Resource"].endswith(":states:::sns:publish")
    assert alert["Parameters"]["Message"]["alarm.$"] == "$.rollout.Payload.alarm"
    assert states[alert["Next"]]["Type"] == "Succeed"


def test_the_rollout_functions_get_the_rollout_settings_and_alarm_names(
    template: Template,
) -> None:
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "ImageConfig": {"Command": ["lambdas.retrain.handlers.rollout_check"]},
            "Environment": {
                "Variables": Match.object_like(
                    {
                        **ROLLOUT.to_env(),
                        "ROLLOUT_ALARM_NAMES": ",".join(rollout_alarm_names("retraintest")),
                    }
                )
            },
        },
    )


@pytest.mark.parametrize(
    ("signal", "metric", "statistic", "threshold", "operator"),
    [
        ("errors", "VersionErrors", "Sum", 3, "GreaterThanOrEqualToThreshold"),
        ("latency", "VersionLatency", "p99", 250, "GreaterThanThreshold"),
        ("disagreement", "ShadowDecisionDisagreement", "Maximum", 0.07, "GreaterThanThreshold"),
        ("score-psi", "ShadowScorePSI", "Maximum", 0.3, "GreaterThanThreshold"),
    ],
)
def test_each_candidate_alarm_watches_the_candidate_role_at_the_configured_threshold(
    template: Template, signal: str, metric: str, statistic: str, threshold: float, operator: str
) -> None:
    stat = (
        {"ExtendedStatistic": statistic} if statistic.startswith("p") else {"Statistic": statistic}
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": f"retraintest-candidate-{signal}",
            "Namespace": "ChurnOps",
            "MetricName": metric,
            # The dimensions serving publishes every per-version datapoint under, besides the
            # version itself: an alarm matches a metric's exact dimension set.
            "Dimensions": Match.array_equals(
                [
                    {"Name": "Role", "Value": "candidate"},
                    {"Name": "service", "Value": "serving"},
                ]
            ),
            **stat,
            "Period": 120,
            "EvaluationPeriods": 1,
            "Threshold": threshold,
            "ComparisonOperator": operator,
            # No candidate, no data: nothing to roll back.
            "TreatMissingData": "notBreaching",
        },
    )


def test_only_the_check_reads_the_alarms_and_only_the_candidates(template: Template) -> None:
    statements = [s for s in _statements(template) if "cloudwatch:DescribeAlarms" in s["Action"]]
    (statement,) = statements
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    assert sorted(r["Fn::GetAtt"][0] for r in statement["Resource"]) == sorted(alarms)


def test_every_task_retries_and_catches_into_the_alert(template: Template) -> None:
    for machine, steps, extra in (
        ("retrain", [s for s in STEPS if s not in ROLLOUT_STEPS], set()),
        ("rollout", ROLLOUT_STEPS, {"BatchScore"}),
    ):
        states = definition(template, machine)["States"]
        tasks = {
            n: s
            for n, s in states.items()
            if s["Type"] == "Task" and n not in ("AlertFailure", "AlertRollback", "StartRollout")
        }
        assert set(tasks) == {_name(s) for s in steps} | extra
        for name, state in tasks.items():
            assert state["Retry"], name
            catch = state["Catch"]
            assert catch == [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "AlertFailure"}
            ], name
        alert = states["AlertFailure"]
        assert alert["Resource"].endswith(":states:::sns:publish")
        assert states[alert["Next"]]["Type"] == "Fail"
        # Domain errors are not retried: only transient ones are (a bad model stays bad).
        retried = {e for s in tasks.values() for r in s["Retry"] for e in r["ErrorEquals"]}
        assert "States.ALL" not in retried and "ChurnOpsError" not in retried


def test_batch_scoring_runs_glue_sync_with_the_promoted_version(template: Template) -> None:
    state = definition(template, "rollout")["States"]["BatchScore"]
    assert state["Resource"].endswith(":states:::glue:startJobRun.sync")
    args = state["Parameters"]["Arguments"]
    assert args["--model_version.$"] == "$.rollout.Payload.version"
    assert args["--processing_date.$"] == "$.rollout.Payload.processing_date"
    assert args["--input_uri.$"] == "$.snapshot.Payload.uri"
    assert {a.removeprefix("--").removesuffix(".$") for a in args} == set(BatchScoreArgs.RUN_ARGS)
    (job,) = template.find_resources("AWS::Glue::Job").values()
    given = {k.removeprefix("--") for k in job["Properties"]["DefaultArguments"]}
    # Every argument the script reads comes from the job (DefaultArguments) or the run.
    assert set(BatchScoreArgs.required_args()) | set(BatchScoreArgs.optional_args()) <= given | set(
        BatchScoreArgs.RUN_ARGS
    )
    template.has_resource_properties(
        "AWS::Glue::Job",
        {
            "GlueVersion": "5.0",
            "Command": Match.object_like({"Name": "glueetl"}),
            "DefaultArguments": Match.object_like(
                {
                    "--contract_name": SETTINGS.contract_name,
                    "--extra-py-files": Match.any_value(),
                    # The wheels Glue lacks come from a zip built at synth: no PyPI in the VPC.
                    "--additional-python-modules": Match.string_like_regexp(r"\.gluewheels\.zip$"),
                    "--python-modules-installer-option": "--no-index",
                }
            ),
            "Connections": {"Connections": [Match.any_value()]},
            "SecurityConfiguration": Match.any_value(),
        },
    )


def test_state_machine_is_standard_with_logging_and_tracing(template: Template) -> None:
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineType": "STANDARD",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL"}),
        },
    )


def test_schedule_uses_the_cron_from_settings_and_starts_the_state_machine(
    template: Template,
) -> None:
    template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": SETTINGS.schedule_expression,
            "ScheduleExpressionTimezone": "UTC",
            "State": "ENABLED",
            "Target": Match.object_like(
                {"Arn": {"Ref": Match.string_like_regexp("RetrainStateMachine")}}
            ),
        },
    )
    # The scheduler's role may start this state machine and nothing else.
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": "states:StartExecution",
                        "Effect": "Allow",
                        "Resource": {"Ref": Match.string_like_regexp("RetrainStateMachine")},
                    }
                ],
                "Version": Match.any_value(),
            }
        },
    )


def test_task_functions_are_container_images_with_one_handler_each(template: Template) -> None:
    functions = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}}
    )
    commands = sorted(f["Properties"]["ImageConfig"]["Command"][0] for f in functions.values())
    assert commands == sorted(f"lambdas.retrain.handlers.{s}" for s in STEPS)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "ImageConfig": {"Command": ["lambdas.retrain.handlers.evaluate"]},
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "GATE_MARGIN": "0.01",
                        "GATE_N_BOOTSTRAP": "500",
                        "CONTRACT_NAME": SETTINGS.contract_name,
                        "REGISTRY_URI": Match.any_value(),
                    }
                )
            },
        },
    )
    # Only the snapshot function sits in the VPC (it alone talks to the database).
    in_vpc = [f for f in functions.values() if "VpcConfig" in f["Properties"]]
    assert [f["Properties"]["ImageConfig"]["Command"][0] for f in in_vpc] == [
        "lambdas.retrain.handlers.snapshot"
    ]


def _ours(template: Template, kind: str) -> list[dict[str, Any]]:
    """Resources of `kind` that the Retrain construct created (by their CDK path metadata)."""
    return [
        r
        for r in template.find_resources(kind).values()
        if "/Retrain/" in r.get("Metadata", {}).get("aws:cdk:path", "")
    ]


def _statements(template: Template) -> list[dict[str, Any]]:
    out = []
    for policy in _ours(template, "AWS::IAM::Policy"):
        out += policy["Properties"]["PolicyDocument"]["Statement"]
    for role in _ours(template, "AWS::IAM::Role"):
        for inline in role["Properties"].get("Policies", []):
            out += inline["PolicyDocument"]["Statement"]
    return out


def test_no_wildcard_actions_and_no_managed_policies(template: Template) -> None:
    for statement in _statements(template):
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            service = action.partition(":")[0]
            # Data services get exact actions; only X-Ray/logs delivery (CDK's own, no
            # resource type) may use a wildcard name.
            if service in ("s3", "secretsmanager", "glue", "events", "kms", "sns", "states"):
                assert "*" not in action, statement
            assert action != "*", statement
    roles = _ours(template, "AWS::IAM::Role")
    assert len(roles) == len(STEPS) + 3  # the functions, the Glue job, the state machines
    for role in roles:
        managed = role["Properties"].get("ManagedPolicyArns", [])
        assert managed == [], role


def test_data_access_is_limited_to_the_prefixes_each_step_uses(template: Template) -> None:
    resources = json.dumps(
        [s["Resource"] for s in _statements(template) if "s3:PutObject" in s["Action"]]
    )
    assert (
        "/models/*" in resources and "/snapshots/*" in resources and "/predictions/*" in resources
    )
    # No PutObject on a whole bucket.
    for statement in _statements(template):
        if "s3:PutObject" in statement["Action"]:
            targets = (
                statement["Resource"]
                if isinstance(statement["Resource"], list)
                else [statement["Resource"]]
            )
            for target in targets:
                assert "Fn::Join" in target, statement


def test_cdk_nag_reports_no_unacknowledged_findings(built: tuple[Path, Template]) -> None:
    outdir, _template = built
    report_file = outdir / "validation-report.json"
    violations = []
    if report_file.exists():  # written only when some plugin found something
        report = json.loads(report_file.read_text())
        for plugin in report["pluginReports"]:
            for violation in plugin["violations"]:
                for construct in violation["violatingConstructs"]:
                    violations.append(f"{violation['ruleName']}: {construct['constructPath']}")
    assert violations == []


def test_settings_reject_a_bad_schedule() -> None:
    with pytest.raises(ValueError, match="schedule_expression"):
        RetrainSettings(schedule_expression="every sunday")


def test_the_batch_scoring_job_may_list_only_the_prefixes_it_plans_and_commits(
    template: Template,
) -> None:
    """The job lists the snapshot's parts (its plan) and the date's partition (its commit) and
    the registry's versions; ListBucket with any other prefix, or none, would be refused."""
    listed = {
        frozenset(s["Condition"]["StringLike"]["s3:prefix"])
        for s in _statements(template)
        if s["Action"] == "s3:ListBucket"
    }
    for prefix in ("snapshots", "predictions", "models"):
        assert {f"{prefix}/*", prefix} in listed, listed
    for statement in _statements(template):
        if statement["Action"] == "s3:ListBucket":
            assert "s3:prefix" in statement["Condition"]["StringLike"], statement
