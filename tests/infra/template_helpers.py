"""Helpers for reading synthesized templates in the infra tests (imported by test modules)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import CfnElement, Stack
from aws_cdk.assertions import Template

REPO = Path(__file__).resolve().parents[2]
CDK_JSON = REPO / "cdk.json"


def cdk_json_context() -> dict[str, Any]:
    return dict(json.loads(CDK_JSON.read_text())["context"])


def settings_from_cdk_json(kind: type[Any], section: str) -> Any:
    """A construct's settings from cdk.json's base (dev) values, shared keys included."""
    base = cdk_json_context()["churnops"]
    names = {f.name for f in dataclasses.fields(kind)}
    values = {k: v for k, v in base.items() if k in names and not isinstance(v, dict)}
    values.update(base[section])
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def acknowledged_rules(stack: Any) -> dict[str, dict[str, str]]:
    """construct path -> {acknowledged rule id: reason}, from `Validations.acknowledge` metadata."""
    found: dict[str, dict[str, str]] = {}
    for construct in stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                found.setdefault(construct.node.path, {}).update(entry.data)
    return found


def open_nag_findings(app: Any, stack: Any) -> list[str]:
    """cdk-nag AwsSolutions findings not acknowledged on the construct or an ancestor.

    `validate_scope` reports every finding; during a real synth CDK's validation step drops the
    acknowledged ones the same way (test_cdk_cli checks that report too)."""
    from cdk_nag import AwsSolutionsChecks

    report = AwsSolutionsChecks(app, verbose=True).validate_scope(stack)
    acknowledged = acknowledged_rules(stack)
    found = []
    for violation in report.violations:
        for resource in violation.violating_resources:
            path = resource.construct_path or ""
            ancestors = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 2)]
            ids = {rule for a in ancestors for rule in acknowledged.get(a, {})}
            if f"AwsSolutions::{violation.rule_name}" not in ids:
                found.append(f"{violation.rule_name} at {path}")
    return found


def logical_id(construct: Any) -> str:
    """The logical id CDK gave a construct's CloudFormation resource (never typed by hand)."""
    resource = construct if isinstance(construct, CfnElement) else construct.node.default_child
    return Stack.of(resource).resolve(resource.logical_id)


def iam_statements(template: Template) -> list[tuple[str, dict[str, Any]]]:
    """Every statement of every IAM policy in the template: (resource logical id, statement).

    Covers AWS::IAM::Policy, AWS::IAM::ManagedPolicy and inline `Policies` of AWS::IAM::Role."""
    found: list[tuple[str, dict[str, Any]]] = []
    resources = template.to_json()["Resources"]
    for rid, resource in resources.items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
        for document in documents:
            statements = document["Statement"]
            for statement in statements if isinstance(statements, list) else [statements]:
                found.append((rid, statement))
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
