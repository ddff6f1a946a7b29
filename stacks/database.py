"""Network and database: a VPC with isolated subnets only, the RDS instance, its secret with
hosted rotation, the Glue connection into the VPC, and the VPC endpoints that keep every call
inside AWS's network.

There is no NAT gateway and no internet gateway: the jobs and functions reach S3 through a gateway
endpoint and every other AWS API they call through an interface endpoint (the list is context).

Engine: RDS for MariaDB 10.11 is the faithful match of the MariaDB 10.11 server the tests and the
local twin run (`churnops/local/mariadb.py`); RDS for MySQL 8.0 also works with the same SQL
(`INSERT ... ON DUPLICATE KEY UPDATE`, PyMySQL) and is selectable through context.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_glue as glue
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

ENGINES = ("mariadb", "mysql")


@dataclass(frozen=True)
class DatabaseSettings:
    name_prefix: str
    engine: str  # "mariadb" (matches the tests' MariaDB 10.11) or "mysql"
    engine_version: str  # e.g. "10.11" (major: RDS picks the current minor) or "10.11.14"
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
    interface_endpoints: tuple[str, ...]  # service names, e.g. ("secretsmanager", "logs", ...)
    log_retention_days: int

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine '{self.engine}' is not one of {', '.join(ENGINES)}")
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError("max_allocated_storage_gb is below allocated_storage_gb")
        if self.max_azs < 2:
            raise ValueError("max_azs must be at least 2: an RDS subnet group spans two zones")


def removal_policy(name: str) -> RemovalPolicy:
    return {
        "destroy": RemovalPolicy.DESTROY,
        "snapshot": RemovalPolicy.SNAPSHOT,
        "retain": RemovalPolicy.RETAIN,
    }[name]


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


def log_retention(days: int) -> logs.RetentionDays:
    """The CloudWatch Logs retention for a number of days (it accepts only some values)."""
    if days not in _RETENTION:
        raise ValueError(
            f"log retention {days} days is not one CloudWatch Logs offers: {sorted(_RETENTION)}"
        )
    return logs.RetentionDays[_RETENTION[days]]


class Database(Construct):
    """Exposes `vpc`, `instance`, `secret`, `glue_connection`, `job_security_group`,
    `lambda_security_group`, `database_name` (interfaces 7)."""

    def __init__(self, scope: Construct, id: str, *, settings: DatabaseSettings) -> None:
        super().__init__(scope, id)
        self.settings = settings
        self.database_name = settings.database_name
        isolated = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        retention = log_retention(settings.log_retention_days)
        policy = removal_policy(settings.removal_policy)
        log_policy = (
            RemovalPolicy.DESTROY if policy is RemovalPolicy.DESTROY else RemovalPolicy.RETAIN
        )

        flow_logs = logs.LogGroup(self, "FlowLogs", retention=retention, removal_policy=log_policy)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(settings.vpc_cidr),
            max_azs=settings.max_azs,
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
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface endpoints: HTTPS from inside the VPC",
            allow_all_outbound=False,
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
        self.database_security_group = ec2.SecurityGroup(
            self,
            "DatabaseSecurityGroup",
            vpc=self.vpc,
            description="RDS instance: its port from the Glue jobs, the functions and rotation",
            allow_all_outbound=False,
        )
        # Glue requires a self-referencing rule: its driver and executors talk to each other.
        # Outbound is open, but the isolated subnets have no route out of the VPC.
        self.job_security_group = ec2.SecurityGroup(
            self,
            "JobSecurityGroup",
            vpc=self.vpc,
            description="Glue jobs (Spark driver and executors) in the VPC",
            allow_all_outbound=True,
        )
        self.job_security_group.add_ingress_rule(
            self.job_security_group, ec2.Port.all_tcp(), "Glue: workers of one job run"
        )
        self.lambda_security_group = ec2.SecurityGroup(
            self,
            "LambdaSecurityGroup",
            vpc=self.vpc,
            description="Functions that use the database",
            allow_all_outbound=True,
        )
        self.rotation_security_group = ec2.SecurityGroup(
            self,
            "RotationSecurityGroup",
            vpc=self.vpc,
            description="Secrets Manager hosted rotation function",
            allow_all_outbound=True,
        )
        for client, what in (
            (self.job_security_group, "Glue jobs"),
            (self.lambda_security_group, "functions"),
            (self.rotation_security_group, "secret rotation"),
        ):
            self.database_security_group.add_ingress_rule(
                client, ec2.Port.tcp(settings.port), f"database from {what}"
            )

        instance_identifier = f"{settings.name_prefix}-db"
        # Created before the instance so the exported logs get our retention, not "never expire".
        error_log = logs.LogGroup(
            self,
            "ErrorLog",
            log_group_name=f"/aws/rds/instance/{instance_identifier}/error",
            retention=retention,
            removal_policy=log_policy,
        )
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            instance_identifier=instance_identifier,
            engine=_engine(settings.engine, settings.engine_version),
            instance_type=ec2.InstanceType(settings.instance_type),
            vpc=self.vpc,
            vpc_subnets=isolated,
            security_groups=[self.database_security_group],
            publicly_accessible=False,
            port=settings.port,
            database_name=settings.database_name,
            credentials=rds.Credentials.from_generated_secret(
                settings.admin_username,
                secret_name=f"{settings.name_prefix}/database/admin",
            ),
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
                id="AwsSolutions::AwsSolutions-RDS11",
                reason="The instance is reachable only from three security groups inside "
                "isolated subnets with no route to the internet; a non-default port would add "
                "no protection there and would surprise MySQL tooling.",
            )
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


def _engine(engine: str, version: str) -> rds.IInstanceEngine:
    major = ".".join(version.split(".")[:2])
    if engine == "mariadb":
        return rds.DatabaseInstanceEngine.maria_db(
            version=rds.MariaDbEngineVersion.of(version, major)
        )
    return rds.DatabaseInstanceEngine.mysql(version=rds.MysqlEngineVersion.of(version, major))
