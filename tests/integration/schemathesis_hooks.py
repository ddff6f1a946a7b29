"""Schemathesis hooks for tests/integration/test_api_contract_fuzz.py (loaded through
SCHEMATHESIS_HOOKS by the CLI it runs). It drops generated requests for one stated reason;
every other generated request is sent as generated.

The document states one rule JSON Schema cannot: a batch names each customer id at most once
(`x-unique-by` on the batch's array, beside `uniqueItems`). A batch that repeats an id is not a
request the API should accept, whatever the schema alone says.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    body = case.body
    if not isinstance(body, dict):
        return True
    schemas = case.operation.schema.raw_schema.get("components", {}).get("schemas", {})
    for key, items in body.items():
        unique_by = _unique_by(schemas, key)
        if unique_by is None or not isinstance(items, list):
            continue
        seen: set[str] = set()
        for item in items:
            value = item.get(unique_by) if isinstance(item, dict) else None
            if isinstance(value, str):
                if value.strip() in seen:
                    return False
                seen.add(value.strip())
    return True


def _unique_by(schemas: dict[str, Any], key: str) -> str | None:
    """The `x-unique-by` of the array property `key` of any schema of the document."""
    for schema in schemas.values():
        node = (schema.get("properties") or {}).get(key) or {}
        if node.get("type") == "array" and node.get("x-unique-by"):
            return str(node["x-unique-by"])
    return None
