"""IAM in the twin: each function, Glue job and state machine calls AWS as its own synthesized role,
the stack's grants (resources and conditions included) pass, anything else is AccessDenied naming
the action and the resource, as AWS says it.

The AWS facts these tests rely on, with their sources:
- Evaluation: an explicit Deny in any policy wins; otherwise a request is allowed only when an
  Allow matches it.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
- A condition key absent from the request makes a condition false, except that negated operators
  (StringNotLike, ArnNotLike, ...) are then true, `...IfExists` is true and `Null` tests presence.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
- ArnLike/ArnEquals match each colon-separated ARN part on its own, wildcards allowed.
  (same page, "Amazon Resource Name (ARN) condition operators")
- ForAllValues is true when the key is absent; ForAnyValue is false.
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
- The AccessDenied message: "User: <arn> is not authorized to perform: <action> on resource:
  <resource> because no identity-based policy allows the <action> action", or "... with an
  explicit deny in an identity-based policy".
  https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html
- cloudwatch:PutMetricData has no resource type and is limited by `cloudwatch:namespace`.
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/iam-cw-condition-keys-namespace.html
- s3:ListBucket authorizes ListObjects(V2) on the bucket ARN; `s3:prefix` is the request's prefix;
  CopyObject needs s3:GetObject on the source; DeleteObjects needs s3:DeleteObject per key.
  https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
- Resource ARNs: secret (full ARN with its suffix)
  https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecretsmanager.html ,
  event-bus https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridge.html ,
  Glue job https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsglue.html ,
  function (lambda:InvokeFunction for Invoke)
  https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html ,
  topic https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsns.html .
- Step Functions assumes its role with aws:SourceArn / aws:SourceAccount, which CDK's trust
  policy conditions on. https://docs.aws.amazon.com/step-functions/latest/dg/procedure-create-iam-role.html
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[2]


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _trust(service: str) -> str:
    return json.dumps(
        _doc({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})
    )


# ---- the evaluator on its own -------------------------------------------------------------------


def test_explicit_deny_wins_over_any_allow() -> None:
    from churnops.local.iam_policy import Decision, evaluate

    allow = _doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    deny = _doc({"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/secret/*"})
    assert evaluate([allow, deny], "s3:GetObject", "arn:aws:s3:::b/secret/x", {}) == (
        Decision.EXPLICIT_DENY
    )
    assert evaluate([allow, deny], "s3:GetObject", "arn:aws:s3:::b/public/x", {}) == Decision.ALLOW
    assert evaluate([deny], "s3:GetObject", "arn:aws:s3:::b/public/x", {}) == (
        Decision.IMPLICIT_DENY
    )


def test_action_is_case_insensitive_and_resource_case_sensitive() -> None:
    from churnops.local.iam_policy import Decision, evaluate

    policy = _doc({"Effect": "Allow", "Action": "S3:Get*", "Resource": "arn:aws:s3:::b/Models/?"})
    assert evaluate([policy], "s3:getobject", "arn:aws:s3:::b/Models/1", {}) == Decision.ALLOW
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::b/models/1", {}) != Decision.ALLOW
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::b/Models/12", {}) != Decision.ALLOW
    assert evaluate([policy], "s3:PutObject", "arn:aws:s3:::b/Models/1", {}) != Decision.ALLOW


def test_not_action_and_not_resource() -> None:
    from churnops.local.iam_policy import Decision, evaluate

    policy = _doc({"Effect": "Allow", "NotAction": "s3:Delete*", "NotResource": "arn:aws:s3:::x/*"})
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::y/k", {}) == Decision.ALLOW
    assert evaluate([policy], "s3:DeleteObject", "arn:aws:s3:::y/k", {}) != Decision.ALLOW
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::x/k", {}) != Decision.ALLOW


@pytest.mark.parametrize(
    ("operator", "expected", "context", "holds"),
    [
        ("StringEquals", "a", {}, False),  # absent key: positive operator is false
        ("StringNotEquals", "a", {}, True),  # absent key: negated operator is true
        ("StringNotEquals", "a", {"k": ["a"]}, False),
        ("StringNotEquals", ["a", "b"], {"k": ["c"]}, True),
        ("StringEqualsIfExists", "a", {}, True),
        ("StringEqualsIfExists", "a", {"k": ["b"]}, False),
        ("StringLike", ["models", "models/*"], {"k": ["models/v1/"]}, True),
        ("StringLike", ["models", "models/*"], {"k": ["modelsX"]}, False),
        ("Null", "true", {}, True),
        ("Null", "false", {}, False),
        ("Bool", "false", {"k": ["true"]}, False),
        ("NumericLessThan", 1.2, {"k": ["1.3"]}, False),
        ("NumericLessThan", 1.2, {"k": ["1.0"]}, True),
        ("ForAllValues:StringEquals", ["t1"], {}, True),
        ("ForAllValues:StringEquals", ["t1"], {"k": ["t1", "t2"]}, False),
        ("ForAnyValue:StringEquals", ["t1"], {}, False),
        ("ForAnyValue:StringEquals", ["t1"], {"k": ["t1", "t2"]}, True),
        (
            "ArnLike",
            "arn:aws:states:us-east-1:1:stateMachine:*",
            {"k": ["arn:aws:states:us-east-1:1:stateMachine:m"]},
            True,
        ),
        (
            "ArnLike",
            "arn:aws:states:*:1:stateMachine:m",
            {"k": ["arn:aws:states:eu-west-1:2:stateMachine:m"]},
            False,
        ),
        ("ArnEquals", "arn:aws:ec2:*:1:vpc/v", {"k": ["arn:aws:ec2:us-east-1:1:vpc/v"]}, True),
        ("ArnNotLike", "arn:aws:s3:::b", {}, True),
    ],
)
def test_condition_operators(
    operator: str, expected: Any, context: dict[str, list[str]], holds: bool
) -> None:
    from churnops.local.iam_policy import Decision, evaluate

    policy = _doc(
        {
            "Effect": "Allow",
            "Action": "x:Y",
            "Resource": "*",
            "Condition": {operator: {"K": expected}},
        }
    )
    assert (evaluate([policy], "x:Y", "*", context) == Decision.ALLOW) is holds


# ---- the twin's server with enforcement on ------------------------------------------------------


@pytest.fixture
def enforced(moto_ext) -> Iterator[None]:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext import iam

    iam.enforce_iam()
    try:
        yield
    finally:
        iam.stop_enforcing()  # other tests share this process's moto server
    assert not iam.enforcing()


def _client(service: str, credentials: dict[str, str]) -> Any:
    import os

    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=REGION,
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
    )


def _denied(call: Any, code: str, action: str, resource: str | None) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    assert error["Code"] == code, error
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    message = str(error.get("Message"))
    assert f"is not authorized to perform: {action}" in message, message
    if resource is not None:
        assert f"on resource: {resource}" in message, message
    return message


def _role(name: str, service: str, *statements: dict[str, Any]) -> str:
    iam = boto3.client("iam", region_name=REGION)
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(service))["Role"]["Arn"]
    if statements:
        iam.put_role_policy(
            RoleName=name, PolicyName="grants", PolicyDocument=json.dumps(_doc(*statements))
        )
    return str(arn)


def test_explicit_deny_wins_over_the_server(moto_ext, aws_env, enforced) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.iam import assume_role_as_service, enforce_iam, stop_enforcing

    stop_enforcing()
    s3 = boto3.client("s3", region_name=REGION)
    bucket = f"iam-deny-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret/k", Body=b"x")
    s3.put_object(Bucket=bucket, Key="public/k", Body=b"x")
    role = _role(
        f"deny-{uuid.uuid4().hex[:8]}",
        "lambda.amazonaws.com",
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/secret/*"},
    )
    enforce_iam()
    as_role = _client("s3", assume_role_as_service(role, "lambda.amazonaws.com", "deny-test"))
    assert as_role.get_object(Bucket=bucket, Key="public/k")["Body"].read() == b"x"
    message = _denied(
        lambda: as_role.get_object(Bucket=bucket, Key="secret/k"),
        "AccessDenied",
        "s3:GetObject",
        f'"arn:aws:s3:::{bucket}/secret/k"',
    )
    assert message.endswith("with an explicit deny in an identity-based policy")


def test_a_service_assumes_only_a_role_that_trusts_it(moto_ext, aws_env) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.iam import ServiceTrustError, assume_role_as_service

    role = _role(f"trust-{uuid.uuid4().hex[:8]}", "lambda.amazonaws.com")
    credentials = assume_role_as_service(role, "lambda.amazonaws.com", "fn")
    assert credentials["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    with pytest.raises(ServiceTrustError, match=r"does not let glue\.amazonaws\.com assume it"):
        assume_role_as_service(role, "glue.amazonaws.com", "job")


def test_the_operator_may_do_anything_with_enforcement_on(moto_ext, aws_env, enforced) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.iam import operator_credentials

    operator = operator_credentials("AKIATWINOPERATORTEST", "operator-secret")
    assert operator_credentials("AKIATWINOPERATORTEST", "operator-secret") == operator
    _client("s3", operator).list_buckets()
    _client("sns", operator).list_topics()
    # the process's default test keys belong to nobody: refused as AWS refuses an unknown key
    with pytest.raises(ClientError) as caught:
        boto3.client("secretsmanager", region_name=REGION).list_secrets()
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


# ---- the real stack: its synthesized roles, provisioned, and its exact grants ------------------


@pytest.fixture(scope="module")
def stack(moto_ext, aws_env, need_service) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The real template, provisioned into the session's moto (enforcement off while it is)."""
    from churnops.errors import ChurnOpsError
    from churnops.local.provision import Provisioner
    from churnops.local.synthesis import REPO_ROOT, synthesize

    need_service((REPO_ROOT / "node_modules" / ".bin" / "cdk").is_file(), "the CDK CLI (npm ci)")
    try:
        out = synthesize(REPO_ROOT)
    except ChurnOpsError as err:  # pragma: no cover - environment
        need_service(False, f"cdk synth ({err})")
    template = json.loads((out / "ChurnOps.template.json").read_text())
    layout = Provisioner(template, cdk_out=out, repo_root=REPO_ROOT, database=None).provision()
    return {"template": template, "layout": layout}


