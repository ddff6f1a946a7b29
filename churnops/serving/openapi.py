"""The serving API's OpenAPI 3.1 document, generated from the data contract.

The customer schema is `Contract.customer_json_schema()`, the same rules the request validator
enforces, so the published document and the server cannot drift apart. OpenAPI 3.1 because its
schemas are plain JSON Schema 2020-12 (nullable fields are `anyOf [..., {"type": "null"}]`), which
can also state the contract's cross-field rules (`blank_rules`): Telco's `TotalCharges` may be null
or missing only when `tenure` is 0, as `if`/`then`.
"""

from __future__ import annotations

from typing import Any

from churnops import __version__
from churnops.contract import Contract, Kind
from churnops.serving.validation import MAX_REPORTED_PROBLEMS
from churnops.wiring import ACTIVE_STAGES, BATCH_KEY, SCORE_COLUMNS, SCORE_SCHEMA

# A character str.strip() does not remove (the characters str.isspace() is true for, spelt out:
# `\S` means other sets in other regex dialects, e.g. ECMA-262's keeps \x1c-\x1f).
NOT_BLANK = (
    "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
ROUTES = (("POST", "/predict"), ("GET", "/model"), ("GET", "/health"), ("GET", "/openapi.json"))
# A score column's JSON type (wiring.SCORE_SCHEMA), and what the API says beyond it.
_SCORE_JSON_TYPES = {"double": "number", "int": "integer", "string": "string"}
_SCORE_DETAILS: dict[str, dict[str, Any]] = {
    "churn_probability": {"minimum": 0, "maximum": 1},
    "churn_prediction": {
        "enum": [0, 1],
        "description": "1 when churn_probability reaches the model's threshold",
    },
    "model_version": {
        "description": "The registry version of the model that answered for this customer: the "
        "champion, or during a canary rollout the candidate for the customers in its share",
    },
}


def example_customer(contract: Contract, **overrides: Any) -> dict[str, Any]:
    """A valid customer made from the contract alone: the first allowed value of each category,
    and just above the minimum of each number. The document's request example; tests start
    from it and spoil one field at a time."""
    customer: dict[str, Any] = {}
    for col in [contract.column(contract.id_column), *contract.feature_columns]:
        if col.kind is Kind.CATEGORY:
            customer[col.name] = (col.allowed or ("",))[0]
        elif col.kind is Kind.STRING:
            customer[col.name] = "0001-EXAMPLE"
        elif col.kind is Kind.INTEGER:
            customer[col.name] = int(col.minimum or 0) + 1
        else:
            customer[col.name] = round(float(col.minimum or 0) + 29.85, 2)
    customer.update(overrides)
    return customer


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema_name)}},
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def blank_rules(contract: Contract) -> list[dict[str, Any]]:
    """The contract's cleaning rules as JSON Schema `if`/`then`: a column with a `blank_value`
    and a `blank_when` condition may be null or missing only when the other field has the given
    value (the request validator's deferred check). A nullable column may always be null."""
    rules = []
    for col in [contract.column(contract.id_column), *contract.feature_columns]:
        if col.blank_value is None or col.blank_when is None or col.nullable:
            continue
        other, wanted = col.blank_when
        value: float | int = int(wanted) if float(wanted).is_integer() else wanted
        rules.append(
            {
                "if": {
                    "anyOf": [
                        {"not": {"required": [col.name]}},
                        {"properties": {col.name: {"type": "null"}}, "required": [col.name]},
                    ]
                },
                "then": {"properties": {other: {"const": value}}, "required": [other]},
                "description": f"{col.name} may be null or missing only when {other} is {value}",
            }
        )
    return rules


