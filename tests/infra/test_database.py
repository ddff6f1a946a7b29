"""Database construct: isolated network, private encrypted RDS, rotated secret, Glue connection
and the endpoints that keep traffic inside AWS."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.infra.template_helpers import logical_id


@pytest.fixture(scope="module")
def template(core: Any) -> Template:
    return core.template


@pytest.fixture(scope="module")
def settings(core: Any) -> Any:
    return core.database.settings


def test_vpc_has_only_isolated_subnets_and_no_way_out(template: Template, core: Any) -> None:
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    vpc = core.database.vpc
    assert vpc.public_subnets == [] and vpc.private_subnets == []
    assert len(vpc.isolated_subnets) == core.database.settings.max_azs
    for subnet in template.find_resources("AWS::EC2::Subnet").values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False


def test_vpc_flow_logs_record_rejected_traffic(template: Template, core: Any) -> None:
    template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {"ResourceType": "VPC", "TrafficType": "REJECT", "LogDestinationType": "cloud-watch-logs"},
    )


def test_instance_is_private_encrypted_and_backed_up(template: Template, settings: Any) -> None:
    template.has_resource_properties(
        "AWS::RDS::DBInstance",
        {
            "Engine": settings.engine,
            "EngineVersion": settings.engine_version,
            "AutoMinorVersionUpgrade": True,
            "DBInstanceClass": f"db.{settings.instance_type}",
            "PubliclyAccessible": False,
            "StorageEncrypted": True,
            "BackupRetentionPeriod": settings.backup_retention_days,
            "DeletionProtection": settings.deletion_protection,
            "MultiAZ": settings.multi_az,
            "Port": str(settings.port),
            "DBName": settings.database_name,
            "AllocatedStorage": str(settings.allocated_storage_gb),
            "MaxAllocatedStorage": settings.max_allocated_storage_gb,
        },
    )


def test_default_engine_is_the_tests_mariadb_major(settings: Any) -> None:
    # The tests and the twin run MariaDB 10.11 (churnops/local/mariadb.py); RDS runs the
    # current 10.11 minor, so only the major is pinned (minor drift is expected, docs/deploy.md).
    assert settings.engine == "mariadb"
    assert settings.engine_version == "10.11"


def test_a_pinned_minor_version_is_refused(settings: Any) -> None:
    """RDS retires minor versions: a stack pinned to one stops deploying when it goes."""
    with pytest.raises(ValueError, match="not a major version"):
        dataclasses.replace(settings, engine_version="10.11.19")


def test_subnet_group_uses_the_isolated_subnets(template: Template, core: Any) -> None:
    isolated = [{"Ref": logical_id(s)} for s in core.database.vpc.isolated_subnets]
    template.has_resource_properties(
        "AWS::RDS::DBSubnetGroup", {"SubnetIds": Match.array_equals(isolated)}
    )


def test_password_is_generated_into_secrets_manager_never_into_the_template(
    template: Template, core: Any
) -> None:
    template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {
            "GenerateSecretString": Match.object_like(
                {"GenerateStringKey": "password", "SecretStringTemplate": Match.any_value()}
            )
        },
    )
    instance = template.find_resources("AWS::RDS::DBInstance")
    (props,) = [r["Properties"] for r in instance.values()]
    password = props["MasterUserPassword"]
    assert "Fn::Join" in password and "resolve:secretsmanager" in str(password)


def test_secret_rotates_with_hosted_rotation_inside_the_vpc(
    template: Template, core: Any, settings: Any
) -> None:
    rotation_sg = logical_id(core.database.rotation_security_group)
    template.has_resource_properties(
        "AWS::SecretsManager::RotationSchedule",
        {
            "HostedRotationLambda": Match.object_like(
                {
                    "RotationType": "MariaDBSingleUser",
                    "VpcSecurityGroupIds": {"Fn::GetAtt": [rotation_sg, "GroupId"]},
                    "VpcSubnetIds": Match.any_value(),
                }
            ),
            "RotationRules": {"ScheduleExpression": f"rate({settings.rotation_days} days)"},
        },
    )
    # Hosted rotation is a Secrets Manager transform: AWS deploys and owns the function.
    assert str(template.to_json().get("Transform")).startswith("AWS::SecretsManager-")


def test_database_admits_its_port_only_from_jobs_functions_and_rotation(
    template: Template, core: Any, settings: Any
) -> None:
    db_sg = logical_id(core.database.database_security_group)
    sources = {
        logical_id(sg)
        for sg in (
            core.database.job_security_group,
            core.database.lambda_security_group,
            core.database.rotation_security_group,
        )
    }
    ingress = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [db_sg, "GroupId"]}
    ]
    assert {i["SourceSecurityGroupId"]["Fn::GetAtt"][0] for i in ingress} == sources
    assert all(i["FromPort"] == i["ToPort"] == settings.port for i in ingress)
    db_group = template.to_json()["Resources"][db_sg]["Properties"]
    assert "SecurityGroupIngress" not in db_group  # no CIDR-based rule at all


def test_glue_job_security_group_references_itself(template: Template, core: Any) -> None:
    job_sg = logical_id(core.database.job_security_group)
    template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "GroupId": {"Fn::GetAtt": [job_sg, "GroupId"]},
            "SourceSecurityGroupId": {"Fn::GetAtt": [job_sg, "GroupId"]},
            "IpProtocol": "tcp",
            "FromPort": 0,
            "ToPort": 65535,
        },
    )


def test_glue_connection_places_jobs_in_an_isolated_subnet(template: Template, core: Any) -> None:
    job_sg = logical_id(core.database.job_security_group)
    subnet = core.database.vpc.isolated_subnets[0]
    template.has_resource_properties(
        "AWS::Glue::Connection",
        {
            "ConnectionInput": {
                "ConnectionType": "NETWORK",
                "Name": f"{core.database.settings.name_prefix}-vpc",
                "Description": Match.any_value(),
                "PhysicalConnectionRequirements": {
                    "SubnetId": {"Ref": logical_id(subnet)},
                    "SecurityGroupIdList": [{"Fn::GetAtt": [job_sg, "GroupId"]}],
                    "AvailabilityZone": Match.any_value(),
                },
            }
        },
    )


def test_s3_gateway_endpoint_serves_the_isolated_route_tables(
    template: Template, core: Any
) -> None:
    gateways = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::VPCEndpoint").values()
        if r["Properties"].get("VpcEndpointType") == "Gateway"
    ]
    assert len(gateways) == 1 and ".s3" in str(gateways[0]["ServiceName"])
    tables = {
        logical_id(subnet.node.find_child("RouteTable"))
        for subnet in core.database.vpc.isolated_subnets
    }
    assert {t["Ref"] for t in gateways[0]["RouteTableIds"]} == tables


def test_an_interface_endpoint_per_configured_service(template: Template, settings: Any) -> None:
    interfaces = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::VPCEndpoint").values()
        if r["Properties"].get("VpcEndpointType") == "Interface"
    ]
    names = sorted(str(p["ServiceName"]).rsplit(".", 1)[-1].strip("'\"]}") for p in interfaces)
    assert names == sorted(settings.interface_endpoints)
    assert all(p["PrivateDnsEnabled"] is True for p in interfaces)


def test_endpoint_security_group_admits_https_from_the_vpc_only(
    template: Template, core: Any, settings: Any
) -> None:
    sg = logical_id(core.database.endpoint_security_group)
    props = template.to_json()["Resources"][sg]["Properties"]
    rules = [
        {k: v for k, v in r.items() if k != "Description"} for r in props["SecurityGroupIngress"]
    ]
    assert rules == [
        {"CidrIp": settings.vpc_cidr, "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443}
    ]


def test_database_error_log_is_exported_with_retention(template: Template, settings: Any) -> None:
    # The group's name follows the instance identifier (tests/infra/test_teardown.py).
    template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {
            "LogGroupName": {
                "Fn::Join": [
                    "",
                    Match.array_with(
                        [Match.string_like_regexp(f"^/aws/rds/instance/{settings.name_prefix}-db-")]
                    ),
                ]
            },
            "RetentionInDays": settings.log_retention_days,
        },
    )
    template.has_resource_properties(
        "AWS::RDS::DBInstance", {"EnableCloudwatchLogsExports": ["error"]}
    )