def _by_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == kind}


def _role_of(stack: dict[str, Any], resource_id: str, key: str = "Role") -> str:
    """The provisioned ARN of the role the template gives `resource_id`."""
    ref = stack["template"]["Resources"][resource_id]["Properties"][key]
    return str(stack["layout"].iam_roles[ref["Fn::GetAtt"][0]])


def _only(template: dict[str, Any], kind: str, where: Any) -> str:
    found = [lid for lid, r in _by_type(template, kind).items() if where(r.get("Properties", {}))]
    assert len(found) == 1, (kind, found)
    return found[0]


def test_every_template_role_is_provisioned_with_its_policies(stack) -> None:  # type: ignore[no-untyped-def]
    template, layout = stack["template"], stack["layout"]
    iam = boto3.client("iam", region_name=REGION)
    roles = _by_type(template, "AWS::IAM::Role")
    assert set(layout.iam_roles) == set(roles)
    assert len(set(layout.iam_roles.values())) == len(roles)  # one IAM role per template role
    inline: dict[str, set[str]] = {lid: set() for lid in roles}
    for policy in _by_type(template, "AWS::IAM::Policy").values():
        for ref in policy["Properties"]["Roles"]:
            inline[ref["Ref"]].add(policy["Properties"]["PolicyName"])
    for lid, resource in roles.items():
        name = layout.iam_roles[lid].rsplit("/", 1)[-1]
        role = iam.get_role(RoleName=name)["Role"]
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        principals = [s["Principal"] for s in trust["Statement"]]
        assert principals == [
            s["Principal"] for s in resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        ]
        assert set(iam.list_role_policies(RoleName=name)["PolicyNames"]) == inline[lid]
        attached = {
            p["PolicyArn"]
            for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        }
        assert len(attached) == len(resource["Properties"].get("ManagedPolicyArns", []))
        assert all(arn.startswith("arn:aws:iam::aws:policy/") for arn in attached)
    # each function, Glue job and state machine runs as its own template role
    lam = boto3.client("lambda", region_name=REGION)
    for lid, name in layout.functions.items():
        assert lam.get_function(FunctionName=name)["Configuration"]["Role"] == _role_of(stack, lid)
    glue = boto3.client("glue", region_name=REGION)
    for lid, name in layout.glue_jobs.items():
        assert glue.get_job(JobName=name)["Job"]["Role"] == _role_of(stack, lid)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    for lid, arn in layout.state_machines.items():
        machine = sfn.describe_state_machine(stateMachineArn=arn)
        assert machine["roleArn"] == _role_of(stack, lid, "RoleArn")


