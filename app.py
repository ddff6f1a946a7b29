#!/usr/bin/env python3
"""The ChurnOps CDK app: one `ChurnOps` stack, configured from `cdk.json` context.

`cdk synth` / `cdk deploy` run this file (cdk.json's `app`). cdk-nag's AwsSolutions pack runs on
every synth. cdk-nag 3 is a CDK policy-validation plugin (`Validations.of(app).add_plugins`), the
successor of the v2 Aspect: a finding not acknowledged with a reason
(`Validations.of(construct).acknowledge(...)`) fails the synth.
"""

from __future__ import annotations

import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.churnops_stack import ChurnOpsStack
from stacks.config import Config, ConfigError

STACK_NAME = "ChurnOps"


def build(app: cdk.App, *, nag: bool = True) -> ChurnOpsStack:
    """Compose the app: used by `cdk` below and, unchanged, by tests/infra.

    `nag=False` leaves the cdk-nag plugin out so tests can read the template even while a
    finding is open; they then run the same pack on the same tree and assert it is clean.
    """
    config = Config.from_context(app.node.get_all_context())
    stack = ChurnOpsStack(app, STACK_NAME, config=config)
    cdk.Tags.of(app).add("project", "churnops")
    cdk.Tags.of(app).add("environment", config.environment)
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return stack


if __name__ == "__main__":
    app = cdk.App()
    try:
        build(app)
    except ConfigError as err:  # a context mistake is the user's to fix: one line, no traceback
        sys.exit(f"cdk.json context: {err}")
    app.synth()
