"""Config from cdk.json context: complete, environment-aware, overridable from the command line,
and failing fast (naming the key) on anything missing, unknown or invalid."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import pytest

from stacks.config import Config, ConfigError
from tests.infra.template_helpers import cdk_json_context


@pytest.fixture
def context() -> dict[str, Any]:
    return copy.deepcopy(cdk_json_context())


def test_cdk_json_builds_the_dev_configuration(context: dict[str, Any]) -> None:
    config = Config.from_context(context)
    assert config.environment == "dev"
    assert config.storage.removal_policy == "destroy"
    assert config.database.deletion_protection is False
    assert config.ingestion.incoming_prefix == "incoming/"
    assert config.ingestion.file_suffix == ".csv"
    assert config.database.interface_endpoints == tuple(
        context["churnops"]["database"]["interface_endpoints"]
    )


def test_prod_retains_data_and_hardens_the_system(context: dict[str, Any]) -> None:
    config = Config.from_context({**context, "environment": "prod"})
    assert config.is_prod
    assert config.storage.removal_policy == "retain"
    assert config.alerts.removal_policy == "retain"
    assert config.database.removal_policy == "snapshot"
    assert config.database.deletion_protection is True
    assert config.database.multi_az is True
    assert config.serving.waf_enabled is True
    assert config.ingestion.removal_policy == "retain"
    assert config.retrain.removal_policy == "retain"
    assert config.serving.log_retention_days == 365


def test_command_line_overrides_are_converted_to_the_field_type(context: dict[str, Any]) -> None:
    # `cdk deploy -c churnops.serving.max_batch_size=500 -c ...` gives strings.
    config = Config.from_context(
        {
            **context,
            "churnops.serving.max_batch_size": "500",
            "churnops.serving.tracing": "true",
            "churnops.monitoring.drift_psi_threshold": "0.25",
            "churnops.database.interface_endpoints": "secretsmanager,logs",
            "churnops.alerts.alert_email": "ops@example.com",
            "churnops.name_prefix": "churn-b",
        }
    )
    assert config.serving.max_batch_size == 500
    assert config.serving.tracing is True
    assert config.monitoring.drift_psi_threshold == 0.25
    assert config.database.interface_endpoints == ("secretsmanager", "logs")
    assert config.alerts.alert_email == "ops@example.com"
    assert config.name_prefix == "churn-b"
    assert config.database.name_prefix == "churn-b"  # shared keys fill every section


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(environment="staging"), "'environment'"),
        (lambda c: c.pop("churnops"), "'churnops' is missing"),
        (
            lambda c: c["churnops"]["database"].pop("instance_type"),
            "churnops.database.instance_type",
        ),
        (lambda c: c["churnops"]["serving"].update(memory_mb="lots"), "churnops.serving.memory_mb"),
        (lambda c: c["churnops"]["serving"].update(tracing="maybe"), "churnops.serving.tracing"),
        (lambda c: c["churnops"]["storage"].update(expiry_days=3), "unknown context key"),
        (lambda c: c["churnops"].update(colour="blue"), "unknown context key"),
        (lambda c: c["churnops"]["database"].update(engine="oracle"), "churnops.database"),
        (lambda c: c["churnops"]["alerts"].update(alert_email="not-an-email"), "churnops.alerts"),
        (lambda c: c["churnops"]["ingestion"].update(incoming_prefix="in"), "churnops.ingestion"),
        (lambda c: c["churnops"]["retrain"].update(schedule_expression="weekly"), "retrain"),
        (lambda c: c["churnops"].update(removal_policy="shred"), "removal_policy"),
        (lambda c: c["churnops"].update(log_retention_days=31), "log retention"),
        (lambda c: c.update({"churnops.serving.nope.deeper": "1"}), "churnops.<section>.<field>"),
        (lambda c: c.update({"churnops.nosuch.field": "1"}), "no section 'nosuch'"),
    ],
)
def test_a_bad_context_fails_fast_naming_the_key(
    context: dict[str, Any], mutate: Any, message: str
) -> None:
    mutate(context)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.from_context(context)


def test_cdk_json_documents_every_field_of_every_settings_class(context: dict[str, Any]) -> None:
    """Fields with a dataclass default could be left out of cdk.json; keep them listed so the
    documented context is the whole configuration."""
    from stacks.config import SHARED_KEYS

    base = context["churnops"]
    config = Config.from_context(context)
    missing = []
    for section in dataclasses.fields(Config):
        settings = getattr(config, section.name)
        if not dataclasses.is_dataclass(settings):
            continue
        for field in dataclasses.fields(settings):
            if field.name not in base[section.name] and field.name not in SHARED_KEYS:
                missing.append(f"{section.name}.{field.name}")
    assert missing == []


def test_docs_deploy_lists_every_context_key(context: dict[str, Any]) -> None:
    from tests.infra.template_helpers import REPO

    doc = (REPO / "docs" / "deploy.md").read_text()

    def keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
        found = []
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                found += keys(value, f"{prefix}{key}.")
            else:
                found.append(prefix + key)
        return found

    undocumented = [k for k in keys(context["churnops"]) if f"| `{k}` |" not in doc]
    assert undocumented == []