def _function_id(template: dict[str, Any], description_word: str) -> str:
    """A function by its role's description ("ChurnOps retrain drift function")."""
    resources = template["Resources"]
    return _only(
        template,
        "AWS::Lambda::Function",
        lambda p: (
            description_word
            in resources[p["Role"]["Fn::GetAtt"][0]]["Properties"].get("Description", "")
        ),
    )


def test_a_lambda_role_gets_exactly_its_grants(stack, enforced) -> None:  # type: ignore[no-untyped-def]
    """The drift function: metrics in its namespace only, the registry's models/ prefix only."""
    from churnops.local.moto_ext.iam import assume_role_as_service

    template, layout = stack["template"], stack["layout"]
    drift = _function_id(template, "retrain drift")
    credentials = assume_role_as_service(_role_of(stack, drift), "lambda.amazonaws.com", "drift")
    registry = layout.buckets[next(lid for lid in layout.buckets if "Registry" in lid)]
    curated = layout.buckets[next(lid for lid in layout.buckets if "Curated" in lid)]

    cloudwatch = _client("cloudwatch", credentials)
    cloudwatch.put_metric_data(Namespace="ChurnOps", MetricData=[{"MetricName": "m", "Value": 1}])
    _denied(
        lambda: cloudwatch.put_metric_data(
            Namespace="Glue", MetricData=[{"MetricName": "m", "Value": 1}]
        ),
        "AccessDenied",
        "cloudwatch:PutMetricData",
        None,
    )
    s3 = _client("s3", credentials)
    s3.list_objects_v2(Bucket=registry, Prefix="models/")
    _denied(
        lambda: s3.list_objects_v2(Bucket=registry, Prefix="snapshots/"),
        "AccessDenied",
        "s3:ListBucket",
        f'"arn:aws:s3:::{registry}"',
    )
    s3.put_object(Bucket=registry, Key="models/iam-test/x.json", Body=b"{}")
    assert s3.get_object(Bucket=registry, Key="models/iam-test/x.json")["Body"].read() == b"{}"
    s3.put_object(Bucket=curated, Key="snapshots/iam-test/x", Body=b"1")
    _denied(
        lambda: s3.put_object(Bucket=curated, Key="predictions/x", Body=b"1"),
        "AccessDenied",
        "s3:PutObject",
        f'"arn:aws:s3:::{curated}/predictions/x"',
    )
    # the drift function is not granted the database secret
    secret = next(iter(layout.secrets.values()))
    _denied(
        lambda: _client("secretsmanager", credentials).get_secret_value(SecretId=secret),
        "AccessDeniedException",
        "secretsmanager:GetSecretValue",
        secret,
    )


def test_a_glue_role_reads_its_secret_and_no_other(stack, enforced) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.iam import assume_role_as_service, enforce_iam, stop_enforcing

    template, layout = stack["template"], stack["layout"]
    resources = template["Resources"]
    job = _only(  # by its role's description: "ChurnOps batch scoring Glue job"
        template,
        "AWS::Glue::Job",
        lambda p: (
            "batch scoring"
            in resources[p["Role"]["Fn::GetAtt"][0]]["Properties"].get("Description", "")
        ),
    )
    credentials = assume_role_as_service(_role_of(stack, job), "glue.amazonaws.com", "batch-score")
    secret = next(iter(layout.secrets.values()))
    secrets = _client("secretsmanager", credentials)
    secrets.get_secret_value(SecretId=secret)
    secrets.describe_secret(SecretId=secret)
    stop_enforcing()
    other = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=f"iam-other-{uuid.uuid4().hex[:8]}", SecretString="{}"
    )["ARN"]
    enforce_iam()
    _denied(
        lambda: secrets.get_secret_value(SecretId=other),
        "AccessDeniedException",
        "secretsmanager:GetSecretValue",
        other,
    )


def test_the_rollout_check_role_puts_events_on_the_default_bus_only(stack, enforced) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.iam import assume_role_as_service

    check = _function_id(stack["template"], "retrain rollout_check function")
    events = _client(
        "events", assume_role_as_service(_role_of(stack, check), "lambda.amazonaws.com", "p")
    )
    entry = {"Source": "churnops.registry", "DetailType": "ChampionPromoted", "Detail": "{}"}
    assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
    _denied(
        lambda: events.put_events(Entries=[{**entry, "EventBusName": "elsewhere"}]),
        "AccessDeniedException",
        "events:PutEvents",
        f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/elsewhere",
    )