def component_schemas(contract: Contract, *, max_batch_size: int) -> dict[str, Any]:
    """JSON schemas of every request and response body, keyed by name."""
    customer = contract.customer_json_schema()
    rules = blank_rules(contract)
    if rules:
        customer["allOf"] = rules
    for col in [contract.column(contract.id_column), *contract.feature_columns]:
        prop = customer["properties"][col.name]
        if col.kind is Kind.STRING and prop.get("type") == "string":
            # the validator strips a free-text value (str.strip) and refuses a blank one
            prop["pattern"] = NOT_BLANK
    customer["description"] = (
        f"One customer in the raw {contract.name} contract schema (the CSV's fields, without the "
        f"target {contract.target_column})."
    )
    value_types = [{"type": "string"}, {"type": "number"}, {"type": "null"}]
    return {
        "Customer": customer,
        "CustomerBatch": {
            "type": "object",
            "properties": {
                BATCH_KEY: {
                    "type": "array",
                    "items": _ref("Customer"),
                    "minItems": 1,
                    "maxItems": max_batch_size,
                    # JSON Schema can say "no two equal customers", not "no two customers
                    # with the same id" (`x-unique-by`); the validator refuses both
                    "uniqueItems": True,
                    "x-unique-by": contract.id_column,
                    "description": f"Each {contract.id_column} at most once per request (after "
                    "surrounding spaces are removed).",
                }
            },
            "required": [BATCH_KEY],
            "additionalProperties": False,
        },
        "PredictRequest": {"oneOf": [_ref("Customer"), _ref("CustomerBatch")]},
        "Factor": {
            "type": "object",
            "description": "A feature that moved this customer's score, relative to the average customer.",
            "properties": {
                "feature": {"type": "string", "enum": contract.feature_names},
                "value": {"anyOf": value_types},
                "effect": {"type": "number", "description": "change in log-odds"},
                "direction": {"type": "string", "enum": ["raises", "lowers"]},
            },
            "required": ["feature", "value", "effect", "direction"],
            "additionalProperties": False,
        },
        "Prediction": {
            "type": "object",
            "properties": {
                contract.id_column: {"type": "string"},
                **{
                    name: {"type": _SCORE_JSON_TYPES[kind], **_SCORE_DETAILS.get(name, {})}
                    for name, kind in SCORE_SCHEMA
                },
                "factors": {"type": "array", "items": _ref("Factor"), "maxItems": 3},
            },
            "required": [contract.id_column, *SCORE_COLUMNS, "factors"],
            "additionalProperties": False,
        },
        "PredictResponse": {
            "type": "object",
            "properties": {
                "model_version": {
                    "type": "string",
                    "description": "The version that answered; when a canary rollout's "
                    "candidate answered some customers and the champion the others, the "
                    "champion's (each prediction names its own)",
                },
                "count": {"type": "integer", "minimum": 1},
                "predictions": {"type": "array", "items": _ref("Prediction"), "minItems": 1},
            },
            "required": ["model_version", "count", "predictions"],
            "additionalProperties": False,
        },
        "Problem": {
            "type": "object",
            "properties": {
                "field": {"type": "string"},
                "index": _nullable({"type": "integer", "minimum": 0}),
                "location": {"type": "string"},
                "problem": {"type": "string"},
            },
            "required": ["field", "index", "location", "problem"],
            "additionalProperties": False,
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "problems": {
                    "type": "array",
                    "items": _ref("Problem"),
                    "maxItems": MAX_REPORTED_PROBLEMS,
                },
                "problem_count": {"type": "integer", "minimum": 1},
            },
            "required": ["error", "message"],
            "additionalProperties": False,
        },
        "ModelInfo": {
            "type": "object",
            "properties": {
                "model_version": {"type": "string"},
                "contract": _nullable({"type": "string"}),
                "schema_hash": _nullable({"type": "string"}),
                "family": _nullable({"type": "string"}),
                "threshold": {"type": "number"},
                "trained_at": _nullable({"type": "string"}),
                "rows": _nullable({"type": "integer"}),
                "metrics": {"type": "object"},
                "status": _nullable({"type": "string"}),
            },
            "required": ["model_version", "contract", "threshold", "trained_at", "metrics"],
        },
        "GatewayError": {
            "type": "object",
            "description": "An answer from API Gateway itself, before the function runs.",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "contract": {"type": "string"},
                "schema_hash": {"type": "string"},
                "champion_loaded": {"type": "boolean"},
                "model_version": _nullable({"type": "string"}),
                "last_refresh_error": _nullable({"type": "string"}),
                "candidate_version": _nullable({"type": "string"}),
                "rollout_stage": _nullable({"type": "string", "enum": sorted(ACTIVE_STAGES)}),
            },
            "required": ["status", "champion_loaded", "model_version"],
        },
    }


def openapi_document(contract: Contract, *, max_batch_size: int) -> dict[str, Any]:
    errors = {
        "403": _json("GatewayError", "Missing or wrong API key (x-api-key)"),
        "404": _json("Error", "No such route"),
        "405": _json("Error", "Method not allowed on this route"),
        "429": _json("GatewayError", "Throttled by the usage plan"),
    }
    no_champion = _json("Error", "No champion model is loaded yet")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"ChurnOps churn prediction ({contract.name})",
            "version": __version__,
            "description": (
                f"Churn probability, decision and top factors for customers of the "
                f"{contract.name} contract (schema hash {contract.schema_hash}). Requests are "
                "validated against this document; unknown fields are rejected."
            ),
        },
        "paths": {
            "/predict": {
                "post": {
                    "operationId": "predict",
                    "summary": f"Score one customer, or up to {max_batch_size:,} in a batch",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _ref("PredictRequest"),
                                "examples": {
                                    "one": {"value": example_customer(contract)},
                                    "batch": {"value": {BATCH_KEY: [example_customer(contract)]}},
                                },
                            }
                        },
                    },
                    "responses": {
                        "200": _json("PredictResponse", "One prediction per customer, in order"),
                        "400": _json(
                            "Error", "Invalid request; `problems` names each field and why"
                        ),
                        "413": {
                            "description": "Batch or body over the limit (the function's, or "
                            "API Gateway's 10 MB)",
                            "content": {
                                "application/json": {
                                    "schema": {"anyOf": [_ref("Error"), _ref("GatewayError")]}
                                }
                            },
                        },
                        "415": _json("Error", "Content-Type is not application/json"),
                        "503": no_champion,
                        **errors,
                    },
                }
            },
            "/model": {
                "get": {
                    "operationId": "model",
                    "summary": "The champion model: version, metrics, threshold, training date",
                    "responses": {
                        "200": _json("ModelInfo", "The champion"),
                        "503": no_champion,
                        **errors,
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness, and whether a champion is loaded",
                    "responses": {"200": _json("Health", "The server is up"), **errors},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **errors,
                    },
                }
            },
        },
        "components": {
            "schemas": component_schemas(contract, max_batch_size=max_batch_size),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        # The deployed API requires a usage-plan key on every method.
        "security": [{"apiKey": []}],
    }
