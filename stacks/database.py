"""Network and database: a VPC with isolated subnets only, the RDS instance, its secret with
hosted rotation, the Glue connection into the VPC, and the VPC endpoints that keep every call
inside AWS's network.

There is no NAT gateway and no internet gateway: the jobs and functions reach S3 through a gateway
endpoint and every other AWS API they call through an interface endpoint (the list is context;
ENDPOINT_CALLERS says who in the VPC calls each service, docs/deploy.md "Network notes" why the
others are not needed). Interface endpoints are not offered in every zone of every region: the
context key `database.availability_zones` pins the zones (docs/deploy.md says how to pick them).

Physical names: the instance identifier carries a digest of the settings whose change replaces the
instance and this stack's id, so a replacement or a redeploy after `cdk destroy` never meets the
old name (see `instance_identifier`); the secret's name is left to CloudFormation.

Engine: RDS for MariaDB 10.11 is the faithful match of the MariaDB 10.11 server the tests and the
local twin run (`churnops/local/mariadb.py`); RDS for MySQL 8.0 also works with the same SQL
(`INSERT ... ON DUPLICATE KEY UPDATE`, PyMySQL) and is selectable through context.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Protocol

from aws_cdk import Acknowledgment, Aws, Duration, Fn, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_glue as glue
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

ENGINES = ("mariadb", "mysql")
# Who in the VPC calls each interface endpoint's service (anything not here has no caller there:
# an endpoint for it would only cost money). S3 is the gateway endpoint, always present. Glue
# sends its own traffic (script download, continuous logs, job metrics, Data Catalog) through a
# proxy in Glue's VPC, not ours, unless a job sets --disable-proxy-v2, and even then logs stay on
# the proxy (docs.aws.amazon.com/glue/latest/dg/connection-VPC-disable-proxy.html); a function's
# logs are shipped by Lambda, not by the function's network interface.
ENDPOINT_CALLERS = {
    "secretsmanager": "the Glue jobs and the snapshot function read the database secret "
    "(churnops.database.connect); the hosted rotation function rotates it",
}
# RDS instance identifiers: letters, digits and single hyphens, a letter first, at most 63.
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_IDENTIFIER_SUFFIX = len("-db-") + 8 + 1 + 8  # "-db-<settings digest>-<stack id>"


@dataclass(frozen=True)
class DatabaseSettings:
    name_prefix: str
    engine: str  # "mariadb" (matches the tests' MariaDB 10.11) or "mysql"
    # A major version ("10.11", "11.4"; MySQL "8.0", "8.4"), never a minor: RDS creates the
    # instance at that major's default minor and, with auto minor upgrades on, keeps it current,
    # while a pinned minor ("10.11.19") breaks fresh deploys once RDS retires it.
    engine_version: str
    instance_type: str  # e.g. "t4g.micro"
    allocated_storage_gb: int
    max_allocated_storage_gb: int  # storage autoscaling ceiling
    port: int
    database_name: str
    admin_username: str
    multi_az: bool
    backup_retention_days: int
    deletion_protection: bool
    removal_policy: str  # "destroy" (dev), "snapshot" or "retain" (prod)
    rotation_days: int
    vpc_cidr: str
    max_azs: int
    interface_endpoints: tuple[str, ...]  # service names, e.g. ("secretsmanager",)
    log_retention_days: int
    # Zones by name, e.g. ("eu-west-1a", "eu-west-1b"): every interface endpoint service must be
    # offered in each. Empty: the region's first `max_azs` zones (CloudFormation Fn::GetAZs).
    availability_zones: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine '{self.engine}' is not one of {', '.join(ENGINES)}")
        if not re.fullmatch(r"\d+\.\d+", self.engine_version):
            raise ValueError(
                f"engine_version '{self.engine_version}' is not a major version such as "
                "'10.11': RDS retires minor versions, so a pinned minor stops fresh deploys; "
                "the instance takes the major's default minor and upgrades minors itself"
            )
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError("max_allocated_storage_gb is below allocated_storage_gb")
        if self.max_azs < 2:
            raise ValueError("max_azs must be at least 2: an RDS subnet group spans two zones")
        zones = self.availability_zones
        if zones and (len(zones) < 2 or len(set(zones)) != len(zones) or not all(zones)):
            raise ValueError(
                "availability_zones must name at least two different zones (an RDS subnet group "
                "spans two), or be empty"
            )
        prefix = self.name_prefix.lower()
        if not _IDENTIFIER.match(prefix) or len(prefix) + _IDENTIFIER_SUFFIX > 63:
            raise ValueError(
                f"name_prefix '{self.name_prefix}' cannot start an RDS instance identifier: "
                f"letters, digits and single hyphens, a letter first, at most "
                f"{63 - _IDENTIFIER_SUFFIX} characters"
            )


def removal_policy(name: str) -> RemovalPolicy:
    return {
        "destroy": RemovalPolicy.DESTROY,
        "snapshot": RemovalPolicy.SNAPSHOT,
        "retain": RemovalPolicy.RETAIN,
    }[name]


def removal_without_snapshot(name: str) -> RemovalPolicy:
    """The policy for what has no snapshot (log groups, keys, queues): "destroy" destroys it,
    "snapshot" and "retain" keep it."""
    return RemovalPolicy.DESTROY if name == "destroy" else RemovalPolicy.RETAIN


# CloudWatch Logs accepts only these retention periods (days -> CDK enum member name).
_RETENTION = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


def stack_id_suffix(scope: Construct) -> str:
    """The first 8 hex digits of the id of `scope`'s stack (the UUID at the end of
    AWS::StackId), as a token: stable across updates of the stack, new for every stack created,
    so a physical name ending with it never meets a resource a deleted earlier stack retained."""
    Stack.of(scope)  # a pseudo parameter means the stack it is used in: check there is one
    stack_uuid = Fn.select(2, Fn.split("/", Aws.STACK_ID))
    return Fn.select(0, Fn.split("-", stack_uuid))


def log_retention(days: int) -> logs.RetentionDays:
    """The CloudWatch Logs retention for a number of days (it accepts only some values)."""
    if days not in _RETENTION:
        raise ValueError(
            f"log retention {days} days is not one CloudWatch Logs offers: {sorted(_RETENTION)}"
        )
    return logs.RetentionDays[_RETENTION[days]]


class LogLifecycle(Protocol):
    """The fields of a construct's settings that decide what happens to its logs (and keys,
    queues: whatever has no snapshot)."""

    @property
    def removal_policy(self) -> str: ...
    @property
    def log_retention_days(self) -> int: ...


def log_lifecycle(settings: LogLifecycle) -> tuple[RemovalPolicy, logs.RetentionDays]:
    """(removal policy, log retention) of what a construct makes that has no snapshot."""
    return (
        removal_without_snapshot(settings.removal_policy),
        log_retention(settings.log_retention_days),
    )


class Database(Construct):
    """Exposes `vpc`, `instance`, `secret`, `glue_connection`, `job_security_group`,
    `lambda_security_group`, `database_name` (interfaces 7), plus `endpoints` and
    `instance_identifier` (a token: see `instance_identifier()`)."""

    def __init__(self, scope: Construct, id: str, *, settings: DatabaseSettings) -> None:
        super().__init__(scope, id)
        self.settings = settings
        self.database_name = settings.database_name
        isolated = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        policy = removal_policy(settings.removal_policy)
        log_policy, retention = log_lifecycle(settings)

        flow_logs = logs.LogGroup(self, "FlowLogs", retention=retention, removal_policy=log_policy)
        # CDK accepts either explicit zones or a count, not both.
        zones = (
            {"availability_zones": list(settings.availability_zones)}
            if settings.availability_zones
            else {"max_azs": settings.max_azs}
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(settings.vpc_cidr),
            **zones,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
            flow_logs={
                "rejected": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )

        # Endpoints: S3 through a (free) gateway endpoint, the other APIs through interface
        # endpoints that share one security group open to the VPC on HTTPS only.
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[isolated]
        )

        def security_group(
            construct_id: str, description: str, *, all_outbound: bool
        ) -> ec2.SecurityGroup:
            return ec2.SecurityGroup(
                self,
                construct_id,
                vpc=self.vpc,
                description=description,
                allow_all_outbound=all_outbound,
            )

        self.endpoint_security_group = security_group(
            "EndpointSecurityGroup",
            "Interface endpoints: HTTPS from inside the VPC",
            all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(settings.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC"
        )
        self.endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        for service in settings.interface_endpoints:
            self.endpoints[service] = self.vpc.add_interface_endpoint(
                "Endpoint" + "".join(part.capitalize() for part in service.split(".")),
                service=ec2.InterfaceVpcEndpointAwsService(service),
                subnets=isolated,
                security_groups=[self.endpoint_security_group],
                private_dns_enabled=True,
                open=False,  # the group above already admits HTTPS from the VPC's CIDR
            )

        # Security groups: the database accepts its port only from the groups below.
        self.database_security_group = security_group(
            "DatabaseSecurityGroup",
            "RDS instance: its port from the Glue jobs, the functions and rotation",
            all_outbound=False,
        )
        # Glue requires a self-referencing rule: its driver and executors talk to each other.
        # Outbound is open, but the isolated subnets have no route out of the VPC.
        self.job_security_group = security_group(
            "JobSecurityGroup",
            "Glue jobs (Spark driver and executors) in the VPC",
            all_outbound=True,
        )
        self.job_security_group.add_ingress_rule(
            self.job_security_group, ec2.Port.all_tcp(), "Glue: workers of one job run"
        )
        self.lambda_security_group = security_group(
            "LambdaSecurityGroup", "Functions that use the database", all_outbound=True
        )
        self.rotation_security_group = security_group(
            "RotationSecurityGroup", "Secrets Manager hosted rotation function", all_outbound=True
        )
        for client, what in (
            (self.job_security_group, "Glue jobs"),
            (self.lambda_security_group, "functions"),
            (self.rotation_security_group, "secret rotation"),
        ):
            self.database_security_group.add_ingress_rule(
                client, ec2.Port.tcp(settings.port), f"database from {what}"
            )

        self.instance_identifier = instance_identifier(self, settings)
        # Created before the instance so the exported logs get our retention, not "never expire":
        # RDS exports to /aws/rds/instance/<identifier>/<log type> (docs.aws.amazon.com/AmazonRDS/
        # latest/UserGuide/USER_LogAccess.MariaDB.PublishtoCloudWatchLogs.html), hence an
        # identifier known before the instance exists.
        error_log = logs.LogGroup(
            self,
            "ErrorLog",
            log_group_name=f"/aws/rds/instance/{self.instance_identifier}/error",
            retention=retention,
            removal_policy=log_policy,
        )
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            instance_identifier=self.instance_identifier,
            engine=_engine(settings.engine, settings.engine_version),
            instance_type=ec2.InstanceType(settings.instance_type),
            vpc=self.vpc,
            vpc_subnets=isolated,
            security_groups=[self.database_security_group],
            publicly_accessible=False,
            port=settings.port,
            database_name=settings.database_name,
            # No secret name: a deleted secret keeps its name for a recovery window of at least
            # seven days (Secrets Manager User Guide, "Delete an AWS Secrets Manager secret") and
            # a retained one keeps it for good, so a fixed name would fail the next deploy.
            credentials=rds.Credentials.from_generated_secret(settings.admin_username),
            storage_encrypted=True,
            storage_type=rds.StorageType.GP3,
            allocated_storage=settings.allocated_storage_gb,
            max_allocated_storage=settings.max_allocated_storage_gb,
            multi_az=settings.multi_az,
            backup_retention=Duration.days(settings.backup_retention_days),
            delete_automated_backups=policy is RemovalPolicy.DESTROY,
            deletion_protection=settings.deletion_protection,
            removal_policy=policy,
            auto_minor_version_upgrade=True,
            copy_tags_to_snapshot=True,
            cloudwatch_logs_exports=["error"],
        )
        self.instance.node.add_dependency(error_log)
        assert self.instance.secret is not None  # generated credentials always make a secret
        self.secret: secretsmanager.ISecret = self.instance.secret

        # Hosted rotation: Secrets Manager deploys and owns the rotation function (no Serverless
        # Application Repository app in our template); it runs in the isolated subnets and
        # reaches Secrets Manager through the interface endpoint.
        rotation = (
            secretsmanager.HostedRotation.maria_db_single_user
            if settings.engine == "mariadb"
            else secretsmanager.HostedRotation.mysql_single_user
        )
        self.secret.add_rotation_schedule(
            "Rotation",
            automatically_after=Duration.days(settings.rotation_days),
            hosted_rotation=rotation(
                # Named so people find it; a function is replaced only when its name changes
                # (FunctionName is create-only) and is deleted with the stack.
                function_name=f"{settings.name_prefix}-db-rotation",
                vpc=self.vpc,
                vpc_subnets=isolated,
                security_groups=[self.rotation_security_group],
            ),
        )

        # A NETWORK connection only places the Glue job's workers in the VPC (subnet + security
        # group); the job reads the credentials from the secret itself, so none are copied here.
        subnet = self.vpc.isolated_subnets[0]
        self.glue_connection = glue.CfnConnection(
            self,
            "GlueConnection",
            catalog_id=Stack.of(self).account,
            connection_input=glue.CfnConnection.ConnectionInputProperty(
                # Glue requires a name; only a new name (or catalog) replaces a connection, the
                # rest updates in place, and it is deleted with the stack.
                name=f"{settings.name_prefix}-vpc",
                description="Places ChurnOps Glue jobs in the isolated subnets, next to the database",
                connection_type="NETWORK",
                physical_connection_requirements=glue.CfnConnection.PhysicalConnectionRequirementsProperty(
                    availability_zone=subnet.availability_zone,
                    subnet_id=subnet.subnet_id,
                    security_group_id_list=[self.job_security_group.security_group_id],
                ),
            ),
        )

        acknowledged = [
            Acknowledgment(
                id="CloudFormation-Validate::E9006",
                reason="The engine version is a major version on purpose (DatabaseSettings."
                "engine_version): RDS takes a major and creates the instance at its default "
                "minor (CDK's own MariaDbEngineVersion.VER_10_11 is '10.11', 'only a major "
                "version'); the validator's list holds only minors, which RDS retires.",
            ),
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-RDS11",
                reason="The instance is reachable only from three security groups inside "
                "isolated subnets with no route to the internet; a non-default port would add "
                "no protection there and would surprise MySQL tooling.",
            ),
        ]
        if not settings.multi_az:
            acknowledged.append(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-RDS3",
                    reason="Single-AZ is this environment's explicit choice (context "
                    "database.multi_az, false in dev for cost); prod sets it true.",
                )
            )
        if not settings.deletion_protection:
            acknowledged.append(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-RDS10",
                    reason="Deletion protection is off only where context says so (dev, to "
                    "allow `cdk destroy`); prod turns it on.",
                )
            )
        Validations.of(self.instance).acknowledge(*acknowledged)
        # cfn-lint checks the same list of minors (E3691); the same reason holds (see the
        # CloudFormation-Validate::E9006 acknowledgement above), for this one property's rule.
        cfn_instance = self.instance.node.default_child
        assert isinstance(cfn_instance, rds.CfnDBInstance)
        cfn_instance.add_metadata("cfn-lint", {"config": {"ignore_checks": ["E3691"]}})


# The settings whose change replaces the instance (DBName, MasterUsername and, through a new VPC,
# DBSubnetGroupName are create-only properties of AWS::RDS::DBInstance; another engine cannot be
# converted to in place). The identifier is create-only too, so a fixed one would make
# CloudFormation refuse such a change ("cannot update a stack when a custom-named resource
# requires replacing"); with these in the name the replacement gets a new one.
_REPLACING_SETTINGS = ("engine", "database_name", "admin_username", "vpc_cidr")


def instance_identifier(scope: Construct, settings: DatabaseSettings) -> str:
    """`<prefix>-db-<digest of the replacing settings>-<stack id suffix>` (a token)."""
    replacing = {name: getattr(settings, name) for name in _REPLACING_SETTINGS}
    digest = hashlib.sha256(json.dumps(replacing, sort_keys=True).encode()).hexdigest()[:8]
    return f"{settings.name_prefix.lower()}-db-{digest}-{stack_id_suffix(scope)}"


def _engine(engine: str, major: str) -> rds.IInstanceEngine:
    # The major as the full version, as CDK's own MariaDbEngineVersion.VER_10_11 does.
    if engine == "mariadb":
        return rds.DatabaseInstanceEngine.maria_db(
            version=rds.MariaDbEngineVersion.of(major, major)
        )
    return rds.DatabaseInstanceEngine.mysql(version=rds.MysqlEngineVersion.of(major, major))
