"""The prod environment from the same cdk.json: data retained, the database protected and
Multi-AZ, WAF and tracing on, and still nothing open in cdk-nag."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from tests.infra.template_helpers import logical_id, open_nag_findings


@pytest.fixture(scope="module")
def template(churnops_prod: Any) -> Template:
    return churnops_prod.template


def test_prod_is_cdk_nag_clean_too(churnops_prod: Any) -> None:
    assert open_nag_findings(churnops_prod.app, churnops_prod.stack) == []


def test_prod_database_is_protected_multi_az_and_snapshotted(
    template: Template, churnops_prod: Any
) -> None:
    settings = churnops_prod.stack.config.database
    template.has_resource_properties(
        "AWS::RDS::DBInstance",
        {
            "DeletionProtection": True,
            "MultiAZ": True,
            "DBInstanceClass": f"db.{settings.instance_type}",
            "BackupRetentionPeriod": settings.backup_retention_days,
        },
    )
    instance = template.to_json()["Resources"][logical_id(churnops_prod.stack.database.instance)]
    assert instance["DeletionPolicy"] == "Snapshot"


def test_prod_buckets_survive_stack_deletion(template: Template, churnops_prod: Any) -> None:
    storage = churnops_prod.stack.storage
    resources = template.to_json()["Resources"]
    for bucket in (storage.raw_bucket, storage.curated_bucket, storage.registry_bucket):
        assert resources[logical_id(bucket)]["DeletionPolicy"] == "Retain"
    template.resource_count_is("Custom::S3AutoDeleteObjects", 0)


def test_prod_api_has_waf_and_tracing(template: Template) -> None:
    template.resource_count_is("AWS::WAFv2::WebACL", 1)
    template.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)
    template.has_resource_properties("AWS::ApiGateway::Stage", {"TracingEnabled": True})
