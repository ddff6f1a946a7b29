"""Validation of `POST /predict` bodies, derived from the data contract, in plain Python.

The CSV path validates with pandas (`Contract.validate`); the API cannot: the serving image has
no pandas, and a one-row DataFrame alone costs more than the whole model. So each contract column
is compiled once into a small checker function, and a request is checked field by field over the
parsed JSON. The rules are the JSON schema the OpenAPI document publishes
(`Contract.customer_json_schema()`), plus the contract rules a JSON schema cannot say: a blank
`TotalCharges` only when `tenure` is 0, and no customer id twice in one batch.

The API is stricter than the CSV cleaner on purpose: categorical values must be the canonical
spellings (the published enum), numbers must be JSON numbers, and a field the contract does not
know is rejected by name (the schema's `additionalProperties: false`), so a client's typo never
silently becomes a default.

Every problem names the field and says why; all problems of a request are reported together.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from churnops.contract import Column, Contract, Kind

# BATCH_KEY: {"customers": [...]} is a batch; any other object is one customer. The body limit
# is Lambda's synchronous payload limit: a bigger body never reaches the function in AWS, and
# the local stand-in answers the same way.
from churnops.wiring import BATCH_KEY, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BODY_BYTES

MAX_REPORTED_PROBLEMS = 50  # a body of 1,000 bad customers gets a readable answer, not a novel
_SHOWN_CHARS = 40  # an echoed bad value is cut to this length
_FLOAT32_MAX = 3.4e38
_MISSING = object()

# A checker turns one JSON value into the model's value, or explains why it cannot.
Checker = Callable[[Any], tuple[Any, str | None]]


@dataclass(frozen=True)
class FieldProblem:
    field: str  # the contract field, or "body" / "customers" for the request's shape
    problem: str  # why, in words, e.g. "is above the maximum 600"
    index: int | None = None  # position in the batch; None for a single customer

    @property
    def location(self) -> str:
        if self.index is None:
            return self.field
        if self.field == "(customer)":
            return f"{BATCH_KEY}[{self.index}]"
        return f"{BATCH_KEY}[{self.index}].{self.field}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "index": self.index,
            "location": self.location,
            "problem": self.problem,
        }


class RequestRejected(Exception):
    """A request the API refuses, with the HTTP status and a JSON-ready body."""

    def __init__(
        self, status: int, error: str, message: str, problems: list[FieldProblem] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.problems = problems or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.problems:
            body["problems"] = [p.to_dict() for p in self.problems[:MAX_REPORTED_PROBLEMS]]
            body["problem_count"] = len(self.problems)
        return body


@dataclass(frozen=True)
class CustomerBatch:
    """Validated customers, column-wise: what the ONNX model and the factor table consume."""

    ids: list[str]
    columns: dict[str, list[Any]]  # feature -> values (float, NaN for null; or str)
    is_batch: bool  # the request used {"customers": [...]}

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Sequence[int]) -> CustomerBatch:
        """The customers at positions `rows`, in that order (a canary's share of a batch)."""
        return CustomerBatch(
            [self.ids[i] for i in rows],
            {name: [values[i] for i in rows] for name, values in self.columns.items()},
            self.is_batch,
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."


def _number_checker(col: Column) -> Checker:
    integer = col.kind is Kind.INTEGER
    wanted = "an integer" if integer else "a number"
    low, high = col.minimum, col.maximum

    def check(value: Any) -> tuple[Any, str | None]:
        # bool is an int in Python but not a number in JSON.
        if type(value) is bool or not isinstance(value, int | float):
            return None, f"expected {wanted}, got {_json_type(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return None, f"expected {wanted}, got a number too large to represent"
        if integer and isinstance(value, float) and not value.is_integer():
            return None, f"must be a whole number, got {value:g}"
        if low is not None and value < low:
            return None, f"is below the minimum {low:g}"
        if high is not None and value > high:
            return None, f"is above the maximum {high:g}"
        if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX:  # the model computes in float32
            return None, f"expected {wanted} between -3.4e38 and 3.4e38"
        return float(value), None

    return check


def _category_checker(col: Column) -> Checker:
    allowed = frozenset(col.allowed or ())
    listed = ", ".join(col.allowed or ())

    def check(value: Any) -> tuple[Any, str | None]:
        if type(value) is str and value in allowed:
            return value, None
        if isinstance(value, str):
            return None, f"has value '{_shown(value)}', expected one of: {listed}"
        return None, f"expected a string (one of: {listed}), got {_json_type(value)}"

    return check


def _string_checker(col: Column) -> Checker:
    def check(value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, str):
            return None, f"expected a string, got {_json_type(value)}"
        text = value.strip()
        if not text:
            return None, "is blank"
        if len(text) > col.max_length:
            return None, f"is longer than {col.max_length} characters"
        return text, None

    return check


def _checker(col: Column) -> Checker:
    if col.is_numeric:
        return _number_checker(col)
    if col.kind is Kind.CATEGORY:
        return _category_checker(col)
    return _string_checker(col)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and neither do we.
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True)
class _Field:
    name: str
    column: Column
    check: Checker
    null_value: Any  # what a null means when the column is nullable (NaN or "")
    # Contract cleaning rule (Telco TotalCharges): null or missing stands for `blank_value`,
    # but only when another field has a given value.
    blank_value: float | None
    blank_when: tuple[str, float] | None


class RequestValidator:
    """Checks `POST /predict` bodies against one contract."""

    def __init__(
        self,
        contract: Contract,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if BATCH_KEY in contract.column_names:
            raise ValueError(f"contract {contract.name} has a column named {BATCH_KEY}")
        self.contract = contract
        self.max_batch_size = max_batch_size
        self.max_body_bytes = max_body_bytes
        self.id_column = contract.id_column
        self.features = contract.feature_names
        fields = [contract.column(contract.id_column), *contract.feature_columns]
        self._fields = [
            _Field(
                name=col.name,
                column=col,
                check=_checker(col),
                null_value=math.nan if col.is_numeric else "",
                blank_value=col.blank_value,
                blank_when=col.blank_when,
            )
            for col in fields
        ]
        self._known = frozenset(col.name for col in fields)
        # Names a log may carry: the contract's fields and the request's own shape, never a
        # client's unknown key (which could be anything, customer data included).
        self.loggable_fields = self._known | {BATCH_KEY, "(customer)"}
        self._unknown_hint = f"is not a field of the {contract.name} contract"

    # ---- body -> JSON ---------------------------------------------------------------------
    def parse_body(self, body: bytes) -> Any:
        if len(body) > self.max_body_bytes:
            raise RequestRejected(
                413,
                "payload_too_large",
                f"the request body has {len(body):,} bytes; the limit is "
                f"{self.max_body_bytes:,} bytes (send fewer customers per request)",
            )
        if not body.strip():
            raise RequestRejected(
                400,
                "empty_body",
                f"the request body is empty; expected a JSON object: one customer, or "
                f'{{"{BATCH_KEY}": [...]}}',
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RequestRejected(
                400, "malformed_json", f"the request body is not UTF-8 (byte offset {err.start})"
            ) from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as err:
            raise RequestRejected(
                400,
                "malformed_json",
                f"the request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
            ) from None
        except (ValueError, RecursionError) as err:  # NaN, a 5,000-digit number, deep nesting
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise RequestRejected(
                400, "malformed_json", f"the request body is not valid JSON: {reason}"
            ) from None

    # ---- JSON -> customers ----------------------------------------------------------------
    def customers(self, payload: Any) -> CustomerBatch:
        if not isinstance(payload, dict):
            raise RequestRejected(
                400,
                "invalid_request",
                f"expected a JSON object (one customer, or "
                f'{{"{BATCH_KEY}": [...]}}), got {_json_type(payload)}',
            )
        if BATCH_KEY not in payload:
            return self._validate([payload], is_batch=False)
        items = payload[BATCH_KEY]
        extra = [
            FieldProblem(k, "is not allowed beside customers") for k in payload if k != BATCH_KEY
        ]
        if not isinstance(items, list):
            extra.insert(0, FieldProblem(BATCH_KEY, f"expected an array, got {_json_type(items)}"))
        elif not items:
            extra.insert(0, FieldProblem(BATCH_KEY, "is empty; send at least one customer"))
        if extra:
            raise RequestRejected(400, "invalid_request", _summary(extra), extra)
        if len(items) > self.max_batch_size:
            raise RequestRejected(
                413,
                "batch_too_large",
                f"the batch has {len(items):,} customers; the limit is "
                f"{self.max_batch_size:,} per request (split it)",
            )
        return self._validate(items, is_batch=True)

    def parse(self, body: bytes) -> CustomerBatch:
        return self.customers(self.parse_body(body))

    def _validate(self, items: list[Any], *, is_batch: bool) -> CustomerBatch:
        problems: list[FieldProblem] = []
        ids: list[str] = []
        columns: dict[str, list[Any]] = {name: [] for name in self.features}
        first_seen: dict[str, int] = {}
        for index, item in enumerate(items):
            where = index if is_batch else None
            if not isinstance(item, dict):
                problems.append(
                    FieldProblem(
                        "(customer)", f"expected a JSON object, got {_json_type(item)}", where
                    )
                )
                continue
            row, row_problems = self._customer(item, where)
            if row_problems:
                problems.extend(row_problems)
                continue
            customer_id = row[self.id_column]
            if customer_id in first_seen:
                problems.append(
                    FieldProblem(
                        self.id_column,
                        f"repeats {BATCH_KEY}[{first_seen[customer_id]}]; "
                        "each customer may appear once per request",
                        where,
                    )
                )
                continue
            first_seen[customer_id] = index
            ids.append(customer_id)
            for name in self.features:
                columns[name].append(row[name])
        if problems:
            raise RequestRejected(400, "invalid_request", _summary(problems), problems)
        return CustomerBatch(ids=ids, columns=columns, is_batch=is_batch)

    def _customer(
        self, item: dict[str, Any], where: int | None
    ) -> tuple[dict[str, Any], list[FieldProblem]]:
        row: dict[str, Any] = {}
        problems: list[FieldProblem] = []
        deferred: list[_Field] = []
        present = 0  # known fields the customer carries; any other key is unknown
        for spec in self._fields:
            name = spec.name
            value = item.get(name, _MISSING)
            if value is not _MISSING:
                present += 1
            if value is None or value is _MISSING:
                if spec.blank_value is not None:
                    deferred.append(spec)
                elif spec.column.nullable:
                    row[name] = spec.null_value
                elif value is _MISSING:
                    problems.append(FieldProblem(name, "is required", where))
                else:
                    problems.append(FieldProblem(name, "is null; a value is required", where))
                continue
            clean, problem = spec.check(value)
            if problem is None:
                row[name] = clean
            else:
                problems.append(FieldProblem(name, problem, where))
        for spec in deferred:
            name = spec.name
            other, wanted = spec.blank_when or (None, None)
            if other is None or row.get(other) == wanted:
                row[name] = spec.blank_value
            elif spec.column.nullable:
                row[name] = spec.null_value
            elif other in row:  # when `other` itself is invalid, that problem is reported
                problems.append(
                    FieldProblem(
                        name, f"is null or missing, allowed only when {other} is {wanted:g}", where
                    )
                )
        if len(item) > present:
            problems.extend(
                FieldProblem(_shown(key), self._unknown_hint, where)
                for key in item
                if key not in self._known
            )
        return row, problems


def _summary(problems: list[FieldProblem]) -> str:
    shown = "; ".join(f"{p.location} {p.problem}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"{len(problems)} problem(s) in the request: {shown}{more}"
