"""Serving: the container-image Lambda and the REST API in front of it.

API Gateway checks what it can before the function runs: an API key tied to a usage plan
(throttle and daily quota), stage throttling, and the request body against a model generated
from the data contract (`Contract.customer_json_schema()`), so a malformed request costs no
Lambda invocation. An API key is not authentication: it identifies a client for its usage plan,
and AWS says not to rely on keys as the only means of authentication and authorization
(docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-api-usage-plans.html, "Best
practices for API keys and usage plans"). `serving.authorization=iam` makes every method
AWS_IAM: callers sign requests with SigV4 and need execute-api:Invoke on the method
(docs.aws.amazon.com/apigateway/latest/developerguide/
api-gateway-control-access-using-iam-policies-to-invoke-api.html), and still send the key. The function still validates everything itself (`churnops serve` has no
API Gateway in front of it, and the function's answers name every offending field). The OpenAPI document is served by the
function at `GET /openapi.json`; `aws apigateway get-export` returns API Gateway's own view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from churnops.contract import get_contract
from churnops.wiring import (
    BATCH_KEY,
    DEFAULT_ROLLOUT_COMPARISON_WINDOW,
    ServingEnvironment,
    registry_uri,
)
from stacks.database import log_lifecycle
from stacks.images import LAMBDA_ARCHITECTURE, SERVING_IMAGE

HANDLER = "lambdas.serving.handler.handler"  # the image's CMD (interfaces 5)
AUTHORIZATION = ("api_key", "iam")


@dataclass(frozen=True)
class ServingSettings:
    name_prefix: str
    contract_name: str
    memory_mb: int
    timeout_seconds: int  # API Gateway gives up at 29 s; anything longer only burns money
    reserved_concurrency: int  # 0: no reservation (share the account's pool)
    champion_refresh_seconds: int
    max_batch_size: int
    stage_name: str
    throttle_rate_limit: float  # requests per second, stage-wide and per API key
    throttle_burst_limit: int
    quota_per_day: int  # requests per API key per day
    # "api_key" (key + usage plan: identification and throttling, not authentication) or "iam"
    # (SigV4-signed requests from principals allowed execute-api:Invoke, as well as the key)
    authorization: str
    tracing: bool  # X-Ray on the function and the stage
    waf_enabled: bool
    log_retention_days: int
    removal_policy: str  # of the log groups: "destroy" (dev) or "retain" (prod)

    def __post_init__(self) -> None:
        if self.authorization not in AUTHORIZATION:
            raise ValueError(
                f"authorization '{self.authorization}' is not one of {', '.join(AUTHORIZATION)}"
            )
        if not 1 <= self.timeout_seconds <= 29:
            raise ValueError("timeout_seconds must be 1..29 (API Gateway's integration limit)")
        get_contract(self.contract_name)  # unknown contract: fail at synth, not at first call


class Serving(Construct):
    """Exposes `function` (and its `role`), `api`, `stage`, `api_key`, `usage_plan`,
    `access_logs`, `body_validator`, `predict_model`, and `web_acl` when WAF is on."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        settings: ServingSettings,
        registry_bucket: s3.IBucket,
        rollout_comparison_window: int = DEFAULT_ROLLOUT_COMPARISON_WINDOW,
    ) -> None:
        """`rollout_comparison_window`: customers per comparison of a rollout's candidate with
        the champion (cdk.json `rollout.comparison_window`)."""
        super().__init__(scope, id)
        self.settings = settings
        log_policy, retention = log_lifecycle(settings)

        # An explicit role and log group instead of AWSLambdaBasicExecutionRole: the function may
        # write to its own log group and nothing else. Registry grants come from the stack.
        function_logs = logs.LogGroup(
            self, "FunctionLogs", retention=retention, removal_policy=log_policy
        )
        self.role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="ChurnOps serving function",
        )
        function_logs.grant_write(self.role)
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            description="ChurnOps: churn probability for customers, from the champion model",
            code=SERVING_IMAGE.code(),
            architecture=LAMBDA_ARCHITECTURE,
            role=self.role,
            log_group=function_logs,
            logging_format=lambda_.LoggingFormat.JSON,
            memory_size=settings.memory_mb,
            timeout=Duration.seconds(settings.timeout_seconds),
            reserved_concurrent_executions=settings.reserved_concurrency or None,
            tracing=lambda_.Tracing.ACTIVE if settings.tracing else lambda_.Tracing.DISABLED,
            environment=ServingEnvironment(
                registry_uri=registry_uri(registry_bucket.bucket_name),
                contract_name=settings.contract_name,
                refresh_seconds=settings.champion_refresh_seconds,
                max_batch_size=settings.max_batch_size,
                rollout_comparison_window=rollout_comparison_window,
            ).to_env(),
        )

        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention, removal_policy=log_policy
        )
        iam_auth = settings.authorization == "iam"
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{settings.name_prefix}-api",
            description="ChurnOps churn scoring",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Execution logs (ERROR level) need the account-level CloudWatch role. That setting is
            # one per account and region, shared by every REST API there, and survives stack
            # deletion (AWS::ApiGateway::Account reference: "API Gateway can still assume the
            # provided IAM role" after the stack is deleted), so the role is retained in every
            # environment: deleting it would break execution logging of other APIs in the account.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=settings.stage_name,
                throttling_rate_limit=settings.throttle_rate_limit,
                throttling_burst_limit=settings.throttle_burst_limit,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies are customer data: never logged
                metrics_enabled=True,
                tracing_enabled=settings.tracing,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            ),
            default_method_options=apigw.MethodOptions(
                api_key_required=True,
                authorization_type=apigw.AuthorizationType.IAM if iam_auth else None,
            ),
        )
        self.stage = self.api.deployment_stage

        # Validation failures answer in the API's own error shape, with API Gateway's reason.
        self.api.add_gateway_response(
            "BadRequestBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            templates={
                "application/json": '{"error": "invalid_request", "message": '
                '"$context.error.validationErrorString"}'
            },
        )
        self.body_validator = self.api.add_request_validator(
            "BodyValidator",
            request_validator_name="contract-body",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        self.predict_model = self.api.add_model(
            "PredictRequest",
            content_type="application/json",
            model_name="PredictRequest",
            description=f"One customer or a batch under '{BATCH_KEY}' ({settings.contract_name} contract)",
            schema=to_apigw_schema(predict_request_schema(settings.contract_name)),
        )

        integration = apigw.LambdaIntegration(self.function, proxy=True)
        self.api.root.add_resource("predict").add_method(
            "POST",
            integration,
            request_validator=self.body_validator,
            request_models={"application/json": self.predict_model},
        )
        for path in ("model", "health", "openapi.json"):
            self.api.root.add_resource(path).add_method("GET", integration)

        self.api_key = self.api.add_api_key("ApiKey", api_key_name=f"{settings.name_prefix}-client")
        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"{settings.name_prefix}-default",
            throttle=apigw.ThrottleSettings(
                rate_limit=settings.throttle_rate_limit, burst_limit=settings.throttle_burst_limit
            ),
            quota=apigw.QuotaSettings(limit=settings.quota_per_day, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.stage)],
        )
        self.usage_plan.add_api_key(self.api_key)

        if settings.waf_enabled:
            self.web_acl = _web_acl(self, settings)
            wafv2.CfnWebACLAssociation(
                self,
                "WebAclAssociation",
                resource_arn=self.stage.stage_arn,
                web_acl_arn=self.web_acl.attr_arn,
            )
        self._acknowledge(settings)

    def _acknowledge(self, settings: ServingSettings) -> None:
        """cdk-nag findings this design accepts, each with its reason."""
        acknowledged = [
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                reason="The account-level API Gateway logging role uses AWS's managed "
                "AmazonAPIGatewayPushToCloudWatchLogs policy, the documented way to enable "
                "execution logs; it allows log delivery only.",
            )
        ]
        if settings.authorization == "api_key":
            reason = (
                "Accepted risk, not a control: with serving.authorization=api_key the methods have "
                "NO authentication. The API key only identifies a client for its usage plan "
                "(throttle + quota); anyone holding it can call the API, and AWS advises against "
                "relying on API keys for authentication. Set serving.authorization=iam to require "
                "SigV4-signed requests from IAM principals allowed execute-api:Invoke."
            )
            acknowledged += [
                Acknowledgment(id="AwsSolutions::AwsSolutions-APIG4", reason=reason),
                Acknowledgment(id="AwsSolutions::AwsSolutions-COG4", reason=reason),
            ]
        else:  # "iam": APIG4 is satisfied by AWS_IAM; COG4 asks for Cognito specifically
            acknowledged.append(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-COG4",
                    reason="Every method uses AWS_IAM authorization (serving.authorization=iam): "
                    "callers are services that sign requests with SigV4 and need "
                    "execute-api:Invoke; a Cognito user pool would add sign-in for end users, "
                    "and this API has none.",
                )
            )
        if not settings.waf_enabled:
            acknowledged.append(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-APIG3",
                    reason="WAF is off in this environment by context (serving.waf_enabled, "
                    "false in dev for cost); API keys, usage-plan throttling and request "
                    "validation still apply. prod enables it.",
                )
            )
        Validations.of(self.api).acknowledge(*acknowledged)
        if settings.tracing:
            Validations.of(self.role).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                    reason="X-Ray's PutTraceSegments/PutTelemetryRecords support no "
                    "resource-level permissions; '*' is the only valid resource.",
                )
            )


# What each API request leaves in the access log: enough to trace a call (request id, key id,
# caller IP, status, latencies, validation error), never the body or the key's value.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "apiKeyId": "$context.identity.apiKeyId",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "errorMessage": "$context.error.message",
    "validationError": "$context.error.validationErrorString",
}


def predict_request_schema(contract_name: str) -> dict[str, Any]:
    """`POST /predict` body: one customer, or `{"customers": [...]}`.

    The batch size limit is left to the function on purpose: it answers 413 naming the limit,
    which is the documented status; API Gateway would answer a bare 400.
    """
    customer = get_contract(contract_name).customer_json_schema()
    batch = {
        "type": "object",
        "properties": {BATCH_KEY: {"type": "array", "items": customer, "minItems": 1}},
        "required": [BATCH_KEY],
        "additionalProperties": False,
    }
    return {"oneOf": [customer, batch]}


_SCALAR_KEYS = {
    "description": "description",
    "title": "title",
    "enum": "enum",
    "minimum": "minimum",
    "maximum": "maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "required": "required",
    "pattern": "pattern",
}


def to_apigw_schema(schema: dict[str, Any], *, root: bool = True) -> apigw.JsonSchema:
    """A JSON Schema dict (draft 4 subset) as CDK's typed JsonSchema for an API Gateway model.

    A keyword this function does not know is an error, not silently dropped: a dropped keyword
    would make API Gateway accept what the contract forbids.
    """
    kwargs: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCALAR_KEYS:
            kwargs[_SCALAR_KEYS[key]] = value
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            if "integer" in types:
                # Draft 4 (API Gateway's models) counts 1.0 as no integer; the published document
                # (JSON Schema 2020-12) and the function accept it. A number that is a multiple
                # of 1 is an integer in both drafts, so the validator refuses exactly what the
                # document does (tests/integration/test_api_contract_fuzz.py).
                types = ["number" if t == "integer" else t for t in types]
                kwargs["multiple_of"] = 1
            converted = [apigw.JsonSchemaType[t.upper()] for t in types]
            kwargs["type"] = converted[0] if len(converted) == 1 else converted
        elif key == "properties":
            kwargs["properties"] = {k: to_apigw_schema(v, root=False) for k, v in value.items()}
        elif key == "items":
            kwargs["items"] = to_apigw_schema(value, root=False)
        elif key in ("anyOf", "oneOf", "allOf"):
            kwargs[{"anyOf": "any_of", "oneOf": "one_of", "allOf": "all_of"}[key]] = [
                to_apigw_schema(v, root=False) for v in value
            ]
        elif key == "additionalProperties":
            kwargs["additional_properties"] = (
                value if isinstance(value, bool) else to_apigw_schema(value, root=False)
            )
        else:
            raise ValueError(f"JSON Schema keyword '{key}' has no API Gateway model mapping")
    if root:  # `$schema` belongs at the top only
        kwargs["schema"] = apigw.JsonSchemaVersion.DRAFT4
    return apigw.JsonSchema(**kwargs)


def _web_acl(scope: Construct, settings: ServingSettings) -> wafv2.CfnWebACL:
    def managed(name: str, priority: int, overrides: list[str] = ()) -> Any:  # type: ignore[assignment]
        return wafv2.CfnWebACL.RuleProperty(
            name=name,
            priority=priority,
            override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS",
                    name=name,
                    rule_action_overrides=[
                        wafv2.CfnWebACL.RuleActionOverrideProperty(
                            name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                        )
                        for rule in overrides
                    ]
                    or None,
                )
            ),
            visibility_config=_visibility(name),
        )

    return wafv2.CfnWebACL(
        scope,
        "WebAcl",
        scope="REGIONAL",
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=_visibility(f"{settings.name_prefix}-api"),
        rules=[
            # The common set blocks bodies over 8 KB; a batch of customers is larger than that by
            # design (the function enforces its own limits), so that one rule only counts.
            managed("AWSManagedRulesCommonRuleSet", 0, ["SizeRestrictions_BODY"]),
            managed("AWSManagedRulesKnownBadInputsRuleSet", 1),
        ],
    )


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )
