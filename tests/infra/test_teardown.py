"""Teardown and replacement are safe: what outlives `cdk destroy` does not block the next deploy,
a replacement never meets the name it replaces, the account-wide API Gateway logging role
survives, and the VPC has the interface endpoints its code calls, in zones that offer them.

AWS facts these tests rest on:
- AWS::ApiGateway::Account holds one CloudWatch role per account and region for every REST API
  there, and "When you delete a stack containing this resource, API Gateway can still assume the
  provided IAM role" (CloudFormation reference, aws-resource-apigateway-account); CDK's
  `cloudWatchRoleRemovalPolicy` applies to the role and the Account resource
  (aws_cdk.aws_apigateway.RestApiBaseProps).
- Create-only properties replace a resource when they change (CloudFormation resource schemas:
  AWS::RDS::DBInstance DBInstanceIdentifier, DBName, MasterUsername, DBSubnetGroupName; the name of
  AWS::Logs::LogGroup, AWS::SecretsManager::Secret, AWS::Glue::SecurityConfiguration), and
  CloudFormation cannot replace a resource whose custom name stays the same.
- AWS::Glue::SecurityConfiguration has no update handler in its registry schema and Glue has no
  UpdateSecurityConfiguration API: any change is a replacement.
- A deleted secret keeps its name for a recovery window of at least seven days (Secrets Manager
  User Guide, "Delete an AWS Secrets Manager secret").
- RDS exports an instance's logs to /aws/rds/instance/<identifier>/<log type>.
- Glue's own traffic (logs, metrics, Data Catalog) goes through Glue's proxy, not the job's VPC
  (docs.aws.amazon.com/glue/latest/dg/connection-VPC-disable-proxy.html); an interface endpoint
  nothing in the VPC calls only costs money.
- Interface endpoint services are not offered in every zone (repost.aws/knowledge-center/
  interface-endpoint-availability-zone); CDK's lookup of supported zones needs an
  environment-specific stack (InterfaceVpcEndpointOptions.lookup_supported_azs), which this app
  is not, hence the explicit `database.availability_zones`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Match, Template

from stacks.database import Database, DatabaseSettings
from tests.infra.template_helpers import logical_id, settings_from_cdk_json

NAME_PROPERTIES = (
    "Name",
    "LogGroupName",
    "DBInstanceIdentifier",
    "TopicName",
    "AlarmName",
    "DashboardName",
    "StateMachineName",
    "FunctionName",
    "BucketName",
    "QueueName",
    "RoleName",
    "KeyName",
)
STACK_ID = {"Ref": "AWS::StackId"}


def _mentions(value: Any, fragment: Any) -> bool:
    return json.dumps(fragment) in json.dumps(value)


def test_the_account_wide_api_gateway_logging_role_is_retained_even_in_dev(core: Any) -> None:
    assert core.serving.settings.removal_policy == "destroy"  # dev: everything else goes
    template = core.template
    template.has_resource(
        "AWS::IAM::Role",
        {
            "Properties": Match.object_like(
                {
                    "ManagedPolicyArns": [
                        {
                            "Fn::Join": [
                                "",
                                [
                                    "arn:",
                                    {"Ref": "AWS::Partition"},
                                    ":iam::aws:policy/service-role/"
                                    "AmazonAPIGatewayPushToCloudWatchLogs",
                                ],
                            ]
                        }
                    ]
                }
            ),
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )
    template.has_resource(
        "AWS::ApiGateway::Account", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    )


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_nothing_that_outlives_the_stack_keeps_a_name_the_next_stack_needs(
    environment: str, churnops: Any, churnops_prod: Any
) -> None:
    # A retained (or snapshotted) resource stays after `cdk destroy`; with a fixed name the next
    # `cdk deploy` of the stack would fail on it. Ending the name with the stack's id avoids that.
    synthesized = churnops if environment == "dev" else churnops_prod
    resources = synthesized.template.to_json()["Resources"]
    stuck = []
    for rid, resource in resources.items():
        if resource.get("DeletionPolicy") not in ("Retain", "Snapshot", "RetainExceptOnCreate"):
            continue
        for key in NAME_PROPERTIES:
            name = resource.get("Properties", {}).get(key)
            if name is not None and not _mentions(name, STACK_ID):
                stuck.append((rid, key, name))
    assert stuck == []


def test_the_database_identifier_changes_with_what_replaces_the_instance(core: Any) -> None:
    from stacks.database import instance_identifier

    settings = core.database.settings
    stack = Stack(App(), "Identifiers")

    def identifier(**change: Any) -> str:
        resolved = stack.resolve(
            instance_identifier(stack, dataclasses.replace(settings, **change))
        )
        return json.dumps(resolved)

    same = identifier()
    assert _mentions(json.loads(same), STACK_ID)  # a redeploy after destroy gets a new one
    for change in (
        {"database_name": "other"},
        {"admin_username": "other_admin"},
        {"engine": "mysql"},
        {"vpc_cidr": "10.41.0.0/16"},
    ):
        assert identifier(**change) != same, change
    # Settings that update in place must not rename (and so replace) the instance.
    for change in ({"instance_type": "m7g.large"}, {"multi_az": True}, {"port": 3307}):
        assert identifier(**change) == same, change


def test_the_exported_error_log_group_follows_the_instance_identifier(core: Any) -> None:
    resources = core.template.to_json()["Resources"]
    instance = resources[logical_id(core.database.instance)]["Properties"]
    identifier = _rendered(instance["DBInstanceIdentifier"])
    groups = [
        _rendered(r["Properties"]["LogGroupName"])
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup" and "LogGroupName" in r["Properties"]
    ]
    assert f"/aws/rds/instance/{identifier}/error" in groups


def _rendered(value: Any) -> str:
    """A string-valued intrinsic as one string (references kept as their JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_rendered(p) for p in parts)
    return json.dumps(value, sort_keys=True)


def test_the_database_secret_has_no_fixed_name(template_of_app: Template) -> None:
    for rid, secret in template_of_app.find_resources("AWS::SecretsManager::Secret").items():
        assert "Name" not in secret.get("Properties", {}), rid


def test_glue_security_configurations_are_renamed_by_what_replaces_them(
    template_of_app: Template,
) -> None:
    resources = template_of_app.to_json()["Resources"]
    configurations = template_of_app.find_resources("AWS::Glue::SecurityConfiguration")
    assert len(configurations) == 2
    names = set()
    for rid, configuration in configurations.items():
        name = configuration["Properties"]["Name"]
        refs = [p["Ref"] for p in name["Fn::Join"][1] if isinstance(p, dict) and "Ref" in p]
        # The name holds the id of the key the configuration encrypts with: a new key, a new name.
        assert len(refs) == 1 and resources[refs[0]]["Type"] == "AWS::KMS::Key", rid
        assert refs[0] in json.dumps(configuration["Properties"]["EncryptionConfiguration"]), rid
        names.add(json.dumps(name))
    assert len(names) == 2


def test_state_machine_log_groups_keep_the_vendedlogs_prefix_and_end_with_the_stack_id(
    template_of_app: Template,
) -> None:
    machines = template_of_app.find_resources("AWS::StepFunctions::StateMachine")
    assert len(machines) == 3  # ingest, retrain, rollout
    groups = template_of_app.find_resources(
        "AWS::Logs::LogGroup",
        {"Properties": {"LogGroupName": {"Fn::Join": ["", Match.any_value()]}}},
    )
    vended = [
        g["Properties"]["LogGroupName"]
        for g in groups.values()
        if str(g["Properties"]["LogGroupName"]["Fn::Join"][1][0]).startswith(
            "/aws/vendedlogs/states/"
        )
    ]
    assert len(vended) == len(machines)
    assert all(_mentions(name, STACK_ID) for name in vended)


def test_interface_endpoints_only_for_services_code_in_the_vpc_calls(
    template_of_app: Template,
) -> None:
    endpoints = [
        r["Properties"]
        for r in template_of_app.find_resources("AWS::EC2::VPCEndpoint").values()
        if r["Properties"].get("VpcEndpointType") == "Interface"
    ]
    services = {json.dumps(e["ServiceName"]).rsplit(".", 1)[-1].strip("\"']} ") for e in endpoints}
    assert services, "the database secret needs the Secrets Manager endpoint"
    assert not services & {"sns", "events", "sts"}
    from stacks.database import ENDPOINT_CALLERS  # each remaining one names its caller

    assert services <= set(ENDPOINT_CALLERS)


@pytest.fixture(scope="module")
def template_of_app(churnops: Any) -> Template:
    return churnops.template


@pytest.fixture(scope="module")
def pinned_zones() -> tuple[Database, Template]:
    """The Database construct alone, told to use two named zones."""
    settings = dataclasses.replace(
        settings_from_cdk_json(DatabaseSettings, "database"),
        availability_zones=("eu-west-1a", "eu-west-1c"),
    )
    stack = Stack(App(), "PinnedZones")
    database = Database(stack, "Database", settings=settings)
    return database, Template.from_stack(stack)


def test_explicit_zones_place_the_subnets_endpoints_and_glue_connection_there(
    pinned_zones: tuple[Database, Template],
) -> None:
    database, template = pinned_zones
    subnets = template.find_resources("AWS::EC2::Subnet")
    assert sorted(s["Properties"]["AvailabilityZone"] for s in subnets.values()) == [
        "eu-west-1a",
        "eu-west-1c",
    ]
    isolated = sorted(logical_id(s) for s in database.vpc.isolated_subnets)
    for endpoint in template.find_resources(
        "AWS::EC2::VPCEndpoint", {"Properties": {"VpcEndpointType": "Interface"}}
    ).values():
        assert sorted(r["Ref"] for r in endpoint["Properties"]["SubnetIds"]) == isolated
    template.has_resource_properties(
        "AWS::Glue::Connection",
        {
            "ConnectionInput": Match.object_like(
                {
                    "PhysicalConnectionRequirements": Match.object_like(
                        {"AvailabilityZone": "eu-west-1a"}
                    )
                }
            )
        },
    )


@pytest.mark.parametrize(
    "zones", [("eu-west-1a",), ("eu-west-1a", "eu-west-1a"), ("eu-west-1a", "")]
)
def test_settings_refuse_fewer_than_two_distinct_zones(core: Any, zones: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="availability_zones"):
        dataclasses.replace(core.database.settings, availability_zones=zones)