def test_a_state_machine_role_needs_its_source_arn_and_has_its_grants(stack, enforced) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.iam import ServiceTrustError, assume_role_as_service

    template, layout = stack["template"], stack["layout"]
    # The rollout's: it runs the rollout steps and the batch scoring job, and alerts.
    machine = next(lid for lid in layout.state_machines if "RetrainRollout" in lid)
    role = _role_of(stack, machine, "RoleArn")
    with pytest.raises(ServiceTrustError, match=r"states\.amazonaws\.com"):
        assume_role_as_service(role, "states.amazonaws.com", "no-source")  # ArnLike aws:SourceArn
    with pytest.raises(ServiceTrustError):
        assume_role_as_service(
            role,
            "states.amazonaws.com",
            "other-account",
            source_arn="arn:aws:states:us-east-1:999999999999:stateMachine:x",
        )
    credentials = assume_role_as_service(
        role, "states.amazonaws.com", "rollout", source_arn=layout.state_machines[machine]
    )
    lam = _client("lambda", credentials)
    check = layout.functions[_function_id(template, "retrain rollout_check function")]
    lam.invoke(FunctionName=check, InvocationType="DryRun")
    lam.invoke(FunctionName=check, Qualifier="$LATEST", InvocationType="DryRun")
    # ... and none of the retrain's own steps, nor serving
    for other in ("retrain drift", "serving"):
        name = layout.functions[_function_id(template, other)]
        _denied(
            lambda name=name: lam.invoke(FunctionName=name, InvocationType="DryRun"),
            "AccessDeniedException",
            "lambda:InvokeFunction",
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        )
    glue = _client("glue", credentials)
    batch_job = next(name for lid, name in layout.glue_jobs.items() if "Ingest" not in lid)
    ingest_job = next(name for lid, name in layout.glue_jobs.items() if "Ingest" in lid)
    glue.get_job_runs(JobName=batch_job)
    _denied(
        lambda: glue.get_job_runs(JobName=ingest_job),
        "AccessDeniedException",
        "glue:GetJobRuns",
        f"arn:aws:glue:{REGION}:{ACCOUNT}:job/{ingest_job}",
    )
    sns = _client("sns", credentials)
    topic = next(iter(layout.topics.values()))
    sns.publish(TopicArn=topic, Message="retrain failed")
    _denied(
        lambda: sns.publish(TopicArn=f"{topic}-other", Message="x"),
        "AuthorizationError",
        "SNS:Publish",
        f"{topic}-other",
    )


def test_an_arn_scoped_grant_for_an_unmapped_action_is_refused(stack, enforced, caplog) -> None:  # type: ignore[no-untyped-def]
    """logs:CreateLogStream is granted on the function's log group; the twin maps no resource for
    it, so it is checked against "*" and refused, with a warning naming the action."""
    from churnops.local.moto_ext.iam import assume_role_as_service

    drift = _function_id(stack["template"], "retrain drift")
    logs = _client(
        "logs", assume_role_as_service(_role_of(stack, drift), "lambda.amazonaws.com", "d")
    )
    with caplog.at_level("WARNING", logger="churnops.twin.moto_ext"):
        _denied(
            lambda: logs.create_log_stream(logGroupName="/aws/lambda/x", logStreamName="s"),
            "AccessDeniedException",
            "logs:CreateLogStream",
            None,
        )


def test_the_interpreter_calls_as_the_state_machine_role(moto_ext, aws_env, enforced) -> None:  # type: ignore[no-untyped-def]
    """A state machine whose role may publish to one topic: publishing there succeeds, to another
    fails the task with SNS's AuthorizationError."""
    from churnops.local.moto_ext.iam import enforce_iam, stop_enforcing

    stop_enforcing()
    sns = boto3.client("sns", region_name=REGION)
    allowed = sns.create_topic(Name=f"iam-ok-{uuid.uuid4().hex[:8]}")["TopicArn"]
    other = sns.create_topic(Name=f"iam-no-{uuid.uuid4().hex[:8]}")["TopicArn"]
    iam = boto3.client("iam", region_name=REGION)
    name = f"sm-{uuid.uuid4().hex[:8]}"
    trust = _doc(
        {
            "Effect": "Allow",
            "Principal": {"Service": "states.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "ArnLike": {"aws:SourceArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:*"}
            },
        }
    )
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(
        RoleName=name,
        PolicyName="publish",
        PolicyDocument=json.dumps(
            _doc({"Effect": "Allow", "Action": "sns:Publish", "Resource": allowed})
        ),
    )
    sfn = boto3.client("stepfunctions", region_name=REGION)

    def machine(topic: str) -> str:
        definition = {
            "StartAt": "Publish",
            "States": {
                "Publish": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sns:publish",
                    "Parameters": {"TopicArn": topic, "Message": "hello"},
                    "End": True,
                }
            },
        }
        created = sfn.create_state_machine(
            name=f"{name}-{uuid.uuid4().hex[:6]}", definition=json.dumps(definition), roleArn=role
        )
        return str(created["stateMachineArn"])

    good, bad = machine(allowed), machine(other)
    from churnops.local.moto_ext.iam import operator_credentials

    operator = _client(
        "stepfunctions", operator_credentials("AKIATWINOPERATORTEST", "operator-secret")
    )
    enforce_iam()
    results = {}
    for arn in (good, bad):
        execution = operator.start_execution(stateMachineArn=arn, input="{}")["executionArn"]
        deadline = time.monotonic() + 30
        while (described := operator.describe_execution(executionArn=execution))[
            "status"
        ] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        results[arn] = described
    assert results[good]["status"] == "SUCCEEDED", results[good]
    assert results[bad]["status"] == "FAILED"
    assert "AuthorizationError" in results[bad].get("error", "") + results[bad].get("cause", "")
    assert "SNS:Publish" in results[bad].get("cause", "")


