"""Serving construct: the container-image function, its least-privilege role, and the REST API's
methods, request validation from the contract, API key + usage plan, throttling and access logs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from churnops.contract import get_contract
from churnops.wiring import BATCH_KEY
from stacks.serving import ServingSettings, predict_request_schema, to_apigw_schema
from tests.infra.template_helpers import acknowledged_rules, logical_id, open_nag_findings


@pytest.fixture(scope="module")
def template(core: Any) -> Template:
    return core.template


@pytest.fixture(scope="module")
def settings(core: Any) -> ServingSettings:
    return core.serving.settings


def test_function_is_a_container_image_with_the_contract_environment(
    template: Template, core: Any, settings: ServingSettings
) -> None:
    registry = logical_id(core.storage.registry_bucket)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "PackageType": "Image",
            "Architectures": ["x86_64"],
            "MemorySize": settings.memory_mb,
            "Timeout": settings.timeout_seconds,
            "Environment": {
                "Variables": {
                    "REGISTRY_URI": {"Fn::Join": ["", ["s3://", {"Ref": registry}, "/models"]]},
                    "CONTRACT_NAME": settings.contract_name,
                    "CHAMPION_REFRESH_SECONDS": str(settings.champion_refresh_seconds),
                    "MAX_BATCH_SIZE": str(settings.max_batch_size),
                    "POWERTOOLS_SERVICE_NAME": "serving",
                    "POWERTOOLS_METRICS_NAMESPACE": "ChurnOps",
                }
            },
        },
    )


def test_function_role_has_no_managed_policy(template: Template, core: Any) -> None:
    role = template.to_json()["Resources"][logical_id(core.serving.role)]["Properties"]
    assert "ManagedPolicyArns" not in role


def test_function_role_reads_the_registry_prefix_and_writes_its_own_logs_only(
    template: Template, core: Any
) -> None:
    registry = logical_id(core.storage.registry_bucket)
    resources = template.to_json()["Resources"]
    policies = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy"
        and {"Ref": logical_id(core.serving.role)} in r["Properties"]["Roles"]
    ]
    (statements,) = policies
    by_action = {json.dumps(s["Action"]): s for s in statements}
    assert set(by_action) == {
        '["logs:CreateLogStream", "logs:PutLogEvents"]',
        '"s3:GetObject"',
        '"s3:ListBucket"',
    }
    assert by_action['"s3:GetObject"']["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [registry, "Arn"]}, "/models/*"]]
    }
    listing = by_action['"s3:ListBucket"']
    assert listing["Resource"] == {"Fn::GetAtt": [registry, "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models", "models/*"]}}
    logs = by_action['["logs:CreateLogStream", "logs:PutLogEvents"]']
    assert logs["Resource"] == {"Fn::GetAtt": [logical_id(core.serving.function.log_group), "Arn"]}


def methods(template: Template) -> dict[tuple[str, str], dict[str, Any]]:
    resources = template.to_json()["Resources"]
    paths = {
        rid: r["Properties"]["PathPart"]
        for rid, r in resources.items()
        if r["Type"] == "AWS::ApiGateway::Resource"
    }
    return {
        (r["Properties"]["HttpMethod"], paths[r["Properties"]["ResourceId"]["Ref"]]): r[
            "Properties"
        ]
        for r in resources.values()
        if r["Type"] == "AWS::ApiGateway::Method"
    }


def test_api_exposes_exactly_the_serving_routes(template: Template) -> None:
    assert set(methods(template)) == {
        ("POST", "predict"),
        ("GET", "model"),
        ("GET", "health"),
        ("GET", "openapi.json"),
    }


def test_every_method_requires_the_api_key_and_proxies_to_the_function(
    template: Template, core: Any
) -> None:
    function = logical_id(core.serving.function)
    for route, method in methods(template).items():
        assert method["ApiKeyRequired"] is True, route
        integration = method["Integration"]
        assert integration["Type"] == "AWS_PROXY", route
        assert function in json.dumps(integration["Uri"]), route


def test_predict_validates_the_body_against_the_contract_model(
    template: Template, core: Any
) -> None:
    validator = logical_id(core.serving.body_validator)
    model = logical_id(core.serving.predict_model)
    predict = methods(template)[("POST", "predict")]
    assert predict["RequestValidatorId"] == {"Ref": validator}
    assert predict["RequestModels"] == {"application/json": {"Ref": model}}
    template.has_resource_properties(
        "AWS::ApiGateway::RequestValidator",
        {"ValidateRequestBody": True, "ValidateRequestParameters": True},
    )


def test_request_model_is_the_contract_customer_schema(
    template: Template, core: Any, settings: ServingSettings
) -> None:
    contract = get_contract(settings.contract_name)
    props = template.to_json()["Resources"][logical_id(core.serving.predict_model)]["Properties"]
    assert props["ContentType"] == "application/json"
    single, batch = props["Schema"]["oneOf"]
    expected = contract.customer_json_schema()
    # Draft 4 (API Gateway's models) counts 1.0 as no integer, the published document (2020-12)
    # and the function accept it: the model spells "integer" as a number that is a multiple of 1.
    for prop in expected["properties"].values():
        if prop.get("type") == "integer":
            prop.update(type="number", multipleOf=1)
    assert single["properties"] == expected["properties"]
    from jsonschema import Draft4Validator

    draft4 = Draft4Validator({"$schema": props["Schema"]["$schema"], **single})
    customer = {
        name: field["enum"][0] if "enum" in field else 0
        for name, field in single["properties"].items()
        if name in single["required"]
    }
    customer[contract.id_column] = "7590-VHVEG"
    for value, accepted in ((1, True), (1.0, True), (1.5, False), ("1", False)):
        errors = list(draft4.iter_errors({**customer, "SeniorCitizen": value}))
        assert (not errors) is accepted, (value, [e.message for e in errors])
    assert single["required"] == expected["required"]
    assert single["additionalProperties"] is False
    assert batch["required"] == [BATCH_KEY]
    assert batch["properties"][BATCH_KEY]["items"] == single
    # The batch limit is the function's to enforce (413 naming the limit), not API Gateway's.
    assert "maxItems" not in batch["properties"][BATCH_KEY]


def test_validation_errors_answer_in_the_api_error_shape(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::GatewayResponse",
        {
            "ResponseType": "BAD_REQUEST_BODY",
            "StatusCode": "400",
            "ResponseTemplates": {
                "application/json": Match.string_like_regexp("validationErrorString")
            },
        },
    )


def test_usage_plan_throttles_and_caps_each_key(
    template: Template, core: Any, settings: ServingSettings
) -> None:
    api = logical_id(core.serving.api)
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {
                "RateLimit": settings.throttle_rate_limit,
                "BurstLimit": settings.throttle_burst_limit,
            },
            "Quota": {"Limit": settings.quota_per_day, "Period": "DAY"},
            "ApiStages": [
                {"ApiId": {"Ref": api}, "Stage": {"Ref": logical_id(core.serving.stage)}}
            ],
        },
    )
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlanKey",
        {"KeyId": {"Ref": logical_id(core.serving.api_key)}, "KeyType": "API_KEY"},
    )
    key = template.to_json()["Resources"][logical_id(core.serving.api_key)]["Properties"]
    assert "Value" not in key  # API Gateway generates the key; it is never in the template


def test_stage_throttles_logs_access_and_never_logs_bodies(
    template: Template, core: Any, settings: ServingSettings
) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": settings.stage_name,
            "AccessLogSetting": {
                "DestinationArn": {"Fn::GetAtt": [logical_id(core.serving.access_logs), "Arn"]},
                "Format": Match.string_like_regexp(r"\$context\.requestId"),
            },
            "MethodSettings": [
                {
                    "HttpMethod": "*",
                    "ResourcePath": "/*",
                    "LoggingLevel": "ERROR",
                    "DataTraceEnabled": False,
                    "MetricsEnabled": True,
                    "ThrottlingRateLimit": settings.throttle_rate_limit,
                    "ThrottlingBurstLimit": settings.throttle_burst_limit,
                }
            ],
        },
    )
    stage = template.find_resources("AWS::ApiGateway::Stage")
    (props,) = [s["Properties"] for s in stage.values()]
    access_format = json.loads(props["AccessLogSetting"]["Format"])
    assert "$context.identity.apiKeyId" in access_format.values()
    assert not any("apiKey}" in v or "requestBody" in v for v in access_format.values())


def test_access_and_function_logs_expire(template: Template, settings: ServingSettings) -> None:
    groups = template.find_resources("AWS::Logs::LogGroup")
    retentions = [g["Properties"].get("RetentionInDays") for g in groups.values()]
    assert retentions and None not in retentions
    assert retentions.count(settings.log_retention_days) >= 2


def test_dev_keeps_waf_off(template: Template, settings: ServingSettings) -> None:
    assert settings.waf_enabled is False  # cdk.json dev default
    template.resource_count_is("AWS::WAFv2::WebACL", 0)


@pytest.fixture(scope="module")
def hardened(settings: ServingSettings) -> tuple[Any, Template]:
    """Serving alone with what prod turns on: WAF, SigV4 on top of the key, X-Ray."""
    import dataclasses

    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3

    from stacks.serving import Serving

    stack = Stack(App(), "HardenedServing")
    serving = Serving(
        stack,
        "Serving",
        settings=dataclasses.replace(settings, waf_enabled=True, authorization="iam", tracing=True),
        registry_bucket=s3.Bucket(stack, "Registry"),
    )
    return serving, Template.from_stack(stack)


def test_waf_guards_the_stage_with_managed_rules(hardened: tuple[Any, Template]) -> None:
    serving, template = hardened
    template.has_resource_properties(
        "AWS::WAFv2::WebACL",
        {
            "Scope": "REGIONAL",
            "DefaultAction": {"Allow": {}},
            "Rules": Match.array_with(
                [
                    Match.object_like(
                        {
                            "Name": "AWSManagedRulesCommonRuleSet",
                            "Statement": {
                                "ManagedRuleGroupStatement": Match.object_like(
                                    {
                                        # Batches are bigger than the set's 8 KB body limit.
                                        "RuleActionOverrides": [
                                            {
                                                "Name": "SizeRestrictions_BODY",
                                                "ActionToUse": {"Count": {}},
                                            }
                                        ]
                                    }
                                )
                            },
                        }
                    )
                ]
            ),
        },
    )
    template.has_resource_properties(
        "AWS::WAFv2::WebACLAssociation",
        {"WebACLArn": {"Fn::GetAtt": [logical_id(serving.web_acl), "Arn"]}},
    )


def test_iam_authorization_signs_every_method_and_keeps_the_key(
    hardened: tuple[Any, Template],
) -> None:
    _, template = hardened
    for route, method in methods(template).items():
        assert method["AuthorizationType"] == "AWS_IAM", route
        assert method["ApiKeyRequired"] is True, route
    template.has_resource_properties("AWS::Lambda::Function", {"TracingConfig": {"Mode": "Active"}})
    template.has_resource_properties("AWS::ApiGateway::Stage", {"TracingEnabled": True})


def test_api_key_mode_says_plainly_that_the_key_is_not_authentication(core: Any) -> None:
    """AWS: "Don't rely on API keys as your only means of authentication and authorization for
    your APIs ... use an IAM role, a Lambda authorizer, or an Amazon Cognito user pool"
    (docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-api-usage-plans.html)."""
    assert core.serving.settings.authorization == "api_key"  # the cdk.json default
    acknowledged = acknowledged_rules(core.stack)[core.serving.api.node.path]
    for rule in ("AwsSolutions::AwsSolutions-APIG4", "AwsSolutions::AwsSolutions-COG4"):
        reason = acknowledged[rule]
        assert "NO authentication" in reason, rule
        assert "serving.authorization=iam" in reason, rule


@pytest.fixture(scope="module")
def signed(settings: ServingSettings) -> tuple[Any, Any, Template]:
    """Serving alone with serving.authorization=iam and every other dev setting unchanged."""
    import dataclasses

    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3

    from stacks.serving import Serving

    app = App()
    stack = Stack(app, "SignedServing")
    Serving(
        stack,
        "Serving",
        settings=dataclasses.replace(settings, authorization="iam"),
        registry_bucket=s3.Bucket(stack, "Registry"),
    )
    return app, stack, Template.from_stack(stack)


def test_iam_authorization_signs_every_method_and_leaves_no_open_nag_finding(
    signed: tuple[Any, Any, Template],
) -> None:
    """serving.authorization=iam: every method is AWS_IAM, so callers sign with SigV4 and need
    execute-api:Invoke (docs.aws.amazon.com/apigateway/latest/developerguide/
    api-gateway-control-access-using-iam-policies-to-invoke-api.html). cdk-nag's APIG4 is met by
    that; COG4 asks for a Cognito user pool specifically and is acknowledged with the reason."""
    app, stack, template = signed
    for route, method in methods(template).items():
        assert method["AuthorizationType"] == "AWS_IAM", route
        assert method["ApiKeyRequired"] is True, route  # the usage plan still meters each client
    ours = [f for f in open_nag_findings(app, stack) if "/Serving/" in f]
    assert ours == []


def test_schema_conversion_refuses_keywords_it_cannot_map() -> None:
    with pytest.raises(ValueError, match="'format'"):
        to_apigw_schema({"type": "string", "format": "date"})
    with pytest.raises(ValueError, match=r"'\$ref'"):
        to_apigw_schema({"$ref": "#/definitions/Customer"})


def test_every_contract_converts_to_an_api_gateway_model() -> None:
    for name in ("telco", "insurance"):
        schema = predict_request_schema(name)
        assert to_apigw_schema(schema) is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"authorization": "cognito"}, "authorization"),
        ({"timeout_seconds": 30}, "29"),
        ({"contract_name": "nope"}, "unknown contract"),
    ],
)
def test_settings_refuse_invalid_values(
    settings: ServingSettings, change: dict[str, Any], message: str
) -> None:
    import dataclasses

    with pytest.raises(Exception, match=message):
        dataclasses.replace(settings, **change)
