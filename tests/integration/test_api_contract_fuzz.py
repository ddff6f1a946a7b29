"""The published OpenAPI document against the API as the twin serves it: schemathesis, every check
(authentication included), over the document `GET /openapi.json` publishes.

The API is the twin's: the serving Lambda's handler with a real champion behind `LocalApiGateway`,
configured from the template CDK synthesizes for `stacks/serving.py` (its resources, API key and
usage plan, stage throttling, request model and gateway responses) exactly as the twin's daemon
configures it, so the key is required and undefined routes are API Gateway's 403. The Serving
construct is synthesized in-process (no CDK CLI, no moto, no MariaDB): the cheapest start that
still goes through the template.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from churnops.local.apigw import LocalApiGateway, rest_api_from_template
from churnops.local.template import Template
from churnops.serving.app import ServingApp
from churnops.wiring import ServingEnvironment
from lambdas.serving.handler import make_handler
from tests.conftest import REPO
from tests.integration.test_serving_http import Champion, champion  # noqa: F401 - a fixture

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def serving_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Serving construct's template with the settings in cdk.json."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Template as CdkTemplate

    from stacks.serving import Serving, ServingSettings
    from tests.infra.template_helpers import cdk_json_context, settings_from_cdk_json

    flags = {k: v for k, v in cdk_json_context().items() if k.startswith("@aws-cdk/")}
    app = App(context=flags, outdir=str(tmp_path_factory.mktemp("api-cdk-out")))
    stack = Stack(app, "ApiContract")
    Serving(
        stack,
        "Serving",
        settings=settings_from_cdk_json(ServingSettings, "serving"),
        registry_bucket=s3.Bucket(stack, "Registry"),
    )
    template: dict[str, Any] = CdkTemplate.from_stack(stack).to_json()
    return template


@dataclass(frozen=True)
class TwinApi:
    url: str
    key: str
    document: dict[str, Any]


@pytest.fixture(scope="module")
def twin_api(
    serving_template: dict[str, Any],
    champion: Champion,  # noqa: F811 - the imported fixture
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TwinApi]:
    defined = rest_api_from_template(
        Template(serving_template, cdk_out=tmp_path_factory.mktemp("no-assets"))
    )
    assert defined is not None, "the Serving construct defines no REST API"
    api, keys = defined
    (key,) = keys.values()
    app = ServingApp(ServingEnvironment(registry_uri=champion.registry_uri, refresh_seconds=60))
    with LocalApiGateway(make_handler(lambda: app), api=api) as gateway:
        from churnops.commands.demo import call_api

        assert call_api(gateway.url, "GET", "/openapi.json")[0] == 403  # the key is required
        status, document = call_api(gateway.url, "GET", "/openapi.json", api_key=key)
        assert status == 200
        yield TwinApi(gateway.url, key, document)


def test_schemathesis_finds_nothing_in_the_twins_api_from_the_published_document(
    twin_api: TwinApi, tmp_path: Path
) -> None:
    """Every check schemathesis has (`--checks all`: server errors, status codes, content types,
    response schemas, positive and negative data, unsupported methods, missing and ignored
    authentication, ...) over every operation of the published document, with the API key as
    the document's `apiKey` security scheme names it. Bounded examples; under the stage's and
    usage plan's throttle (50 requests per second), so a 429 is never what a check sees. The one
    rule of the document JSON Schema cannot state (`x-unique-by`: a batch names each customer
    once) is obeyed by the generator through tests/integration/schemathesis_hooks.py."""
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(twin_api.document))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            str(document),
            "--url",
            twin_api.url,
            "--checks",
            "all",
            "--header",
            f"x-api-key: {twin_api.key}",
            "--max-examples",
            "25",
            "--rate-limit",
            "40/s",
            "--seed",
            "7",
            "--no-color",
        ],
        cwd=tmp_path,  # where schemathesis keeps its example database: not the checkout
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # the report, with request bodies (a batch can be 500 KB on one line) cut short
    report = "\n".join(
        line if len(line) < 400 else line[:400] + "..."
        for line in (result.stdout + result.stderr).splitlines()
    )
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout or "passed" in result.stdout, report


def test_an_integral_float_in_an_integer_field_is_accepted(twin_api: TwinApi) -> None:
    """The published document (2020-12) and the function take 1.0 as an integer; the stack's
    draft-4 model spells integer fields as multiples of 1 so its validator agrees, and still
    refuses 1.5."""
    from churnops.commands.demo import call_api
    from churnops.contract import TELCO
    from churnops.serving.openapi import example_customer

    customer = example_customer(TELCO, SeniorCitizen=1.0)
    status, body = call_api(twin_api.url, "POST", "/predict", customer, api_key=twin_api.key)
    assert status == 200, body
    customer = example_customer(TELCO, SeniorCitizen=1.5)
    status, body = call_api(twin_api.url, "POST", "/predict", customer, api_key=twin_api.key)
    assert status == 400, body
