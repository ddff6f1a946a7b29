"""The Glue job roles (stacks/flows.py `vpc_glue_job`) in the app as `cdk synth` builds it: job
metrics that can actually be published, and EC2 grants scoped as AWS's managed Glue role does.

AWS facts these tests rest on:
- Glue's job metrics go to the CloudWatch namespace "Glue" (docs.aws.amazon.com/glue/latest/dg/
  monitoring-awsglue-with-cloudwatch-metrics.html) and need cloudwatch:PutMetricData on the job's
  role and a GlueContext in the script (repost.aws/knowledge-center/glue-job-metrics-cloudwatch;
  the GlueContext side: tests/unit/test_gluejob_context.py).
- PutMetricData is scoped by the `cloudwatch:namespace` condition key (docs.aws.amazon.com/
  AmazonCloudWatch/latest/monitoring/iam-cw-condition-keys-namespace.html).
- AWSGlueServiceRole v5 (docs.aws.amazon.com/aws-managed-policy/latest/reference/
  AWSGlueServiceRole.html) allows ec2:CreateTags/DeleteTags only on network-interface,
  security-group and instance resources, with "ForAllValues:StringEquals" on aws:TagKeys
  ["aws-glue-service-resource"]; CreateNetworkInterface and the Describe* reads on "*".
- DeleteNetworkInterface acts on a network-interface resource with the ec2:Vpc condition key
  (Service Authorization Reference, "Actions defined by Amazon EC2").
"""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from stacks.flows import GLUE_VPC_ACTIONS
from tests.infra.template_helpers import as_list, logical_id

EC2_ARN_PARTS = [
    "arn:",
    {"Ref": "AWS::Partition"},
    ":ec2:",
    {"Ref": "AWS::Region"},
    ":",
    {"Ref": "AWS::AccountId"},
]


@pytest.fixture(scope="module")
def template(churnops: Any) -> Template:
    return churnops.template


@pytest.fixture(scope="module")
def glue_roles(template: Template) -> list[str]:
    """Logical ids of the roles the Glue jobs run as (found through the jobs, not by name)."""
    jobs = template.find_resources("AWS::Glue::Job")
    roles = [job["Properties"]["Role"]["Fn::GetAtt"][0] for job in jobs.values()]
    assert len(roles) == 2  # ingest and batch scoring
    return roles


def statements(template: Template, role: str) -> list[dict[str, Any]]:
    found = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            found += as_list(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def test_glue_jobs_enable_metrics_and_their_roles_may_publish_to_the_glue_namespace_only(
    template: Template, glue_roles: list[str]
) -> None:
    for job in template.find_resources("AWS::Glue::Job").values():
        assert job["Properties"]["DefaultArguments"]["--enable-metrics"] == "true"
    for role in glue_roles:
        template.has_resource_properties(
            "AWS::IAM::Policy",
            {
                "Roles": Match.array_with([{"Ref": role}]),
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            {
                                "Action": "cloudwatch:PutMetricData",
                                "Effect": "Allow",
                                "Resource": "*",
                                "Condition": {"StringEquals": {"cloudwatch:namespace": "Glue"}},
                            }
                        ]
                    )
                },
            },
        )
        unconditioned = [
            s
            for s in statements(template, role)
            if "cloudwatch:PutMetricData" in as_list(s["Action"]) and "Condition" not in s
        ]
        assert unconditioned == [], role


def test_glue_roles_tag_only_with_glues_key_on_the_managed_policys_resource_types(
    template: Template, glue_roles: list[str]
) -> None:
    for role in glue_roles:
        template.has_resource_properties(
            "AWS::IAM::Policy",
            {
                "Roles": Match.array_with([{"Ref": role}]),
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            {
                                "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
                                "Effect": "Allow",
                                "Condition": {
                                    "ForAllValues:StringEquals": {
                                        "aws:TagKeys": ["aws-glue-service-resource"]
                                    }
                                },
                                "Resource": [
                                    {"Fn::Join": ["", [*EC2_ARN_PARTS, f":{kind}/*"]]}
                                    for kind in ("network-interface", "security-group", "instance")
                                ],
                            }
                        ]
                    )
                },
            },
        )


def test_glue_roles_delete_network_interfaces_of_their_vpc_only(
    template: Template, glue_roles: list[str], churnops: Any
) -> None:
    vpc = logical_id(churnops.stack.database.vpc)
    for role in glue_roles:
        template.has_resource_properties(
            "AWS::IAM::Policy",
            {
                "Roles": Match.array_with([{"Ref": role}]),
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            {
                                "Action": "ec2:DeleteNetworkInterface",
                                "Effect": "Allow",
                                "Resource": {
                                    "Fn::Join": ["", [*EC2_ARN_PARTS, ":network-interface/*"]]
                                },
                                "Condition": {
                                    "ArnEquals": {
                                        "ec2:Vpc": {
                                            "Fn::Join": [
                                                "",
                                                [*EC2_ARN_PARTS, ":vpc/", {"Ref": vpc}],
                                            ]
                                        }
                                    }
                                },
                            }
                        ]
                    )
                },
            },
        )


def test_what_glue_roles_may_do_on_any_resource_is_exactly_what_their_acknowledgment_lists(
    template: Template, glue_roles: list[str]
) -> None:
    # The IAM5[Resource::*] reason (stacks/flows.py) names CreateNetworkInterface, the Describe*
    # reads and the namespace-bound PutMetricData: nothing else may use "*".
    for role in glue_roles:
        on_star = {
            action
            for s in statements(template, role)
            if "*" in as_list(s["Resource"])
            for action in as_list(s["Action"])
        }
        assert on_star == {*GLUE_VPC_ACTIONS, "cloudwatch:PutMetricData"}, role
        assert "ec2:CreateNetworkInterface" in on_star
        assert not on_star & {"ec2:CreateTags", "ec2:DeleteTags", "ec2:DeleteNetworkInterface"}