def test_a_rule_starts_a_state_machine_only_as_a_target_role_allowed_to(moto_ext, aws_env) -> None:  # type: ignore[no-untyped-def]
    """EventBridge starts a state machine target as the target's role
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-use-identity-based:
    a Step Functions target needs a role that allows states:StartExecution): one role may start
    one machine, and the same rule's target on another machine is not delivered."""
    from churnops.local.moto_ext.iam import (
        assume_role_as_service,
        iam_enforced,
        operator_credentials,
    )

    states_role = _role(
        f"sm-{uuid.uuid4().hex[:8]}",
        "states.amazonaws.com",
        {"Effect": "Allow", "Action": "logs:*", "Resource": "*"},
    )
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
    allowed, other = (
        sfn.create_state_machine(
            name=f"target-{uuid.uuid4().hex[:8]}", definition=definition, roleArn=states_role
        )["stateMachineArn"]
        for _ in range(2)
    )
    events_role = _role(
        f"events-{uuid.uuid4().hex[:8]}",
        "events.amazonaws.com",
        {"Effect": "Allow", "Action": "states:StartExecution", "Resource": allowed},
    )
    events = boto3.client("events", region_name=REGION)
    rule = f"iam-targets-{uuid.uuid4().hex[:8]}"
    source = f"churnops.iam-test.{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": [source]}))
    events.put_targets(
        Rule=rule,
        Targets=[
            {"Id": "allowed", "Arn": allowed, "RoleArn": events_role},
            {"Id": "other", "Arn": other, "RoleArn": events_role},
        ],
    )
    operator = operator_credentials("AKIATWINOPERATORTEST", "operator-secret")
    moto_ext.assume_role = assume_role_as_service
    try:
        with iam_enforced():
            _client("events", operator).put_events(
                Entries=[{"Source": source, "DetailType": "test", "Detail": "{}"}]
            )
            as_operator = _client("stepfunctions", operator)
            started = {
                arn: as_operator.list_executions(stateMachineArn=arn)["executions"]
                for arn in (allowed, other)
            }
    finally:
        moto_ext.assume_role = None
    assert len(started[allowed]) == 1
    assert started[other] == []


def test_the_retrain_role_may_start_its_rollout_and_no_other_flow(stack, enforced) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.iam import assume_role_as_service

    layout = stack["layout"]
    machines = layout.state_machines
    retrain = next(lid for lid in machines if "Retrain" in lid and "Rollout" not in lid)
    rollout = next(lid for lid in machines if "RetrainRollout" in lid)
    ingest = next(lid for lid in machines if "Ingest" in lid)
    credentials = assume_role_as_service(
        _role_of(stack, retrain, "RoleArn"),
        "states.amazonaws.com",
        "retrain",
        source_arn=machines[retrain],
    )
    sfn = _client("stepfunctions", credentials)
    started = sfn.start_execution(stateMachineArn=machines[rollout], input="{}")
    assert started["executionArn"].startswith(
        machines[rollout].replace("stateMachine", "execution")
    )
    _denied(
        lambda: sfn.start_execution(stateMachineArn=machines[ingest], input="{}"),
        "AccessDeniedException",
        "states:StartExecution",
        machines[ingest],
    )
