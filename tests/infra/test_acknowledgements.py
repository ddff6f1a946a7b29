"""Every cdk-nag acknowledgment is true: it answers a finding the AwsSolutions pack really reports
on that construct (or below it), so a role acknowledges only grants it has and no reason stands
for a resource that is not there.

How it is checked: the pack's own report (cdk-nag `validate_scope`, verbose ids such as
`AwsSolutions-IAM5[Resource::<bucket>/models/*]`) against the `Validations.acknowledge` metadata.
An acknowledgment with no matching finding is stale: it was written for a grant that moved or
never existed (for example a task role acknowledging a bucket prefix only another role reads).
"""

from __future__ import annotations

from typing import Any

import pytest
from cdk_nag import AwsSolutionsChecks

from tests.infra.template_helpers import acknowledged_rules

PACK = "AwsSolutions::"


def stale_acknowledgments(synthesized: Any) -> list[str]:
    report = AwsSolutionsChecks(synthesized.app, verbose=True).validate_scope(synthesized.stack)
    findings = {
        (f"{PACK}{violation.rule_name}", resource.construct_path or "")
        for violation in report.violations
        for resource in violation.violating_resources
    }
    stale = []
    for path, rules in acknowledged_rules(synthesized.stack).items():
        for rule in rules:
            if not rule.startswith(PACK):
                continue
            if not any(
                found == rule and (where == path or where.startswith(path + "/"))
                for found, where in findings
            ):
                stale.append(f"{path} {rule}")
    return sorted(stale)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_acknowledgment_answers_a_real_finding(
    environment: str, churnops: Any, churnops_prod: Any
) -> None:
    synthesized = churnops if environment == "dev" else churnops_prod
    assert stale_acknowledgments(synthesized) == []


def test_the_check_catches_an_acknowledgment_for_a_grant_the_role_lacks() -> None:
    # GIVEN a role that may read one bucket prefix but acknowledges another one too
    from aws_cdk import Acknowledgment, App, Stack, Validations
    from aws_cdk import aws_iam as iam

    from tests.infra.conftest import Synthesized

    app = App()
    stack = Stack(app, "Stale")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["arn:aws:s3:::b/models/*"])
    )
    Validations.of(role).acknowledge(
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM5[Resource::arn:aws:s3:::b/models/*]",
            reason="objects under models/ are created at run time",
        ),
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM5[Resource::arn:aws:s3:::b/predictions/*]",
            reason="objects under predictions/ are created at run time",
        ),
    )
    # WHEN checked, THEN only the acknowledgment without a grant is reported
    stale = stale_acknowledgments(Synthesized(app=app, stack=stack, template=None))  # type: ignore[arg-type]
    assert stale == [
        "Stale/Role AwsSolutions::AwsSolutions-IAM5[Resource::arn:aws:s3:::b/predictions/*]"
    ]
