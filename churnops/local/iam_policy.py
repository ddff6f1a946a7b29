"""AWS's evaluation of identity-based and trust policies, with no AWS or moto in it: given policy
documents, an action, a resource and a request's condition context, the decision AWS makes
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
`churnops/local/moto_ext/iam.py` works out what each request to the twin is and asks this module.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Context", "Decision", "evaluate", "evaluate_trust", "statements"]

LOG = logging.getLogger("churnops.twin.iam")


# ---- the policy evaluator --------------------------------------------------------------------
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html


class Decision(enum.Enum):
    ALLOW = "allow"
    IMPLICIT_DENY = "implicit deny"
    EXPLICIT_DENY = "explicit deny"


Context = Mapping[str, Sequence[str]]

# Negated operators hold when the key is absent ("If the policy condition requires that the key
# is not matched, such as StringNotLike or ArnNotLike, and the right key is not present, the
# condition is true"), and are evaluated as "matches none of the values".
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NotIpAddress": "IpAddress",
}


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (colons and slashes included), `?` one."""
    body = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.compile(f"^{body}$", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _arn_like(actual: str, pattern: str) -> bool:
    """ArnEquals/ArnLike: each of the six colon-separated parts matched on its own, wildcards
    allowed in each."""
    actual_parts, pattern_parts = actual.split(":", 5), pattern.split(":", 5)
    if len(actual_parts) != 6 or len(pattern_parts) != 6:
        return False
    return all(_glob(p).match(a) for a, p in zip(actual_parts, pattern_parts, strict=True))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _date(text: str) -> dt.datetime | None:
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return dt.datetime.fromtimestamp(float(text), tz=dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _compare(kind: str, actual: str, expected: str) -> bool:
    if kind.startswith("Numeric"):
        left, right = _number(actual), _number(expected)
    else:
        left, right = _date(actual), _date(expected)  # type: ignore[assignment]
    if left is None or right is None:
        return False
    relation = kind.removeprefix("Numeric").removeprefix("Date")
    return {
        "Equals": left == right,
        "LessThan": left < right,
        "LessThanEquals": left <= right,
        "GreaterThan": left > right,
        "GreaterThanEquals": left >= right,
    }.get(relation, False)


def _ip_in(actual: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(actual) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda a, e: a == e,
    "StringEqualsIgnoreCase": lambda a, e: a.lower() == e.lower(),
    "StringLike": lambda a, e: bool(_glob(e).match(a)),
    "Bool": lambda a, e: a.lower() == e.lower(),
    "BinaryEquals": lambda a, e: a == e,
    "ArnEquals": _arn_like,  # both allow wildcards per ARN part, as AWS documents
    "ArnLike": _arn_like,
    "IpAddress": _ip_in,
    **{
        f"{kind}{relation}": functools.partial(_compare, f"{kind}{relation}")
        for kind in ("Numeric", "Date")
        for relation in ("Equals", "LessThan", "LessThanEquals", "GreaterThan", "GreaterThanEquals")
    },
}


def _values(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [
        ("true" if item else "false") if isinstance(item, bool) else str(item) for item in items
    ]


def _condition_holds(operator: str, key: str, expected: Any, context: Context) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    wanted = _values(expected)
    actual = context.get(key.lower())
    present = actual is not None and len(actual) > 0
    if base == "Null":  # "true": the key must be absent; "false": present
        return any((not present) == (value.lower() == "true") for value in wanted)
    positive = _NEGATED.get(base, base)
    matcher = _MATCHERS.get(positive)
    if matcher is None:
        LOG.error("IAM condition operator %s is not evaluated by the twin: condition fails", base)
        return False
    negated = base in _NEGATED
    if not present:
        if if_exists or qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return negated
    assert actual is not None

    def value_holds(value: str) -> bool:
        hit = any(matcher(value, pattern) for pattern in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(value_holds(value) for value in actual)
    if qualifier == "ForAnyValue":
        return any(value_holds(value) for value in actual)
    return all(map(value_holds, actual)) if negated else any(map(value_holds, actual))


def _conditions_hold(conditions: Mapping[str, Any], context: Context) -> bool:
    """Every operator block, and every key within one, must hold."""
    return all(
        _condition_holds(operator, key, expected, context)
        for operator, block in conditions.items()
        for key, expected in (block or {}).items()
    )


def _listed(value: Any) -> list[str]:
    return [str(item) for item in (value if isinstance(value, list) else [value])]


def statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = document.get("Statement", [])
    return list(found) if isinstance(found, list) else [found]


def _action_matches(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(_glob(p, ignore_case=True).match(action) for p in _listed(statement["Action"]))
    if "NotAction" in statement:
        return not any(
            _glob(p, ignore_case=True).match(action) for p in _listed(statement["NotAction"])
        )
    return False


def _resource_matches(statement: Mapping[str, Any], resource: str) -> bool:
    if "Resource" in statement:
        return any(_glob(p).match(resource) for p in _listed(statement["Resource"]))
    if "NotResource" in statement:
        return not any(_glob(p).match(resource) for p in _listed(statement["NotResource"]))
    return False


def _lowered(context: Context) -> dict[str, Sequence[str]]:
    # condition key names are case-insensitive; their values are not
    return {key.lower(): values for key, values in context.items()}


def evaluate(
    documents: Sequence[Mapping[str, Any]], action: str, resource: str, context: Context
) -> Decision:
    """AWS's decision for one identity-based request: an explicit Deny in any statement wins;
    otherwise allowed iff some Allow statement matches the action (case-insensitive), the
    resource (case-sensitive) and all of its conditions."""
    lowered = _lowered(context)
    allowed = False
    for document in documents:
        for statement in statements(document):
            if not (_action_matches(statement, action) and _resource_matches(statement, resource)):
                continue
            if not _conditions_hold(statement.get("Condition") or {}, lowered):
                continue
            if statement.get("Effect") == "Deny":
                return Decision.EXPLICIT_DENY
            if statement.get("Effect") == "Allow":
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def _trusts(principal: Any, service: str | None, aws_principals: frozenset[str]) -> bool:
    """Whether a trust statement's Principal names the service, or one of the AWS principals."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    aws = set(_listed(principal.get("AWS", [])))
    if "*" in aws or aws & aws_principals:
        return True
    return service is not None and service in _listed(principal.get("Service", []))


def evaluate_trust(
    document: Mapping[str, Any],
    context: Context,
    *,
    service: str | None = None,
    aws_principals: frozenset[str] = frozenset(),
) -> Decision:
    """A role's trust policy, for `sts:AssumeRole` by a service principal (`service`) or by an
    AWS principal (any of `aws_principals`: its ARN, its account, the account's root)."""
    lowered = _lowered(context)
    allowed = False
    for statement in statements(document):
        if not (
            _trusts(statement.get("Principal"), service, aws_principals)
            and _action_matches(statement, "sts:AssumeRole")
            and _conditions_hold(statement.get("Condition") or {}, lowered)
        ):
            continue
        if statement.get("Effect") == "Deny":
            return Decision.EXPLICIT_DENY
        allowed = allowed or statement.get("Effect") == "Allow"
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY
